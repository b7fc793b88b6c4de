"""The training comparisons of the transformers chapter (see ``vglib/transformer_training.py``):
experiment A, post-LN vs pre-LN at 6 blocks with and without learning-rate warm-up, and experiment B,
plain pre-LN, plain post-LN, DeepNorm, ReZero, T-Fixup and LayerScale at 6 and 24 blocks without
warm-up; every rate of ``vglib.grid.GRID_LRS``, seeds ``HARNESS_SEEDS``, on associative recall.

Each group (one configuration with one warm-up setting: every rate times every seed) is one job,
trained as one batched ensemble (``vglib.transformer_training.train_recall_group``) on one torch
thread, in ``--processes`` worker processes, deepest first. ``--write`` records on the pinned kernel path of
``vglib.records.RECORDING_PATH`` (the script refuses to write otherwise), so that another CPU of the
same vendor with AVX2 reproduces the file exactly; the file's meta records that environment, the
CPU, the wall time of the sweep and of every run. With ``--experiment A`` or ``B`` and ``--write``,
the runs are merged into an existing file of the same settings (a run with the same key replaced).
``--trial`` runs ``TRIAL_SWEEP`` instead of ``FULL_SWEEP`` (a few CPU-minutes; it checks the
machinery, its runs are too short to train).

    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/transformer_training.py --write     # the sweep, written to the results file
    python benchmarks/transformer_training.py --from-file     # the tables of the committed results
    python benchmarks/transformer_training.py --trial         # the small sweep, printed only

Measured on this 2-core machine (AMD EPYC, the pinned AVX2 path, one thread, two such processes at
once; 1,500 updates and 30 evaluations, extrapolated from 150 updates at 6 blocks and 100 at 24):

=========  ===================  ==========================  ========
blocks     one run at a time    a group of 24, batched      speed-up
=========  ===================  ==========================  ========
6          40 CPU-s per run     526 CPU-s (21.9 per run)    1.8x
24         129 CPU-s per run    2,142 CPU-s (89 per run)    1.45x
=========  ===================  ==========================  ========

(wall time equal to CPU time within 1 %). The batch removes most of the per-operation overhead; what
is left is arithmetic (batched matrix products, about 45 % of a step at 6 blocks) and the softmax
over rows of 9 keys (about 20 %), and a 24-block group's activations (about 1 GB) no longer fit in
the caches. The full sweep (14 groups, 336 runs: 8 groups at 6 blocks, 6 at 24) takes about 4.7
CPU-hours; on 2 free cores, deepest first, each process trains 3 deep groups and 4 shallow ones:
about 2.4 hours of wall time (one at a time: 7.3 CPU-hours, 3.6 hours). A diverged member trains
on in its group (results NaN), so early divergence saves nothing.

``tests/test_transformer_training.py`` checks that the file covers its settings' runs once and
re-runs one random recorded run on the pinned path, comparing it exactly.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

import vglib
from vglib import transformer_training as tt
from vglib.records import RECORDING_PATH, cpu_signature

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / tt.RESULTS_FILE


def writer() -> dict:
    """The arithmetic that writes the file: the CPU and one thread per worker."""
    return {**cpu_signature(), "threads": 1, "env": {key: os.environ.get(key) for key in RECORDING_PATH}}


def _key(run: tt.RecallRun) -> tuple:
    return (run.job.config, run.job.lr, run.job.seed, run.job.warmup_steps)


def _pct(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "  div"


def _spread(s: vglib.SeedSpread) -> str:
    if all(not math.isfinite(v) for v in s.values):
        return "diverged"
    return f"{_pct(s.median)} ({_pct(s.low)}-{_pct(s.high)})"


def _steps(s: vglib.SeedSpread) -> str:
    def one(v: float) -> str:
        return f"{v:.0f}" if math.isfinite(v) else "-"

    if not any(math.isfinite(v) for v in s.values):
        return "never"
    return f"{one(s.median)} ({one(s.low)}-{one(s.high)})"


def header() -> str:
    return (f"bag-of-tokens bound {vglib.recall_bag_accuracy():.3f}, chance {tt.recall_chance():.3f}, "
            f"'trains': final test accuracy >= {tt.RECALL_THRESHOLD}")  # fmt: skip


def summary_line(s: tt.RecallSummary) -> str:
    name = s.config.label + (f" + warm-up {s.warmup_steps}" if s.warmup_steps else "")
    return (f"{name:<40} {s.lr:>9.2e} {_spread(s.test):>24} {_steps(s.steps):>18} "
            f"{s.trained}/{s.seeds:<5} {s.diverged}/{s.seeds}")  # fmt: skip


def summary_header() -> str:
    return (f"{'configuration':<40} {'chosen lr':>9} {'test accuracy':>24} {'steps to threshold':>18} "
            "trained div.")  # fmt: skip


def table_a(runs: list[tt.RecallRun], settings: tt.SweepSettings) -> str:
    lines = [f"Experiment A: warm-up ({settings.warmup_steps} updates), depth {settings.warmup_depth}",
             header(), "", "final test accuracy by learning rate, median (range) over seeds "
             "[with warm-up vs without: above / below / overlaps]"]  # fmt: skip
    configs = [tt.TransformerConfig(n, depth=settings.warmup_depth) for n in ("post", "pre")]
    lines.append(f"{'lr':>9} " + " ".join(f"{c.label + w:>26}" for c in configs for w in ("", " +wu")))
    spreads = {(c, w): tt.spread_by_lr(runs, c, w) for c in configs for w in (0, settings.warmup_steps)}
    for lr in settings.lrs:
        cells = []
        for c in configs:
            for w in (0, settings.warmup_steps):
                cells.append(f"{_spread(spreads[c, w][lr]):>26}")
        relations = " ".join(tt.warmup_relation(runs, c, lr, settings.warmup_steps) for c in configs)
        lines.append(f"{lr:>9.2e} " + " ".join(cells) + f"  [{relations}]")
    lines += ["", summary_header()]
    lines += [
        summary_line(tt.summarize_recall(runs, c, w)) for c in configs for w in (0, settings.warmup_steps)
    ]
    return "\n".join(lines)


def table_b(runs: list[tt.RecallRun], settings: tt.SweepSettings) -> str:
    lines = ["Experiment B: residual scaling, no warm-up", header(), "", summary_header()]
    for depth in settings.scaling_depths:
        for norm, residual in settings.variants:
            lines.append(summary_line(tt.summarize_recall(runs, tt.TransformerConfig(norm, residual, depth))))
    return "\n".join(lines)


def seconds_per_depth(runs: list[tt.RecallRun]) -> dict[int, float]:
    """Median CPU seconds of the runs that did not diverge, per depth (one thread: the run's own
    time, which other work on a shared machine does not inflate; a run's share of its group's)."""
    by_depth: dict[int, list[float]] = {}
    for r in runs:
        if not r.diverged and math.isfinite(r.cpu_seconds):
            by_depth.setdefault(r.job.config.depth, []).append(r.cpu_seconds)
    return {d: round(statistics.median(v), 1) for d, v in sorted(by_depth.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=tt.EXPERIMENTS, default="all")
    parser.add_argument("--write", action="store_true", help=f"write {tt.RESULTS_FILE}")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--trial", action="store_true", help="run the small TRIAL_SWEEP")
    parser.add_argument("--from-file", action="store_true", help="print the committed results, run nothing")
    args = parser.parse_args()
    if args.from_file:
        runs, settings, meta = tt.load_recall_runs(RESULTS)
        print(f"{tt.RESULTS_FILE}: {len(runs)} runs{' (trial sweep)' if meta.get('trial') else ''}")
        if settings.warmup_depth and any(r.job.warmup_steps for r in runs):
            print(table_a(runs, settings) + "\n")
        print(table_b(runs, settings))
        return
    if args.write and any(os.environ.get(key) != value for key, value in RECORDING_PATH.items()):
        env = " ".join(f"{key}={value}" for key, value in RECORDING_PATH.items())
        parser.error(f"--write records on the pinned kernel path: run it as {env} python ... --write")
    settings = tt.TRIAL_SWEEP if args.trial else tt.FULL_SWEEP
    vglib.seed_everything(0, threads=1)  # every worker takes this thread count
    groups = settings.groups(args.experiment)
    print(f"{len(groups)} groups of {len(settings.lrs) * len(settings.seeds)} runs, {settings.steps} "
          f"updates, on {args.processes} processes", flush=True)  # fmt: skip
    start = time.perf_counter()
    runs = tt.run_recall_groups(groups, settings, args.processes)
    wall = time.perf_counter() - start
    if args.experiment in ("A", "all"):
        print(table_a(runs, settings) + "\n")
    if args.experiment in ("B", "all"):
        print(table_b(runs, settings) + "\n")
    per_depth = seconds_per_depth(runs)
    cpu = sum(r.cpu_seconds for r in runs)
    print(f"{len(runs)} runs: {wall:.0f} s wall on {args.processes} processes, {cpu:.0f} CPU seconds in all; "
          f"median CPU seconds per run (not diverged) by depth {per_depth}")  # fmt: skip
    if args.write:
        if args.experiment != "all" and RESULTS.exists():
            old, old_settings, _ = tt.load_recall_runs(RESULTS)
            if old_settings == settings:
                fresh = {_key(r) for r in runs}
                runs = [r for r in old if _key(r) not in fresh] + runs
        runs.sort(key=lambda r: (r.job.config.depth, r.job.config.norm, r.job.config.residual,
                                 r.job.warmup_steps, r.job.lr, r.job.seed))  # fmt: skip
        meta = {
            "trial": args.trial,
            "torch": torch.__version__,
            "cpu": writer(),
            "processes": args.processes,
            "wall_seconds": round(wall),
            "cpu_seconds": round(sum(r.cpu_seconds for r in runs)),
            "seconds_per_depth": {str(d): s for d, s in seconds_per_depth(runs).items()},
        }
        tt.save_recall_runs(RESULTS, runs, settings, meta)
        print(f"wrote {tt.RESULTS_FILE} ({RESULTS.stat().st_size / 1e3:.0f} kB, {len(runs)} runs)")


if __name__ == "__main__":
    main()
