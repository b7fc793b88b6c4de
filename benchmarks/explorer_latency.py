"""Time one gradient-explorer redraw: measure the gradients, re-plot, render the pixels.

A session is a random walk over the controls at a fixed depth: each step changes the
activation or the init, as a reader clicking through the menus does. Every redraw is timed,
including the first visit of each axis range, which has to draw its background once; the
first redraw of the session (building the cached networks) is reported apart.

    python benchmarks/explorer_latency.py [--steps 200] [--width 64]

Targets on a 2-core CPU (issue 2): depth 50 median < 30 ms and p95 < 60 ms; depth 100 median
< 50 ms.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

import vglib
from vglib.widgets import GradientExplorer


def walk(steps: int, seed: int) -> list[tuple[str, str]]:
    """A reader's clicks: each step changes the activation or the init."""
    rng = random.Random(seed)
    activation, init = "sigmoid", "xavier"
    settings = []
    for _ in range(steps):
        if rng.random() < 0.5:
            activation = rng.choice([a for a in vglib.ACTIVATIONS if a != activation])
        else:
            init = rng.choice([i for i in vglib.INITS if i != init])
        settings.append((activation, init))
    return settings


def time_session(depth: int, steps: int, width: int, method: str) -> tuple[float, np.ndarray]:
    """A fresh explorer's first call and then ``steps`` timed calls of ``method``, in ms."""
    explorer = GradientExplorer(width=width)
    call = getattr(explorer, method)
    start = time.perf_counter()
    call(depth, "sigmoid", "xavier")
    first = time.perf_counter() - start
    times = []
    for activation, init in walk(steps, seed=depth):
        start = time.perf_counter()
        call(depth, activation, init)
        times.append(time.perf_counter() - start)
    return first * 1e3, np.array(times) * 1e3


def session(depth: int, steps: int, width: int) -> dict[str, float]:
    """Timing statistics in ms: ``redraw`` alone, and the widget's callback (redraw + PNG)."""
    first, redraw = time_session(depth, steps, width, "redraw")
    _, png = time_session(depth, steps, width, "png")
    return {
        "first": first,
        "median": float(np.median(redraw)),
        "p95": float(np.percentile(redraw, 95)),
        "png_median": float(np.median(png)),
        "png_p95": float(np.percentile(png, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    vglib.seed_everything(0)  # as every chapter does: one torch thread
    print(f"explorer redraw latency, width {args.width}, {args.steps} redraws per depth")
    print("redraw = gradients + re-plot + render to pixels; widget = redraw + PNG encoding")
    header = f"{'depth':>5} {'first':>8} {'median':>8} {'p95':>8} {'widget median':>14} {'widget p95':>11}"
    print(header)
    for depth in (10, 50, 100):
        t = session(depth, args.steps, args.width)
        print(
            f"{depth:>5} {t['first']:>6.1f}ms {t['median']:>6.1f}ms {t['p95']:>6.1f}ms "
            f"{t['png_median']:>12.1f}ms {t['png_p95']:>9.1f}ms"
        )


if __name__ == "__main__":
    main()
