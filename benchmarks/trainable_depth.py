"""The trainable-depth sweep (Schoenholz et al. 2017, Fig. 6, in miniature): tanh MLPs at every depth of
``vglib.trainability.TRAINABILITY_DEPTHS`` and every ``sigma_w2`` of ``TRAINABILITY_SIGMA_W2``
(``sigma_b2 = 0.05``), every seed and learning rate, trained on the digits task for a fixed number of
steps (see ``vglib/trainability.py``).

Each depth trains as one batched ensemble (``vglib.trainability.run_depth``), in ``--jobs`` worker
processes of one torch thread each, deepest first. ``--write`` records on the pinned kernel path of
``vglib.records.RECORDING_PATH`` (as ``make record`` does; the script refuses to write otherwise), so
that another CPU of the same vendor with AVX2 reproduces the file exactly; the file's meta records
that environment, the CPU, the wall time and the CPU time (``cpu_seconds``, and per depth
``seconds_per_depth``, both process time, which a shared machine does not inflate). Written on
2026-12-06 with five learning rates (1e-4 to 1e-2) and ten depths: 874 CPU seconds in all (247 s for
depth 120, 54 s for depth 24), 1047 s wall on two processes on a machine shared at a load of 4-7.

The learning-rate grid reaches down to 1e-4 because near the critical line the best rate of the
earlier grid (1e-3 to 1e-2) was often its smallest. At the two depths around each boundary, some
networks that failed still did best at 1e-4. ``--smaller-lr`` re-runs each of them alone at
``SMALLER_LR`` = 3e-5 for the same budget, on the pinned path, and records the result in the file's
``smaller_lr`` field (``{"lr", "how", "cells"}``; the sweep's own cells stay as they were), which the
chapter reads.

    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/trainable_depth.py --write    # run the sweep and write the results file
    python benchmarks/trainable_depth.py --from-file    # print the table of the committed results
    python benchmarks/trainable_depth.py                # run the sweep and print the table
    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/trainable_depth.py --smaller-lr   # add the smaller_lr field (about a minute)

``tests/test_trainable_depth.py`` checks that the file covers the sweep, on the pinned path, and
re-runs on that path one random depth of at most 24 layers (every network, all 400 steps) and the two
depths around the boundary of one random ``sigma_w2`` whose boundary lies at 44 layers or less (all its
networks there), comparing every recorded accuracy exactly. The chapter *Initialisation scale* reads
the file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

import vglib
from vglib import trainability as tr
from vglib.records import RECORDING_PATH, cpu_signature

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "trainable_depth.json"
SMALLER_LR = 3e-5
"""The rate below the grid at which ``--smaller-lr`` re-runs the failed networks that did best at the
grid's smallest."""


def writer() -> dict:
    """The arithmetic that writes the file: the CPU and one thread per worker."""
    return {**cpu_signature(), "threads": 1, "env": {key: os.environ.get(key) for key in RECORDING_PATH}}


def run_one(depth: int) -> tuple[list[tr.TrainabilityCell], float]:
    """One depth's networks, and the CPU seconds they took (process time: on a shared machine the
    wall time also counts other people's work)."""
    vglib.seed_everything(0, threads=1)
    start = time.process_time()
    cells = tr.run_depth(depth)
    return cells, time.process_time() - start


def smaller_lr(cells: list[tr.TrainabilityCell]) -> dict:
    """Each network of the two depths around a boundary that failed and did best at the grid's
    smallest rate, re-run alone (one-member ensemble, one thread, seed as in ``run_one``) at
    ``SMALLER_LR``: the ``smaller_lr`` field of the results file."""
    low = min(tr.TRAINABILITY_LRS)
    failed = [(w, d, s) for w, nets in tr.boundary_networks(cells).items()
              for d, s, lr, acc in nets if lr == low and acc < tr.TRAINABILITY_THRESHOLD]  # fmt: skip
    fresh = []
    for w, d, s in failed:
        vglib.seed_everything(0, threads=1)
        fresh += tr.run_depth(d, sigma_w2s=(w,), seeds=(s,), lrs=(SMALLER_LR,))
    how = (f"benchmarks/trainable_depth.py --smaller-lr: each failed bracket network whose best rate "
           f"was {low:g}, re-run alone at {SMALLER_LR:g} for {tr.TRAINABILITY_STEPS} steps on the "
           "pinned path, one thread")  # fmt: skip
    return {"lr": SMALLER_LR, "how": how, "cpu": writer(), "cells": tr.trainability_to_json(fresh)}


def table(cells: list[tr.TrainabilityCell]) -> str:
    sigma_w2s, depths, fraction = tr.success_table(cells)
    lines = ["share of seeds trained (training accuracy >= "
             f"{tr.TRAINABILITY_THRESHOLD} at the best learning rate)"]  # fmt: skip
    lines.append("sigma_w2 \\ depth " + " ".join(f"{int(d):>5}" for d in depths) + "   L_max   6 xi_c")
    boundaries = tr.trainable_depths(cells)
    for i, w in enumerate(sigma_w2s):
        xi = vglib.correlation_depth_scale("tanh", float(w), tr.TRAINABILITY_SIGMA_B2)
        row = " ".join(f"{f:5.2f}" for f in fraction[i])
        lines.append(f"{w:>16.2f} {row} {boundaries[float(w)][0]:7.1f} {6 * xi:8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--from-file", action="store_true", help="print the committed results, run nothing")
    parser.add_argument("--smaller-lr", action="store_true", help="add the smaller_lr field to the file")
    args = parser.parse_args()
    if args.smaller_lr:
        if any(os.environ.get(key) != value for key, value in RECORDING_PATH.items()):
            parser.error("--smaller-lr records on the pinned kernel path, as --write does")
        saved = json.loads(RESULTS.read_text())
        saved["smaller_lr"] = smaller_lr(tr.trainability_from_json(saved["cells"]))
        for c in saved["smaller_lr"]["cells"]:
            print(c["sigma_w2"], c["depth"], c["seed"], c["lr"], c["accuracy"][-1])
        RESULTS.write_text(json.dumps(saved) + "\n")
        return
    if args.from_file:
        print(table(tr.trainability_from_json(json.loads(RESULTS.read_text())["cells"])))
        return
    if args.write and any(os.environ.get(key) != value for key, value in RECORDING_PATH.items()):
        env = " ".join(f"{key}={value}" for key, value in RECORDING_PATH.items())
        parser.error(f"--write records on the pinned kernel path: run it as {env} python ... --write")
    start = time.perf_counter()
    cells: list[tr.TrainabilityCell] = []
    seconds = {}
    depths = sorted(tr.TRAINABILITY_DEPTHS, reverse=True)  # the longest first
    with ProcessPoolExecutor(args.jobs) as pool:
        for depth, (group, took) in zip(depths, pool.map(run_one, depths), strict=True):
            cells += group
            seconds[depth] = round(took, 1)
    wall = time.perf_counter() - start
    cells.sort(key=lambda c: (c.depth, c.sigma_w2, c.seed, c.lr))
    print(table(cells))
    cpu = sum(seconds.values())
    print(f"\n{len(cells)} networks, {tr.TRAINABILITY_STEPS} steps each: {wall:.0f} s wall on {args.jobs} "
          f"processes, {cpu:.0f} CPU seconds in all; per depth {seconds}")  # fmt: skip
    if args.write:
        meta = {
            "torch": torch.__version__,
            "steps": tr.TRAINABILITY_STEPS,
            "eval_every": tr.TRAINABILITY_EVAL_EVERY,
            "width": tr.TRAINABILITY_WIDTH,
            "sigma_b2": tr.TRAINABILITY_SIGMA_B2,
            "sigma_w2s": list(tr.TRAINABILITY_SIGMA_W2),
            "depths": list(tr.TRAINABILITY_DEPTHS),
            "seeds": list(tr.TRAINABILITY_SEEDS),
            "lrs": list(tr.TRAINABILITY_LRS),
            "threshold": tr.TRAINABILITY_THRESHOLD,
            "wall_seconds": round(wall),
            "cpu_seconds": round(cpu),
            "jobs": args.jobs,
            "seconds_per_depth": seconds,
            "cpu": writer(),
        }
        RESULTS.write_text(json.dumps({"meta": meta, "cells": tr.trainability_to_json(cells)}) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)} ({RESULTS.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
