"""Results as tables: what ``GradientMonitor`` records, as columns one can filter and reshape."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["COLUMNS", "MonitorTable", "RecordedMonitor"]

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
