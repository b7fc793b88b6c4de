"""Networks trained per second: one batched ensemble against the same functional step run network by
network, on one thread.

The harness trains every remedy over several seeds and learning rates. ``vglib.ensemble.train_ensemble``
trains the members of one configuration together (stacked parameters, ``vmap``-ed forward pass,
one backward pass). This script times ``K`` networks of the harness's default shape (30 layers of
width 64, ReLU, He, SGD with momentum; batch 64, 16 inputs) trained for ``--steps`` steps as one
ensemble, and as ``K`` ensembles of one member each: the same code path and the same arithmetic, only
unbatched. It also times ``vglib.train`` (the plain training loop) for reference. Each figure is
the median of ``--repeats`` alternating repeats.

    python benchmarks/harness_throughput.py [--members 12] [--steps 100] [--repeats 5] [--norm none]

Target (from the issue): at least 5x networks per second at 12 networks.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import vglib
from vglib.ensemble import train_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--norm", default="none", choices=vglib.models.NORMS)
    args = parser.parse_args()
    vglib.seed_everything(0)  # one torch thread
    remedy = vglib.Remedy("ReLU, He", norm=args.norm)
    (x, y), _ = vglib.harness_data()
    members = [(seed, 1e-3) for seed in range(args.members)]
    kwargs = {"steps": args.steps, "optimizer": "sgd", "momentum": 0.9, "eval_every": args.steps}

    def batched() -> None:
        train_ensemble(remedy.build, x, y, members=members, **kwargs)

    def unbatched() -> None:
        for member in members:
            train_ensemble(remedy.build, x, y, members=[member], **kwargs)

    def plain_loop() -> None:
        for seed, lr in members:
            with vglib.torch_seed(seed):
                model = remedy.build(seed)
            vglib.train(model, x, y, steps=args.steps, lr=lr, optimizer="sgd", momentum=0.9, seed=seed,
                        eval_every=args.steps)  # fmt: skip

    variants = {
        "ensemble": batched,
        "one by one (same code)": unbatched,
        "vglib.train, one by one": plain_loop,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        names = list(variants)
        names = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in names:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread; {args.members} networks (30 x 64, "
        f"ReLU, He, norm={args.norm}), {args.steps} SGD steps each; median of {args.repeats}"
    )
    base = float(np.median(times["one by one (same code)"]))
    for name, values in times.items():
        median = float(np.median(values))
        rate = args.members / median
        print(f"  {name:<26} {median:7.2f} s   {rate:6.2f} networks/s   {base / median:5.2f}x")
    batched_ms, single_ms = arithmetic_floor(args.members)
    print(
        f"the arithmetic alone (30 relu(x W^T + b) layers, forward and backward, no framework): "
        f"{single_ms:.2f} ms per network-step one by one, {batched_ms:.2f} batched (baddbmm): "
        f"{single_ms / batched_ms:.2f}x is what batching the matrix products can give at this shape"
    )


def arithmetic_floor(members: int, depth: int = 30, width: int = 64, batch: int = 64) -> tuple[float, float]:
    """Per network-step milliseconds of the bare forward and backward pass of ``depth`` ReLU layers,
    for ``members`` networks batched (``baddbmm``) and for one network (``linear``)."""

    def timed(step: object, repeats: int) -> float:
        for _ in range(3):
            step()  # type: ignore[operator]
        start = time.perf_counter()
        for _ in range(repeats):
            step()  # type: ignore[operator]
        return (time.perf_counter() - start) / repeats * 1e3

    g = torch.Generator().manual_seed(0)
    he = (2.0 / width) ** 0.5  # finite activations all the way (no inf/NaN arithmetic)
    weights = [(torch.randn(members, width, width, generator=g) * he).requires_grad_() for _ in range(depth)]
    biases = [torch.zeros(members, 1, width, requires_grad=True) for _ in range(depth)]
    x = torch.randn(members, batch, width, generator=g)

    def batched() -> None:
        h = x
        for w, b in zip(weights, biases, strict=True):
            h = torch.relu(torch.baddbmm(b, h, w.transpose(1, 2)))
        h.square().mean().backward()

    one_weights = [w[0].detach().clone().requires_grad_() for w in weights]  # a network of its own
    one_biases = [b[0, 0].detach().clone().requires_grad_() for b in biases]
    one_x = x[0].clone()

    def single() -> None:
        h = one_x
        for w, b in zip(one_weights, one_biases, strict=True):
            h = torch.relu(torch.nn.functional.linear(h, w, b))
        h.square().mean().backward()

    return timed(batched, 20) / members, timed(single, 100)


if __name__ == "__main__":
    main()
