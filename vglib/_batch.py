"""What a probe calls the model with and what it scores: one set of rules for every probe.

A batch's inputs are a tensor (``model(x)``), a tuple or list (``model(*inputs)``) or a dict
(``model(**inputs)``, e.g. ``input_ids`` and ``attention_mask``). The model's output may be a
tensor, a tuple (its first element is scored) or a dict (scored by ``loss_fn``; without one, its
``"logits"`` entry). The default loss is MSE for float targets and cross-entropy for class indices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Inputs",
    "LossFn",
    "call_model",
    "check_inputs",
    "default_loss",
    "first_tensor",
    "forward_located",
    "scalar_loss",
    "scored",
    "tensors_in",
    "usable",
]

Inputs = torch.Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


def check_inputs(inputs: object, target: object) -> None:
    """Refuse, naming the valid forms, inputs and targets a probe cannot use."""
    if not isinstance(inputs, torch.Tensor | tuple | list | Mapping):
        raise TypeError(
            f"x must be a torch.Tensor, a tuple/list (model(*x)) or a dict (model(**x)), got "
            f"{type(inputs).__name__}; convert an array with torch.as_tensor(x, dtype=torch.float32)"
        )
    tensors = tensors_in(inputs)  # type: ignore[arg-type]
    if not tensors:
        raise TypeError("x holds no tensor: the model must be called with at least one tensor")
    first = tensors[0]
    if first.ndim == 0 or first.shape[0] == 0:
        raise ValueError(f"x must hold a non-empty batch, got shape {tuple(first.shape)}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"y must be a torch.Tensor, got {type(target).__name__}; convert with torch.as_tensor(y)"
        )
    if target.ndim == 0 or target.shape[0] == 0:
        raise ValueError(f"y must hold a non-empty batch, got shape {tuple(target.shape)}")


def call_model(model: Callable[..., Any], inputs: Inputs) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def tensors_in(inputs: Inputs) -> list[torch.Tensor]:
    """The tensors among the inputs, in order."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    return [v for v in values if isinstance(v, torch.Tensor)]


def first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a module's output stands for: itself, or the first tensor of a tuple or dict."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def scored(output: Any, loss_fn: LossFn | None) -> Any:
    """What the loss sees: with a ``loss_fn``, the output as it is; without, the output tensor, the
    first element of a tuple, or the ``"logits"`` entry of a dict."""
    if loss_fn is not None:
        return output
    if isinstance(output, tuple | list) and output:
        output = output[0]
    if isinstance(output, Mapping):
        if "logits" not in output:
            raise ValueError(
                f"the model returns a dict with keys {sorted(output)}: pass loss_fn(output, y) to say "
                "what to score (without one, vglib scores output['logits'])"
            )
        output = output["logits"]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the model's output is a {type(output).__name__}: pass loss_fn(output, y) to score it"
        )
    return output


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE for floating-point targets of the output's shape, cross-entropy for class indices."""
    if target.is_floating_point():
        if target.shape != output.shape:
            raise ValueError(
                f"y of shape {tuple(target.shape)} does not fit the model's output of shape "
                f"{tuple(output.shape)}: float targets (mean-squared error) need the output's shape"
            )
        return F.mse_loss(output, target)
    if target.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if output.ndim != 2 or target.shape != output.shape[:1]:
            raise ValueError(
                f"y of shape {tuple(target.shape)} does not fit the model's output of shape "
                f"{tuple(output.shape)}: class-index targets (cross-entropy) need shape "
                f"({output.shape[0]},) and a 2-D output (batch, classes)"
            )
        n_classes = output.shape[1]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n_classes):
            raise ValueError(f"class indices in y must lie in [0, {n_classes - 1}]")
        return F.cross_entropy(output, target.long())
    raise TypeError(f"y must be a float or integer tensor, got dtype {target.dtype}")


def scalar_loss(loss: object) -> torch.Tensor:
    """The loss, checked: a tensor with one element that depends on a parameter needing a gradient."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a scalar torch.Tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)} (reduce it, e.g. .mean())"
        )
    if not loss.requires_grad:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "called under torch.inference_mode(): its tensors can never take part in autograd; "
                "call outside the inference_mode block"
            )
        raise ValueError(
            "the loss does not depend on any parameter that requires a gradient (is the model frozen, "
            "or its output detached?)"
        )
    return loss


def usable(inputs: Inputs) -> Inputs:
    """The inputs with every inference-mode tensor (made under ``torch.inference_mode``, which
    autograd can never use) replaced by an ordinary copy."""

    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_inference():
            with torch.inference_mode(False):
                return value.clone()
        return value

    if isinstance(inputs, Mapping):
        return {k: plain(v) for k, v in inputs.items()}
    if isinstance(inputs, tuple | list):
        return type(inputs)(plain(v) for v in inputs)
    return plain(inputs)


def forward_located(model: nn.Module, inputs: Inputs, layers: Mapping[str, nn.Module]) -> Any:
    """``call_model(model, inputs)``; if the forward pass raises a ``RuntimeError`` (a shape or
    dtype that does not fit), a ``ValueError`` that says where: inside which of ``layers`` (the
    innermost one entered and not left), or after which one, outside them all."""
    names_of = {id(m): n for n, m in layers.items()}
    open_: list[str] = []
    last_done: list[str] = []

    def enter(module: nn.Module, _args: Any) -> None:
        open_.append(names_of[id(module)])

    def leave(module: nn.Module, _args: Any, _output: Any) -> None:
        if open_:
            last_done[:] = [open_.pop()]

    handles = [m.register_forward_pre_hook(enter) for m in layers.values()]
    handles += [m.register_forward_hook(leave) for m in layers.values()]
    try:
        return call_model(model, inputs)
    except RuntimeError as error:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors_in(inputs))
        if open_:
            name = open_[-1]
            where = f"inside layer {name!r} ({type(layers[name]).__name__}{_expects(layers[name])})"
        elif last_done:
            where = f"after layer {last_done[0]!r}, in the model's own code between layers"
        else:
            where = "before the first layer, in the model's own code"
        raise ValueError(f"the forward pass on x of shape {shapes} failed {where}: {error}") from error
    finally:
        for handle in handles:
            handle.remove()


def _expects(layer: nn.Module) -> str:
    """What input a layer expects, for an error message ("" where there is nothing simple to say)."""
    if isinstance(layer, nn.Linear):
        return f", which expects inputs of shape (..., {layer.in_features})"
    if isinstance(layer, nn.modules.conv._ConvNd):
        dims = len(layer.kernel_size)
        spatial = {1: "L", 2: "H, W", 3: "D, H, W"}.get(dims, "...")
        return f", which expects inputs of shape (batch, {layer.in_channels}, {spatial})"
    return ""
