"""Time a training step of a 20-layer MLP with the GradientMonitor on (sampling every step) and off.

The two are measured side by side in one run, alternating blocks of steps so that drift of the
machine affects both alike; the figure is the ratio of the medians.

    python benchmarks/monitor_overhead.py [--width 256] [--batch 256] [--blocks 20]

Target (issue 5): at most 1.15x.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import vglib


def make(width: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = vglib.build_mlp(20, width, "relu", "he", seed=0)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--steps-per-block", type=int, default=10)
    args = parser.parse_args()
    vglib.seed_everything(0)  # one torch thread, as in the chapters
    x, y = vglib.probe_batch(args.width, 1, args.batch)
    plain_model, plain_opt = make(args.width)
    watched_model, watched_opt = make(args.width)
    monitor = vglib.GradientMonitor(watched_model, watched_opt, every=1).attach()
    for _ in range(5):  # warm up both
        step(plain_model, plain_opt, x, y)
        step(watched_model, watched_opt, x, y)
    off, on = [], []
    for _ in range(args.blocks):
        for times, model, opt in ((off, plain_model, plain_opt), (on, watched_model, watched_opt)):
            for _ in range(args.steps_per_block):
                start = time.perf_counter()
                step(model, opt, x, y)
                times.append(time.perf_counter() - start)
    monitor.close()
    off_ms, on_ms = np.median(off) * 1e3, np.median(on) * 1e3
    rows = len(monitor.table())
    print(f"20-layer ReLU MLP, width {args.width}, batch {args.batch}, Adam; {len(off)} steps each")
    print(f"monitor off: median {off_ms:.2f} ms/step")
    print(f"monitor on (every step, {rows} rows recorded): median {on_ms:.2f} ms/step")
    print(f"overhead ratio: {on_ms / off_ms:.3f}x (target <= 1.15x)")


if __name__ == "__main__":
    main()
