"""What ``GradientMonitor`` records, written to TensorBoard: per-layer scalars as one chart per
quantity with a line per layer, and, on request, the monitor's histograms.

Two entry points share one writer path:

- ``TensorBoardLogger(writer)``, a step callback for ``GradientMonitor(..., callbacks=(logger,))``
  (or ``monitor.add_callback(logger)``): each sampled step is written as it is recorded;
- ``write_table(table, writer)``: a finished ``MonitorTable`` (or a monitor) written after the fact.

**Tags.** A quantity of a layer is the scalar ``<prefix>/<quantity>/<layer>`` (``vglib/grad_norm/0``,
``vglib/dead/2``, ...), the global gradient norm ``<prefix>/global_grad_norm``. TensorBoard's
*Scalars* dashboard draws one chart per tag (grouped under ``<prefix>``); the *Custom Scalars*
dashboard gets a layout (``custom_scalars_layout``) with ONE multi-line chart per quantity whose
lines are the layers, found by a tag regex, so layers that appear later join their chart. The
alternative, ``SummaryWriter.add_scalars``, draws a multi-line chart in the Scalars dashboard but
opens a separate event file (a separate *run*) for every line: a 20-layer model would add about a
hundred runs to the run selector. It is not used.

**Values.** TensorBoard stores a scalar as float32: a value below about 1e-38 loses digits and one
below 1.4e-45 reads 0 (the table keeps float64). A series starts at its layer's first non-NaN value:
a NaN before it means the column does not apply to that layer (``saturated`` of a ReLU, ``dead`` of
a tanh) and is skipped; a NaN after it is written (the run produced NaN, which TensorBoard marks).

**Cost.** With a ``torch.utils.tensorboard.SummaryWriter`` a step's values go out as one event
(one ``Summary`` holding every value, through the writer's own file writer), a few microseconds
per value; ``add_scalar`` makes one event per value, about 20 times slower. Other writers
(``tensorboardX``, ...) get ``add_scalar``/``add_histogram_raw``/``add_custom_scalars`` calls.

TensorBoard is an optional dependency (``pip install "vglib[tensorboard]"``): this module imports
it only when a logger is made or a table written.
"""

from __future__ import annotations

import inspect
import math
import re
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_choice
from .tables import QUANTITIES, MonitorTable, Quantity

__all__ = [
    "DEFAULT_QUANTITIES",
    "QUANTITIES",
    "Quantity",
    "TensorBoardLogger",
    "custom_scalars_layout",
    "write_table",
]


DEFAULT_QUANTITIES = (
    "grad_norm", "update_ratio", "activation_grad_norm", "saturated", "dead", "unit_std", "global_grad_norm",
)  # fmt: skip
"""What is written unless ``quantities=`` says otherwise (the global norm where the table has it:
a table recorded before the monitor had ``"global"`` rows has none)."""

_HISTOGRAMS = {"activation": "activation", "gradient": "log10_activation_grad"}
_INSTALL = 'pip install "vglib[tensorboard]"'


def _require_tensorboard() -> Any:
    """The ``Summary`` protobuf class of TensorBoard, or an ImportError saying what to install."""
    try:
        from tensorboard.compat.proto.summary_pb2 import Summary
    except ImportError as error:  # ModuleNotFoundError included
        raise ImportError(
            f"writing to TensorBoard needs the tensorboard package: {_INSTALL} (or pip install tensorboard)"
        ) from error
    return Summary


def _check_writer(writer: object) -> None:
    missing = [m for m in ("add_scalar", "add_histogram_raw", "add_custom_scalars") if not hasattr(writer, m)]
    if missing:
        raise TypeError(
            "writer must be a torch.utils.tensorboard.SummaryWriter (or a writer with add_scalar, "
            f"add_histogram_raw and add_custom_scalars); {type(writer).__name__} has no {', '.join(missing)}"
        )


def _check_quantities(quantities: Iterable[str] | None) -> tuple[str, ...]:
    if quantities is None:
        return DEFAULT_QUANTITIES
    if isinstance(quantities, str):
        raise TypeError(
            f"quantities must be a sequence of names, e.g. ({quantities!r},); valid names are "
            f"{', '.join(QUANTITIES)}"
        )
    chosen = tuple(check_choice("quantity", q, QUANTITIES) for q in quantities)
    if not chosen:
        raise ValueError(f"quantities is empty; choose among {', '.join(QUANTITIES)}")
    return tuple(dict.fromkeys(chosen))


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix.strip("/"):
        raise ValueError(f"prefix must be a non-empty tag prefix such as 'vglib'; got {prefix!r}")
    return prefix.strip("/")


def custom_scalars_layout(
    table: MonitorTable | None = None,
    *,
    prefix: str = "vglib",
    quantities: Sequence[str] | None = None,
) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars layout that groups the logged tags: one category ``prefix``, and in it one
    ``Multiline`` chart per quantity whose tag is the regex ``^<prefix>/<quantity>/``, so every
    layer is a line of it, and one for the global gradient norm. In the form
    ``SummaryWriter.add_custom_scalars`` takes. TensorBoard shows the last layout written to a run:
    the logger and ``write_table`` merge theirs with what vglib wrote to the same writer before;
    if you write a layout of your own, pass ``layout=False`` and write yours merged with this.

    With a ``table``, only quantities that have a value in it are charted (no empty chart for
    ``saturated`` in a ReLU network), and the global norm only where the table has it.
    """
    prefix = _check_prefix(prefix)
    chosen = _check_quantities(quantities)
    if table is not None:
        chosen = tuple(q for q in chosen if _has_values(table, QUANTITIES[q]))
    charts: dict[str, list[Any]] = {}
    for name in chosen:
        tag = _tag(prefix, name, "")
        regex = f"^{re.escape(tag)}$" if QUANTITIES[name].kind == "global" else f"^{re.escape(tag)}"
        charts[f"{name}: {QUANTITIES[name].title}"] = ["Multiline", [regex]]
    return {prefix: charts}


def _tag(prefix: str, name: str, layer: str) -> str:
    """``<prefix>/<name>`` for a ``"global"`` quantity, else ``<prefix>/<name>/<layer>``."""
    return f"{prefix}/{name}" if QUANTITIES[name].kind == "global" else f"{prefix}/{name}/{layer}"


def _has_values(table: MonitorTable, quantity: Quantity) -> bool:
    rows = table.kind == quantity.kind
    return bool(rows.any() and np.isfinite(np.asarray(table[quantity.column], dtype=np.float64)[rows]).any())


# the vglib layout each writer got, merged over every logger and table written with it
_LAYOUTS: weakref.WeakKeyDictionary[Any, dict[str, dict[str, list[Any]]]] = weakref.WeakKeyDictionary()


def _write_layout(writer: Any, layout: dict[str, dict[str, list[Any]]]) -> None:
    """Write ``layout`` merged with what vglib wrote to this writer before: TensorBoard shows the
    last layout of a run, so two loggers on one writer (two models, two prefixes) both stay."""
    known = _LAYOUTS.get(writer, {})
    merged = {category: dict(charts) for category, charts in known.items()}
    for category, charts in layout.items():
        merged.setdefault(category, {}).update(charts)
    if merged != known:
        writer.add_custom_scalars(merged)
        _LAYOUTS[writer] = merged


@dataclass
class _Histogram:
    tag: str
    edges: np.ndarray  # HISTOGRAM_BINS + 1 edges
    counts: np.ndarray


class _Emitter:
    """Turns a table's rows, step by step, into tagged values; shared by the logger and
    ``write_table`` so that both write exactly the same events."""

    def __init__(self, prefix: str, quantities: tuple[str, ...]):
        self.prefix = prefix
        self.quantities = quantities
        self.started: set[str] = set()  # tags whose series has begun (a first non-NaN value)

    def scalars(self, table: MonitorTable) -> list[tuple[int, str, float]]:
        """``(step, tag, value)`` for the rows of ``table``, in the table's order."""
        out: list[tuple[int, str, float]] = []
        steps, kinds, layers = table.step, table.kind, table.layer
        columns = {q: np.asarray(table[QUANTITIES[q].column], dtype=np.float64) for q in self.quantities}
        for i in range(len(table)):
            for name in self.quantities:
                if QUANTITIES[name].kind != kinds[i]:
                    continue
                value = float(columns[name][i])
                tag = _tag(self.prefix, name, layers[i])
                if math.isnan(value) and tag not in self.started:
                    continue  # the column does not apply to this layer (yet)
                self.started.add(tag)
                out.append((int(steps[i]), tag, value))
        return out

    def histogram_tag(self, of: str, layer: str) -> str:
        return f"{self.prefix}/histogram/{_HISTOGRAMS[of]}/{layer}"


def _histogram_fields(histograms: Sequence[_Histogram]) -> list[dict[str, Any]]:
    """``add_histogram_raw``'s arguments for each of ``histograms``, counts already binned on
    their edges: the buckets as they are (upper edges as limits); ``min``/``max`` the outer edges
    of the first and last non-empty bins (TensorBoard takes them as those bins' outer edges, so
    every bin keeps its width); ``sum``/``sum_squares`` from the bin centres (the raw values are
    not kept). All at once: a few numpy calls for a step's histograms, not a few per histogram."""
    if not histograms:
        return []
    edges = np.stack([h.edges for h in histograms]).astype(np.float64)
    counts = np.stack([h.counts for h in histograms]).astype(np.float64)
    filled = counts > 0
    any_filled = filled.any(axis=1)
    first = np.where(any_filled, filled.argmax(axis=1), 0)
    last = np.where(any_filled, counts.shape[1] - 1 - filled[:, ::-1].argmax(axis=1), counts.shape[1] - 1)
    rows = np.arange(len(histograms))
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
    weighted = counts * centres
    columns = zip(
        edges[rows, first].tolist(),
        edges[rows, last + 1].tolist(),
        counts.sum(axis=1).tolist(),
        weighted.sum(axis=1).tolist(),
        (weighted * centres).sum(axis=1).tolist(),
        edges[:, 1:].tolist(),
        counts.tolist(),
        strict=True,
    )
    return [
        {
            "min": low,
            "max": high,
            "num": round(num),
            "sum": total,
            "sum_squares": squares,
            "bucket_limits": limits,
            "bucket_counts": bucket,
        }
        for low, high, num, total, squares, limits, bucket in columns
    ]


def _emit(
    writer: Any,
    scalars: Sequence[tuple[int, str, float]],
    histograms: Sequence[tuple[int, _Histogram]],
    *,
    batched: bool | None = None,
) -> None:
    """Write ``scalars`` and ``histograms``. ``batched`` (default: whether ``writer`` is a torch
    ``SummaryWriter``): one event per step holding every value, instead of one call per value."""
    file_writer = getattr(writer, "_get_file_writer", None)
    if batched is None:
        batched = callable(file_writer)
    fields = _histogram_fields([h for _, h in histograms])
    if not batched:
        for step, tag, value in scalars:
            writer.add_scalar(tag, value, step)
        for (step, h), f in zip(histograms, fields, strict=True):
            writer.add_histogram_raw(h.tag, global_step=step, **f)
        return
    summary_cls = _require_tensorboard()
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    by_step: dict[int, list[Any]] = {}
    for step, tag, value in scalars:
        by_step.setdefault(step, []).append(summary_cls.Value(tag=tag, simple_value=value))
    for (step, h), f in zip(histograms, fields, strict=True):
        proto = HistogramProto(
            min=f["min"],
            max=f["max"],
            num=f["num"],
            sum=f["sum"],
            sum_squares=f["sum_squares"],
            bucket_limit=f["bucket_limits"],
            bucket=f["bucket_counts"],
        )
        by_step.setdefault(step, []).append(summary_cls.Value(tag=h.tag, histo=proto))
    target = file_writer()  # type: ignore[misc]
    walltime = time.time()
    for step, values in by_step.items():
        target.add_summary(summary_cls(value=values), step, walltime)


class TensorBoardLogger:
    """A ``GradientMonitor`` step callback that writes each sampled step to TensorBoard.

    ::

        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter("runs/mlp")
        logger = vglib.tensorboard.TensorBoardLogger(writer)
        with vglib.GradientMonitor(model, optimizer, every=10, callbacks=(logger,)) as monitor:
            ...  # train as usual
        writer.close()

    Parameters
    ----------
    writer
        A ``torch.utils.tensorboard.SummaryWriter`` (or a writer with the same ``add_scalar``,
        ``add_histogram_raw`` and ``add_custom_scalars``, such as tensorboardX's).
    histograms
        Also write the monitor's histograms of each activation call's output and of
        ``log10 |dL/dh|`` (``GradientMonitor(histograms=True)`` records them), tagged
        ``<prefix>/histogram/activation/<call>`` and ``<prefix>/histogram/log10_activation_grad/
        <call>``: written as the monitor binned them (40 bins, ``add_histogram_raw``), not
        re-binned; their ``sum`` and ``sum_squares`` are taken at the bin centres (the raw values
        are not kept). Only the step's counts are written, so the cost per step does not grow
        with the run.
    prefix
        The first part of every tag: ``<prefix>/<quantity>/<layer>``.
    quantities
        Which quantities to write, names of ``QUANTITIES``; default ``DEFAULT_QUANTITIES``
        (``grad_norm``, ``update_ratio``, ``activation_grad_norm``, ``saturated``, ``dead``,
        ``unit_std``, ``global_grad_norm``); per optimizer parameter group, ``group_grad_norm``,
        ``lr``, ... can be added.
    layout
        Write the Custom Scalars layout (``custom_scalars_layout``) at the first step, charting the
        quantities that step has values for, merged with any that vglib wrote to ``writer``
        before (TensorBoard shows a run's last layout). ``False`` if you write a layout of your own.

    The logger is called as ``logger(monitor, step_table)``, with a ``MonitorTable`` of one
    sampled step's rows; ``write_table`` writes a whole table the same way.
    """

    def __init__(
        self,
        writer: Any,
        *,
        histograms: bool = False,
        prefix: str = "vglib",
        quantities: Sequence[str] | None = None,
        layout: bool = True,
    ):
        _require_tensorboard()
        _check_writer(writer)
        self.writer = writer
        self.histograms = bool(histograms)
        self.layout = bool(layout)
        self._emitter = _Emitter(_check_prefix(prefix), _check_quantities(quantities))
        self._edges: dict[tuple[str, str], np.ndarray] = {}
        self._laid_out = False

    @property
    def prefix(self) -> str:
        return self._emitter.prefix

    @property
    def quantities(self) -> tuple[str, ...]:
        return self._emitter.quantities

    def __call__(self, monitor: Any, table: MonitorTable) -> None:
        if not isinstance(table, MonitorTable):
            raise TypeError(f"a step callback gets (monitor, MonitorTable); got a {type(table).__name__}")
        if self.histograms and not getattr(monitor, "histograms_on", False):
            raise RuntimeError(
                "TensorBoardLogger(histograms=True) needs a monitor that records them: "
                "GradientMonitor(..., histograms=True)"
            )
        if self.layout and not self._laid_out:
            _write_layout(
                self.writer,
                custom_scalars_layout(table, prefix=self.prefix, quantities=self.quantities),
            )
            self._laid_out = True
        histograms = self._step_histograms(monitor, table) if self.histograms else []
        _emit(self.writer, self._emitter.scalars(table), histograms)

    def _step_histograms(self, monitor: Any, table: MonitorTable) -> list[tuple[int, _Histogram]]:
        out = []
        steps_of: dict[str, set[int]] = {}
        for step, layer, kind in zip(table.step.tolist(), table.layer, table.kind, strict=True):
            if kind == "activation":
                steps_of.setdefault(layer, set()).add(step)
        for layer, steps in steps_of.items():
            for step in sorted(steps):
                for of in _HISTOGRAMS:
                    counts = self._counts_at(monitor, layer, of, step)
                    if counts is not None:
                        tag = self._emitter.histogram_tag(of, layer)
                        out.append((step, _Histogram(tag, self._edges[layer, of], counts)))
        return out

    def _counts_at(self, monitor: Any, layer: str, of: str, step: int) -> np.ndarray | None:
        """The counts of one histogram at ``step`` (``GradientMonitor.step_histogram``: a cost that
        does not grow with the run), the bin edges kept from the first."""
        try:
            edges, counts = monitor.step_histogram(layer, step, of=of)
        except KeyError:  # no histogram of this call (no gradient reached it, say)
            return None
        self._edges.setdefault((layer, of), edges)
        return counts


def write_table(
    table: Any,
    writer: Any,
    *,
    histograms: bool = False,
    prefix: str = "vglib",
    quantities: Sequence[str] | None = None,
    layout: bool = True,
) -> int:
    """Write a finished run to TensorBoard, exactly as ``TensorBoardLogger`` would have during it.

    Parameters
    ----------
    table
        A ``MonitorTable``, or anything with a ``table()`` method that returns one (a
        ``GradientMonitor``, a ``RecordedMonitor``), whose ``table(summaries=True)`` is taken
        where it has that option (the global and parameter-group rows with the layers'). A
        ``MonitorTable`` without ``"global"`` rows gives no global gradient norm.
    writer, prefix, quantities, layout
        As for ``TensorBoardLogger``; the layout charts the quantities that have a value anywhere
        in the table.
    histograms
        Also write the histograms; ``table`` must then be a ``GradientMonitor`` made with
        ``histograms=True``.

    Returns
    -------
    int
        The number of scalar values written.
    """
    _require_tensorboard()
    _check_writer(writer)
    monitor = None
    if not isinstance(table, MonitorTable):
        if not callable(getattr(table, "table", None)):
            raise TypeError(
                "table must be a MonitorTable, a GradientMonitor or a RecordedMonitor; "
                f"got {type(table).__name__}"
            )
        monitor = table
        try:
            takes_summaries = "summaries" in inspect.signature(monitor.table).parameters
        except (TypeError, ValueError):
            takes_summaries = False
        table = monitor.table(summaries=True) if takes_summaries else monitor.table()
        if not isinstance(table, MonitorTable):
            raise TypeError(f"table() returned a {type(table).__name__}, not a MonitorTable")
    if histograms and not getattr(monitor, "histograms_on", False):
        raise RuntimeError(
            "write_table(histograms=True) needs the GradientMonitor itself, made with histograms=True "
            "(a MonitorTable or RecordedMonitor holds no histograms)"
        )
    emitter = _Emitter(_check_prefix(prefix), _check_quantities(quantities))
    if layout:
        _write_layout(
            writer, custom_scalars_layout(table, prefix=emitter.prefix, quantities=emitter.quantities)
        )
    scalars = emitter.scalars(table)
    written: list[tuple[int, _Histogram]] = []
    if histograms:
        for layer in table.layers("activation"):
            for of in _HISTOGRAMS:
                try:
                    steps, edges, counts = monitor.histogram(layer, of=of)  # type: ignore[union-attr]
                except KeyError:
                    continue
                tag = emitter.histogram_tag(of, layer)
                written.extend(
                    (int(s), _Histogram(tag, edges, c)) for s, c in zip(steps, counts, strict=True)
                )
        written.sort(key=lambda item: item[0])
    _emit(writer, scalars, written)
    return len(scalars)
