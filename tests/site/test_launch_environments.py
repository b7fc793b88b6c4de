"""Binder and Colab, simulated end to end on this machine.

One fresh virtual environment is built from ``binder/`` as repo2docker builds it
(``binder/requirements.txt``, with this machine's CPU torch wheel in place of PyTorch's index where
``/opt/wheels`` has it, as ``make`` does; transitive versions pinned by ``constraints.txt``, so the test
does not drift with the registry), and it serves twice, in this order:

1. **Colab.** Before ``binder/postBuild`` runs, the environment has what Colab provides (torch, NumPy,
   Matplotlib, scikit-learn, SciPy, ipywidgets, a kernel) and no vglib. The first chapter, copied
   outside the repository, is executed there; its install cell clones the book at the tag
   ``v<version>`` from ``VGLIB_REPOSITORY`` (a tagged git snapshot of this working tree), installs
   vglib from it and runs in the chapter's folder of the clone.
2. **Binder.** ``binder/postBuild`` installs vglib into the snapshot, as repo2docker does in the image.
   Every module the chapters and vglib import is imported; then JupyterLab serves the snapshot on
   127.0.0.1 with a token, and Chromium opens the first chapter, runs all cells, and moves the
   explorer's depth slider: the kernel redraws the figure.

The environment's build time and installed size are written to
``test-artifacts/binder-environment.json``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.site.test_site import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"
TORCH_WHEELS = Path(os.environ.get("TORCH_WHEELS", "/opt/wheels"))
PYTORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
FIRST_CHAPTER = "chapters/causes/why_gradients_vanish.ipynb"
# The build and test toolchain, none of which a reader's Binder image needs.
TOOLCHAIN = {"jupyter-book", "myst-nb", "sphinx", "pytest", "pytest-xdist", "nbval", "ruff", "playwright"}
ROOT_NAME = "vanishing-gradients"
# What Colab has that the Binder pins do not give: ipywidgets 7, which Colab shipped for years
# (widgets display through _ipython_display_ there, not _repr_mimebundle_).
COLAB_PROVIDES = ["ipywidgets==7.7.1"]
# A chapter that reads recorded runs and a benchmark results file beside it (so the cell's move into
# the clone matters), run first; then the first chapter, which finds the clone and moves into it.
COLAB_CHAPTERS = ["chapters/detection/detecting_vanishing_gradients.ipynb", FIRST_CHAPTER]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def folder_bytes(path: Path) -> int:
    """Disk space of the files under ``path``, as ``du`` counts it (allocated blocks)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Environment:
    """The virtual environment built from binder/, and the process environment that uses it alone."""

    def __init__(self, venv: Path, home: Path):
        self.venv = venv
        self.bin = venv / "bin"
        self.requirements: Path | None = None  # the requirements file it was built from
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "VIRTUAL_ENV"))}
        for name in ("PYTHONPATH", "MPLBACKEND", "IPYTHONDIR", "PYDEVD_DISABLE_FILE_VALIDATION"):
            inherited.pop(name, None)
        self.env = {
            **inherited,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(home),  # no user configuration leaks in
            "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
            "JUPYTER_DATA_DIR": str(home / ".local" / "share" / "jupyter"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_PATH": str(venv / "share" / "jupyter"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        home.mkdir(parents=True, exist_ok=True)

    def python(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run([str(self.bin / "python"), *args], env=self.env, **kwargs)

    def vglib(self) -> dict[str, str]:
        """``pip show vglib`` as a dict; empty where vglib is not installed."""
        done = subprocess.run([str(self.bin / "python"), "-m", "pip", "show", "vglib"], env=self.env,
                              capture_output=True, text=True)  # fmt: skip
        return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)


def binder_requirements() -> list[str]:
    """binder/requirements.txt as this machine installs it: the local CPU torch wheel where there is one."""
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    if list(TORCH_WHEELS.glob("torch-2.13.0+cpu-*.whl")):
        lines = [f"--find-links {TORCH_WHEELS}" if line.strip() == PYTORCH_INDEX else line for line in lines]
    return lines


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """The tracked files of this checkout (as they are in the working tree) as a git repository
    tagged ``v<version>``: what the repository holds at the tag Colab clones, and the files
    repo2docker copies into a Binder image. An untracked file is not in it, as it would not be."""
    book = tmp_path_factory.mktemp("repository") / ROOT_NAME
    tracked = run(["git", "-C", str(ROOT), "ls-files", "-z"]).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (book / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, book / name)
    git = ["git", "-C", str(book), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    run([*git, "init", "--quiet"])
    run([*git, "add", "-A"])
    run([*git, "commit", "--quiet", "-m", "snapshot"])
    run([*git, "tag", f"v{VERSION}"])
    return book


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> Environment:
    """A fresh virtual environment with binder/requirements.txt installed (no vglib yet)."""
    base = tmp_path_factory.mktemp("binder")
    requirements = base / "requirements.txt"
    requirements.write_text("\n".join(binder_requirements()) + "\n")
    shutil.copy(BINDER / "constraints.txt", base / "constraints.txt")  # its -c line, beside it
    python = shutil.which("python" + runtime_version()) or sys.executable
    started = time.perf_counter()
    run([python, "-m", "venv", str(base / "venv")])
    env = Environment(base / "venv", base / "home")
    env.python("-m", "pip", "install", "--quiet", "-r", str(requirements))
    seconds = time.perf_counter() - started
    site = next((base / "venv" / "lib").glob("python3*/site-packages"))
    measured = {
        "seconds": round(seconds, 1),
        "python": env.python("-c", "import sys; print(sys.version.split()[0])").stdout.strip(),
        "installed_mb": round(folder_bytes(base / "venv") / 2**20),
        "torch_mb": round(folder_bytes(site / "torch") / 2**20),
        "packages": len(json.loads(env.python("-m", "pip", "list", "--format=json").stdout)),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "binder-environment.json").write_text(json.dumps(measured, indent=1) + "\n")
    print(f"binder environment: {measured}")
    env.requirements = requirements
    return env


def runtime_version() -> str:
    match = re.fullmatch(r"python-(3\.\d+)", (BINDER / "runtime.txt").read_text().strip())
    assert match, "binder/runtime.txt must read python-3.N"
    return match[1]


def test_the_environment_has_what_a_reader_needs_and_no_toolchain(environment):
    listed = json.loads(environment.python("-m", "pip", "list", "--format=json").stdout)
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in listed}
    assert installed["torch"] == "2.13.0+cpu"
    assert not [name for name in installed if name.startswith(("nvidia-", "triton", "cuda-"))]
    assert not TOOLCHAIN & set(installed), (
        f"build/test tools in the Binder image: {TOOLCHAIN & set(installed)}"
    )
    assert "jupyterlab" in installed and "jupyterlab-widgets" in installed
    assert environment.vglib() == {}, "vglib is installed by postBuild, not by requirements.txt"


def test_colab_chapters_opened_alone_install_vglib_and_run(environment, snapshot, tmp_path):
    # Colab: torch, numpy, matplotlib, scikit-learn, SciPy and ipywidgets 7, and no vglib
    environment.python("-m", "pip", "install", "--quiet", *COLAB_PROVIDES)
    try:
        environment.python("-c", "import torch, numpy, matplotlib, sklearn, scipy, ipywidgets")
        assert environment.vglib() == {}, "the Colab simulation needs an environment without vglib"
        env = {**environment.env, "VGLIB_REPOSITORY": f"file://{snapshot}"}
        clone = tmp_path / f"{ROOT_NAME}-v{VERSION}"
        for chapter in COLAB_CHAPTERS:  # opened one after the other in the same /content
            notebook = json.loads((ROOT / chapter).read_text())
            # a last cell reports where the chapter ran
            where = {"cell_type": "code", "execution_count": None, "id": "where", "metadata": {},
                     "outputs": [], "source": "import os\nprint(os.getcwd())"}  # fmt: skip
            notebook["cells"].append(where)
            copy = tmp_path / Path(chapter).name
            copy.write_text(json.dumps(notebook))
            run([str(environment.bin / "jupyter-execute"), "--timeout=600", "--output=executed", copy.name],
                cwd=tmp_path, env=env, timeout=900)  # fmt: skip
            executed = json.loads((tmp_path / "executed.ipynb").read_text())
            check_colab_run(executed, notebook, where=clone / Path(chapter).parent)

        installed = environment.vglib()
        assert installed.get("Version") == VERSION and "Editable project location" not in installed
        assert run(["git", "-C", str(clone), "describe", "--tags"]).stdout.strip() == f"v{VERSION}"
    finally:
        environment.python("-m", "pip", "uninstall", "--quiet", "--yes", "vglib")
        environment.python("-m", "pip", "install", "--quiet", "-r", str(environment.requirements))


def check_colab_run(executed: dict, committed: dict, where: Path) -> None:
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert "colab-install" in code[0]["metadata"]["tags"]
    assert not code[0]["outputs"], f"the install cell printed: {code[0]['outputs']}"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error" or o.get("name") == "stderr"], outputs
    assert "".join(code[-1]["outputs"][0]["text"]).strip() == str(where), "it ran in its folder of the clone"
    # every cell that shows something in the book shows it on Colab (a glued value is stored for the
    # page by myst-nb, which Colab lacks: a cell that only glues shows nothing there, here or on Colab)
    shown = [shows(c["outputs"]) for c in committed["cells"] if c["cell_type"] == "code"]
    assert [shows(c["outputs"]) for c in code][:-1] == shown[:-1]
    # the explorers are live widgets (ipywidgets 7 has no _repr_mimebundle_)
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views and all("text/html" in o["data"] for o in views)


def shows(outputs: list[dict]) -> bool:
    """Whether a cell's outputs show the reader anything (a glued value alone does not)."""
    glued = "application/papermill.record/"
    return any(o["output_type"] == "stream" or not all(k.startswith(glued) for k in o.get("data", {}))
               for o in outputs)  # fmt: skip


@pytest.fixture(scope="module")
def binder(environment, snapshot) -> Environment:
    """The environment after binder/postBuild, run in the snapshot as repo2docker runs it."""
    run(["bash", str(snapshot / "binder" / "postBuild")], cwd=snapshot, env=environment.env)
    installed = environment.vglib()
    assert installed.get("Editable project location") == str(snapshot), installed
    return environment


def imports(source: str) -> set[str]:
    """Absolute modules a piece of Python imports, anywhere in it (IPython magics skipped)."""
    tree = ast.parse(
        "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    )
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


# vglib's integrations with a practitioner's tools (extras pandas, tensorboard, lightning): no chapter
# uses them, so a reader's Binder image has none of them (checked below).
PRACTITIONER_ONLY = ("pandas", "tensorboard", "lightning", "torch.utils.tensorboard")
INTEGRATION_MODULES = ("tensorboard.py", "lightning.py")


def chapter_imports() -> set[str]:
    modules = set()
    for path in (ROOT / "chapters").rglob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        modules |= {m for c in cells if c["cell_type"] == "code" for m in imports("".join(c["source"]))}
    return modules


def imported_modules() -> set[str]:
    """Modules the chapters import, and those vglib imports (also inside functions: a missing extra
    breaks those only when a chapter reaches them), but for vglib's practitioner integrations."""
    modules = chapter_imports()
    for path in (ROOT / "vglib").glob("*.py"):
        if path.name not in INTEGRATION_MODULES:
            modules |= imports(path.read_text())
    modules = {m for m in modules if not m.startswith(PRACTITIONER_ONLY)}
    return modules - {"myst_nb"}  # glue works without myst-nb (the build's), which Binder lacks


def test_binder_imports_everything_the_chapters_and_vglib_import(binder):
    integrations = ("vglib.tensorboard", "vglib.lightning")
    used = [m for m in chapter_imports() if m.startswith(PRACTITIONER_ONLY) or m in integrations]
    assert not used, f"a chapter imports a practitioner integration Binder does not install: {used}"
    modules = sorted(imported_modules())
    assert {"torch", "vglib", "sklearn.datasets", "scipy.special", "ipywidgets", "PIL.Image"} <= set(modules)
    binder.python("-c", "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)", *modules)
    done = subprocess.run(
        [str(binder.bin / "python"), "-c", "import myst_nb"], env=binder.env, capture_output=True
    )
    assert done.returncode != 0, "myst-nb (the build's) is in the Binder image"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(binder, snapshot):
    """JupyterLab serving the snapshot, as Binder starts it (the notebook interface of _config.yml)."""
    token, port = secrets.token_hex(16), free_port()
    settings = (
        Path(binder.env["JUPYTER_CONFIG_DIR"])
        / "lab"
        / "user-settings"
        / "@jupyterlab"
        / "notebook-extension"
    )
    settings.mkdir(parents=True, exist_ok=True)
    # render every cell (not only those on screen), so the test sees all of them
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    log = (ARTIFACTS / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [str(binder.bin / "jupyter-lab"), "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={snapshot}", "--allow-root",  # CI containers run as root
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=binder.env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert server.poll() is None, f"JupyterLab exited: see {ARTIFACTS / 'jupyterlab.log'}"
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start in 60 s: see {ARTIFACTS / 'jupyterlab.log'}")
        yield url, token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def kernel_idle(page, url: str, token: str, dialogs: list[str], timeout: float = 180) -> None:
    """Wait until the server reports the chapter's kernel started and idle, and its cells have left
    the queue. Lab's "Select Kernel" dialog (shown when a command needs a kernel that is not up yet)
    is accepted and recorded in ``dialogs``; any other dialog fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            title = dialog.first.locator(".jp-Dialog-header").inner_text().strip()
            assert title == "Select Kernel", f"JupyterLab showed a dialog: {dialog.first.inner_text()}"
            dialogs.append(title)
            dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click()
        with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=5) as response:
            sessions = json.loads(response.read())
        states = [
            s["kernel"]["execution_state"] for s in sessions if s["path"] == FIRST_CHAPTER and s.get("kernel")
        ]
        busy = page.locator(".jp-CodeCell .jp-InputArea-prompt:has-text('[*]')").count()
        if states == ["idle"] and not busy:
            return
        page.wait_for_timeout(250)
    pytest.fail(f"the kernel did not start and become idle in {timeout} s (sessions: {sessions})")


def menu(page, menu_name: str, item: str) -> None:
    """Choose ``menu_name > item`` from JupyterLab's menu bar, as a reader does."""
    page.click(f".lm-MenuBar-itemLabel:text-is('{menu_name}')")
    page.click(f".lm-Menu-itemLabel:text-is('{item}')")


def test_binder_jupyterlab_runs_the_first_chapter_and_the_explorer_redraws(lab, browser):
    url, token = lab
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    external: list[str] = []

    def local_only(route) -> None:
        request = route.request.url
        if urlparse(request).hostname == "127.0.0.1" or request.startswith(("data:", "blob:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    dialogs: list[str] = []
    try:
        # the path Binder's button opens (urlpath=lab/tree/<chapter>)
        page.goto(f"{url}/lab/tree/{FIRST_CHAPTER}?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
        kernel_idle(page, url, token, dialogs)
        # the committed outputs and execution counts go, so what the test sees next is this run's
        menu(page, "Edit", "Clear Outputs of All Cells")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
            ".every(p => !/\\d/.test(p.textContent))"
        )
        menu(page, "Run", "Run All Cells")
        # every code cell has run: its prompt shows an execution count, and the kernel is idle again
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""",
            timeout=300_000,
        )
        kernel_idle(page, url, token, dialogs)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        assert not errors, f"the chapter printed errors or warnings in JupyterLab: {errors}"
        cells = json.loads((ROOT / FIRST_CHAPTER).read_text())["cells"]
        assert page.locator(".jp-CodeCell").count() == sum(c["cell_type"] == "code" for c in cells)

        # the gradient explorer: its depth slider, and the figure the kernel draws beside it
        slider = page.locator(".widget-slider:has(.widget-label:text-is('depth'))").first
        explorer = page.locator(".widget-vbox:has(.widget-slider:has(.widget-label:text-is('depth')))").last
        image = explorer.locator("img.widget-image").first
        slider.scroll_into_view_if_needed()
        before_value, before_src = slider.locator(".widget-readout").inner_text(), image.get_attribute("src")
        slider.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([img, src]) => img.getAttribute('src') !== src", arg=[image.element_handle(), before_src],
            timeout=30_000,
        )  # fmt: skip
        after_value = slider.locator(".widget-readout").inner_text()
        assert int(after_value) == int(before_value) + 1, (before_value, after_value)
        assert not external, f"JupyterLab fetched from outside 127.0.0.1: {external[:5]}"
        log = (ARTIFACTS / "jupyterlab.log").read_text()
        assert "Starting the kernel" in log or "Kernel started" in log, "the kernel's log"
        assert "without encryption" not in log, "postBuild's server config gives the kernel CurveZMQ keys"
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "binder-jupyterlab.png"))
        (ARTIFACTS / "binder-jupyterlab.html").write_text(page.content())
        raise
    finally:
        context.close()
