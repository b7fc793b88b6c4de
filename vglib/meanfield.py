"""Measurements on real networks to set beside mean-field theory (``vglib.theory``): how the
correlation of two inputs evolves with depth, how a finite width makes the squared length of the
activations fluctuate from one draw of the weights to the next, and the per-layer growth of a
backpropagated gradient fitted over a network."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ._seed import generator as seeded_generator
from ._seed import torch_seed
from ._validation import check_positive_int
from .data import probe_batch
from .models import build_gaussian_mlp
from .probes import fitted_growth, forward_statistics, gradient_profile

__all__ = [
    "fan_mode_ratios",
    "gradient_growth",
    "input_pair",
    "log_length_growth",
    "log_length_variance",
    "preactivation_correlations",
]


def input_pair(width: int, c0: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 inputs of ``width`` coordinates, of equal squared norm ``width`` (so ``q0 = 1``)
    and correlation exactly ``c0``."""
    check_positive_int("width", width, minimum=2)
    if not -1.0 <= c0 <= 1.0:
        raise ValueError(f"c0 must lie in [-1, 1], got {c0!r}")
    a, b = torch.randn(2, width, generator=seeded_generator(seed), dtype=torch.float64)
    a = a / a.norm()
    b = b - (b @ a) * a  # orthogonal to a
    b = b / b.norm()
    scale = math.sqrt(width)
    return scale * a, scale * (c0 * a + math.sqrt(1.0 - c0 * c0) * b)


@torch.no_grad()
def preactivation_correlations(model: nn.Sequential, x1: torch.Tensor, x2: torch.Tensor) -> np.ndarray:
    """``c_l = <z_l(x1), z_l(x2)> / (||z_l(x1)|| ||z_l(x2)||)`` for every hidden block
    ``linear1 .. linearL`` of a ``build_mlp``-style model, in float64 (on a float64 copy): the
    correlation that ``vglib.correlation_propagation`` predicts. Uncentred, as in mean-field theory
    (the bias's contribution counts)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"takes a build_mlp model (nn.Sequential), got {type(model).__name__}")
    if x1.shape != x2.shape or x1.ndim != 1:
        shapes = f"{tuple(x1.shape)} and {tuple(x2.shape)}"
        raise ValueError(f"x1 and x2 must be two vectors of one shape, got {shapes}")
    names = [name for name, _ in model.named_children()]
    if not any(name.startswith("linear") for name in names):
        raise ValueError("the model has no blocks named linear1, linear2, ...: build it with vglib.build_mlp")
    h = torch.stack([x1, x2]).double()
    out = []
    for name, module in copy.deepcopy(model).double().named_children():
        if name == "head":
            break
        h = module(h)
        if name.startswith("linear"):
            out.append(float(h[0] @ h[1] / (h[0].norm() * h[1].norm())))
    return np.array(out)


def log_length_growth(
    activation: str, sigma_w2: float, depth: int, width: int, seeds: Sequence[int], sigma_b2: float = 0.0
) -> np.ndarray:
    """Per seed, ``ln(||h_L||^2 / ||x||^2)`` for one random input ``x`` through a
    ``build_gaussian_mlp(depth, width, ...)`` network drawn with that seed, run in float64 (``h_L``:
    the last hidden block's output). With ReLU and He's ``sigma_w2 = 2`` the mean of
    ``||h_L||^2 / ||x||^2`` is 1 at any width (its log averages about minus half its variance), while
    the spread over seeds shrinks like ``1 / width``: each layer multiplies ``||h||^2`` by an
    independent factor of mean 1 and variance ``5 / width``, so the variance over seeds is about
    ``5 depth / width`` (Hanin & Rolnick 2018: the fluctuations grow with ``sum_l 1 / n_l``)."""
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    values = []
    for seed in seeds:
        net = build_gaussian_mlp(depth, width, activation, sigma_w2, sigma_b2, seed=seed).double()
        x = torch.randn(1, width, generator=seeded_generator(10_000 + seed), dtype=torch.float64)
        with torch.no_grad():
            h = net[: 2 * depth](x)
        values.append(math.log(float(h.pow(2).sum()) / float(x.pow(2).sum())))
    if not values:
        raise ValueError("seeds must hold at least one seed")
    return np.array(values)


def gradient_growth(
    activation: str, sigma_w2: float, depth: int, width: int, seed: int = 0, sigma_b2: float = 0.0
) -> float:
    """The per-layer factor of the backpropagated gradient's squared norm ``||dL/dh_l||^2``,
    fitted (``vglib.fitted_growth``, going from the output towards the input) over the second half of
    a ``build_gaussian_mlp`` network's layers, where the variance has reached its fixed point: the
    measured counterpart of ``chi_1``."""
    net = build_gaussian_mlp(depth, width, activation, sigma_w2, sigma_b2, seed=seed)
    prof = gradient_profile(net, *probe_batch(width, batch_size=128, seed=seed))
    squared = prof.activation_grad_norms[::-1].astype(np.float64) ** 2  # output side first
    return fitted_growth(squared[: depth // 2], 0)


def fan_mode_ratios(
    widths: Sequence[int], mode: str, seed: int = 0, batch_size: int = 512
) -> tuple[float, float]:
    """He et al.'s (2015, Sec. 2.2) fan-in/fan-out choice on a ReLU network of unequal widths:
    ``widths = (n_0, n_1, ..., n_L)`` (input, then hidden), every layer initialised by
    ``nn.init.kaiming_normal_(mode=mode, nonlinearity="relu")`` with zero biases, a head of width 1.
    Returns ``(forward, backward)``: the per-unit pre-activation variance of the last hidden layer
    over the first's, and the per-unit variance of the backpropagated gradient at the first hidden
    layer over the last's. Theory: ``mode="fan_in"`` keeps the forward ratio at 1 and makes the
    backward one ``n_L / n_1``; ``"fan_out"`` keeps the backward one at 1 and makes the forward one
    ``n_1 / n_L``: the per-layer mismatches telescope to a ratio of two widths, not a power of the depth."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be one of ('fan_in', 'fan_out'), got {mode!r}")
    widths = [check_positive_int("widths", w) for w in widths]
    if len(widths) < 3:
        raise ValueError("widths needs the input width and at least two hidden widths")
    layers: list[nn.Module] = []
    with torch_seed(seed):
        for n_in, n_out in itertools.pairwise(widths):
            linear = nn.Linear(n_in, n_out)
            nn.init.kaiming_normal_(linear.weight, mode=mode, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        layers.append(nn.Linear(widths[-1], 1))
    net = nn.Sequential(*layers)
    x, y = probe_batch(widths[0], batch_size=batch_size, seed=seed)
    forward = forward_statistics(net, x).preactivation_variance
    grads = gradient_profile(net, x, y).activation_grad_norms.astype(np.float64) ** 2
    per_unit = grads / (np.array(widths[1:]) * batch_size)
    return float(forward[-1] / forward[0]), float(per_unit[0] / per_unit[-1])


def log_length_variance(depth: int, width: int) -> float:
    """The exact variance over draws of the weights of ``ln(||h_L||^2 / ||x||^2)`` for a ReLU network
    of ``depth`` hidden layers of ``width`` units with He's weights (``sigma_w2 = 2``) and no bias,
    which ``log_length_growth("relu", 2.0, depth, width, seeds)`` samples.

    Given ``h_{l-1}``, layer ``l`` multiplies ``||h||^2`` by ``(2 / n) sum_i relu(g_i)^2`` with ``g_i``
    independent standard normals: of the ``n`` terms a binomial number ``K ~ Bin(n, 1/2)`` are
    non-zero, and their sum is a chi-square with ``K`` degrees of freedom, whose log has mean
    ``ln 2 + digamma(K/2)`` and variance ``trigamma(K/2)``. The layers' factors are independent, so
    the variance is ``depth * (Var[digamma(K/2)] + E[trigamma(K/2)])`` (``K = 0``, probability
    ``2^-n``, is left out); for a wide layer it approaches the first-order ``5 depth / width``."""
    try:
        from scipy.special import polygamma
        from scipy.stats import binom
    except ImportError as error:
        raise ImportError('log_length_variance needs SciPy: pip install "vglib[scipy]"') from error

    check_positive_int("depth", depth)
    check_positive_int("width", width, minimum=2)
    k = np.arange(1, width + 1)
    p = binom.pmf(k, width, 0.5)
    p = p / p.sum()
    mean_log = polygamma(0, k / 2)
    per_layer = float(p @ mean_log**2 - (p @ mean_log) ** 2 + p @ polygamma(1, k / 2))
    return depth * per_layer
