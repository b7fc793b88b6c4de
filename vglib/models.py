"""Model builders. Every builder takes ``depth``, ``width``, ``activation``, ``init`` and ``seed``."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils import skip_init

from ._validation import check_choice, check_positive_int
from .activations import get_activation
from .initialization import INITS, init_layer, layer_seed

__all__ = ["HEAD_SEED_INDEX", "build_gaussian_mlp", "build_mlp"]

HEAD_SEED_INDEX = 2**32 - 1
"""The seed index of an MLP's head, apart from the hidden layers' 0, 1, 2, ... so that it is the
same whatever the depth."""


def build_mlp(
    depth: int,
    width: int,
    activation: str = "relu",
    init: str = "default",
    seed: int = 0,
    *,
    in_features: int | None = None,
    out_features: int = 1,
) -> nn.Sequential:
    """A plain MLP: ``depth`` blocks of Linear + activation, then a Linear head.

    The first block maps ``in_features`` (default: ``width``) to ``width``; the others map
    ``width`` to ``width``; the head, named ``head``, maps ``width`` to ``out_features``. Blocks
    are named ``linear1``, ``act1``, ..., ``linear{depth}``, ``act{depth}``.

    Each layer draws its weights from its own seed, so the same ``seed`` gives the same weights,
    and a deeper model with the same seed starts with exactly the layers of a shallower one.
    Building a model leaves the global RNG state as it was.
    """
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    check_positive_int("out_features", out_features)
    in_features = width if in_features is None else check_positive_int("in_features", in_features)
    act = get_activation(activation)
    check_choice("init", init, INITS)

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    fan_in = in_features
    for index in range(depth):
        linear = skip_init(nn.Linear, fan_in, width)
        init_layer(linear, init, seed=layer_seed(seed, index))
        modules[f"linear{index + 1}"] = linear
        modules[f"act{index + 1}"] = act.make_module()
        fan_in = width
    head = skip_init(nn.Linear, width, out_features)
    init_layer(head, init, seed=layer_seed(seed, HEAD_SEED_INDEX))
    modules["head"] = head
    return nn.Sequential(modules)


@torch.no_grad()
def build_gaussian_mlp(
    depth: int,
    width: int,
    activation: str,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    seed: int = 0,
    *,
    in_features: int | None = None,
    out_features: int = 1,
) -> nn.Sequential:
    """``build_mlp`` with weights ``N(0, sigma_w2 / fan_in)`` and biases ``N(0, sigma_b2)``: the
    parametrisation of mean-field theory (Poole et al. 2016; Schoenholz et al. 2017).

    ``sigma_w2 = 1`` is LeCun's init and ``2`` He's. Same structure and seeding as ``build_mlp``.
    """
    if not sigma_w2 > 0 or not sigma_b2 >= 0:
        raise ValueError(f"need sigma_w2 > 0 and sigma_b2 >= 0, got {sigma_w2!r}, {sigma_b2!r}")
    model = build_mlp(
        depth, width, activation, "lecun", seed, in_features=in_features, out_features=out_features
    )
    for index, layer in enumerate(m for m in model if isinstance(m, nn.Linear)):
        layer.weight.mul_(math.sqrt(sigma_w2))
        if sigma_b2 > 0:
            generator = torch.Generator().manual_seed(layer_seed(seed, 2**31 + index))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * math.sqrt(sigma_b2))
    return model
