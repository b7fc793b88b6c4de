"""Gradient health on any PyTorch model: a training-time monitor, a one-call diagnosis, a stalled-loss check.

``GradientMonitor`` hooks a model (and, optionally, its optimizer) and records, every ``every``
steps, per parameterised layer the gradient norm, the weight norm and the update-to-weight ratio,
and per activation module the mean and standard deviation of its output, the fraction of
saturated (sigmoid/tanh) or dead (ReLU) units, and the norm of the gradient reaching it.
``diagnose`` runs one forward and backward pass and says whether gradients vanish or explode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import check_positive_int
from .probes import _check_tensor, _default_loss

__all__ = [
    "EXPLODING_RATIO",
    "EXPLODING_RELATIVE_GRADIENT",
    "GRADIENT_LOG_RANGE",
    "HISTOGRAM_BINS",
    "STALL_WINDOW",
    "VANISHING_RATIO",
    "Diagnosis",
    "GradientMonitor",
    "MonitorTable",
    "RecordedMonitor",
    "diagnose",
    "loss_stalled",
]

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

COLUMNS = ("grad_norm", "weight_norm", "update_ratio", "mean", "std", "saturated", "dead")


@dataclass(frozen=True)
class MonitorTable:
    """The monitor's records as columns, one row per (sampled step, layer).

    ``kind`` is ``"parameters"`` for a layer with weights (``grad_norm`` = ||dL/dW||,
    ``weight_norm``, ``update_ratio`` = ||W_after - W_before|| / ||W_before||) and
    ``"activation"`` for an activation or recurrent module (``grad_norm`` = ||dL/dh|| of its
    output, ``mean``, ``std``, ``saturated``, ``dead``). Columns that do not apply hold NaN.
    """

    step: np.ndarray
    layer: np.ndarray
    kind: np.ndarray
    columns: dict[str, np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.step)

    def __getitem__(self, column: str) -> np.ndarray:
        if column in ("step", "layer", "kind"):
            return getattr(self, column)
        if column not in self.columns:
            raise KeyError(f"unknown column {column!r}; columns are step, layer, kind, {', '.join(COLUMNS)}")
        return self.columns[column]

    def layers(self, kind: str) -> list[str]:
        """Layer names of one kind, in the order the model first called them."""
        seen: dict[str, None] = {}
        for name, k in zip(self.layer, self.kind, strict=True):
            if k == kind:
                seen.setdefault(name)
        return list(seen)

    def matrix(self, column: str, kind: str = "parameters") -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(layer names, steps, values[layer, step])`` of one column: what a heat map draws."""
        names = self.layers(kind)
        mask = self.kind == kind
        steps = np.unique(self.step[mask])
        values = np.full((len(names), len(steps)), np.nan)
        row_of = {n: i for i, n in enumerate(names)}
        col_of = {s: j for j, s in enumerate(steps)}
        for s, n, v in zip(self.step[mask], self.layer[mask], self[column][mask], strict=True):
            values[row_of[n], col_of[s]] = v
        return names, steps, values


@dataclass(frozen=True)
class RecordedMonitor:
    """What is kept of a ``GradientMonitor`` once training is over: its table, without the model
    and the hooks (light to send between processes and to record)."""

    recorded_table: MonitorTable

    def table(self) -> MonitorTable:
        return self.recorded_table


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
                    (self.steps_taken, counts.numpy())
                )
            if h.requires_grad:
                step = self.steps_taken

                def on_gradient(g: torch.Tensor) -> None:
                    stats["grad_norm"] = _norm(g)
                    if self.histograms_on:  # log10 |dL/dh|, zeros in the lowest bin
                        logs = torch.log10(g.detach().abs().double().clamp_min(10.0 ** GRADIENT_LOG_RANGE[0]))
                        counts = torch.histc(logs.float(), HISTOGRAM_BINS, *GRADIENT_LOG_RANGE)
                        self._histograms.setdefault((name, "gradient"), []).append((step, counts.numpy()))

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
                sum(_norm(p.grad, next(fast)) ** 2 if p.grad is not None else 0.0 for p in group)
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


# Below this a float32 norm may have lost its squares to underflow (or above it to overflow):
# such norms are recomputed with float64 accumulation. Typical norms take the fast float32 path.
_FLOAT32_SAFE = (1e-15, 1e15)


def _norm(tensor: torch.Tensor | None, fast: float | None = None) -> float:
    """``||tensor||``, exact for tiny (vanishing) and huge (exploding) values alike."""
    if tensor is None:
        return 0.0
    value = float(torch.linalg.vector_norm(tensor.detach())) if fast is None else fast
    if not _FLOAT32_SAFE[0] < value < _FLOAT32_SAFE[1]:
        value = float(torch.linalg.vector_norm(tensor.detach(), dtype=torch.float64))
    return value


# -- diagnose ------------------------------------------------------------------------------------

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
    grad_norms = np.array([math.sqrt(sum(_norm(next(grads)) ** 2 for _ in group)) for group in params])
    weight_norms = np.array([math.sqrt(sum(_norm(p) ** 2 for p in group)) for group in params])
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
