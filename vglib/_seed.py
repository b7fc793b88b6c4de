"""One place for determinism: every notebook and experiment seeds through here."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["seed_everything", "torch_seed"]


def seed_everything(seed: int = 0, *, threads: int | None = 1) -> None:
    """Seed Python, NumPy and PyTorch, and fix PyTorch's thread count.

    Floating-point sums inside PyTorch's CPU kernels are split across threads, so the last digits
    of a result depend on the thread count. Fixing it (one thread by default; the models in this
    book are small) makes a chapter print the same numbers on a laptop and on a 2-core CI machine.
    Pass ``threads=None`` to leave the thread count alone.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is what users call)
    torch.manual_seed(seed)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
        torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Run a block with PyTorch's CPU generator seeded, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
