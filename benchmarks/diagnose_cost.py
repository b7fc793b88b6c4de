"""What one ``diagnose`` call costs against one plain forward and backward pass, on models with
several million parameters.

The plain pass is what a training step computes before the optimiser: ``model.zero_grad()``,
forward, loss, ``loss.backward()``. ``diagnose`` does one forward and one backward pass too, and
measures besides the gradient at every layer's output (and time step), each layer's forward spread
over the batch and every parameter's gradient norm. Both run on one torch thread, in alternating
rounds: each round times one plain pass and one ``diagnose`` (in an order that alternates from
round to round, so that drift of the machine affects both alike). A figure is the median over
rounds; the ratio is the median over rounds of (diagnose / plain of the same round), with the
interquartile range of those ratios beside it. Target (issue 11): at most 1.5x.

    python benchmarks/diagnose_cost.py [--rounds 11] [--models abc]

The models:

- (a) an MLP 256 -> 4 x 1024 (GELU) -> 10, 3.4M parameters, batch 64;
- (b) ``nn.TransformerEncoder``, 6 post-LN layers of width 256 (8 heads, feed-forward 1024), token
  embedding of a 5000-word vocabulary and a classifier on the mean token, 6.0M parameters, 16
  sequences of 32 tokens;
- (c) a ResNet-style CNN with batch norm (a stem and 3 stages of 2 BasicBlocks, 64/128/256
  channels), 2.8M parameters, batch 32 of 32 x 32 images.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import vglib


class TokenClassifier(nn.Module):
    def __init__(self, vocab: int = 5000, width: int = 256, layers: int = 6, classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 8, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def models() -> dict[str, tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(256, 1024), nn.GELU(), *[m for _ in range(3) for m in (nn.Linear(1024, 1024), nn.GELU())],
        nn.Linear(1024, 10),
    )  # fmt: skip
    return {
        "a": ("MLP 4 x 1024", mlp, torch.randn(64, 256), torch.randint(0, 10, (64,))),
        "b": ("TransformerEncoder 6 x 256", TokenClassifier(), torch.randint(0, 5000, (16, 32)),
              torch.randint(0, 10, (16,))),
        "c": ("ResNet-BN CNN", vglib.examples.ResNetBN((64, 128, 256)), torch.randn(32, 3, 32, 32),
              torch.randint(0, 10, (32,))),
    }  # fmt: skip


def plain_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return run


def diagnose_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        vglib.diagnose(model, x, y)

    return run


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--models", default="abc")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<28}{'params':>8}{'plain ms':>10}{'diagnose ms':>13}{'ratio':>8}{'IQR':>14}")
    for key, (name, model, x, y) in models().items():
        if key not in args.models:
            continue
        params = sum(p.numel() for p in model.parameters())
        passes = {"plain": plain_pass(model, x, y), "diagnose": diagnose_pass(model, x, y)}
        for run in passes.values():  # warm up: allocator, kernels, lazy imports
            run()
            run()
        times: dict[str, list[float]] = {k: [] for k in passes}
        for r in range(args.rounds):
            order = list(passes) if r % 2 == 0 else list(passes)[::-1]
            for k in order:
                times[k].append(timed(passes[k]))
        plain, diag = np.array(times["plain"]), np.array(times["diagnose"])
        ratios = diag / plain
        q1, q3 = np.percentile(ratios, [25, 75])
        print(
            f"{name:<28}{params / 1e6:>7.1f}M{1e3 * np.median(plain):>10.1f}{1e3 * np.median(diag):>13.1f}"
            f"{np.median(ratios):>7.2f}x{f'{q1:.2f}-{q3:.2f}':>14}"
        )


if __name__ == "__main__":
    main()
