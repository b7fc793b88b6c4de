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
earlier grid (1e-3 to 1e-2) was often its smallest. At the two depths around each boundary, five
networks that failed still did best at 1e-4 (accuracy 0.10-0.38); re-run at 3e-5 for the same 400
steps they reach 0.18, 0.22 (sigma_w2 = 2, depth 120, seeds 0 and 1), 0.105 (1.25, depth 80, seed 1),
0.18 (2.5, depth 80, seed 0) and 0.11 (4, depth 44, seed 2): a smaller rate does not rescue them.

    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/trainable_depth.py --write    # run the sweep and write the results file
    python benchmarks/trainable_depth.py --from-file    # print the table of the committed results
    python benchmarks/trainable_depth.py                # run the sweep and print the table

``tests/test_trainable_depth.py`` checks that the file covers the sweep, on the pinned path, and
re-runs one random depth of at most 24 layers (every network, all 400 steps) on that path, comparing
every recorded accuracy exactly. The chapter *Initialisation scale* reads the file.
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
    args = parser.parse_args()
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
