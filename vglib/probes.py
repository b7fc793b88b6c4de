"""Measuring gradients with hooks, on any ``nn.Module``.

What counts as a layer for ``gradient_profile`` and ``forward_statistics``: every ``nn.Linear``,
``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (subclasses and parametrised ones included) the
forward pass calls, in the order it calls them; other modules with parameters (embeddings,
normalisation, attention's input projection, recurrent modules, transposed convolutions) are
not layers here (``gradient_flow`` and ``diagnose`` measure every module with parameters). The
last one called is the output *head*; the others are the *hidden* layers the profile reports. The
activation gradient of hidden layer ``l`` is the gradient of the loss with respect to the input
of the next layer called: the block's output after its activation (and after any normalisation,
pooling or dropout in between).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._batch import Inputs, LossFn, check_inputs, default_loss, forward_located, scalar_loss, scored, usable
from ._state import buffers_kept
from ._tensors import to_numpy
from ._validation import check_positive_int
from .activations import get_activation
from .initialization import hidden_weight_layers, weight_layers

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SATURATION_THRESHOLD",
    "CovariateShift",
    "ForwardStatistics",
    "GradientProfile",
    "StreamProfile",
    "block_outputs",
    "bptt_gradient_norms",
    "fitted_growth",
    "forward_statistics",
    "gradient_profile",
    "input_gradient_by_lag",
    "jacobian_singular_values",
    "recurrent_gates",
    "saved_for_backward_megabytes",
    "spectral_spread",
    "stream_profile",
]

SATURATION_THRESHOLD = 0.1
"""A unit counts as saturated where ``phi'(z)`` is below this fraction of its maximum."""


@dataclass(frozen=True)
class GradientProfile:
    """Per-layer gradient norms from one forward and backward pass.

    Arrays run over the hidden layers, input side first. Norms are Frobenius norms over the whole
    batch, computed in float64 from the float32 gradients, so an entry is exactly 0.0 only where
    the gradient itself underflowed (or the layer does not affect the loss), and inf where it
    overflowed to inf or NaN. A layer whose weight is frozen (``requires_grad=False``) reports NaN:
    there is no gradient to measure.
    """

    layer_names: tuple[str, ...]
    weight_grad_norms: np.ndarray
    activation_grad_norms: np.ndarray
    head_name: str
    head_weight_grad_norm: float
    loss: float

    @property
    def depth(self) -> int:
        """Number of hidden layers measured."""
        return len(self.layer_names)

    def per_layer_factor(self) -> float:
        """Geometric-mean factor by which ``||dL/dh_l||`` changes per layer, from the last hidden
        block back to the first: below 1 the gradient vanishes towards the input, above 1 it
        explodes. NaN for a single hidden layer."""
        first, last = self.activation_grad_norms[0], self.activation_grad_norms[-1]
        if self.depth < 2 or last == 0.0 or not np.isfinite(first / last):
            return float("nan")
        return float((first / last) ** (1.0 / (self.depth - 1)))

    def fitted_factor(self, *, skip_underflow: bool = False) -> float:
        """``per_layer_factor``'s quantity (the factor by which ``||dL/dh_l||`` changes per layer
        from the last hidden block back to the first) fitted by least squares to the logarithm of
        every layer's norm, not read from the two ends: ``1 / fitted_growth(activation_grad_norms)``.
        Less sensitive to one noisy end layer. NaN for a single hidden layer, or when a norm is 0 or
        not finite (no logarithm to fit).

        With ``skip_underflow=True``, a gradient that vanished so far that the input-side layers
        underflowed to exactly 0 is fitted over the layers after the last zero, where it can still be
        measured (NaN if fewer than two are left, or if a norm there is not finite).
        """
        norms = self.activation_grad_norms
        if skip_underflow:
            zeros = np.flatnonzero(norms == 0.0)
            norms = norms[zeros[-1] + 1 :] if zeros.size else norms
        if norms.size < 2 or not np.all(np.isfinite(norms) & (norms > 0)):
            return float("nan")
        return 1.0 / fitted_growth(norms)

    def first_to_last_ratio(self) -> float:
        """``||dL/dW_first|| / ||dL/dW_last||``, *weight* gradients (biases excluded) of the first and
        last hidden layers. Far below 1 means vanishing, but a ratio near 1 does not mean healthy:
        ``dL/dW_l`` is the backpropagated gradient times the layer's input, so a forward signal
        that shrinks layer by layer as the backward one grows makes every layer's weight gradient
        equally small (Glorot & Bengio 2010, section 4.2). ``per_layer_factor`` (from ``||dL/dh_l||``)
        and ``diagnose`` do not have this blind spot."""
        first, last = self.weight_grad_norms[0], self.weight_grad_norms[-1]
        if last == 0.0:
            return float("nan") if first == 0.0 else float("inf")
        return float(first / last)

    def to_dataframe(self) -> pd.DataFrame:
        """The profile as a ``pandas.DataFrame``, one row per layer: the hidden layers input side
        first (``role`` ``"hidden"``), then the head (``role`` ``"head"``, whose
        ``activation_grad_norm`` is NaN: it is not measured), with columns ``layer``, ``position``
        (0 for the first hidden layer), ``role``, ``weight_grad_norm`` and
        ``activation_grad_norm``; the loss is in ``df.attrs["loss"]``. Needs pandas
        (``pip install "vglib[pandas]"``)."""
        from .tables import require_pandas

        pd = require_pandas()
        frame = pd.DataFrame(
            {
                "layer": [*self.layer_names, self.head_name],
                "position": np.arange(self.depth + 1, dtype=np.int64),
                "role": ["hidden"] * self.depth + ["head"],
                "weight_grad_norm": np.append(
                    np.asarray(self.weight_grad_norms, dtype=np.float64), self.head_weight_grad_norm
                ),
                "activation_grad_norm": np.append(
                    np.asarray(self.activation_grad_norms, dtype=np.float64), np.nan
                ),
            }
        )
        frame.attrs["loss"] = self.loss
        return frame


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}; "
            f"convert with torch.as_tensor({name}, dtype=torch.float32)"
        )
    if value.ndim == 0 or value.shape[0] == 0:
        raise ValueError(f"{name} must hold a non-empty batch, got shape {tuple(value.shape)}")
    return value


def _norm(grad: torch.Tensor | None) -> float:
    """``||grad||`` in float64 (squaring float32 values near their underflow limit would underflow
    again); 0.0 for no gradient at all, inf for one that holds inf or NaN."""
    if grad is None:
        return 0.0
    value = float(torch.linalg.vector_norm(grad.detach().double()))
    return value if np.isfinite(value) else float("inf")


def _measured_layers(model: nn.Module, caller: str) -> dict[str, nn.Module]:
    """The Linear/Conv layers of ``model`` by name, or an error saying what counts as a layer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = dict(weight_layers(model))
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no layers to measure; {caller} counts "
            "nn.Linear, nn.Conv1d, nn.Conv2d and nn.Conv3d as layers"
        )
    return layers


@torch.inference_mode(False)  # the pass needs autograd even when called under inference_mode
def gradient_profile(
    model: nn.Module,
    x: Inputs,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    clip_norm: float | None = None,
    clip_value: float | None = None,
) -> GradientProfile:
    """Per-layer weight- and activation-gradient norms of ``model`` on one batch, at its current weights.

    One forward and one backward pass; the model is left as it was: its weights, its ``.grad``
    attributes, its buffers (e.g. batch-norm running statistics) and its train/eval mode.
    ``x`` is a tensor, a tuple/list (``model(*x)``) or a dict (``model(**x)``); a tuple output is
    scored by its first element and a dict by ``"logits"`` (or pass ``loss_fn``).
    ``loss_fn(output, y)`` defaults to MSE for float ``y`` and cross-entropy for integer ``y``.
    Parametrised layers (``weight_norm``, ``spectral_norm``, ``orthogonal``) report the gradient
    of the weight the forward pass used.

    ``clip_norm`` and ``clip_value`` report the weight gradients as an optimiser would see them
    after ``vglib.train`` clipped them (``torch.nn.utils.clip_grad_norm_`` over every trainable
    parameter, then ``clip_grad_value_``). Clipping acts on parameter gradients only: the
    activation gradients ``||dL/dh_l||`` are those of the backward pass, unclipped.
    """
    layers = _measured_layers(model, "gradient_profile")
    check_inputs(x, y)
    for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise ValueError(f"{name} must be a number > 0 or None, got {value!r}")
    x, y = usable(x), usable(y)
    names_of = {id(m): n for n, m in layers.items()}
    calls: list[tuple[str, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        calls.append((names_of[id(module)], inputs[0]))

    handles = [m.register_forward_pre_hook(record) for m in layers.values()]
    try:
        with buffers_kept(model), torch.enable_grad(), parametrize.cached():
            output = forward_located(model, x, layers)
            loss = scalar_loss((loss_fn or default_loss)(scored(output, loss_fn), y))
            called = [name for name, _ in calls]
            repeated = sorted({n for n in called if called.count(n) > 1})
            if repeated:
                raise ValueError(
                    f"layers {repeated} were called more than once in one forward pass; "
                    "gradient_profile needs each layer called once (weight sharing and "
                    "recurrent loops have no single per-layer gradient: use gradient_flow, which "
                    "reports each call)"
                )
            if len(calls) < 2:
                raise ValueError(
                    "gradient_profile needs at least two layers (hidden layers and a head); "
                    f"the forward pass called {len(calls)}"
                )
            weights = [layers[name].weight for name in called]  # inside cached(): the weights used
            block_outputs = [inp for _, inp in calls[1:]]
            targets = [t for t in (*weights, *block_outputs) if t.requires_grad]
            # the norm clip scales by the norm of every trainable parameter's gradient
            others = [p for p in model.parameters() if p.requires_grad] if clip_norm is not None else []
            grads = torch.autograd.grad(loss, targets + others, allow_unused=True) if targets else ()
    finally:
        for handle in handles:
            handle.remove()
    grad_of = {id(t): g for t, g in zip(targets, grads[: len(targets)], strict=True)}
    scale = _norm_clip_coefficient(grads[len(targets) :], clip_norm)
    for w in weights:  # as vglib.train clips before the step: the norm, then the values
        g = grad_of.get(id(w))
        if g is not None and scale is not None:
            g = g * scale
        if g is not None and clip_value is not None:
            g = g.clamp(-clip_value, clip_value)
        if id(w) in grad_of:
            grad_of[id(w)] = g

    def norm_of(t: torch.Tensor) -> float:
        return _norm(grad_of[id(t)]) if t.requires_grad else float("nan")

    weight_norms = np.array([norm_of(w) for w in weights], dtype=np.float64)
    return GradientProfile(
        layer_names=tuple(called[:-1]),
        weight_grad_norms=weight_norms[:-1],
        activation_grad_norms=np.array([norm_of(t) for t in block_outputs], dtype=np.float64),
        head_name=called[-1],
        head_weight_grad_norm=float(weight_norms[-1]),
        loss=float(loss.detach()),
    )


def _norm_clip_coefficient(
    parameter_grads: Sequence[torch.Tensor | None], clip_norm: float | None
) -> float | None:
    """The factor ``torch.nn.utils.clip_grad_norm_`` multiplies every gradient by, for the
    gradients of every trainable parameter; ``None`` without a norm clip."""
    if clip_norm is None:
        return None
    present = [g for g in parameter_grads if g is not None]
    total = float(torch.nn.utils.get_total_norm(present)) if present else 0.0
    return min(1.0, clip_norm / (total + 1e-6))


@dataclass(frozen=True)
class ForwardStatistics:
    """Per-layer statistics of one forward pass, over the hidden layers, input side first.

    ``preactivation_variance`` is the variance of each layer's output ``z_l`` over the batch and
    the units (what mean-field theory calls ``q_l``). With an ``activation`` given,
    ``activation_second_moment`` is ``E[phi(z_l)^2]``, ``saturated_fraction`` the fraction of
    (example, unit) pairs with ``phi'(z) < SATURATION_THRESHOLD * sup phi'`` and ``dead_fraction``
    the fraction of units with ``phi'(z) = 0`` for every example of the batch, and
    ``activation_mean``/``activation_variance`` the mean and variance of ``phi(z_l)`` over the
    batch and the units (what self-normalising networks keep at 0 and 1), and
    ``derivative_rms`` the root mean square of ``phi'(z_l)`` over the batch and the units (the
    activation's share of a layer's typical backward factor, to set beside ``sup |phi'|``);
    otherwise NaN.
    """

    layer_names: tuple[str, ...]
    preactivation_variance: np.ndarray
    activation_second_moment: np.ndarray
    saturated_fraction: np.ndarray
    dead_fraction: np.ndarray
    activation_mean: np.ndarray
    activation_variance: np.ndarray
    derivative_rms: np.ndarray


@torch.no_grad()
def forward_statistics(model: nn.Module, x: torch.Tensor, activation: str | None = None) -> ForwardStatistics:
    """Statistics of every hidden layer's pre-activations on one batch (see ``ForwardStatistics``).

    Layers are counted as in ``gradient_profile``: every Linear/Conv layer called, in call order,
    the last one (the head) left out. The model is left as it was.
    """
    act = get_activation(activation) if activation is not None else None
    layers = _measured_layers(model, "forward_statistics")
    x = _check_tensor("x", x)
    names_of = {id(m): n for n, m in layers.items()}
    outputs: list[tuple[str, torch.Tensor]] = []
    handles = [
        m.register_forward_hook(lambda module, _, out: outputs.append((names_of[id(module)], out)))
        for m in layers.values()
    ]
    try:
        with buffers_kept(model):
            model(x)
    except RuntimeError as error:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit the model ({error})") from error
    finally:
        for handle in handles:
            handle.remove()
    hidden = outputs[:-1]
    nan = np.full(len(hidden), np.nan)
    variance = np.array([float(z.double().var()) for _, z in hidden])
    if act is None:
        return ForwardStatistics(tuple(n for n, _ in hidden), variance, *(nan.copy() for _ in range(6)))
    second, saturated, dead, mean, var, slope_rms = [], [], [], [], [], []
    for _, z in hidden:
        z = z.double()
        slope = act.derivative(z)
        h = act(z)
        second.append(float(h.pow(2).mean()))
        mean.append(float(h.mean()))
        var.append(float(h.var()))
        slope_rms.append(float(slope.pow(2).mean().sqrt()))
        saturated.append(float((slope < SATURATION_THRESHOLD * act.derivative_bound).double().mean()))
        per_unit = slope.transpose(0, 1).reshape(slope.shape[1], -1)  # (units, examples...)
        dead.append(float((per_unit == 0).all(dim=1).double().mean()))
    return ForwardStatistics(
        tuple(n for n, _ in hidden),
        variance,
        np.array(second),
        np.array(saturated),
        np.array(dead),
        np.array(mean),
        np.array(var),
        np.array(slope_rms),
    )


class CovariateShift:
    """How much the input distribution of each hidden weight layer moves during training: the
    "internal covariate shift" of Ioffe & Szegedy (2015), measured. Passed to
    ``vglib.train(..., callback=shift)``, it looks after the first update and then every
    ``every`` updates at the input of every weight layer but the first (whose input is the data) on
    a fixed probe batch ``x``, and records each unit's mean and standard deviation there. The shift
    between two looks is, per layer, the median over units of ``|mu_t - mu_s| / sigma_s`` (the
    move of the unit's mean in units of its earlier spread; a unit that was constant over the
    batch, such as a dead ReLU, is left out), averaged over the layers: ``shifts``, at ``steps``.

    The probe runs in the model's training mode with gradients enabled, as a training step sees
    its input (so a ``NoisyBatchNorm`` injects its noise), and changes neither the weights nor the
    running statistics of batch norm."""

    def __init__(self, x: torch.Tensor, every: int = 10):
        self.x = _check_tensor("x", x)
        check_positive_int("every", every)
        self.every = every
        self.steps: list[int] = []
        self.shifts: list[float] = []
        self._last: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _stats(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers = list(_measured_layers(model, "CovariateShift").values())[1:]
        inputs: list[torch.Tensor] = []
        handles = [m.register_forward_pre_hook(lambda _, a: inputs.append(a[0].detach())) for m in layers]
        try:
            with buffers_kept(model), torch.enable_grad():
                model(self.x)
        finally:
            for handle in handles:
                handle.remove()
        return [(h.double().mean(0), h.double().std(0, unbiased=False)) for h in inputs]

    def __call__(self, step: int, model: nn.Module) -> None:
        if self._last is None:  # the first call: the first look
            self._last = self._stats(model)
            return
        if step % self.every:
            return
        now = self._stats(model)
        per_layer = [
            float(((m1 - m0).abs()[s0 > 0] / s0[s0 > 0]).median())  # units with no spread left out
            for (m0, s0), (m1, _) in zip(self._last, now, strict=True)
            if bool((s0 > 0).any())
        ]
        self.steps.append(step)
        self.shifts.append(float(np.mean(per_layer)))
        self._last = now

    @property
    def mean_shift(self) -> float:
        """The shift averaged over all the looks."""
        if not self.shifts:
            raise ValueError("CovariateShift has not recorded two looks yet: train for `every` steps or more")
        return float(np.mean(self.shifts))


def bptt_gradient_norms(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, by_lag: bool = False, relative: bool = False
) -> np.ndarray:
    """``||dL/dh_t||`` for every time step ``t = 1..T`` of a recurrent model, on one batch.

    The gradient with respect to ``h_t`` is the total one, through every later step: what
    backpropagation through time delivers to step ``t``. Entry ``T - 1`` is the last step; the
    gradient that reaches lag ``k`` before the end is entry ``T - 1 - k``. With ``by_lag=True``
    the array is read backwards instead: entry ``k`` is lag ``k``, entry 0 the last step. With
    ``relative=True`` every entry is divided by the last step's norm (``||dL/dh_T||``), so the last
    step reads 1. The model must accept ``return_states=True`` (``vglib.ElmanRNN`` does). Weights
    and ``.grad`` are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, flag in (("by_lag", by_lag), ("relative", relative)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    x, y = _check_tensor("x", x), _check_tensor("y", y)
    with torch.enable_grad():
        try:
            output, states = model(x, return_states=True)
        except TypeError as error:
            raise TypeError(
                f"{type(model).__name__} does not expose its hidden states; bptt_gradient_norms "
                "needs forward(x, return_states=True) -> (output, [h_1, ..., h_T]), as vglib.ElmanRNN"
            ) from error
        loss = default_loss(output, y)
        grads = torch.autograd.grad(loss, states, allow_unused=True)
    norms = np.array([_norm(g) for g in grads], dtype=np.float64)
    if relative:
        if not norms[-1] > 0:
            raise ValueError("relative=True needs a non-zero gradient at the last step, got 0")
        norms = norms / norms[-1]
    return norms[::-1].copy() if by_lag else norms


BLOCK_PREFIXES = ("act", "block")
"""vglib's networks name each hidden layer's activation ``act{l}`` and each skip block ``block{l}``."""


def _children_named(model: nn.Module, prefixes: Sequence[str]) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(prefixes, str) or not all(isinstance(p, str) and p for p in prefixes):
        raise TypeError(f"prefixes must be a sequence of non-empty strings, got {prefixes!r}")
    children = [(n, m) for n, m in model.named_children() if n.startswith(tuple(prefixes))]
    if not children:
        names = [n for n, _ in model.named_children()]
        raise ValueError(
            f"{type(model).__name__} has no child named {' or '.join(prefixes)}...; its children: {names}"
        )
    return children


def _collect_outputs(children: list[tuple[str, nn.Module]], outputs: list[tuple[str, torch.Tensor]]) -> list:
    def keep(name: str):
        return lambda _module, _inputs, out: outputs.append((name, out))

    return [module.register_forward_hook(keep(name)) for name, module in children]


def block_outputs(
    model: nn.Module, x: Inputs, *, prefixes: Sequence[str] = BLOCK_PREFIXES
) -> dict[str, torch.Tensor]:
    """The output of every direct child of ``model`` whose name starts with one of ``prefixes``
    (in vglib's networks: each hidden layer's activation ``act{l}``, or each skip block
    ``block{l}``: the stream), in the order they ran, from one forward pass without gradient.
    The model's weights, buffers and mode are left as they were."""
    children = _children_named(model, prefixes)
    outputs: list[tuple[str, torch.Tensor]] = []
    handles = _collect_outputs(children, outputs)
    try:
        with torch.no_grad(), buffers_kept(model):
            forward_located(model, usable(x), dict(children))
    finally:
        for handle in handles:
            handle.remove()
    return {name: out.detach() for name, out in outputs}


@dataclass(frozen=True)
class StreamProfile:
    """One forward and backward pass, measured at each block output ``h_l`` (see
    :func:`stream_profile`), input side first: the total gradient ``||dL/dh_l||`` (through every
    path: in a residual network, the identity and the branch), the mean square of ``h_l`` over the
    batch and the units, and ``||dL/dW||`` of every hidden weight layer (highway gates left out);
    float64 from the float32 tensors."""

    names: tuple[str, ...]
    grad_norms: np.ndarray
    mean_squares: np.ndarray
    weight_names: tuple[str, ...]
    weight_grad_norms: np.ndarray

    def first_to_last(self) -> float:
        """``||dL/dh_1|| / ||dL/dh_L||``: below 1 the gradient shrinks towards the input."""
        return float(self.grad_norms[0] / self.grad_norms[-1])


def stream_profile(
    model: nn.Module,
    x: Inputs,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    prefixes: Sequence[str] = BLOCK_PREFIXES,
) -> StreamProfile:
    """Gradients and mean squares of ``model``'s block outputs (children named ``prefixes``) on one
    batch. Unlike :func:`gradient_profile`, which measures at the inputs of weight layers, this
    measures the stream itself, so residual and highway networks show the gradient their skip
    paths carry. The model's weights, ``.grad``, buffers and mode are left as they were."""
    children = _children_named(model, prefixes)
    check_inputs(x, y)
    x, y = usable(x), usable(y)
    weight_names = tuple(hidden_weight_layers(model))
    weights = [model.get_submodule(name).weight for name in weight_names]
    outputs: list[tuple[str, torch.Tensor]] = []
    handles = _collect_outputs(children, outputs)
    try:
        with buffers_kept(model), torch.enable_grad():
            output = forward_located(model, x, dict(children))
            loss = scalar_loss((loss_fn or default_loss)(scored(output, loss_fn), y))
            names = [name for name, _ in outputs]
            if len(set(names)) != len(names):
                raise ValueError("stream_profile needs each block called once in a forward pass")
            targets = [out for _, out in outputs] + [w for w in weights if w.requires_grad]
            grads = torch.autograd.grad(loss, targets, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    grad_of = {id(t): g for t, g in zip(targets, grads, strict=True)}
    return StreamProfile(
        names=tuple(names),
        grad_norms=np.array([_norm(grad_of[id(out)]) for _, out in outputs], dtype=np.float64),
        mean_squares=np.array([float(out.detach().double().pow(2).mean()) for _, out in outputs]),
        weight_names=weight_names,
        weight_grad_norms=np.array(
            [_norm(grad_of[id(w)]) if w.requires_grad else float("nan") for w in weights], dtype=np.float64
        ),
    )


def input_gradient_by_lag(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None = None
) -> np.ndarray:
    """``||dL/dx_t||`` over the batch for every time step of a sequence model, read backwards:
    entry ``k`` is the gradient that reaches the input ``k`` steps before the last one.

    ``x`` is ``(batch, time, features)``. Unlike :func:`bptt_gradient_norms` the model need not
    expose its hidden states: any module that maps ``x`` to an output works (``nn.LSTM``-based
    models, attention), because the gradient is taken with respect to the input itself. Norms are
    computed in float64 from the float32 gradients; weights and ``.grad`` are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x, y = _check_tensor("x", x), _check_tensor("y", y)
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, time, features), got shape {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output = model(x)
        loss = scalar_loss((loss_fn or default_loss)(scored(output, loss_fn), y))
        (grad,) = torch.autograd.grad(loss, x)
    norms = to_numpy(grad.double().pow(2).sum(dim=(0, 2)).sqrt())
    return norms[::-1].copy()


def recurrent_gates(cell: nn.LSTM | nn.GRU, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gate values of a one-layer, one-directional ``nn.LSTM`` or ``nn.GRU`` with
    ``batch_first=True`` on ``x`` (batch, time, features), each ``(batch, time, hidden)``, computed
    from PyTorch's equations step by step (no gradient kept).

    LSTM: ``"input"``, ``"forget"``, ``"output"`` gates and the candidate ``"cell"`` (PyTorch's
    gate order i, f, g, o), with the states ``"c"`` and ``"h"``. GRU (PyTorch's form, with the
    reset gate applied after the recurrent product, ``r * (W_hn h + b_hn)``): ``"reset"``,
    ``"update"`` (``z``: ``h_t = (1 - z) n + z h_(t-1)``), the candidate ``"new"`` and ``"h"``.
    """
    if not isinstance(cell, nn.LSTM | nn.GRU):
        raise TypeError(f"cell must be an nn.LSTM or nn.GRU, got {type(cell).__name__}")
    if cell.num_layers != 1 or cell.bidirectional or not cell.batch_first or getattr(cell, "proj_size", 0):
        raise ValueError(
            "recurrent_gates reads one layer, one direction, batch_first=True and no projection; "
            f"got num_layers={cell.num_layers}, bidirectional={cell.bidirectional}, "
            f"batch_first={cell.batch_first}"
        )
    x = _check_tensor("x", x)
    if x.ndim != 3 or x.shape[2] != cell.input_size:
        raise ValueError(f"x must be (batch, time, {cell.input_size}), got shape {tuple(x.shape)}")
    w_ih, w_hh = cell.weight_ih_l0, cell.weight_hh_l0
    b_ih = cell.bias_ih_l0 if cell.bias else torch.zeros(w_ih.shape[0])
    b_hh = cell.bias_hh_l0 if cell.bias else torch.zeros(w_hh.shape[0])
    names = (
        ("input", "forget", "cell", "output", "c", "h")
        if isinstance(cell, nn.LSTM)
        else ("reset", "update", "new", "h")
    )
    out: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with torch.no_grad():
        h = x.new_zeros(x.shape[0], cell.hidden_size)
        c = torch.zeros_like(h)
        for t in range(x.shape[1]):
            from_x = x[:, t] @ w_ih.T + b_ih
            if isinstance(cell, nn.LSTM):
                i, f, g, o = (from_x + h @ w_hh.T + b_hh).chunk(4, dim=1)
                i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
                c = f * c + i * g
                h = o * torch.tanh(c)
                step = (i, f, g, o, c, h)
            else:
                xr, xz, xn = from_x.chunk(3, dim=1)
                hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                step = (r, z, n, h)
            for name, value in zip(names, step, strict=True):
                out[name].append(value)
    return {name: torch.stack(values, 1) for name, values in out.items()}


def jacobian_singular_values(
    module: nn.Module, x: torch.Tensor, *, dtype: torch.dtype = torch.float64
) -> np.ndarray:
    """Singular values, largest first, of the Jacobian ``d module(x) / d x`` at one input ``x``.

    ``x`` is one example of shape ``(n,)`` (or ``(1, n)``); the module's output is flattened. For
    the hidden stack of a ``build_mlp`` model pass ``model[:-1]`` (everything but the head): the
    input-output Jacobian is then the product of the layer Jacobians ``diag(phi'(z_l)) W_l``.

    The forward pass and the Jacobian are computed in ``dtype``, float64 by default, on a copy of
    the module (the module itself is left as it is): in float32 every singular value below about
    1e-7 of the largest is rounding noise, and the spectrum of a deep product spans far more.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    x = _check_tensor("x", x)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"x must be one example of shape (n,) or (1, n), got {tuple(x.shape)}")

    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    twin = module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)

    def flat(inp: torch.Tensor) -> torch.Tensor:
        return twin(inp.unsqueeze(0)).reshape(-1)

    with torch.enable_grad():
        jacobian = torch.func.jacrev(flat)(x.detach().to(dtype))
    return to_numpy(torch.linalg.svdvals(jacobian.detach().double()))


def saved_for_backward_megabytes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None = None
) -> float:
    """Megabytes of the distinct tensors autograd keeps from one forward pass for the backward
    pass (activations, masks, normalisation statistics; a tensor saved twice counts once): the
    memory a remedy costs on top of the weights. The model's buffers are left as they were."""
    _check_tensor("x", x)
    _check_tensor("y", y)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: dict[tuple[int, torch.Size], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.data_ptr(), t.shape] = t.numel() * t.element_size()
        return t

    with (
        buffers_kept(model),
        torch.enable_grad(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        (loss_fn or default_loss)(model(x), y)
    return sum(seen.values()) / 2**20


def spectral_spread(singular_values: np.ndarray | list[float]) -> float:
    """How far a Jacobian is from an isometry: ``Var(s²) / E[s²]²`` over its singular values ``s``
    (the squared coefficient of variation of the eigenvalues of ``J Jᵀ``; Pennington et al. 2017
    track the same spectrum). 0 for an isometry (all ``s`` equal), ``n - 1`` for a rank-one
    Jacobian of ``n`` singular values; it does not depend on the overall scale of ``s``."""
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or len(s) < 1:
        raise ValueError("spectral_spread needs a 1-d array of singular values")
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError("singular values must be finite and >= 0")
    lam = s**2
    if not lam.mean() > 0:
        raise ValueError("spectral_spread is undefined for a Jacobian whose singular values are all 0")
    return float(lam.var() / lam.mean() ** 2)


def fitted_growth(values: np.ndarray | list[float], start: int = 0) -> float:
    """Factor by which ``values`` grow per index step, from a least-squares line through
    ``log(values[start:])``: 2 for ``[1, 2, 4, 8]``, below 1 for a decaying sequence. Robust to
    the noise of single layers where ``GradientProfile.per_layer_factor`` uses only the two ends;
    ``start`` skips a transient at the beginning (e.g. the first blocks of a residual stream)."""
    tail = np.asarray(values, dtype=np.float64)[start:]
    if tail.ndim != 1 or len(tail) < 2:
        raise ValueError(f"fitted_growth needs a 1-d sequence of at least 2 values from start={start}")
    if not np.all(np.isfinite(tail) & (tail > 0)):
        raise ValueError("fitted_growth fits log(values): every value must be positive and finite")
    slope = np.polyfit(np.arange(start, start + len(tail)), np.log(tail), 1)[0]
    return float(np.exp(slope))
