"""Tasks that no linear model solves, for the Remedies part's comparisons.

A task used to rank remedies for vanishing gradients must not be solvable by a linear map (the
first harness task was about 90 % linear: least squares left 0.098 of its variance, below the
threshold of 0.5, so any network that learned a linear map passed). Two tasks, each split into
training, validation (for choosing a learning rate) and test sets:

- ``"teacher"``: regression on ``product_teacher``: ``y = a(x) b(x)`` for two fixed random
  4-layer tanh networks without biases. Each is an odd function of ``x``, so their product is
  even, and an even function of ``x ~ N(0, I)`` has no linear part: the best linear fit explains
  none of it beyond sampling noise (``Task.linear_baseline`` measures it). A quadratic model
  (least squares on the degree-2 terms, ``Task.quadratic_baseline``) fits much of it, so beating
  the linear model shows a network learnt something nonlinear, not that it needed depth. With
  2-layer factors a
  one-hidden-layer network of the harness's parameter count fitted it as well as the best deep
  ones (``benchmarks/harness_grid.py``, equal tuning); with 4-layer factors the best deep network
  does better than that shallow twin. Metric: mean squared error (predicting 0 scores about 1).
- ``"digits"``: scikit-learn's ``load_digits`` (1797 8x8 images of handwritten digits, shipped
  inside the package: nothing is downloaded), pixels standardised with the training set's
  statistics. Metric: accuracy; the linear baseline is multinomial logistic regression.

``harness_task(name)`` returns a ``Task``; scikit-learn is needed for ``"digits"`` only (``pip
install scikit-learn``; the error says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ._seed import generator as seeded_generator
from ._tensors import to_numpy
from ._validation import check_choice, check_positive_int
from .models import build_mlp

__all__ = ["TASKS", "Task", "harness_task", "one_hidden_layer_width", "product_teacher"]

TASKS = ("teacher", "digits")
"""The harness tasks ``harness_task`` knows."""

_TEACHER_SPLITS = {"train": (2048, 0), "validation": (1024, 2), "test": (1024, 1)}  # size, input seed
_DIGITS_SPLITS = {"train": 1000, "validation": 397, "test": 400}  # of load_digits' 1797 images


def product_teacher(
    n_examples: int, in_features: int = 16, seed: int = 0, teacher_seed: int = 1234, teacher_depth: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """A regression task with no linear part: ``x ~ N(0, I)`` and ``y = a(x) b(x)``, where ``a`` and
    ``b`` are fixed random ``teacher_depth``-layer tanh networks (Xavier, width 32, zero biases) drawn from
    ``teacher_seed`` and ``teacher_seed + 1``, and ``y`` is centred and scaled to unit variance over
    a fixed large probe (so every draw shares them). Both networks are odd functions of ``x``, so
    ``y(-x) = y(x)``: even in ``x``, uncorrelated with every linear function of a symmetric input.
    ``seed`` fixes the inputs, ``teacher_seed`` the teacher, so splits share a teacher."""
    check_positive_int("n_examples", n_examples)
    check_positive_int("in_features", in_features)
    check_positive_int("teacher_depth", teacher_depth)
    a, b = (
        build_mlp(teacher_depth, 32, "tanh", "xavier", seed=teacher_seed + i, in_features=in_features)
        for i in range(2)
    )
    x = torch.randn(n_examples, in_features, generator=seeded_generator(seed))
    probe = torch.randn(20_000, in_features, generator=seeded_generator(0))
    with torch.no_grad():
        on_probe = a(probe) * b(probe)
        mean, scale = float(on_probe.mean()), float(on_probe.std())
        y = (a(x) * b(x) - mean) / scale
    return x, y


@dataclass(frozen=True)
class Task:
    """One harness task: its splits (``(x, y)`` each), its metric (``"mse"``, lower is better, or
    ``"accuracy"``, higher is better) and its sizes."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    metric: str
    in_features: int
    out_features: int

    def linear_baseline(self, split: str = "test") -> float:
        """The metric of the best linear model, fitted on the training set and measured on
        ``split``: least squares with an intercept (``"mse"``), or multinomial logistic
        regression (``"accuracy"``, scikit-learn's ``LogisticRegression``, default
        regularisation)."""
        return _linear_baseline(self.name, check_choice("split", split, ("train", "validation", "test")))

    def quadratic_baseline(self, split: str = "test") -> float:
        """For ``"mse"``: the loss on ``split`` of least squares on every monomial of degree at most
        2 of the inputs (scikit-learn's ``PolynomialFeatures(2)``), fitted on the training set. The
        teacher's target is an even function of symmetric inputs, so no linear (odd) model fits
        it, while a quadratic one already fits much of it: a network that beats the linear model has
        learnt something nonlinear, not necessarily something deep."""
        if self.metric != "mse":
            raise ValueError(
                f"task {self.name!r} is scored by {self.metric}; the quadratic baseline is for regression"
            )
        return _quadratic_baseline(self.name, check_choice("split", split, ("train", "validation", "test")))

    def predict_zero_loss(self, split: str = "test") -> float:
        """For ``"mse"``: the loss of always predicting 0 on ``split`` (the mean square target)."""
        if self.metric != "mse":
            raise ValueError(
                f"task {self.name!r} is scored by {self.metric}; predicting 0 is a regression baseline"
            )
        _, y = getattr(self, check_choice("split", split, ("train", "validation", "test")))
        return float(y.double().pow(2).mean())


@cache
def harness_task(name: str = "teacher") -> Task:
    """The harness task ``name`` (one of ``TASKS``), made once and cached (see the module docstring)."""
    check_choice("task", name, TASKS)
    if name == "teacher":
        splits = {split: product_teacher(n, seed=seed) for split, (n, seed) in _TEACHER_SPLITS.items()}
        return Task("teacher", splits["train"], splits["validation"], splits["test"], "mse", 16, 1)
    x, y = _digits()
    order = torch.randperm(len(x), generator=seeded_generator(0))
    bounds = np.cumsum([0, *_DIGITS_SPLITS.values()])
    parts = {s: order[bounds[i] : bounds[i + 1]] for i, s in enumerate(_DIGITS_SPLITS)}
    mean, std = x[parts["train"]].mean(0), x[parts["train"]].std(0)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))  # constant border pixels stay 0
    split = {s: (x[index], y[index]) for s, index in parts.items()}
    return Task("digits", split["train"], split["validation"], split["test"], "accuracy", 64, 10)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            'the digits task needs scikit-learn, which ships the data set: pip install "vglib[tasks]"'
        ) from error
    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32), torch.tensor(data.target, dtype=torch.int64)


@cache
def _linear_baseline(name: str, split: str) -> float:
    task = harness_task(name)
    (x, y), (x_eval, y_eval) = task.train, getattr(task, split)
    if task.metric == "mse":

        def design(inputs: torch.Tensor) -> np.ndarray:
            return np.hstack([to_numpy(inputs.double()), np.ones((len(inputs), 1))])

        coef, *_ = np.linalg.lstsq(design(x), to_numpy(y.double()), rcond=None)
        return float(np.mean((design(x_eval) @ coef - to_numpy(y_eval.double())) ** 2))
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as error:
        raise ImportError('the linear baseline needs scikit-learn: pip install "vglib[tasks]"') from error

    model = LogisticRegression(max_iter=5000).fit(to_numpy(x), to_numpy(y))
    return float(model.score(to_numpy(x_eval), to_numpy(y_eval)))


@cache
def _quadratic_baseline(name: str, split: str) -> float:
    try:
        from sklearn.preprocessing import PolynomialFeatures
    except ImportError as error:
        raise ImportError('the quadratic baseline needs scikit-learn: pip install "vglib[tasks]"') from error

    task = harness_task(name)
    (x, y), (x_eval, y_eval) = task.train, getattr(task, split)
    features = PolynomialFeatures(degree=2)  # 1, x_i, x_i x_j: 153 columns for 16 inputs
    design = features.fit_transform(to_numpy(x.double()))
    coef, *_ = np.linalg.lstsq(design, to_numpy(y.double()), rcond=None)
    prediction = features.transform(to_numpy(x_eval.double())) @ coef
    return float(np.mean((prediction - to_numpy(y_eval.double())) ** 2))


def one_hidden_layer_width(parameters: int, in_features: int, out_features: int) -> int:
    """The width of a one-hidden-layer network (``Linear(in, w)``, activation, ``Linear(w, out)``,
    with biases) whose parameter count is closest to ``parameters``: the shallow twin a deep
    network is compared with, so a reader sees what depth buys."""
    check_positive_int("parameters", parameters)
    per_unit = in_features + 1 + out_features  # each hidden unit's weights in, bias, weights out
    return max(1, round((parameters - out_features) / per_unit))
