"""vglib as a library user meets it: the wheel a ``pip install .`` builds, installed on its own and
used from outside the book; every third-party import declared; a missing extra named."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

import vglib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LIBRARY_README = ROOT / PROJECT["readme"]
# Optional imports by distribution, and the extra that installs each (pyproject.toml).
EXTRA_OF = {
    "ipywidgets": "widgets",
    "scikit-learn": "tasks",
    "scipy": "scipy",
    "pandas": "pandas",
    "tensorboard": "tensorboard",
    "lightning": "lightning",
    "safetensors": "pretrained",
}
# Imported only where present, with no error where absent: myst-nb stores glued numbers in the book's
# build; elsewhere (Colab, a user's script) vglib.glue just returns the value.
SILENT_FALLBACK = {"myst-nb"}


def requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement)[0].lower().replace("_", "-")


@functools.cache
def installed_packages() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution_of(module: str) -> str:
    """The distribution that installs the top-level import ``module`` (in this environment)."""
    found = installed_packages().get(module)
    assert found, f"no installed distribution provides '{module}'"
    return found[0].lower().replace("_", "-")


def test_the_version_is_one_and_the_changelog_has_it():
    """The newest release heading is the package's version; only an "Unreleased" section (what is on
    main since, not yet released) may come before it."""
    assert PROJECT["version"] == vglib.__version__
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    releases = [h for h in headings if h != "Unreleased"]
    assert headings[: len(headings) - len(releases)] in ([], ["Unreleased"]), headings[:2]
    assert releases and releases[0].split()[0] == PROJECT["version"], releases[:1]
    assert re.fullmatch(r"\S+ \(\d{4}-\d{2}-\d{2}\)", releases[0]), "a release heading carries its date"


def third_party_imports() -> list[tuple[str, int, str, str | None, bool]]:
    """``(file, line, distribution, message, type_checking)`` of every import of another package in
    vglib, at any depth. ``message`` is the source of the ``ImportError`` handler that guards the
    import, with the module's string constants substituted for their names; or, for an import in a
    function after a call of a module function that guards an import of the same package, that
    function's handler; None if unguarded."""
    found = []
    for path in sorted((ROOT / "vglib").glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        constants = {
            t.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for t in node.targets
            if isinstance(t, ast.Name) and isinstance(node.value.value, str)
        }
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        imports = []  # (node, distribution, message, type_checking, enclosing module-level function)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            message, type_checking, function, up = None, False, None, node
            while up in parents:
                child, up = up, parents[up]
                if isinstance(up, ast.If) and ast.unparse(up.test) == "TYPE_CHECKING":
                    type_checking = True
                if isinstance(up, ast.Try) and child in up.body and message is None:
                    for handler in up.handlers:
                        if handler.type is not None and "ImportError" in ast.unparse(handler.type):
                            message = ast.get_source_segment(source, handler)
                            for name, value in constants.items():
                                message = message.replace("{" + name + "}", value)
                if isinstance(up, ast.FunctionDef) and up in tree.body:
                    function = up
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "vglib":
                    imports.append((node, distribution_of(top), message, type_checking, function))
        guards = {
            (function.name, distribution): message
            for _, distribution, message, _, function in imports
            if message is not None and function is not None
        }
        for node, distribution, message, type_checking, function in imports:
            if message is None and function is not None:
                earlier = [
                    call.func.id
                    for call in ast.walk(function)
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                    and call.lineno < node.lineno
                ]  # fmt: skip
                message = next(
                    (guards[g, distribution] for g in earlier if (g, distribution) in guards), None
                )
            found.append((path.name, node.lineno, distribution, message, type_checking))
    return found


def test_every_third_party_import_is_a_dependency_or_a_guarded_extra():
    required = {requirement_name(r) for r in PROJECT["dependencies"]}
    extras = {
        extra: {requirement_name(r) for r in requirements}
        for extra, requirements in PROJECT["optional-dependencies"].items()
    }
    imports = third_party_imports()
    assert {"torch", "numpy", "matplotlib", "pillow"} <= {i[2] for i in imports}
    for name, line, distribution, message, type_checking in imports:
        where = f"vglib/{name}:{line} imports {distribution}"
        if distribution in required or type_checking:
            continue
        assert message is not None, f"{where}, not a dependency: declare it or guard the import"
        if distribution in SILENT_FALLBACK:
            assert "raise" not in message, where
            continue
        extra = EXTRA_OF.get(distribution)
        assert extra, f"{where}: which extra installs it? (EXTRA_OF)"
        assert distribution in extras[extra], f"{where}: the extra {extra!r} does not install it"
        assert f'pip install "vglib[{extra}]"' in message, f"{where}: the error must name vglib[{extra}]"
    # the chapters extra is what the chapters import: the explorers, the digits task, the theory, and
    # the pretrained transformer's weights
    assert extras["chapters"] == extras["widgets"] | extras["tasks"] | extras["scipy"] | extras["pretrained"]


def block(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``package`` (and its submodules, imported or not) impossible to import."""
    for name in [n for n in sys.modules if n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def import_vglib_lightning() -> None:
    importlib.import_module("vglib.lightning")


MISSING = [
    ("ipywidgets", "widgets", lambda: vglib.gradient_explorer(static=False)),
    ("ipywidgets", "widgets", lambda: vglib.GradientExplorer(width=4, max_depth=2).widget(2)),
    ("ipywidgets", "widgets", lambda: vglib.curve_explorer([], lambda: ("", []), [], xlabel="", ylabel="")),
    ("sklearn", "tasks", lambda: vglib.tasks._digits()),
    ("sklearn", "tasks", lambda: vglib.tasks._quadratic_baseline.__wrapped__("teacher", "test")),
    ("sklearn", "tasks", lambda: vglib.tasks._linear_baseline.__wrapped__("digits", "test")),
    ("scipy", "scipy", lambda: vglib.lyapunov_exponents(3)),
    ("scipy", "scipy", lambda: vglib.saxe_learning_time(2.0, 0.1, 1.0, depth=3)),
    ("scipy", "scipy", lambda: vglib.saxe_mode_strength(1.0, 2.0, 0.1, depth=3)),
    ("scipy", "scipy", lambda: vglib.saxe_loss_time([2.0, 1.0], 0.1, 0.5, depth=3)),
    ("scipy", "scipy", lambda: vglib.log_length_variance(3, 4)),
    ("pandas", "pandas", lambda: vglib.tables.require_pandas()),
    ("tensorboard", "tensorboard", lambda: vglib.tensorboard._require_tensorboard()),
    ("lightning", "lightning", import_vglib_lightning),
]


@pytest.mark.parametrize(
    ("package", "extra", "call"), MISSING, ids=[f"{m[0]}-{i}" for i, m in enumerate(MISSING)]
)
def test_a_missing_optional_package_names_the_extra_to_install(monkeypatch, package, extra, call):
    block(monkeypatch, package)
    monkeypatch.delitem(sys.modules, "vglib.lightning", raising=False)
    with pytest.raises(ImportError, match=re.escape(f'pip install "vglib[{extra}]"')):
        call()


def library_example(readme: str) -> str:
    (code,) = re.findall(r"## Example\n\n```python\n(.*?)```", readme, flags=re.S)
    return code


INSTALLED_CHECKS = """
import importlib.metadata, json, pathlib, sys
import vglib

CODE = pathlib.Path(sys.argv[1]).read_text()
exec(CODE)  # the library README's example, as a user runs it
assert report.status == "vanishing", report.status
assert sorted(set(table.step.tolist())) == [0, 10, 20, 30, 40]
assert (table.series("linear1", "grad_norm") < 1e-18).all()
assert pathlib.Path("gradients.csv").is_file()

package = pathlib.Path(vglib.__file__).parent
meta = importlib.metadata.metadata("vglib")
print(json.dumps({
    "file": vglib.__file__,
    "prefix": sys.prefix,
    "version": importlib.metadata.version("vglib"),
    "module_version": vglib.__version__,
    "distribution": str(importlib.metadata.distribution("vglib").locate_file("")),
    "data": sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.suffix != ".pyc"),
    "requires": meta.get_all("Requires-Dist"),
    "extras": meta.get_all("Provides-Extra"),
    "content_type": meta["Description-Content-Type"],
    "description": meta.json["description"],
}))
"""


def test_the_wheel_installs_a_working_vglib_described_by_its_own_readme(tmp_path):
    # Build from a copy of what a clone holds (tracked files and new ones git does not ignore), so
    # that the build leaves its build/ and egg-info in the copy, not in the repository.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "pyproject.toml", "vglib"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    source = tmp_path / "source"
    for name in listed:
        if (ROOT / name).is_file():  # a tracked file deleted in the work tree is not built
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist]
    subprocess.run([*build, source], check=True, capture_output=True, timeout=120)
    (wheel,) = dist.glob("vglib-*.whl")
    assert wheel.name == f"vglib-{PROJECT['version']}-py3-none-any.whl"

    # A fresh environment, without pip, that sees the development environment's packages (torch
    # and the rest, through a .pth line appended after its own site-packages) but not its editable
    # vglib: a .pth line that is a path adds that folder without running the .pth files in it.
    # (--system-site-packages would give the base interpreter's packages, not this virtualenv's.)
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    dev_site = [p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir()]
    assert dev_site, "the development environment's site-packages, which has torch"
    Path(site, "dev_environment.pth").write_text(dev_site[0] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel]
    subprocess.run(install, check=True, capture_output=True, env=env, timeout=120)

    # Used from elsewhere (-I: neither the working directory nor PYTHONPATH on sys.path)
    work = tmp_path / "work"
    work.mkdir()
    example = work / "example.py"
    example.write_text(library_example(LIBRARY_README.read_text()))
    checks = work / "checks.py"
    checks.write_text(INSTALLED_CHECKS)
    done = subprocess.run(
        [python, "-I", "-W", "error::RuntimeWarning", checks, example],
        cwd=work, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])

    assert Path(found["file"]).resolve().is_relative_to(Path(site).resolve()), found["file"]
    assert Path(found["distribution"]).resolve() == Path(site).resolve()
    assert found["version"] == found["module_version"] == PROJECT["version"]
    assets = sorted(f"assets/{p.name}" for p in (ROOT / "vglib" / "assets").glob("*.js"))
    assert assets and set(assets) <= set(found["data"])
    assert "py.typed" in found["data"]
    requires = found["requires"]
    assert "pillow>=8" in requires
    for extra in PROJECT["optional-dependencies"]:
        assert extra in found["extras"]
        assert any(f'extra == "{extra}"' in r for r in requires), extra
    assert found["content_type"] == "text/markdown"
    assert found["description"].strip() == LIBRARY_README.read_text().strip()
    assert "make book" not in found["description"] and "make test" not in found["description"]


def test_the_library_readme_is_about_the_library():
    text = LIBRARY_README.read_text()
    assert LIBRARY_README != ROOT / "README.md"
    for extra in PROJECT["optional-dependencies"]:
        assert f"| `{extra}` |" in text, f"the extras table lacks {extra}"
    for name in ("diagnose", "GradientMonitor"):
        assert f"vglib.{name}(" in library_example(text)
    assert len(library_example(text).strip().splitlines()) <= 20
    assert "make " not in text
    # it installs the release of this version (a version bump updates the tag here too)
    tags = re.findall(r"git\+https://\S+@(v[\w.]+)", text)
    assert tags == [f"v{PROJECT['version']}"], tags
    links = re.findall(r"<(https?://[^>]+)>|\]\((https?://[^)]+)\)", text)
    assert links, "links to the book"
