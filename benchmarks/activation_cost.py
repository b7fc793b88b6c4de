"""Time the forward pass of each activation on one CPU thread, relative to ReLU.

The Activation functions chapter says that ELU, SELU and GELU cost more than ReLU; how much more
depends on the hardware and on PyTorch's kernels, so the figures live here, not in the chapter.

    python benchmarks/activation_cost.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import vglib


def forward_seconds(name: str, z: torch.Tensor, repeats: int) -> float:
    module = vglib.get_activation(name).make_module()
    best = math.inf
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            module(z)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    z = torch.randn(256, 2048, generator=torch.Generator().manual_seed(0))
    names = [n for n in vglib.ACTIVATIONS if n != "linear"]
    costs = {name: forward_seconds(name, z, args.repeats) for name in names}
    print(f"forward pass of a 256 x 2048 tensor, one thread, best of {args.repeats}")
    for name in names:
        print(f"{name:<12} {costs[name] * 1e3:7.3f} ms  {costs[name] / costs['relu']:5.1f}x ReLU")


if __name__ == "__main__":
    main()
