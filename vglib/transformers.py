"""Small transformers for the gradient studies of the transformers chapter: where the layer norm
sits, how residual branches are scaled, and what attention does to the gradient.

A :class:`Transformer` is a token embedding plus a learned position embedding, a stack of
:class:`TransformerBlock` modules (``model.blocks``), a final norm and a linear head. Each block has
an attention sublayer (:class:`SelfAttention`) and, unless ``mlp=False``, an MLP sublayer; the
residual stream ``h`` runs through them as

- ``norm="pre"``:  ``h = h + s(F(LN(h)))``  (Xiong et al. 2020's Pre-LN; GPT-2's placement),
- ``norm="post"``: ``h = LN(alpha * h + s(F(h)))`` (the original Transformer's Post-LN; DeepNorm
  with ``alpha > 1``),
- ``norm="none"``: ``h = h + s(F(h))`` (no normalisation: ReZero's and T-Fixup's setting),

where ``F`` is the sublayer and ``s`` the residual scaling (``RESIDUAL_SCALINGS``). With
``skip=False`` the residual connection is dropped (``h = s(F(LN(h)))``, ``LN(s(F(h)))``,
``s(F(h))``): a pure attention/MLP stack, Dong et al. 2021's "without skip connections". Build one
with :func:`build_transformer`. Everything is small enough to train on a CPU in seconds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._seed import torch_seed
from ._validation import check_choice, check_positive_int
from .initialization import layer_seed

__all__ = [
    "NORM_PLACEMENTS",
    "READOUTS",
    "RESIDUAL_SCALINGS",
    "SelfAttention",
    "Transformer",
    "TransformerBlock",
    "build_transformer",
    "deepnorm_alpha",
    "deepnorm_beta",
    "layerscale_default",
    "tfixup_block_scale",
    "tfixup_embedding_scale",
]

NORM_PLACEMENTS: tuple[str, ...] = ("pre", "post", "none")
"""Where a block's layer norms sit: before each sublayer, after each residual sum, or nowhere."""
RESIDUAL_SCALINGS: tuple[str, ...] = ("plain", "deepnorm", "rezero", "layerscale", "tfixup")
"""How residual branches are scaled; see :func:`build_transformer`. ``deepnorm`` needs
``norm="post"``, ``tfixup`` needs ``norm="none"``; the others combine with any placement."""
READOUTS: tuple[str, ...] = ("last", "all")
"""What the head reads: the last position only (``(batch, out)``) or every position
(``(batch, seq, out)``)."""

_NEEDS_NORM = {"deepnorm": "post", "tfixup": "none"}
_SEED_STRIDE = 8
"""Seed indices per block: q, k, v, out, mlp.0, mlp.2 of block ``b`` are ``8 b + 0 .. 5``."""
_TOKEN_SEED_INDEX = 2**30
_POSITION_SEED_INDEX = 2**30 + 1
_HEAD_SEED_INDEX = 2**32 - 1


def deepnorm_alpha(depth: int) -> float:
    """DeepNorm's residual up-scaling ``alpha = (2N)^(1/4)`` for ``N = depth`` blocks, the rule for
    encoder-only and decoder-only models (Wang et al. 2022, DeepNet, Figure 2's table)."""
    check_positive_int("depth", depth)
    return (2.0 * depth) ** 0.25


def deepnorm_beta(depth: int) -> float:
    """DeepNorm's initialisation gain ``beta = (8N)^(-1/4)`` for ``N = depth`` blocks (encoder-only
    or decoder-only; Wang et al. 2022, Figure 2), given to the value, output and MLP weights."""
    check_positive_int("depth", depth)
    return (8.0 * depth) ** -0.25


def tfixup_block_scale(depth: int) -> float:
    """T-Fixup's factor ``0.67 N^(-1/4)`` for the value, output and MLP weights of every encoder
    block, ``N = depth`` blocks (Huang et al. 2020)."""
    check_positive_int("depth", depth)
    return 0.67 * depth**-0.25


def tfixup_embedding_scale(depth: int) -> float:
    """T-Fixup's factor ``(9N)^(-1/4)`` for the input embeddings, ``N = depth`` blocks (Huang et al.
    2020)."""
    check_positive_int("depth", depth)
    return (9.0 * depth) ** -0.25


def layerscale_default(depth: int) -> float:
    """LayerScale's initial per-channel scale by depth: 0.1 up to 18 blocks, 1e-5 up to 24, 1e-6
    beyond (Touvron et al. 2021, CaiT, section "Deeper image transformers with LayerScale": "0.1
    until depth 18, 1e-5 for depth 24 and 1e-6 for deeper networks"; depths 19 to 23, which the
    paper does not name, take 1e-5 here)."""
    check_positive_int("depth", depth)
    if depth <= 18:
        return 0.1
    return 1e-5 if depth <= 24 else 1e-6


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive finite number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` and ``out`` Linear layers.

    ``forward(h)`` takes ``(batch, seq, width)`` and returns the same shape. Per head, the logits are
    ``logit_scale * q k^T`` (default scale ``1/sqrt(d_head)``, Vaswani et al. 2017; give another
    float to see why it is there: larger logits saturate the softmax). Two submodules make the
    inside observable with forward hooks:

    - ``self.logits`` (an ``nn.Identity``) receives the scaled logits ``(batch, heads, query, key)``
      before the causal mask, so every entry is finite;
    - ``self.softmax`` (``nn.Softmax(dim=-1)``) outputs the attention probabilities
      ``(batch, heads, query, key)``, each row summing to 1 (with ``causal=True``, zero above the
      diagonal: a position attends to itself and earlier positions only).
    """

    def __init__(self, width: int, heads: int, *, logit_scale: float | None = None, causal: bool = False):
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("heads", heads)
        if width % heads:
            raise ValueError(f"width must be divisible by heads, got width={width}, heads={heads}")
        self.width = width
        self.heads = heads
        self.d_head = width // heads
        self.logit_scale = (
            1.0 / math.sqrt(self.d_head)
            if logit_scale is None
            else _check_positive_float("logit_scale", logit_scale)
        )
        self.causal = _check_bool("causal", causal)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.logits = nn.Identity()
        self.softmax = nn.Softmax(dim=-1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.d_head).transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if h.ndim != 3 or h.shape[-1] != self.width:
            raise ValueError(f"h must have shape (batch, seq, {self.width}), got {tuple(h.shape)}")
        batch, seq, _ = h.shape
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        logits = self.logits(self.logit_scale * (q @ k.transpose(-2, -1)))
        if self.causal:
            later = torch.ones(seq, seq, dtype=torch.bool, device=h.device).triu(1)
            logits = logits.masked_fill(later, float("-inf"))
        probs = self.softmax(logits)
        mixed = (probs @ v).transpose(1, 2).reshape(batch, seq, self.width)
        return self.out(mixed)


class TransformerBlock(nn.Module):
    """One transformer block: an attention sublayer and (``mlp=True``) an MLP sublayer
    ``Linear(width, mlp_ratio * width) -> GELU -> Linear(mlp_ratio * width, width)``.

    For each sublayer ``F`` (``self.attention``, then ``self.mlp``) the stream is updated as
    ``pre``: ``h + s(F(LN(h)))``; ``post``: ``LN(alpha h + s(F(h)))``; ``none``: ``h + s(F(h))``.
    The norms are ``self.attention_norm`` and ``self.mlp_norm`` (``nn.LayerNorm`` with its affine
    parameters, or ``nn.Identity`` for ``none``). ``s`` is the residual scaling:

    - ``plain``, ``deepnorm``, ``tfixup``: the identity (these differ in ``alpha`` and the init);
    - ``rezero``: a learned scalar per sublayer, starting at 0 (ReZero, Bachlechner et al. 2020;
      SkipInit, De & Smith 2020, is the same scalar), so every block starts as the identity;
    - ``layerscale``: a learned per-channel vector per sublayer starting at ``layerscale_init``
      (LayerScale, Touvron et al. 2021).

    The scales are ``self.attention_scale`` and ``self.mlp_scale`` (``None`` where there is none);
    ``self.alpha`` is ``deepnorm_alpha(depth)`` for ``deepnorm`` and 1 otherwise.

    ``skip=False`` drops the residual connection of both sublayers (``self.skip``): ``pre``:
    ``s(F(LN(h)))``; ``post``: ``LN(s(F(h)))`` (``alpha``, the weight of the skip, is then unused);
    ``none``: ``s(F(h))``. This is the "pure attention" stack of Dong et al. 2021 (with
    ``mlp=False``), whose token representations collapse to rank 1 with depth. The residual
    scalings still scale the branch (``rezero`` then multiplies every block's output by 0 at
    initialisation: a stream that is 0 after the first block).
    ``self.sublayer_names`` lists the sublayers in the order they run.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        *,
        norm: str = "pre",
        residual: str = "plain",
        depth: int = 1,
        mlp: bool = True,
        mlp_ratio: int = 4,
        logit_scale: float | None = None,
        causal: bool = False,
        layerscale_init: float | None = None,
        skip: bool = True,
    ):
        super().__init__()
        check_choice("norm", norm, NORM_PLACEMENTS)
        check_choice("residual", residual, RESIDUAL_SCALINGS)
        _check_combination(norm, residual)
        check_positive_int("depth", depth)
        check_positive_int("mlp_ratio", mlp_ratio)
        _check_bool("mlp", mlp)
        self.skip = _check_bool("skip", skip)
        self.norm = norm
        self.residual = residual
        self.alpha = deepnorm_alpha(depth) if residual == "deepnorm" else 1.0
        self.attention = SelfAttention(width, heads, logit_scale=logit_scale, causal=causal)
        self.attention_norm = self._make_norm(width)
        self.mlp: nn.Sequential | None = None
        self.mlp_norm: nn.Module | None = None
        if mlp:
            self.mlp = nn.Sequential(
                nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
            )
            self.mlp_norm = self._make_norm(width)
        self.sublayer_names: tuple[str, ...] = ("attention", "mlp") if mlp else ("attention",)
        init = layerscale_default(depth) if layerscale_init is None else layerscale_init
        self.attention_scale = self._make_scale(width, init)
        self.mlp_scale = self._make_scale(width, init) if mlp else None

    def _make_norm(self, width: int) -> nn.Module:
        return nn.Identity() if self.norm == "none" else nn.LayerNorm(width)

    def _make_scale(self, width: int, init: float) -> nn.Parameter | None:
        if self.residual == "rezero":
            return nn.Parameter(torch.zeros(()))
        if self.residual == "layerscale":
            return nn.Parameter(torch.full((width,), float(init)))
        return None

    def _sublayer(
        self, h: torch.Tensor, branch: nn.Module, norm: nn.Module, scale: nn.Parameter | None
    ) -> torch.Tensor:
        if self.norm == "pre":
            update = branch(norm(h))
        else:
            update = branch(h)
        if scale is not None:
            update = scale * update
        if not self.skip:
            return norm(update) if self.norm == "post" else update
        if self.norm == "post":
            return norm(self.alpha * h + update)
        return h + update

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self._sublayer(h, self.attention, self.attention_norm, self.attention_scale)
        if self.mlp is not None:
            h = self._sublayer(h, self.mlp, self.mlp_norm, self.mlp_scale)  # type: ignore[arg-type]
        return h


def _check_combination(norm: str, residual: str) -> None:
    needed = _NEEDS_NORM.get(residual)
    if needed is not None and norm != needed:
        rules = "; ".join(f"residual={r!r} needs norm={n!r}" for r, n in _NEEDS_NORM.items())
        raise ValueError(
            f"residual={residual!r} does not combine with norm={norm!r}: {rules}; "
            f"'plain', 'rezero' and 'layerscale' combine with any of {', '.join(map(repr, NORM_PLACEMENTS))}"
        )


class Transformer(nn.Module):
    """Token embedding + learned position embedding -> ``blocks`` -> ``final_norm`` -> ``head``.

    ``forward(tokens)`` takes a LongTensor ``(batch, seq)`` with ``seq <= max_len`` and returns
    ``(batch, out_features)`` for ``readout="last"`` (the head reads the last position) or
    ``(batch, seq, out_features)`` for ``readout="all"``. ``final_norm`` is an ``nn.LayerNorm`` for
    pre-LN (whose stream is otherwise never normalised) and ``nn.Identity`` otherwise.

    The residual stream: the input of ``blocks[i]`` is the stream entering block ``i``, and the
    input of ``final_norm`` the stream leaving the last block; :meth:`stream_modules` lists these
    modules in order, so a forward pre-hook on each sees the stream at every depth (a forward hook
    on ``final_norm`` is registered even where it is an ``nn.Identity``).
    """

    def __init__(
        self,
        blocks: list[TransformerBlock],
        *,
        width: int,
        vocab: int,
        max_len: int,
        out_features: int,
        norm: str,
        residual: str,
        readout: str = "last",
    ):
        super().__init__()
        self.width = width
        self.vocab = vocab
        self.max_len = max_len
        self.norm = norm
        self.residual = residual
        self.readout = check_choice("readout", readout, READOUTS)
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm: nn.Module = nn.LayerNorm(width) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(width, out_features)

    @property
    def depth(self) -> int:
        """The number of blocks."""
        return len(self.blocks)

    def stream_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` for ``blocks.0``, ..., ``blocks.{depth-1}`` and ``final_norm``: the
        input of each is the residual stream entering it, input side first (``depth + 1`` points)."""
        return [(f"blocks.{i}", block) for i, block in enumerate(self.blocks)] + [
            ("final_norm", self.final_norm)
        ]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The stream entering the first block: token plus position embeddings, ``(batch, seq, width)``."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            got = (
                f"a tensor of dtype {tokens.dtype}"
                if isinstance(tokens, torch.Tensor)
                else type(tokens).__name__
            )
            raise TypeError(
                f"tokens must be an integer torch.Tensor (torch.long) of shape (batch, seq), got {got}"
            )
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.max_len:
            raise ValueError(
                f"tokens must have shape (batch, seq) with 1 <= seq <= max_len = {self.max_len}, got "
                f"{tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab):
            raise ValueError(f"token ids must lie in [0, {self.vocab - 1}]")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.token_embedding(tokens) + self.position_embedding(positions)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        h = self.final_norm(h)
        if self.readout == "last":
            h = h[:, -1]
        return self.head(h)


@torch.no_grad()
def _xavier_normal(layer: nn.Linear, gain: float, seed: int) -> None:
    with torch_seed(seed):
        nn.init.xavier_normal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)


@torch.no_grad()
def build_transformer(
    depth: int,
    width: int = 32,
    heads: int = 4,
    *,
    norm: str = "pre",
    residual: str = "plain",
    vocab: int = 17,
    max_len: int = 12,
    out_features: int = 8,
    mlp: bool = True,
    mlp_ratio: int = 4,
    logit_scale: float | None = None,
    causal: bool = False,
    readout: str = "last",
    layerscale_init: float | None = None,
    skip: bool = True,
    seed: int = 0,
) -> Transformer:
    """A small :class:`Transformer` of ``depth`` blocks, initialised for the named remedy.

    The defaults ``vocab=17, max_len=12, out_features=8`` fit :func:`~vglib.data.associative_recall` with
    its defaults (:func:`~vglib.data.recall_dims`). ``norm`` is one of ``NORM_PLACEMENTS`` and ``residual``
    one of ``RESIDUAL_SCALINGS``: ``deepnorm`` needs ``norm="post"``, ``tfixup`` needs
    ``norm="none"``. ``layerscale_init`` (``residual="layerscale"`` only) overrides CaiT's
    depth rule (:func:`layerscale_default`). ``skip=False`` drops every block's residual connection
    (see :class:`TransformerBlock`): with ``mlp=False``, the pure attention stack of Dong et al.
    2021; the initialisation is the same as with the skip.

    Initialisation, the same for every variant except where a remedy says otherwise:

    - every Linear weight (q, k, v, out, both MLP layers, head) Xavier normal
      (``std = gain sqrt(2 / (fan_in + fan_out))``, gain 1), every bias 0;
    - token and position embeddings ``N(0, width^(-1/2))``, T-Fixup's embedding init
      ("Gaussian initialization N(0, d^{-1/2}) for input embeddings where d is the embedding
      dimension", the first step of Huang et al. 2020's T-Fixup procedure), read with ``N(mean,
      variance)``: the *variance* is ``width^(-1/2)``, the std ``width^(-1/4)``. (The authors'
      fairseq code draws std ``d^(-1/2)`` and multiplies the lookup by ``sqrt(d)`` in the forward
      pass, an embedding of std 1; the paper's statement is what is followed here.)
    - layer norms: weight 1, bias 0 (PyTorch's).

    The remedies:

    - ``deepnorm`` (Wang et al. 2022, DeepNet, Figure 2, encoder-only/decoder-only rule): post-LN
      with the residual multiplied by ``alpha = (2N)^(1/4)``, and Xavier normal with gain
      ``beta = (8N)^(-1/4)`` for ``v``, ``out`` and both MLP weights; gain 1 for ``q`` and ``k``.
      ``N = depth`` blocks (the DeepNet authors' torchscale code divides ``fc1``, ``fc2``,
      ``out_proj`` and ``v_proj`` of an encoder by ``(8 N)^(1/4)``, N the number of layers).
    - ``tfixup`` (Huang et al. 2020, T-Fixup): no layer norm; Xavier everywhere, then ``v``, ``out``
      and both MLP weights of every block multiplied by ``0.67 N^(-1/4)`` (the encoder rule) and the
      input embeddings (token and position here) by ``(9N)^(-1/4)``. The authors' code
      (layer6ai-labs/T-Fixup, ``fairseq/modules/transformer_layer.py``, ``fixup_initialization``;
      ``fairseq/models/transformer.py``, ``TransformerEncoder.__init__``) applies exactly these
      factors to ``fc1``, ``fc2``, ``out_proj`` and ``v_proj`` (undoing fairseq's ``1/sqrt 2``
      gain on ``v_proj`` first) and to the token table; its positions are sinusoidal, not
      parameters, so it has no position table to scale.
    - ``rezero`` (scalars at 0), ``layerscale`` (vectors at ``layerscale_init``), ``plain``: the
      default initialisation.

    Each weight draws from its own seed (``layer_seed(seed, 8 b + j)`` for layer ``j`` of block
    ``b``), so the same ``seed`` gives the same model, and a deeper plain model starts with the
    blocks of a shallower one. The global RNG state is left as it was.
    """
    check_positive_int("depth", depth)
    check_positive_int("width", width)
    check_positive_int("heads", heads)
    if width % heads:
        raise ValueError(f"width must be divisible by heads, got width={width}, heads={heads}")
    check_positive_int("vocab", vocab)
    check_positive_int("max_len", max_len)
    check_positive_int("out_features", out_features)
    check_positive_int("mlp_ratio", mlp_ratio)
    check_choice("norm", norm, NORM_PLACEMENTS)
    check_choice("residual", residual, RESIDUAL_SCALINGS)
    check_choice("readout", readout, READOUTS)
    _check_combination(norm, residual)
    _check_bool("mlp", mlp)
    _check_bool("causal", causal)
    _check_bool("skip", skip)
    if logit_scale is not None:
        _check_positive_float("logit_scale", logit_scale)
    if layerscale_init is not None:
        if residual != "layerscale":
            raise ValueError(
                f"layerscale_init applies only to residual='layerscale', got residual={residual!r}"
            )
        _check_positive_float("layerscale_init", layerscale_init)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    # nn.Linear and nn.Embedding draw their default init at construction: draw it from a forked
    # generator, so that building a model leaves the global RNG as it was (every weight is redrawn below)
    with torch_seed(seed):
        blocks = [
            TransformerBlock(
                width,
                heads,
                norm=norm,
                residual=residual,
                depth=depth,
                mlp=mlp,
                mlp_ratio=mlp_ratio,
                logit_scale=logit_scale,
                causal=causal,
                layerscale_init=layerscale_init,
                skip=skip,
            )
            for _ in range(depth)
        ]
        model = Transformer(
            blocks, width=width, vocab=vocab, max_len=max_len, out_features=out_features, norm=norm,
            residual=residual, readout=readout,
        )  # fmt: skip

    branch_gain = {"deepnorm": deepnorm_beta(depth), "tfixup": tfixup_block_scale(depth)}.get(residual, 1.0)
    for b, block in enumerate(model.blocks):
        attention = block.attention
        layers: list[tuple[nn.Linear, float]] = [
            (attention.q, 1.0), (attention.k, 1.0), (attention.v, branch_gain), (attention.out, branch_gain),
        ]  # fmt: skip
        if block.mlp is not None:
            layers += [(block.mlp[0], branch_gain), (block.mlp[2], branch_gain)]  # type: ignore[list-item]
        for j, (layer, gain) in enumerate(layers):
            _xavier_normal(layer, gain, layer_seed(seed, _SEED_STRIDE * b + j))
    _xavier_normal(model.head, 1.0, layer_seed(seed, _HEAD_SEED_INDEX))

    embedding_std = width**-0.25
    if residual == "tfixup":
        embedding_std *= tfixup_embedding_scale(depth)
    tables = ((model.token_embedding, _TOKEN_SEED_INDEX), (model.position_embedding, _POSITION_SEED_INDEX))
    for table, index in tables:
        with torch_seed(layer_seed(seed, index)):
            nn.init.normal_(table.weight, 0.0, embedding_std)
    return model
