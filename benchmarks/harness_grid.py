"""The full harness grid: every remedy of ``vglib.grid.GRID_REMEDIES`` (and the shallow twin of equal
parameter count) on every task of ``vglib.tasks.TASKS``, at every learning rate of ``GRID_LRS``,
with every seed of ``HARNESS_SEEDS``.

Each (remedy, task) group trains as one batched ensemble (``vglib.grid.run_group``); groups run in
``--jobs`` worker processes, one torch thread each. The learning rate of each group is chosen on
the validation split (median over seeds of the final metric) and its test metric reported, as
median and range over the seeds, beside the task's linear baseline, with the steps to the task's
threshold and two gradient ratios at initialisation (``grid.init_ratios``: weight gradients, and
the backpropagated gradient by ``diagnose``'s fit), medians over the seeds.

    python benchmarks/harness_grid.py --from-file        # print the tables of the committed results
    python benchmarks/harness_grid.py                    # run the grid and print the tables
    python benchmarks/harness_grid.py --write            # and write benchmarks/results/harness_grid.json
    python benchmarks/harness_grid.py --remedies "ReLU, He" "tanh, Xavier" --steps 200   # a quick look
    python benchmarks/harness_grid.py --merge --remedies "ReLU, He"   # re-run whole groups into the file
    python benchmarks/harness_grid.py --extend          # run the learning rates the file lacks

``tests/test_harness_grid.py`` checks that the file covers the whole grid and re-runs a random group
of it. The chapters read it for the tuning curves (metric against learning rate).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

import vglib
from vglib import grid
from vglib.records import cpu_signature
from vglib.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "harness_grid.json"


def remedies_for(task: str, labels: list[str] | None) -> list[vglib.Remedy]:
    every = [*grid.GRID_REMEDIES, grid.shallow_twin(task)]
    if not labels:
        return every
    known = {r.label: r for r in every}
    missing = [label for label in labels if label not in known]
    if missing:
        raise SystemExit(f"unknown remedies {missing}; known: {sorted(known)}")
    return [known[label] for label in labels]


def writer() -> dict:
    """The arithmetic that writes the file: the CPU (``vglib.records.cpu_signature``) and one thread
    per worker. tests/test_harness_grid.py requires an exact re-run where they match."""
    return {**cpu_signature(), "threads": 1}


def check_writer(saved: dict) -> None:
    """Adding cells made by other arithmetic would leave a file no CPU re-runs exactly."""
    if saved["meta"].get("cpu") != writer():
        raise SystemExit(
            f"the file was written on {saved['meta'].get('cpu')}, this CPU is {writer()}: re-run the whole "
            "grid (--write) rather than mixing cells of two kinds of arithmetic"
        )


def run_one(job: tuple) -> tuple[list[grid.GridCell], float]:
    remedy, task, steps, *lrs = job  # lrs: the grid's unless given
    vglib.seed_everything(0)  # one thread in each worker
    start = time.perf_counter()
    cells = grid.run_group(remedy, task, steps=steps, lrs=lrs[0] if lrs else grid.GRID_LRS)
    return cells, time.perf_counter() - start


def ordered(cells: list[grid.GridCell]) -> list[grid.GridCell]:
    """Cells in the file's order: by task, then remedy as the catalogue lists them, then lr, seed."""
    order = {r.label: i for i, r in enumerate([*grid.GRID_REMEDIES, grid.shallow_twin("teacher")])}
    order[grid.SHALLOW_TWIN] = len(order)
    return sorted(cells, key=lambda c: (TASKS.index(c.task), order.get(c.remedy, len(order)), c.lr, c.seed))


def init_entries(tasks: list[str], labels: list[str] | None = None) -> list[dict]:
    """Both gradient ratios at initialisation (``grid.init_ratios``) of every remedy, task and seed."""
    out = []
    for task in tasks:
        for remedy in remedies_for(task, labels):
            for seed in vglib.HARNESS_SEEDS:
                weight, backprop = grid.init_ratios(remedy, task, seed)
                out.append({"remedy": remedy.label, "task": task, "seed": seed,
                            "weight_ratio": weight, "backprop_ratio": backprop})  # fmt: skip
    return out


def table(cells: list[grid.GridCell], task: str, init: list[dict] | None = None) -> str:
    """The grid's runs of ``task`` at each row's chosen learning rate, as the chapters show them
    (``vglib.RemedyTable``: medians and ranges over the seeds, steps to the threshold, both gradient
    ratios at initialisation where ``init`` has them, and the baselines below the rows)."""
    results = vglib.Grid(tuple(cells), tuple(init or ()), {})
    labels = results.labels(task)
    rows = [results.runs(label, task) for label in labels if label != grid.SHALLOW_TWIN]
    shallow = results.runs(grid.SHALLOW_TWIN, task) if grid.SHALLOW_TWIN in labels else None
    return "\n" + repr(vglib.RemedyTable(rows, shallow=shallow))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=grid.GRID_STEPS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--remedies", nargs="+", default=None, help="labels (default: all)")
    parser.add_argument("--from-file", action="store_true", help="print the committed results, run nothing")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="run only --remedies (on --tasks, full budget) and put their groups into the committed file",
    )
    parser.add_argument(
        "--extend",
        action="store_true",
        help="run only the learning rates of GRID_LRS the committed file lacks (--remedies: only those)",
    )
    parser.add_argument(
        "--update-init",
        action="store_true",
        help="recompute only the ratios at initialisation, into the file",
    )
    args = parser.parse_args()
    if args.update_init:  # the ratios at initialisation only, into the committed file
        saved = json.loads(RESULTS.read_text())
        saved["init"] = init_entries(list(TASKS))
        RESULTS.write_text(json.dumps(saved) + "\n")
        print(f"wrote the init ratios into {RESULTS.relative_to(ROOT)}")
    if args.from_file or args.update_init:
        saved = json.loads(RESULTS.read_text())
        cells = grid.cells_from_json(saved["cells"])
        for task in args.tasks:
            print(table(cells, task, saved.get("init")))
        return
    if args.extend:  # learning rates of GRID_LRS that a group of the file lacks, run and merged in
        saved = json.loads(RESULTS.read_text())
        check_writer(saved)
        cells = grid.cells_from_json(saved["cells"])
        have: dict[tuple[str, str], set[float]] = {}
        for c in cells:
            have.setdefault((c.remedy, c.task), set()).add(c.lr)
        jobs = []
        for task in TASKS:
            for r in remedies_for(task, args.remedies):
                missing = [lr for lr in grid.GRID_LRS if lr not in have.get((r.label, task), set())]
                if missing:
                    jobs.append((r, task, grid.GRID_STEPS, tuple(missing)))
        start = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            fresh = [cell for group, _ in pool.map(run_one, jobs) for cell in group]
        cells = ordered([*cells, *fresh])
        saved["cells"] = grid.cells_to_json(cells)
        saved["meta"]["lrs"] = list(grid.GRID_LRS)
        RESULTS.write_text(json.dumps(saved) + "\n")
        print(f"ran {len(jobs)} groups' missing learning rates in {time.perf_counter() - start:.0f} s into "
              f"{RESULTS.relative_to(ROOT)}")  # fmt: skip
        for task in TASKS:
            print(table(cells, task, saved["init"]))
        return
    if args.merge:  # new or changed remedies only: the rest of the committed file is kept
        if not args.remedies or args.steps != grid.GRID_STEPS:
            parser.error("--merge needs --remedies, and no --steps")
        saved = json.loads(RESULTS.read_text())
        check_writer(saved)
        jobs = [(r, task, args.steps) for task in args.tasks for r in remedies_for(task, args.remedies)]
        start = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            fresh = [cell for group, _ in pool.map(run_one, jobs) for cell in group]
        redone = {(label, task) for label in args.remedies for task in args.tasks}
        kept = [c for c in grid.cells_from_json(saved["cells"]) if (c.remedy, c.task) not in redone]
        cells = ordered([*kept, *fresh])
        init = [e for e in saved["init"] if (e["remedy"], e["task"]) not in redone]
        init += init_entries(list(args.tasks), args.remedies)
        saved["cells"], saved["init"] = grid.cells_to_json(cells), init
        RESULTS.write_text(json.dumps(saved) + "\n")
        took = time.perf_counter() - start
        print(f"merged {len(jobs)} groups in {took:.0f} s into {RESULTS.relative_to(ROOT)}")
        for task in TASKS:
            print(table(cells, task, init))
        return
    if args.write and (args.steps != grid.GRID_STEPS or args.remedies or set(args.tasks) != set(TASKS)):
        parser.error("--write records the whole grid: no --steps, --remedies or --tasks with it")
    jobs = [(r, task, args.steps) for task in args.tasks for r in remedies_for(task, args.remedies)]
    start = time.perf_counter()
    cells: list[grid.GridCell] = []
    seconds = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for group, took in pool.map(run_one, jobs):
            cells += group
            seconds.append(took)
    wall = time.perf_counter() - start
    init = init_entries(args.tasks)
    for task in args.tasks:
        print(table(cells, task, init))
    networks = len(grid.GRID_LRS) * len(vglib.HARNESS_SEEDS)
    print(
        f"\n{len(jobs)} groups of {networks} networks, {args.steps} steps each: "
        f"{wall:.0f} s wall on {args.jobs} processes (a group: median {np.median(seconds):.1f} s, "
        f"max {max(seconds):.1f} s)"
    )
    if args.write:
        RESULTS.parent.mkdir(exist_ok=True)
        meta = {
            "torch": torch.__version__,
            "steps": args.steps,
            "eval_every": grid.GRID_EVAL_EVERY,
            "lrs": list(grid.GRID_LRS),
            "seeds": list(vglib.HARNESS_SEEDS),
            "wall_seconds": round(wall),
            "cpu": writer(),
        }
        RESULTS.write_text(
            json.dumps({"meta": meta, "cells": grid.cells_to_json(cells), "init": init}) + "\n"
        )
        print(f"wrote {RESULTS.relative_to(ROOT)} ({RESULTS.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
