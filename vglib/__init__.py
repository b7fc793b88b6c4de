"""vglib: measure, explain and explore vanishing gradients in PyTorch models.

Layers, each importing only from those above it: activations and initialisations -> models ->
probes -> theory -> plots -> widgets.
"""

from . import widgets
from ._seed import seed_everything, torch_seed
from .activations import ACTIVATIONS, Activation, activation_derivative, get_activation
from .data import ADDING_BASELINE_MSE, adding_problem, probe_batch, teacher_student
from .initialization import INITS, init_layer, init_variance, init_weights, weight_layers
from .models import ElmanRNN, build_gaussian_mlp, build_mlp, build_rnn
from .monitor import Diagnosis, GradientMonitor, MonitorTable, diagnose, loss_stalled
from .plots import (
    UNDERFLOW_FLOOR,
    CurveFigure,
    ProfileFigure,
    Series,
    plot_activation_derivatives,
    plot_curves,
    plot_gradient_heatmap,
    plot_gradient_profile,
    plot_histograms_over_training,
    plot_order_to_chaos,
    plot_training_curves,
    plot_update_ratios,
)
from .probes import (
    ForwardStatistics,
    GradientProfile,
    bptt_gradient_norms,
    forward_statistics,
    gradient_profile,
    jacobian_singular_values,
)
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
    rnn_vanishing_radius,
    saturated_fraction,
    saturation_threshold,
    variance_propagation,
)
from .train import TrainingHistory, train
from .widgets import GradientExplorer, curve_explorer, gradient_explorer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "ADDING_BASELINE_MSE",
    "INITS",
    "UNDERFLOW_FLOOR",
    "Activation",
    "Control",
    "CurveFigure",
    "Diagnosis",
    "ElmanRNN",
    "ForwardStatistics",
    "GradientExplorer",
    "GradientMonitor",
    "GradientProfile",
    "MonitorTable",
    "ProfileFigure",
    "Series",
    "TrainingHistory",
    "activation_derivative",
    "adding_problem",
    "bptt_gradient_norms",
    "build_gaussian_mlp",
    "build_mlp",
    "build_rnn",
    "chain_rule_bound",
    "chi",
    "chi_1",
    "curve_explorer",
    "diagnose",
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
    "jacobian_singular_values",
    "loss_stalled",
    "plot_activation_derivatives",
    "plot_curves",
    "plot_gradient_heatmap",
    "plot_gradient_profile",
    "plot_histograms_over_training",
    "plot_order_to_chaos",
    "plot_training_curves",
    "plot_update_ratios",
    "predicted_gradient_norms",
    "probe_batch",
    "relu_gradient_factor",
    "rnn_vanishing_radius",
    "saturated_fraction",
    "saturation_threshold",
    "seed_everything",
    "teacher_student",
    "torch_seed",
    "train",
    "variance_propagation",
    "weight_layers",
    "widgets",
]
