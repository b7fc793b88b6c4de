"""Synthetic data made locally: nothing is downloaded."""

from __future__ import annotations

import torch

from ._validation import check_positive_int

__all__ = ["probe_batch"]


def probe_batch(
    in_features: int, out_features: int = 1, batch_size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch for measuring gradients: inputs ``x ~ N(0, I)`` and regression targets ``y ~ N(0, I)``.

    Unit-variance inputs are what the initialisation schemes assume, so what a profile shows is
    the network's doing, not the data's. The global RNG state is left as it was.
    """
    check_positive_int("in_features", in_features)
    check_positive_int("out_features", out_features)
    check_positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, in_features, generator=generator)
    y = torch.randn(batch_size, out_features, generator=generator)
    return x, y
