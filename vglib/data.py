"""Synthetic data made locally: nothing is downloaded."""

from __future__ import annotations

import torch

from ._seed import generator as seeded_generator
from ._validation import check_positive_int
from .models import build_mlp

__all__ = ["ADDING_BASELINE_MSE", "adding_problem", "probe_batch", "teacher_student"]


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
    generator = seeded_generator(seed)
    x = torch.randn(batch_size, in_features, generator=generator)
    y = torch.randn(batch_size, out_features, generator=generator)
    return x, y


ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1 on the adding problem: the variance of a sum of two U(0, 1)."""


def adding_problem(n_sequences: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem in the form Le et al. (2015) used; Hochreiter & Schmidhuber's (1997)
    original draws the values from [-1, 1], marks the first number among the first ten steps, and
    asks for 0.5 + (X1 + X2) / 4.

    Each sequence has ``length`` steps of two features: a value ``U(0, 1)`` and a marker that is
    1 at exactly two steps, one in each half of the sequence, 0 elsewhere. The target is the sum
    of the two marked values. ``x`` has shape ``(n_sequences, length, 2)``, ``y`` ``(n_sequences, 1)``.
    Predicting 1 whatever the input scores ``ADDING_BASELINE_MSE`` = 1/6; beating it needs memory
    across up to ``length`` steps.
    """
    check_positive_int("n_sequences", n_sequences)
    check_positive_int("length", length, minimum=2)
    generator = seeded_generator(seed)
    values = torch.rand(n_sequences, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n_sequences,), generator=generator)
    second = torch.randint(half, length, (n_sequences,), generator=generator)
    markers = torch.zeros(n_sequences, length)
    rows = torch.arange(n_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)
    return x, y


def teacher_student(
    n_examples: int, in_features: int = 16, seed: int = 0, teacher_seed: int = 1234
) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable regression task: ``x ~ N(0, I)`` and ``y = teacher(x)``, where the teacher is a
    fixed random 2-layer tanh network (Xavier init, width 32) and ``y`` is scaled to unit variance
    over this draw. A student that learns reaches a loss far below 1, the loss of predicting 0.
    ``teacher_seed`` fixes the teacher, ``seed`` the inputs, so train and test sets share a teacher.
    """
    check_positive_int("n_examples", n_examples)
    check_positive_int("in_features", in_features)
    teacher = build_mlp(2, 32, "tanh", "xavier", seed=teacher_seed, in_features=in_features)
    x = torch.randn(n_examples, in_features, generator=seeded_generator(seed))
    with torch.no_grad():
        y = teacher(x)
    return x, y / _teacher_scale(teacher, in_features)


def _teacher_scale(teacher: torch.nn.Module, in_features: int) -> float:
    """The teacher's output standard deviation over a large fixed probe, so every draw shares it."""
    probe = torch.randn(20_000, in_features, generator=seeded_generator(0))
    with torch.no_grad():
        return float(teacher(probe).std())
