"""Time a training step (forward and backward) of a 30-layer ReLU network with no normalisation,
batch norm and layer norm, on one CPU thread, relative to the plain network.

The Normalisation chapter counts the memory exactly (``vglib.saved_for_backward_megabytes``);
time depends on the hardware and on PyTorch's kernels, so the figures live here, not in the
chapter. Rounds are interleaved and the fastest kept, which is robust to other work on the machine.

    python benchmarks/normalisation_cost.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import math
import time

from torch.nn import functional as F

import vglib

NORMS = ("none", "batch", "layer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    vglib.seed_everything(0)  # one thread
    (x, y), _ = vglib.harness_data()
    xb, yb = x[:64], y[:64]
    models = {norm: vglib.build_network(30, 64, "relu", "he", norm=norm, in_features=16) for norm in NORMS}
    fastest = dict.fromkeys(NORMS, math.inf)
    for _ in range(args.rounds):
        for norm, model in models.items():
            start = time.perf_counter()
            for _ in range(3):
                model.zero_grad(set_to_none=True)
                F.mse_loss(model(xb), yb).backward()
            fastest[norm] = min(fastest[norm], (time.perf_counter() - start) / 3)
    print(f"training step, 30 layers of width 64, batch 64, one thread, fastest of {args.rounds} rounds")
    for norm in NORMS:
        print(f"norm={norm:<6} {fastest[norm] * 1e3:6.2f} ms  {fastest[norm] / fastest['none']:4.2f}x plain")


if __name__ == "__main__":
    main()
