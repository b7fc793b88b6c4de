"""vglib: measure, explain and explore vanishing gradients in PyTorch models.

Layers, each importing only from those above it: activations and initialisations -> models ->
probes -> theory -> plots -> widgets.
"""

from . import widgets
from ._seed import seed_everything, torch_seed
from .activations import ACTIVATIONS, Activation, activation_derivative, get_activation
from .data import probe_batch
from .initialization import INITS, init_layer, init_variance, init_weights, weight_layers
from .models import build_gaussian_mlp, build_mlp
from .plots import (
    UNDERFLOW_FLOOR,
    CurveFigure,
    ProfileFigure,
    Series,
    plot_activation_derivatives,
    plot_gradient_profile,
    plot_order_to_chaos,
)
from .probes import ForwardStatistics, GradientProfile, forward_statistics, gradient_profile
from .static import Control
from .theory import (
    chain_rule_bound,
    chi,
    chi_1,
    fixed_point,
    gaussian_expectation,
    gradient_depth_scale,
    predicted_gradient_norms,
    relu_gradient_factor,
    variance_propagation,
)
from .widgets import GradientExplorer, curve_explorer, gradient_explorer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "UNDERFLOW_FLOOR",
    "Activation",
    "Control",
    "CurveFigure",
    "ForwardStatistics",
    "GradientExplorer",
    "GradientProfile",
    "ProfileFigure",
    "Series",
    "activation_derivative",
    "build_gaussian_mlp",
    "build_mlp",
    "chain_rule_bound",
    "chi",
    "chi_1",
    "curve_explorer",
    "fixed_point",
    "forward_statistics",
    "gaussian_expectation",
    "get_activation",
    "gradient_depth_scale",
    "gradient_explorer",
    "gradient_profile",
    "init_layer",
    "init_variance",
    "init_weights",
    "plot_activation_derivatives",
    "plot_gradient_profile",
    "plot_order_to_chaos",
    "predicted_gradient_norms",
    "probe_batch",
    "relu_gradient_factor",
    "seed_everything",
    "torch_seed",
    "variance_propagation",
    "weight_layers",
    "widgets",
]
