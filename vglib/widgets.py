"""Interactive explorers. Each is a pure redraw function plus a thin ipywidgets shell around it.

Tests call the redraw functions directly; the widget only forwards control values to them.
"""

from __future__ import annotations

import io
from collections import OrderedDict
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
from .plots import ProfileFigure
from .probes import GradientProfile, gradient_profile

__all__ = ["MAX_DEPTH", "GradientExplorer", "gradient_explorer"]

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

    def redraw(self, depth: int, activation: str, init: str) -> Figure:
        """Measure and re-plot; returns the (reused) figure, rendered."""
        prof = self.profile(depth, activation, init)
        ratio = prof.first_to_last_ratio()
        title = (
            f"depth {depth}, {activation}, {init} init, width {self.width}:  "
            f"‖∂L/∂W₁‖ / ‖∂L/∂W_last‖ = {ratio:.2g}"
        )
        fig = self.plot.update(prof, title)
        self.plot.render()
        return fig

    def png(self, depth: int, activation: str, init: str) -> bytes:
        """The redrawn figure as PNG bytes, as the widget shows it."""
        fig = self.redraw(depth, activation, init)
        # Encode the pixels already drawn rather than savefig, which would draw them again.
        pixels = PIL.Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        buffer = io.BytesIO()
        pixels.save(buffer, format="png", compress_level=1)
        return buffer.getvalue()

    def widget(self, depth: int = 30, activation: str = "sigmoid", init: str = "xavier") -> Any:
        """An ipywidgets UI: sliders and menus that redraw the figure on every change."""
        import ipywidgets as w

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
) -> Any:
    """The gradient explorer widget: depth, activation and init controls over a per-layer plot."""
    with torch.random.fork_rng(devices=[]):
        return _explorer(width, max_depth, seed).widget(depth, activation, init)
