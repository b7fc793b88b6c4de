"""Execute every chapter of the book (in the order of ``_toc.yml``) and print how long each takes.

Each notebook runs in a fresh kernel, as ``make book`` runs it, on a copy (nothing is written
back). The kernel is the one ``make`` installs in the virtual environment.

    python benchmarks/chapter_times.py [chapters/remedies/...ipynb ...]

Targets (issue 6): every chapter under 90 s, the whole book under 10 minutes, on a 2-core CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_LIMIT_S = 90.0
BOOK_LIMIT_S = 600.0


def toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def execute(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main() -> int:
    paths = [Path(p).resolve() for p in sys.argv[1:]] or toc_notebooks()
    total, slow = 0.0, []
    for path in paths:
        seconds = execute(path)
        total += seconds
        flag = "" if seconds < CHAPTER_LIMIT_S else f"  over {CHAPTER_LIMIT_S:.0f} s"
        print(f"{path.relative_to(ROOT)!s:<60} {seconds:6.1f} s{flag}", flush=True)
        if seconds >= CHAPTER_LIMIT_S:
            slow.append(path)
    print(f"{'all ' + str(len(paths)) + ' chapters':<60} {total:6.1f} s (limit {BOOK_LIMIT_S:.0f} s)")
    return 1 if slow or total >= BOOK_LIMIT_S else 0


if __name__ == "__main__":
    sys.exit(main())
