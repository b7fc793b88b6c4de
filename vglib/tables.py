"""Results as tables: what ``GradientMonitor`` records, as columns one can filter and reshape."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["COLUMNS", "MonitorTable", "RecordedMonitor"]

COLUMNS = ("grad_norm", "weight_norm", "update_ratio", "mean", "std", "saturated", "dead", "unit_std")
"""The value columns of a ``MonitorTable`` (see its docstring for what each holds)."""


@dataclass(frozen=True)
class MonitorTable:
    """The monitor's records as columns, one row per (sampled step, layer).

    ``kind`` is ``"parameters"`` for a module with trainable parameters of its own and
    ``"activation"`` for one call of an activation or recurrent module. Columns that do not apply
    hold NaN:

    - ``grad_norm``: ``||dL/dW||`` of the module's parameters (``"parameters"``), or ``||dL/dh||``
      of the call's output (``"activation"``).
    - ``weight_norm``: ``||W||`` before the step; ``update_ratio``: ``||W_after - W_before|| /
      ||W_before||`` (``"parameters"``).
    - ``mean``, ``std``: over every entry of the call's output (``"activation"``).
    - ``saturated``: the fraction of entries where a sigmoid's or tanh's derivative is below 10 % of
      its maximum; ``dead``: the fraction of units that are exactly 0 for every example of the batch
      (ReLU family). A *unit* is one entry of one example's output: all dimensions but the first,
      which is the batch (a conv unit is a channel at a pixel).
    - ``unit_std``: the median over units of each unit's standard deviation over the batch (the
      lower median for an even count). Near 0 while ``std`` is not, every example gets the same
      output: the forward signal has *collapsed* (a forward problem that looks like vanishing
      gradients downstream).

    An activation module called several times per forward pass has one row per call: ``"act"``,
    ``"act#2"``, ``"act#3"``, ... in call order. With gradient accumulation an activation row
    pools the step's micro-batches (see ``GradientMonitor``). Within a step rows are in the order
    the model first uses the layers, which ``layers()`` and ``matrix()`` keep. A table recorded
    before a column existed reads as NaN in it.
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
            if column in COLUMNS:  # recorded before this column existed
                return np.full(len(self.step), np.nan)
            raise KeyError(f"unknown column {column!r}; columns are step, layer, kind, {', '.join(COLUMNS)}")
        return self.columns[column]

    def series(self, layer: str, column: str) -> np.ndarray:
        """``column`` of one layer (or activation module) at every sampled step, in step order: the
        same as ``table[column][table.layer == layer]``, with a ``KeyError`` that lists the layers
        when ``layer`` is not one of them."""
        rows = self.layer == layer
        if not rows.any():
            raise KeyError(
                f"no layer {layer!r} in the table; its layers are {', '.join(dict.fromkeys(self.layer))}"
            )
        return self[column][rows]

    def layers(self, kind: str) -> list[str]:
        """Layer names of one kind, in the order the model first used them (the table's order)."""
        seen: dict[str, None] = {}
        for name, k in zip(self.layer, self.kind, strict=True):
            if k == kind:
                seen.setdefault(name)
        return list(seen)

    def mean_by_step(self, column: str, kind: str = "activation") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, means)``: at each sampled step, the mean of ``column`` over the layers of one
        ``kind`` (e.g. the dead fraction averaged over a network's activation layers). A layer
        whose value is NaN (the column does not apply to it) is left out of its step's mean; a step
        with no value at all gives NaN."""
        if kind not in ("parameters", "activation"):
            raise ValueError(f"kind must be 'parameters' or 'activation', got {kind!r}")
        mask = self.kind == kind
        steps, where = np.unique(self.step[mask], return_inverse=True)
        values = np.asarray(self[column][mask], dtype=np.float64)
        known = ~np.isnan(values)
        totals = np.bincount(where[known], weights=values[known], minlength=len(steps))
        counts = np.bincount(where[known], minlength=len(steps))
        with np.errstate(invalid="ignore", divide="ignore"):
            return steps, np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)

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
