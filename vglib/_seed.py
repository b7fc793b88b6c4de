"""One place for determinism: every notebook and experiment seeds through here.

Two environment variables change a whole chapter's randomness without editing it:

- ``VGLIB_SEED_OFFSET=k`` (a non-negative int, default 0) gives every seed vglib turns into a random
  generator (model weights, data sets, minibatch order, :func:`seed_everything`) an independent
  replacement, the same for the same ``k``: a chapter re-run with ``k = 1, 2, ...`` draws new
  networks and data, which is how the book checks that a claim does not rest on one draw.
- ``VGLIB_THREADS=n`` sets the thread count :func:`seed_everything` fixes (default 1).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "SeedSpread",
    "generator",
    "over_seeds",
    "seed_everything",
    "seed_offset",
    "shifted_seed",
    "torch_seed",
]

_THREADS_FROM_ENV = object()


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {raw!r}")
    return value


def seed_offset() -> int:
    """The ``VGLIB_SEED_OFFSET`` in force (0 when unset)."""
    return _env_int("VGLIB_SEED_OFFSET", 0, 0)


def shifted_seed(seed: int) -> int:
    """``seed`` itself when ``VGLIB_SEED_OFFSET`` is 0 or unset; otherwise an independent seed
    drawn from ``(seed, offset)``, so that every offset is a new, repeatable set of draws."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    offset = seed_offset()
    if offset == 0:
        return seed
    return int(np.random.SeedSequence([seed, offset]).generate_state(1)[0])


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``shifted_seed(seed)``."""
    return torch.Generator().manual_seed(shifted_seed(seed))


def seed_everything(seed: int = 0, *, threads: int | None = _THREADS_FROM_ENV) -> None:  # type: ignore[assignment]
    """Seed Python, NumPy and PyTorch, and fix PyTorch's thread count.

    Floating-point sums inside PyTorch's CPU kernels are split across threads, so the last digits
    of a result depend on the thread count. Fixing it (one thread by default, or ``VGLIB_THREADS``;
    the models in this book are small) makes a chapter print the same numbers on a laptop and on a
    2-core CI machine. Pass ``threads=None`` to leave the thread count alone.
    """
    seed = shifted_seed(seed)
    if threads is _THREADS_FROM_ENV:
        threads = _env_int("VGLIB_THREADS", 1, 1)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global generator is what users call)
    torch.manual_seed(seed)
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Run a block with PyTorch's CPU generator seeded (with ``shifted_seed(seed)``), restoring the
    caller's state afterwards."""
    seed = shifted_seed(seed)
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed would also seed (lazily, recording a stack
        # trace each time) the CUDA/XPU/MTIA generators, whose state fork_rng(devices=[]) does not
        # restore
        torch.default_generator.manual_seed(seed)
        yield


@dataclass(frozen=True)
class SeedSpread:
    """One measurement repeated over several seeds: its median and range, for claims that must
    not rest on one draw. ``format(spread, ".3f")`` reads "0.490 (0.484–0.506)"."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.values))

    @property
    def low(self) -> float:
        return float(min(self.values))

    @property
    def high(self) -> float:
        return float(max(self.values))

    def __format__(self, spec: str) -> str:
        """``spec`` is a float format (``".3f"``) applied to each number, optionally led by an
        alignment and width for the whole text (``">46.3f"``)."""
        if not spec:
            return repr(self)
        match = re.fullmatch(r"([<>^]?)(\d*)(.*)", spec)
        align, width, number = match.group(1), match.group(2), match.group(3)  # type: ignore[union-attr]
        text = f"{self.median:{number}} ({self.low:{number}}–{self.high:{number}})"
        return format(text, f"{align or '>'}{width}") if width else text

    def text(self, fmt: str, missing: str = "never") -> str:
        """The median and range as ``format(spread, fmt)`` writes them, with ``missing`` for a
        value that is not finite (a seed that never reached a threshold, a run that diverged):
        ``"350 (300–never)"``."""

        def one(v: float) -> str:
            return f"{v:{fmt}}" if math.isfinite(v) else missing

        return f"{one(self.median)} ({one(self.low)}–{one(self.high)})"

    def relation(self, other: SeedSpread) -> str:
        """ "below" where every value is below every value of ``other``, "above" where every value
        is above, "overlaps" otherwise: a difference is only called one where the ranges separate."""
        if self.high < other.low:
            return "below"
        if self.low > other.high:
            return "above"
        return "overlaps"

    def glue(self, name: str, fmt: str) -> None:
        """Glue ``name`` (the median), ``name_low`` and ``name_high``, each as ``fmt`` shows it."""
        from ._glue import glue

        glue(name, self.median, fmt)
        glue(f"{name}_low", self.low, fmt)
        glue(f"{name}_high", self.high, fmt)


def over_seeds(measure: Callable[[int], float], seeds: Sequence[int] = (0, 1, 2)) -> SeedSpread:
    """``measure(seed)`` for each seed, as a :class:`SeedSpread` (median and range)."""
    seeds = tuple(seeds)
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds!r}")
    values = tuple(float(measure(seed)) for seed in seeds)
    return SeedSpread(seeds, values)
