"""Interactive explorers. Each is a pure redraw function plus a thin ipywidgets shell around it.

Tests call the redraw functions directly; the widget only forwards control values to them.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import PIL.Image
import torch
from matplotlib.figure import Figure
from torch import nn

from ._validation import check_choice, check_positive_int
from .activations import ACTIVATIONS, get_activation
from .data import probe_batch
from .initialization import INITS
from .models import build_mlp
from .plots import GRADIENT_SERIES, CurveFigure, ProfileFigure, Series
from .probes import GradientProfile, gradient_profile
from .static import Control, curve_explorer_html

__all__ = [
    "MAX_DEPTH",
    "STATIC_DEPTHS",
    "GradientExplorer",
    "LiveExplorer",
    "curve_explorer",
    "gradient_explorer",
]

MAX_DEPTH = 100
"""The deepest network the gradient explorer offers by default."""


class GradientExplorer:
    """Per-layer gradient norms of ``build_mlp(depth, width, activation, init, seed)`` at init.

    For speed, one ``max_depth`` network per init scheme is built once and a model of depth
    ``d`` is its first ``d`` blocks and its head with the chosen activation, which is exactly
    ``build_mlp(d, ...)`` (each layer has its own seed). A redraw is then one forward and backward
    pass plus re-plotting the same figure: no model is rebuilt, no figure created.
    """

    def __init__(self, width: int = 64, max_depth: int = MAX_DEPTH, seed: int = 0, batch_size: int = 64):
        self.width = check_positive_int("width", width)
        self.max_depth = check_positive_int("max_depth", max_depth)
        self.seed = seed
        self.x, self.y = probe_batch(width, 1, batch_size, seed=seed)
        self.plot = ProfileFigure()
        self._full: dict[str, nn.Sequential] = {}

    def model(self, depth: int, activation: str, init: str) -> nn.Sequential:
        """The network for these settings (shares its layers with the explorer's cache)."""
        check_positive_int("depth", depth)
        if depth > self.max_depth:
            raise ValueError(f"depth must be between 1 and {self.max_depth}, got {depth}")
        act = get_activation(activation)
        check_choice("init", init, INITS)
        if init not in self._full:
            self._full[init] = build_mlp(self.max_depth, self.width, "relu", init, self.seed)
        full = self._full[init]
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, depth + 1):
            modules[f"linear{i}"] = full.get_submodule(f"linear{i}")
            modules[f"act{i}"] = act.make_module()
        modules["head"] = full.get_submodule("head")
        return nn.Sequential(modules)

    def profile(self, depth: int, activation: str, init: str) -> GradientProfile:
        """The gradient profile for these settings on the explorer's fixed probe batch."""
        return gradient_profile(self.model(depth, activation, init), self.x, self.y)

    def title(self, depth: int, activation: str, init: str, prof: GradientProfile) -> str:
        """The figure's title: the settings and the first-to-last weight-gradient ratio."""
        return (
            f"depth {depth}, {activation}, {init} init: first/last ‖∂L/∂W‖ = {prof.first_to_last_ratio():.2g}"
        )

    def redraw(self, depth: int, activation: str, init: str) -> Figure:
        """Measure and re-plot; returns the (reused) figure, rendered."""
        prof = self.profile(depth, activation, init)
        fig = self.plot.update(prof, self.title(depth, activation, init, prof))
        self.plot.render()
        return fig

    def png(self, depth: int, activation: str, init: str) -> bytes:
        """The redrawn figure as PNG bytes, as the widget shows it."""
        fig = self.redraw(depth, activation, init)
        # Encode the pixels already drawn rather than savefig, which would draw them again.
        return _png(np.asarray(fig.canvas.buffer_rgba()))

    def widget(self, depth: int = 30, activation: str = "sigmoid", init: str = "xavier") -> Any:
        """An ipywidgets UI: sliders and menus that redraw the figure on every change."""
        w = _ipywidgets("GradientExplorer.widget")

        controls = {
            "depth": w.IntSlider(
                value=depth, min=1, max=self.max_depth, description="depth",
                continuous_update=False,
            ),
            "activation": w.Dropdown(options=ACTIVATIONS, value=activation, description="activation"),
            "init": w.Dropdown(options=INITS, value=init, description="init"),
        }  # fmt: skip
        image = w.Image(value=self.png(depth, activation, init), format="png")
        image.layout.max_width = "100%"

        def on_change(_: object) -> None:
            image.value = self.png(**{k: c.value for k, c in controls.items()})

        for control in controls.values():
            control.observe(on_change, names="value")
        return w.VBox([w.HBox(list(controls.values())), image])

    def static_html(
        self,
        depth: int = 30,
        activation: str = "sigmoid",
        init: str = "xavier",
        depths: Sequence[int] | None = None,
    ) -> str:
        """The explorer for a page with no kernel: every setting precomputed, drawn by a small script.

        Depths run over ``depths`` (default ``STATIC_DEPTHS`` up to ``max_depth``): every depth
        up to 10, then steps of 10, which keeps the page small (each frame costs 2 bytes a layer).
        """
        grid = tuple(d for d in (depths or STATIC_DEPTHS) if 1 <= d <= self.max_depth)
        if depth not in grid:
            raise ValueError(f"depth {depth} is not on the static grid {grid}")

        def frame(depth: int, activation: str, init: str) -> tuple[str, list[np.ndarray]]:
            prof = self.profile(depth, activation, init)
            curves = [prof.weight_grad_norms, prof.activation_grad_norms]
            return self.title(depth, activation, init, prof), curves

        controls = [
            Control("depth", grid, depth, kind="range"),
            Control("activation", ACTIVATIONS, activation),
            Control("init", INITS, init),
        ]
        return curve_explorer_html(
            controls,
            frame,
            GRADIENT_SERIES,
            xlabel="hidden layer l (1 = input side)",
            ylabel="gradient norm (log scale)",
        )


STATIC_DEPTHS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 50, 60, 80, 100)
"""Depths the kernel-free explorer offers: every depth to 6, then coarser steps (16 depths, so that
the page's precomputed frames for every activation and init stay within its size budget)."""


class LiveExplorer:
    """What ``gradient_explorer`` returns: the ipywidgets UI and its kernel-free twin in one output.

    Jupyter shows the live widget; the built HTML page, which has no kernel, shows the static
    explorer (the book's config prefers ``text/html`` for HTML output).
    """

    def __init__(self, widget: Any, static_html: str):
        self.widget = widget
        self.static_html = static_html

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        represent = getattr(self.widget, "_repr_mimebundle_", None)
        if represent is not None:
            bundle = dict(represent(include=include, exclude=exclude) or {})
        else:
            # ipywidgets 7 (Colab's for years) displays a widget through _ipython_display_ and has no
            # _repr_mimebundle_: the same view bundle, built from its model id
            bundle = {
                "text/plain": repr(self.widget),
                "application/vnd.jupyter.widget-view+json": {
                    "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id,
                },
            }  # fmt: skip
        bundle["text/html"] = self.static_html
        return bundle


@lru_cache(maxsize=4)
def _explorer(width: int, max_depth: int, seed: int) -> GradientExplorer:
    return GradientExplorer(width=width, max_depth=max_depth, seed=seed)


def gradient_explorer(
    depth: int = 30,
    activation: str = "sigmoid",
    init: str = "xavier",
    *,
    width: int = 64,
    max_depth: int = MAX_DEPTH,
    seed: int = 0,
    static: bool = True,
) -> LiveExplorer:
    """The gradient explorer: depth, activation and init controls over a per-layer plot.

    Live (ipywidgets) in Jupyter; with ``static=True`` it also carries the kernel-free version that
    the built HTML page shows (precomputing it takes a few seconds).
    """
    _ipywidgets("gradient_explorer")  # before the explorer's precomputation
    explorer = _explorer(width, max_depth, seed)
    with torch.random.fork_rng(devices=[]):
        widget = explorer.widget(depth, activation, init)
        html = explorer.static_html(depth, activation, init) if static else ""
    return LiveExplorer(widget, html)


def curve_explorer(
    controls: Sequence[Control],
    frame: Callable[..., tuple[str, Sequence[np.ndarray]]],
    series: Sequence[Series],
    *,
    xlabel: str,
    ylabel: str,
    static: bool = True,
) -> LiveExplorer:
    """An explorer of per-layer curves for any chapter: ``frame(**settings) -> (title, curves)``.

    Live in Jupyter (ipywidgets controls redraw a ``CurveFigure``); on the built page the
    kernel-free twin, with ``frame`` evaluated for every combination of control values.
    """
    w = _ipywidgets("curve_explorer")

    figure = CurveFigure(series, xlabel=xlabel, ylabel=ylabel)

    def png(**settings: Any) -> bytes:
        title, curves = frame(**settings)
        figure.update(curves, title)
        return _png(figure.render())

    widgets = {}
    for control in controls:
        if control.kind == "range":
            widgets[control.name] = w.SelectionSlider(
                options=list(control.values), value=control.value, description=control.name,
                continuous_update=False,
            )  # fmt: skip
        else:
            widgets[control.name] = w.Dropdown(
                options=list(control.values), value=control.value, description=control.name
            )
    image = w.Image(value=png(**{c.name: c.value for c in controls}), format="png")
    image.layout.max_width = "100%"

    def on_change(_: object) -> None:
        image.value = png(**{name: widget.value for name, widget in widgets.items()})

    for widget in widgets.values():
        widget.observe(on_change, names="value")
    box = w.VBox([w.HBox(list(widgets.values())), image])
    html = curve_explorer_html(controls, frame, series, xlabel=xlabel, ylabel=ylabel) if static else ""
    return LiveExplorer(box, html)


def _png(pixels: np.ndarray) -> bytes:
    """RGBA pixels as PNG bytes (fast settings: the image is redrawn on every change)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels[..., :3]).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def _ipywidgets(what: str) -> Any:
    """The ``ipywidgets`` module, or an ``ImportError`` saying how to install it (an optional
    dependency of vglib: the ``widgets`` extra)."""
    try:
        import ipywidgets
    except ImportError as error:
        raise ImportError(
            f'{what} needs ipywidgets, an optional dependency of vglib: pip install "vglib[widgets]"'
        ) from error
    return ipywidgets
