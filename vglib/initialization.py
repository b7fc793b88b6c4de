"""Named weight-initialisation schemes, applied to the Linear and Conv layers of any module::

    | scheme       | weights                                   | Var(W_ij)             | biases        |
    |--------------|-------------------------------------------|-----------------------|---------------|
    | ``default``  | PyTorch's own ``reset_parameters``:       | 1 / (3 fan_in)        | U(+-1/sqrt(fan_in)) |
    |              | U(+-1/sqrt(fan_in)) (kaiming_uniform, a=sqrt 5) |                 |               |
    | ``small``    | N(0, 0.01^2)                              | 1e-4                  | 0             |
    | ``xavier``   | U(+-sqrt(6/(fan_in+fan_out))),            | 2/(fan_in+fan_out)    | 0             |
    |              | Glorot & Bengio's "normalised" init       |                       |               |
    | ``he``       | N(0, 2/fan_in), He et al. (2015)          | 2 / fan_in            | 0             |
    | ``orthogonal`` | a random orthogonal matrix, gain 1 (Saxe et al. 2013) | 1 / max(fan_in, fan_out) | 0 |
    | ``orthogonal_relu`` | the same with ReLU's gain sqrt 2 | 2 / max(fan_in, fan_out) | 0 |
    | ``lecun``    | N(0, 1/fan_in) (LeCun et al. 1998)        | 1 / fan_in            | 0             |

The schemes do not depend on the activation: ``he`` is the ReLU gain whatever the network uses,
which is exactly what lets the book show a scheme meeting the wrong activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._seed import generator as seeded_generator
from ._seed import torch_seed
from ._state import buffers_kept
from ._validation import check_choice, check_positive_int

__all__ = [
    "INITS",
    "centre_sigmoid_biases",
    "hidden_weight_layers",
    "init_layer",
    "init_variance",
    "init_weights",
    "layer_seed",
    "lsuv_init",
    "scale_weights",
    "weight_layers",
]

INITS: tuple[str, ...] = ("default", "small", "xavier", "he", "orthogonal", "orthogonal_relu", "lecun")
"""Names accepted wherever an ``init`` argument is taken."""

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return int(fan_in), int(fan_out)


def init_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The variance of one weight entry under ``scheme`` for a layer with these fans."""
    check_choice("init", scheme, INITS)
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be >= 1, got {fan_in}, {fan_out}")
    return {
        "default": 1.0 / (3.0 * fan_in),
        "small": 1e-4,
        "xavier": 2.0 / (fan_in + fan_out),
        "he": 2.0 / fan_in,
        "orthogonal": 1.0 / max(fan_in, fan_out),
        "orthogonal_relu": 2.0 / max(fan_in, fan_out),
        "lecun": 1.0 / fan_in,
    }[scheme]


@torch.no_grad()
def init_layer(layer: nn.Module, scheme: str, *, seed: int) -> nn.Module:
    """Re-initialise one Linear/Conv layer in place from its own ``seed``; returns the layer.

    The global RNG state is left as it was.
    """
    check_choice("init", scheme, INITS)
    if not isinstance(layer, _LAYER_TYPES):
        raise TypeError(f"init_layer takes an nn.Linear or nn.ConvNd layer, got {type(layer).__name__}")
    with torch_seed(seed):
        _fill(layer, scheme)
    return layer


def _fill(layer: nn.Module, scheme: str) -> None:
    weight: torch.Tensor = layer.weight
    bias: torch.Tensor | None = layer.bias
    if scheme == "default":
        layer.reset_parameters()
        return
    fan_in, _ = _fans(weight)
    fill: dict[str, Callable[[torch.Tensor], object]] = {
        "small": lambda w: nn.init.normal_(w, 0.0, 0.01),
        "xavier": nn.init.xavier_uniform_,
        "he": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
        "orthogonal_relu": lambda w: nn.init.orthogonal_(w, gain=nn.init.calculate_gain("relu")),
        "lecun": lambda w: nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in)),
    }
    fill[scheme](weight)
    if bias is not None:
        nn.init.zeros_(bias)


def layer_seed(seed: int, index: int) -> int:
    """An independent seed for layer ``index`` of a model seeded with ``seed``.

    Seeding each layer on its own means the first ``d`` layers of a deeper model are the same
    as those of a ``d``-layer model with the same seed: depth can change with nothing else.
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of the Linear and Conv layers of ``model``, in registration order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _LAYER_TYPES)]


def hidden_weight_layers(model: nn.Module) -> list[str]:
    """Names of the hidden weight layers, input side first: every Linear/Conv layer but the last
    registered (the head), and not the gates of highway blocks (their path is a side road)."""
    names = [name for name, _ in weight_layers(model)][:-1]
    return [n for n in names if not n.endswith("gate")]


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str, *, seed: int = 0) -> nn.Module:
    """Re-initialise every Linear/Conv layer of ``model`` in place with ``scheme``; returns ``model``.

    Layer ``i`` (registration order) draws from its own seed ``layer_seed(seed, i)``; the global
    RNG state is left as it was.
    """
    check_choice("init", scheme, INITS)
    layers = weight_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no layers to initialise; init_weights handles "
            "nn.Linear, nn.Conv1d, nn.Conv2d and nn.Conv3d"
        )
    for index, (_, layer) in enumerate(layers):
        init_layer(layer, scheme, seed=layer_seed(seed, index))
    return model


@torch.no_grad()
def centre_sigmoid_biases(model: nn.Module) -> nn.Module:
    """Give every Linear layer after the first the bias ``b = -W 1 / 2``, in place; returns ``model``.

    A sigmoid's output has mean about 1/2, and ``sigma(z) = 1/2 + tanh(z/2)/2``: subtracting
    ``W`` times the constant 1/2 from the next layer's pre-activation removes the offset, so that
    a sigmoid network with these biases (and a zero first bias) computes exactly what a tanh
    network computes with its first layer's weights halved and the others quartered (LeCun et
    al. 1998 recommend centred activations for this reason). Meant for sigmoid MLPs such as
    ``build_mlp(..., activation="sigmoid")`` and ``build_gaussian_mlp``; the first Linear layer
    (which sees the centred input) is left as it is.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError(
            f"centre_sigmoid_biases needs a model with at least two nn.Linear layers, {type(model).__name__} "
            f"has {len(linears)}"
        )
    for layer in linears[1:]:
        if layer.bias is None:
            raise ValueError("centre_sigmoid_biases needs every Linear layer after the first to have a bias")
        layer.bias.copy_(-0.5 * layer.weight.sum(dim=1))
    return model


@torch.no_grad()
def lsuv_init(
    model: nn.Module, x: torch.Tensor, *, tol: float = 0.05, max_iter: int = 10, seed: int = 0
) -> nn.Module:
    """Layer-sequential unit-variance init (Mishkin & Matas 2016), in place; returns ``model``.

    Every Linear/Conv layer is first made orthogonal (``init_weights(model, "orthogonal")``);
    then, layer by layer from the input, its weights are divided by the standard deviation of its
    output on the batch ``x`` until that variance is within ``tol`` of 1 (at most ``max_iter``
    passes per layer). Data-dependent: the scale comes from what the layer actually sees, whatever
    the activation or architecture. BatchNorm statistics are left as they were.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    check_positive_int("max_iter", max_iter)
    init_weights(model, "orthogonal", seed=seed)
    with buffers_kept(model):
        for _, layer in weight_layers(model):
            seen: list[torch.Tensor] = []
            handle = layer.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.detach()))
            try:
                for _ in range(max_iter):
                    seen.clear()
                    model(x)
                    std = float(torch.cat([s.flatten() for s in seen]).std())
                    if not math.isfinite(std) or std == 0.0 or abs(std * std - 1.0) < tol:
                        break
                    layer.weight.div_(std)
            finally:
                handle.remove()
    return model


@torch.no_grad()
def scale_weights(model: nn.Module, gain: float, *, bias_variance: float = 0.0, seed: int = 0) -> nn.Module:
    """Multiply the weights of every hidden Linear/Conv layer of ``model`` (all but the head; see
    ``hidden_weight_layers``) by ``gain``, in place; returns ``model``.

    With ``bias_variance > 0`` those layers' biases are redrawn from ``N(0, bias_variance)``, hidden
    layer ``i`` from its own seed ``layer_seed(seed, 2**31 + i)`` (``build_gaussian_mlp`` draws its
    hidden layers through this function), so
    ``scale_weights(build_mlp(..., init="orthogonal"), sigma_w, bias_variance=sigma_b2)`` is the
    orthogonal network of mean-field theory at ``(sigma_w^2, sigma_b^2)``. The global RNG state is
    left as it was.
    """
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain):
        raise TypeError(f"gain must be a finite number, got {gain!r}")
    if not bias_variance >= 0:
        raise ValueError(f"bias_variance must be >= 0, got {bias_variance!r}")
    names = hidden_weight_layers(model)
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no hidden layers to scale; scale_weights handles nn.Linear, "
            "nn.Conv1d, nn.Conv2d and nn.Conv3d, and leaves the last one (the head) alone"
        )
    modules = dict(model.named_modules())
    for index, name in enumerate(names):
        layer = modules[name]
        layer.weight.mul_(gain)
        if bias_variance > 0 and layer.bias is not None:
            generator = seeded_generator(layer_seed(seed, 2**31 + index))
            noise = torch.randn(layer.bias.shape, generator=generator, dtype=layer.bias.dtype)
            layer.bias.copy_(noise * math.sqrt(bias_variance))
    return model
