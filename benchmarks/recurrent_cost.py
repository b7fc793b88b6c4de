"""Time one training step (forward, backward, Adam) of each recurrent cell of the Gated units chapter.

    python benchmarks/recurrent_cost.py [--length 40] [--hidden 32] [--rounds 30]

The cells take turns, so that other work on the machine slows them alike; the figure is the
fastest step of each.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from torch.nn import functional as F

import vglib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = vglib.adding_problem(128, args.length, seed=0)
    with vglib.torch_seed(0):
        fused = vglib.GatedRNN(nn.RNN(2, args.hidden, batch_first=True), nn.Linear(args.hidden, 1))
    models = {"nn.RNN (tanh)": fused}
    models.update({kind: vglib.build_recurrent(kind, args.hidden, seed=0) for kind in vglib.RECURRENT_KINDS})
    optimizers = {label: torch.optim.Adam(m.parameters(), lr=1e-3) for label, m in models.items()}
    best = dict.fromkeys(models, math.inf)
    for _ in range(args.rounds):
        for label, model in models.items():
            start = time.perf_counter()
            optimizers[label].zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizers[label].step()
            best[label] = min(best[label], time.perf_counter() - start)
    print(f"one training step, batch 128, T = {args.length}, {args.hidden} units, one thread")
    for label, seconds in best.items():
        params = sum(p.numel() for p in models[label].parameters())
        print(f"{label:<14} {1e3 * seconds:6.2f} ms   {params:>6} parameters")


if __name__ == "__main__":
    main()
