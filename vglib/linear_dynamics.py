"""Gradient descent in deep linear networks, mode by mode (Saxe, McClelland & Ganguli 2014).

A deep linear network ``W_tot = W_N ... W_1`` learns a linear teacher ``T = U diag(s) V^T`` from
whitened inputs, so its loss is ``0.5 ||T - W_tot||_F^2`` (full-batch gradient descent on any exactly
whitened data set takes these same steps). Everything runs in float64 NumPy: the runs are small and
deterministic. The analytic curves to set beside them are ``vglib.saxe_mode_strength`` and
``vglib.saxe_learning_time``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_choice, check_positive_int

__all__ = ["LINEAR_INITS", "LinearLearning", "saxe_loss_time", "train_deep_linear"]

LINEAR_INITS: tuple[str, ...] = ("decoupled", "orthogonal", "gaussian")
"""Initialisations of ``train_deep_linear``: ``decoupled`` puts every layer on the teacher's modes
with strength ``scale`` each (Saxe et al.'s special solutions: each mode starts at ``scale**depth``);
``orthogonal`` is ``scale`` times a random orthogonal matrix per layer; ``gaussian`` has entries
``N(0, scale**2 / width)`` per layer."""


@dataclass(frozen=True)
class LinearLearning:
    """One gradient-descent run of a deep linear network on a linear teacher.

    ``times`` are in units of the time constant ``tau = 1 / lr`` (step times learning rate), so runs
    at different learning rates share one axis with the gradient-flow theory. ``mode_strengths[k, a]``
    is ``u_a^T W_tot v_a`` at ``times[k]`` for the teacher's singular vectors ``u_a, v_a``; ``loss``
    is ``0.5 ||T - W_tot||_F^2``.
    """

    times: np.ndarray
    mode_strengths: np.ndarray
    loss: np.ndarray
    singular_values: np.ndarray
    depth: int

    def learning_times(self, fraction: float = 0.5) -> np.ndarray:
        """For each mode, the first time its strength reaches ``fraction`` of its target ``s_a``
        (linearly interpolated between recorded times); NaN for a mode that never gets there."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
        out = np.full(len(self.singular_values), np.nan)
        for a, s in enumerate(self.singular_values):
            u = self.mode_strengths[:, a]
            above = np.flatnonzero(u >= fraction * s)
            if len(above) == 0:
                continue
            k = above[0]
            if k == 0:
                out[a] = self.times[0]
                continue
            u0, u1 = u[k - 1], u[k]
            out[a] = self.times[k - 1] + (fraction * s - u0) / (u1 - u0) * (self.times[k] - self.times[k - 1])
        return out

    def time_to_loss(self, fraction: float) -> float:
        """The first recorded time the loss falls below ``fraction`` of its initial value (NaN if never)."""
        below = np.flatnonzero(self.loss <= fraction * self.loss[0])
        return float(self.times[below[0]]) if len(below) else float("nan")

    def time_below(self, level: float) -> float:
        """The first time the loss reaches ``level`` (linearly interpolated between recorded times;
        the first recorded time if it starts there, NaN if never)."""
        if not level > 0:
            raise ValueError(f"level must be > 0, got {level!r}")
        below = np.flatnonzero(self.loss <= level)
        if len(below) == 0:
            return float("nan")
        k = below[0]
        if k == 0:
            return float(self.times[0])
        l0, l1 = self.loss[k - 1], self.loss[k]
        return float(self.times[k - 1] + (l0 - level) / (l0 - l1) * (self.times[k] - self.times[k - 1]))


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def train_deep_linear(
    singular_values: np.ndarray | list[float] | tuple[float, ...],
    depth: int,
    width: int,
    *,
    init: str = "decoupled",
    scale: float = 0.1,
    lr: float = 0.01,
    steps: int = 1000,
    record_every: int = 1,
    stop_fraction: float | None = None,
    stop_loss: float | None = None,
    seed: int = 0,
) -> LinearLearning:
    """Train ``W_N ... W_1`` (``depth`` = N square ``width x width`` matrices) by gradient descent on
    ``0.5 ||T - W_tot||_F^2``, the loss of whitened inputs and a teacher ``T = U diag(s) V^T``.

    Parameters
    ----------
    singular_values
        The teacher's singular values ``s_a > 0``, at most ``width`` of them; its singular vectors
        ``U``, ``V`` are random orthonormal columns drawn from ``seed``.
    depth
        The number N of weight matrices (1 is linear regression, 2 Saxe's three-layer network).
    width
        Input, hidden and output size.
    init, scale
        One of ``LINEAR_INITS`` and its scale (see there).
    lr, steps, record_every
        Learning rate, number of steps, and the recording interval (step 0 is always recorded).
    stop_fraction
        If given, stop at the first recorded step where every mode has reached this fraction of
        its singular value (saves time when only learning times are wanted).
    stop_loss
        If given, stop at the first recorded step where the loss is at or below this level
        (for ``LinearLearning.time_below``). With both stop criteria, the run stops when either
        is met.
    seed
        Seeds the teacher's singular vectors and the random initialisations.

    Returns
    -------
    LinearLearning
        Times ``step * lr``, each mode's strength ``u_a^T W_tot v_a`` and the loss.
    """
    depth = check_positive_int("depth", depth)
    width = check_positive_int("width", width)
    steps = check_positive_int("steps", steps)
    record_every = check_positive_int("record_every", record_every)
    check_choice("init", init, LINEAR_INITS)
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or not 1 <= len(s) <= width or not np.all(s > 0):
        raise ValueError(
            f"singular_values must be 1 to width={width} positive numbers, got {singular_values!r}"
        )
    if stop_fraction is not None and not 0.0 < stop_fraction < 1.0:
        raise ValueError(f"stop_fraction must lie in (0, 1) or be None, got {stop_fraction!r}")
    if stop_loss is not None and not stop_loss > 0:
        raise ValueError(f"stop_loss must be > 0 or None, got {stop_loss!r}")
    if not scale > 0 or not lr > 0:
        raise ValueError(f"scale and lr must be > 0, got {scale!r}, {lr!r}")

    rng = np.random.default_rng(seed)
    u_full, v_full = _orthogonal(width, rng), _orthogonal(width, rng)
    k = len(s)
    teacher = (u_full[:, :k] * s) @ v_full[:, :k].T
    if init == "decoupled":
        rotations = [v_full] + [_orthogonal(width, rng) for _ in range(depth - 1)] + [u_full]
        weights = [scale * rotations[i + 1] @ rotations[i].T for i in range(depth)]
    elif init == "orthogonal":
        weights = [scale * _orthogonal(width, rng) for _ in range(depth)]
    else:
        weights = [rng.standard_normal((width, width)) * (scale / np.sqrt(width)) for _ in range(depth)]

    times, strengths, losses = [], [], []
    eye = np.eye(width)
    for step in range(steps + 1):
        prefix = [eye]  # prefix[l] = W_l ... W_1
        for w in weights:
            prefix.append(w @ prefix[-1])
        error = prefix[-1] - teacher
        if step % record_every == 0 or step == steps:
            times.append(step * lr)
            strengths.append(np.einsum("ia,ij,ja->a", u_full[:, :k], prefix[-1], v_full[:, :k]))
            losses.append(0.5 * float(np.sum(error**2)))
            if stop_fraction is not None and np.all(strengths[-1] >= stop_fraction * s):
                break
            if stop_loss is not None and losses[-1] <= stop_loss:
                break
        if step == steps:
            break
        back = error  # d loss / d (W_N ... W_{l+1} W_l ... ) seen from above layer l
        grads = [None] * depth
        for layer in range(depth - 1, -1, -1):
            grads[layer] = back @ prefix[layer].T
            back = weights[layer].T @ back
        weights = [w - lr * g for w, g in zip(weights, grads, strict=True)]
    return LinearLearning(
        times=np.array(times),
        mode_strengths=np.array(strengths),
        loss=np.array(losses),
        singular_values=s,
        depth=depth,
    )


def saxe_loss_time(
    singular_values: np.ndarray | list[float] | tuple[float, ...],
    u0: float,
    level: float,
    depth: int = 2,
    tau: float = 1.0,
) -> float:
    """Gradient-flow time for the loss ``0.5 sum_a (s_a - u_a(t))^2`` of a deep linear network on
    Saxe et al.'s decoupled solutions, every mode started at ``u0``, to fall to ``level``. Each mode
    follows ``tau du/dt = depth u^(2 - 2/depth) (s_a - u)`` (``vglib.saxe_mode_strength``).

    Parameters
    ----------
    singular_values
        The teacher's singular values ``s_a``, each ``> u0`` (one per unit of width: then the loss
        is the whole task, with no directions to unlearn).
    u0
        Every mode's initial strength ``a**depth`` (``> 0``).
    level
        The loss to reach, between 0 and the initial loss ``0.5 sum_a (s_a - u0)^2``.
    depth, tau
        The number of weight matrices and the time constant ``1 / learning rate``.

    Returns
    -------
    float
        The time, in units of ``tau``.
    """
    try:
        from scipy.integrate import solve_ivp
    except ImportError as error:
        raise ImportError('saxe_loss_time needs SciPy: pip install "vglib[scipy]"') from error

    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0 or not u0 > 0 or not np.all(s > u0):
        raise ValueError(f"need singular values all > u0 > 0; got {singular_values!r}, u0={u0!r}")
    depth = check_positive_int("depth", depth)
    start = 0.5 * float(np.sum((s - u0) ** 2))
    if not 0.0 < level < start or not tau > 0:
        raise ValueError(f"need 0 < level < initial loss {start!r} and tau > 0; got {level!r}, {tau!r}")

    def reached(_: float, u: np.ndarray) -> float:
        return 0.5 * float(np.sum((s - u) ** 2)) - level

    reached.terminal = True  # type: ignore[attr-defined]
    horizon = tau
    while True:
        flow = solve_ivp(
            lambda _, u: depth * np.abs(u) ** (2.0 - 2.0 / depth) * (s - u) / tau,
            (0.0, horizon),
            np.full(len(s), float(u0)),
            method="DOP853",
            events=reached,
            rtol=1e-11,
            atol=1e-14 * float(s.max()),
        )
        if len(flow.t_events[0]):
            return float(flow.t_events[0][0])
        horizon *= 4.0
