"""vglib: measure, explain and explore vanishing gradients in PyTorch models.

Layers, each importing only from those above it: activations and initialisations -> models ->
probes -> theory -> plots -> widgets.
"""

from . import widgets
from ._seed import seed_everything, torch_seed
from .activations import ACTIVATIONS, Activation, activation_derivative, get_activation
from .data import probe_batch
from .initialization import INITS, init_layer, init_variance, init_weights, weight_layers
from .models import build_mlp
from .plots import (
    UNDERFLOW_FLOOR,
    CurveFigure,
    ProfileFigure,
    Series,
    plot_activation_derivatives,
    plot_gradient_profile,
)
from .probes import GradientProfile, gradient_profile
from .static import Control
from .theory import chain_rule_bound, relu_gradient_factor
from .widgets import GradientExplorer, curve_explorer, gradient_explorer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "UNDERFLOW_FLOOR",
    "Activation",
    "Control",
    "CurveFigure",
    "GradientExplorer",
    "GradientProfile",
    "ProfileFigure",
    "Series",
    "activation_derivative",
    "build_mlp",
    "chain_rule_bound",
    "curve_explorer",
    "get_activation",
    "gradient_explorer",
    "gradient_profile",
    "init_layer",
    "init_variance",
    "init_weights",
    "plot_activation_derivatives",
    "plot_gradient_profile",
    "probe_batch",
    "relu_gradient_factor",
    "seed_everything",
    "torch_seed",
    "weight_layers",
    "widgets",
]
