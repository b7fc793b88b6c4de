"""Where the gradient goes in any ``nn.Module``: one forward and one backward pass, measured at
every layer the forward pass calls and at every time step of a sequence.

``gradient_flow(model, inputs, target)`` is the measurement behind ``diagnose``. What it reports,
and what each quantity is:

- a *layer* is every module that owns parameters (directly, or through a parametrisation such
  as ``weight_norm``) and that the forward pass calls; a module called several times (a shared
  layer, a recurrent step unrolled in Python) is a layer per call, named ``name``, ``name#2``,
  ``name#3``, ...; layers are in the order their outputs were produced, so a container that
  owns a parameter (a temperature, a LayerScale) sits after what it contains; a module that is
  never called (``nn.MultiheadAttention``'s ``out_proj``, whose weight the attention uses
  functionally) is not a layer;
- ``output_grad_norms``: ``||dL/dh||`` over the batch at each layer's output ``h``, the
  *backpropagated* gradient (NaN where no gradient reaches the output: a frozen layer whose
  input needs none; inf where it holds inf or NaN); ``output_grad_rms`` the same per element,
  which makes layers of different sizes comparable;
- ``unit_spread``: for each layer's output, the median over its units of the unit's standard
  deviation over the batch, divided by the output's root mean square. Near 0 the layer maps every
  example to (nearly) the same output: the forward signal has *collapsed* (NaN for an output that
  is exactly 0, such as a recurrent layer applied to a zero initial state);
- ``weight_grad_norms`` and ``bias_grad_norms``: ``||dL/dW||`` and ``||dL/db||`` of each layer,
  kept apart: the biases are the parameters whose attribute names a bias (``bias``,
  ``in_proj_bias``, ``bias_hh_l0``), the "weights" every other parameter of the layer (a
  LayerScale's gamma, a temperature); a submodule the forward pass never calls lends its
  parameters to the called module that uses them (NaN where the layer has none that needs a
  gradient); ``param_grad_norms`` and ``param_norms``: every named parameter of the model, like
  Lightning's ``grad_norm`` (NaN for a frozen parameter, 0.0 for one the forward pass did not use,
  inf for a gradient that holds inf or NaN);
- ``time``: for a sequence, ``||dL/dx_t||`` at each time step ``t`` of the input of the first
  recurrent module (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``), or of the model's input along
  ``time_dim`` when the caller names it (vglib's own ``ElmanRNN`` has its time axis at 1); token
  ids have no gradient, so a ``time_dim`` on them is measured at the output of the layer that
  reads them (the embedding), along the same dimension.

Inputs: ``inputs`` is a tensor (``model(x)``), a tuple or list (``model(*inputs)``) or a dict
(``model(**inputs)``, e.g. ``input_ids`` and ``attention_mask``). The output may be a tensor, a
tuple (its first element is scored) or a dict (scored by ``loss_fn``; without one, its
``"logits"`` entry). The default loss is MSE for float targets and cross-entropy for class
indices. The model is left exactly as it was: weights, ``.grad``, buffers (buffers the forward
pass creates are removed again), train/eval mode, hooks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._batch import (
    Inputs,
    LossFn,
    check_inputs,
    default_loss,
    first_tensor,
    forward_located,
    scalar_loss,
    scored,
    tensors_in,
    usable,
)
from ._state import buffers_kept
from ._tensors import exact_norm, to_numpy
from .models import ElmanRNN

__all__ = ["GradientFlow", "TimeFlow", "gradient_flow"]


@dataclass(frozen=True)
class TimeFlow:
    """``||dL/dx_t||`` for every time step ``t`` of a sequence (first step first), measured at
    ``where`` (a recurrent module's input, or the model input)."""

    where: str
    time_dim: int
    grad_norms: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.grad_norms)


@dataclass(frozen=True)
class GradientFlow:
    """The measurements of one forward and backward pass (see the module docstring)."""

    layer_names: tuple[str, ...]
    layer_types: tuple[str, ...]
    output_grad_norms: np.ndarray
    output_grad_rms: np.ndarray
    unit_spread: np.ndarray
    weight_grad_norms: np.ndarray
    bias_grad_norms: np.ndarray
    param_grad_norms: dict[str, float] = field(repr=False)
    param_norms: dict[str, float] = field(repr=False)
    time: TimeFlow | None
    loss: float
    inputs_finite: bool
    frozen: tuple[str, ...] = ()
    """Layers none of whose parameters needs a gradient."""
    unreached: tuple[str, ...] = ()
    """Layers with trainable parameters that no gradient reaches at all (the graph is cut between
    them and the loss: ``detach()``, ``torch.no_grad()``, a cast to an integer, or an output the
    loss does not use)."""
    loss_grad_rms: float = math.nan
    """``||dL/dy||`` per element at what the loss scores (the model's output): the scale every
    layer's gradient starts from (NaN when a ``loss_fn`` scores a dict)."""
    uncalled: tuple[str, ...] = ()
    nonfinite: tuple[str, ...] = ()
    """Layers and parameters whose gradient holds inf or NaN."""

    @property
    def depth(self) -> int:
        """Number of layer calls measured (the output layer included)."""
        return len(self.layer_names)

    @property
    def global_grad_norm(self) -> float:
        """``||dL/dtheta||`` over every trainable parameter: what ``clip_grad_norm_`` returns."""
        values = [v for v in self.param_grad_norms.values() if not math.isnan(v)]
        return math.sqrt(sum(v * v for v in values))


def _owns_parameters(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module) or any(True for _ in module.parameters(recurse=False))


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters, by name (the model itself, if it owns one, by its class name),
    except the containers of parametrisations, which the forward pass never calls."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in f".{name}.":
            continue
        if _owns_parameters(module):
            found[name or type(module).__name__] = module
    return found


def _module_prefixes(model: nn.Module) -> dict[int, str]:
    """Each module's prefix in ``model.named_parameters()`` ("" for the model itself)."""
    return {id(m): name for name, m in model.named_modules()}


def _batch_dim(h: torch.Tensor, batch: int | None, module: nn.Module) -> int:
    if isinstance(module, nn.RNNBase) and not module.batch_first and h.ndim >= 2:
        return 1
    if batch is not None:
        for dim, size in enumerate(h.shape):
            if size == batch:
                return dim
    return 0


def _unit_spread(h: torch.Tensor, batch_dim: int) -> float:
    """Median over units of the per-unit standard deviation over the batch, over the RMS of h.

    In float32 on h divided by its RMS (so tiny or huge outputs neither underflow nor overflow),
    two-pass: it resolves spreads down to about 1e-7 of the scale, far below ``COLLAPSE_SPREAD``."""
    values = h.detach().movedim(batch_dim, 0)
    if values.ndim < 2 or values.shape[0] < 2:
        return math.nan
    values = values.reshape(values.shape[0], -1).float()
    rms = exact_norm(values) / math.sqrt(values.numel())
    if not math.isfinite(rms) or rms == 0.0:  # nothing to judge (an exactly-zero initial state)
        return math.nan
    if not 1e-15 < rms < 1e15:  # squares would underflow or overflow in float32
        values, rms = values / rms, 1.0
    deviations = values - values.mean(dim=0)
    per_unit = deviations.square_().sum(dim=0).div_(values.shape[0] - 1).sqrt_()
    return float(per_unit.median()) / rms


@torch.inference_mode(False)  # the pass needs autograd even when called under inference_mode
def gradient_flow(
    model: nn.Module,
    inputs: Inputs,
    target: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    time_dim: int | None = None,
    time_input: int | str | None = None,
) -> GradientFlow:
    """Measure the backpropagated gradient at every layer and time step (see the module docstring).

    ``time_dim`` names the time dimension of the model's input (of ``inputs[time_input]`` when the
    model takes several inputs); without it the time axis is that of the first ``nn.RNN``,
    ``nn.LSTM`` or ``nn.GRU`` the forward pass calls, if any.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_inputs(inputs, target)
    inputs, target = usable(inputs), usable(target)
    candidates = _candidates(model)
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no parameters: there is no layer to measure")
    if time_dim is None and isinstance(model, ElmanRNN):
        time_dim = 1
    tensors = tensors_in(inputs)
    inputs_finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()) and (
        not target.is_floating_point() or bool(torch.isfinite(target).all())
    )
    # the inputs need a gradient only where one is measured there: a named time axis, or the input
    # of a recurrent module that may be the model's input (it costs a backward pass through
    # layers that are otherwise skipped, such as a frozen backbone)
    track = time_dim is not None or any(isinstance(m, nn.RNNBase) for m in model.modules())
    inputs, time_source = _with_time_input(inputs, time_dim, time_input, track=track)
    batch = tensors[0].shape[0] if tensors and tensors[0].ndim else None

    calls: list[tuple[str, nn.Module, torch.Tensor | None]] = []
    counts: dict[str, int] = {}
    recurrent: list[tuple[str, torch.Tensor, int]] = []
    names_of = {id(m): n for n, m in candidates.items()}

    tokens = time_source is not None and not time_source[1].is_floating_point()

    def after(module: nn.Module, args: Any, output: Any) -> None:
        nonlocal time_source
        name = names_of[id(module)]
        counts[name] = counts.get(name, 0) + 1
        label = name if counts[name] == 1 else f"{name}#{counts[name]}"
        h = first_tensor(output)
        calls.append((label, module, h))
        if tokens and time_source[0] == "" and args and args[0] is time_source[1] and h is not None:
            time_source = (label, h, time_source[2])  # the embedding of the token ids

    def before_recurrent(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if not recurrent and isinstance(x, torch.Tensor) and x.requires_grad and x.ndim == 3:
            recurrent.append(
                (names_of.get(id(module), type(module).__name__), x, 1 if module.batch_first else 0)
            )

    handles = [m.register_forward_hook(after) for m in candidates.values()]
    if time_source is None:
        handles += [
            m.register_forward_pre_hook(before_recurrent)
            for m in model.modules()
            if isinstance(m, nn.RNNBase)
        ]
    try:
        with buffers_kept(model), torch.enable_grad(), parametrize.cached():
            output = forward_located(model, inputs, candidates)
            prediction = scored(output, loss_fn)
            loss = scalar_loss((loss_fn or default_loss)(prediction, target))
            if not (isinstance(prediction, torch.Tensor) and prediction.requires_grad):
                prediction = None
            params = dict(model.named_parameters())
            trainable = {n: p for n, p in params.items() if p.requires_grad}
            outputs = [h for _, _, h in calls if h is not None and h.requires_grad]
            if tokens and time_source[0] == "":
                raise ValueError(
                    "time_dim is on an integer input (token ids), which has no gradient, and no layer "
                    "with parameters reads it directly: name a floating-point input, or leave "
                    "time_dim out to measure at the input of the model's first recurrent module"
                )
            time_tensor = (
                time_source[1] if time_source is not None else (recurrent[0][1] if recurrent else None)
            )
            targets = [*trainable.values(), *outputs]
            targets += [t for t in (time_tensor, prediction) if t is not None]
            grads = torch.autograd.grad(loss, targets, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    grad_of = {id(t): g for t, g in zip(targets, grads, strict=True)}
    return _assemble(
        model, candidates, calls, params, trainable, grad_of, loss, batch, inputs_finite,
        time_source, recurrent, time_tensor, prediction,
    )  # fmt: skip


def _with_time_input(
    inputs: Inputs, time_dim: int | None, time_input: int | str | None, *, track: bool
) -> tuple[Inputs, tuple[str, torch.Tensor, int] | None]:
    """The inputs, in which (with ``track``) the floating-point tensors are copies that require a
    gradient (so that one can be taken at the input; the parameters' gradients do not change),
    and the time source."""

    def leaf(t: Any) -> Any:
        if track and isinstance(t, torch.Tensor) and t.is_floating_point() and not t.requires_grad:
            return t.detach().clone().requires_grad_(True)
        return t

    if isinstance(inputs, Mapping):
        new: Inputs = {k: leaf(v) for k, v in inputs.items()}
        chosen = new[time_input] if time_input is not None else next(iter(new.values()), None)
    elif isinstance(inputs, tuple | list):
        new = type(inputs)(leaf(v) for v in inputs)
        chosen = new[time_input if time_input is not None else 0]  # type: ignore[index]
    else:
        if time_input is not None:
            raise ValueError("time_input names one of several inputs; this model takes a single tensor")
        new = leaf(inputs)
        chosen = new
    if time_dim is None:
        return new, None
    if not isinstance(chosen, torch.Tensor):
        raise TypeError(f"the time axis must be on a tensor input, got {type(chosen).__name__}")
    if not -chosen.ndim <= time_dim < chosen.ndim:
        raise ValueError(f"time_dim {time_dim} is out of range for an input of shape {tuple(chosen.shape)}")
    if not chosen.is_floating_point():  # token ids: measured at the output of the layer that reads them
        return new, ("", chosen, time_dim % chosen.ndim)
    return new, ("model input", chosen, time_dim % chosen.ndim)


def _owner(param: str, called: set[str]) -> str | None:
    """The prefix of the innermost called module that holds ``param`` (a module the forward pass
    never calls, such as ``MultiheadAttention.out_proj``, lends its parameters to the called module
    that uses them)."""
    parts = param.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in called:
            return prefix
    return None


def _is_bias(param: str) -> bool:
    """Whether a parameter is a bias, by the name of the attribute it sets (``bias``,
    ``in_proj_bias``, ``bias_ih_l0``; for a parametrisation, the parametrised attribute)."""
    parts = param.split(".")
    if "parametrizations" in parts:
        parts = parts[: parts.index("parametrizations") + 2]
    return "bias" in parts[-1]


def _norm_of(grad: torch.Tensor | None) -> float:
    """``||grad||``: NaN for no gradient at all, inf for one that holds inf or NaN (a norm, in
    float64 where float32 might overflow, is finite exactly when the tensor is)."""
    if grad is None:
        return math.nan
    value = exact_norm(grad)
    return value if math.isfinite(value) else math.inf


def _assemble(
    model: nn.Module,
    candidates: dict[str, nn.Module],
    calls: list[tuple[str, nn.Module, torch.Tensor | None]],
    params: dict[str, nn.Parameter],
    trainable: dict[str, nn.Parameter],
    grad_of: dict[int, torch.Tensor | None],
    loss: torch.Tensor,
    batch: int | None,
    inputs_finite: bool,
    time_source: tuple[str, torch.Tensor, int] | None,
    recurrent: list[tuple[str, torch.Tensor, int]],
    time_tensor: torch.Tensor | None,
    prediction: torch.Tensor | None,
) -> GradientFlow:
    param_grad_norms: dict[str, float] = {}
    for name, p in params.items():
        if not p.requires_grad:
            param_grad_norms[name] = math.nan
        else:
            g = grad_of.get(id(p))
            param_grad_norms[name] = 0.0 if g is None else _norm_of(g)  # unused: no gradient at all
    param_norms = {name: exact_norm(p) for name, p in params.items()}
    prefix_of = _module_prefixes(model)

    called_prefixes = {prefix_of[id(m)] for _, m, _ in calls}
    owner_of = {name: _owner(name, called_prefixes) for name in params}

    def layer_params(module: nn.Module, kind: str) -> list[str]:
        base = prefix_of[id(module)]
        return [n for n, o in owner_of.items() if o == base and (kind == "bias") == _is_bias(n)]

    def group_norm(names: list[str]) -> float:
        values = [param_grad_norms[n] for n in names if n in param_grad_norms]
        if not values or all(math.isnan(v) for v in values):
            return math.nan
        return math.sqrt(sum(v * v for v in values if not math.isnan(v)))

    names, types, norms, rms, spread, weight, bias = [], [], [], [], [], [], []
    for label, module, h in calls:
        names.append(label)
        types.append(type(module).__name__)
        g = grad_of.get(id(h)) if h is not None and h.requires_grad else None
        norm = _norm_of(g)
        norms.append(norm)
        rms.append(norm / math.sqrt(h.numel()) if h is not None and h.numel() else math.nan)
        spread.append(
            _unit_spread(h, _batch_dim(h, batch, module))
            if h is not None and h.is_floating_point()
            else math.nan
        )
        weight.append(group_norm(layer_params(module, "weight")))
        bias.append(group_norm(layer_params(module, "bias")))
    time = None
    if time_tensor is not None:
        where, dim = (
            (time_source[0], time_source[2])
            if time_source is not None
            else (recurrent[0][0], recurrent[0][2])
        )
        g = grad_of.get(id(time_tensor))
        if g is not None:
            per_step = g.detach().double().movedim(dim, 0).reshape(g.shape[dim], -1).pow(2).sum(dim=1).sqrt()
            time = TimeFlow(where=where, time_dim=dim, grad_norms=to_numpy(per_step).copy())
    called = {id(m) for _, m, _ in calls}
    reached = {name for name, p in trainable.items() if grad_of.get(id(p)) is not None}
    unreached = tuple(
        label
        for (label, module, h), norm in zip(calls, norms, strict=True)
        if math.isnan(norm)
        and (owned := layer_params(module, "weight") + layer_params(module, "bias"))
        and any(n in trainable for n in owned)
        and not any(n in reached for n in owned)
    )
    g = grad_of.get(id(prediction)) if prediction is not None else None
    loss_grad_rms = math.nan
    if g is not None and prediction is not None and prediction.numel():
        loss_grad_rms = exact_norm(g) / math.sqrt(prediction.numel())
    frozen = tuple(
        label for label, module, _ in calls
        if not any(p.requires_grad for p in module.parameters())
    )  # fmt: skip
    return GradientFlow(
        layer_names=tuple(names),
        layer_types=tuple(types),
        output_grad_norms=np.array(norms, dtype=np.float64),
        output_grad_rms=np.array(rms, dtype=np.float64),
        unit_spread=np.array(spread, dtype=np.float64),
        weight_grad_norms=np.array(weight, dtype=np.float64),
        bias_grad_norms=np.array(bias, dtype=np.float64),
        param_grad_norms=param_grad_norms,
        param_norms=param_norms,
        time=time,
        loss=float(loss.detach()),
        inputs_finite=inputs_finite,
        frozen=frozen,
        unreached=unreached,
        loss_grad_rms=loss_grad_rms,
        uncalled=tuple(n for n, m in candidates.items() if id(m) not in called),
        nonfinite=tuple(
            [label for label, norm in zip(names, norms, strict=True) if math.isinf(norm)]
            + [name for name, norm in param_grad_norms.items() if math.isinf(norm)]
        ),
    )
