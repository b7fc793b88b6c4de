"""Model builders. Every builder takes ``depth``, ``width``, ``activation``, ``init`` and ``seed``."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils import skip_init

from ._seed import generator as seeded_generator
from ._seed import torch_seed
from ._validation import check_choice, check_positive_int
from .activations import get_activation
from .initialization import INITS, init_layer, layer_seed, scale_weights

__all__ = [
    "HEAD_SEED_INDEX",
    "NOISY_BN_STRENGTH",
    "NORMS",
    "RECURRENT_KINDS",
    "SKIPS",
    "ElmanRNN",
    "FixupBlock",
    "GatedRNN",
    "HighwayBlock",
    "LayerScaleBlock",
    "NoisyBatchNorm",
    "ReZeroBlock",
    "ResidualBlock",
    "build_gaussian_mlp",
    "build_mlp",
    "build_network",
    "build_recurrent",
    "build_rnn",
]

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
    scale_weights(model, math.sqrt(sigma_w2), bias_variance=sigma_b2, seed=seed)  # the hidden layers
    model.head.weight.mul_(math.sqrt(sigma_w2))
    if sigma_b2 > 0:
        generator = seeded_generator(layer_seed(seed, 2**31 + depth))
        model.head.bias.copy_(torch.randn(model.head.bias.shape, generator=generator) * math.sqrt(sigma_b2))
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
    ``spectral_radius`` is given, rescaled so that its largest ``|eigenvalue|`` is exactly that.

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


NORMS: tuple[str, ...] = ("none", "batch", "layer", "rms", "group", "noisy_batch")
"""Names accepted by ``build_network(norm=...)``: no normalisation, ``nn.BatchNorm1d`` (Ioffe &
Szegedy 2015), ``nn.LayerNorm`` (Ba et al. 2016), ``nn.RMSNorm`` (Zhang & Sennrich 2019: no mean
subtracted) and ``nn.GroupNorm`` with 8 groups (Wu & He 2018; fewer where the width has no 8
equal groups); ``"noisy_batch"`` is ``NoisyBatchNorm``, batch norm followed by a covariate shift
injected at every training step."""
SKIPS: tuple[str, ...] = ("none", "residual", "highway", "rezero", "layerscale", "fixup")
"""Names accepted by ``build_network(skip=...)``: see ``build_network``."""
_GATE_SEED_INDEX = 2**20
"""Seed indices of highway gates start here, apart from the main layers' 0, 1, 2, ..."""


NOISY_BN_STRENGTH = 0.5
"""``NoisyBatchNorm``'s noise: each unit's mean moved by N(0, s^2) and its scale multiplied by a factor
uniform in [1 - s, 1 + s], s = 0.5, drawn afresh at every training step."""


class NoisyBatchNorm(nn.BatchNorm1d):
    """Batch norm (no affine parameters) followed, at every *training* step, by a shift of each
    unit's distribution: ``z * a + b`` with a per-unit scale ``a ~ U[1 - s, 1 + s]`` and offset
    ``b ~ N(0, s^2)`` drawn afresh at each step (``s = NOISY_BN_STRENGTH``). This is the
    experiment of Santurkar et al. (2018, section 2.1), which put back a changing covariate shift
    after batch norm to see whether batch norm's benefit survives it. The noise is drawn only where
    a gradient is being computed (``torch.is_grad_enabled()`` in training mode), so held-out
    evaluation under ``torch.no_grad`` sees plain batch norm."""

    def __init__(self, width: int, strength: float = NOISY_BN_STRENGTH):
        super().__init__(width, affine=False)
        self.strength = float(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        z = super().forward(x)
        if not (self.training and torch.is_grad_enabled()):
            return z
        s = self.strength
        scale = 1.0 + s * (2.0 * torch.rand(z.shape[-1], dtype=z.dtype, device=z.device) - 1.0)
        offset = s * torch.randn(z.shape[-1], dtype=z.dtype, device=z.device)
        return z * scale + offset


def _norm_module(norm: str, width: int, noise: float = NOISY_BN_STRENGTH) -> nn.Module | None:
    # affine=False keeps the comparison like with like: the same trainable weights as the plain net
    if norm == "none":
        return None
    if norm == "batch":
        return nn.BatchNorm1d(width, affine=False)
    if norm == "rms":
        return nn.RMSNorm(width, elementwise_affine=False)
    if norm == "noisy_batch":
        return NoisyBatchNorm(width, noise)
    if norm == "group":
        groups = max(g for g in range(1, 9) if width % g == 0)
        return nn.GroupNorm(groups, width, affine=False)
    return nn.LayerNorm(width, elementwise_affine=False)


class ResidualBlock(nn.Module):
    """``h + scale * linear(act(norm(h)))``: the pre-activation residual block (He et al. 2016b)
    with one weight layer. Its Jacobian is ``I + scale * W D``, so a gradient always has the
    identity path around the block. ``scale`` < 1 (e.g. ``1/sqrt(depth)``) keeps the forward
    variance from doubling per block, which it does at ``scale = 1`` with He init and no norm."""

    def __init__(self, linear: nn.Linear, act: nn.Module, norm: nn.Module | None, scale: float):
        super().__init__()
        self.norm = norm
        self.act = act
        self.linear = linear
        self.scale = scale

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """``linear(act(norm(h)))``: what the block adds to ``h``, before its scale."""
        return self.linear(self.act(self.norm(h) if self.norm is not None else h))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return h + self.scale * self.branch(h)


class ReZeroBlock(ResidualBlock):
    """``h + alpha * linear(act(norm(h)))`` with one learned scalar ``alpha`` per block, starting at
    0 (ReZero, Bachlechner et al. 2020; SkipInit, De & Smith 2020, is the same scalar on a branch
    with batch norm): at initialisation every block is the identity, so the network's Jacobian is
    the identity whatever its depth, and the first step moves ``alpha`` before the branch weights
    (whose gradient is ``alpha`` times the branch's, so 0 at first)."""

    def __init__(self, linear: nn.Linear, act: nn.Module, norm: nn.Module | None):
        super().__init__(linear, act, norm, 1.0)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return h + self.alpha * self.branch(h)


class LayerScaleBlock(ResidualBlock):
    """``h + gamma * linear(act(norm(h)))`` with a learned per-channel ``gamma`` starting at ``init``
    (LayerScale, Touvron et al. 2021, CaiT, who start it at 0.1 for up to 18 blocks, 1e-5 up to 24,
    1e-6 beyond): each block starts close to the identity, and each channel learns its own scale."""

    def __init__(self, linear: nn.Linear, act: nn.Module, norm: nn.Module | None, init: float):
        super().__init__(linear, act, norm, 1.0)
        self.gamma = nn.Parameter(torch.full((linear.out_features,), float(init)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return h + self.gamma * self.branch(h)


class FixupBlock(ResidualBlock):
    """``h + multiplier * linear(act(norm(h) + bias_in)) + bias_out``: Fixup (Zhang et al. 2019)
    for a branch of one weight layer. Fixup zeroes the last weight layer of every branch and
    rescales the others by ``L^(-1/(2m-2))`` for branches of ``m`` layers; with ``m = 1`` there is
    nothing to rescale, and what remains is the zero-initialised branch with Fixup's scalar biases
    (0) and scalar multiplier (1). At initialisation every block is the identity, as with
    ``ReZeroBlock``, but here the branch weights receive a gradient from the first step."""

    def __init__(self, linear: nn.Linear, act: nn.Module, norm: nn.Module | None):
        super().__init__(linear, act, norm, 1.0)
        with torch.no_grad():
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
        self.bias_in = nn.Parameter(torch.zeros(()))
        self.bias_out = nn.Parameter(torch.zeros(()))
        self.multiplier = nn.Parameter(torch.ones(()))

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.act((self.norm(h) if self.norm is not None else h) + self.bias_in))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return h + self.multiplier * self.branch(h) + self.bias_out


class HighwayBlock(nn.Module):
    """``h + T(h) * (H(h) - h)`` with ``H = act(norm(linear(h)))`` and the transform gate
    ``T = sigmoid(gate(h))`` (Srivastava et al. 2015). A negative gate bias makes ``T`` small at
    init, so the block starts close to the identity and the gradient passes through ``1 - T``."""

    def __init__(self, linear: nn.Linear, act: nn.Module, norm: nn.Module | None, gate: nn.Linear):
        super().__init__()
        self.linear = linear
        self.norm = norm
        self.act = act
        self.gate = gate

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        z = self.linear(h)
        transformed = self.act(self.norm(z) if self.norm is not None else z)
        t = torch.sigmoid(self.gate(h))
        return h + t * (transformed - h)


@torch.no_grad()
def build_network(
    depth: int,
    width: int,
    activation: str = "relu",
    init: str = "he",
    seed: int = 0,
    *,
    norm: str = "none",
    skip: str = "none",
    residual_scale: float = 1.0,
    gate_bias: float = -2.0,
    in_features: int | None = None,
    out_features: int = 1,
    noise: float = NOISY_BN_STRENGTH,
) -> nn.Sequential:
    """``build_mlp`` with the architectural remedies: normalisation and skip connections.

    ``depth`` counts the hidden weight layers, as in ``build_mlp``. The first block
    (``linear1``, ``norm1``, ``act1``) maps the input to ``width``; with ``skip="none"`` the others
    follow the same pattern (Linear -> norm -> activation, the placement of Ioffe & Szegedy 2015),
    and with ``norm="none"`` the model *is* ``build_mlp``'s. With ``skip="residual"``,
    ``"highway"``, ``"rezero"``, ``"layerscale"`` or ``"fixup"`` blocks 2..depth are ``ResidualBlock``
    (branch scaled by ``residual_scale``), ``HighwayBlock``, ``ReZeroBlock`` (a learned scalar from
    0), ``LayerScaleBlock`` (a learned per-channel scale starting at ``residual_scale``) or
    ``FixupBlock`` (the branch's weight layer zeroed) modules named
    ``block2``... whose weight layer is ``block{i}.linear``. The weight layer of block ``i`` is drawn
    from the same seed in every variant, so a plain net and its residual or highway version start
    from the same weights and differ only in the architecture. Norm layers have no affine
    parameters. Highway gates are drawn with ``init`` too, and their biases set to ``gate_bias``.
    ``noise`` is ``NoisyBatchNorm``'s strength where ``norm="noisy_batch"``.
    """
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    check_choice("norm", norm, NORMS)
    check_choice("skip", skip, SKIPS)
    if not residual_scale > 0:
        raise ValueError(f"residual_scale must be > 0, got {residual_scale!r}")
    mlp = build_mlp(depth, width, activation, init, seed, in_features=in_features, out_features=out_features)
    if norm == "none" and skip == "none":
        return mlp
    act = get_activation(activation)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for index in range(depth):
        linear = mlp.get_submodule(f"linear{index + 1}")
        layer_norm = _norm_module(norm, width, noise)
        if index == 0 or skip == "none":
            modules[f"linear{index + 1}"] = linear
            if layer_norm is not None:
                modules[f"norm{index + 1}"] = layer_norm
            modules[f"act{index + 1}"] = act.make_module()
        elif skip == "residual":
            block = ResidualBlock(linear, act.make_module(), layer_norm, residual_scale)
            modules[f"block{index + 1}"] = block
        elif skip == "rezero":
            modules[f"block{index + 1}"] = ReZeroBlock(linear, act.make_module(), layer_norm)
        elif skip == "fixup":
            modules[f"block{index + 1}"] = FixupBlock(linear, act.make_module(), layer_norm)
        elif skip == "layerscale":
            modules[f"block{index + 1}"] = LayerScaleBlock(
                linear, act.make_module(), layer_norm, residual_scale
            )
        else:
            gate = skip_init(nn.Linear, width, width)
            init_layer(gate, init, seed=layer_seed(seed, _GATE_SEED_INDEX + index))
            gate.bias.fill_(gate_bias)
            modules[f"block{index + 1}"] = HighwayBlock(linear, act.make_module(), layer_norm, gate)
    modules["head"] = mlp.head
    return nn.Sequential(modules)


RECURRENT_KINDS: tuple[str, ...] = ("tanh", "irnn", "lstm", "gru")
"""Names accepted by ``build_recurrent``."""


class GatedRNN(nn.Module):
    """``nn.LSTM`` or ``nn.GRU`` (one layer, batch first) with a Linear head on the last state."""

    def __init__(self, cell: nn.Module, head: nn.Linear):
        super().__init__()
        self.cell = cell
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.ndim != 3 or x.shape[-1] != self.cell.input_size:
            raise ValueError(f"x must have shape (batch, time, {self.cell.input_size}), got {tuple(x.shape)}")
        return self.head(self.cell(x)[0][:, -1])


@torch.no_grad()
def build_recurrent(
    kind: str,
    hidden: int,
    seed: int = 0,
    *,
    input_size: int = 2,
    out_features: int = 1,
    forget_bias: float = 1.0,
) -> nn.Module:
    """A one-layer recurrent regressor of the kind the adding problem needs.

    - ``"tanh"``: ``build_rnn`` with tanh and an orthogonal recurrent matrix (spectral radius 1);
    - ``"irnn"``: ReLU with the identity as recurrent matrix (Le et al. 2015);
    - ``"lstm"``: ``nn.LSTM`` (Hochreiter & Schmidhuber 1997) with forget-gate bias ``forget_bias``
      (1 is the usual choice, Gers et al. 2000; Jozefowicz et al. 2015), PyTorch's init otherwise;
    - ``"gru"``: ``nn.GRU`` (Cho et al. 2014), PyTorch's init.

    All take ``(batch, time, input_size)`` and return ``(batch, out_features)``; same seed, same weights.
    """
    check_choice("kind", kind, RECURRENT_KINDS)
    check_positive_int("hidden", hidden)
    if kind == "tanh":
        return build_rnn(hidden, "tanh", 1.0, seed, input_size=input_size, out_features=out_features)
    if kind == "irnn":
        return build_rnn(
            hidden, "relu", None, seed, recurrent_init="identity", input_size=input_size,
            out_features=out_features,
        )  # fmt: skip
    with torch_seed(seed):
        cell_type = nn.LSTM if kind == "lstm" else nn.GRU
        cell = cell_type(input_size, hidden, batch_first=True)
        head = nn.Linear(hidden, out_features)
    if kind == "lstm":  # gate order in PyTorch: input, forget, cell, output
        for bias in (cell.bias_ih_l0, cell.bias_hh_l0):
            bias[hidden : 2 * hidden] = forget_bias / 2
    return GatedRNN(cell, head)
