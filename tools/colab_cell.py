"""The first code cell of every chapter: install vglib where it is missing (Colab), hidden on the site.

Colab opens a chapter straight from the repository with torch, numpy, matplotlib, scikit-learn and
ipywidgets already installed, but not vglib. The cell installs vglib alone, from the repository at the
tag ``v<version>`` of the vglib the chapter was executed with; where vglib is importable (Binder, a
local clone, the test suite) it does nothing. ``VGLIB_INSTALL_SOURCE`` replaces the pip requirement
(a path to a checkout, a wheel), which is how the tests install from the local checkout.

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
TEMPLATE = '''\
# Colab: install vglib, the book's library, if it is missing (Binder and a local clone have it).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("vglib") is None:
    source = os.environ.get("VGLIB_INSTALL_SOURCE", "vglib @ git+{url}@v{version}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()'''


def repository_url() -> str:
    """``repository.url`` of ``_config.yml`` (the one place the repository is named)."""
    text = (ROOT / "_config.yml").read_text()
    match = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, flags=re.M)
    if match is None:
        raise ValueError("_config.yml has no repository.url")
    return match[1]


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def install_source() -> str:
    """The pip requirement the cell installs: vglib from the repository at its version's tag."""
    return f"vglib @ git+{repository_url()}@v{version()}"


def cell_source() -> str:
    return TEMPLATE.format(url=repository_url(), version=version())


def is_install_cell(cell: dict) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def first_code_cell(notebook: dict) -> dict | None:
    return next((c for c in notebook["cells"] if c["cell_type"] == "code"), None)


def write(path: Path) -> bool:
    """Put the current install cell first among ``path``'s code cells; True if the file changed.
    A new cell takes execution count 1 and the later counts move up by one, as executing would."""
    notebook = json.loads(path.read_text())
    source = cell_source()
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
