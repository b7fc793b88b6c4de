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

__all__ = ["HEAD_SEED_INDEX", "ElmanRNN", "build_gaussian_mlp", "build_mlp", "build_rnn"]

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


class ElmanRNN(nn.Module):
    """A vanilla recurrent network ``h_t = phi(W_hh h_{t-1} + W_xh x_t + b)`` with a Linear head on
    the last state, unrolled step by step so that every hidden state ``h_t`` is a tensor one can
    measure (``torch.nn.RNN`` computes the same thing but keeps its states internal).

    ``forward(x)`` takes ``(batch, time, input_size)`` and returns ``(batch, out_features)``; with
    ``return_states=True`` it also returns the list of states ``h_1 .. h_T``.
    """

    def __init__(self, input_size: int, hidden: int, activation: str = "tanh", out_features: int = 1):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden", hidden)
        self.activation = get_activation(activation).name
        self.input = nn.Linear(input_size, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.phi = get_activation(activation).make_module()
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor, return_states: bool = False):  # type: ignore[override]
        if x.ndim != 3 or x.shape[-1] != self.input.in_features:
            raise ValueError(
                f"x must have shape (batch, time, {self.input.in_features}), got {tuple(x.shape)}"
            )
        h = x.new_zeros(x.shape[0], self.recurrent.in_features)
        drive = self.input(x)  # all time steps at once
        states = []
        for t in range(x.shape[1]):
            h = self.phi(drive[:, t] + self.recurrent(h))
            states.append(h)
        out = self.head(h)
        return (out, states) if return_states else out


@torch.no_grad()
def build_rnn(
    hidden: int,
    activation: str = "tanh",
    spectral_radius: float | None = None,
    seed: int = 0,
    *,
    recurrent_init: str = "orthogonal",
    input_size: int = 2,
    out_features: int = 1,
) -> ElmanRNN:
    """An ``ElmanRNN`` with its recurrent matrix ``W_hh`` drawn by ``recurrent_init`` and, if
    ``spectral_radius`` is given, rescaled so that its largest |eigenvalue| is exactly that.

    ``recurrent_init`` is one of ``INITS`` or ``"identity"`` (with ``relu``: the IRNN of Le et al.
    2015). Input and head layers use PyTorch's default init. Per-layer seeds as in ``build_mlp``.
    """
    check_positive_int("hidden", hidden)
    model = ElmanRNN(input_size, hidden, activation, out_features)
    for index, layer in enumerate((model.input, model.head)):
        init_layer(layer, "default", seed=layer_seed(seed, index))
    if recurrent_init == "identity":
        model.recurrent.weight.copy_(torch.eye(hidden))
    else:
        check_choice("recurrent_init", recurrent_init, (*INITS, "identity"))
        init_layer(model.recurrent, recurrent_init, seed=layer_seed(seed, 2))
    if spectral_radius is not None:
        if not spectral_radius > 0:
            raise ValueError(f"spectral_radius must be > 0, got {spectral_radius!r}")
        weight = model.recurrent.weight
        radius = torch.linalg.eigvals(weight.double()).abs().max().item()
        weight.mul_(spectral_radius / radius)
    return model
