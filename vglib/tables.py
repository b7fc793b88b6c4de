"""Results as tables: what ``GradientMonitor`` records, as columns one can filter and reshape; and
``Table``, a small table of text cells that a notebook shows as HTML without pandas."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._render import html_table, text_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "GLOBAL_ROW",
    "KINDS",
    "LAYER_COLUMNS",
    "QUANTITIES",
    "MonitorTable",
    "Quantity",
    "RecordedMonitor",
    "Table",
]

COLUMNS = (
    "grad_norm", "weight_norm", "update_ratio", "mean", "std", "saturated", "dead", "unit_std",
    "lr", "weight_decay",
)  # fmt: skip
"""The value columns of a ``MonitorTable`` (see its docstring for what each holds)."""

LAYER_COLUMNS = COLUMNS[:8]
"""The columns of the layer and activation rows (``MonitorTable``'s columns before the summary rows)."""

KINDS = ("parameters", "activation", "global", "group")
"""The kinds of row a ``MonitorTable`` holds (see its docstring)."""

GLOBAL_ROW = "(all)"
"""The ``layer`` of the ``"global"`` rows: every watched parameter together."""


def require_pandas() -> Any:
    """The ``pandas`` module, or an ``ImportError`` that says how to install it (pandas is an
    optional dependency of vglib: the ``pandas`` extra)."""
    try:
        import pandas
    except ImportError as error:
        raise ImportError(
            'this needs pandas, an optional dependency of vglib: pip install "vglib[pandas]"'
        ) from error
    return pandas


@dataclass(frozen=True)
class Table:
    """A small results table of text cells: an HTML table in a notebook (``_repr_html_``, styled by
    the book's stylesheet like the harness's tables, with the class ``vg-results`` besides, so that it
    is not taken for one), aligned text as its ``repr``. The chapters use
    it where a DataFrame would do, since pandas is an optional dependency (:meth:`to_pandas`
    converts). ``header`` names every column, the first that of the row labels."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def __post_init__(self) -> None:
        for row in (self.header, *self.rows):
            if not all(isinstance(cell, str) for cell in row):
                raise TypeError(f"every cell must be a str, got {row!r}")
            if len(row) != len(self.header):
                raise ValueError(f"every row needs {len(self.header)} cells, one per column, got {row!r}")

    @classmethod
    def from_rows(cls, rows: Mapping[str, Mapping[str, str]], index: str = "", caption: str = "") -> Table:
        """``{label: {column: cell}}``, every row with the same columns in the same order; ``index``
        heads the label column."""
        if not rows:
            raise ValueError("a Table needs at least one row")
        columns = list(next(iter(rows.values())))
        for label, row in rows.items():
            if list(row) != columns:
                raise ValueError(f"row {label!r} has the columns {list(row)}, not {columns}")
        return cls((index, *columns), tuple((label, *row.values()) for label, row in rows.items()), caption)

    def column(self, name: str) -> dict[str, str]:
        """``{label: cell}`` of the column ``name``."""
        if name not in self.header[1:]:
            raise ValueError(f"no column {name!r}; the columns are {list(self.header[1:])}")
        i = self.header.index(name)
        return {row[0]: row[i] for row in self.rows}

    def to_pandas(self) -> pd.DataFrame:
        """The table as a ``pandas.DataFrame`` indexed by the row labels (needs the ``pandas`` extra)."""
        pandas = require_pandas()
        frame = pandas.DataFrame([row[1:] for row in self.rows], columns=list(self.header[1:]),
                                 index=[row[0] for row in self.rows])  # fmt: skip
        frame.index.name = self.header[0] or None
        return frame

    def __repr__(self) -> str:
        return text_table(self.header, self.rows, self.caption)

    def _repr_html_(self) -> str:
        return html_table(self.header, self.rows, self.caption, classes="vg-harness vg-results")


def _json_number(value: float) -> str:
    """A float as strict JSON: NaN as ``null``, +-inf as ``+-1e999`` (which JSON parsers, Python's
    and JavaScript's among them, read as infinity), anything else exactly (``repr``)."""
    if math.isnan(value):
        return "null"
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return repr(value)


def _parse_float(text: str) -> float:
    return math.nan if text == "" else float(text)


@dataclass(frozen=True)
class MonitorTable:
    """The monitor's records as columns, one row per (sampled step, layer).

    ``kind`` is ``"parameters"`` for a module with trainable parameters of its own,
    ``"activation"`` for one call of an activation or recurrent module, ``"global"`` for the one row
    per step (layer ``"(all)"``) over every watched parameter together, and ``"group"`` for one
    optimizer parameter group (layer: the group's ``"name"`` entry, else ``"group0"``,
    ``"group1"``, ... by its index in ``optimizer.param_groups``). Columns that do not apply hold NaN:

    - ``grad_norm``: ``||dL/dW||`` of the module's parameters (``"parameters"``), or ``||dL/dh||``
      of the call's output (``"activation"``).
    - ``weight_norm``: ``||W||`` before the step; ``update_ratio``: ``||W_after - W_before|| /
      ||W_before||`` (``"parameters"``).
    - ``mean``, ``std``: over every entry of the call's output (``"activation"``).
    - ``saturated``: the fraction of entries where a sigmoid's or tanh's derivative is below 10 % of
      its maximum; ``dead``: the fraction of units that are exactly 0 for every example of the batch
      (ReLU family). A *unit* is one entry of one example's output: all dimensions but the first,
      which is the batch (a conv unit is a channel at a pixel).
    - ``"global"`` and ``"group"`` rows: ``grad_norm`` is the norm of all their parameters'
      gradients together, in the monitor's ``norm_type`` (2 by default): what
      ``torch.nn.utils.clip_grad_norm_`` returns for them, a parameter shared by several modules
      (tied weights) counted once; ``weight_norm`` and ``update_ratio`` as for a layer, over the same
      parameters (2-norms). ``lr`` and ``weight_decay`` (``"group"`` rows): the group's settings as
      the optimizer used them at that step (NaN where the optimizer has no such setting).
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

    def without_summaries(self) -> MonitorTable:
        """The layer and activation rows alone, with ``LAYER_COLUMNS``: what
        ``GradientMonitor.table()`` gives without ``summaries=True``."""
        keep = np.isin(self.kind, ("parameters", "activation"))
        columns = {c: self.columns[c][keep] for c in LAYER_COLUMNS if c in self.columns}
        return MonitorTable(
            step=self.step[keep], layer=self.layer[keep], kind=self.kind[keep], columns=columns
        )

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
        if kind not in KINDS:
            raise ValueError(
                "kind must be 'parameters' or 'activation' (or 'global', 'group': the summary rows), "
                f"got {kind!r}"
            )
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

    def global_grad_norm(self) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, norms)``: the global gradient norm at each sampled step (what
        ``clip_grad_norm_`` returns; the ``"global"`` rows). A table from ``monitor.table()`` needs
        ``summaries=True`` to hold them."""
        rows = self.kind == "global"
        if not rows.any():
            raise ValueError(
                "this table has no global rows: make it with monitor.table(summaries=True) (a step "
                "callback's table has them)"
            )
        return self.step[rows], self["grad_norm"][rows]

    # -- export ---------------------------------------------------------------------------------
    def value_columns(self) -> list[str]:
        """The value columns an export writes: every one of ``COLUMNS`` (NaN where the table has
        none), then any other column the table holds."""
        return [*COLUMNS, *(c for c in self.columns if c not in COLUMNS)]

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row: ``step`` (int), ``layer``, ``kind`` (str) and every value column
        (float, NaN where it does not apply)."""
        names = self.value_columns()
        values = [self[c].tolist() for c in names]
        return [
            {"step": int(step), "layer": str(layer), "kind": str(kind), **dict(zip(names, row, strict=True))}
            for step, layer, kind, *row in zip(
                self.step.tolist(), self.layer, self.kind, *values, strict=True
            )
        ]

    def to_dataframe(self) -> pd.DataFrame:
        """The table as a tidy ``pandas.DataFrame``: one row per (step, layer), columns ``step``
        (int64), ``layer`` and ``kind`` (categories, in the table's order: first use, then
        ``KINDS``), then every value column (float64, NaN where it does not apply). Needs pandas
        (``pip install "vglib[pandas]"``)."""
        pd = require_pandas()
        layers = list(dict.fromkeys(self.layer.tolist()))
        kinds = [k for k in KINDS if k in set(self.kind.tolist())]
        kinds += [k for k in dict.fromkeys(self.kind.tolist()) if k not in kinds]
        data: dict[str, Any] = {
            "step": np.asarray(self.step, dtype=np.int64),
            "layer": pd.Categorical(self.layer.tolist(), categories=layers),
            "kind": pd.Categorical(self.kind.tolist(), categories=kinds),
        }
        for c in self.value_columns():
            data[c] = np.asarray(self[c], dtype=np.float64)
        return pd.DataFrame(data)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table as CSV (no pandas needed): a header ``step,layer,kind,<value columns>``
        and one line per row, floats written exactly (``repr``: they read back bit for bit), NaN
        as an empty field, infinities as ``inf`` / ``-inf``. ``pandas.read_csv(path)`` reads it;
        ``MonitorTable.from_csv`` reads it back."""
        names = self.value_columns()
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "layer", "kind", *names])
            for record in self.to_records():
                writer.writerow(
                    [record["step"], record["layer"], record["kind"]]
                    + ["" if math.isnan(record[c]) else repr(record[c]) for c in names]
                )

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON (no pandas needed): a list of records, one object per row with
        keys ``step``, ``layer``, ``kind`` and every value column, NaN as ``null`` and infinities as
        ``1e999`` / ``-1e999`` (strict JSON, which parsers read as infinity), floats exactly.
        ``MonitorTable.from_json(path)`` reads it back exactly (``.to_dataframe()`` then gives the
        frame). ``pandas.read_json`` reads a finite table too (``precise_float=True`` for every
        digit), but not every table: pandas 3.1 rejects ``1e999`` (an infinity, which an exploding
        run writes) and subnormal numbers with ``precise_float=True``, and without it reads
        subnormals as 0."""
        names = self.value_columns()
        lines = []
        for record in self.to_records():
            fields = [f'"step": {record["step"]}', f'"layer": {json.dumps(record["layer"])}']
            fields.append(f'"kind": {json.dumps(record["kind"])}')
            fields += [f"{json.dumps(c)}: {_json_number(record[c])}" for c in names]
            lines.append("{" + ", ".join(fields) + "}")
        with open(path, "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(lines) + ("\n]\n" if lines else "]\n"))

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> MonitorTable:
        """A table from dicts like ``to_records()`` gives (``None`` reads as NaN)."""
        names = list(COLUMNS)
        for record in records:
            for key in record:
                if key not in ("step", "layer", "kind") and key not in names:
                    names.append(key)
        missing = [k for k in ("step", "layer", "kind") for r in records[:1] if k not in r]
        if missing:
            raise ValueError(f"a MonitorTable record needs the keys step, layer, kind; missing {missing}")

        def number(value: Any) -> float:
            return math.nan if value is None or value == "" else float(value)

        return cls(
            step=np.array([int(r["step"]) for r in records], dtype=np.int64),
            layer=np.array([str(r["layer"]) for r in records], dtype=object),
            kind=np.array([str(r["kind"]) for r in records], dtype=object),
            columns={c: np.array([number(r.get(c)) for r in records], dtype=np.float64) for c in names},
        )

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> MonitorTable:
        """Read a table that ``to_csv`` wrote."""
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return cls.from_records(
            [
                {k: (v if k in ("step", "layer", "kind") else _parse_float(v)) for k, v in r.items()}
                for r in rows
            ]
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> MonitorTable:
        """Read a table that ``to_json`` wrote."""
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of records (what MonitorTable.to_json writes)")
        return cls.from_records(records)


@dataclass(frozen=True)
class RecordedMonitor:
    """What is kept of a ``GradientMonitor`` once training is over: its table, without the model
    and the hooks (light to send between processes and to record). ``table()`` and
    ``table(summaries=True)`` read as the monitor's own do (a recording made without the summary
    rows has none to add)."""

    recorded_table: MonitorTable

    def table(self, *, summaries: bool = False) -> MonitorTable:
        """The recorded table; the ``"global"`` and ``"group"`` rows only with ``summaries=True``."""
        return self.recorded_table if summaries else self.recorded_table.without_summaries()


@dataclass(frozen=True)
class Quantity:
    """One chart: ``column`` of the table's rows of ``kind``, described by ``title``."""

    kind: str
    column: str
    title: str


QUANTITIES: dict[str, Quantity] = {
    "grad_norm": Quantity("parameters", "grad_norm", "||dL/dW|| of each layer's parameters"),
    "update_ratio": Quantity("parameters", "update_ratio", "||W_after - W_before|| / ||W_before||"),
    "activation_grad_norm": Quantity("activation", "grad_norm", "||dL/dh|| at each activation call"),
    "saturated": Quantity("activation", "saturated", "fraction of saturated units (sigmoid, tanh)"),
    "dead": Quantity("activation", "dead", "fraction of dead units (ReLU family)"),
    "global_grad_norm": Quantity(
        "global", "grad_norm", "||dL/dθ|| over all watched parameters, as the step used it (clipped)"
    ),
    "weight_norm": Quantity("parameters", "weight_norm", "||W|| before the step"),
    "activation_mean": Quantity("activation", "mean", "mean of each activation call's output"),
    "activation_std": Quantity("activation", "std", "standard deviation of each activation call's output"),
    "unit_std": Quantity("activation", "unit_std", "median over units of the std over the batch"),
    "global_weight_norm": Quantity("global", "weight_norm", "||θ|| over all watched parameters"),
    "global_update_ratio": Quantity("global", "update_ratio", "||θ_after - θ_before|| / ||θ_before||"),
    "group_grad_norm": Quantity("group", "grad_norm", "||dL/dθ|| of each optimizer parameter group"),
    "group_weight_norm": Quantity("group", "weight_norm", "||θ|| of each optimizer parameter group"),
    "group_update_ratio": Quantity("group", "update_ratio", "update ratio of each parameter group"),
    "lr": Quantity("group", "lr", "learning rate of each parameter group at the step"),
    "weight_decay": Quantity("group", "weight_decay", "weight decay of each parameter group at the step"),
}
"""The quantities the integrations write or log (``vglib.tensorboard``, ``vglib.lightning``, under
the same names): name -> which rows (``kind``) and which table column
(``MonitorTable`` says what each holds). A ``"global"`` quantity is one line, tagged
``<prefix>/<name>``; the others have a line per layer, activation call or optimizer parameter
group, tagged ``<prefix>/<name>/<layer>``."""
