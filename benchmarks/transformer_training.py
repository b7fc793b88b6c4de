"""The training comparisons of the transformers chapter (see ``vglib/transformer_training.py``):
experiment A, post-LN vs pre-LN at 6 blocks with and without learning-rate warm-up, on
``WARMUP_LRS`` (``GRID_LRS`` with three midpoints), and experiment B, plain pre-LN, plain post-LN,
DeepNorm, ReZero, T-Fixup and LayerScale at 6 and 24 blocks without warm-up, each chosen among
``GRID_LRS`` at 6 blocks and among ``DEEP_LRS`` (its four rates from 1e-4 to 1e-2, fixed from the
6-block runs before any 24-block run; see its docstring) at 24; seeds ``HARNESS_SEEDS``, causal
models, on associative recall with the pairs at random places; and the MLP baseline (a
one-hidden-layer network on the flattened one-hot sequence, the same budget and grid).

Each group (one configuration with one warm-up setting: every rate times every seed) is one job,
trained as one batched ensemble (``vglib.transformer_training.train_recall_group``) on one torch
thread, in ``--processes`` worker processes, deepest first, ``--processes`` groups at a time; the
results file is written after each such part, so an interrupted sweep keeps what it finished.
``--write`` records on the pinned kernel path of ``vglib.records.RECORDING_PATH`` (the script
refuses to write otherwise), so that another CPU of the same vendor with AVX2 reproduces the file
exactly; the file's meta records that environment, the CPU, the wall time, every run's time and the
number of groups still missing. With ``--experiment A`` or ``B``, or ``--max-depth N`` (only the
groups of at most N blocks), the runs are merged into an existing file of the same settings (a run
with the same key replaced): the sweep can run in parts. ``--trial`` runs ``TRIAL_SWEEP`` instead of
``FULL_SWEEP`` (a few CPU-minutes; it checks the machinery, its runs are too short to train).

    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/transformer_training.py --write --max-depth 6   # A, B at 6 blocks, baseline
    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        python benchmarks/transformer_training.py --write --experiment B --no-baseline   # the rest
    python benchmarks/transformer_training.py --from-file     # the tables of the committed results
    python benchmarks/transformer_training.py --trial         # the small sweep, printed only

Cost on this 2-core machine (AMD EPYC, the pinned AVX2 path, one thread per process): the README's
benchmark table records the measured time of each part. Batching a group was measured on the
earlier, bidirectional version of the task (sequences of 9; 1,500 updates, extrapolated from 150 at
6 blocks and 100 at 24):

=========  ===================  ==========================  ========
blocks     one run at a time    a group of 24, batched      speed-up
=========  ===================  ==========================  ========
6          40 CPU-s per run     526 CPU-s (21.9 per run)    1.8x
24         129 CPU-s per run    2,142 CPU-s (89 per run)    1.45x
=========  ===================  ==========================  ========

A diverged member trains on in its group (results NaN), so early divergence saves nothing.

``tests/test_transformer_training.py`` checks that every group in the file is whole, and re-runs the
first 50 updates of one random recorded group and one random baseline run on the pinned path,
comparing them exactly.
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
    if not any(math.isfinite(v) for v in s.values):
        return "never"
    return s.text(".0f", missing="-")


def header() -> str:
    return (f"bag-of-tokens bound {vglib.recall_bag_accuracy():.3f}, chance {tt.recall_chance():.3f}, "
            f"'trains': final test accuracy >= {tt.RECALL_THRESHOLD}")  # fmt: skip


def summary_line(s: tt.RecallSummary) -> str:
    name = s.config.label + (f" + warm-up {s.warmup_steps}" if s.warmup_steps else "")
    lr = f"{s.lr:.2e}" + ("*" if s.edge else " ")
    return (f"{name:<40} {lr:>10} {_spread(s.test):>24} {_steps(s.steps):>18} "
            f"{s.trained}/{s.seeds:<5} {s.diverged}/{s.seeds}")  # fmt: skip


def summary_header() -> str:
    return (f"{'configuration':<40} {'chosen lr':>10} {'test accuracy':>24} {'steps to threshold':>18} "
            "trained div.")  # fmt: skip


def table_a(runs: list[tt.RecallRun], settings: tt.SweepSettings) -> str:
    lines = [f"Experiment A: warm-up ({settings.warmup_steps} updates), depth {settings.warmup_depth}",
             header(), "", "final test accuracy by learning rate, median (range) over seeds "
             "[with warm-up vs without: above / below / overlaps]"]  # fmt: skip
    configs = [tt.TransformerConfig(n, depth=settings.warmup_depth) for n in ("post", "pre")]
    lines.append(f"{'lr':>9} " + " ".join(f"{c.label + w:>26}" for c in configs for w in ("", " +wu")))
    spreads = {(c, w): tt.spread_by_lr(runs, c, w) for c in configs for w in (0, settings.warmup_steps)}
    for lr in settings.warmup_lrs:
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


def table_b(runs: list[tt.RecallRun], settings: tt.SweepSettings, max_depth: int | None = None) -> str:
    lines = ["Experiment B: residual scaling, no warm-up (rates of GRID_LRS only; DEEP_LRS, its four from "
             "1e-4 to 1e-2, above 6 blocks); * the chosen rate is an end of the group's grid", header(), "",
             summary_header()]  # fmt: skip
    for depth in settings.scaling_depths:
        if max_depth is not None and depth > max_depth:
            continue
        for norm, residual in settings.variants:
            config = tt.TransformerConfig(norm, residual, depth)
            lines.append(summary_line(tt.summarize_recall(runs, config, lrs=settings.lrs)))
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
    parser.add_argument(
        "--max-depth",
        type=int,
        default=None,
        help="run only the groups of at most this many blocks (the sweep in parts)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the MLP baseline")
    args = parser.parse_args()
    if args.from_file:
        runs, settings, meta = tt.load_recall_runs(RESULTS)
        print(f"{tt.RESULTS_FILE}: {len(runs)} runs{' (trial sweep)' if meta.get('trial') else ''}")
        baseline = tt.load_recall_baseline(RESULTS)
        if baseline:
            lr, test, fit = tt.summarize_baseline(baseline)
            print(
                f"MLP baseline: chosen lr {lr:.2e}, test {_spread(test)}, training sequences {_spread(fit)}"
            )
        if any(r.job.warmup_steps for r in runs):
            print(table_a(runs, settings) + "\n")
        depths = {r.job.config.depth for r in runs}
        print(table_b(runs, settings, max(depths)))
        return
    if args.write and any(os.environ.get(key) != value for key, value in RECORDING_PATH.items()):
        env = " ".join(f"{key}={value}" for key, value in RECORDING_PATH.items())
        parser.error(f"--write records on the pinned kernel path: run it as {env} python ... --write")
    settings = tt.TRIAL_SWEEP if args.trial else tt.FULL_SWEEP
    vglib.seed_everything(0, threads=1)  # every worker takes this thread count
    groups = [g for g in settings.groups(args.experiment)
              if args.max_depth is None or g[0].depth <= args.max_depth]  # fmt: skip
    partial = args.experiment != "all" or args.max_depth is not None
    print(f"{len(groups)} groups ({sum(len(settings.rates(c)) for c, _ in groups) * len(settings.seeds)} "
          f"runs), {settings.steps} updates, on {args.processes} processes", flush=True)  # fmt: skip
    old: list[tt.RecallRun] = []
    baseline: list[tt.BaselineRun] = []
    if args.write and partial and RESULTS.exists():
        old, old_settings, _ = tt.load_recall_runs(RESULTS)
        if old_settings == settings:
            baseline = tt.load_recall_baseline(RESULTS)
        else:
            old = []
    start = time.perf_counter()
    if not args.no_baseline:
        baseline = tt.run_recall_baseline(settings, args.processes)
        lr, test, fit = tt.summarize_baseline(baseline)
        print(f"MLP baseline ({tt.MLP_HIDDEN} hidden units): chosen lr {lr:.2e}, test accuracy "
              f"{_spread(test)}, accuracy on training sequences {_spread(fit)}", flush=True)  # fmt: skip
    runs: list[tt.RecallRun] = []
    for k in range(0, len(groups), args.processes):  # a part at a time, written as it ends
        runs += tt.run_recall_groups(groups[k : k + args.processes], settings, args.processes)
        print(f"{k + len(groups[k : k + args.processes])}/{len(groups)} groups done after "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        if args.write:
            _write(old, runs, baseline, settings, args, time.perf_counter() - start)
    wall = time.perf_counter() - start
    if args.experiment in ("A", "all") and (args.max_depth or settings.warmup_depth) >= settings.warmup_depth:
        print(table_a(runs, settings) + "\n")
    if args.experiment in ("B", "all"):
        print(table_b(runs, settings, args.max_depth) + "\n")
    per_depth = seconds_per_depth(runs)
    cpu = sum(r.cpu_seconds for r in runs)
    print(f"{len(runs)} runs: {wall:.0f} s wall on {args.processes} processes, {cpu:.0f} CPU seconds in all; "
          f"median CPU seconds per run (not diverged) by depth {per_depth}")  # fmt: skip


def _write(old: list[tt.RecallRun], runs: list[tt.RecallRun], baseline: list[tt.BaselineRun],
           settings: tt.SweepSettings, args: argparse.Namespace, wall: float) -> None:  # fmt: skip
    """Merge ``runs`` into ``old`` (a run with the same key replaced) and write the results file."""
    fresh = {_key(r) for r in runs}
    merged = [r for r in old if _key(r) not in fresh] + runs
    merged.sort(key=lambda r: (r.job.config.depth, r.job.config.norm, r.job.config.residual,
                               r.job.warmup_steps, r.job.lr, r.job.seed))  # fmt: skip
    meta = {
        "trial": args.trial,
        "torch": torch.__version__,
        "cpu": writer(),
        "processes": args.processes,
        "missing_groups": len(
            set(settings.groups("all")) - {(r.job.config, r.job.warmup_steps) for r in merged}
        ),
        "wall_seconds": round(wall),
        "cpu_seconds": round(sum(r.cpu_seconds for r in merged)),
        "seconds_per_depth": {str(d): s for d, s in seconds_per_depth(merged).items()},
    }
    tt.save_recall_runs(RESULTS, merged, settings, meta, baseline)
    print(f"wrote {tt.RESULTS_FILE} ({RESULTS.stat().st_size / 1e3:.0f} kB, {len(merged)} runs)", flush=True)


if __name__ == "__main__":
    main()
