"""Analytic predictions to set beside measurements."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._tensors import to_numpy
from ._validation import check_choice, check_positive_int
from .activations import ACTIVATIONS, get_activation
from .initialization import INITS, init_variance

__all__ = [
    "chain_rule_bound",
    "chi",
    "chi_1",
    "chi_normalised",
    "fixed_point",
    "gaussian_expectation",
    "gaussian_moments",
    "gradient_depth_scale",
    "predicted_gradient_norms",
    "relu_gradient_factor",
    "rnn_vanishing_radius",
    "saturated_fraction",
    "saturation_threshold",
    "variance_propagation",
]


def _hidden_linears(model: nn.Sequential) -> list[nn.Linear]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"chain_rule_bound takes a build_mlp model (nn.Sequential), got {type(model).__name__}"
        )
    linears = [m for name, m in model.named_children() if name.startswith("linear")]
    if not linears:
        raise ValueError("the model has no blocks named linear1, linear2, ...: build it with vglib.build_mlp")
    return linears


@torch.no_grad()
def chain_rule_bound(model: nn.Sequential, activation: str) -> np.ndarray:
    """Upper bounds on ``||dL/dh_l|| / ||dL/dh_L||`` for each hidden block ``l`` of a ``build_mlp`` model.

    Backpropagation multiplies the gradient by ``J_k^T = W_k^T diag(phi'(z_k))`` once per layer,
    so ``||dL/dh_l|| <= prod_{k=l+1..L} (sup|phi'| * ||W_k||_2) * ||dL/dh_L||``. The last entry
    is 1. The bound holds for every input and every batch; measured ratios lie below it.
    """
    bound = get_activation(activation).derivative_bound
    linears = _hidden_linears(model)
    factors = [bound * float(torch.linalg.matrix_norm(m.weight.double(), ord=2)) for m in linears[1:]]
    # entry l: product of the factors of the layers after l
    tail_products = np.cumprod(np.array(factors[::-1] or [1.0]))[::-1]
    return np.append(tail_products[: len(factors)], 1.0)


def relu_gradient_factor(init: str, fan_in: int, fan_out: int | None = None) -> float:
    """Expected shrink (or growth) per layer of a backpropagated gradient's norm through ReLU layers.

    Each layer multiplies ``E||dL/dh||^2`` by ``n Var(W) / 2`` (He et al. 2015, eq. 14, with the
    layer's fan_out ``n``): the factor on the norm is its square root, ``1`` for He init,
    ``2^(-1/2)`` for variance ``1/n`` and ``6^(-1/2)`` for PyTorch's default.
    """
    check_choice("init", init, INITS)
    check_positive_int("fan_in", fan_in)
    fan_out = fan_in if fan_out is None else check_positive_int("fan_out", fan_out)
    return math.sqrt(fan_out * init_variance(init, fan_in, fan_out) / 2.0)


# An even number of nodes: none at 0, and the nodes are symmetric, so expectations of functions
# that are polynomial on each half-line (ReLU and its derivative) are exact as well.
_HALF_LINE_POINTS = 160
_CUTOFF = 12.0  # P(|z| > 12) ~ 4e-33: nothing of any expectation here lives beyond it


def gaussian_expectation(f: Callable[[np.ndarray], np.ndarray], q: float) -> float:
    """``E[f(sqrt(q) z)]`` for ``z ~ N(0, 1)``, by Gauss-Legendre quadrature on each half-line
    ``[-12, 0]`` and ``[0, 12]`` separately. Every activation of this book is smooth on either
    side of 0 (ReLU, ELU, SELU and their derivatives have their kink or jump exactly there), so
    the rule converges spectrally for all of them: ``E[relu(z)] = 1/sqrt(2 pi)`` and
    ``E[relu'(z)^2] = 1/2`` to ~1e-15. (A single Gauss-Hermite rule across the kink is only
    accurate to ~1e-3 for ReLU.)"""
    if q < 0:
        raise ValueError(f"a variance must be >= 0, got {q}")
    nodes, weights = _half_line_rule()
    return float(np.sum(weights * f(math.sqrt(q) * nodes)))


@functools.lru_cache(maxsize=1)
def _half_line_rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for ``E[f(z)]``, ``z ~ N(0, 1)``, split at 0 (the weights sum to 1)."""
    x, w = np.polynomial.legendre.leggauss(_HALF_LINE_POINTS)
    half = 0.5 * _CUTOFF * (x + 1.0)  # [-1, 1] -> [0, cutoff]
    density = np.exp(-0.5 * half * half) / math.sqrt(2.0 * math.pi)
    half_weights = 0.5 * _CUTOFF * w * density
    return np.concatenate([-half[::-1], half]), np.concatenate([half_weights[::-1], half_weights])


@functools.cache
def _phi(activation: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """``phi`` and ``phi'`` of a named activation as float64 NumPy functions (one module, reused)."""
    act = get_activation(activation)
    module = act.make_module().double()  # float64 throughout (PReLU's slope included)

    def value(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return to_numpy(module(torch.from_numpy(np.asarray(x, dtype=np.float64))))

    def slope(x: np.ndarray) -> np.ndarray:
        return to_numpy(act.derivative(torch.from_numpy(np.asarray(x, dtype=np.float64))))

    return value, slope


def _check_variances(sigma_w2: float, sigma_b2: float) -> None:
    if sigma_w2 <= 0 or sigma_b2 < 0:
        raise ValueError(f"need sigma_w2 > 0 and sigma_b2 >= 0, got {sigma_w2}, {sigma_b2}")


def variance_propagation(
    activation: str, sigma_w2: float, sigma_b2: float = 0.0, depth: int = 30, q0: float = 1.0
) -> np.ndarray:
    """Pre-activation variances ``q_1 .. q_depth`` of a wide net, by the mean-field length map.

    With weights ``N(0, sigma_w2/n)``, biases ``N(0, sigma_b2)`` and unit-variance inputs scaled to
    ``q0``: ``q_1 = sigma_w2 q0 + sigma_b2`` and ``q_{l+1} = sigma_w2 E[phi(sqrt(q_l) z)^2] + sigma_b2``
    (Poole et al. 2016; for ReLU and ``sigma_w2 = 2/n`` this is He et al.'s constant variance).
    """
    _check_variances(sigma_w2, sigma_b2)
    check_positive_int("depth", depth)
    value, _ = _phi(activation)
    q = [sigma_w2 * q0 + sigma_b2]
    for _ in range(depth - 1):
        q.append(sigma_w2 * gaussian_expectation(lambda x: value(x) ** 2, q[-1]) + sigma_b2)
    return np.array(q)


def chi(activation: str, sigma_w2: float, q: float) -> float:
    """``sigma_w2 E[phi'(sqrt(q) z)^2]``: the factor by which one layer multiplies the expected
    squared norm of a backpropagated gradient, at pre-activation variance ``q``."""
    _, slope = _phi(activation)
    return sigma_w2 * gaussian_expectation(lambda x: slope(x) ** 2, q)


def fixed_point(activation: str, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0) -> float:
    """The variance ``q*`` the length map converges to from ``q0``.

    The map is iterated to find the basin, then the root of ``map(q) - q`` is bracketed and
    bisected: near criticality the iteration alone converges only like ``1/l``.
    """
    value, _ = _phi(activation)

    def excess(q: float) -> float:
        return sigma_w2 * gaussian_expectation(lambda x: value(x) ** 2, q) + sigma_b2 - q

    q = float(variance_propagation(activation, sigma_w2, sigma_b2, depth=100, q0=q0)[-1])
    if abs(excess(q)) <= 1e-12 * max(q, 1.0):
        return q
    if excess(q) < 0:  # still shrinking: the root lies below q (at 0 if sigma_b2 is 0)
        low, high = 0.0, q
    else:  # still growing: double until the map falls below the diagonal
        low, high = q, 2 * q
        while excess(high) > 0:
            if high > 1e150:  # unbounded growth (ReLU above criticality): no finite fixed point
                return math.inf
            low, high = high, 2 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if excess(middle) > 0 else (low, middle)
    return 0.5 * (low + high)


def gaussian_moments(activation: str, q: float = 1.0) -> tuple[float, float, float]:
    """``(E[phi(z)], Var[phi(z)], E[phi'(z)^2])`` for ``z ~ N(0, q)``, in float64 by quadrature: the
    mean a layer passes on, its spread, and the factor (``chi`` at ``sigma_w2 = 1``) by which the
    activation multiplies a squared gradient norm."""
    if not q > 0:
        raise ValueError(f"q must be > 0, got {q!r}")
    value, _ = _phi(activation)
    mean = gaussian_expectation(value, q)
    second = gaussian_expectation(lambda x: value(x) ** 2, q)
    return mean, second - mean**2, chi(activation, 1.0, q)


def chi_normalised(activation: str, norm: str) -> float:
    """The factor by which one normalised layer (``z = W h``, ``u = norm(z)``, ``h' = phi(u)``)
    multiplies the expected squared norm of a backpropagated gradient, for a large batch and width:
    ``E[phi'(u)^2] / Var[phi(u)]`` for batch norm (the batch mean is subtracted) and
    ``E[phi'(u)^2] / E[phi(u)^2]`` for layer norm, ``u ~ N(0, 1)``; ``sigma_w2`` cancels
    (Yang et al. 2019 derive the batch-norm case; ReLU gives ``pi / (pi - 1)``)."""
    check_choice("norm", norm, ("batch", "layer"))
    mean, variance, slope2 = gaussian_moments(activation, 1.0)
    return slope2 / variance if norm == "batch" else slope2 / (variance + mean**2)


def chi_1(activation: str, sigma_w2: float, sigma_b2: float = 0.0) -> float:
    """``chi_1`` of Schoenholz et al. (2017): ``chi`` at the fixed point ``q*``. Below 1 is the
    ordered phase (gradients vanish), above 1 the chaotic phase (they explode), 1 is critical."""
    return chi(activation, sigma_w2, fixed_point(activation, sigma_w2, sigma_b2))


def gradient_depth_scale(activation: str, sigma_w2: float, sigma_b2: float = 0.0) -> float:
    """``xi = -1 / ln(chi_1)``: the number of layers over which the expected squared gradient
    norm shrinks by a factor ``e`` (Schoenholz et al. 2017); infinite at criticality, and
    negative in the chaotic phase, where ``|xi|`` is the number of layers over which it grows by ``e``."""
    c = chi_1(activation, sigma_w2, sigma_b2)
    return math.inf if abs(math.log(c)) < 1e-12 else -1.0 / math.log(c)


def predicted_gradient_norms(
    activation: str, sigma_w2: float, sigma_b2: float = 0.0, depth: int = 30, q0: float = 1.0
) -> np.ndarray:
    """Mean-field prediction of ``||dL/dh_l|| / ||dL/dh_L||`` for hidden blocks ``l = 1..depth``.

    ``E||dL/dh_l||^2 = chi(q_{l+1}) E||dL/dh_{l+1}||^2``, so the ratio is
    ``sqrt(prod_{k=l+1..L} chi(q_k))`` along the propagated variances ``q_k``.
    """
    q = variance_propagation(activation, sigma_w2, sigma_b2, depth, q0)
    factors = np.array([chi(activation, sigma_w2, qk) for qk in q[1:]])
    squared = np.append(np.cumprod(factors[::-1])[::-1], 1.0)
    return np.sqrt(squared)


def rnn_vanishing_radius(activation: str) -> float:
    """``1 / sup|phi'|``: 1 for tanh, 4 for sigmoid. If the *largest singular value* ``||W_hh||_2``
    is below it, gradients through time are guaranteed to vanish exponentially, at least as
    ``(sup|phi'| ||W_hh||_2)^k`` over ``k`` steps (Pascanu, Mikolov & Bengio 2013). The spectral
    radius (largest |eigenvalue|) is never larger than ``||W_hh||_2`` and can be much smaller for a
    non-normal matrix, so a spectral radius below this value guarantees nothing by itself; for a
    scaled orthogonal ``W_hh`` (``build_rnn``'s default) the two are equal."""
    return 1.0 / get_activation(activation).derivative_bound


def saturation_threshold(activation: str) -> float:
    """The ``t > 0`` beyond which a saturating unit counts as saturated: where
    ``phi'(t) = SATURATION_THRESHOLD * sup phi'`` (``phi'`` falls monotonically for ``z > 0``)."""
    from .probes import SATURATION_THRESHOLD

    act = get_activation(activation)
    if not act.saturating:
        saturating = [name for name in ACTIVATIONS if get_activation(name).saturating]
        raise ValueError(f"{activation!r} does not saturate; saturating activations: {saturating}")
    _, slope = _phi(activation)
    target = SATURATION_THRESHOLD * act.derivative_bound
    low, high = 0.0, 100.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if slope(np.array([middle]))[0] > target else (low, middle)
    return 0.5 * (low + high)


def saturated_fraction(activation: str, q: float | np.ndarray) -> np.ndarray:
    """Expected fraction of saturated units when pre-activations are ``N(0, q)``:
    ``P(|z| > t) = erfc(t / sqrt(2 q))`` with ``t = saturation_threshold(activation)``."""
    t = saturation_threshold(activation)
    q = np.asarray(q, dtype=np.float64)
    if np.any(q < 0):
        raise ValueError("variances must be >= 0")
    with np.errstate(divide="ignore"):
        return np.vectorize(lambda v: math.erfc(t / math.sqrt(2.0 * v)) if v > 0 else 0.0)(q)
