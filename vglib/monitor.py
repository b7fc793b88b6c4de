"""Measuring while training: ``GradientMonitor`` hooks a model (and, optionally, its optimizer) and
records, every ``every`` steps, per parameterised layer the gradient norm, the weight norm and the
update-to-weight ratio, and per activation module the mean and standard deviation of its output,
the fraction of saturated (sigmoid/tanh) or dead (ReLU) units, and the norm of the gradient
reaching it. What it records comes back as a ``MonitorTable`` (``vglib.tables``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ._tensors import exact_norm, to_numpy
from ._validation import check_positive_int
from .tables import COLUMNS, MonitorTable, RecordedMonitor

__all__ = ["GRADIENT_LOG_RANGE", "HISTOGRAM_BINS", "GradientMonitor"]

# Activation modules the monitor measures, and the saturation test on their *outputs* h:
# a unit is saturated where phi'(z) < 10% of its maximum, which for these two is a test on h.
_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu", nn.SELU: "selu", nn.GELU: "gelu", nn.PReLU: "prelu",
}  # fmt: skip
_SATURATED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": lambda h: h * (1 - h) < 0.1 * 0.25,  # sigmoid' = h (1 - h)
    "tanh": lambda h: 1 - h * h < 0.1,  # tanh' = 1 - h^2
}
_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)

HISTOGRAM_BINS = 40
"""Bins of every histogram the monitor records."""
_HISTOGRAM_RANGE = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, 5.0)}
GRADIENT_LOG_RANGE = (-30.0, 2.0)
"""The range of ``log10 |dL/dh|`` in gradient histograms; smaller values land in the lowest bin."""


class GradientMonitor:
    """Record gradient health per layer while a model trains.

    ::

        with GradientMonitor(model, optimizer, every=10) as monitor:
            for x, y in batches:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()          # the monitor records around this call
        table = monitor.table()

    With an ``optimizer`` the monitor records at each of its steps (and measures the real
    update ``W_after - W_before``, whatever the optimizer). Without one, call
    ``monitor.step(lr=...)`` after each backward pass; the update ratio is then ``lr ||dL/dW|| /
    ||W||``, the plain SGD update. Hooks cost nothing on steps that are not sampled; the
    monitor never changes weights, gradients or ``requires_grad``, and removes every hook on exit.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = 1,
        histograms: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.every = check_positive_int("every", every)
        self.model = model
        self.optimizer = optimizer
        self.layers = [
            (name or type(m).__name__, m)
            for name, m in model.named_modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))
        ]
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no parameters that require grad; GradientMonitor "
                "watches the layers that have them (Linear, Conv, LSTM, BatchNorm, ...)"
            )
        self.activations = [
            (name, m)
            for name, m in model.named_modules()
            if type(m) in _ACTIVATIONS or isinstance(m, _RECURRENT)
        ]
        self._groups = [[p for p in m.parameters(recurse=False) if p.requires_grad] for _, m in self.layers]
        self._flat = [p for group in self._groups for p in group]
        self.histograms_on = histograms
        self._histograms: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
        self.steps_taken = 0
        self._rows: list[tuple[int, str, str, dict[str, float]]] = []
        self._pending: dict[tuple[str, str], dict[str, float]] = {}  # (layer, kind) -> values
        self._snapshot: list[torch.Tensor] | None = None
        self._handles: list[Any] = []
        self._open = False
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> GradientMonitor:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach(self) -> GradientMonitor:
        """Register the hooks (``with`` does this)."""
        self._check_usable()
        if self._open:
            return self
        for name, module in self.activations:
            self._handles.append(module.register_forward_hook(self._activation_hook(name, module)))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(lambda *_: self._before_update()))
            self._handles.append(self.optimizer.register_step_post_hook(lambda *_: self._after_update()))
        self._open = True
        return self

    def close(self) -> None:
        """Remove every hook. The records stay readable; the monitor cannot record again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._open = False
        self._closed = True

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError(
                "this GradientMonitor is closed; its records are readable, make a new one to record"
            )

    @property
    def sampling(self) -> bool:
        """Whether the current step is one that is recorded."""
        return self.steps_taken % self.every == 0

    # -- hooks ------------------------------------------------------------------------------
    def _activation_hook(self, name: str, module: nn.Module) -> Callable[..., None]:
        kind = _ACTIVATIONS.get(type(module))

        def hook(_: nn.Module, __: Any, output: Any) -> None:
            if not self.sampling:
                return
            h = output[0] if isinstance(output, tuple) else output
            if not isinstance(h, torch.Tensor):
                return
            stats = self._pending.setdefault((name, "activation"), {})
            values = h.detach()
            # one pass each for the sum and the norm: E[h] and E[h^2] give the std
            count = values.numel()
            mean = float(values.sum()) / count
            second = float(torch.linalg.vector_norm(values)) ** 2 / count
            stats["mean"] = mean
            stats["std"] = math.sqrt(max(second - mean * mean, 0.0))
            if kind in _SATURATED:
                stats["saturated"] = float(_SATURATED[kind](values).float().mean())
            if kind == "relu" and values.ndim >= 2:  # dead: zero for every example of the batch
                peak = values.amax(dim=0)
                stats["dead"] = (peak.numel() - int(torch.count_nonzero(peak))) / peak.numel()
            if self.histograms_on:
                low, high = _HISTOGRAM_RANGE.get(kind or "", (-5.0, 5.0))
                counts = torch.histc(values.float(), bins=HISTOGRAM_BINS, min=low, max=high)
                self._histograms.setdefault((name, "activation"), []).append(
                    (self.steps_taken, to_numpy(counts))
                )
            if h.requires_grad:
                step = self.steps_taken

                def on_gradient(g: torch.Tensor) -> None:
                    stats["grad_norm"] = exact_norm(g)
                    if self.histograms_on:  # log10 |dL/dh|, zeros in the lowest bin
                        logs = torch.log10(g.detach().abs().double().clamp_min(10.0 ** GRADIENT_LOG_RANGE[0]))
                        counts = torch.histc(logs.float(), HISTOGRAM_BINS, *GRADIENT_LOG_RANGE)
                        self._histograms.setdefault((name, "gradient"), []).append((step, to_numpy(counts)))

                h.register_hook(on_gradient)

        return hook

    def _before_update(self) -> None:
        if self.sampling:
            self._record_gradients()
            flat = [p.detach() for p in self._flat]
            if self._snapshot is None:  # buffers made once, then reused: no allocation per step
                self._snapshot = [torch.empty_like(p) for p in flat]
            torch._foreach_copy_(self._snapshot, flat)

    def _after_update(self) -> None:
        if self.sampling and self._snapshot is not None:
            torch._foreach_sub_(self._snapshot, [p.detach() for p in self._flat])  # now before - after
            moved = iter(torch.stack(torch._foreach_norm(self._snapshot)).tolist())
            for (name, _), group in zip(self.layers, self._groups, strict=True):
                update = math.sqrt(sum(next(moved) ** 2 for _ in group))
                stats = self._pending[name, "parameters"]
                weight = stats["weight_norm"]
                stats["update_ratio"] = update / weight if weight > 0 else math.nan
        self._flush()

    def _record_gradients(self, lr: float | None = None) -> None:
        flat = [p.detach() for p in self._flat]
        present = [p.grad.detach() for p in self._flat if p.grad is not None]
        norms = torch.stack(torch._foreach_norm(flat + present)).tolist()  # one call, one copy out
        weights, fast = iter(norms[: len(flat)]), iter(norms[len(flat) :])
        for (name, _), group in zip(self.layers, self._groups, strict=True):
            grad = math.sqrt(
                sum(exact_norm(p.grad, next(fast)) ** 2 if p.grad is not None else 0.0 for p in group)
            )
            weight = math.sqrt(sum(next(weights) ** 2 for _ in group))
            stats = self._pending.setdefault((name, "parameters"), {})
            stats["grad_norm"] = grad
            stats["weight_norm"] = weight
            if lr is not None:
                stats["update_ratio"] = lr * grad / weight if weight > 0 else math.nan

    def step(self, lr: float | None = None) -> None:
        """End a training step by hand (when no optimizer was given), after ``backward()``."""
        self._check_usable()
        if self.optimizer is not None:
            raise RuntimeError("this monitor follows its optimizer's steps; do not call step() as well")
        if self.sampling:
            self._record_gradients(lr)
        self._flush()

    def _flush(self) -> None:
        if self.sampling:
            for (name, kind), stats in self._pending.items():
                self._rows.append((self.steps_taken, name, kind, dict(stats)))
        self._pending.clear()
        self.steps_taken += 1

    # -- results ------------------------------------------------------------------------------
    def histogram(self, layer: str, of: str = "activation") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, bin_edges, counts[step, bin])`` of an activation module's outputs (``of=
        "activation"``) or of ``log10 |dL/dh|`` (``of="gradient"``); needs ``histograms=True``."""
        if not self.histograms_on:
            raise RuntimeError("histograms were not recorded: make the monitor with histograms=True")
        if of not in ("activation", "gradient"):
            raise ValueError(f"unknown histogram {of!r}; valid choices are 'activation', 'gradient'")
        records = self._histograms.get((layer, of))
        if not records:
            known = sorted({name for name, kind in self._histograms if kind == of})
            raise KeyError(f"no {of} histograms for {layer!r}; layers with them: {known}")
        module = dict(self.activations).get(layer)
        if of == "gradient":
            low, high = GRADIENT_LOG_RANGE
        else:
            low, high = _HISTOGRAM_RANGE.get(_ACTIVATIONS.get(type(module), ""), (-5.0, 5.0))
        steps = np.array([step for step, _ in records])
        counts = np.stack([c for _, c in records])
        return steps, np.linspace(low, high, HISTOGRAM_BINS + 1), counts

    def recorded(self) -> RecordedMonitor:
        """The table recorded so far, kept apart from the model (see ``RecordedMonitor``)."""
        return RecordedMonitor(self.table())

    def table(self) -> MonitorTable:
        """Everything recorded so far, as columns."""
        columns = {c: np.array([r[3].get(c, np.nan) for r in self._rows], dtype=np.float64) for c in COLUMNS}
        return MonitorTable(
            step=np.array([r[0] for r in self._rows], dtype=np.int64),
            layer=np.array([r[1] for r in self._rows], dtype=object),
            kind=np.array([r[2] for r in self._rows], dtype=object),
            columns=columns,
        )
