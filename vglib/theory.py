"""Analytic predictions to set beside measurements."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._validation import check_choice, check_positive_int
from .activations import get_activation
from .initialization import INITS, init_variance

__all__ = ["chain_rule_bound", "relu_gradient_factor"]


def _hidden_linears(model: nn.Sequential) -> list[nn.Linear]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"chain_rule_bound takes a build_mlp model (nn.Sequential), got {type(model).__name__}"
        )
    linears = [m for name, m in model.named_children() if name.startswith("linear")]
    if not linears:
        raise ValueError("the model has no blocks named linear1, linear2, ...: build it with vglib.build_mlp")
    return linears


@torch.no_grad()
def chain_rule_bound(model: nn.Sequential, activation: str) -> np.ndarray:
    """Upper bounds on ``||dL/dh_l|| / ||dL/dh_L||`` for each hidden block ``l`` of a ``build_mlp`` model.

    Backpropagation multiplies the gradient by ``J_k^T = W_k^T diag(phi'(z_k))`` once per layer,
    so ``||dL/dh_l|| <= prod_{k=l+1..L} (sup|phi'| * ||W_k||_2) * ||dL/dh_L||``. The last entry
    is 1. The bound holds for every input and every batch; measured ratios lie below it.
    """
    bound = get_activation(activation).derivative_bound
    linears = _hidden_linears(model)
    factors = [bound * float(torch.linalg.matrix_norm(m.weight.double(), ord=2)) for m in linears[1:]]
    # entry l: product of the factors of the layers after l
    tail_products = np.cumprod(np.array(factors[::-1] or [1.0]))[::-1]
    return np.append(tail_products[: len(factors)], 1.0)


def relu_gradient_factor(init: str, fan_in: int, fan_out: int | None = None) -> float:
    """Expected shrink (or growth) per layer of a backpropagated gradient's norm through ReLU layers.

    Each layer multiplies ``E||dL/dh||^2`` by ``n Var(W) / 2`` (He et al. 2015, eq. 14, with the
    layer's fan_out ``n``): the factor on the norm is its square root, ``1`` for He init,
    ``2^(-1/2)`` for variance ``1/n`` and ``6^(-1/2)`` for PyTorch's default.
    """
    check_choice("init", init, INITS)
    check_positive_int("fan_in", fan_in)
    fan_out = fan_in if fan_out is None else check_positive_int("fan_out", fan_out)
    return math.sqrt(fan_out * init_variance(init, fan_in, fan_out) / 2.0)
