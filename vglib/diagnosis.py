"""Verdicts from measurements: ``diagnose`` says whether a model's gradients vanish or explode,
``loss_stalled`` whether training has stalled."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._tensors import exact_norm
from ._validation import check_positive_int
from .probes import _check_tensor, _default_loss

__all__ = [
    "EXPLODING_RATIO",
    "EXPLODING_RELATIVE_GRADIENT",
    "STALL_WINDOW",
    "VANISHING_RATIO",
    "Diagnosis",
    "diagnose",
    "loss_stalled",
]

VANISHING_RATIO = 1e-3
"""Vanishing: the first layer's relative gradient ||dL/dW||/||W|| is below this fraction of the
last hidden layer's. The first layer would then learn a thousand times more slowly than the last."""

EXPLODING_RATIO = 1e3
"""Exploding: the first layer's relative gradient is this many times the last hidden layer's."""

EXPLODING_RELATIVE_GRADIENT = 1e3
"""Exploding: some layer's ||dL/dW|| exceeds this multiple of ||W||: even a learning rate of 1e-3
would move its weights by more than their own size in one step."""

_REMEDIES = {
    "vanishing": [
        "initialise for the activation: He for ReLU, Xavier/LeCun or orthogonal for tanh "
        "(chapter: Initialisation)",
        "replace sigmoid/tanh in hidden layers by ReLU-family activations (chapter: Activation functions)",
        "add normalisation or residual connections (chapters: Normalisation, Skip connections)",
        "for recurrent models use LSTM/GRU cells (chapter: Gated recurrent units)",
    ],
    "exploding": [
        "reduce the initial weight scale (chapter: Initialisation)",
        "clip the gradient norm (chapter: Gradient clipping) and lower the learning rate",
        "add normalisation or residual connections (chapters: Normalisation, Skip connections)",
    ],
    "healthy": [],
}


@dataclass(frozen=True)
class Diagnosis:
    """The verdict of ``diagnose``: ``status`` is ``"healthy"``, ``"vanishing"`` or ``"exploding"``.

    Per layer (in the order the forward pass calls them, the last being the output layer):
    ``weight_norms`` ||W||, ``grad_norms`` ||dL/dW|| and their ratio ``relative``. ``flagged``
    names the layers to look at; ``remedies`` what to try. ``print(diagnosis)`` shows a table.
    """

    status: str
    reason: str
    layer_names: tuple[str, ...]
    layer_types: tuple[str, ...]
    weight_norms: np.ndarray
    grad_norms: np.ndarray
    relative: np.ndarray
    flagged: tuple[str, ...]
    remedies: tuple[str, ...]

    def __str__(self) -> str:
        header = f"{'layer':<24}{'type':<12}{'||W||':>10}{'||dL/dW||':>12}{'ratio':>11}  flag"
        lines = [f"status: {self.status.upper()} ({self.reason})", "", header, "-" * len(header)]
        for i, name in enumerate(self.layer_names):
            flag = "<-- look here" if name in self.flagged else ""
            lines.append(
                f"{name[:23]:<24}{self.layer_types[i][:11]:<12}{self.weight_norms[i]:>10.3g}"
                f"{self.grad_norms[i]:>12.3g}{self.relative[i]:>11.3g}  {flag}"
            )
        if self.remedies:
            lines += ["", "what to try:"] + [f"  - {r}" for r in self.remedies]
        return "\n".join(lines)


def diagnose(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Diagnosis:
    """One forward and backward pass, and a verdict on the gradients (see ``Diagnosis``).

    Works on any ``nn.Module`` with parameters (MLPs, CNNs, ``nn.LSTM``/``nn.GRU``, your own):
    every module with its own trainable parameters is a layer, ordered by its first call in the
    forward pass. Thresholds: ``VANISHING_RATIO``, ``EXPLODING_RATIO``,
    ``EXPLODING_RELATIVE_GRADIENT``; a gradient that is exactly 0 or not finite decides at once.
    The model is left as it was (weights, ``.grad``, buffers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = {
        (name or type(m).__name__): m
        for name, m in model.named_modules()
        if any(p.requires_grad for p in m.parameters(recurse=False))
    }
    if not layers:
        raise ValueError(f"{type(model).__name__} has no parameters that require grad: nothing to diagnose")
    x, y = _check_tensor("x", x), _check_tensor("y", y)
    order: dict[str, None] = {}
    handles = [
        m.register_forward_pre_hook(lambda module, _, n=name: order.setdefault(n) and None)
        for name, m in layers.items()
    ]
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        with torch.enable_grad():
            try:
                output = model(x)
            except RuntimeError as error:
                raise ValueError(f"x of shape {tuple(x.shape)} does not fit the model ({error})") from error
            output = output[0] if isinstance(output, tuple) else output
            loss = (loss_fn or _default_loss)(output, y)
            names = [n for n in order] + [n for n in layers if n not in order]
            params = [[p for p in layers[n].parameters(recurse=False) if p.requires_grad] for n in names]
            flat = [p for group in params for p in group]
            grads = iter(torch.autograd.grad(loss, flat, allow_unused=True))
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved, strict=True):
                buffer.copy_(value)
    grad_norms = np.array([math.sqrt(sum(exact_norm(next(grads)) ** 2 for _ in group)) for group in params])
    weight_norms = np.array([math.sqrt(sum(exact_norm(p) ** 2 for p in group)) for group in params])
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(weight_norms > 0, grad_norms / weight_norms, np.nan)
    status, reason, flagged = _verdict(names, relative, grad_norms)
    return Diagnosis(
        status=status,
        reason=reason,
        layer_names=tuple(names),
        layer_types=tuple(type(layers[n]).__name__ for n in names),
        weight_norms=weight_norms,
        grad_norms=grad_norms,
        relative=relative,
        flagged=flagged,
        remedies=tuple(_REMEDIES[status]),
    )


def _verdict(
    names: Sequence[str], relative: np.ndarray, grads: np.ndarray
) -> tuple[str, str, tuple[str, ...]]:
    bad = [n for n, g in zip(names, grads, strict=True) if not math.isfinite(g)]
    if bad:
        return "exploding", "gradients overflowed to inf/nan", tuple(bad)
    huge = [n for n, r in zip(names, relative, strict=True) if r > EXPLODING_RELATIVE_GRADIENT]
    if huge:
        return "exploding", f"||dL/dW|| > {EXPLODING_RELATIVE_GRADIENT:g} x ||W||", tuple(huge)
    hidden = relative[:-1] if len(relative) > 1 else relative  # the output layer is the reference
    last = hidden[-1]
    if len(hidden) > 1 and last > 0:
        ratio = hidden[0] / last
        low = [n for n, r in zip(names, hidden, strict=False) if r < VANISHING_RATIO * last]
        high = [n for n, r in zip(names, hidden, strict=False) if r > EXPLODING_RATIO * last]
        if ratio < VANISHING_RATIO:
            return (
                "vanishing",
                f"first/last layer relative gradient {ratio:.2g} < {VANISHING_RATIO:g}",
                tuple(low),
            )
        if ratio > EXPLODING_RATIO:
            return (
                "exploding",
                f"first/last layer relative gradient {ratio:.2g} > {EXPLODING_RATIO:g}",
                tuple(high),
            )
        return "healthy", f"first/last layer relative gradient {ratio:.2g}", ()
    zeros = [n for n, g in zip(names, grads, strict=True) if g == 0.0]
    if zeros:
        return "vanishing", "gradients are exactly 0", tuple(zeros)
    return "healthy", "a single hidden layer: no depth to vanish over", ()


# -- stalled loss ----------------------------------------------------------------------------------

STALL_WINDOW = 100
"""Steps over which ``loss_stalled`` compares the loss."""


def loss_stalled(
    losses: Sequence[float] | np.ndarray, window: int = STALL_WINDOW, tolerance: float = 0.01
) -> bool:
    """Whether training has stalled: over the last ``window`` steps the mean loss has not fallen
    below the mean of the ``window`` steps before by more than ``tolerance`` (relative) *and* by
    more than two standard errors of that difference. The second test keeps minibatch noise,
    which moves window means by a few percent, from passing for progress. Needs ``2 * window``
    losses; a history that is not finite (diverging) is not stalled."""
    check_positive_int("window", window)
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2 * window:
        raise ValueError(f"need a 1-D history of at least {2 * window} losses, got shape {values.shape}")
    before, after = values[-2 * window : -window], values[-window:]
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        return False
    decrease = before.mean() - after.mean()
    noise = 2.0 * math.sqrt((before.var(ddof=1) + after.var(ddof=1)) / window)
    return bool(decrease < max(tolerance * abs(before.mean()), noise))
