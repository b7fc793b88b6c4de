"""The model zoo: small PyTorch models with a known gradient behaviour, the ground truth that
``vglib.diagnose`` is validated against.

Every entry is a builder ``() -> ZooCase``; ``CASES`` maps the case name to it. A builder seeds
torch itself, so calling it twice gives the same model, inputs and target.

Besides the fields that describe the case (``model``, ``inputs``, ``target``, ``loss_fn``,
``time_dim``, ``time_input``, ``family``, ``source``), a case carries what ``labelling.py`` needs
to label it WITHOUT vglib:

- ``first_hidden`` / ``last_hidden``: where dL/dh is read for the depth measurement. A spec is a
  module name (its output), ``"name#k"`` (its k-th call, for a module used several times; ``#-1``
  the last call) or ``"name:in"`` (its first positional input, e.g. ``"head:in"`` = the residual
  stream entering the head). The same spec twice means "one hidden layer": no depth to measure.
- ``first_params`` / ``last_params``: module or parameter names of the first and of the last
  hidden layer, whose relative movement is compared in the training label (an Embedding counts
  only the rows the batch uses).
- ``control``: the matched healthy control for the depth training label (same architecture and
  task, a healthy init/config; a fresh seed where the case *is* the healthy config).
- for recurrent models: ``time_module`` (the recurrent module; dL/dx is taken at its input),
  ``time_task`` (a first/last-signal task, see ``labelling.py``) and ``time_control``.
- ``expected``: what the literature or the practitioner's review expects, recorded for
  comparison only; it is never used to compute a label.

Sources: ``"repro:<file>:<class>"`` marks a model taken unchanged from the practitioner's
``shared/reviews/repro/`` (verbatim copies: ``repro_mymodels.py``, ``repro_cases.py``, and the
class definitions of the bug scripts in ``repro_bug_*.py``), built with the constructor arguments
and inputs that the repro scripts use. ``"zoo"`` marks models written here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations as P

from . import repro_bug_buffer_created_in_forward as bug_buffer
from . import repro_bug_embedding_verdict as bug_embedding
from . import repro_bug_layerscale_called_exploding as bug_ls
from . import repro_bug_rnn_time_vanishing_missed as bug_rnn
from . import repro_bug_root_param_first as bug_root
from . import repro_bug_shared_activation as bug_shared
from . import repro_bug_transformer_order as bug_transformer
from . import repro_bug_tuple_output_profile as bug_tuple
from . import repro_bug_zero_init_called_vanishing as bug_zero_init
from . import repro_mymodels

M = repro_mymodels
Inputs = Any  # a tensor, a tuple of tensors (model(*inputs)) or a dict (model(**inputs))


@dataclass
class TimeTask:
    """A task whose target depends on a signal at the FIRST and one at the LAST time step.

    ``batch(gen, n) -> (inputs, target)`` draws a fresh batch; ``loss_fn(output, target)``;
    ``param`` names the weight whose slices see only the first / only the last step's signal:
    ``first_index`` / ``last_index`` index ``dim`` of it (input columns of ``weight_ih_l0`` for
    float sequences, Embedding rows of the reserved first/last tokens for token sequences).
    """

    batch: Callable[[torch.Generator, int], tuple[Inputs, torch.Tensor]]
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor]
    param: str
    dim: int
    first_index: tuple[int, ...]
    last_index: tuple[int, ...]


@dataclass
class ZooCase:
    name: str
    model: nn.Module
    inputs: Inputs
    target: torch.Tensor
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None
    time_dim: int | None
    time_input: int | str | None
    family: str
    source: str
    first_hidden: str
    last_hidden: str
    first_params: tuple[str, ...]
    last_params: tuple[str, ...]
    control: Callable[[], ZooCase] | None = None
    time_module: str | None = None
    time_task: TimeTask | None = None
    time_control: Callable[[], ZooCase] | None = None
    expected: str = ""
    note: str = ""


# ------------------------------------------------------------------------------------- data
B = 32  # batch of the zoo's own cases (repro cases keep the practitioner's batch)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def classes(n: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=_gen(seed))


def tokens(n: int, t: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=_gen(seed))


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def ce_of(out: Any, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on a tensor, the first element of a tuple, or a dict's 'logits'."""
    if isinstance(out, dict):
        out = out["logits"]
    elif isinstance(out, tuple):
        out = out[0]
    return F.cross_entropy(out, y)


# ----------------------------------------------------------------------------- time tasks
def float_signal_task(t: int, features: int, out_dim: int) -> TimeTask:
    """Float sequences (B, T, F), N(0, 1) distractors on channels 2..F-1. Channel 0 carries a
    signal s1 ~ N(0, 1) at t = 1 only, channel 1 a signal s2 at t = T only; target s1 + s2 on every
    output. So column 0 of the input weights learns only through the first step, column 1 only
    through the last."""

    def batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, t, features, generator=gen)
        x[:, 1:, 0] = 0.0
        x[:, :-1, 1] = 0.0
        y = (x[:, 0, 0] + x[:, -1, 1]).unsqueeze(1).expand(n, out_dim).clone()
        return x, y

    return TimeTask(batch, F.mse_loss, "rnn.weight_ih_l0", 1, (0,), (1,))


def token_signal_task(
    t: int,
    low: int,
    high: int,
    emb: str,
    lm: bool = False,
    wrap: Callable[[torch.Tensor], Inputs] | None = None,
) -> TimeTask:
    """Token sequences: tokens 0/1 appear only at t = 1, tokens 2/3 only at t = T, the others are
    drawn from [low, high). Target class 2*[first = 1] + [last = 3] (4 classes). For a language
    model (B, T, V) the loss is taken at the last position and the classes are tokens 4..7. The
    Embedding rows of tokens 0, 1 learn only through the first step, rows 2, 3 only through the
    last."""

    def batch(gen: torch.Generator, n: int) -> tuple[Inputs, torch.Tensor]:
        x = torch.randint(low, high, (n, t), generator=gen)
        b1 = torch.randint(0, 2, (n,), generator=gen)
        b2 = torch.randint(0, 2, (n,), generator=gen)
        x[:, 0] = b1
        x[:, -1] = 2 + b2
        y = 2 * b1 + b2 + (4 if lm else 0)  # an LM predicts tokens 4..7, not the signal tokens (tied weights)
        return (wrap(x) if wrap else x), y

    def loss(out: Any, y: torch.Tensor) -> torch.Tensor:
        if isinstance(out, dict):
            out = out["logits"]
        if lm:
            out = out[:, -1]
        return F.cross_entropy(out, y)

    return TimeTask(batch, loss, f"{emb}.weight", 0, (0, 1), (2, 3))


# ------------------------------------------------------------------------------- helpers
def set_forget_bias(rnn: nn.LSTM | nn.GRU, value: float) -> None:
    """LSTM: forget gate (chunk 1 of i,f,g,o); GRU: update gate z (chunk 1 of r,z,n; z near 1
    keeps the state). Total bias = value (bias_ih = value, bias_hh = 0), every layer."""
    h = rnn.hidden_size
    with torch.no_grad():
        for k in range(rnn.num_layers):
            getattr(rnn, f"bias_ih_l{k}")[h : 2 * h].fill_(value)
            getattr(rnn, f"bias_hh_l{k}")[h : 2 * h].zero_()


def _irnn_(rnn: nn.RNN, gain: float = 1.0) -> None:
    """IRNN (Le et al. 2015): identity recurrent matrix (times gain), zero biases."""
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(gain * torch.eye(rnn.hidden_size))
        rnn.bias_hh_l0.zero_()
        rnn.bias_ih_l0.zero_()


# ================================================================================== MLPs
class MLP(nn.Module):
    """depth hidden Linear layers (16 -> width -> ... -> width) with one activation module each,
    then a Linear head to 3 outputs."""

    def __init__(
        self, depth: int, width: int = 64, act: str = "relu", bias: bool = True, d_in: int = 16, out: int = 3
    ):
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}
        self.layers = nn.ModuleList(
            [nn.Linear(d_in if i == 0 else width, width, bias=bias) for i in range(depth)]
        )
        self.acts = nn.ModuleList([acts[act]() for _ in range(depth)])
        self.head = nn.Linear(width, out)

    def forward(self, x):
        for lin, act in zip(self.layers, self.acts, strict=True):
            x = act(lin(x))
        return self.head(x)


def _init_mlp(model: MLP, init: str, scale: float) -> None:
    with torch.no_grad():
        for lin in model.layers:
            if init == "he":
                nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_normal_(lin.weight)
            elif init.startswith("std"):
                nn.init.normal_(lin.weight, std=float(init[3:]))
            elif init != "default":
                raise ValueError(init)
            lin.weight.mul_(scale)
            if lin.bias is not None and init != "default":
                lin.bias.zero_()


def mlp(
    name: str,
    seed: int = 0,
    *,
    depth: int = 10,
    act: str = "relu",
    init: str = "he",
    scale: float = 1.0,
    bias: bool = True,
    expected: str = "",
    note: str = "",
) -> ZooCase:
    _seed(seed)
    model = MLP(depth, act=act, bias=bias)
    _init_mlp(model, init, scale)
    control = partial(
        mlp, name + "/control", seed + 1, depth=depth, act="relu", init="he", scale=1.0, bias=bias
    )
    return ZooCase(
        name,
        model,
        randn(B, 16, seed=10),
        randn(B, 3, seed=11),
        None,
        None,
        None,
        "mlp",
        "zoo",
        "acts.0",
        f"acts.{depth - 1}",
        ("layers.0",),
        (f"layers.{depth - 1}",),
        control,
        expected=expected,
        note=note,
    )


class SharedLinearMLP(nn.Module):
    """One Linear (and one Tanh module) applied `repeat` times: weight sharing across depth."""

    def __init__(self, repeat: int = 6, width: int = 64, gain: float = 1.0):
        super().__init__()
        self.inp = nn.Linear(16, width)
        self.shared = nn.Linear(width, width)
        self.act = nn.Tanh()
        self.head = nn.Linear(width, 3)
        self.repeat = repeat
        with torch.no_grad():
            nn.init.orthogonal_(self.shared.weight, gain=gain)
            self.shared.bias.zero_()

    def forward(self, x):
        h = self.act(self.inp(x))
        for _ in range(self.repeat):
            h = self.act(self.shared(h))
        return self.head(h)


def shared_linear(name: str, seed: int = 0, *, gain: float = 1.0, expected: str = "") -> ZooCase:
    _seed(seed)
    model = SharedLinearMLP(gain=gain)
    control = partial(shared_linear, name + "/control", seed + 1, gain=1.0)
    return ZooCase(
        name,
        model,
        randn(B, 16, seed=10),
        randn(B, 3, seed=11),
        None,
        None,
        None,
        "shared",
        "zoo",
        "act#0",
        "act#-1",
        ("inp",),
        ("shared",),
        control,
        expected=expected,
        note="one Linear used 6 times: first/last hidden = first/last call of the shared Tanh; "
        "the last hidden layer's weights are the shared ones (they also get the "
        "gradients of every earlier use)",
    )


class FrozenMiddle(nn.Module):
    """Trainable first layer, frozen middle (as in a partly frozen backbone), trainable last."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.first = nn.Linear(16, width)
        self.middle = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(width, width), nn.ReLU())])
        self.last = nn.Linear(width, width)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        self.head = nn.Linear(width, 3)
        for mod in [self.first, self.last, *self.middle]:
            if isinstance(mod, nn.Linear):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        self.middle.requires_grad_(False)

    def forward(self, x):
        return self.head(self.act2(self.last(self.middle(self.act1(self.first(x))))))


def frozen_middle(name: str, seed: int = 0) -> ZooCase:
    _seed(seed)
    return ZooCase(
        name,
        FrozenMiddle(),
        randn(B, 16, seed=10),
        randn(B, 3, seed=11),
        None,
        None,
        None,
        "frozen",
        "zoo",
        "act1",
        "act2",
        ("first",),
        ("last",),
        partial(frozen_middle, name + "/control", seed + 1),
        expected="healthy",
        note="4 frozen He-init layers between two trainable ones: gradient passes through frozen layers",
    )


class ResidualMLP(nn.Module):
    """stem -> depth x (h + branch(h)), branch = Linear-ReLU-Linear; zero_init zeroes the last
    Linear of each branch (Fixup/SkipInit-style zero-initialised residual branches)."""

    def __init__(self, depth: int = 8, width: int = 64, zero_init: bool = False):
        super().__init__()
        self.stem = nn.Linear(16, width)
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(depth)]
        )
        self.head = nn.Linear(width, 3)
        if zero_init:
            for b in self.blocks:
                nn.init.zeros_(b[2].weight)
                nn.init.zeros_(b[2].bias)

    def forward(self, x):
        h = self.stem(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)


def residual_mlp(name: str, seed: int = 0, *, zero_init: bool = False, expected: str = "") -> ZooCase:
    _seed(seed)
    model = ResidualMLP(zero_init=zero_init)
    return ZooCase(
        name,
        model,
        randn(B, 16, seed=10),
        randn(B, 3, seed=11),
        None,
        None,
        None,
        "residual",
        "zoo",
        "blocks.1:in",
        "head:in",
        ("stem",),
        ("blocks.7",),
        partial(residual_mlp, name + "/control", seed + 1, zero_init=False),
        expected=expected,
    )


def parametrized_mlp(
    name: str,
    seed: int = 0,
    *,
    kind: str = "orthogonal",
    act: str = "tanh",
    plain: bool = False,
    expected: str = "",
) -> ZooCase:
    """8 hidden layers, each wrapped in a parametrization (orthogonal / spectral_norm /
    weight_norm); the control is the same net without parametrizations, He/Xavier-normal init."""
    _seed(seed)
    acts = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}
    layers: list[nn.Module] = []
    for i in range(8):
        lin = nn.Linear(16 if i == 0 else 64, 64)
        if not plain:
            lin = {
                "orthogonal": P.orthogonal,
                "spectral_norm": P.spectral_norm,
                "weight_norm": P.weight_norm,
            }[kind](lin)
        else:
            nn.init.xavier_normal_(lin.weight, gain=nn.init.calculate_gain(act))
        layers += [lin, acts[act]()]
    model = nn.Sequential(*layers, nn.Linear(64, 3))
    control = partial(parametrized_mlp, name + "/control", seed + 1, kind=kind, act=act, plain=True)
    return ZooCase(
        name,
        model,
        randn(B, 16, seed=10),
        randn(B, 3, seed=11),
        None,
        None,
        None,
        "parametrized",
        "zoo",
        "1",
        "15",
        ("0",),
        ("14",),
        control,
        expected=expected,
    )


# ================================================================================== CNNs
class PlainCNN(nn.Module):
    def __init__(self, depth: int = 6, ch: int = 8, act: str = "relu", bn: bool = False):
        super().__init__()
        acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else ch, ch, 3, padding=1) for i in range(depth)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(ch) if bn else nn.Identity() for _ in range(depth)])
        self.acts = nn.ModuleList([acts[act]() for _ in range(depth)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(ch, 10)

    def forward(self, x):
        for c, n, a in zip(self.convs, self.norms, self.acts, strict=True):
            x = a(n(c(x)))
        return self.head(self.pool(x).flatten(1))


def cnn(
    name: str,
    seed: int = 0,
    *,
    depth: int = 6,
    act: str = "relu",
    bn: bool = False,
    init: str = "default",
    scale: float = 1.0,
    expected: str = "",
) -> ZooCase:
    _seed(seed)
    model = PlainCNN(depth, act=act, bn=bn)
    with torch.no_grad():
        for c in model.convs:
            if init == "he":
                nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
                c.bias.zero_()
            elif init.startswith("std"):
                nn.init.normal_(c.weight, std=float(init[3:]))
                c.bias.zero_()
            c.weight.mul_(scale)
    control = partial(cnn, name + "/control", seed + 1, depth=depth, act="relu", bn=bn, init="he")
    return ZooCase(
        name,
        model,
        randn(16, 3, 8, 8, seed=10),
        classes(16, 10, seed=11),
        None,
        None,
        None,
        "cnn",
        "zoo",
        "acts.0",
        f"acts.{depth - 1}",
        ("convs.0", "norms.0"),
        (f"convs.{depth - 1}", f"norms.{depth - 1}"),
        control,
        expected=expected,
    )


# =========================================================================== recurrent (zoo)
class SeqRegressor(nn.Module):
    """nn.RNN / LSTM / GRU (8 -> 32, batch_first) -> Linear on the last step -> 1 output."""

    def __init__(self, kind: str = "rnn", nonlinearity: str = "tanh", hidden: int = 32):
        super().__init__()
        if kind == "rnn":
            self.rnn = nn.RNN(8, hidden, batch_first=True, nonlinearity=nonlinearity)
        else:
            self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _seq_time_control(t: int, kind: str) -> ZooCase:
    """The healthy-in-time control: a gated RNN that keeps its state, forget-gate bias 5 (an
    LSTM for nn.RNN and LSTM models) or update-gate bias 5 (GRU): memory ~ sigmoid(5)^T = 0.993^T."""
    kind = "gru" if kind == "gru" else "lstm"
    return seq_rnn(f"{kind}_T{t}/time_control", 1, t=t, kind=kind, gate_bias=5.0)


def seq_rnn(
    name: str,
    seed: int = 0,
    *,
    t: int,
    kind: str = "rnn",
    nonlinearity: str = "tanh",
    init: str = "default",
    gain: float = 1.0,
    gate_bias: float | None = None,
    expected: str = "",
    note: str = "",
) -> ZooCase:
    _seed(seed)
    model = SeqRegressor(kind, nonlinearity)
    rnn = model.rnn
    with torch.no_grad():
        if init == "orthogonal":
            nn.init.orthogonal_(rnn.weight_hh_l0, gain=gain)
        elif init == "identity":
            _irnn_(rnn, gain)
        elif init == "scaled":
            rnn.weight_hh_l0.mul_(gain)
    if gate_bias is not None:
        set_forget_bias(rnn, gate_bias)
    return ZooCase(
        name,
        model,
        randn(16, t, 8, seed=10),
        randn(16, 1, seed=11),
        None,
        1,
        None,
        "rnn",
        "zoo",
        "rnn",
        "rnn",
        ("rnn",),
        ("rnn",),
        partial(
            seq_rnn,
            name + "/control",
            seed + 1,
            t=t,
            kind=kind,
            nonlinearity=nonlinearity,
            init=init,
            gain=gain,
            gate_bias=gate_bias,
        ),
        time_module="rnn",
        time_task=float_signal_task(t, 8, 1),
        time_control=partial(_seq_time_control, t, kind),
        expected=expected,
        note=note or "one recurrent layer: the depth axis has first = last hidden layer",
    )


class DictGRU(nn.Module):
    """HF-style batch: model(input_ids=..., attention_mask=...) -> {'logits': ...}."""

    def __init__(self, vocab: int = 100, d: int = 32, hidden: int = 32, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids, attention_mask):
        h, _ = self.rnn(self.emb(input_ids) * attention_mask.unsqueeze(-1))
        last = attention_mask.sum(1).long() - 1
        return {"logits": self.head(h[torch.arange(h.shape[0]), last])}


def _mask_batch(x: torch.Tensor) -> dict:
    return {"input_ids": x, "attention_mask": torch.ones_like(x, dtype=torch.float32)}


def dict_gru(name: str, seed: int = 0, *, gate_bias: float | None = None) -> ZooCase:
    _seed(seed)
    model = DictGRU()
    if gate_bias is not None:
        set_forget_bias(model.rnn, gate_bias)
    ids = tokens(B, 12, 100, seed=10)
    mask = torch.ones(B, 12)
    mask[: B // 2, 9:] = 0.0  # half the batch is padded after 9 tokens
    return ZooCase(
        name,
        model,
        {"input_ids": ids, "attention_mask": mask},
        classes(B, 4, seed=11),
        ce_of,
        1,
        "input_ids",
        "dict-batch",
        "zoo",
        "emb",
        "rnn",
        ("emb",),
        ("rnn",),
        partial(dict_gru, name + "/control", seed + 1, gate_bias=gate_bias),
        time_module="rnn",
        time_task=token_signal_task(12, 4, 100, "emb", wrap=_mask_batch),
        time_control=partial(dict_gru, name + "/time_control", 1, gate_bias=5.0),
        note="dict batch (input_ids, attention_mask) and dict output {'logits'}",
    )


# ========================================================================= transformers (zoo)
class TorchEncoder(nn.Module):
    def __init__(self, layers: int, norm_first: bool, vocab: int = 100, d: int = 32, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, 16, d) * 0.02)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True, norm_first=norm_first),
            layers,
            enable_nested_tensor=False,
            norm=nn.LayerNorm(d) if norm_first else None,
        )
        self.head = nn.Linear(d, classes)

    def forward(self, tok):
        h = self.emb(tok) + self.pos[:, : tok.shape[1]]
        return self.head(self.encoder(h).mean(1))


def torch_encoder(name: str, seed: int = 0, *, layers: int, norm_first: bool, expected: str = "") -> ZooCase:
    _seed(seed)
    model = TorchEncoder(layers, norm_first)
    first = "emb" if layers == 1 else "encoder.layers.0"
    last = f"encoder.layers.{layers - 1}"
    return ZooCase(
        name,
        model,
        tokens(B, 16, 100, seed=10),
        classes(B, 4, seed=11),
        None,
        None,
        None,
        "transformer",
        "zoo",
        first,
        last,
        ("emb",),
        (last,),
        partial(torch_encoder, name + "/control", seed + 1, layers=layers, norm_first=True),
        expected=expected,
    )


class HandBlock(nn.Module):
    """Pre-LN or post-LN block written by hand with nn.MultiheadAttention and a GELU MLP."""

    def __init__(self, d: int, pre_norm: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.att = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        if self.pre_norm:
            h = self.ln1(x)
            x = x + self.att(h, h, h, need_weights=False)[0]
            return x + self.ff(self.ln2(x))
        x = self.ln1(x + self.att(x, x, x, need_weights=False)[0])
        return self.ln2(x + self.ff(x))


class HandEncoder(nn.Module):
    def __init__(self, depth: int, pre_norm: bool, d: int = 32):
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.blocks = nn.ModuleList([HandBlock(d, pre_norm) for _ in range(depth)])
        self.final = nn.LayerNorm(d) if pre_norm else nn.Identity()
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return self.head(self.final(h).mean(1))


def hand_encoder(name: str, seed: int = 0, *, depth: int, pre_norm: bool, expected: str = "") -> ZooCase:
    _seed(seed)
    model = HandEncoder(depth, pre_norm)
    return ZooCase(
        name,
        model,
        randn(B, 10, 8, seed=10),
        classes(B, 3, seed=11),
        None,
        None,
        None,
        "transformer",
        "zoo",
        "blocks.0",
        f"blocks.{depth - 1}",
        ("inp",),
        (f"blocks.{depth - 1}",),
        partial(hand_encoder, name + "/control", seed + 1, depth=depth, pre_norm=True),
        expected=expected,
    )


class DictTransformer(nn.Module):
    """model(input_ids=..., attention_mask=...) -> (logits, pooled): a tuple output and a dict batch."""

    def __init__(self, vocab: int = 100, d: int = 32, layers: int = 2, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True, norm_first=True),
            layers,
            enable_nested_tensor=False,
        )
        self.head = nn.Linear(d, classes)

    def forward(self, input_ids, attention_mask):
        h = self.encoder(self.emb(input_ids), src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1)
        return self.head(pooled), pooled


def dict_transformer(name: str, seed: int = 0) -> ZooCase:
    _seed(seed)
    ids = tokens(B, 12, 100, seed=10)
    mask = torch.ones(B, 12, dtype=torch.long)
    mask[: B // 2, 9:] = 0
    return ZooCase(
        name,
        DictTransformer(),
        {"input_ids": ids, "attention_mask": mask},
        classes(B, 4, seed=11),
        ce_of,
        None,
        None,
        "dict-batch",
        "zoo",
        "encoder.layers.0",
        "encoder.layers.1",
        ("emb",),
        ("encoder.layers.1",),
        partial(dict_transformer, name + "/control", seed + 1),
        expected="healthy",
        note="dict batch with padding mask; forward returns (logits, pooled)",
    )


# ================================================ transformers (zoo): the residual stream at depth
# Token classification: 17 tokens, sequences of 12, batch 64, width 32, 4 heads, MLP ratio 4,
# learned token + position embeddings, not causal, a linear head on the LAST position. The target
# is the first token mod 4, so the last position must read the first through attention.
TFM_VOCAB, TFM_T, TFM_BATCH, TFM_D, TFM_HEADS, TFM_CLASSES = 17, 12, 64, 32, 4, 4


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (separate q, k, v, out projections), not causal."""

    def __init__(self, d: int = TFM_D, heads: int = TFM_HEADS):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape

        def split(z):
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, d))


class StreamBlock(nn.Module):
    """A transformer block written by hand; ``mode`` says how it keeps the residual stream:

    - ``pre``: x + attn(ln1(x)), then x + mlp(ln2(x)) (pre-LN);
    - ``none``: x + attn(x), then x + mlp(x) (no layer norm, plain residual);
    - ``deepnorm``: ln1(alpha x + attn(x)), then ln2(alpha x + mlp(x)) (DeepNorm, Wang et al. 2022:
      post-LN with the residual scaled by alpha = (2N)^(1/4); v, out and the MLP weights are
      Xavier-normal with gain beta = (8N)^(-1/4), q and k Xavier-normal with gain 1, biases 0);
    - ``rezero``: x + a attn(x), then x + a mlp(x), one scalar a per block initialised to 0
      (ReZero, Bachlechner et al. 2020; no norm);
    - ``attn_noskip``: attn(x) alone: no skip, no MLP, no norm (a pure attention stack, Dong et al.
      2021);
    - ``attn_pre``: x + attn(ln1(x)), no MLP (its matched control: skip and pre-LN added back).
    """

    MODES = ("pre", "none", "deepnorm", "rezero", "attn_noskip", "attn_pre")

    def __init__(self, mode: str, depth: int, d: int = TFM_D, ratio: int = 4):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.attn = SelfAttention(d)
        if not mode.startswith("attn_"):
            self.mlp = nn.Sequential(nn.Linear(d, ratio * d), nn.GELU(), nn.Linear(ratio * d, d))
        if mode in ("pre", "deepnorm", "attn_pre"):
            self.ln1 = nn.LayerNorm(d)
        if mode in ("pre", "deepnorm"):
            self.ln2 = nn.LayerNorm(d)
        self.alpha = (2 * depth) ** 0.25 if mode == "deepnorm" else 1.0
        if mode == "deepnorm":
            beta = (8 * depth) ** -0.25
            for lin, gain in (
                (self.attn.q, 1.0),
                (self.attn.k, 1.0),
                (self.attn.v, beta),
                (self.attn.out, beta),
                (self.mlp[0], beta),
                (self.mlp[2], beta),
            ):
                nn.init.xavier_normal_(lin.weight, gain=gain)
                nn.init.zeros_(lin.bias)
        if mode == "rezero":
            self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        m = self.mode
        if m == "pre":
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        if m == "none":
            x = x + self.attn(x)
            return x + self.mlp(x)
        if m == "deepnorm":
            x = self.ln1(self.alpha * x + self.attn(x))
            return self.ln2(self.alpha * x + self.mlp(x))
        if m == "rezero":
            x = x + self.gate * self.attn(x)
            return x + self.gate * self.mlp(x)
        if m == "attn_noskip":
            return self.attn(x)
        return x + self.attn(self.ln1(x))  # attn_pre


class TokenTransformer(nn.Module):
    """Token + position embeddings -> blocks -> (final LayerNorm) -> head on the last position."""

    def __init__(self, blocks: list[nn.Module], final_norm: bool, d: int = TFM_D):
        super().__init__()
        self.tok = nn.Embedding(TFM_VOCAB, d)
        self.pos = nn.Embedding(TFM_T, d)
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.LayerNorm(d) if final_norm else nn.Identity()
        self.head = nn.Linear(d, TFM_CLASSES)

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.final(h)[:, -1])


# the matched healthy control of each kind: pre-LN of the same depth, written the same way
_TFM_CONTROL = {
    "torch_post": "torch_pre",
    "torch_pre": "torch_pre",
    "pre": "pre",
    "none": "pre",
    "deepnorm": "pre",
    "rezero": "pre",
    "attn_noskip": "attn_pre",
    "attn_pre": "attn_pre",
}


def _tfm_blocks(kind: str, depth: int) -> list[nn.Module]:
    if kind.startswith("torch_"):
        # built one by one: nn.TransformerEncoder(layer, N) deep-copies ONE layer, so every block
        # would start with the same weights
        return [
            nn.TransformerEncoderLayer(
                TFM_D,
                TFM_HEADS,
                4 * TFM_D,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=kind == "torch_pre",
            )
            for _ in range(depth)
        ]
    return [StreamBlock(kind, depth) for _ in range(depth)]


def tfm_stream(
    name: str, seed: int = 0, *, kind: str, depth: int, expected: str = "", note: str = ""
) -> ZooCase:
    """A ``TokenTransformer`` of ``depth`` blocks of ``kind`` (see ``_TFM_CONTROL``). Measured at the
    residual stream after the first block and after the last (before the final norm, if any, and
    the head); trained: the first block's parameters against the last block's."""
    if kind not in _TFM_CONTROL:
        raise ValueError(f"kind must be one of {sorted(_TFM_CONTROL)}, got {kind!r}")
    _seed(seed)
    model = TokenTransformer(_tfm_blocks(kind, depth), final_norm=kind in ("torch_pre", "pre", "attn_pre"))
    x = tokens(TFM_BATCH, TFM_T, TFM_VOCAB, seed=10)
    last = f"blocks.{depth - 1}"
    return ZooCase(
        name,
        model,
        x,
        x[:, 0] % TFM_CLASSES,
        None,
        None,
        None,
        "transformer",
        "zoo",
        "blocks.0",
        last,
        ("blocks.0",),
        (last,),
        partial(tfm_stream, name + "/control", seed + 1, kind=_TFM_CONTROL[kind], depth=depth),
        expected=expected,
        note=note,
    )


# ============================================================================= repro: models
_REPRO_CASES: dict | None = None


def _rc():
    """repro_cases.py, a verbatim copy that does `import mymodels as M`: that name is pointed at
    our copy repro_mymodels first."""
    if sys.modules.setdefault("mymodels", repro_mymodels) is not repro_mymodels:
        raise ImportError("another module named 'mymodels' is already imported")
    return importlib.import_module(f"{__package__}.repro_cases")


def _repro(key: str) -> tuple:
    """(factory, x, y, vglib_loss, train_loss) of repro/cases.py's make_cases()[key]."""
    global _REPRO_CASES
    if _REPRO_CASES is None:
        state = torch.random.get_rng_state()
        _REPRO_CASES = _rc().make_cases()  # seeds torch; restore the global RNG after
        torch.random.set_rng_state(state)
    return _REPRO_CASES[key]


def _repro_case(
    name: str,
    key: str,
    cls: str,
    seed: int,
    first: str,
    last: str,
    fp: tuple,
    lp: tuple,
    control: Callable[[], ZooCase] | None,
    family: str,
    *,
    factory: Callable | None = None,
    tensor_output: bool = True,
    **kw,
) -> ZooCase:
    fac, x, y, vloss, tloss = _repro(key)
    _seed(seed)
    model = (factory or fac)()
    loss_fn = vloss if vloss is not None else (None if tensor_output else tloss)
    return ZooCase(
        name,
        model,
        x,
        y,
        loss_fn,
        kw.pop("time_dim", None),
        None,
        family,
        f"repro:mymodels.py:{cls}",
        first,
        last,
        fp,
        lp,
        control,
        **kw,
    )


def _r(
    key, cls, first, last, fp, lp, family, *, control_key=None, control_factory=None, control_spec=None, **kw
):
    """A builder for a repro/cases.py entry; the control is the same entry (or control_key's entry,
    or control_factory) with seed 1."""

    tensor_output = kw.pop("tensor_output", True)

    def build(name: str, seed: int = 0) -> ZooCase:
        if control_key or control_factory:
            cf, cl, cfp, clp = control_spec or (first, last, fp, lp)
            ctrl = partial(
                _repro_case,
                name + "/control",
                control_key or key,
                cls,
                seed + 1,
                cf,
                cl,
                cfp,
                clp,
                None,
                family,
                factory=control_factory,
                tensor_output=tensor_output,
            )
        else:
            ctrl = partial(build, name + "/control", seed + 1)
        return _repro_case(
            name, key, cls, seed, first, last, fp, lp, ctrl, family, tensor_output=tensor_output, **kw
        )

    return build


def _lm_time(name: str, kind: str, seed: int, tie: bool = False, layers: int = 2) -> ZooCase:
    """Time control for the repro LMs: the same RNNLM with forget/update-gate bias 5."""
    _seed(seed)
    model = M.RNNLM(kind=kind, tie=tie, layers=layers)
    set_forget_bias(model.rnn, 5.0)
    x = _rc().tokens()
    return ZooCase(
        name,
        model,
        x,
        _rc().tokens(seed=3),
        M.lm_loss,
        1,
        None,
        "rnn-lm",
        "zoo",
        "emb",
        "rnn",
        ("emb",),
        ("rnn",),
    )


def _last_token_time(name: str, seed: int) -> ZooCase:
    _seed(seed)
    model = M.LastTokenRNN(kind="gru")
    set_forget_bias(model.rnn, 5.0)
    return ZooCase(
        name,
        model,
        _rc().tokens(),
        _rc().classes(16, 5),
        None,
        1,
        None,
        "rnn",
        "zoo",
        "emb",
        "rnn",
        ("emb",),
        ("rnn",),
    )


def _deep_relu_control(depth: int):
    """DeepReLU (He, gain 1) of the same depth as the healthy control of the deep sigmoid/tanh MLPs."""

    def build(name: str, seed: int) -> ZooCase:
        _seed(seed)
        return ZooCase(
            name,
            M.DeepReLU(depth=depth, gain=1.0),
            _rc().randn(16, 16),
            _rc().randn(16, 3, seed=2),
            None,
            None,
            None,
            "mlp",
            "repro:mymodels.py:DeepReLU",
            "act#0",
            "act#-1",
            ("layers.0",),
            (f"layers.{depth - 1}",),
            None,
        )

    return build


def _deep(
    depth: int,
    std: float = 0.05,
    act: type = nn.Sigmoid,
    relu: bool = False,
    gain: float = 1.0,
    expected: str = "",
):
    """DeepSigmoid / DeepReLU with practitioner's §3 arguments, on cases.py's MLP inputs."""

    def build(name: str, seed: int = 0) -> ZooCase:
        _seed(seed)
        if relu:
            model, cls, first, last = M.DeepReLU(depth=depth, gain=gain), "DeepReLU", "act#0", "act#-1"
        else:
            model, cls = M.DeepSigmoid(depth=depth, std=std, act=act), "DeepSigmoid"
            first, last = "acts.0", f"acts.{depth - 1}"
        ctrl = partial(_deep_relu_control(depth), name + "/control", seed + 1)
        return ZooCase(
            name,
            model,
            _rc().randn(16, 16),
            _rc().randn(16, 3, seed=2),
            None,
            None,
            None,
            "mlp",
            f"repro:mymodels.py:{cls}",
            first,
            last,
            ("layers.0",),
            (f"layers.{depth - 1}",),
            ctrl,
            expected=expected,
            note="review section 3: expected " + expected,
        )

    return build


def _plain_cnn_view(name: str, seed: int = 0) -> ZooCase:
    _seed(seed)
    return ZooCase(
        name,
        M.PlainCNNView(),
        randn(16, 3, 8, 8, seed=10),
        classes(16, 4, seed=11),
        None,
        None,
        None,
        "cnn",
        "repro:mymodels.py:PlainCNNView",
        "c1",
        "c2",
        ("c1",),
        ("c2",),
        partial(_plain_cnn_view, name + "/control", seed + 1),
        note="functional F.relu: dL/dh is read at the conv outputs (pre-activation)",
    )


def _resnet_zero(name: str, seed: int = 0) -> ZooCase:
    _, x, y, _, _ = _repro("ResNet-BN (from scratch)")
    _seed(seed)
    return ZooCase(
        name,
        M.ResNet(zero_init_last_bn=True),
        x,
        y,
        None,
        None,
        None,
        "cnn",
        "repro:mymodels.py:ResNet",
        "layers.0",
        "layers",
        ("stem",),
        ("layers.5",),
        partial(_resnet_zero_control, name + "/control", seed + 1),
        expected="healthy",
        note="torchvision-style zero_init_residual (bn2.weight = 0 in every BasicBlock); B4",
    )


def _resnet_zero_control(name: str, seed: int) -> ZooCase:
    _, x, y, _, _ = _repro("ResNet-BN (from scratch)")
    _seed(seed)
    return ZooCase(
        name,
        M.ResNet(),
        x,
        y,
        None,
        None,
        None,
        "cnn",
        "repro:mymodels.py:ResNet",
        "layers.0",
        "layers",
        ("stem",),
        ("layers.5",),
    )


def _lm(kind, tie=False, layers=2):
    key = {
        ("lstm", False): "LSTM LM (Embedding, (B,T,V) logits)",
        ("gru", False): "GRU LM (Embedding, (B,T,V) logits)",
        ("lstm", True): "weight-tied LSTM LM (out.weight = emb.weight)",
    }[(kind, tie)]
    return _r(
        key,
        "RNNLM",
        "emb",
        "rnn",
        ("emb",),
        ("rnn",),
        "rnn-lm",
        time_dim=1,
        time_module="rnn",
        time_task=token_signal_task(12, 4, M.VOCAB, "emb", lm=True),
        time_control=partial(_lm_time, "lm/time_control", kind, 1, tie, layers),
        note="per-position LM loss: x_1 gets the gradient of its own step's loss, so the measurement "
        "(case loss) sees no decay in time, while the first/last-signal task isolates the long-range "
        "part",
    )


# ============================================================================= repro: bug scripts
def _bug_src(file: str, cls: str) -> str:
    return f"repro:{file}:{cls}"


def bug_transformer_enc(name: str, seed: int = 0, *, layers: int = 1) -> ZooCase:
    g = _gen(0)
    x = torch.randint(0, 1000, (32, 16), generator=g)
    y = torch.randint(0, 5, (32,), generator=g)
    _seed(seed)
    model = bug_transformer.Enc(layers=layers)
    first = "emb" if layers == 1 else "enc.layers.0"
    return ZooCase(
        name,
        model,
        x,
        y,
        None,
        None,
        None,
        "transformer",
        _bug_src("bug_transformer_order.py", "Enc"),
        first,
        f"enc.layers.{layers - 1}",
        ("emb",),
        (f"enc.layers.{layers - 1}",),
        partial(bug_transformer_enc, name + "/control", seed + 1, layers=layers),
        expected="healthy" if layers == 1 else "",
        note="B1: practitioner says diagnose calls the 1-layer encoder VANISHING" if layers == 1 else "",
    )


def bug_root_temperature(name: str, seed: int = 0, *, temperature: bool = True) -> ZooCase:
    g = _gen(0)
    x, y = torch.randn(32, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    _seed(seed)
    model = bug_root.DeepSigmoid(temperature)

    def control(cname: str = name + "/control") -> ZooCase:
        _seed(seed + 1)
        return ZooCase(
            cname,
            M.DeepReLU(depth=20, gain=1.0),
            x,
            y,
            None,
            None,
            None,
            "mlp",
            "repro:mymodels.py:DeepReLU",
            "act#0",
            "act#-1",
            ("layers.0",),
            ("layers.19",),
        )

    return ZooCase(
        name,
        model,
        x,
        y,
        None,
        None,
        None,
        "mlp",
        _bug_src("bug_root_param_first.py", "DeepSigmoid"),
        "layers.0",
        "layers.19",
        ("layers.0",),
        ("layers.19",),
        control,
        expected="vanishing",
        note=(
            "B2: root-level temperature parameter on a deep sigmoid MLP; " if temperature else "B2 control: "
        )
        + "functional sigmoid, so dL/dh is read at the Linear outputs (pre-activation)",
    )


def bug_layerscale(name: str, seed: int = 0, *, init: float = 1e-6) -> ZooCase:
    g = _gen(0)
    x, y = torch.randn(32, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    _seed(seed)
    return ZooCase(
        name,
        bug_ls.Net(init),
        x,
        y,
        None,
        None,
        None,
        "layerscale",
        _bug_src("bug_layerscale_called_exploding.py", "Net"),
        "blocks.0",
        "blocks",
        ("stem",),
        ("blocks.5",),
        partial(bug_layerscale_ctrl, name + "/control", seed + 1, x=x, y=y),
        expected="healthy",
        note=f"B3: LayerScale gamma = {init:g}",
    )


def bug_layerscale_ctrl(name: str, seed: int, *, x, y) -> ZooCase:
    _seed(seed)
    return ZooCase(
        name,
        bug_ls.Net(0.1),
        x,
        y,
        None,
        None,
        None,
        "layerscale",
        _bug_src("bug_layerscale_called_exploding.py", "Net"),
        "blocks.0",
        "blocks",
        ("stem",),
        ("blocks.5",),
    )


def _zero_init_resnet_model() -> nn.Module:
    Block = bug_zero_init.Block
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        Block(8),
        Block(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )  # as in the script


def bug_zero_init_resnet(name: str, seed: int = 0, *, zero: bool = True) -> ZooCase:
    x, y = _after_model(
        _zero_init_resnet_model, lambda: torch.randn(16, 3, 8, 8), lambda: torch.randint(0, 10, (16,))
    )
    _seed(seed)
    model = _zero_init_resnet_model()
    if not zero:
        for b in (model[1], model[2]):
            nn.init.ones_(b.bn2.weight)
    return ZooCase(
        name,
        model,
        x,
        y,
        None,
        None,
        None,
        "cnn",
        _bug_src("bug_zero_init_called_vanishing.py", "Block"),
        "1",
        "2",
        ("0",),
        ("2",),
        partial(bug_zero_init_resnet, name + "/control", seed + 1, zero=False),
        expected="healthy",
        note="B4: zero_init_residual (bn2.weight = 0); the control has bn2.weight = 1" if zero else "",
    )


def bug_lora(name: str, seed: int = 0) -> ZooCase:
    g = _gen(0)
    x, y = torch.randn(16, 16, generator=g), torch.randint(0, 3, (16,), generator=g)
    _seed(seed)
    return ZooCase(
        name,
        bug_zero_init.LoRAModel(),
        x,
        y,
        None,
        None,
        None,
        "frozen",
        _bug_src("bug_zero_init_called_vanishing.py", "LoRAModel"),
        "l1",
        "l2",
        ("l1",),
        ("l2",),
        partial(bug_lora, name + "/control", seed + 1),
        expected="healthy",
        note="LoRA adapters (B = 0) on frozen base layers; functional relu: dL/dh at the layer outputs",
    )


def bug_embedding_lm(name: str, seed: int = 0, *, vocab: int, forget_bias: float | None = None) -> ZooCase:
    g = _gen(0)
    x = torch.randint(0, 100, (32, 20), generator=g)  # the same 100 tokens at every vocab size
    y = torch.randint(0, 5, (32,), generator=g)
    _seed(seed)
    model = bug_embedding.LM(vocab)
    if forget_bias is not None:
        set_forget_bias(model.rnn, forget_bias)
    return ZooCase(
        name,
        model,
        x,
        y,
        None,
        1,
        None,
        "rnn",
        _bug_src("bug_embedding_verdict.py", "LM"),
        "emb",
        "rnn",
        ("emb",),
        ("rnn",),
        partial(bug_embedding_lm, name + "/control", seed + 1, vocab=vocab, forget_bias=forget_bias),
        time_module="rnn",
        time_task=token_signal_task(20, 4, 100, "emb"),
        time_control=partial(bug_embedding_lm, name + "/time_control", 1, vocab=vocab, forget_bias=5.0),
        note=f"B5: vocabulary {vocab}, only tokens < 100 used; Embedding movement counts the used rows; "
        "the review expects the same label at every vocabulary size",
    )


def _after_model(factory: Callable[[], nn.Module], *draws: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    """The script's data: torch.manual_seed(0), build the model, then draw the data from the global
    RNG (so the seed-0 model and the data are exactly the script's); the RNG is restored after."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    factory()
    out = [d() for d in draws]
    torch.random.set_rng_state(state)
    return out


def bug_rnn_net(name: str, seed: int = 0, *, gated: bool = False) -> ZooCase:
    x, y = _after_model(bug_rnn.Net, lambda: torch.randn(16, 100, 8), lambda: torch.randn(16, 1))
    _seed(seed)
    model = bug_rnn.Net()
    if gated:  # healthy-in-time control: the same Net with an LSTM of forget-gate bias 5 as its rnn
        model.rnn = nn.LSTM(8, 32, batch_first=True)
        set_forget_bias(model.rnn, 5.0)
    return ZooCase(
        name,
        model,
        x,
        y,
        None,
        1,
        None,
        "rnn",
        _bug_src("bug_rnn_time_vanishing_missed.py", "Net"),
        "rnn",
        "rnn",
        ("rnn",),
        ("rnn",),
        partial(bug_rnn_net, name + "/control", seed + 1),
        time_module="rnn",
        time_task=float_signal_task(100, 8, 1),
        time_control=partial(bug_rnn_net, name + "/time_control", 1, gated=True),
        expected="vanishing",
        note="B6: nn.RNN tanh, T = 100; one recurrent layer, so the depth axis is trivial",
    )


def bug_rotary(name: str, seed: int = 0, *, grow: bool = False) -> ZooCase:
    g = _gen(0)
    x, y = torch.randn(8, 10, 16, generator=g), torch.randint(0, 3, (8,), generator=g)
    _seed(seed)
    return ZooCase(
        name,
        bug_buffer.Rotary(grow),
        x,
        y,
        None,
        None,
        None,
        "buffer",
        _bug_src("bug_buffer_created_in_forward.py", "Rotary"),
        "q",
        "q",
        ("q",),
        ("q",),
        partial(bug_rotary, name + "/control", seed + 1, grow=grow),
        expected="healthy",
        note="B12: buffer " + ("resized" if grow else "created") + " in forward; one hidden layer (q)",
    )


def bug_tuple_net(name: str, seed: int = 0, *, as_dict: bool = False) -> ZooCase:
    g = _gen(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
    _seed(seed)
    model = bug_tuple.DictNet() if as_dict else bug_tuple.Net()
    return ZooCase(
        name,
        model,
        x,
        y,
        ce_of,
        None,
        None,
        "output-structure",
        _bug_src("bug_tuple_output_profile.py", "DictNet" if as_dict else "Net"),
        "a",
        "b",
        ("a",),
        ("b",),
        partial(bug_tuple_net, name + "/control", seed + 1, as_dict=as_dict),
        expected="healthy",
        note="B13: forward returns a "
        + ("dict" if as_dict else "tuple")
        + "; functional relu: dL/dh at the Linear outputs",
    )


def bug_shared_act(name: str, seed: int = 0) -> ZooCase:
    x, y = _after_model(bug_shared.Net, lambda: torch.randn(64, 8), lambda: torch.randn(64, 1))
    _seed(seed)
    return ZooCase(
        name,
        bug_shared.Net(),
        x,
        y,
        None,
        None,
        None,
        "shared",
        _bug_src("bug_shared_activation.py", "Net"),
        "act#0",
        "act#1",
        ("l1",),
        ("l2",),
        partial(bug_shared_act, name + "/control", seed + 1),
        expected="healthy",
        note="B8: one ReLU module used twice (x10 between the calls)",
    )


def _parametrized_model() -> nn.Module:  # the script's model, verbatim
    return nn.Sequential(
        P.weight_norm(nn.Linear(16, 32)),
        nn.ReLU(),
        P.spectral_norm(nn.Linear(32, 32)),
        nn.ReLU(),
        P.orthogonal(nn.Linear(32, 32)),
        nn.ReLU(),
        nn.Linear(32, 3),
    )


def bug_parametrized(name: str, seed: int = 0, *, plain: bool = False) -> ZooCase:
    x, y = _after_model(_parametrized_model, lambda: torch.randn(8, 16), lambda: torch.randint(0, 3, (8,)))
    _seed(seed)
    if plain:
        model = nn.Sequential(
            nn.Linear(16, 32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.ReLU(),
            nn.Linear(32, 3),
        )
    else:
        model = _parametrized_model()
    return ZooCase(
        name,
        model,
        x,
        y,
        None,
        None,
        None,
        "parametrized",
        _bug_src("bug_parametrized_zero_grad.py", "nn.Sequential"),
        "1",
        "5",
        ("0",),
        ("4",),
        partial(bug_parametrized, name + "/control", seed + 1, plain=True),
        expected="healthy",
        note="B7: weight_norm / spectral_norm / orthogonal parametrizations; control: plain Linear",
    )


# ================================================================================= registry
_CASE_BUILDERS: dict[str, Callable[..., ZooCase]] = {}


def _add(name: str, builder: Callable[..., ZooCase], **kw) -> None:
    if name in _CASE_BUILDERS:
        raise ValueError(f"duplicate zoo case {name}")
    _CASE_BUILDERS[name] = partial(builder, name, **kw)


# --- repro: mymodels.py with cases.py's constructor arguments and inputs
_add(
    "repro_tfm_postnorm_2l",
    _r(
        "transformer post-norm (nn.TransformerEncoder, tokens)",
        "TorchTransformerClassifier",
        "encoder.layers.0",
        "encoder.layers.1",
        ("emb",),
        ("encoder.layers.1",),
        "transformer",
        control_key="transformer pre-norm (nn.TransformerEncoder, tokens)",
    ),
)
_add(
    "repro_tfm_prenorm_2l",
    _r(
        "transformer pre-norm (nn.TransformerEncoder, tokens)",
        "TorchTransformerClassifier",
        "encoder.layers.0",
        "encoder.layers.1",
        ("emb",),
        ("encoder.layers.1",),
        "transformer",
    ),
)
_add(
    "repro_hand_attention_prenorm",
    _r(
        "hand attention pre-norm",
        "HandTransformer",
        "blocks.0",
        "blocks.1",
        ("inp",),
        ("blocks.1",),
        "transformer",
    ),
)
_add(
    "repro_hand_attention_postnorm",
    _r(
        "hand attention post-norm",
        "HandTransformer",
        "blocks.0",
        "blocks.1",
        ("inp",),
        ("blocks.1",),
        "transformer",
        control_key="hand attention pre-norm",
    ),
)
_add(
    "repro_resnet_bn",
    _r(
        "ResNet-BN (from scratch)",
        "ResNet",
        "layers.0",
        "layers",
        ("stem",),
        ("layers.5",),
        "cnn",
        expected="healthy",
    ),
)
_add("repro_resnet_zero_init_residual", _resnet_zero)
_add("repro_lstm_lm", _lm("lstm"))
_add("repro_gru_lm", _lm("gru"))
_add("repro_tied_lstm_lm", _lm("lstm", tie=True, layers=1))
_add(
    "repro_gru_last_token",
    _r(
        "GRU last-token classifier",
        "LastTokenRNN",
        "emb",
        "rnn",
        ("emb",),
        ("rnn",),
        "rnn",
        time_dim=1,
        time_module="rnn",
        time_task=token_signal_task(12, 4, M.VOCAB, "emb"),
        time_control=partial(_last_token_time, "last_token/time_control", 1),
    ),
)
_add(
    "repro_seq_in_modulelist",
    _r(
        "Sequential in ModuleList (residual tanh)",
        "SeqInModuleList",
        "stages.1:in",
        "head:in",
        ("stages.0",),
        ("stages.3",),
        "residual",
    ),
)
_add(
    "repro_shared_twice",
    _r("shared layer used twice", "SharedTwice", "act#0", "act#2", ("inp",), ("shared",), "shared"),
)
_add(
    "repro_tied_autoencoder",
    _r(
        "tied autoencoder (F.linear(h, enc.weight.T))",
        "TiedMLP",
        "act#0",
        "act#1",
        ("enc",),
        ("mid",),
        "shared",
    ),
)
_add(
    "repro_frozen_backbone",
    _r(
        "frozen backbone",
        "Frozen",
        "mid",
        "mid",
        ("mid",),
        ("mid",),
        "frozen",
        note="frozen backbone: the first trainable layer (mid) is also the last hidden one",
    ),
)
_add(
    "repro_tuple_output",
    _r(
        "tuple output (logits, aux)",
        "TupleOut",
        "act#0",
        "act#1",
        ("l1",),
        ("l2",),
        "output-structure",
        tensor_output=False,
    ),
)
_add(
    "repro_dict_output",
    _r("dict output, loss_fn given", "DictOut", "act#0", "act#1", ("l1",), ("l2",), "output-structure"),
)
_add(
    "repro_eval_mode_bn_dropout",
    _r(
        "eval mode (BN + Dropout)",
        "EvalModeNet",
        "net.2",
        "net.6",
        ("net.0", "net.1"),
        ("net.4", "net.5"),
        "cnn",
    ),
)
_add(
    "repro_train_mode_bn_dropout",
    _r(
        "train mode (BN + Dropout)",
        "EvalModeNet",
        "net.2",
        "net.6",
        ("net.0", "net.1"),
        ("net.4", "net.5"),
        "cnn",
        note="dropout active: seeded before every forward",
    ),
)
_add("repro_conv1d", _r("Conv1d net", "Conv1dNet", "net.1", "net.5", ("net.0",), ("net.4",), "cnn"))
_add("repro_plain_cnn_view", _plain_cnn_view)
_add("repro_deep_sigmoid_d20", _deep(20, expected="vanishing"))
_add("repro_deep_sigmoid_d8", _deep(8, expected="vanishing"))
_add("repro_deep_tanh_d30", _deep(30, act=nn.Tanh, expected="vanishing"))
_add("repro_deep_relu_he", _deep(20, relu=True, gain=1.0, expected="healthy"))
_add("repro_deep_relu_1p5he", _deep(20, relu=True, gain=1.5, expected="exploding"))
_add("repro_deep_relu_0p5he", _deep(20, relu=True, gain=0.5, expected="vanishing"))

# --- repro: classes from the bug scripts, with the scripts' arguments and inputs
_add("bug_transformer_1l", bug_transformer_enc, layers=1)
_add("bug_transformer_2l", bug_transformer_enc, layers=2)
_add("bug_root_temperature", bug_root_temperature, temperature=True)
_add("bug_root_no_temperature", bug_root_temperature, temperature=False)
_add("bug_layerscale_1e-6", bug_layerscale, init=1e-6)
_add("bug_layerscale_0.1", bug_layerscale, init=0.1)
_add("bug_zero_init_resnet", bug_zero_init_resnet)
_add("bug_lora_zero_b", bug_lora)
_add("bug_lstm_vocab100", bug_embedding_lm, vocab=100)
_add("bug_lstm_vocab10k", bug_embedding_lm, vocab=10_000)
_add("bug_lstm_vocab50k", bug_embedding_lm, vocab=50_000)
_add("bug_rnn_T100", bug_rnn_net)
_add("bug_rotary_buffer_created", bug_rotary, grow=False)
_add("bug_rotary_buffer_resized", bug_rotary, grow=True)
_add("bug_tuple_output", bug_tuple_net)
_add("bug_dict_output", bug_tuple_net, as_dict=True)
_add("bug_shared_activation", bug_shared_act)
_add("bug_parametrized", bug_parametrized)

# --- zoo: MLPs (depth 10, width 64 unless named)
_add("mlp_sigmoid_std0.05", mlp, act="sigmoid", init="std0.05", expected="vanishing")
_add("mlp_sigmoid_xavier", mlp, act="sigmoid", init="xavier", expected="vanishing")
_add("mlp_sigmoid_xavier_nobias", mlp, act="sigmoid", init="xavier", bias=False, expected="vanishing")
_add("mlp_tanh_std0.05", mlp, act="tanh", init="std0.05", expected="vanishing")
_add("mlp_tanh_xavier", mlp, act="tanh", init="xavier", expected="healthy")
_add("mlp_tanh_xavier_x4", mlp, act="tanh", init="xavier", scale=4.0, expected="exploding")
_add("mlp_tanh_d20_xavier_x4", mlp, depth=20, act="tanh", init="xavier", scale=4.0, expected="exploding")
_add("mlp_relu_default", mlp, act="relu", init="default")
_add("mlp_relu_he", mlp, act="relu", init="he", expected="healthy")
_add("mlp_relu_he_nobias", mlp, act="relu", init="he", bias=False, expected="healthy")
_add("mlp_relu_xavier", mlp, act="relu", init="xavier")
_add(
    "mlp_relu_d20_he_x2_nobias",
    mlp,
    depth=20,
    act="relu",
    init="he",
    scale=2.0,
    bias=False,
    expected="exploding",
)
_add(
    "mlp_relu_d20_he_x0.5_nobias",
    mlp,
    depth=20,
    act="relu",
    init="he",
    scale=0.5,
    bias=False,
    expected="vanishing",
)
_add("mlp_relu_d20_he_x0.5", mlp, depth=20, act="relu", init="he", scale=0.5, expected="vanishing")
_add(
    "mlp_linear_d16_std0.25",
    mlp,
    depth=16,
    act="linear",
    init="std0.25",
    bias=False,
    expected="exploding",
    note="linear layers N(0, 0.25^2), fan-in 64: gain 2 per layer",
)
_add("residual_mlp", residual_mlp, expected="healthy")
_add("residual_mlp_zero_branches", residual_mlp, zero_init=True, expected="healthy")
_add("frozen_middle", frozen_middle)
_add("shared_linear_x6", shared_linear, expected="healthy")
_add("shared_linear_x6_gain3", shared_linear, gain=3.0)
_add("param_orthogonal_tanh", parametrized_mlp, kind="orthogonal", act="tanh", expected="healthy")
_add(
    "param_spectral_norm_sigmoid", parametrized_mlp, kind="spectral_norm", act="sigmoid", expected="vanishing"
)
_add("param_weight_norm_relu", parametrized_mlp, kind="weight_norm", act="relu")

# --- zoo: CNNs (8 channels, 8x8 inputs)
_add("cnn_relu_default", cnn)
_add("cnn_relu_he", cnn, init="he", expected="healthy")
_add("cnn_relu_bn", cnn, bn=True, expected="healthy")
_add("cnn_sigmoid_std0.05", cnn, act="sigmoid", init="std0.05", expected="vanishing")
_add("cnn_relu_d16_he_x2", cnn, depth=16, init="he", scale=2.0, expected="exploding")

# --- zoo: recurrent (8 inputs, 32 hidden, batch 16)
_add("rnn_tanh_default_T3", seq_rnn, t=3, expected="healthy")
_add("rnn_tanh_default_T50", seq_rnn, t=50, expected="vanishing")
_add("rnn_tanh_orth_T10", seq_rnn, t=10, init="orthogonal")
_add("rnn_tanh_orth0.5_T50", seq_rnn, t=50, init="orthogonal", gain=0.5, expected="vanishing")
_add("rnn_tanh_small_x0.1_T30", seq_rnn, t=30, init="scaled", gain=0.1, expected="vanishing")
_add("rnn_tanh_orth3_T50", seq_rnn, t=50, init="orthogonal", gain=3.0, expected="exploding")
_add(
    "rnn_relu_identity_T50",
    seq_rnn,
    t=50,
    nonlinearity="relu",
    init="identity",
    note="IRNN (Le et al. 2015) without clipping: dL/dx_t is flat in time, but plain SGD at the "
    "control's lr blows up (IRNN is meant to be trained with clipping)",
)
_add(
    "rnn_relu_identity1.2_T50",
    seq_rnn,
    t=50,
    nonlinearity="relu",
    init="identity",
    gain=1.2,
    expected="exploding",
)
_add("lstm_forget0_T20", seq_rnn, t=20, kind="lstm", gate_bias=0.0, expected="vanishing")
_add("lstm_forget1_T20", seq_rnn, t=20, kind="lstm", gate_bias=1.0)
_add("lstm_forget1_T5", seq_rnn, t=5, kind="lstm", gate_bias=1.0, expected="healthy")
_add("gru_default_T20", seq_rnn, t=20, kind="gru")
_add("gru_update5_T50", seq_rnn, t=50, kind="gru", gate_bias=5.0, expected="healthy")
_add("dict_gru_mask", dict_gru)

# --- zoo: transformers
_add("tfm_torch_postln_1l", torch_encoder, layers=1, norm_first=False, expected="healthy")
_add("tfm_torch_postln_4l", torch_encoder, layers=4, norm_first=False)
_add("tfm_torch_preln_4l", torch_encoder, layers=4, norm_first=True, expected="healthy")
_add("tfm_hand_preln_6l", hand_encoder, depth=6, pre_norm=True, expected="healthy")
_add("tfm_hand_postln_6l", hand_encoder, depth=6, pre_norm=False)
_add("dict_transformer", dict_transformer)

# --- zoo: the transformer chapter's residual-stream variants (width 32, 17 tokens, T = 12)
_POSTLN_NOTE = (
    "post-LN: nn.TransformerEncoderLayer(norm_first=False) x {}; control: the same with norm_first=True "
    "and a final LayerNorm (Xiong et al. 2020: at init post-LN's gradient shrinks toward the early blocks)"
)
_add("tfm_postln_12", tfm_stream, kind="torch_post", depth=12, note=_POSTLN_NOTE.format(12))
_add(
    "tfm_postln_48",
    tfm_stream,
    kind="torch_post",
    depth=48,
    expected="vanishing",
    note=_POSTLN_NOTE.format(48),
)
_add(
    "tfm_preln_48",
    tfm_stream,
    kind="torch_pre",
    depth=48,
    expected="healthy",
    note="pre-LN: nn.TransformerEncoderLayer(norm_first=True) x 48 and a final LayerNorm; "
    "control: a fresh seed",
)
_add(
    "tfm_nonorm_48",
    tfm_stream,
    kind="none",
    depth=48,
    note="no layer norm, plain residual x + f(x), 48 hand-written blocks, PyTorch's default init; "
    "control: the same blocks pre-LN",
)
_add(
    "tfm_deepnorm_48",
    tfm_stream,
    kind="deepnorm",
    depth=48,
    expected="healthy",
    note="DeepNorm (Wang et al. 2022): post-LN, residual x alpha = 96^(1/4), v/out/MLP Xavier gain "
    "beta = 384^(-1/4); control: the same blocks pre-LN",
)
_add(
    "tfm_rezero_48",
    tfm_stream,
    kind="rezero",
    depth=48,
    expected="healthy",
    note="ReZero (Bachlechner et al. 2020): no norm, each branch x a scalar initialised to 0, so at init "
    "every branch weight gets an exactly zero gradient and the stream is the identity: the measured "
    "ratio is 1 by construction; the training label still decides, because the gates get a gradient "
    "at the first step and the branch weights from the second on; control: the same blocks pre-LN",
)
_add(
    "tfm_attn_noskip_12",
    tfm_stream,
    kind="attn_noskip",
    depth=12,
    expected="vanishing",
    note="pure attention stack: 12 x attn(x), no skip, no MLP, no norm; token representations "
    "collapse to rank one (Dong et al. 2021); control: x + attn(ln(x)) and a final LayerNorm",
)


CASES: dict[str, Callable[[], ZooCase]] = dict(_CASE_BUILDERS)


def build(name: str) -> ZooCase:
    return CASES[name]()
