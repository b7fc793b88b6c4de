"""Measuring while training: ``GradientMonitor`` hooks a model (and, optionally, its optimizer) and
records, every ``every`` steps, per parameterised layer the gradient norm, the weight norm and the
update-to-weight ratio, and per call of an activation module the mean and standard deviation of its
output, the median over units of each unit's standard deviation over the batch, the fraction of
saturated (sigmoid/tanh) or dead (ReLU family) units, and the norm of the gradient reaching it. What
it records comes back as a ``MonitorTable`` (``vglib.tables``).

Which modules count as activations is a registry of classes, each with a *kind* that says which
test applies to its outputs (see ``ACTIVATION_KINDS``); ``register_activation`` adds a class to it,
and ``GradientMonitor(..., activations={cls: kind})`` does so for one monitor.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._tensors import _FLOAT32_SAFE, exact_norm, to_numpy
from ._validation import check_choice, check_positive_int
from .tables import COLUMNS, GLOBAL_ROW, LAYER_COLUMNS, MonitorTable, RecordedMonitor

__all__ = [
    "ACTIVATION_KINDS",
    "GRADIENT_LOG_RANGE",
    "HISTOGRAM_BINS",
    "GradientMonitor",
    "StepCallback",
    "register_activation",
]

ACTIVATION_KINDS = ("sigmoid", "tanh", "relu", "shrink", "other")
"""What an activation module's *kind* says about its outputs ``h``, and so which test applies:

- ``"sigmoid"``: the logistic sigmoid, ``phi' = h (1 - h)``. A unit is *saturated* where ``phi'`` is
  below 10 % of its maximum (``h (1 - h) < 0.025``). Histogram range [0, 1].
- ``"tanh"``: the hyperbolic tangent, ``phi' = 1 - h^2``; saturated where ``1 - h^2 < 0.1``.
  Histogram range [-1, 1].
- ``"relu"``: outputs ``>= 0``, exactly 0 where the derivative is exactly 0 (ReLU, ReLU6,
  ``Threshold`` with ``threshold >= 0`` and ``value == 0``, ``Hardtanh`` with ``min_val == 0``,
  ``LeakyReLU``/``RReLU`` with slope 0). A unit is *dead* when it is 0 for every example of the batch:
  no gradient passes it. Histogram range [0, 5] (``Hardtanh``/``ReLU6``: [min_val, max_val]).
- ``"shrink"``: outputs of both signs, exactly 0 where the derivative is exactly 0 (``Hardshrink``,
  ``Softshrink``): the same *dead* test. Histogram range [-5, 5].
- ``"other"``: neither test is exact, so neither is made (ELU, GELU, SiLU, Softplus, LeakyReLU, ...);
  mean, std, unit_std and the gradient norm are still recorded. Histogram range [-5, 5].

Saturation is tested only where the test on ``h`` is exact (sigmoid, tanh). ``Hardswish`` is
``"other"``, not ``"shrink"``: its output is also exactly 0 at ``z = 0``, where its derivative is 1/2.
"""

_KindRule = str | None | Callable[[nn.Module], str]

StepCallback = Callable[["GradientMonitor", MonitorTable], None]
"""``fn(monitor, step_table)``: called once after each *sampled* step has been recorded, with a
``MonitorTable`` that holds that step's rows only (see ``GradientMonitor``'s ``callbacks``)."""

Selector = str | type[nn.Module]
"""A module name glob pattern (``fnmatch``, on the dotted name ``model.named_modules()`` gives) or
an ``nn.Module`` subclass: what ``include=`` / ``exclude=`` take."""


def _threshold_kind(module: nn.Module) -> str:
    # y = x if x > threshold else value: exactly 0 only on the flat side when value == 0 <= threshold
    return "relu" if module.value == 0 and module.threshold >= 0 else "other"  # type: ignore[operator]


def _hardtanh_kind(module: nn.Module) -> str:
    return "relu" if module.min_val == 0 else "other"  # clamp(x, 0, max): zero exactly where phi' = 0


def _leaky_kind(module: nn.Module) -> str:
    return "relu" if module.negative_slope == 0 else "other"


def _rrelu_kind(module: nn.Module) -> str:
    return "relu" if module.lower == 0 and module.upper == 0 else "other"


# The registry: a class (and, through isinstance, its subclasses) and its kind. ``None`` means
# "not an activation" (a subclass of a watched class can be left out that way).
_REGISTRY: dict[type[nn.Module], _KindRule] = {
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
    nn.ReLU: "relu", nn.ReLU6: "relu", nn.Threshold: _threshold_kind, nn.Hardtanh: _hardtanh_kind,
    nn.Hardshrink: "shrink", nn.Softshrink: "shrink",
    nn.LeakyReLU: _leaky_kind, nn.RReLU: _rrelu_kind, nn.PReLU: "other",
    nn.ELU: "other", nn.CELU: "other", nn.SELU: "other", nn.GELU: "other", nn.SiLU: "other",
    nn.Mish: "other", nn.Hardswish: "other", nn.Hardsigmoid: "other", nn.Softplus: "other",
    nn.Softsign: "other", nn.GLU: "other", nn.LogSigmoid: "other", nn.Tanhshrink: "other",
}  # fmt: skip
_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)  # watched too: their output sequence, kind "other"

HISTOGRAM_BINS = 40
"""Bins of every histogram the monitor records."""
_HISTOGRAM_RANGE = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, 5.0)}
_CLASS_HISTOGRAM_RANGE: dict[type[nn.Module], tuple[float, float]] = {
    nn.Hardsigmoid: (0.0, 1.0),
    nn.Softsign: (-1.0, 1.0),
}
GRADIENT_LOG_RANGE = (-30.0, 2.0)
"""The range of ``log10 |dL/dh|`` in gradient histograms; smaller values land in the lowest bin."""

# |h - 1/2| > _SIGMOID_EDGE  <=>  h (1 - h) = 1/4 - (h - 1/2)^2 < 0.025;  |h| > _TANH_EDGE  <=>  1 - h^2 < 0.1
_SIGMOID_EDGE = math.sqrt(0.25 - 0.1 * 0.25)
_TANH_EDGE = math.sqrt(1 - 0.1)
_CALL_SEPARATOR = "#"
_SUMMARY_KINDS = {"global": 1, "group": 2}  # rows after the layers', in this order


def _check_activation_class(cls: object) -> type[nn.Module]:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(
            f"an activation must be an nn.Module subclass (a class, not an instance); got {cls!r}"
        )
    return cls


def _check_kind(cls: type, kind: object) -> str | None:
    if kind is None:
        return None
    return check_choice(f"activation kind of {cls.__name__}", kind, ACTIVATION_KINDS)


def register_activation(cls: type[nn.Module], kind: str | None) -> None:
    """Watch every instance of ``cls`` (and of its subclasses) as an activation of ``kind``, one of
    ``ACTIVATION_KINDS`` (which says which dead/saturated test applies); ``kind=None`` stops watching
    it. Applies to monitors made afterwards; ``GradientMonitor(..., activations=...)`` does the same
    for one monitor."""
    cls = _check_activation_class(cls)
    _REGISTRY[cls] = _check_kind(cls, kind)


def _kind_of(module: nn.Module, extra: Mapping[type[nn.Module], str | None]) -> str | None:
    """The kind of ``module``: the most specific class of its type's MRO that the monitor's own
    ``activations`` or the registry name; ``None`` if neither does (or if one says ``None``)."""
    for cls in type(module).__mro__:
        rule: _KindRule
        if cls in extra:
            rule = extra[cls]
        elif cls in _REGISTRY:
            rule = _REGISTRY[cls]
        else:
            continue
        return rule(module) if callable(rule) else rule
    return "other" if isinstance(module, _RECURRENT) else None


def _histogram_range(module: nn.Module, kind: str) -> tuple[float, float]:
    """The range of ``module``'s output histograms: its own where it is bounded, else its kind's."""
    if isinstance(module, nn.Hardtanh):  # ReLU6 too: [0, 6]
        return float(module.min_val), float(module.max_val)
    for cls, span in _CLASS_HISTOGRAM_RANGE.items():
        if isinstance(module, cls):
            return span
    return _HISTOGRAM_RANGE.get(kind, (-5.0, 5.0))


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 or float64 (half precision is widened: its sums would round)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _squared_norm(g: torch.Tensor) -> float | torch.Tensor:
    """``||g||^2`` without underflow: on the CPU a float (the float32 norm, recomputed in float64
    where it may have under- or overflowed); elsewhere a float64 tensor on ``g``'s device, so that
    no device sync happens inside the backward pass."""
    if g.device.type == "cpu":
        return exact_norm(_as_float(g)) ** 2
    return torch.linalg.vector_norm(g, dtype=torch.float64).square()


# Outputs and gradients of at most _STAGE_LIMIT entries are kept in the hook (outputs that autograd
# saves for backward as they are, others copied) and reduced at the end of the step, all those of
# one shape together: for small layers the cost is the number of torch calls, not the data. Larger
# ones (and any beyond _STAGE_BUDGET entries in a step) are reduced in the hook, into per-unit
# vectors. Either way nothing reaches the host before the step ends, and then in one transfer per
# device: no device sync per module.
_STAGE_LIMIT = 1 << 14
_STAGE_BUDGET = 1 << 24

Ticket = tuple[torch.device, int]


class _HostBatch:
    """Small tensors bound for the host, moved in one ``.tolist()`` per device."""

    def __init__(self) -> None:
        self._queued: dict[torch.device, list[torch.Tensor]] = {}
        self._sizes: dict[torch.device, int] = {}
        self._host: dict[torch.device, list[float]] = {}

    def add(self, values: torch.Tensor) -> Ticket:
        """Queue ``values`` (flattened); the ticket reads them back after ``fetch()``."""
        device = values.device
        offset = self._sizes.get(device, 0)
        self._queued.setdefault(device, []).append(values.reshape(-1))
        self._sizes[device] = offset + values.numel()
        return device, offset

    def fetch(self) -> None:
        # torch.cat promotes to the widest dtype queued (float64: the sums below are)
        self._host = {device: torch.cat(queued).tolist() for device, queued in self._queued.items()}

    def value(self, ticket: Ticket, k: int = 0) -> float:
        """The ``k``-th value queued with ``ticket``."""
        return self._host[ticket[0]][ticket[1] + k]


class _Chunk:
    """Per-unit statistics of ``k`` forward passes through calls with the same units, as ``(k, U)``
    tensors: each unit's mean and sum of squared deviations over the pass's ``examples``, whether
    the unit was ever non-zero (ReLU family) and the pass's saturated count (sigmoid, tanh)."""

    __slots__ = (
        "alive", "examples", "medians", "owners", "per_unit", "saturated", "tickets", "unit_m2", "unit_mean",
    )  # fmt: skip

    def __init__(
        self,
        owners: list[_CallRecord],
        examples: int,
        unit_mean: torch.Tensor,
        unit_m2: torch.Tensor,
        alive: torch.Tensor | None,
        saturated: torch.Tensor | None,
        per_unit: bool,
    ):
        self.owners, self.examples, self.per_unit = owners, examples, per_unit
        self.unit_mean, self.unit_m2, self.alive, self.saturated = unit_mean, unit_m2, alive, saturated
        self.tickets: dict[str, Ticket] = {}
        self.medians: list[float] = []

    @classmethod
    def of(
        cls, owners: list[_CallRecord], passes: torch.Tensor, kind: str, per_unit: bool, scratch: _Scratch
    ) -> _Chunk:
        """The statistics of ``passes``: ``k`` outputs of shape ``(examples, units)``, stacked."""
        # deviations from each unit's first example (the shifted-data algorithm): accurate where a
        # unit's spread is tiny next to its mean, and exactly 0 for a unit that never changes
        examples, first = passes.shape[1], passes[:, :1]
        scratch = torch.sub(passes, first, out=scratch.like(passes))
        shifted_sum = scratch.sum(1)
        unit_m2 = scratch.square_().sum(1).sub_(shifted_sum.square() / examples).clamp_(min=0)
        unit_mean = shifted_sum.div_(examples).add_(first[:, 0])
        alive = saturated = None
        if per_unit and kind == "relu":  # outputs >= 0: a unit is alive where its peak is > 0
            alive = passes.amax(1) != 0
        elif per_unit and kind == "shrink":
            alive = (passes.amax(1) != 0) | (passes.amin(1) != 0)
        if kind in ("sigmoid", "tanh"):  # 1.0 where h lies outside the unsaturated band, summed
            low, high = (
                (0.5 - _SIGMOID_EDGE, 0.5 + _SIGMOID_EDGE) if kind == "sigmoid" else (-_TANH_EDGE, _TANH_EDGE)
            )
            torch.clamp(passes, low, high, out=scratch).ne_(passes)
            wide = scratch[0].numel() > 2**24  # float32 counts are exact below 2^24
            saturated = scratch.sum((1, 2), dtype=torch.float64 if wide else None)
        return cls(owners, examples, unit_mean, unit_m2, alive, saturated, per_unit)

    def single(self, k: int) -> _Chunk:
        """Row ``k`` alone."""
        alive = None if self.alive is None else self.alive[k : k + 1]
        saturated = None if self.saturated is None else self.saturated[k : k + 1]
        return _Chunk(
            [self.owners[k]], self.examples, self.unit_mean[k : k + 1], self.unit_m2[k : k + 1],
            alive, saturated, self.per_unit,
        )  # fmt: skip

    @classmethod
    def concat(cls, chunks: list[_Chunk]) -> _Chunk:
        """Chunks of the same ``key()``, as one."""
        if len(chunks) == 1:
            return chunks[0]
        first = chunks[0]
        return cls(
            [owner for chunk in chunks for owner in chunk.owners],
            first.examples,
            torch.cat([chunk.unit_mean for chunk in chunks]),
            torch.cat([chunk.unit_m2 for chunk in chunks]),
            None if first.alive is None else torch.cat([c.alive for c in chunks]),  # type: ignore[misc]
            None if first.saturated is None else torch.cat([c.saturated for c in chunks]),  # type: ignore[misc]
            first.per_unit,
        )

    def key(self) -> tuple[Any, ...]:
        """What chunks must share to be summarised together."""
        mean = self.unit_mean
        return (mean.device, mean.dtype, mean.shape[1], self.examples, self.per_unit,
                self.alive is None, self.saturated is None)  # fmt: skip

    def queue(self, batch: _HostBatch) -> None:
        """Queue what the rows need, a few numbers per owner: the sums over units of the unit means,
        their squares and the units' sums of squares (in float64), the median unit sum of squares,
        the live units, the saturated count."""
        means, m2 = self.unit_mean.to(torch.float64), self.unit_m2.to(torch.float64)
        self.tickets["sums"] = batch.add(torch.stack([means, means * means, m2]).sum(2))
        if self.per_unit:  # sqrt is monotonic: the median unit's m2 gives the median unit std
            if self.unit_m2.device.type == "cpu":  # NumPy's selection is several times faster there
                middle = (self.unit_m2.shape[1] - 1) // 2
                self.medians = np.partition(to_numpy(self.unit_m2), middle, axis=1)[:, middle].tolist()
            else:
                self.tickets["median"] = batch.add(self.unit_m2.median(1).values)
        if self.alive is not None:
            self.tickets["alive"] = batch.add(self.alive.sum(1))
        if self.saturated is not None:
            self.tickets["saturated"] = batch.add(self.saturated)

    def finish(self, batch: _HostBatch) -> None:
        """Each owner's row values, from what ``queue`` sent to the host."""
        units, examples, k = self.unit_mean.shape[1], self.examples, len(self.owners)
        sums = self.tickets["sums"]
        for i, owner in enumerate(self.owners):
            mean = batch.value(sums, i) / units
            # the variance over all entries: the variance of the unit means + the mean unit variance
            between = max(batch.value(sums, k + i) / units - mean * mean, 0.0)
            within = batch.value(sums, 2 * k + i) / (units * examples)
            values = owner.values
            values["mean"], values["std"] = mean, math.sqrt(between + within)
            if self.per_unit:  # the lower median for an even count
                median = self.medians[i] if self.medians else batch.value(self.tickets["median"], i)
                values["unit_std"] = math.sqrt(median / examples)
            if "alive" in self.tickets:
                values["dead"] = 1.0 - batch.value(self.tickets["alive"], i) / units
            if "saturated" in self.tickets:
                values["saturated"] = batch.value(self.tickets["saturated"], i) / (units * examples)


def _merge(record: _CallRecord, parts: list[_Chunk]) -> _Chunk:
    """One call's passes of a step (micro-batches), as one pass over all their examples."""
    wide = torch.float64
    saturated = None if parts[0].saturated is None else sum(p.saturated.sum() for p in parts).reshape(1)  # type: ignore[union-attr]
    if len({(p.unit_mean.shape, p.per_unit) for p in parts}) == 1:
        counts = torch.tensor(
            [float(p.examples) for p in parts], dtype=wide, device=parts[0].unit_mean.device
        )
        means = torch.cat([p.unit_mean for p in parts]).to(wide)
        mean = (means * counts[:, None]).sum(0) / counts.sum()
        m2 = torch.cat([p.unit_m2 for p in parts]).to(wide).sum(0)
        m2 = m2 + ((means - mean).square() * counts[:, None]).sum(0)  # Chan et al.'s pooled sum of squares
        alive = None if parts[0].alive is None else torch.cat([p.alive for p in parts]).any(0)[None]  # type: ignore[misc]
        examples = sum(p.examples for p in parts)
        return _Chunk([record], examples, mean[None], m2[None], alive, saturated, parts[0].per_unit)
    # the units differ between passes (a sequence length, say): pool all entries, no per-unit stats
    sizes = torch.tensor([float(p.examples * p.unit_mean.numel()) for p in parts], dtype=wide)
    pass_means = torch.stack([p.unit_mean.to(wide).mean() for p in parts])
    sizes = sizes.to(pass_means.device)
    mean = (pass_means * sizes).sum() / sizes.sum()
    m2 = torch.stack(
        [p.unit_m2.to(wide).sum() + p.examples * (p.unit_mean.to(wide) - mean).square().sum() for p in parts]
    ).sum()
    examples = sum(p.examples * p.unit_mean.numel() for p in parts)
    return _Chunk([record], examples, mean.reshape(1, 1), m2.reshape(1, 1), None, saturated, False)


class _CallRecord:
    """What one call of an activation module contributed to one step (all its passes)."""

    __slots__ = ("grad_histogram", "grad_sq", "grads", "histogram", "kind", "passes", "span", "values")

    def __init__(self, kind: str, span: tuple[float, float]):
        self.kind, self.span = kind, span
        self.passes = 0
        self.grads: list[torch.Tensor] = []  # copies of small gradients, reduced at the end of the step
        self.grad_sq: float | torch.Tensor | None = None  # sum ||dL/dh||^2 of the large ones
        self.histogram: torch.Tensor | None = None
        self.grad_histogram: torch.Tensor | None = None
        self.values: dict[str, float] = {}


class _Scratch:
    """One working buffer for the reductions, reused from call to call (no allocation per call)."""

    LIMIT = 1 << 22  # entries; larger outputs get a buffer of their own

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def like(self, t: torch.Tensor) -> torch.Tensor:
        b = self.buffer
        if t.numel() > self.LIMIT:
            return torch.empty_like(t)
        if b is None or b.numel() < t.numel() or b.dtype != t.dtype or b.device != t.device:
            b = self.buffer = torch.empty(
                max(t.numel(), 0 if b is None else b.numel()), dtype=t.dtype, device=t.device
            )
        return b[: t.numel()].view(t.shape)


class _StepRecorder:
    """The activation statistics of one step, from the hooks to the rows."""

    def __init__(self, histograms: bool, scratch: _Scratch):
        self.histograms = histograms
        self.scratch = scratch
        self.calls: dict[str, _CallRecord] = {}
        self.chunks: list[_Chunk] = []  # reduced in the hook (large outputs)
        self.staged: dict[tuple[Any, ...], list[tuple[_CallRecord, torch.Tensor]]] = {}
        self.staged_grads: dict[tuple[Any, ...], list[tuple[_CallRecord, torch.Tensor]]] = {}
        self.staged_entries = 0

    def record(self, call: str, kind: str, span: tuple[float, float]) -> _CallRecord:
        found = self.calls.get(call)
        if found is None:
            found = self.calls[call] = _CallRecord(kind, span)
        return found

    def add_output(self, record: _CallRecord, values: torch.Tensor, kept: bool = False) -> None:
        """Take one pass's output of a call. ``kept``: autograd holds ``values`` for the backward
        pass, so the model cannot change them in place (backward would fail): no copy is needed."""
        record.passes += 1
        if self.histograms:
            counts = torch.histc(
                _as_float(values), bins=HISTOGRAM_BINS, min=record.span[0], max=record.span[1]
            )
            record.histogram = counts if record.histogram is None else record.histogram + counts
        numel = values.numel()
        if numel <= _STAGE_LIMIT and self.staged_entries + numel <= _STAGE_BUDGET:
            self.staged_entries += numel
            key = (values.shape, values.dtype, values.device, record.kind)
            self.staged.setdefault(key, []).append((record, values if kept else values.clone()))
        else:
            per_unit = values.ndim >= 2  # the first dimension is the batch
            flat = _as_float(values.reshape(values.shape[0] if per_unit else 1, -1))
            self.chunks.append(_Chunk.of([record], flat[None], record.kind, per_unit, self.scratch))

    def add_gradient(self, record: _CallRecord, g: torch.Tensor) -> None:
        g = g.detach()
        numel = g.numel()
        if numel <= _STAGE_LIMIT and self.staged_entries + numel <= _STAGE_BUDGET:
            self.staged_entries += numel
            self.staged_grads.setdefault((g.shape, g.dtype, g.device), []).append((record, g.clone()))
        else:
            squared = _squared_norm(g)
            record.grad_sq = squared if record.grad_sq is None else record.grad_sq + squared
        if self.histograms:  # log10 |dL/dh|, zeros in the lowest bin
            logs = torch.log10(g.abs().double().clamp_min(10.0 ** GRADIENT_LOG_RANGE[0]))
            counts = torch.histc(logs.float(), HISTOGRAM_BINS, *GRADIENT_LOG_RANGE)
            record.grad_histogram = (
                counts if record.grad_histogram is None else record.grad_histogram + counts
            )

    def absorb(self, earlier: _StepRecorder) -> None:
        """Take in ``earlier``'s passes (micro-batches recorded before these), as if this recorder
        had seen them all: a call recorded by both becomes one record over every pass."""
        same: dict[int, _CallRecord] = {}  # id(earlier's record) -> the record it joins
        calls: dict[str, _CallRecord] = {}
        for call, record in earlier.calls.items():
            target = self.calls.get(call)
            if target is None:
                calls[call] = record
                continue
            calls[call] = same[id(record)] = target
            target.passes += record.passes
            for name in ("grad_sq", "histogram", "grad_histogram"):
                mine, theirs = getattr(target, name), getattr(record, name)
                if theirs is not None:
                    setattr(target, name, theirs if mine is None else mine + theirs)
        calls.update((call, record) for call, record in self.calls.items() if call not in calls)
        self.calls = calls

        def joined(record: _CallRecord) -> _CallRecord:
            return same.get(id(record), record)

        for chunk in earlier.chunks:
            chunk.owners = [joined(owner) for owner in chunk.owners]
        self.chunks = earlier.chunks + self.chunks
        for mine, theirs in ((self.staged, earlier.staged), (self.staged_grads, earlier.staged_grads)):
            for key, entries in theirs.items():
                mine[key] = [(joined(record), values) for record, values in entries] + mine.get(key, [])
        self.staged_entries += earlier.staged_entries

    def rows(self) -> list[tuple[str, dict[str, float]]]:
        """Every call's row values, with one transfer to the host per device."""
        chunks = list(self.chunks)
        for (shape, _, _, kind), staged in self.staged.items():
            per_unit = len(shape) >= 2
            passes = torch.stack([values for _, values in staged])
            passes = _as_float(passes.reshape(len(staged), shape[0] if per_unit else 1, -1))
            chunks.append(_Chunk.of([record for record, _ in staged], passes, kind, per_unit, self.scratch))
        several: dict[int, list[_Chunk]] = {}
        whole: dict[tuple[Any, ...], list[_Chunk]] = {}
        for chunk in chunks:
            if all(owner.passes == 1 for owner in chunk.owners):
                whole.setdefault(chunk.key(), []).append(chunk)
                continue
            for k, owner in enumerate(chunk.owners):  # micro-batches: merged per call below
                target = (
                    whole.setdefault(chunk.key(), [])
                    if owner.passes == 1
                    else several.setdefault(id(owner), [])
                )
                target.append(chunk.single(k))
        for parts in several.values():
            merged = _merge(parts[0].owners[0], parts)
            whole.setdefault(merged.key(), []).append(merged)
        batch = _HostBatch()
        summaries = [_Chunk.concat(same) for same in whole.values()]
        for summary in summaries:
            summary.queue(batch)
        grad_tickets = []
        for staged in self.staged_grads.values():  # small gradients of one shape: one reduction
            norms = torch.linalg.vector_norm(
                torch.stack([g for _, g in staged]).reshape(len(staged), -1), dim=1
            )
            grad_tickets.append((staged, batch.add(norms)))
        large = [r for r in self.calls.values() if isinstance(r.grad_sq, torch.Tensor)]  # on a GPU
        large_tickets = [batch.add(r.grad_sq) for r in large]  # type: ignore[arg-type]
        batch.fetch()
        for summary in summaries:
            summary.finish(batch)
        squared: dict[int, float] = {}
        low, high = _FLOAT32_SAFE
        for staged, ticket in grad_tickets:
            for k, (record, g) in enumerate(staged):
                norm = batch.value(ticket, k)  # recomputed in float64 where float32 may have lost it
                norm = norm if low < norm < high else exact_norm(g)
                squared[id(record)] = squared.get(id(record), 0.0) + norm * norm
        for record, ticket in zip(large, large_tickets, strict=True):
            squared[id(record)] = squared.get(id(record), 0.0) + batch.value(ticket)
        out = []
        for call, record in self.calls.items():
            total = squared.get(id(record))
            if isinstance(record.grad_sq, float):
                total = (total or 0.0) + record.grad_sq
            if total is not None:
                record.values["grad_norm"] = math.sqrt(total)
            out.append((call, record.values))
        return out


def _selectors(name: str, value: object) -> tuple[Selector, ...] | None:
    """``include``/``exclude`` as a tuple of patterns and classes (``None`` stays ``None``)."""
    if value is None:
        return None
    items = (value,) if isinstance(value, str | type) else value
    if not isinstance(items, Iterable):
        raise TypeError(
            f"{name} must be a module name pattern (str), an nn.Module subclass or a sequence of them; "
            f"got {type(value).__name__}"
        )
    items = tuple(items)
    for item in items:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise TypeError(
                f"{name} takes module name patterns (str, fnmatch syntax) and nn.Module subclasses; "
                f"got {item!r}"
            )
    return items


def _selected_modules(
    model: nn.Module, include: tuple[Selector, ...] | None, exclude: tuple[Selector, ...] | None
) -> set[int]:
    """The ids of the modules ``include``/``exclude`` keep. A selector matches a module, and then
    everything inside it, when a pattern matches the module's dotted name (the model itself: its
    class name) or a class is the module's (subclasses included)."""

    def matches(selectors: tuple[Selector, ...], names: list[str], modules: list[nn.Module]) -> bool:
        for selector in selectors:
            if isinstance(selector, str):
                if any(fnmatch.fnmatchcase(n, selector) for n in names):
                    return True
            elif any(isinstance(m, selector) for m in modules):
                return True
        return False

    kept: set[int] = set()
    root = type(model).__name__
    chain: dict[str, tuple[list[str], list[nn.Module]]] = {}  # name -> itself and its ancestors
    for name, module in model.named_modules():
        parent = chain.get(name.rpartition(".")[0], ([], [])) if name else ([], [])
        names, modules = [*parent[0], name or root], [*parent[1], module]
        chain[name] = (names, modules)
        if include is not None and not matches(include, names, modules):
            continue
        if exclude is not None and matches(exclude, names, modules):
            continue
        kept.add(id(module))
    return kept


def _setting(group: Mapping[str, Any], key: str) -> float:
    """An optimizer group's setting as a float (a tensor learning rate too); NaN where absent."""
    value = group.get(key)
    if isinstance(value, torch.Tensor):
        return float(value.item())
    return float(value) if isinstance(value, int | float) else math.nan


def _tensor_norms(tensors: list[torch.Tensor], norm_type: float) -> list[float]:
    """Each tensor's ``norm_type``-norm, with one copy to the host. The largest entry comes from
    ``aminmax`` (one pass; on the CPU ``_foreach_norm`` has no fast kernel for ``inf``)."""
    if not tensors:
        return []
    with torch.no_grad():
        if norm_type != math.inf:
            return torch.stack(torch._foreach_norm(tensors, norm_type)).tolist()
        extremes = [
            torch.stack(torch.aminmax(t)).double() if t.numel() else t.new_zeros(2, dtype=torch.float64)
            for t in tensors
        ]
        by_device: dict[torch.device, list[int]] = {}
        for k, e in enumerate(extremes):
            by_device.setdefault(e.device, []).append(k)
        out = [0.0] * len(tensors)
        for members in by_device.values():
            pairs = torch.stack([extremes[k] for k in members])
            for k, value in zip(members, torch.maximum(-pairs[:, 0], pairs[:, 1]).tolist(), strict=True):
                out[k] = value
        return out


def _norm_type(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"norm_type must be a number >= 1 or math.inf, got {value!r}")
    value = float(value)
    if not (value >= 1):
        raise ValueError(
            f"norm_type must be >= 1 (2.0: the Euclidean norm; math.inf: the largest entry), got {value}"
        )
    return value


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
    ||W||``, the plain SGD update. The monitor never changes weights, gradients or
    ``requires_grad``, and removes every hook on exit; on steps that are not sampled it has no
    module hook on the model at all.

    What a sampled step holds:

    - **Parameter rows** (one per module with trainable parameters of its own): ``||dL/dW||`` of
      the gradient the step uses, ``||W||`` before it, and the update ratio. With a closure
      (``optimizer.step(closure)``, as ``torch.optim.LBFGS`` needs) that is the gradient of the
      closure's *first* evaluation, at the weights the step starts from, like any other
      optimizer's; LBFGS re-evaluates the closure at trial points and leaves in ``.grad`` the
      gradient of its last evaluation, which is not what is recorded. The update ratio is the
      whole step's ``||W_after - W_before|| / ||W_before||``. The activation rows of a closure's
      step are its first evaluation's, and also the passes made before ``step()`` when its
      gradient still holds theirs: the closure adds to gradients it did not reset (Lightning runs
      the last micro-batch of an accumulation that way) or runs no backward pass (Lightning's
      manual optimization); after a closure that resets the gradients (``zero_grad()``), not.
    - **Activation rows**, one per *call* of an activation module: a module called several times
      per forward pass (torchvision's ``BasicBlock.relu``, one ``self.act`` shared by every layer)
      gives rows ``"act"``, ``"act#2"``, ``"act#3"``, ... numbered in call order within each
      forward pass (a pass starts where ``model`` is called, or at the first call after a
      backward pass); every statistic of a row, and its histograms, come from that call alone.
      A *unit* is one entry of one example's output (all dimensions but the first, the batch).
    - **Only training passes count.** Forward passes run with gradients disabled
      (``torch.no_grad()``, ``torch.inference_mode()``: how ``vglib.train`` evaluates) are not
      recorded. A forward pass with gradients on is taken for part of the training step.
    - **Gradient accumulation.** When several forward/backward passes (micro-batches) precede
      one optimizer step, the activation rows pool all of them: mean, std, unit_std and the
      saturated fraction over every example of every micro-batch, a unit dead only if it was 0
      in all of them, ``grad_norm`` = ``sqrt(sum ||dL/dh||^2)`` over the micro-batches (the
      norm of dL/dh over the step's examples), histograms summed. For equal micro-batches these
      are the values one big batch would give. Parameter rows use the accumulated ``.grad``.
    - **Row order**: the order in which the forward pass first *uses* each layer, read off the
      first sampled step's backward pass (which meets the layers in reverse); so a container's
      own parameter (a positional embedding, a LayerScale) and a layer used functionally
      (``MultiheadAttention.out_proj``) sit where they are used. Layers whose parameters got no
      gradient in that step come last, in registration order; activation calls that no gradient
      reached come after, in call order. ``table()``, ``MonitorTable.layers()`` and ``matrix()``
      follow this order.

    - **Cost.** The copy of the weights that the update ratio needs is made at a sampled step
      and freed after it (kept from step to step only when ``every=1``, where every step needs
      it, so the peak memory is the same either way). Statistics stay on the model's device
      until the step ends, then reach the host in one transfer; histograms too (through
      ``vglib._tensors.to_numpy``, on any device).

    ``activations`` maps activation classes (subclasses included) to their kind, one of
    ``ACTIVATION_KINDS`` (``None``: do not watch), on top of the registry that
    ``register_activation`` extends: ``GradientMonitor(model, opt, activations={MyAct: "relu"})``.
    Functional activations (``F.relu`` in a ``forward``) are not modules, so are not watched.

    - **Summary rows** (``table(summaries=True)``, and every ``step_table`` a callback gets): at
      each sampled step a ``"global"`` row, layer ``"(all)"``, whose ``grad_norm`` is the norm of
      all the watched parameters' gradients together in ``norm_type`` (2 by default, ``math.inf``
      the largest entry): what ``torch.nn.utils.clip_grad_norm_(watched, max_norm, norm_type)``
      returns, a tied (shared) parameter counted once. It is the gradient the step *uses*: after a
      ``clip_grad_norm_(..., max_norm)`` that clipped, ``max_norm`` (to a part in 10^6), not the
      norm before clipping that ``clip_grad_norm_`` returned. With an optimizer,
      one ``"group"`` row per parameter group that holds a watched parameter (layer: the group's
      ``"name"`` entry if it has one, else ``"group<i>"``), with the group's gradient, weight and
      update norms and its ``lr`` and ``weight_decay`` as the step used them (read just before
      ``optimizer.step()``, so after a scheduler's change).

    ``include`` and ``exclude`` choose the modules watched: module name patterns (``fnmatch``, on
    the dotted names of ``model.named_modules()``; the model itself by its class name) and
    ``nn.Module`` subclasses, one or a sequence. A module that a selector matches is selected with
    every module inside it (``exclude="encoder"`` leaves out ``encoder.layers.0.linear1`` too);
    a module is watched if ``include`` (when given) selects it and ``exclude`` does not. Both
    parameter rows and activation rows follow the choice, and so do the global and group rows
    (over the watched parameters only). A choice that leaves nothing raises ``ValueError``.

    ``callbacks``: functions ``fn(monitor, step_table)`` called once after each sampled step has
    been recorded (``add_callback`` adds one later), in order, with a ``MonitorTable`` of that
    step's rows only (summary rows included): a logger does work in proportion to one step, never
    rebuilding the whole table. When a callback runs, ``monitor.steps_taken`` already counts the
    step. An exception raised by a callback propagates out of ``optimizer.step()`` (or
    ``monitor.step()``), after the step is recorded.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = 1,
        histograms: bool = False,
        activations: Mapping[type[nn.Module], str | None] | None = None,
        include: Selector | Sequence[Selector] | None = None,
        exclude: Selector | Sequence[Selector] | None = None,
        norm_type: float = 2.0,
        callbacks: Iterable[StepCallback] = (),
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            hint = ""
            if isinstance(optimizer, list | tuple):
                hint = "; pass one optimizer (the monitor follows its steps), or none and call monitor.step()"
            elif isinstance(optimizer, int | np.integer):
                hint = "; every is keyword-only: GradientMonitor(model, optimizer, every=10)"
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}{hint}"
            )
        self.every = check_positive_int("every", int(every) if isinstance(every, np.integer) else every)
        extra: dict[type[nn.Module], str | None] = {}
        if activations is not None:
            if not isinstance(activations, Mapping):
                raise TypeError(
                    "activations must be a mapping {activation class: kind}, kinds "
                    f"{', '.join(ACTIVATION_KINDS)} or None; got {type(activations).__name__}"
                )
            extra = {_check_activation_class(c): _check_kind(c, k) for c, k in activations.items()}
        self.model = model
        self.optimizer = optimizer
        self.norm_type = _norm_type(norm_type)
        self._callbacks: list[StepCallback] = []
        if callable(callbacks):
            raise TypeError("callbacks must be a sequence of functions: callbacks=(fn,), not callbacks=fn")
        for fn in callbacks:
            self.add_callback(fn)
        self.include, self.exclude = _selectors("include", include), _selectors("exclude", exclude)
        kept = _selected_modules(model, self.include, self.exclude)
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
        self.layers = [(name, m) for name, m in self.layers if id(m) in kept]
        self.activations: list[tuple[str, nn.Module]] = []
        self._kinds: dict[str, str] = {}
        self._spans: dict[str, tuple[float, float]] = {}
        for name, m in model.named_modules():
            kind = _kind_of(m, extra)
            if kind is not None and id(m) in kept:
                name = name or type(m).__name__
                self.activations.append((name, m))
                self._kinds[name], self._spans[name] = kind, _histogram_range(m, kind)
        if not self.layers and not self.activations:
            names = [name or type(m).__name__ for name, m in model.named_modules()]
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise ValueError(
                f"include={include!r}, exclude={exclude!r} leave no layer with parameters and no "
                f"activation to watch; the model's modules are: {shown}"
            )
        self._groups = [[p for p in m.parameters(recurse=False) if p.requires_grad] for _, m in self.layers]
        self._flat = [p for group in self._groups for p in group]
        # a parameter shared by several modules (tied weights) sits in _flat once per module; the
        # global and group rows count it once: at its first index
        first: dict[int, int] = {}
        for i, p in enumerate(self._flat):
            first.setdefault(id(p), i)
        self._unique = sorted(first.values())
        self._index_of = first
        self._unique_set = set(self._unique)
        self._group_count = 0
        self._group_index: list[int] = []  # the optimizer group of each group row
        self._group_rows: list[tuple[str, list[int]]] = self._optimizer_groups()
        self._group_settings: list[tuple[float, float]] = []  # (lr, weight_decay) at the sampled step
        self._summaries: list[tuple[str, list[int], dict[str, float]]] = []  # global and group rows
        self.histograms_on = histograms
        self._histograms: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
        self._histogram_spans: dict[str, tuple[float, float]] = {}
        self.steps_taken = 0
        self._rows: list[tuple[int, str, str, dict[str, float]]] = []
        self._pending: dict[str, dict[str, float]] = {}  # parameter layer -> values
        self._scratch = _Scratch()  # kept between sampled steps only if every == 1
        self._step = _StepRecorder(histograms, self._scratch)  # the activation calls of the current step
        self._call_counts: dict[str, int] = {}  # activation module -> calls in this forward pass
        self._backward_since_forward = False
        self._frozen = False  # after a closure's first evaluation: later evaluations are not recorded
        # W_before, made at a sampled step and freed after it (kept for the next one if every == 1,
        # where every step is sampled: the peak memory is the same, and no allocation per step)
        self._snapshot: list[torch.Tensor] | None = None
        self._handles: list[Any] = []  # optimizer hooks: for the monitor's whole life
        self._step_handles: list[Any] = []  # module hooks: only while a sampled step runs
        self._order_handles: list[Any] = []  # parameter hooks: only until the row order is known
        self._order: dict[str, int] | None = None
        self._backward_seen: list[str] = []  # layers and calls, in the order backward met them
        self._forward_seen: dict[str, None] = {}  # activation calls, in call order
        self._passes_without_step = 0
        self._warned = False
        self._open = False
        self._closed = False

    def _optimizer_groups(self) -> list[tuple[str, list[int]]]:
        """Each optimizer parameter group with a watched parameter: its row name (its ``"name"``
        where it has one that names no module, else ``group<i>``) and its parameters' indices in
        ``_flat`` (a tied parameter once)."""
        if self.optimizer is None:
            return []
        taken = {name for name, _ in self.layers} | {name for name, _ in self.activations} | {GLOBAL_ROW}
        rows, self._group_index = [], []
        for g, group in enumerate(self.optimizer.param_groups):
            indices = sorted({self._index_of[id(p)] for p in group["params"] if id(p) in self._index_of})
            if not indices:
                continue
            name = group.get("name")
            name = name if isinstance(name, str) and name and name not in taken else f"group{g}"
            taken.add(name)
            rows.append((name, indices))
            self._group_index.append(g)
        self._group_count = len(self.optimizer.param_groups)
        return rows

    def add_callback(self, fn: StepCallback) -> None:
        """Call ``fn(monitor, step_table)`` after each sampled step from now on (see ``callbacks``)."""
        if not callable(fn):
            raise TypeError(f"a callback must be callable as fn(monitor, step_table); got {fn!r}")
        self._callbacks.append(fn)

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> GradientMonitor:
        self.attach()
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self._close(warn=kind is None, stacklevel=4)  # no advice while an exception is on its way

    def attach(self) -> GradientMonitor:
        """Register the hooks (``with`` does this)."""
        self._check_usable()
        if self._open:
            return self
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._before_update))
            self._handles.append(self.optimizer.register_step_post_hook(lambda *_: self._after_update()))
        self._open = True
        self._sync_hooks()
        return self

    def close(self) -> None:
        """Remove every hook. The records stay readable; the monitor cannot record again."""
        self._close(warn=True, stacklevel=4)

    def _close(self, warn: bool, stacklevel: int) -> None:
        for handle in self._handles + self._step_handles + self._order_handles:
            handle.remove()
        self._handles.clear()
        self._step_handles.clear()
        self._order_handles.clear()
        self._snapshot = self._scratch.buffer = None
        was_open, self._open, self._closed = self._open, False, True
        if was_open and warn:
            self._warn_if_never_stepped(stacklevel)

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError(
                "this GradientMonitor is closed; its records are readable, make a new one to record"
            )

    @property
    def sampling(self) -> bool:
        """Whether the current step is one that is recorded."""
        return self.steps_taken % self.every == 0

    def _sync_hooks(self) -> None:
        """Module hooks exist only during sampled steps: unsampled steps run the bare model."""
        wanted = self._open and self.sampling
        if wanted and not self._step_handles:
            self._step_handles.append(self.model.register_forward_pre_hook(self._on_forward_pass))
            for name, module in self.activations:
                self._step_handles.append(module.register_forward_hook(self._activation_hook(name)))
            if self._order is None:
                for (name, _), group in zip(self.layers, self._groups, strict=True):
                    for p in group:
                        self._order_handles.append(
                            p.register_post_accumulate_grad_hook(self._parameter_order_hook(name))
                        )
        elif not wanted and self._step_handles:
            for handle in self._step_handles + self._order_handles:
                handle.remove()
            self._step_handles.clear()
            self._order_handles.clear()

    # -- hooks ------------------------------------------------------------------------------
    def _recording(self) -> bool:
        """Whether a forward pass happening now is part of the training step: gradients on, not a
        later evaluation of a closure, not a recomputation inside backward (checkpointing)."""
        return torch.is_grad_enabled() and not self._frozen and torch._C._current_graph_task_id() < 0

    def _on_forward_pass(self, *_: Any) -> None:
        if self._recording():
            self._call_counts.clear()
            self._backward_since_forward = False
            if self.steps_taken == 0:
                self._passes_without_step += 1

    def _parameter_order_hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(_: torch.Tensor) -> None:
            if not self._frozen:
                self._backward_seen.append(name)
                if self.steps_taken == 0 and not self._passes_without_step:
                    self._passes_without_step = 1  # a backward pass without a hooked forward

        return hook

    def _activation_hook(self, name: str) -> Callable[..., None]:
        kind, span = self._kinds[name], self._spans[name]

        def hook(_: nn.Module, __: Any, output: Any) -> None:
            if not self._recording():
                return
            h = output[0] if isinstance(output, tuple) else output
            if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.numel() == 0:
                return
            if self._backward_since_forward:  # a new pass, though not through model's own forward
                self._call_counts.clear()
                self._backward_since_forward = False
            count = self._call_counts[name] = self._call_counts.get(name, 0) + 1
            call = name if count == 1 else f"{name}{_CALL_SEPARATOR}{count}"
            recorder = self._step
            record = recorder.record(call, kind, span)
            if self._order is None:
                self._forward_seen.setdefault(call)
            node = h.grad_fn
            # SigmoidBackward, TanhBackward, ReluBackward, ... keep their output h for backward
            recorder.add_output(record, h.detach(), kept=node is not None and hasattr(node, "_saved_result"))
            if h.requires_grad:
                if node is None:  # a leaf: the module handed its input back
                    h.register_hook(lambda g: self._on_gradient(recorder, record, call, g))
                else:  # a pre-hook on the node that made h: dL/dh, as a tensor hook gets it, cheaper
                    index = h.output_nr
                    node.register_prehook(
                        lambda grads: self._on_gradient(recorder, record, call, grads[index])
                    )

        return hook

    def _on_gradient(self, recorder: _StepRecorder, record: _CallRecord, call: str, g: Any) -> None:
        if isinstance(g, torch.Tensor) and not self._frozen:
            self._backward_since_forward = True
            recorder.add_gradient(record, g)
            if self._order is None:
                self._backward_seen.append(call)

    def _before_update(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.sampling:
            return None
        if len(optimizer.param_groups) != self._group_count:  # add_param_group() since
            self._group_rows = self._optimizer_groups()
        self._group_settings = [
            (_setting(optimizer.param_groups[g], "lr"), _setting(optimizer.param_groups[g], "weight_decay"))
            for g in self._group_index
        ]
        with torch.no_grad():  # W_before, for the update ratio
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(p) for p in self._flat]
            if self._flat:
                torch._foreach_copy_(self._snapshot, self._flat)
        rest = args[1:] if args and args[0] is optimizer else args
        closure = rest[0] if rest else kwargs.get("closure")
        if closure is None:
            self._record_gradients()
            return None
        observed = self._observe(closure)
        if rest:
            return (*args[: len(args) - len(rest)], observed, *rest[1:]), kwargs
        return args, {**kwargs, "closure": observed}

    def _observe(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        """``closure``, recording the gradients its first evaluation leaves: the gradient at the
        weights the step starts from. The activations are that evaluation's, together with those
        of the passes made before ``step()`` when the step's gradient still holds theirs: when the
        closure adds its backward pass to gradients it did not reset (the last micro-batch of an
        accumulation, as Lightning runs it), or runs no backward pass at all (Lightning's manual
        optimization hands ``step()`` a closure that does nothing). A closure that resets the
        gradients first (``zero_grad()``, as LBFGS needs) makes the earlier passes irrelevant."""
        first = True

        def observed() -> Any:
            nonlocal first
            if not first:
                return closure()
            first = False
            earlier, self._step = self._step, _StepRecorder(self.histograms_on, self._scratch)
            self._call_counts.clear()
            before = {i: (p.grad, p.grad._version) for i, p in enumerate(self._flat) if p.grad is not None}
            kept: dict[int, bool] = {}  # per parameter reached: did its gradient survive until then?

            def check(i: int) -> Callable[[torch.Tensor], None]:
                def hook(_: torch.Tensor) -> None:  # runs before the new gradient is added
                    grad, version = before[i]
                    now = self._flat[i].grad
                    kept.setdefault(i, now is grad and now is not None and now._version == version)

                return hook

            handles = [self._flat[i].register_hook(check(i)) for i in before]
            try:
                loss = closure()
            finally:
                for handle in handles:
                    handle.remove()
            if kept:
                accumulated = all(kept.values())
            else:  # no backward pass reached a parameter: the step uses the gradients it found
                accumulated = bool(before) and all(self._flat[i].grad is g for i, (g, _) in before.items())
            if accumulated:
                self._step.absorb(earlier)
            self._record_gradients()
            self._frozen = True
            return loss

        return observed

    def _after_update(self) -> None:
        if self.sampling and self._snapshot is not None and self._flat:
            with torch.no_grad():
                torch._foreach_sub_(self._snapshot, self._flat)  # before - after
                per_tensor = torch.stack(torch._foreach_norm(self._snapshot)).tolist()
            moved = iter(per_tensor)
            for (name, _), group in zip(self.layers, self._groups, strict=True):
                update = math.sqrt(sum(next(moved) ** 2 for _ in group))
                stats = self._pending.get(name)
                if stats is not None:
                    weight = stats["weight_norm"]
                    stats["update_ratio"] = update / weight if weight > 0 else math.nan
            for _, indices, values in self._summaries:
                update = math.sqrt(sum(per_tensor[i] ** 2 for i in indices))
                weight = values["weight_norm"]
                values["update_ratio"] = update / weight if weight > 0 else math.nan
            if self.every > 1:  # no copy of the weights lives between sampled steps
                self._snapshot = None
        self._flush()

    def _record_gradients(self, lr: float | None = None) -> None:
        if not self._flat:  # only activations are watched
            return
        grads = [p.grad for p in self._flat]
        present = [g for g in grads if g is not None]
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(self._flat + present)).tolist()  # one copy out
        weights, fast = iter(norms[: len(grads)]), iter(norms[len(grads) :])
        low, high = _FLOAT32_SAFE
        position = iter(grads)
        grad_norms: list[float | None] = []  # per entry of _flat: what the global and group rows sum
        weight_norms = norms[: len(grads)]
        for (name, _), group in zip(self.layers, self._groups, strict=True):
            grad_sq = 0.0
            for _ in group:
                g = next(position)
                if g is not None:
                    value = next(fast)  # exact for typical norms; recomputed in float64 where not
                    value = value if low < value < high else exact_norm(g)
                    grad_sq += value**2
                    grad_norms.append(value)
                else:
                    grad_norms.append(None)
            grad = math.sqrt(grad_sq)
            weight = math.sqrt(sum(next(weights) ** 2 for _ in group))
            stats = self._pending.setdefault(name, {})
            stats["grad_norm"] = grad
            stats["weight_norm"] = weight
            if lr is not None:
                stats["update_ratio"] = lr * grad / weight if weight > 0 else math.nan
        # per-tensor norms of norm_type, which torch's get_total_norm combines
        totals: list[float | None] = grad_norms
        if self.norm_type != 2.0:
            unique = [i for i in self._unique if grads[i] is not None]
            totals = [None] * len(grads)
            for i, value in zip(
                unique, _tensor_norms([grads[i] for i in unique], self.norm_type), strict=True
            ):
                totals[i] = value
        self._summaries = []
        for name, indices in [(GLOBAL_ROW, self._unique), *self._group_rows]:
            values = {
                "grad_norm": self._combine([totals[i] for i in indices]),
                "weight_norm": math.sqrt(sum(weight_norms[i] ** 2 for i in indices)),
            }
            if lr is not None:  # the plain SGD update lr * g, in 2-norms like the layer rows
                grad2 = math.sqrt(sum(grad_norms[i] ** 2 for i in indices if grad_norms[i] is not None))
                weight = values["weight_norm"]
                values["update_ratio"] = lr * grad2 / weight if weight > 0 else math.nan
            self._summaries.append((name, indices, values))

    def _combine(self, norms: list[float | None]) -> float:
        """The norm of the concatenated tensors from their own norms (``None``: no gradient)."""
        known = [n for n in norms if n is not None]
        if not known:  # what clip_grad_norm_ returns when no parameter has a gradient
            return 0.0
        if self.norm_type == math.inf:  # NaN wherever a gradient holds one, as in torch
            return math.nan if any(math.isnan(n) for n in known) else max(known)
        if self.norm_type == 2.0:
            return math.sqrt(sum(n * n for n in known))
        return sum(n**self.norm_type for n in known) ** (1.0 / self.norm_type)

    def step(self, lr: float | None = None) -> None:
        """End a training step by hand (when no optimizer was given), after ``backward()``."""
        self._check_usable()
        if self.optimizer is not None:
            raise RuntimeError("this monitor follows its optimizer's steps; do not call step() as well")
        if self.sampling:
            self._record_gradients(lr)
        self._flush()

    def _flush(self) -> None:
        """End the step: a sampled one's rows are kept and its state cleared (an unsampled step has
        none: no hook ran)."""
        sampled, start = self.sampling, len(self._rows)
        if sampled:
            step = self.steps_taken
            for name, stats in self._pending.items():
                self._rows.append((step, name, "parameters", dict(stats)))
            for call, values in self._step.rows():
                self._rows.append((step, call, "activation", values))
            for k, (name, _, values) in enumerate(self._summaries):
                if k and k - 1 < len(self._group_settings):  # a group row: the settings the step used
                    values["lr"], values["weight_decay"] = self._group_settings[k - 1]
                self._rows.append((step, name, "global" if k == 0 else "group", values))
            self._summaries = []
            if self.histograms_on:
                self._keep_histograms(step, list(self._step.calls.items()))
            if self._order is None and (self._backward_seen or self._forward_seen):
                self._fix_order()
            self._pending.clear()
            if self.every > 1:  # nor a working buffer
                self._scratch.buffer = None
            self._step = _StepRecorder(self.histograms_on, self._scratch)
            self._call_counts.clear()
            self._backward_since_forward = False
            self._frozen = False
        self.steps_taken += 1
        self._sync_hooks()
        if sampled and self._callbacks:  # after the state is settled: a callback may raise
            step_table = self._table_of(self._rows[start:])
            for fn in list(self._callbacks):
                fn(self, step_table)

    def _keep_histograms(self, step: int, records: list[tuple[str, _CallRecord]]) -> None:
        entries = [
            ((call, of), counts)
            for call, record in records
            for of, counts in (("activation", record.histogram), ("gradient", record.grad_histogram))
            if counts is not None
        ]
        if not entries:
            return
        by_device: dict[torch.device, list[int]] = {}
        for index, (_, counts) in enumerate(entries):
            by_device.setdefault(counts.device, []).append(index)
        for members in by_device.values():
            host = to_numpy(torch.stack([entries[i][1] for i in members]))  # one copy per device
            for row, index in zip(host, members, strict=True):
                self._histograms.setdefault(entries[index][0], []).append((step, row))
        for call, record in records:
            self._histogram_spans[call] = record.span

    def _fix_order(self) -> None:
        """Rows in the order of first use: the reverse of the order backward met them, then
        what backward did not meet."""
        order: dict[str, int] = {}
        for name in reversed(self._backward_seen):
            order.setdefault(name, len(order))
        for name, _ in self.layers:
            order.setdefault(name, len(order))
        for call in self._forward_seen:
            order.setdefault(call, len(order))
        self._order = order
        self._backward_seen.clear()
        for handle in self._order_handles:
            handle.remove()
        self._order_handles.clear()

    def _warn_if_never_stepped(self, stacklevel: int) -> None:
        if self._warned or self.steps_taken > 0 or not self._passes_without_step:
            return
        self._warned = True
        how = (
            "its optimizer's step() never ran (the monitor records at optimizer.step())"
            if self.optimizer is not None
            else "without an optimizer, call monitor.step(lr=...) after each backward pass, or pass "
            "the optimizer: GradientMonitor(model, optimizer)"
        )
        warnings.warn(
            f"GradientMonitor saw {self._passes_without_step} training pass(es) but no training step, "
            f"so it recorded nothing: {how}",
            stacklevel=stacklevel,
        )

    # -- results ------------------------------------------------------------------------------
    def histogram(self, layer: str, of: str = "activation") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, bin_edges, counts[step, bin])`` of an activation call's outputs (``of=
        "activation"``) or of ``log10 |dL/dh|`` (``of="gradient"``); needs ``histograms=True``.
        ``layer`` names a call as the table does (``"act"``, ``"act#2"``, ...)."""
        if not self.histograms_on:
            raise RuntimeError("histograms were not recorded: make the monitor with histograms=True")
        if of not in ("activation", "gradient"):
            raise ValueError(f"unknown histogram {of!r}; valid choices are 'activation', 'gradient'")
        records = self._histograms.get((layer, of))
        if not records:
            known = sorted({name for name, kind in self._histograms if kind == of})
            raise KeyError(f"no {of} histograms for {layer!r}; layers with them: {known}")
        low, high = GRADIENT_LOG_RANGE if of == "gradient" else self._histogram_spans[layer]
        steps = np.array([step for step, _ in records])
        counts = np.stack([c for _, c in records])
        return steps, np.linspace(low, high, HISTOGRAM_BINS + 1), counts

    def current_global_grad_norm(self) -> float:
        """The global norm of the watched parameters' gradients as they are now (``.grad``), in the
        monitor's ``norm_type``, a tied parameter counted once: what ``clip_grad_norm_`` over them
        would return if called now. Call it between ``backward()`` and clipping to have the norm
        before clipping (the ``"global"`` row holds the norm of the gradient the step uses, after
        any clipping). 0.0 where no watched parameter has a gradient."""
        grads = [self._flat[i].grad for i in self._unique if self._flat[i].grad is not None]
        if not grads:
            return 0.0
        return float(torch.nn.utils.get_total_norm(grads, self.norm_type))

    def step_histogram(self, layer: str, step: int, of: str = "activation") -> tuple[np.ndarray, np.ndarray]:
        """``(bin_edges, counts)`` of one call's histogram at one sampled ``step`` (``histogram``
        returns every step: use this one in a step callback, whose cost must not grow with the
        run; the latest step is found first). ``KeyError`` if that call has no such histogram at
        that step (no gradient reached it, say)."""
        if not self.histograms_on:
            raise RuntimeError("histograms were not recorded: make the monitor with histograms=True")
        if of not in ("activation", "gradient"):
            raise ValueError(f"unknown histogram {of!r}; valid choices are 'activation', 'gradient'")
        for recorded_step, counts in reversed(self._histograms.get((layer, of), [])):
            if recorded_step == step:
                low, high = GRADIENT_LOG_RANGE if of == "gradient" else self._histogram_spans[layer]
                return np.linspace(low, high, HISTOGRAM_BINS + 1), np.asarray(counts)
            if recorded_step < step:
                break
        raise KeyError(f"no {of} histogram for {layer!r} at step {step}")

    def recorded(self, *, summaries: bool = True) -> RecordedMonitor:
        """The table recorded so far, kept apart from the model (see ``RecordedMonitor``), with the
        summary rows unless ``summaries=False`` (the layer and activation rows alone, smaller)."""
        return RecordedMonitor(self.table(summaries=summaries))

    def table(self, *, summaries: bool = False) -> MonitorTable:
        """Everything recorded so far, as columns: by step, then in the order of first use.

        ``summaries=True`` adds, at each sampled step, the ``"global"`` row (layer ``"(all)"``: the
        global gradient norm that ``clip_grad_norm_`` reports) and one ``"group"`` row per
        optimizer parameter group, and the ``lr`` and ``weight_decay`` columns; without it the
        table holds the layer and activation rows only (as before these rows existed)."""
        self._warn_if_never_stepped(stacklevel=3)
        if summaries:
            return self._table_of(self._rows)
        rows = [r for r in self._rows if r[2] not in _SUMMARY_KINDS]
        return self._table_of(rows, LAYER_COLUMNS)

    def _table_of(
        self, rows: list[tuple[int, str, str, dict[str, float]]], columns: tuple[str, ...] = COLUMNS
    ) -> MonitorTable:
        """``rows`` as a table: by step; within a step the layers and activation calls in the order
        of first use, then the global row, then the group rows in the optimizer's order."""
        order = self._order or {}
        late: dict[str, int] = {}  # layers the order does not know yet: after it, as first seen
        for _, name, kind, _ in rows:
            if name not in order and kind not in _SUMMARY_KINDS:
                late.setdefault(name, len(order) + len(late))
        rank = {"parameters": 0, "activation": 1}

        def key(r: tuple[int, str, str, dict[str, float]]) -> tuple[int, int, int, int]:
            if r[2] in _SUMMARY_KINDS:  # a stable sort keeps the groups in order
                return r[0], _SUMMARY_KINDS[r[2]], 0, 0
            return r[0], 0, order.get(r[1], late.get(r[1], 0)), rank.get(r[2], 2)

        rows = sorted(rows, key=key)
        values = {c: np.array([r[3].get(c, np.nan) for r in rows], dtype=np.float64) for c in columns}
        return MonitorTable(
            step=np.array([r[0] for r in rows], dtype=np.int64),
            layer=np.array([r[1] for r in rows], dtype=object),
            kind=np.array([r[2] for r in rows], dtype=object),
            columns=values,
        )
