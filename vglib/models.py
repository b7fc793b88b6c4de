"""Model builders. Every builder takes ``depth``, ``width``, ``activation``, ``init`` and ``seed``."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torch.nn.utils import skip_init

from ._validation import check_choice, check_positive_int
from .activations import get_activation
from .initialization import INITS, init_layer, layer_seed

__all__ = ["HEAD_SEED_INDEX", "build_mlp"]

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
