"""What ``vglib.lightning.GradientMonitorCallback`` costs in a ``lightning.Trainer.fit``, beside the
plain ``GradientMonitor`` in the same fit.

Each variant is one whole ``Trainer.fit`` of ``--steps`` optimizer steps (Adam, CPU, one torch
thread, a ``CSVLogger`` or, with ``--logger tensorboard``, Lightning's ``TensorBoardLogger`` into a
temporary folder, the module logging its loss every step), of a copy of the same model on the same
batches:

- ``none``: no monitor;
- ``monitor``: the plain ``GradientMonitor(pl_module, optimizer, every=10)``, attached at fit start
  and closed at fit end by a five-line callback, logging nothing;
- ``callback``: ``GradientMonitorCallback(every=10)`` as it comes: the monitor, the default
  quantities sent to the logger at each sampled step, and ``diagnose`` at the first batch (and every
  100 sampled steps, so never again in a short fit);
- ``callback, warn=False``: the same without the diagnosis (the logging alone).

The logging itself is also timed directly: the time the callback spends per sampled step after the
monitor has recorded it (``_on_step``: building the metrics and handing them to the logger), in the
``callback, warn=False`` fits, beside the time of a whole step without a monitor.

Fits are timed in alternating rounds: every round runs one fit of each variant, in an order that
rotates from round to round, so that drift of the machine affects all alike. A variant's figure is
the median over rounds of its time per step (the fit's wall time / steps, setup included); its
ratio is the median over rounds of (its fit / the baseline's fit of the same round), with the
interquartile range beside it, against ``none`` and against ``monitor``. Target (issue 15): the
callback at ``every=10`` at most 1.05x the plain monitor.

    python benchmarks/lightning_overhead.py [--rounds 9] [--steps 100] [--models ae] [--logger csv]

The models are ``monitor_overhead.py``'s (a) 20 x 256 ReLU MLP, batch 256, and (e) 20 x 64 sigmoid
MLP, batch 64 (the one where the monitor's share is largest; it also triggers the vanishing warning,
silenced here).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from monitor_overhead import CASES, Case, Figure, ratio_figures

import vglib
from vglib.lightning import GradientMonitorCallback, GradientWarning

EVERY = 10


class Module(L.LightningModule):
    def __init__(self, net: nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net, self.loss = net, loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class PlainMonitor(L.Callback):
    """The plain ``GradientMonitor`` around the fit: attached at fit start, closed at fit end."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.monitor = vglib.GradientMonitor(pl_module, trainer.optimizers[0], every=EVERY).attach()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.monitor.close()


LOGGING_SECONDS: list[float] = []  # per sampled step: the callback's work after the monitor's


class TimedCallback(GradientMonitorCallback):
    """``GradientMonitorCallback`` whose logging of each sampled step is timed."""

    def _on_step(self, monitor: vglib.GradientMonitor, step_table: vglib.MonitorTable) -> None:
        start = time.perf_counter()
        super()._on_step(monitor, step_table)
        LOGGING_SECONDS.append(time.perf_counter() - start)


VARIANTS: dict[str, Callable[[], list[L.Callback]]] = {
    "none": list,
    "monitor": lambda: [PlainMonitor()],
    "callback": lambda: [GradientMonitorCallback(every=EVERY)],
    "callback, warn=False": lambda: [TimedCallback(every=EVERY, warn=False)],
}
LOGGERS = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}


def one_fit(
    reference: nn.Module, case: Case, data: DataLoader, steps: int, variant: str, folder: str, logger: str
) -> float:
    """Seconds per optimizer step of one whole ``Trainer.fit`` of a fresh copy of ``reference``."""
    module = Module(copy.deepcopy(reference), case.loss)
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=LOGGERS[logger](folder, name=variant),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=VARIANTS[variant](), log_every_n_steps=1,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, data)
    elapsed = time.perf_counter() - start
    assert trainer.global_step == steps
    return elapsed / steps


def measure(case: Case, rounds: int, steps: int, logger: str) -> dict[str, list[float]]:
    generator = torch.Generator().manual_seed(0)
    batches = [case.batch(generator) for _ in range(10)]
    dataset = TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    data = DataLoader(dataset, batch_size=len(batches[0][0]))
    torch.manual_seed(0)
    reference = case.build()
    keys = list(VARIANTS)
    times: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory() as folder:
        for key in keys:  # warm up
            one_fit(reference, case, data, min(steps, 2 * EVERY), key, folder, logger)
        LOGGING_SECONDS.clear()
        for round_ in range(rounds):
            shift = round_ % len(keys)
            for key in keys[shift:] + keys[:shift]:
                times[key].append(one_fit(reference, case, data, steps, key, folder, logger))
    return times


def show(title: str, times: dict[str, list[float]]) -> None:
    plain_ms, against_none = ratio_figures(times, "none")
    _, against_monitor = ratio_figures(times, "monitor")
    print(f"\n{title}: none {plain_ms:.2f} ms/step")
    print(f"  {'variant':22}{'ms/step':>9}{'vs none (IQR)':>24}{'vs monitor (IQR)':>24}")
    for key in VARIANTS:
        if key == "none":
            continue
        f: Figure = against_none[key]
        cell = f"{f.ratio:.3f}x ({f.iqr[0]:.3f}-{f.iqr[1]:.3f})"
        other = "" if key == "monitor" else against_monitor[key]
        rel = "" if isinstance(other, str) else f"{other.ratio:.3f}x ({other.iqr[0]:.3f}-{other.iqr[1]:.3f})"
        print(f"  {key:22}{f.ms:9.2f}{cell:>24}{rel:>24}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds of alternating fits (>= 5)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per fit")
    parser.add_argument("--models", default="ae", help="which of monitor_overhead.py's models to time")
    parser.add_argument("--logger", choices=sorted(LOGGERS), default="csv", help="the trainer's logger")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    vglib.seed_everything(0)  # one torch thread, as in the chapters
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", category=GradientWarning)
    warnings.filterwarnings("ignore", message=".*treespec")
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} thread; "
        f"{args.rounds} rounds of one {args.steps}-step Trainer.fit per variant, every={EVERY}, "
        f"{LOGGERS[args.logger].__name__}"
    )
    print("each cell: median ms per step (whole fit / steps), median ratio (interquartile range)")
    for key in args.models:
        case = CASES[key]
        times = measure(case, args.rounds, args.steps, args.logger)
        show(case.title, times)
        logging_ms = 1e3 * float(np.median(LOGGING_SECONDS))
        step_ms = 1e3 * float(np.median(times["none"]))
        print(
            f"  logging a sampled step: median {logging_ms:.2f} ms (IQR "
            f"{1e3 * np.percentile(LOGGING_SECONDS, 25):.2f}-{1e3 * np.percentile(LOGGING_SECONDS, 75):.2f}, "
            f"{len(LOGGING_SECONDS)} steps) = {logging_ms / EVERY / step_ms:.1%} of a step without a "
            f"monitor ({step_ms:.2f} ms, Lightning's own work included) at every={EVERY}"
        )
        spread = {k: float(np.ptp(v) / np.median(v)) for k, v in times.items()}
        print("  spread of each variant's fits (max - min) / median: " + ", ".join(
            f"{k} {s:.1%}" for k, s in spread.items()
        ))  # fmt: skip


if __name__ == "__main__":
    main()
