"""Figures. Each function takes results and returns a ``matplotlib.figure.Figure``.

Gradient norms are drawn on a log scale. A norm that is exactly 0 (the gradient underflowed in
float32, or the layer cannot affect the loss) has no logarithm; it is drawn at ``UNDERFLOW_FLOOR``
with a downward triangle and the floor is marked, so such a layer is never just missing.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from ._seed import SeedSpread
from .activations import get_activation
from .compare import Grid, RemedyTable
from .flow import TimeFlow
from .harness import HarnessResult, HarnessRuns
from .probes import GradientProfile
from .tables import MonitorTable
from .tasks import harness_task
from .train import TrainingHistory
from .transformer_training import EarlyGradients

__all__ = [
    "GRADIENT_SERIES",
    "OKABE_ITO",
    "UNDERFLOW_FLOOR",
    "CurveFigure",
    "ProfileFigure",
    "Series",
    "panels",
    "plot_accuracy_by_lr",
    "plot_activation_derivatives",
    "plot_curves",
    "plot_early_gradients",
    "plot_gradient_heatmap",
    "plot_gradient_profile",
    "plot_harness_results",
    "plot_histograms_over_training",
    "plot_norm_placement",
    "plot_order_to_chaos",
    "plot_phase_diagram",
    "plot_remedies",
    "plot_time_gradients",
    "plot_trainable_depth",
    "plot_training_curves",
    "plot_tuning",
    "plot_update_ratios",
    "seed_lines",
]

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000")
"""A colour-blind-safe palette (Okabe & Ito)."""

UNDERFLOW_FLOOR = 1e-45
"""Where exact zeros are drawn: just below float32's smallest positive value (~1.4e-45)."""

_OVERFLOW_CEILING = 1e39  # just above float32's largest value (~3.4e38)


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    # Figure() rather than pyplot: no global state, nothing shown twice in a notebook, and an
    # opaque background so the figure reads in dark mode too.
    fig = Figure(figsize=(width, height), facecolor="white", layout=layout)
    FigureCanvasAgg(fig)
    return fig


def panels(
    count: int = 2,
    *,
    width: float = 8.0,
    height: float = 3.4,
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels side by side, as the chapters draw them: white background,
    constrained layout, a light grid on every panel. Returns ``(figure, axes)``; the figure shows
    itself when it ends a notebook cell."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise ValueError(f"count must be a whole number of panels >= 1, got {count!r}")
    for name, value in (("width", width), ("height", height)):
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 100):
            raise ValueError(f"{name} must be a size in inches, > 0 and < 100, got {value!r}")
    fig = _new_figure(width, height)
    axes = np.atleast_1d(fig.subplots(1, int(count), sharex=sharex, sharey=sharey)).tolist()
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def seed_lines(
    ax: Axes,
    x: Any,
    curves: Sequence[Any],
    *,
    label: str | None = None,
    color: str | None = None,
    linewidth: float = 0.9,
    **style: Any,
) -> list[Any]:
    """One thin line per seed: ``curves[k]`` against ``x`` (the same x for every curve, or one x
    per curve when ``x`` is a sequence of as many arrays), all in one ``color``, with ``label`` on
    the first line only so the legend names the group once. Returns the lines drawn."""
    curves = list(curves)
    if not curves:
        raise ValueError("seed_lines needs at least one curve (one per seed)")
    per_curve = (
        isinstance(x, Sequence | np.ndarray)
        and len(x) == len(curves)
        and all(np.ndim(item) == 1 and len(item) == len(c) for item, c in zip(x, curves, strict=True))
    )
    lines = []
    for k, curve in enumerate(curves):
        xs = x[k] if per_curve else x
        (line,) = ax.plot(
            xs, curve, color=color, linewidth=linewidth, label=label if k == 0 else None, **style
        )
        lines.append(line)
    return lines


class _NormCurve:
    """A per-layer curve of norms on a log axis, with zeros drawn at the floor and marked."""

    def __init__(self, ax: Axes, label: str, color: str, marker: str, linestyle: Any = "-"):
        (self.line,) = ax.plot(
            [], [], color=color, marker=marker, markersize=3, linestyle=linestyle, label=label
        )
        (self.zeros,) = ax.plot([], [], linestyle="none", marker="v", markersize=6, color=color, alpha=0.9)
        (self.overflow,) = ax.plot([], [], linestyle="none", marker="^", markersize=6, color=color, alpha=0.9)
        self.artists = (self.line, self.zeros, self.overflow)

    def set(self, values: np.ndarray) -> tuple[float, float, int, int, int]:
        """Show ``values`` (layer 1 first): 0 at the floor, inf at the ceiling, NaN (no gradient to
        measure: a frozen layer) as a gap. Returns (smallest, largest drawn, #zeros, #overflows,
        #missing)."""
        layers = np.arange(1, len(values) + 1)
        zero = values == 0.0
        missing = np.isnan(values)
        bad = np.isinf(values)
        shown = np.where(zero, UNDERFLOW_FLOOR, np.where(bad, _OVERFLOW_CEILING, values))
        self.line.set_data(layers, shown)
        self.zeros.set_data(layers[zero], shown[zero])
        self.overflow.set_data(layers[bad], shown[bad])
        drawn = shown[~missing]
        if not drawn.size:
            return np.inf, 0.0, 0, 0, int(missing.sum())
        return float(drawn.min()), float(drawn.max()), int(zero.sum()), int(bad.sum()), int(missing.sum())


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _pos: object = None) -> str:
    """Tick label ``10⁻⁵`` as plain text: mathtext labels cost more to draw than the whole curve."""
    if value <= 0:
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) > 1e-6:
        return f"{value:.0e}"
    return "10" + str(round(exponent)).translate(_SUPERSCRIPT)


def _decorate_log_axis(ax: Axes) -> None:
    ax.set_autoscale_on(False)  # limits are always set from the data, by _set_limits
    ax.set_yscale("log")
    # Few ticks: a range can span 45 decades, and every tick label costs drawing time.
    ax.yaxis.set_major_locator(LogLocator(base=10.0, numticks=7))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel("hidden layer $l$ (1 = input side)")
    ax.set_ylabel("gradient norm (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_facecolor("white")
    ax.axhline(UNDERFLOW_FLOOR, color="0.5", linestyle=":", linewidth=1)


def _set_limits(ax: Axes, depth: int, low: float, high: float) -> None:
    left, right, bottom, top = _snap_limits(depth, low, high)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def _snap_limits(depth: int, low: float, high: float) -> tuple[float, float, float, float]:
    """Axis limits rounded outwards to a few steps, so that redraws often share a background."""
    if not np.isfinite(low):  # nothing drawn (every layer frozen)
        low, high = 1e-3, 1.0
    low = max(low, UNDERFLOW_FLOOR)
    high = max(high, low)
    # pad half a decade, then round outwards to multiples of three decades
    bottom = 3 * np.floor((np.log10(low) - 0.5) / 3)
    top = 3 * np.ceil((np.log10(high) + 0.5) / 3)
    right = depth if depth <= 10 else 10 * int(np.ceil(depth / 10))
    return 0.5, right + 0.5, float(10.0**bottom), float(10.0**top)


@dataclass(frozen=True)
class Series:
    """How one curve is drawn: its legend label, colour and dash pattern (SVG ``stroke-dasharray``
    syntax, e.g. ``"5 3"``; empty for a solid line)."""

    label: str
    color: str
    dash: str = ""

    @property
    def linestyle(self) -> str | tuple[float, tuple[float, ...]]:
        """The dash pattern in matplotlib's terms."""
        return "-" if not self.dash else (0.0, tuple(float(d) for d in self.dash.split()))


GRADIENT_SERIES = (
    Series("weights ‖∂L/∂W_l‖", OKABE_ITO[0]),
    Series("activations ‖∂L/∂h_l‖", OKABE_ITO[1], dash="5 3"),
)
"""The two curves of a gradient profile, as every explorer draws them."""


class CurveFigure:
    """A reusable figure of per-layer curves on a log scale, built for many redraws a second.

    ``update`` changes the data of existing artists instead of making a new figure, and ``render``
    blits: everything that depends only on the axis limits (frame, ticks, labels, legend) is drawn
    once per distinct set of limits, kept, and pasted back; only the curves, the title and the
    note are drawn on each render. Drawing text is the slow part of Agg (about 1 ms a label), and
    most labels do not change. The figure is an ordinary one in between: ``savefig`` draws it whole.
    """

    def __init__(
        self,
        series: Sequence[Series] = GRADIENT_SERIES,
        *,
        xlabel: str = "hidden layer $l$ (1 = input side)",
        ylabel: str = "gradient norm (log scale)",
        width: float = 7.0,
        height: float = 3.6,
        dpi: float = 80.0,
        cache_size: int = 48,
    ):
        if not series:
            raise ValueError("a CurveFigure needs at least one series")
        # Fixed margins instead of constrained layout, which would re-measure every label on
        # every redraw and cost more than all the rest.
        self.figure = _new_figure(width, height, layout=None)
        self.figure.set_dpi(dpi)
        self.figure.subplots_adjust(left=0.11, right=0.98, bottom=0.14, top=0.9)
        self.ax = self.figure.add_subplot()
        _decorate_log_axis(self.ax)
        self.ax.set_xlabel(xlabel)
        self.ax.set_ylabel(ylabel)
        markers = "os^Dv<>"
        self.curves = [
            _NormCurve(self.ax, s.label, s.color, markers[i % len(markers)], s.linestyle)
            for i, s in enumerate(series)
        ]
        self.ax.legend(loc="upper left", fontsize=8, framealpha=1.0)
        self.ax.set_title(" ", fontsize=10, y=1.01)  # a fixed y skips re-measuring the axes
        self.note = self.ax.text(
            0.99, 0.02, "", transform=self.ax.transAxes, ha="right", va="bottom", fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "0.6", "alpha": 1.0},
        )  # fmt: skip
        self._dynamic = [*(a for c in self.curves for a in c.artists), self.ax.title, self.note]
        self._backgrounds: OrderedDict[tuple[float, ...], Any] = OrderedDict()
        self._cache_size = cache_size

    def update(self, curves: Sequence[np.ndarray], title: str = "") -> Figure:
        """Show one array per series (layer 1 first); returns the figure (not yet rendered)."""
        if len(curves) != len(self.curves):
            raise ValueError(f"got {len(curves)} curves for {len(self.curves)} series")
        low, high, zeros, bad, missing, depth = np.inf, 0.0, 0, 0, 0, 1
        for curve, values in zip(self.curves, curves, strict=True):
            lo, hi, z, b, m = curve.set(np.asarray(values, dtype=np.float64))
            low, high, zeros, bad, missing = min(low, lo), max(high, hi), zeros + z, bad + b, missing + m
            depth = max(depth, len(values))
        _set_limits(self.ax, depth, low, high)
        self.ax.title.set_text(title)
        self.note.set_text(_underflow_note(zeros, bad, missing))
        self.note.set_visible(bool(zeros + bad + missing))
        return self.figure

    def render(self) -> np.ndarray:
        """Draw the figure into its canvas; returns the RGBA pixels (height, width, 4)."""
        canvas = self.figure.canvas
        key = (*self.ax.get_xlim(), *self.ax.get_ylim())
        for artist in self._dynamic:
            artist.set_animated(True)  # Figure.draw skips animated artists
        try:
            if key in self._backgrounds:
                self._backgrounds.move_to_end(key)
                canvas.restore_region(self._backgrounds[key])
            else:
                with mpl.rc_context({"text.hinting": "no_hinting"}):  # a fifth faster text
                    canvas.draw()
                self._backgrounds[key] = canvas.copy_from_bbox(self.figure.bbox)
                if len(self._backgrounds) > self._cache_size:
                    self._backgrounds.popitem(last=False)
            with mpl.rc_context({"text.hinting": "no_hinting"}):
                for artist in self._dynamic:
                    self.ax.draw_artist(artist)
        finally:
            for artist in self._dynamic:
                artist.set_animated(False)
        return np.asarray(canvas.buffer_rgba())


class ProfileFigure(CurveFigure):
    """A ``CurveFigure`` of one gradient profile: weight and activation gradients per layer."""

    def __init__(self, **kwargs: Any):
        super().__init__(GRADIENT_SERIES, **kwargs)
        self.weight, self.activation = self.curves

    def update(self, profile: GradientProfile, title: str = "") -> Figure:  # type: ignore[override]
        """Show ``profile``; returns the figure (not yet rendered)."""
        return super().update([profile.weight_grad_norms, profile.activation_grad_norms], title)


def _underflow_note(zeros: int, overflows: int, missing: int = 0) -> str:
    parts = []
    if zeros:
        parts.append(f"▼ {zeros} norm(s) exactly 0 (float32 underflow), drawn at 1e-45")
    if overflows:
        parts.append(f"▲ {overflows} norm(s) overflowed to inf/nan")
    if missing:
        parts.append(f"{missing} layer(s) without a gradient (frozen): not drawn")
    return "\n".join(parts)


def plot_gradient_profile(
    profiles: GradientProfile | Mapping[str, GradientProfile],
    *,
    quantity: str = "weight",
    title: str = "",
) -> Figure:
    """Per-layer gradient norms of one profile, or of several (a label each) on shared axes.

    ``quantity`` is ``"weight"`` (``||dL/dW_l||``) or ``"activation"`` (``||dL/dh_l||``).
    """
    if isinstance(profiles, GradientProfile):
        profiles = {"": profiles}
    if not profiles:
        raise ValueError("plot_gradient_profile needs at least one profile")
    if quantity not in ("weight", "activation"):
        raise ValueError(f"unknown quantity {quantity!r}; valid choices are 'weight', 'activation'")
    fig = _new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    _decorate_log_axis(ax)
    markers = "osD^v<>"
    low, high, zeros, bad, missing, depth = np.inf, 0.0, 0, 0, 0, 1
    for i, (label, profile) in enumerate(profiles.items()):
        curve = _NormCurve(ax, label, OKABE_ITO[i % 7], markers[i % 7])
        values = getattr(profile, f"{quantity}_grad_norms")
        lo, hi, z, b, m = curve.set(values)
        low, high, zeros, bad, missing = min(low, lo), max(high, hi), zeros + z, bad + b, missing + m
        depth = max(depth, profile.depth)
    _set_limits(ax, depth, low, high)
    symbol = r"\partial L/\partial W_l" if quantity == "weight" else r"\partial L/\partial h_l"
    ax.set_ylabel(rf"$\|{symbol}\|$ (log scale)")
    ax.set_title(title, fontsize=10)
    if any(profiles):
        ax.legend(fontsize=8, framealpha=1.0)
    if zeros or bad or missing:
        ax.text(0.99, 0.02, _underflow_note(zeros, bad, missing), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8)  # fmt: skip
    return fig


def plot_time_gradients(flows: TimeFlow | Mapping[str, TimeFlow], *, title: str = "") -> Figure:
    """The gradient that reaches each time step, ``||dL/dx_t||`` (``GradientFlow.time``), of one
    sequence model or of several (a label each), first step on the left; exact zeros at the floor."""
    if isinstance(flows, TimeFlow):
        flows = {"": flows}
    if not flows:
        raise ValueError("plot_time_gradients needs at least one TimeFlow")
    fig = _new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    _decorate_log_axis(ax)
    low, high, zeros, bad, missing, steps = np.inf, 0.0, 0, 0, 0, 1
    for i, (label, flow) in enumerate(flows.items()):
        curve = _NormCurve(ax, label, OKABE_ITO[i % 7], "osD^v<>"[i % 7])
        lo, hi, z, b, m = curve.set(np.asarray(flow.grad_norms, dtype=np.float64))
        low, high, zeros, bad, missing = min(low, lo), max(high, hi), zeros + z, bad + b, missing + m
        steps = max(steps, flow.steps)
    _set_limits(ax, steps, low, high)
    ax.set_xlabel("time step $t$ (1 = first)")
    ax.set_ylabel(r"$\|\partial L/\partial x_t\|$ (log scale)")
    ax.set_title(title, fontsize=10)
    if any(flows):
        ax.legend(fontsize=8, framealpha=1.0)
    if zeros or bad or missing:
        ax.text(0.99, 0.02, _underflow_note(zeros, bad, missing), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8)  # fmt: skip
    return fig


def plot_activation_derivatives(names: Sequence[str] = ("sigmoid", "tanh"), x_max: float = 6.0) -> Figure:
    """Each activation and its derivative, with the derivative's bound marked."""
    acts = [get_activation(n) for n in names]
    x = torch.linspace(-x_max, x_max, 601)
    fig = _new_figure(8.0, 3.2)
    ax_f, ax_d = fig.subplots(1, 2)
    for i, act in enumerate(acts):
        color = OKABE_ITO[i % 7]
        ax_f.plot(x, act(x).detach(), color=color, label=act.name)
        ax_d.plot(x, act.derivative(x), color=color, label=f"{act.name}'")
        ax_d.axhline(act.derivative_bound, color=color, linestyle=":", linewidth=1)
        ax_d.annotate(
            f"max {act.derivative_bound:.3g}", (x_max, act.derivative_bound), fontsize=8,
            color=color, ha="right", va="bottom",
        )  # fmt: skip
    ax_f.set(title=r"activation $\phi(z)$", xlabel="pre-activation $z$", ylabel=r"$\phi(z)$")
    ax_d.set(title=r"derivative $\phi'(z)$", xlabel="pre-activation $z$", ylabel=r"$\phi'(z)$")
    for ax in (ax_f, ax_d):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, framealpha=1.0)
    return fig


def plot_order_to_chaos(activation: str, sigma_w2s: Sequence[float], sigma_b2: float = 0.0) -> Figure:
    """``chi_1`` and the gradient depth scale ``|xi|`` against ``sigma_w^2`` (Schoenholz et al. 2017)."""
    from .theory import chi_1

    grid = np.asarray(sigma_w2s, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 2 or (grid <= 0).any():
        raise ValueError("sigma_w2s must hold at least two positive values")
    chis = np.array([chi_1(activation, float(s), sigma_b2) for s in grid])
    with np.errstate(divide="ignore"):
        scale = np.abs(1.0 / np.log(chis))
    fig = _new_figure(8.0, 3.2)
    ax_chi, ax_xi = fig.subplots(1, 2)
    ax_chi.plot(grid, chis, color=OKABE_ITO[0])
    ax_chi.axhline(1.0, color="0.5", linestyle=":")
    ax_chi.set(
        xlabel=r"$\sigma_w^2$",
        ylabel=r"$\chi_1$",
        title=rf"$\chi_1$ ({activation}, $\sigma_b^2$ = {sigma_b2:g})",
    )
    ax_xi.semilogy(grid, np.minimum(scale, 1e4), color=OKABE_ITO[1])
    ax_xi.set(xlabel=r"$\sigma_w^2$", ylabel=r"$|\xi_\nabla|$ (layers)", title="gradient depth scale")
    for ax in (ax_chi, ax_xi):
        ax.grid(True, alpha=0.3)
    return fig


def plot_training_curves(
    histories: Mapping[str, TrainingHistory | Sequence[TrainingHistory]],
    *,
    baseline: float | None = None,
    title: str = "",
) -> Figure:
    """Held-out loss against training step for labelled runs, with an optional baseline marked.
    A label may hold several runs (one per seed): they share its colour, one thin line each."""
    if not histories:
        raise ValueError("plot_training_curves needs at least one history")
    fig = _new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for i, (label, runs) in enumerate(histories.items()):
        runs = [runs] if isinstance(runs, TrainingHistory) else list(runs)
        if not runs or not all(isinstance(r, TrainingHistory) for r in runs):
            raise TypeError(f"{label!r}: give a TrainingHistory or a sequence of them")
        for k, history in enumerate(runs):
            ax.plot(history.eval_steps, history.eval_loss, color=OKABE_ITO[i % 7], marker="os^D"[i % 4],
                    markersize=3 if len(runs) == 1 else 2, linewidth=1.5 if len(runs) == 1 else 0.9,
                    label=label if k == 0 else None)  # fmt: skip
    if baseline is not None:
        ax.axhline(baseline, color="0.3", linestyle="--", linewidth=1, label=f"baseline {baseline:.3g}")
    ax.set(xlabel="training step", ylabel="held-out loss (MSE)", title=title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, framealpha=1.0)
    return fig


def plot_curves(
    x: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    dashed: Sequence[str] = (),
) -> Figure:
    """Labelled curves over a shared x axis; labels listed in ``dashed`` are drawn dashed
    (for theory beside measurement). Colours cycle through the colour-blind-safe palette, with a
    dashed curve taking the colour of the solid one before it."""
    if not curves:
        raise ValueError("plot_curves needs at least one curve")
    fig = _new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    color_index = -1
    for label, values in curves.items():
        if label not in dashed or color_index < 0:
            color_index += 1
        ax.plot(x, values, color=OKABE_ITO[color_index % 7], linestyle="--" if label in dashed else "-",
                marker="" if label in dashed else "o", markersize=3, label=label)  # fmt: skip
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, framealpha=1.0)
    return fig


def plot_gradient_heatmap(table: MonitorTable, column: str = "grad_norm", kind: str = "parameters") -> Figure:
    """A layer x step heat map of ``log10`` of one monitor column (input-side layer at the top)."""
    names, steps, values = table.matrix(column, kind)
    if not names:
        raise ValueError(f"the table holds no {kind!r} rows")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(values > 0, values, np.nan))
    fig = _new_figure(7.0, 0.6 + 0.22 * len(names) + 1.2)
    ax = fig.add_subplot()
    image = ax.imshow(logs, aspect="auto", cmap="viridis", interpolation="nearest",
                      extent=(steps[0] - 0.5, steps[-1] + 0.5, len(names) - 0.5, -0.5))  # fmt: skip
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="training step", title=f"log10 {column} per layer")
    fig.colorbar(image, ax=ax, label=f"log10 {column}")
    return fig


def plot_update_ratios(table: MonitorTable, rule_of_thumb: float = 1e-3) -> Figure:
    """Update-to-weight ratio per layer over training, with the ~1e-3 rule of thumb marked.

    A step where a layer did not change at all (a ratio of exactly 0: its update was below float32's
    resolution of its weights) has no logarithm; it is drawn at a floor a decade below the smallest
    non-zero ratio, with a downward triangle, and counted in a note, so such a layer is never just
    missing. Layers are coloured from the input side (dark) to the output side (light); up to 12
    get a legend, more a colour bar.
    """
    names, steps, values = table.matrix("update_ratio")
    if not names or np.isnan(values).all():
        raise ValueError("the table holds no update ratios (give the monitor an optimizer, or step(lr=...))")
    positive = values[np.isfinite(values) & (values > 0)]
    floor = 10.0 ** (np.floor(np.log10(positive.min())) - 1) if positive.size else 1e-12
    fig = _new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    cmap = mpl.colormaps["viridis"]
    colors = cmap(np.linspace(0, 0.9, len(names)))
    zeros = 0
    for name, row, color in zip(names, values, colors, strict=True):
        zero = row == 0.0
        zeros += int(zero.sum())
        ax.plot(steps, np.where(zero, floor, row), color=color, linewidth=1, label=name)
        ax.plot(steps[zero], np.full(int(zero.sum()), floor), linestyle="none", marker="v", markersize=4,
                color=color)  # fmt: skip
    rule = ax.axhline(
        rule_of_thumb, color="#D55E00", linestyle="--", label=f"rule of thumb {rule_of_thumb:g}"
    )
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel="||ΔW|| / ||W||", title="update-to-weight ratio per layer")
    ax.grid(True, alpha=0.3)
    if zeros:
        ax.axhline(floor, color="0.5", linestyle=":", linewidth=1)
        ax.text(0.99, 0.02, f"▼ {zeros} ratio(s) exactly 0 (no change in float32), drawn at {floor:.0e}",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8)  # fmt: skip
    if len(names) <= 12:
        ax.legend(fontsize=7, framealpha=1.0, ncol=2)
    else:
        ax.legend(handles=[rule], fontsize=7, framealpha=1.0, loc="upper right")
        mappable = mpl.cm.ScalarMappable(cmap=mpl.colors.ListedColormap(colors))
        bar = fig.colorbar(mappable, ax=ax, ticks=[0.5 / len(names), 1 - 0.5 / len(names)], pad=0.02)
        bar.ax.set_yticklabels([names[0], names[-1]], fontsize=7)
        bar.set_label("layer", fontsize=8)
    return fig


def plot_histograms_over_training(
    steps: np.ndarray, edges: np.ndarray, counts: np.ndarray, *, title: str = ""
) -> Figure:
    """The "colourful dimension" view: one histogram per recorded step as a column of an image,
    ``log(1 + count)`` as colour, so that a distribution collapsing or saturating shows at a glance."""
    if counts.ndim != 2 or counts.shape[0] != len(steps) or counts.shape[1] != len(edges) - 1:
        raise ValueError("counts must have shape (len(steps), len(edges) - 1)")
    fig = _new_figure(6.4, 3.2)
    ax = fig.add_subplot()
    ax.imshow(np.log1p(counts.T), origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
              extent=(steps[0] - 0.5, steps[-1] + 0.5, edges[0], edges[-1]))  # fmt: skip
    ax.set(xlabel="training step", ylabel="value", title=title)
    return fig


def plot_harness_results(results: Sequence[HarnessResult] | Sequence[HarnessRuns]) -> Figure:
    """The harness's measurements side by side, one row per remedy (top row first): left, the
    first/last-layer gradient ratio at init on a log axis centred on 1 (bars grow left when
    gradients vanish, right when they explode); right, the final held-out loss with the threshold
    (a diverged run is marked at the right edge). For ``HarnessRuns`` a bar is the median over the
    seeds and a whisker the range; a bar is green when every run reached the threshold, pale
    green when only some did."""
    if not results:
        raise ValueError("plot_harness_results needs at least one HarnessResult or HarnessRuns")
    spreads = [
        (r.gradient_ratio, r.final_loss)
        if isinstance(r, HarnessRuns)
        else (SeedSpread((r.seed,), (r.gradient_ratio,)), SeedSpread((r.seed,), (r.final_loss,)))
        for r in results
    ]
    labels = [r.remedy.label for r in results]
    y = np.arange(len(results))[::-1]
    fig = _new_figure(7.6, 0.9 + 0.26 * len(results))
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=(1.3, 1.0))

    def log_ratio(values: list[float]) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            array = np.nan_to_num(np.array(values, dtype=np.float64), nan=1.0)
            return np.log10(np.clip(array, 1e-45, 1e39))

    logs = log_ratio([ratio.median for ratio, _ in spreads])
    colors = [OKABE_ITO[0] if value < 0 else OKABE_ITO[1] for value in logs]
    left.barh(y, logs, color=colors, height=0.7)
    seeded = any(len(ratio.values) > 1 for ratio, _ in spreads)
    if seeded:
        low, high = (
            log_ratio([ratio.low for ratio, _ in spreads]),
            log_ratio([ratio.high for ratio, _ in spreads]),
        )
        left.errorbar(logs, y, xerr=(logs - low, high - logs), fmt="none", ecolor="black", elinewidth=0.8)
    left.axvline(0.0, color="black", linewidth=0.8)
    for edge in (-3.0, 3.0):
        left.axvline(edge, color="grey", linewidth=0.8, linestyle=":")
    left.set_yticks(y, labels, fontsize=8)
    left.set(xlabel="log10 (first / last layer gradient) at init", title="gradient ratio at init")
    left.grid(True, axis="x", alpha=0.3)
    every = np.array([v for _, loss in spreads for v in loss.values], dtype=np.float64)
    finite = every[np.isfinite(every)]
    top = max(1.2, float(finite.max()) * 1.05) if len(finite) else 1.2

    def shown(values: list[float]) -> np.ndarray:
        array = np.array(values, dtype=np.float64)
        return np.where(np.isfinite(array), array, top)

    finals = np.array([loss.median for _, loss in spreads], dtype=np.float64)
    trained = [r.n_trained / len(r.runs) if isinstance(r, HarnessRuns) else float(r.trains) for r in results]
    bar_colors = [OKABE_ITO[2] if t == 1.0 else "#A8DCC9" if t > 0 else "#999999" for t in trained]
    right.barh(y, shown(list(finals)), color=bar_colors, height=0.7)
    if seeded:
        mid = shown(list(finals))
        low = shown([loss.low for _, loss in spreads])
        high = shown([loss.high for _, loss in spreads])
        right.errorbar(mid, y, xerr=(mid - low, high - mid), fmt="none", ecolor="black", elinewidth=0.8)
    for row, final in zip(y, finals, strict=True):
        if not np.isfinite(final):
            right.text(top, row, " diverged", va="center", ha="right", fontsize=7, color="white")
    threshold = results[0].threshold
    right.axvline(threshold, color=OKABE_ITO[1], linestyle="--", linewidth=1, label=f"loss {threshold:g}")
    right.set_xlim(0, top)
    title = "final loss (green: reached the threshold)"
    if seeded:
        title = "final loss (green: every run trains)"
    right.set(xlabel="held-out loss after the budget", title=title)
    right.legend(fontsize=7, loc="lower right", framealpha=1.0)
    right.grid(True, axis="x", alpha=0.3)
    return fig


def _metric_name(task: str) -> str:
    return "accuracy" if harness_task(task).metric == "accuracy" else "loss"


def plot_remedies(tables: Sequence[RemedyTable]) -> Figure:
    """Each ``RemedyTable`` as a panel, side by side (one per task), one row per remedy, top row
    first: the final test metric's median (dot) and range over the seeds (bar), a diverged run at
    the panel's worst edge, with the shallow twin and the linear model as vertical lines. Dots are
    green where every run reached the task's threshold, grey where none did."""
    if not tables:
        raise ValueError("plot_remedies needs at least one RemedyTable")
    labels = [r.remedy.label for r in tables[0].runs]
    if any([r.remedy.label for r in t.runs] != labels for t in tables):
        raise ValueError("the tables must list the same remedies in the same order")
    y = np.arange(len(labels))[::-1]
    fig = _new_figure(3.0 + 2.6 * len(tables), 1.0 + 0.22 * len(labels))
    axes = np.atleast_1d(fig.subplots(1, len(tables), sharey=True))
    for ax, table in zip(axes, tables, strict=True):
        accuracy = table.metric == "accuracy"
        worst = 0.0 if accuracy else 1.2
        finals = [r.final for r in table.runs]

        def shown(values: Sequence[float], worst: float = worst) -> np.ndarray:
            array = np.array(values, dtype=np.float64)
            return np.clip(np.where(np.isfinite(array), array, worst), 0.0, 1.2)

        mid = shown([f.median for f in finals])
        low, high = shown([f.low for f in finals]), shown([f.high for f in finals])
        if not accuracy:  # a diverged run is the worst: it is the high end of a loss's range
            high = shown([max((v if np.isfinite(v) else np.inf) for v in f.values) for f in finals])
        else:
            low = shown([min((v if np.isfinite(v) else -np.inf) for v in f.values) for f in finals])
        colours = [OKABE_ITO[2] if r.n_reached == len(r.cells) else "#999999" if r.n_reached == 0
                   else "#A8DCC9" for r in table.runs]  # fmt: skip
        ax.hlines(y, low, high, color="black", linewidth=1.0)
        ax.scatter(mid, y, c=colours, s=22, zorder=3, edgecolors="black", linewidths=0.5)
        task = harness_task(table.task)
        ax.axvline(
            task.linear_baseline(), color=OKABE_ITO[1], linestyle="--", linewidth=1, label="linear model"
        )
        if table.shallow is not None:
            ax.axvline(table.shallow.final.median, color=OKABE_ITO[0], linestyle=":", linewidth=1.2,
                       label="1 hidden layer, same size")  # fmt: skip
        ax.set_xlim(0.0, 1.0 if accuracy else 1.2)
        ax.set(xlabel=f"test {_metric_name(table.task)} ({table.task})", title=table.task)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left" if accuracy else "lower right", framealpha=1.0)
    axes[0].set_yticks(y, labels, fontsize=8)
    return fig


def plot_tuning(grid: Grid, labels: Sequence[str], tasks: Sequence[str] = ("teacher", "digits")) -> Figure:
    """Tuning curves from the committed grid: for each remedy, the final *validation* metric
    against the learning rate (median over the seeds, bars for the range), one panel per task; the
    learning rate the grid chose is the large marker. A diverged run leaves a gap."""
    if not labels:
        raise ValueError("plot_tuning needs at least one remedy label")
    fig = _new_figure(3.4 * len(tasks), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(tasks)))
    for ax, task in zip(axes, tasks, strict=True):
        for i, label in enumerate(labels):
            tuning = grid.tuning(label, task)
            lrs = np.array(sorted(tuning))
            mid = np.array([tuning[lr].median for lr in lrs])
            low = np.array([tuning[lr].low for lr in lrs])
            high = np.array([tuning[lr].high for lr in lrs])
            colour = OKABE_ITO[i % len(OKABE_ITO)]
            with np.errstate(invalid="ignore"):
                ax.errorbar(lrs, mid, yerr=(np.abs(mid - low), np.abs(high - mid)), color=colour, marker="o",
                            markersize=3, linewidth=1, capsize=2, label=label)  # fmt: skip
            chosen = grid.lr(label, task)
            ax.plot([chosen], [tuning[chosen].median], marker="o", markersize=8, color=colour,
                    markeredgecolor="black")  # fmt: skip
        linear = harness_task(task).linear_baseline("validation")
        ax.axhline(linear, color="grey", linestyle="--", linewidth=1, label="linear model")
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel=f"validation {_metric_name(task)} after the budget", title=task)
        if _metric_name(task) == "loss":
            ax.set_ylim(0.0, 1.2)
        else:
            ax.set_ylim(0.0, 1.0)
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7, framealpha=1.0, loc="lower right")
    return fig


def plot_phase_diagram(
    activation: str,
    sigma_w2s: Sequence[float],
    sigma_b2s: Sequence[float],
    marks: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """The order-to-chaos phase diagram (Poole et al. 2016; Schoenholz et al. 2017): ``chi_1`` over
    the ``(sigma_w^2, sigma_b^2)`` plane as a heat map (log scale, centred on 1), with the critical
    line ``chi_1 = 1`` drawn and optional labelled points ``marks[label] = (sigma_w2, sigma_b2)``."""
    from .theory import chi_1

    w = np.asarray(sigma_w2s, dtype=np.float64)
    b = np.asarray(sigma_b2s, dtype=np.float64)
    if w.ndim != 1 or b.ndim != 1 or len(w) < 2 or len(b) < 2 or (w <= 0).any() or (b < 0).any():
        raise ValueError("sigma_w2s (> 0) and sigma_b2s (>= 0) must each hold at least two values")
    chis = np.array([[chi_1(activation, float(sw), float(sb)) for sw in w] for sb in b])
    fig = _new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    extent = float(np.max(np.abs(np.log(chis))))
    mesh = ax.pcolormesh(w, b, np.log(chis), cmap="RdBu_r", vmin=-extent, vmax=extent, shading="gouraud")
    ax.contour(w, b, chis, levels=[1.0], colors="k", linewidths=1.5)
    marks = marks or {}
    for i, (label, (sw, sb)) in enumerate(marks.items()):
        ax.plot([sw], [sb], marker="os^D"[i % 4], color="k", markersize=6, linestyle="none", label=label)
    if marks:
        ax.legend(fontsize=8, framealpha=1.0, loc="upper left")
    fig.colorbar(mesh, ax=ax, label=r"$\ln \chi_1$  (< 0 ordered, > 0 chaotic)")
    ax.set(
        xlabel=r"$\sigma_w^2$", ylabel=r"$\sigma_b^2$", title=f"{activation}: order (blue) and chaos (red)"
    )
    return fig


def plot_trainable_depth(
    sigma_w2s: np.ndarray,
    depths: np.ndarray,
    fraction: np.ndarray,
    theory: Mapping[str, tuple[np.ndarray, np.ndarray]],
    boundaries: Mapping[float, float] | None = None,
) -> Figure:
    """The share of seeds trained over ``(sigma_w^2, depth)`` as a heat map (depth on a log axis),
    with theory curves ``theory[label] = (sigma_w2 grid, depth)`` over it (e.g. ``6 xi_c``) and the
    fitted boundary depth per ``sigma_w^2`` as points where ``boundaries`` gives it (Schoenholz et al.
    2017, Fig. 6, in miniature)."""
    sigma_w2s, depths, fraction = (np.asarray(a, dtype=np.float64) for a in (sigma_w2s, depths, fraction))
    if fraction.shape != (len(sigma_w2s), len(depths)):
        raise ValueError(f"fraction must have shape (len(sigma_w2s), len(depths)), got {fraction.shape}")

    def edges(v: np.ndarray, log: bool) -> np.ndarray:
        v = np.log(v) if log else v
        mid = (v[1:] + v[:-1]) / 2
        out = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
        return np.exp(out) if log else out

    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(
        edges(sigma_w2s, False), edges(depths, True), fraction.T, cmap="Greens", vmin=0, vmax=1
    )
    fig.colorbar(mesh, ax=ax, label="share of seeds trained")
    for i, (label, (x, y)) in enumerate(theory.items()):
        ax.plot(
            x, y, color=OKABE_ITO[(i + 1) % 7], linestyle=("-", "--", ":")[i % 3], linewidth=1.8, label=label
        )
    if boundaries:
        finite = {w: d for w, d in boundaries.items() if np.isfinite(d)}
        ax.plot(list(finite), list(finite.values()), "ko", markersize=5, label="fitted boundary $L_{max}$")
    ax.set_yscale("log")
    ax.set_ylim(edges(depths, True)[0], edges(depths, True)[-1])
    ax.set_xlim(edges(sigma_w2s, False)[0], edges(sigma_w2s, False)[-1])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_yticks(depths)
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set(xlabel=r"$\sigma_w^2$", ylabel="depth (hidden layers)", title="trainable depth: tanh, digits")
    ax.legend(fontsize=8, framealpha=1.0, loc="upper right")
    return fig


def plot_norm_placement(
    mean_squares: Mapping[str, np.ndarray],
    band: tuple[np.ndarray, np.ndarray],
    depths: Sequence[int],
    last_grads: Mapping[str, np.ndarray],
) -> Figure:
    """Xiong et al. 2020's Lemma 2 and Theorem 1 in miniature, side by side.

    Left: ``mean_squares[label]`` (the stream's mean per-token squared norm ``E||x_{l,i}||^2 / d``
    at stream points ``0 .. L``)
    against ``l``, with the band ``(low, high)`` shaded (arrays over the same points). Right: for
    each label an array ``(seeds, len(depths))`` of the last block's gradient norm, drawn as the
    median over seeds with the range as error bars, on log-log axes, against ``depths``.
    """
    low, high = (np.asarray(b, dtype=np.float64) for b in band)
    fig, (left, right) = panels(2, width=8.6, height=3.4)
    for i, (label, values) in enumerate(mean_squares.items()):
        values = np.asarray(values, dtype=np.float64)
        left.plot(
            np.arange(len(values)), values, color=OKABE_ITO[i % 7], marker="o", markersize=2.5, label=label
        )
    left.fill_between(np.arange(len(low)), low, high, color="0.85", label="Lemma 2's band (pre-LN)")
    left.set(
        xlabel="stream point l (0 = embedding)",
        ylabel="mean per-token ‖x_l,i‖² / d",
        title="the stream's size (Lemma 2)",
    )
    left.legend(fontsize=8, framealpha=1.0)
    x = np.asarray(depths, dtype=np.float64)
    for i, (label, runs) in enumerate(last_grads.items()):
        runs = np.asarray(runs, dtype=np.float64)
        median = np.median(runs, axis=0)
        spread = np.stack([median - runs.min(axis=0), runs.max(axis=0) - median])
        right.errorbar(
            x, median, yerr=spread, color=OKABE_ITO[i % 7], marker="o", markersize=3, capsize=3, label=label
        )
    right.set(xscale="log", yscale="log", xlabel="depth L (blocks)", ylabel="‖∂L/∂W²‖ of the last block")
    right.set_title("the last FFN weight's gradient (Theorem 1)")
    right.set_xticks(x, [str(int(d)) for d in x])
    right.set_xticks([], minor=True)  # a log axis labels its minor ticks too, over the depths' labels
    right.legend(fontsize=8, framealpha=1.0)
    return fig


def plot_accuracy_by_lr(
    spreads: Mapping[str, Mapping[float, SeedSpread]],
    references: Mapping[str, float] | None = None,
    *,
    title: str = "",
    ylabel: str = "final test accuracy",
) -> Figure:
    """Final accuracy against the learning rate, one line per label: the median over the seeds with
    the range as error bars (``spreads[label][lr]``, e.g. from
    :func:`~vglib.transformer_training.spread_by_lr`). A rate at which a seed diverged (a NaN value)
    is marked with an x on the axis and left out of the line; ``references`` draws horizontal
    lines (e.g. the bag bound, the MLP baseline, the threshold)."""
    if not spreads:
        raise ValueError("plot_accuracy_by_lr needs at least one labelled set of spreads")
    fig = _new_figure(8.0, 3.6)
    ax = fig.subplots()
    styles = ("-", "--", "-.", ":")
    for i, (label, by_lr) in enumerate(spreads.items()):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        lrs = np.array(sorted(by_lr), dtype=np.float64)
        values = [np.asarray(by_lr[lr].values, dtype=np.float64) for lr in sorted(by_lr)]
        clean = np.array([bool(np.isfinite(v).all()) for v in values])
        mid = np.array([float(np.median(v)) if ok else np.nan for v, ok in zip(values, clean, strict=True)])
        low = np.array([float(v.min()) if ok else np.nan for v, ok in zip(values, clean, strict=True)])
        high = np.array([float(v.max()) if ok else np.nan for v, ok in zip(values, clean, strict=True)])
        shift = 1.0 + 0.06 * (i - (len(spreads) - 1) / 2)  # side by side, so the bars do not hide each other
        with np.errstate(invalid="ignore"):
            ax.errorbar(lrs * shift, mid, yerr=(mid - low, high - mid), color=colour, marker="o",
                        markersize=3.5, linewidth=1.2, linestyle=styles[i % len(styles)], capsize=2,
                        label=label)  # fmt: skip
        if (~clean).any():
            ax.plot(lrs[~clean] * shift, np.zeros(int((~clean).sum())), linestyle="none", marker="x",
                    markersize=6, color=colour)  # fmt: skip
    for k, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.45", linestyle=(":", "--", "-.")[k % 3], linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set(xlabel="learning rate (Adam)", ylabel=ylabel, title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, framealpha=1.0, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the data
    return fig


def plot_early_gradients(runs: Mapping[str, EarlyGradients], chance_loss: float | None = None) -> Figure:
    """The first updates of labelled runs (:func:`~vglib.transformer_training.early_gradients`), two
    panels over the update: left, block 1's gradient norm over the last block's (log scale; 1 is a
    level gradient); right, the validation loss, with ``chance_loss`` (e.g. ``ln 8``, a uniform
    guess) as a dotted line."""
    if not runs:
        raise ValueError("plot_early_gradients needs at least one run")
    fig, (left, right) = panels(2, width=8.6, height=3.4)
    for i, (label, run) in enumerate(runs.items()):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        left.plot(run.steps, run.first_to_last(), color=colour, label=label)
        right.plot(run.steps, run.validation_loss, color=colour, label=label)
    left.axhline(1.0, color="0.45", linestyle=":", linewidth=1)
    left.set(yscale="log", xlabel="update", ylabel="‖∂L/∂θ‖ of block 1 / of the last block",
             title="how level the gradient is")  # fmt: skip
    if chance_loss is not None:
        right.axhline(chance_loss, color="0.45", linestyle=":", linewidth=1, label="a uniform guess")
    right.set(xlabel="update", ylabel="validation loss (cross-entropy)", title="the loss")
    for ax in (left, right):
        ax.legend(fontsize=8, framealpha=1.0)
    return fig
