"""What writing to TensorBoard adds to a monitored training step (target: at most 5 % over the
monitor alone at ``every=10``, in the same loop).

For each model, copies of one network train side by side (Adam, one torch thread), timed in
alternating blocks as in ``benchmarks/monitor_overhead.py`` (whose models and timer this script
imports):

- plain: no monitor;
- monitor: ``GradientMonitor(every=10)``;
- monitor + logger: the same with ``vglib.tensorboard.TensorBoardLogger`` as its step callback,
  writing to a ``SummaryWriter`` in a temporary directory;
- with ``--histograms``, also the monitor with ``histograms=True``, alone and with a logger that
  writes them (``TensorBoardLogger(histograms=True)``).

A figure is the median over rounds of the block's time per step; a ratio is the median over rounds
of (the block / the baseline's block of the same round), with its interquartile range: "logger vs
monitor" is the cost the target is about.

    python benchmarks/tensorboard_overhead.py [--blocks 21] [--steps-per-block 20] [--models ac]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monitor_overhead import CASES, Case, Figure, Key, Step, make_step, ratio_figures, time_alternating
from torch.utils.tensorboard import SummaryWriter

import vglib
from vglib.tensorboard import TensorBoardLogger

EVERY = 10


class Timed:
    """A step callback that times another: the logger's own seconds per sampled step."""

    def __init__(self, callback: Callable[[Any, Any], None]):
        self.callback = callback
        self.seconds: list[float] = []

    def __call__(self, monitor: Any, table: Any) -> None:
        start = time.perf_counter()
        self.callback(monitor, table)
        self.seconds.append(time.perf_counter() - start)


def measure(
    case: Case, blocks: int, steps_per_block: int, histograms: bool, logdir: Path
) -> tuple[dict[Key, list[float]], dict[Key, Timed], int]:
    """Times per step of each variant in each round; the timed loggers; the series per step."""
    generator = torch.Generator().manual_seed(0)
    x, y = case.batch(generator)
    torch.manual_seed(0)
    reference = case.build()
    settings = [("monitor", False, False), ("monitor + logger", False, True)]
    if histograms:
        settings += [("monitor", True, False), ("monitor + logger", True, True)]
    variants: dict[Key, Step] = {("plain", ""): make_step(copy.deepcopy(reference), case, x, y)[0]}
    monitors, writers, loggers = [], [], {}
    for label, with_histograms, logged in settings:
        model = copy.deepcopy(reference)
        step, optimizer = make_step(model, case, x, y)
        key = label, "histograms" if with_histograms else ""
        callbacks: tuple[Timed, ...] = ()
        if logged:
            writer = SummaryWriter(logdir / f"{case.key}-{len(writers)}")
            writers.append(writer)
            loggers[key] = Timed(TensorBoardLogger(writer, histograms=with_histograms))
            callbacks = (loggers[key],)
        monitor = vglib.GradientMonitor(
            model, optimizer, every=EVERY, histograms=with_histograms, callbacks=callbacks
        )
        monitors.append(monitor.attach())
        variants[key] = step
    times = time_alternating(variants, blocks, steps_per_block)
    series = len(monitors[0].table(summaries=True)) // len(set(monitors[0].table().step))
    for monitor in monitors:
        monitor.close()
    for writer in writers:
        writer.close()
    return times, loggers, series


def cell(figure: Figure) -> str:
    return f"{figure.ms:7.2f} ms {figure.ratio:6.3f}x ({figure.iqr[0]:.3f}-{figure.iqr[1]:.3f})"


def report(case: Case, times: dict[Key, list[float]], loggers: dict[Key, Timed], rows: int) -> None:
    plain_ms, against_plain = ratio_figures(times, ("plain", ""))
    print(f"\n{case.title}: plain {plain_ms:.2f} ms/step; {rows} table rows per sampled step")
    print(f"  {'':30}  {'vs plain':>34}  {'logger vs monitor alone':>34}")
    for sampling in dict.fromkeys(s for label, s in times if label != "plain"):
        _, against_monitor = ratio_figures(
            {key: value for key, value in times.items() if key[1] == sampling and key[0] != "plain"},
            ("monitor", sampling),
        )
        for label in ("monitor", "monitor + logger"):
            name = f"{label}{f' ({sampling})' if sampling else ''}"
            vs_monitor = cell(against_monitor[label, sampling]) if label != "monitor" else ""
            print(f"  {name:30}  {cell(against_plain[label, sampling]):>34}  {vs_monitor:>34}")
        logger = loggers["monitor + logger", sampling]
        own = float(np.median(logger.seconds)) * 1e3
        share = own / EVERY / against_plain["monitor", sampling].ms
        print(
            f"  the logger's own time: {own:.2f} ms per sampled step (median of {len(logger.seconds)}), "
            f"{100 * share:.2f} % of a monitored step at every={EVERY}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=21, help="rounds of alternating blocks (>= 9)")
    parser.add_argument("--steps-per-block", type=int, default=20, help="a multiple of 10 samples evenly")
    parser.add_argument("--models", default="ac", help="which of monitor_overhead's a, b, c, d, e to time")
    parser.add_argument("--histograms", action="store_true", help="also time histograms=True")
    args = parser.parse_args()
    if args.blocks < 9:
        parser.error("--blocks must be at least 9")
    vglib.seed_everything(0)  # one torch thread, as in the chapters
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread; every={EVERY}; "
        f"{args.blocks} rounds x {args.steps_per_block} steps"
    )
    print("each cell: median ms/step, median ratio (interquartile range of the ratio)")
    with tempfile.TemporaryDirectory() as logdir:
        for key in args.models:
            case = CASES[key]
            report(case, *measure(case, args.blocks, args.steps_per_block, args.histograms, Path(logdir)))


if __name__ == "__main__":
    main()
