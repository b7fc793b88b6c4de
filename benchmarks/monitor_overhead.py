"""What ``GradientMonitor`` costs per training step, on five kinds of model.

For each model the script trains a plain copy and monitored copies (``every=1``, ``every=10``, and for
(a) and (e) ``every=10**6``, whose steps after the first are never sampled) side by side, with Adam on
one torch thread. Time is measured in alternating blocks of ``--steps-per-block`` steps: every round
runs one block of each variant, in an order that rotates from round to round, so that drift of the
machine affects all alike. A variant's figure is the median over rounds of its block's time per step;
its ratio is the median over rounds of (its block / the plain block of the same round), with the
interquartile range of those ratios beside it.

    python benchmarks/monitor_overhead.py [--blocks 11] [--steps-per-block 10] [--models abcde]
    python benchmarks/monitor_overhead.py --compare-with /tmp/old_monitor.py   # before/after

``--compare-with`` loads another version of ``vglib/monitor.py`` (say, a copy of the old one) as
``vglib._benchmarked_monitor`` and times its ``GradientMonitor`` in the same rounds, side by side
with the installed one (``--monitor-file`` times another version alone).

The models:

- (a) a 20-layer x 256 ReLU MLP, batch 256;
- (b) a ResNet-style CNN with batch norm: a stem and 3 stages of 2 BasicBlocks (16, 32, 64 channels,
  ``self.relu`` called twice per block, as in torchvision), 32x32 inputs, batch 32;
- (c) a 4-block pre-LN transformer encoder (d_model 64, 4 heads, GELU modules) with an LM head,
  vocabulary 1000, sequence 32, batch 16;
- (d) an LSTM language model (embedding 64, hidden 128, vocabulary 1000), sequence 32, batch 16;
- (e) the narrow 20 x 64 sigmoid MLP, batch 64, also reported as microseconds per hooked activation
  module per sampled step: (monitored - plain) / activation modules, which also holds the per-step
  work on the 21 parameter rows, and (monitored - monitored without activation hooks, "no act.") /
  activation modules, the activation work alone.

For (a) and (e) a second plain copy is timed as well (an A/A control): its ratio to the first is the
noise floor of the comparison (two copies of one model need not run equally fast), against which the
unsampled figure is read; the added cost of an unsampled step is also measured directly, as
``optimizer.step()`` with and without a monitor's hooks.

Targets (from the issue): at most 1.25x at ``every=1`` on (a)-(d), at most 1.05x at ``every=10``, and
unsampled steps under 1 %.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import vglib
import vglib.monitor

Step = Callable[[], None]
Key = tuple[str, str]  # a timed variant: (monitor label, sampling)


# -- the models -------------------------------------------------------------------------------------
class PreLNBlock(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.ln2(x))


class Transformer(nn.Module):
    def __init__(
        self, vocab: int = 1000, d_model: int = 64, heads: int = 4, depth: int = 4, length: int = 32
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(length, d_model) * 0.02)
        self.blocks = nn.Sequential(*(PreLNBlock(d_model, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(tokens) + self.pos)))


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab: int = 1000, embedding: int = 64, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(tokens))[0])


@dataclass
class Case:
    key: str
    title: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    unsampled: bool = False  # also time every = 10**6


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), tokens.flatten())


CASES = {
    "a": Case(
        "a", "(a) ReLU MLP 20 x 256, batch 256",
        lambda: vglib.build_mlp(20, 256, "relu", "he", seed=0),
        lambda g: (torch.randn(256, 256, generator=g), torch.randn(256, 1, generator=g)),
        F.mse_loss, unsampled=True,
    ),
    "b": Case(
        "b", "(b) ResNet-BN 16-32-64, 32x32, batch 32",
        vglib.examples.ResNetBN,
        lambda g: (torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)),
        F.cross_entropy,
    ),
    "c": Case(
        "c", "(c) pre-LN transformer 4 x d64, seq 32, batch 16",
        Transformer,
        lambda g: (torch.randint(0, 1000, (16, 32), generator=g),) * 2,
        lm_loss,
    ),
    "d": Case(
        "d", "(d) LSTM LM 64/128, vocab 1000, seq 32, batch 16",
        LSTMLanguageModel,
        lambda g: (torch.randint(0, 1000, (16, 32), generator=g),) * 2,
        lm_loss,
    ),
    "e": Case(
        "e", "(e) sigmoid MLP 20 x 64, batch 64",
        lambda: vglib.build_mlp(20, 64, "sigmoid", "xavier", seed=0),
        lambda g: (torch.randn(64, 64, generator=g), torch.randn(64, 1, generator=g)),
        F.mse_loss, unsampled=True,
    ),
}  # fmt: skip


# -- timing -----------------------------------------------------------------------------------------
def load_monitor(path: str | None) -> ModuleType:
    """``vglib.monitor``, or another version of it loaded from ``path`` inside the vglib package."""
    if path is None:
        return vglib.monitor
    spec = importlib.util.spec_from_file_location("vglib._benchmarked_monitor", Path(path))
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its relative imports (._tensors, .tables) resolve inside vglib
    return module


def make_step(
    model: nn.Module, case: Case, x: torch.Tensor, y: torch.Tensor
) -> tuple[Step, torch.optim.Optimizer]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        case.loss(model(x), y).backward()
        optimizer.step()

    return step, optimizer


@dataclass
class Figure:
    """One variant's time per step and its ratio to the plain model, over the rounds."""

    ms: float
    ratio: float
    iqr: tuple[float, float]


def measure(
    case: Case, monitors: dict[str, ModuleType], blocks: int, steps_per_block: int
) -> tuple[float, dict[tuple[str, str], Figure], int]:
    """Plain and monitored copies of ``case``'s model, timed in alternating blocks. Returns the plain
    time per step (ms), a ``Figure`` per (monitor, sampling) and the number of activation modules."""
    generator = torch.Generator().manual_seed(0)
    x, y = case.batch(generator)
    torch.manual_seed(0)
    reference = case.build()
    everies = {"every=1": 1, "every=10": 10}
    if case.unsampled:
        everies["unsampled"] = 10**6
    if case.key == "e":
        everies["no act."] = 1  # every=1 with no activation module hooked: the parameter rows alone
    variants: dict[tuple[str, str], Step] = {}
    opened = []
    for label, module in [("plain", None), *monitors.items()]:
        for sampling, every in everies.items() if module is not None else [("", None)]:
            model = copy.deepcopy(reference)
            step, optimizer = make_step(model, case, x, y)
            if module is not None:
                monitor = module.GradientMonitor(model, optimizer, every=every)
                if sampling == "no act.":
                    monitor.activations = []
                opened.append(monitor.attach())
            variants[label, sampling] = step
    if case.unsampled:  # an A/A control: a second plain copy, timed like the others
        variants["control", "plain copy"] = make_step(copy.deepcopy(reference), case, x, y)[0]
    times = time_alternating(variants, blocks, steps_per_block)
    hooked = len(opened[0].activations)
    for monitor in opened:
        monitor.close()
    return *ratio_figures(times, ("plain", "")), hooked


def time_alternating(
    variants: dict[Key, Step], blocks: int, steps_per_block: int, warmup: int = 3
) -> dict[Key, list[float]]:
    """Seconds per step of each variant in each round: after ``warmup`` steps of each, ``blocks``
    rounds of one block of ``steps_per_block`` steps per variant, in an order that rotates from
    round to round (so that drift of the machine affects all alike)."""
    for step in variants.values():  # warm up (and take the one sampled step of every = 10**6)
        for _ in range(warmup):
            step()
    keys = list(variants)
    times: dict[Key, list[float]] = {key: [] for key in keys}
    for round_ in range(blocks):
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            step = variants[key]
            start = time.perf_counter()
            for _ in range(steps_per_block):
                step()
            times[key].append((time.perf_counter() - start) / steps_per_block)
    return times


def ratio_figures(times: dict[Key, list[float]], baseline: Key) -> tuple[float, dict[Key, Figure]]:
    """The baseline's median ms per step, and for every other variant a ``Figure``: its median ms
    per step and the median and interquartile range over rounds of its ratio to the baseline's
    block of the same round."""
    base = np.array(times[baseline])
    figures = {}
    for key, values in times.items():
        if key == baseline:
            continue
        ratios = np.array(values) / base
        q1, q3 = np.percentile(ratios, [25, 75])
        figures[key] = Figure(float(np.median(values)) * 1e3, float(np.median(ratios)), (q1, q3))
    return float(np.median(base)) * 1e3, figures


def report(case: Case, plain_ms: float, figures: dict[tuple[str, str], Figure], hooked: int) -> None:
    figures = dict(figures)
    control = figures.pop(("control", "plain copy"), None)
    labels = list(dict.fromkeys(label for label, _ in figures))
    print(f"\n{case.title}: plain {plain_ms:.2f} ms/step; {hooked} activation modules hooked")
    print(f"  {'':10}" + "".join(f"  {label:>34}" for label in labels))
    for sampling in dict.fromkeys(s for _, s in figures):
        cells = []
        for label in labels:
            f = figures[label, sampling]
            cells.append(f"{f.ms:7.2f} ms {f.ratio:6.3f}x ({f.iqr[0]:.3f}-{f.iqr[1]:.3f})")
        print(f"  {sampling:10}" + "".join(f"  {cell:>34}" for cell in cells))
    if control is not None:
        print(
            f"  a second plain copy (A/A control, the noise floor): {control.ms:.2f} ms {control.ratio:.3f}x "
            f"({control.iqr[0]:.3f}-{control.iqr[1]:.3f})"
        )
    if case.key == "e":
        for title, baseline in (("incl. the parameter rows", None), ("activation work alone", "no act.")):
            per_module = {}
            for label in labels:
                base = plain_ms if baseline is None else figures[label, baseline].ms
                per_module[label] = (figures[label, "every=1"].ms - base) * 1e3 / hooked
            listed = ", ".join(f"{label} {us:.0f}" for label, us in per_module.items())
            print(f"  us per activation module per sampled step ({title}): {listed}")


def unsampled_hook_cost(monitor_cls: type, repeats: int = 20000) -> tuple[float, float]:
    """What an unsampled step adds, measured directly: ``optimizer.step()`` on 20 zero-lr layers,
    bare and with a monitor whose steps after the first are never sampled (best of 3, in us)."""
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(20)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    def per_step() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            optimizer.step()
        return (time.perf_counter() - start) / repeats * 1e6

    bare = min(per_step() for _ in range(3))
    with monitor_cls(model, optimizer, every=10**9):
        optimizer.step()  # the sampled step 0
        monitored = min(per_step() for _ in range(3))
    return bare, monitored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=11, help="rounds of alternating blocks (>= 9)")
    parser.add_argument("--steps-per-block", type=int, default=10)
    parser.add_argument("--models", default="abcde", help="which of a, b, c, d, e to time")
    parser.add_argument("--monitor-file", default=None, help="time the GradientMonitor of this monitor.py")
    parser.add_argument(
        "--compare-with", default=None, help="also time the GradientMonitor of this monitor.py, side by side"
    )
    args = parser.parse_args()
    if args.blocks < 9:
        parser.error("--blocks must be at least 9")
    vglib.seed_everything(0)  # one torch thread, as in the chapters
    monitors = {"monitor": load_monitor(args.monitor_file)}
    if args.compare_with:
        monitors = {"before": load_monitor(args.compare_with), "after": monitors["monitor"]}
    sources = "; ".join(f"{label}: {module.__file__}" for label, module in monitors.items())
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} thread; {args.blocks} rounds x {args.steps_per_block} steps")
    print(sources)
    print("each cell: median ms/step, median ratio to plain (interquartile range of the ratio)")
    for key in args.models:
        report(CASES[key], *measure(CASES[key], monitors, args.blocks, args.steps_per_block))
    print("\nunsampled step, measured directly (optimizer.step() on 20 layers, best of 3):")
    for label, module in monitors.items():
        bare, monitored = unsampled_hook_cost(module.GradientMonitor)
        print(f"  {label}: bare {bare:.1f} us, monitored {monitored:.1f} us, added {monitored - bare:.1f} us")


if __name__ == "__main__":
    main()
