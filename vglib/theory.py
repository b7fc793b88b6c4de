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
    "chi_c",
    "chi_normalised",
    "correlation_depth_scale",
    "correlation_fixed_point",
    "correlation_map",
    "correlation_propagation",
    "critical_sigma_w2",
    "fixed_point",
    "fuss_catalan_edge",
    "gaussian_expectation",
    "gaussian_moments",
    "gradient_depth_scale",
    "lyapunov_exponents",
    "predicted_gradient_norms",
    "relu_gradient_factor",
    "rnn_vanishing_radius",
    "saturated_fraction",
    "saturation_threshold",
    "saxe_learning_time",
    "saxe_mode_strength",
    "variance_propagation",
    "weight_gains",
]


def _hidden_linears(model: nn.Sequential, caller: str = "chain_rule_bound") -> list[nn.Linear]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"{caller} takes a build_mlp model (nn.Sequential), got {type(model).__name__}")
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
    _hidden_linears(model)  # a build_mlp model, or an error that names chain_rule_bound
    factors = list(bound * weight_gains(model)[0][1:])
    # entry l: product of the factors of the layers after l
    tail_products = np.cumprod(np.array(factors[::-1] or [1.0]))[::-1]
    return np.append(tail_products[: len(factors)], 1.0)


@torch.no_grad()
def weight_gains(model: nn.Sequential) -> tuple[np.ndarray, np.ndarray]:
    """Two gains of each hidden block's weight matrix ``W_l`` of a ``build_mlp`` model, input side
    first: the largest, ``||W_l||_2`` (what ``chain_rule_bound`` must assume), and the typical
    one, ``||W_l||_F / sqrt(fan_out)``, the root mean square of ``||W_l^T g|| / ||g||`` over
    random directions ``g`` (the backward pass multiplies by ``W_l^T``). For a square ``n x n``
    matrix with entry variance ``1/n`` the first is close to 2 and the second to 1.
    """
    linears = _hidden_linears(model, "weight_gains")
    largest = np.array([float(torch.linalg.matrix_norm(m.weight.double(), ord=2)) for m in linears])
    typical = np.array(
        [float(torch.linalg.matrix_norm(m.weight.double())) / math.sqrt(m.weight.shape[0]) for m in linears]
    )
    return largest, typical


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
    negative in the chaotic phase, where ``|xi|`` is the number of layers over which it grows by ``e``.
    The norm itself (the square root) changes by ``e`` over ``2 |xi|`` layers. Infinite means no
    *exponential* change: at tanh's critical point with ``sigma_b2 = 0`` the gradient still decays,
    like a power of the depth (``q_l ~ 1/(2l)``)."""
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
    radius (largest ``|eigenvalue|``) is never larger than ``||W_hh||_2`` and can be much smaller for a
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


# --- the correlation map and the order-to-chaos phase diagram (Poole et al. 2016; Schoenholz et al. 2017)

_PAIR_HALF_POINTS = 80  # per half-line and per axis: a 160 x 160 product rule


@functools.lru_cache(maxsize=1)
def _pair_rule() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes ``(z1, z2)`` and weights of a product rule for ``E[f(z1, z2)]``, ``z1, z2 ~ N(0, 1)``
    independent: the half-line Gauss-Legendre rule of ``gaussian_expectation`` on each axis."""
    x, w = np.polynomial.legendre.leggauss(_PAIR_HALF_POINTS)
    half = 0.5 * _CUTOFF * (x + 1.0)
    half_weights = 0.5 * _CUTOFF * w * np.exp(-0.5 * half * half) / math.sqrt(2.0 * math.pi)
    nodes = np.concatenate([-half[::-1], half])
    weights = np.concatenate([half_weights[::-1], half_weights])
    z1, z2 = np.meshgrid(nodes, nodes, indexing="ij")
    return z1.ravel(), z2.ravel(), np.outer(weights, weights).ravel()


def _check_correlation(c: float) -> float:
    if not (isinstance(c, int | float | np.floating) and -1.0 <= c <= 1.0):
        raise ValueError(f"a correlation must be a number in [-1, 1], got {c!r}")
    return float(c)


def _pair_expectation(f: Callable[[np.ndarray], np.ndarray], q: float, c: float) -> float:
    """``E[f(u1) f(u2)]`` for ``u1, u2 ~ N(0, q)`` with correlation ``c``:
    ``u1 = sqrt(q) z1``, ``u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2)``."""
    z1, z2, w = _pair_rule()
    root = math.sqrt(q)
    u1 = root * z1
    u2 = root * (c * z1 + math.sqrt(max(0.0, 1.0 - c * c)) * z2)
    return float(np.sum(w * f(u1) * f(u2)))


@functools.lru_cache(maxsize=256)
def _finite_fixed_point(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    _check_variances(sigma_w2, sigma_b2)
    q = fixed_point(activation, sigma_w2, sigma_b2)
    if not (math.isfinite(q) and 1e-12 < q < 1e100):
        raise ValueError(
            f"{activation} at sigma_w2={sigma_w2}, sigma_b2={sigma_b2} has q* = {q}: the correlation map "
            "needs a finite, non-zero fixed point (take sigma_b2 > 0, or sigma_w2 above the critical value)"
        )
    return q


def _map_at(activation: str, sigma_w2: float, sigma_b2: float, q: float, c: float) -> float:
    value, _ = _phi(activation)
    return (sigma_w2 * _pair_expectation(value, q, c) + sigma_b2) / q


def correlation_map(activation: str, sigma_w2: float, sigma_b2: float, c: float) -> float:
    """One layer of the correlation map at the variance's fixed point ``q*``:
    ``c_{l+1} = [sigma_w2 E[phi(u1) phi(u2)] + sigma_b2] / q*``, ``u1, u2 ~ N(0, q*)`` with
    correlation ``c_l`` (Poole et al. 2016, eq. 5). ``c_l`` is the correlation of the
    pre-activations two inputs produce in layer ``l`` of a wide network. Raises ``ValueError`` where
    ``q*`` is 0 or infinite (then the map is undefined)."""
    c = _check_correlation(c)
    q = _finite_fixed_point(activation, float(sigma_w2), float(sigma_b2))
    return _map_at(activation, sigma_w2, sigma_b2, q, c)


def correlation_propagation(
    activation: str, sigma_w2: float, sigma_b2: float, c0: float, depth: int = 30, q0: float = 1.0
) -> np.ndarray:
    """Correlations ``c_1 .. c_depth`` of the pre-activations of two inputs with correlation ``c0``
    (and equal squared norm ``q0`` per coordinate), along the propagated variances ``q_l`` rather than
    at ``q*``: ``q12_1 = sigma_w2 c0 q0 + sigma_b2``, ``q12_{l+1} = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2``
    with ``(u1, u2)`` of variance ``q_l`` and covariance ``q12_l``; ``c_l = q12_l / q_l``. This is what a
    wide network with ``build_gaussian_mlp``'s weights shows from its first layer on."""
    c0 = _check_correlation(c0)
    _check_variances(sigma_w2, sigma_b2)
    check_positive_int("depth", depth)
    if not q0 > 0:
        raise ValueError(f"q0 must be > 0, got {q0!r}")
    value, _ = _phi(activation)
    q = variance_propagation(activation, sigma_w2, sigma_b2, depth, q0)
    c = [(sigma_w2 * c0 * q0 + sigma_b2) / q[0]]
    for layer in range(depth - 1):
        c.append((sigma_w2 * _pair_expectation(value, q[layer], c[-1]) + sigma_b2) / q[layer + 1])
    return np.clip(np.array(c), -1.0, 1.0)


def correlation_fixed_point(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    """``c*``, the correlation every pair of inputs converges to with depth: 1 in the ordered phase
    (``chi_1 <= 1``: all inputs end up alike), below 1 in the chaotic phase (``chi_1 > 1``: nearby
    inputs are pushed apart), 0 for an odd activation with ``sigma_b2 = 0``. Found by bisection on
    ``[0, 1)``: the map is increasing and convex there, with ``c = 1`` a fixed point of slope ``chi_1``."""
    q = _finite_fixed_point(activation, float(sigma_w2), float(sigma_b2))
    if chi(activation, sigma_w2, q) <= 1.0:
        return 1.0

    def excess(c: float) -> float:
        return _map_at(activation, sigma_w2, sigma_b2, q, c) - c

    high = None
    for gap in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        if excess(1.0 - gap) < 0:
            high = 1.0 - gap
            break
    if high is None:  # so close to criticality that c* is within 1e-6 of 1
        return 1.0
    low = 0.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if excess(middle) > 0 else (low, middle)
    return 0.5 * (low + high)


def chi_c(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    """``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]`` at ``q*`` and ``c*``: the slope of the correlation
    map at its fixed point (Schoenholz et al. 2017). Equals ``chi_1`` in the ordered phase
    (``c* = 1``); below 1 on both sides of the critical line, 1 on it."""
    q = _finite_fixed_point(activation, float(sigma_w2), float(sigma_b2))
    c = correlation_fixed_point(activation, sigma_w2, sigma_b2)
    _, slope = _phi(activation)
    return sigma_w2 * _pair_expectation(slope, q, c)


def correlation_depth_scale(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    """``xi_c = -1 / ln(chi_c)``: the number of layers over which ``|c_l - c*|`` shrinks by a factor
    ``e``, i.e. over which a network forgets how similar two inputs were (Schoenholz et al. 2017).
    Positive on both sides of the critical line and infinite on it; Schoenholz et al. found networks
    trainable up to a depth of about ``6 xi_c`` (their Fig. 6)."""
    c = chi_c(activation, sigma_w2, sigma_b2)
    return math.inf if c >= 1.0 - 1e-12 else -1.0 / math.log(c)


def critical_sigma_w2(activation: str, sigma_b2: float = 0.0, high: float = 100.0) -> float:
    """The weight variance on the critical line ``chi_1(sigma_w2, sigma_b2) = 1``, by bisection on
    ``(0, high]``: 1 for tanh at ``sigma_b2 = 0`` and rising with ``sigma_b2`` (a bias raises ``q*``,
    which lowers ``E[phi'^2]``); 2 for ReLU (whose ``chi_1 = sigma_w2 / 2`` does not depend on ``q*``).
    Assumes ``chi_1`` crosses 1 once; raises ``ValueError`` if it stays on one side of 1 up to ``high``."""
    if not sigma_b2 >= 0:
        raise ValueError(f"sigma_b2 must be >= 0, got {sigma_b2!r}")
    get_activation(activation)  # ValueError naming the choices
    if chi_1(activation, high, sigma_b2) < 1.0:
        raise ValueError(f"chi_1 of {activation} stays below 1 for sigma_w2 <= {high}")
    low = 1e-3
    if chi_1(activation, low, sigma_b2) > 1.0:
        raise ValueError(f"chi_1 of {activation} is above 1 already at sigma_w2 = {low}")
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if chi_1(activation, middle, sigma_b2) < 1.0 else (low, middle)
    return 0.5 * (low + high)


def lyapunov_exponents(n: int, variance: float = 1.0) -> np.ndarray:
    """Lyapunov exponents of a product of ``n x n`` Gaussian matrices with entries ``N(0, variance / n)``,
    largest first: ``lambda_i = (psi((n - i + 1) / 2) + ln(2 variance / n)) / 2`` (Newman 1986), so
    the ``i``-th singular value of an ``L``-fold product grows like ``exp(lambda_i L)`` for ``L >> n``."""
    try:
        from scipy.special import digamma
    except ImportError as error:
        raise ImportError('lyapunov_exponents needs SciPy: pip install "vglib[scipy]"') from error

    n = check_positive_int("n", n)
    if not variance > 0:
        raise ValueError(f"variance must be > 0, got {variance!r}")
    i = np.arange(1, n + 1)
    return 0.5 * (digamma((n - i + 1) / 2.0) + math.log(2.0 * variance / n))


def fuss_catalan_edge(depth: int) -> float:
    """The largest singular value of a product of ``depth`` Gaussian ``n x n`` matrices with entries
    ``N(0, 1/n)`` as ``n -> infinity``: ``s_max^2 = (L + 1)^(L + 1) / L^L`` (the edge of the
    Fuss-Catalan law; Pennington et al. 2018), about ``e (L + 1)`` for large ``L``."""
    depth = check_positive_int("depth", depth)
    return math.sqrt((depth + 1) * (1.0 + 1.0 / depth) ** depth)


def _check_saxe(s: float, u0: float, depth: int, tau: float) -> int:
    depth = check_positive_int("depth", depth)
    if not (s > 0 and tau > 0 and 0 < u0 < s):
        raise ValueError(f"need s > 0, tau > 0 and 0 < u0 < s; got s={s!r}, u0={u0!r}, tau={tau!r}")
    return depth


def saxe_learning_time(s: float, u0: float, uf: float, depth: int = 2, tau: float = 1.0) -> float:
    """Gradient-flow time for a mode of strength ``s`` to grow from ``u0`` to ``uf`` in a deep linear
    network of ``depth`` weight matrices started on Saxe et al.'s decoupled, balanced solutions
    (each layer ``u**(1/depth)`` on the mode): ``tau du/dt = depth u^(2 - 2/depth) (s - u)``. For
    ``depth = 2`` this is ``tau/(2s) ln[uf (s - u0) / (u0 (s - uf))]`` (Saxe et al. 2014)."""
    depth = _check_saxe(s, u0, depth, tau)
    if not u0 < uf < s:
        raise ValueError(f"need u0 < uf < s; got u0={u0!r}, uf={uf!r}, s={s!r}")
    if depth == 1:
        return tau * math.log((s - u0) / (s - uf))
    if depth == 2:
        return tau / (2.0 * s) * math.log(uf * (s - u0) / (u0 * (s - uf)))
    try:
        from scipy.integrate import quad
    except ImportError as error:
        raise ImportError('saxe_learning_time at depth 3+ needs SciPy: pip install "vglib[scipy]"') from error

    # substitute u = exp(x): du / (u^(2-2/N) (s-u)) = exp(x (2/N - 1)) / (s - exp(x)) dx
    value, _ = quad(
        lambda x: math.exp(x * (2.0 / depth - 1.0)) / (s - math.exp(x)),
        math.log(u0),
        math.log(uf),
        epsabs=0.0,
        epsrel=1e-11,
        limit=200,
    )
    return tau * value / depth


def saxe_mode_strength(
    t: float | np.ndarray, s: float, u0: float, depth: int = 2, tau: float = 1.0
) -> np.ndarray:
    """The strength ``u(t)`` of one mode (the inverse of ``saxe_learning_time``): a sigmoidal curve
    from ``u0`` to ``s``. For ``depth = 2``, ``u(t) = s e^(2st/tau) / (e^(2st/tau) - 1 + s/u0)``
    (Saxe et al. 2014); for ``depth = 1`` the exponential ``s - (s - u0) e^(-t/tau)``."""
    depth = _check_saxe(s, u0, depth, tau)
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("times must be >= 0")
    if depth == 1:
        return s - (s - u0) * np.exp(-t / tau)
    if depth == 2:
        e = np.exp(np.minimum(2.0 * s * t / tau, 700.0))
        return s * e / (e - 1.0 + s / u0)
    try:
        from scipy.integrate import solve_ivp
    except ImportError as error:
        raise ImportError('saxe_mode_strength at depth 3+ needs SciPy: pip install "vglib[scipy]"') from error

    order = np.argsort(t.ravel())
    flow = solve_ivp(
        lambda _, u: depth * np.abs(u) ** (2.0 - 2.0 / depth) * (s - u) / tau,
        (0.0, float(t.max()) if t.size else 0.0),
        [u0],
        method="DOP853",
        t_eval=t.ravel()[order],
        rtol=1e-11,
        atol=1e-14 * s,
    )
    out = np.empty(t.size)
    out[order] = flow.y[0]
    return out.reshape(t.shape)
