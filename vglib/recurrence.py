"""Backpropagation through time, read by time lag: where along the sequence the gradient comes from.

Pascanu, Mikolov & Bengio (2013, section 2) write the recurrent weight gradient of a loss on the last
state as a *sum* over time of temporal contributions,

    dL/dW_hh = sum_k  dL/dh_T . dh_T/dh_{T-k} . d+h_{T-k}/dW_hh,

where ``d+`` is the immediate partial derivative (``h_{T-k-1}`` held fixed). The contribution of lag
``k`` is the outer product ``(phi'(a_{T-k}) * dL/dh_{T-k}) h_{T-k-1}^T``, summed over the batch.
Vanishing gradients through time mean that the long-lag terms are swamped by the short-lag ones,
not that the sum is small. :func:`bptt_weight_gradient_by_lag` measures each term.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._batch import default_loss
from ._tensors import to_numpy
from .models import ElmanRNN, GatedRNN
from .probes import _check_tensor, bptt_gradient_norms
from .train import TrainingHistory, train

__all__ = [
    "STATES",
    "LagContributions",
    "bptt_weight_gradient_by_lag",
    "first_lag_below",
    "state_gradient_by_lag",
    "train_with_lag_probes",
]

STATES = ("hidden", "cell")
"""The recurrent states :func:`state_gradient_by_lag` reads: ``h_t`` of any model, ``c_t`` of an LSTM."""


def first_lag_below(curve: np.ndarray | list[float], level: float) -> int | None:
    """The first index ``k`` with ``curve[k] < level``, or ``None`` if the curve never falls below it.

    With a curve read by lag (``bptt_gradient_norms(..., by_lag=True, relative=True)``), this is
    the first lag at which the relative gradient is below ``level``.
    """
    values = np.asarray(curve, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"curve must be 1-d, got shape {values.shape}")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating, np.integer)):
        raise TypeError(f"level must be a number, got {type(level).__name__}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    below = np.flatnonzero(values < level)
    return int(below[0]) if below.size else None


@dataclass(frozen=True)
class LagContributions:
    """The recurrent weight gradient ``dL/dW_hh`` split by time lag, from one batch.

    ``norms[k]`` is the Frobenius norm of the contribution of lag ``k`` (the recurrent step that
    produced ``h_{T-k}``; lag 0 is the last step). ``tail_norms[k]`` is the norm of the sum of the
    contributions of lags ``k, k+1, ...``: ``tail_norms[0]`` is ``||dL/dW_hh||`` itself and
    ``tail_norms[k]`` what BPTT truncated to the last ``k`` steps (lags ``0..k-1``) leaves out.
    """

    norms: np.ndarray
    tail_norms: np.ndarray

    @property
    def total(self) -> float:
        """``||dL/dW_hh||``, the norm of the full gradient (the sum of all contributions)."""
        return float(self.tail_norms[0])

    def relative(self) -> np.ndarray:
        """Each lag's contribution norm divided by the full gradient's norm."""
        return self.norms / self.total

    def dropped_by_truncation(self, steps: int) -> float:
        """``||dL/dW_hh - g_steps|| / ||dL/dW_hh||``, where ``g_steps`` keeps only the last
        ``steps`` lags (``0..steps-1``): the relative error of BPTT truncated to ``steps`` steps."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        return float(self.tail_norms[steps] / self.total) if steps < len(self.norms) else 0.0


def bptt_weight_gradient_by_lag(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    recurrent: str = "recurrent",
    dtype: torch.dtype = torch.float64,
) -> LagContributions:
    """``dL/dW_hh`` of a recurrent model, split into Pascanu et al.'s temporal contributions.

    ``recurrent`` names the ``nn.Linear`` submodule that computes ``W_hh h_{t-1}`` once per time
    step (``vglib.ElmanRNN.recurrent``); ``dL/dW_hh`` is the sum, over its calls, of the outer
    product of the gradient arriving at its output with its input. The loss is the mean squared
    error of the model's output against ``y`` (as in :func:`~vglib.probes.bptt_gradient_norms`). The
    computation runs on a copy of the model in ``dtype`` (float64 by default, so that
    contributions many orders of magnitude below the largest are not rounding noise); the model,
    its weights and its ``.grad`` are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    layer = getattr(model, recurrent, None) if isinstance(recurrent, str) else None
    if not isinstance(layer, nn.Linear):
        linears = [name for name, m in model.named_children() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear child named {recurrent!r}; "
            f"its Linear children: {linears}"
        )
    x, y = _check_tensor("x", x), _check_tensor("y", y)
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, time, features), got shape {tuple(x.shape)}")
    copied = copy.deepcopy(model).to(dtype)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = getattr(copied, recurrent).register_forward_hook(
        lambda _module, inputs, output: calls.append((inputs[0], output))
    )
    try:
        with torch.enable_grad():
            loss = default_loss(copied(x.to(dtype)), y.to(dtype))
            arriving = torch.autograd.grad(loss, [out for _, out in calls], allow_unused=True)
    finally:
        handle.remove()
    if len(calls) != x.shape[1]:
        raise ValueError(
            f"{recurrent!r} was called {len(calls)} times for {x.shape[1]} time steps; expected once per step"
        )
    contributions = [
        torch.zeros_like(getattr(copied, recurrent).weight) if g is None else g.T @ h_prev
        for (h_prev, _), g in zip(calls, arriving, strict=True)
    ][::-1]  # by lag: entry 0 is the last step
    stacked = torch.stack(contributions).detach()
    tails = stacked.flip(0).cumsum(0).flip(0)
    norms = stacked.double().flatten(1).norm(dim=1)
    tail_norms = tails.double().flatten(1).norm(dim=1)
    return LagContributions(norms=to_numpy(norms), tail_norms=to_numpy(tail_norms))


def _gated_states(model: GatedRNN, x: torch.Tensor, state: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run an ``nn.LSTM``/``nn.GRU`` regressor one step at a time: its output and the chosen states.

    The GRU steps through ``nn.GRU`` itself; the LSTM's step is written out with its weights
    (PyTorch's gate order: input, forget, cell, output), so that each cell state ``c_t`` is a node
    of the graph through which ``h_t = o_t * tanh(c_t)`` is computed."""
    cell, batch = model.cell, x.shape[0]
    h = x.new_zeros(batch, cell.hidden_size)
    states = []
    if isinstance(cell, nn.GRU):
        for t in range(x.shape[1]):
            h = cell(x[:, t : t + 1], h[None])[1][0]
            states.append(h)
        return model.head(h), states
    c = h
    drive = x @ cell.weight_ih_l0.T + cell.bias_ih_l0 + cell.bias_hh_l0
    for t in range(x.shape[1]):
        i, f, g, o = (drive[:, t] + h @ cell.weight_hh_l0.T).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        states.append(c if state == "cell" else h)
    return model.head(h), states


def state_gradient_by_lag(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    state: str = "hidden",
    relative: bool = True,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """``||dL/ds_{T-k}||`` for every lag ``k`` (entry 0 is the last step) of a recurrent regressor.

    ``s`` is the hidden state ``h`` (``state="hidden"``) or, for an LSTM, its cell state ``c``
    (``state="cell"``). The gradient is the total one, through every later step, as in
    :func:`~vglib.probes.bptt_gradient_norms`; the loss is the mean squared error against ``y``. Works for
    ``vglib.ElmanRNN`` and for ``vglib.build_recurrent``'s GRU and LSTM (run one step at a time so
    that every state is a tensor). With ``relative=True`` every entry is divided by the last
    step's. The computation runs on a copy in ``dtype`` (float64 by default, so that gradients
    many orders of magnitude below the last step's are not rounding noise); the model is untouched.
    """
    if not isinstance(model, (ElmanRNN, GatedRNN)):
        raise TypeError(f"model must be a vglib ElmanRNN or GatedRNN, got {type(model).__name__}")
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    if state == "cell" and not (isinstance(model, GatedRNN) and isinstance(model.cell, nn.LSTM)):
        raise ValueError(f"state='cell' needs an LSTM; {type(model).__name__} has only state='hidden'")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    if not isinstance(relative, bool):
        raise TypeError(f"relative must be True or False, got {relative!r}")
    x, y = _check_tensor("x", x), _check_tensor("y", y)
    copied = copy.deepcopy(model).to(dtype)
    if isinstance(copied, ElmanRNN):
        return bptt_gradient_norms(copied, x.to(dtype), y.to(dtype), by_lag=True, relative=relative)
    if x.ndim != 3 or x.shape[-1] != copied.cell.input_size:
        raise ValueError(f"x must have shape (batch, time, {copied.cell.input_size}), got {tuple(x.shape)}")
    with torch.enable_grad():
        output, states = _gated_states(copied, x.to(dtype), state)
        grads = torch.autograd.grad(default_loss(output, y.to(dtype)), states)
    norms = np.array([g.double().norm().item() for g in grads][::-1])
    if relative:
        if not norms[0] > 0:
            raise ValueError("relative=True needs a non-zero gradient at the last step, got 0")
        norms = norms / norms[0]
    return norms


def train_with_lag_probes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    probe_x: torch.Tensor,
    probe_y: torch.Tensor,
    probe_steps: tuple[int, ...],
    state: str = "hidden",
    **train_kwargs,
) -> tuple[TrainingHistory, dict[int, np.ndarray]]:
    """:func:`~vglib.train.train`, measuring :func:`state_gradient_by_lag` (relative, float64) on the
    batch ``(probe_x, probe_y)`` before training (step 0, if listed) and after each update listed
    in ``probe_steps``. The probes read a float64 copy, so the training run is the same as
    without them. Returns the history and ``{step: relative gradient by lag}``."""
    if isinstance(probe_steps, (str, bytes)) or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in probe_steps
    ):
        raise ValueError(f"probe_steps must be whole numbers >= 0, got {probe_steps!r}")
    if "callback" in train_kwargs:
        raise TypeError("train_with_lag_probes sets train's callback itself")
    probes: dict[int, np.ndarray] = {}

    def probe(step: int, trained: nn.Module) -> None:
        if step in probe_steps:
            probes[step] = state_gradient_by_lag(trained, probe_x, probe_y, state=state)

    probe(0, model)
    history = train(model, x, y, callback=probe, **train_kwargs)
    missing = sorted(set(int(s) for s in probe_steps) - set(probes))
    if missing:
        raise ValueError(f"probe_steps {missing} are beyond the {len(history.loss)} training steps")
    return history, dict(sorted(probes.items()))
