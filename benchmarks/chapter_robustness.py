"""Do the chapters' claims hold on other draws and other CPUs? Execute every chapter under
perturbations and print how close each of its assertions came to failing.

Each run executes a copy of a chapter in a fresh kernel (nothing is written back) under one
*variant*: another seed (``VGLIB_SEED_OFFSET=k``: every seed vglib uses is replaced by an
independent one) or another CPU kernel path (``ATEN_CPU_CAPABILITY=default`` with
``MKL_ENABLE_INSTRUCTIONS=AVX2``, what a CPU without AVX-512 or AVX2 gets, or ``avx2``). Before it
runs, every comparison inside an ``assert`` is rewritten to record its two sides, so the report gives
each assertion's *margin*: the relative slack of its tightest comparison, ``(bound - value) / max(|bound|,
|value|)`` (0 means it only just held; below 0 it failed). Equalities and plain truth tests are
reported as held or failed, with no margin.

    python benchmarks/chapter_robustness.py                      # all chapters, seeds 0-4, both kernel paths
    python benchmarks/chapter_robustness.py --variants seed:3 cpu:default chapters/remedies/gated_units.ipynb
    python benchmarks/chapter_robustness.py --jobs 2 --out /tmp/robustness

With ``--out DIR`` the executed copies are kept (``DIR/<variant>/<chapter>.ipynb``) with a JSON file
of the recorded comparisons beside each, and ``--compare`` prints, for every glued number and printed
line that differs from the committed notebook, both versions: which digits are stable.
The exit code is 1 when any assertion failed under any variant.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
CPU_PATHS = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
}
DEFAULT_VARIANTS = ("seed:0", "seed:1", "seed:2", "seed:3", "seed:4", "cpu:default", "cpu:avx2")

RECORDER = r"""
import json as _vg_json, math as _vg_math, operator as _vg_op
_vg_records = {}
_VG_OPS = {"<": _vg_op.lt, "<=": _vg_op.le, ">": _vg_op.gt, ">=": _vg_op.ge, "==": _vg_op.eq, "!=": _vg_op.ne}

def _vg_margin(op, a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if op in ("==", "!=") or not (_vg_math.isfinite(a) and _vg_math.isfinite(b)):
        return None
    slack = b - a if op in ("<", "<=") else a - b
    return slack / max(abs(a), abs(b), 1e-300)

def _vg_cmp(key, left, ops, rights):
    ok, margins = True, []
    for op, right in zip(ops, rights):
        try:
            held = bool(_VG_OPS[op](left, right))
        except Exception:
            held = bool(_VG_OPS[op](left, right).all())
        margin = _vg_margin(op, left, right)
        ok = ok and held
        margins.append(margin)
        left = right
    record = _vg_records.setdefault(key, {"held": True, "margin": None, "calls": 0})
    record["calls"] += 1
    record["held"] = record["held"] and ok
    known = [m for m in margins if m is not None]
    if known:
        worst = min(known)
        record["margin"] = worst if record["margin"] is None else min(record["margin"], worst)
    _vg_dump()
    return ok

def _vg_dump():
    with open(_VG_PATH, "w") as f:
        _vg_json.dump(_vg_records, f)

def _vg_truth(key, value):
    record = _vg_records.setdefault(key, {"held": True, "margin": None, "calls": 0})
    record["calls"] += 1
    record["held"] = record["held"] and bool(value)
    _vg_dump()
    return value
"""


class _Instrument(ast.NodeTransformer):
    """Rewrites ``assert`` tests: each comparison records both sides, each other term its truth."""

    def __init__(self, cell: int, source: str):
        self.cell, self.source, self.asserts = cell, source, []

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        terms = (
            node.test.values
            if isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And)
            else [node.test]
        )
        new_terms = []
        for term in terms:
            text = ast.get_source_segment(self.source, term) or ast.unparse(term)
            key = f"cell {self.cell}, line {term.lineno}: {text}"
            self.asserts.append(key)
            if isinstance(term, ast.Compare):
                ops = [
                    {
                        ast.Lt: "<",
                        ast.LtE: "<=",
                        ast.Gt: ">",
                        ast.GtE: ">=",
                        ast.Eq: "==",
                        ast.NotEq: "!=",
                    }.get(type(o))
                    for o in term.ops
                ]
                if None not in ops:
                    new_terms.append(
                        ast.Call(
                            func=ast.Name("_vg_cmp", ast.Load()),
                            args=[
                                ast.Constant(key),
                                term.left,
                                ast.List([ast.Constant(o) for o in ops], ast.Load()),
                                ast.List(term.comparators, ast.Load()),
                            ],
                            keywords=[],
                        )
                    )
                    continue
            new_terms.append(
                ast.Call(func=ast.Name("_vg_truth", ast.Load()), args=[ast.Constant(key), term], keywords=[])
            )
        node.test = new_terms[0] if len(new_terms) == 1 else ast.BoolOp(ast.And(), new_terms)
        return node


def instrument(notebook: nbformat.NotebookNode, records_path: str) -> int:
    """Rewrite the asserts of every code cell that is plain Python; returns how many were found."""
    count = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or "assert" not in cell.source:
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue  # IPython magics: set-up cells, which assert nothing here
        transformer = _Instrument(index, cell.source)
        tree = ast.fix_missing_locations(transformer.visit(tree))
        cell.source = ast.unparse(tree)
        count += len(transformer.asserts)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"_VG_PATH = {records_path!r}\n" + RECORDER))
    return count


def toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def variant_env(variant: str) -> dict[str, str]:
    kind, _, value = variant.partition(":")
    if kind == "seed" and value.isdigit():
        return {"VGLIB_SEED_OFFSET": value}
    if kind == "cpu" and value in CPU_PATHS:
        return dict(CPU_PATHS[value])
    raise SystemExit(f"unknown variant {variant!r}: use seed:<k> or cpu:{'|cpu:'.join(CPU_PATHS)}")


def run_one(path: Path, variant: str, out: Path) -> dict:
    """Execute one instrumented chapter in a child process (so the variant's environment reaches
    the kernel); returns its records, time and error, if any."""
    target = out / variant.replace(":", "-")
    target.mkdir(parents=True, exist_ok=True)
    executed, records = target / path.name, target / f"{path.stem}.asserts.json"
    env = {**os.environ, **variant_env(variant), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env.setdefault("JUPYTER_PATH", str(ROOT / ".venv" / "share" / "jupyter"))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(executed), str(records)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    found = json.loads(records.read_text()) if records.exists() else {}
    error = None if proc.returncode == 0 else (proc.stdout + proc.stderr).strip().splitlines()[-12:]
    return {
        "chapter": str(path.relative_to(ROOT)),
        "variant": variant,
        "seconds": seconds,
        "records": found,
        "error": error,
        "executed": str(executed),
    }


def child(source: str, executed: str, records: str) -> int:
    from nbclient import NotebookClient

    notebook = nbformat.read(source, as_version=4)
    Path(records).unlink(missing_ok=True)
    instrument(notebook, records)
    # allow_errors: a failed assertion does not stop the chapter, so every later one is still measured.
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(Path(source).parent)}},
    )
    client.execute()
    nbformat.write(notebook, executed)
    errors = [
        (i, o)
        for i, c in enumerate(notebook.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    for index, output in errors:
        print(f"cell {index - 1}: {output['ename']}: {output['evalue'][:300]}")
    return 1 if errors else 0


def stored_outputs(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """Glued values and printed text by a stable key, for comparing two executions (each cell's
    streams joined: how they split into outputs varies between executions)."""
    found = {}
    for index, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
        streams = "".join(
            o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
        )
        if streams:
            found[f"cell {index} printed"] = streams
        for n, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            record = data.get("application/papermill.record/text/plain")
            if record is not None:
                name = output.get("metadata", {}).get("scrapbook", {}).get("name", f"{index}:{n}")
                found[f"glue {name}"] = record
            elif "text/plain" in data and not {"image/png", "application/vnd.jupyter.widget-view+json"} & set(
                data
            ):
                found[f"cell {index} text {n}"] = data["text/plain"]
    return found


def compare(committed: Path, executed: Path) -> list[str]:
    ours = nbformat.read(executed, as_version=4)
    ours.cells = ours.cells[1:]  # the recorder
    theirs, mine = stored_outputs(nbformat.read(committed, as_version=4)), stored_outputs(ours)
    lines = []
    for key in theirs:
        if key in mine and mine[key] != theirs[key]:
            if key.startswith("glue"):
                lines.append(f"  {key}: {theirs[key]} -> {mine[key]}")
            else:
                a, b = theirs[key].splitlines(), mine[key].splitlines()
                for x, y in zip(a, b, strict=False):
                    if x != y:
                        lines.append(f"  {key}:\n    - {x}\n    + {y}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", type=Path)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--compare", action="store_true", help="print outputs that differ from the committed ones"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    for variant in args.variants:
        variant_env(variant)
    paths = [p.resolve() for p in args.chapters] or toc_notebooks()
    out = args.out or Path(tempfile.mkdtemp(prefix="vglib-robustness-"))
    jobs = [(p, v) for p in paths for v in args.variants]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(job[0], job[1], out), jobs))

    failed, worst = False, []
    for path in paths:
        chapter = str(path.relative_to(ROOT))
        runs = [r for r in results if r["chapter"] == chapter]
        timings = ", ".join(f"{r['variant']} {r['seconds']:.0f} s" for r in runs)
        print(f"\n{chapter}  ({timings})")
        keys = sorted({k for r in runs for k in r["records"]}, key=lambda k: (int(k.split(",")[0][5:]), k))
        for key in keys:
            seen = [(r["variant"], r["records"].get(key)) for r in runs]
            held = all(rec is None or rec["held"] for _, rec in seen)
            margins = [(rec["margin"], v) for v, rec in seen if rec and rec["margin"] is not None]
            low = min(margins) if margins else None
            flag = (
                "" if held else "  FAILED under " + ", ".join(v for v, rec in seen if rec and not rec["held"])
            )
            shown = f"margin {low[0]:+.3f} ({low[1]})" if low else "held (no margin)" if held else ""
            print(f"  {shown:<32} {key[:150]}{flag}")
            failed |= not held
            if low:
                worst.append((low[0], low[1], chapter, key))
        for r in runs:
            if r["error"]:
                failed = True
                print(f"  ERROR under {r['variant']}:\n    " + "\n    ".join(r["error"]))
            if args.compare:
                diff = compare(path, Path(r["executed"]))
                if diff:
                    print(f"  outputs that differ from the committed ones under {r['variant']}:")
                    print("\n".join(diff))
    worst.sort()
    print("\nclosest margins:")
    for margin, variant, chapter, key in worst[:10]:
        print(f"  {margin:+.3f}  {variant:<12} {chapter}: {key[:120]}")
    print(f"\nexecuted copies in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
