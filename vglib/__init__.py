"""vglib: measure, explain and explore vanishing gradients in PyTorch models.

Layers, each importing only from those above it: activations and initialisations -> models ->
probes -> plots -> widgets.
"""

from ._seed import seed_everything, torch_seed
from .activations import ACTIVATIONS, Activation, activation_derivative, get_activation
from .data import probe_batch
from .initialization import INITS, init_layer, init_variance, init_weights, weight_layers
from .models import build_mlp
from .plots import (
    UNDERFLOW_FLOOR,
    ProfileFigure,
    plot_activation_derivatives,
    plot_gradient_profile,
)
from .probes import GradientProfile, gradient_profile

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "UNDERFLOW_FLOOR",
    "Activation",
    "GradientProfile",
    "ProfileFigure",
    "activation_derivative",
    "build_mlp",
    "get_activation",
    "gradient_explorer",
    "gradient_profile",
    "init_layer",
    "init_variance",
    "init_weights",
    "plot_activation_derivatives",
    "plot_gradient_profile",
    "probe_batch",
    "seed_everything",
    "torch_seed",
    "weight_layers",
]


def __getattr__(name: str) -> object:
    # The widgets module imports ipywidgets only when a widget is built; expose it lazily too.
    if name in ("gradient_explorer", "GradientExplorer", "widgets"):
        from . import widgets

        return widgets if name == "widgets" else getattr(widgets, name)
    raise AttributeError(f"module 'vglib' has no attribute {name!r}")
