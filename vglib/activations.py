"""The activation registry: each activation's module, its derivative and the bound on it.

The bound ``derivative_bound`` is ``sup_x |phi'(x)|``. It is what makes a chain of saturating
layers shrink a gradient: through ``L`` sigmoid layers the activation factors alone contribute
at most ``0.25**L``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._validation import check_choice

__all__ = ["ACTIVATIONS", "Activation", "activation_derivative", "get_activation"]

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def _gelu_derivative_max() -> float:
    """The maximum of GELU'(x) = Phi(x) + x phi(x), found where its derivative 2 phi - x^2 phi = 0."""
    x = math.sqrt(2.0)  # GELU''(x) = phi(x) (2 - x^2): zero at x = sqrt(2)
    cdf = 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def _silu_derivative_max() -> float:
    """The maximum of SiLU'(x) = s(x) (1 + x (1 - s(x))), s the sigmoid: where SiLU''(x) =
    s(x)(1-s(x)) (2 + x (1 - 2 s(x))) is zero, i.e. 2 + x (1 - 2 s(x)) = 0, by bisection on
    [2, 3]."""

    def s(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    lo, hi = 2.0, 3.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 2.0 + mid * (1.0 - 2.0 * s(mid)) > 0 else (lo, mid)
    x = 0.5 * (lo + hi)
    return s(x) * (1.0 + x * (1.0 - s(x)))


@dataclass(frozen=True)
class Activation:
    """A named elementwise activation.

    ``saturating`` is true when the derivative tends to 0 on both sides (sigmoid, tanh): large
    pre-activations of either sign then stop gradients.
    """

    name: str
    make_module: Callable[[], nn.Module]
    derivative_bound: float
    saturating: bool
    description: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation to a tensor."""
        return self.make_module().to(x.dtype)(x)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """``phi'(x)`` elementwise, by autograd through the module (so it matches training)."""
        return activation_derivative(self.name, x)


_REGISTRY: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", nn.Sigmoid, 0.25, True, "logistic 1/(1+e^-x); phi' = phi(1-phi)"),
        Activation("tanh", nn.Tanh, 1.0, True, "hyperbolic tangent; phi' = 1 - phi^2"),
        Activation("relu", nn.ReLU, 1.0, False, "max(0, x); phi' is 0 or 1"),
        Activation("leaky_relu", nn.LeakyReLU, 1.0, False, "max(0.01x, x); phi' is 0.01 or 1"),
        Activation(
            "prelu",
            nn.PReLU,
            1.0,
            False,
            "max(0, x) + a min(0, x), a learned slope (one per layer) starting at 0.25 (He et al. 2015)",
        ),
        Activation("elu", nn.ELU, 1.0, False, "x for x>0, e^x - 1 otherwise (alpha = 1)"),
        Activation(
            "selu",
            nn.SELU,
            _SELU_SCALE * _SELU_ALPHA,
            False,
            "scaled ELU of Klambauer et al. (2017); phi' reaches lambda*alpha ~ 1.758 at 0-",
        ),
        Activation(
            "gelu",
            nn.GELU,
            _gelu_derivative_max(),
            False,
            "x * Phi(x); phi' peaks at ~1.129 at x = sqrt(2)",
        ),
        Activation(
            "silu",
            nn.SiLU,
            _silu_derivative_max(),
            False,
            "x * sigmoid(x) (SiLU, or swish; Elfwing et al. 2018, Ramachandran et al. 2017); "
            "phi' peaks at ~1.100 at x ~ 2.40",
        ),
        Activation(
            "linear", nn.Identity, 1.0, False, "the identity: a deep linear network (Saxe et al. 2013)"
        ),
    )
}

ACTIVATIONS: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted wherever an ``activation`` argument is taken."""


def get_activation(name: str) -> Activation:
    """Look up an activation by name; unknown names raise ``ValueError`` listing the valid ones."""
    return _REGISTRY[check_choice("activation", name, ACTIVATIONS)]


def activation_derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    """``phi'(x)`` for the named activation, computed by autograd, detached, same shape as ``x``."""
    activation = get_activation(name)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(activation.make_module().to(x.dtype)(leaf).sum(), leaf)
    return grad.detach()
