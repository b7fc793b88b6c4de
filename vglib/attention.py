"""Probes of transformers (:class:`~vglib.transformers.Transformer`): the residual stream's gradient
and scale, attention's entropy and logits, the collapse of tokens to one, the saturation of the
softmax, and how much the output moves when the weights do.

Every probe that runs a model runs it on a copy (in float64 by default, with no hooks: a monitor
attached to the model does not see the probe's pass), so the model's weights, ``.grad``, buffers,
train/eval mode and the global random state are left as they were. The residual stream's points
are those of ``model.stream_modules()``: the inputs of ``blocks.0 .. blocks.{L-1}`` and of
``final_norm`` (``L + 1`` points, input side first; the last is the stream leaving the last block).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ._batch import LossFn, check_inputs, default_loss, scalar_loss, usable
from ._seed import generator, shifted_seed
from ._validation import check_choice, check_positive_int
from .probes import _norm
from .transformers import Transformer

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BLOCK_WEIGHTS",
    "TRANSFORMER_ARCHITECTURES",
    "AttentionStatistics",
    "SoftmaxSaturation",
    "TransformerProfile",
    "attention_statistics",
    "output_change",
    "softmax_saturation",
    "stream_frame",
    "token_uniformity",
    "transformer_profile",
]

BLOCK_WEIGHTS: tuple[str, ...] = (
    "attention.q",
    "attention.k",
    "attention.v",
    "attention.out",
    "mlp.0",
    "mlp.2",
)
"""The weight matrices of a :class:`~vglib.transformers.TransformerBlock`, by their name inside the
block: the attention's query, key, value and output projections, and the MLP's two layers."""

_DTYPES = (torch.float32, torch.float64)


# --- checks and the model's twin ---------------------------------------------------------------------


def _check_model(model: object) -> Transformer:
    if not isinstance(model, Transformer):
        raise TypeError(
            f"model must be a vglib.Transformer (build one with vglib.build_transformer), "
            f"got {type(model).__name__}"
        )
    return model


def _check_tokens(tokens: object) -> torch.Tensor:
    """The tokens' type and batch; their shape and range are checked by ``Transformer.embed``."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        got = (
            f"a tensor of dtype {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        )
        raise TypeError(
            f"tokens must be an integer torch.Tensor (torch.long) of shape (batch, seq), got {got}"
        )
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(
            f"tokens must hold a non-empty batch of shape (batch, seq), got {tuple(tokens.shape)}"
        )
    return usable(tokens)  # type: ignore[return-value]


def _check_dtype(dtype: object) -> torch.dtype:
    listed = ", ".join(str(d) for d in _DTYPES)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, one of {listed}; got {dtype!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {listed}; got {dtype}")
    return dtype


def _twin(model: Transformer, dtype: torch.dtype) -> Transformer:
    """A copy of ``model`` in ``dtype`` with no module hooks (so that hooks others attached to the
    model, e.g. a monitor's, do not see the probe's passes) and no ``.grad``."""
    twin = copy.deepcopy(model).to(dtype)
    for module in twin.modules():
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
        ):
            hooks.clear()
    for parameter in twin.parameters():
        parameter.grad = None
    return twin


def _stream_inputs(model: Transformer, tokens: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The stream at every point of ``model.stream_modules()`` and the model's output, from one forward
    pass under whatever grad mode the caller set."""
    seen: list[torch.Tensor] = []
    handles = [
        module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        for _, module in model.stream_modules()
    ]
    try:
        output = model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return seen, output


def _weights(block: nn.Module) -> dict[str, nn.Parameter | None]:
    """The block's weight matrices by :data:`BLOCK_WEIGHTS` name (``None`` where there is no MLP)."""
    found: dict[str, nn.Parameter | None] = {}
    for name in BLOCK_WEIGHTS:
        try:
            found[name] = block.get_submodule(name).weight  # type: ignore[assignment]
        except AttributeError:
            found[name] = None
    return found


# --- the residual stream's gradient --------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerProfile:
    """One forward and backward pass of a transformer, measured on its residual stream (see
    :func:`transformer_profile`).

    ``names`` are the ``L + 1`` stream points (``blocks.0 .. blocks.{L-1}``, ``final_norm``), input
    side first; ``grad_norms`` and ``mean_squares`` run over them, ``block_factors`` and each array
    of ``weight_grad_norms`` (keyed by :data:`BLOCK_WEIGHTS`) over the ``L`` blocks. ``dtype`` is
    the precision the pass ran in.
    """

    names: tuple[str, ...]
    grad_norms: np.ndarray
    mean_squares: np.ndarray
    block_factors: np.ndarray
    weight_grad_norms: dict[str, np.ndarray]
    loss: float
    dtype: str

    @property
    def depth(self) -> int:
        """The number of blocks ``L``."""
        return len(self.names) - 1

    def first_to_last(self) -> float:
        """``||dL/dx_0|| / ||dL/dx_L||``, the gradient entering the first block over the gradient
        leaving the last one: below 1 the gradient shrinks towards the input. It is the product of
        ``block_factors``."""
        return float(self.grad_norms[0] / self.grad_norms[-1])

    def to_dataframe(self) -> pd.DataFrame:
        """One row per stream point (``point``, ``position`` 0 .. L): ``grad_norm``, ``mean_square``,
        then the block that starts there: ``block_factor`` and the weight-gradient norms, one column
        per :data:`BLOCK_WEIGHTS` name (NaN in the last row, which starts no block); the loss is in
        ``df.attrs["loss"]``. Needs pandas (``pip install "vglib[pandas]"``)."""
        from .tables import require_pandas

        pd = require_pandas()

        def padded(values: np.ndarray) -> np.ndarray:
            return np.append(np.asarray(values, dtype=np.float64), np.nan)

        frame = pd.DataFrame(
            {
                "point": list(self.names),
                "position": np.arange(self.depth + 1, dtype=np.int64),
                "grad_norm": self.grad_norms,
                "mean_square": self.mean_squares,
                "block_factor": padded(self.block_factors),
                **{name: padded(values) for name, values in self.weight_grad_norms.items()},
            }
        )
        frame.attrs["loss"] = self.loss
        return frame


@torch.inference_mode(False)  # the pass needs autograd even when called under inference_mode
def transformer_profile(
    model: Transformer,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> TransformerProfile:
    """Gradient and scale of a transformer's residual stream, block by block, from one forward and
    one backward pass on ``tokens`` at the model's current weights.

    The pass runs on a copy of ``model`` converted to ``dtype`` (float64 by default, so the numbers
    are accurate to many more digits than a figure shows; ``torch.float32`` measures the model as it
    trains). Measured at each point ``x_l`` of ``model.stream_modules()`` (the inputs of
    ``blocks.0 .. blocks.{L-1}`` and of ``final_norm``, a ``(batch, seq, width)`` tensor):

    - ``grad_norms[l]``: ``||dL/dx_l||``, the Frobenius norm of the backpropagated gradient of the
      whole stream tensor (every example and position, through every path: the skip and the
      branches);
    - ``mean_squares[l]``: the mean over examples and positions of the per-token squared norm
      ``||x_{l,i}||^2`` (summed over the width), Xiong et al. 2020 Lemma 2's quantity (post-LN:
      ``width`` after every block, since a layer norm with weight 1 and bias 0 leaves each token
      with mean 0 and variance 1; pre-LN: growing with ``l``);
    - ``block_factors[l]``: ``grad_norms[l] / grad_norms[l + 1]``, the gain of the gradient through
      block ``l`` going backwards (below 1 it shrinks towards the input);
    - ``weight_grad_norms[name][l]``: ``||dL/dW||_F`` of the weight (not the bias) of block ``l``'s
      ``name`` (:data:`BLOCK_WEIGHTS`); NaN where the block has no MLP or the weight is frozen.

    Norms are computed in float64. The loss is ``loss_fn(model(tokens), targets)``, by default
    cross-entropy for class-index ``targets`` (MSE for float targets of the output's shape): see
    :func:`~vglib.probes.gradient_profile`. The model's weights, ``.grad``, buffers and mode are left
    as they were.
    """
    _check_model(model)
    tokens = _check_tokens(tokens)
    check_inputs(tokens, targets)
    dtype = _check_dtype(dtype)
    targets = usable(targets)  # type: ignore[assignment]
    if targets.is_floating_point():
        targets = targets.to(dtype)
    twin = _twin(model, dtype)
    with torch.enable_grad():
        stream, output = _stream_inputs(twin, tokens)
        loss = scalar_loss((loss_fn or default_loss)(output, targets))
        weights = [_weights(block) for block in twin.blocks]
        candidates = stream + [w for block in weights for w in block.values() if w is not None]
        wanted = [t for t in candidates if t.requires_grad]
        grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    grad_of = {id(t): g for t, g in zip(wanted, grads, strict=True)}

    def norm_of(t: torch.Tensor | None) -> float:
        return _norm(grad_of[id(t)]) if t is not None and id(t) in grad_of else float("nan")

    grad_norms = np.array([norm_of(x) for x in stream], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = grad_norms[:-1] / grad_norms[1:]
    return TransformerProfile(
        names=tuple(name for name, _ in twin.stream_modules()),
        grad_norms=grad_norms,
        mean_squares=np.array(
            [float(x.detach().double().pow(2).sum(-1).mean()) for x in stream], dtype=np.float64
        ),
        block_factors=factors,
        weight_grad_norms={
            name: np.array([norm_of(block[name]) for block in weights], dtype=np.float64)
            for name in BLOCK_WEIGHTS
        },
        loss=float(loss.detach()),
        dtype=str(dtype).removeprefix("torch."),
    )


# --- attention's probabilities and logits ----------------------------------------------------------------


@dataclass(frozen=True)
class AttentionStatistics:
    """Attention's probabilities and logits per block (see :func:`attention_statistics`); every
    array runs over the blocks, input side first, float64."""

    names: tuple[str, ...]
    entropy: np.ndarray
    max_entropy: np.ndarray
    max_probability: np.ndarray
    logit_std: np.ndarray

    def to_dataframe(self) -> pd.DataFrame:
        """One row per block, with columns ``block``, ``entropy``, ``max_entropy``,
        ``max_probability`` and ``logit_std``. Needs pandas (``pip install "vglib[pandas]"``)."""
        from .tables import require_pandas

        return require_pandas().DataFrame(
            {
                "block": list(self.names),
                "entropy": self.entropy,
                "max_entropy": self.max_entropy,
                "max_probability": self.max_probability,
                "logit_std": self.logit_std,
            }
        )


def _allowed_keys(seq: int, causal: bool, device: torch.device) -> torch.Tensor:
    """``(query, key)`` booleans: the keys each query may attend to."""
    allowed = torch.ones(seq, seq, dtype=torch.bool, device=device)
    return allowed.tril() if causal else allowed


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """``-sum_j p_j log p_j`` over the last dimension, in nats, with ``0 log 0 = 0``."""
    return -torch.special.xlogy(probs, probs).sum(-1)


@torch.no_grad()
def attention_statistics(
    model: Transformer, tokens: torch.Tensor, *, dtype: torch.dtype = torch.float64
) -> AttentionStatistics:
    """Attention entropy, peak probability and logit spread of every block, from one forward pass
    (no gradient) on a copy of ``model`` in ``dtype`` (float64 by default).

    Read with forward hooks on each block's ``attention.softmax`` (the probabilities ``p``, shape
    ``(batch, heads, query, key)``) and ``attention.logits`` (the scaled logits, before the causal
    mask). Per block, averaged over examples, heads and query positions alike:

    - ``entropy``: the mean of ``-sum_j p_j log p_j`` (nats) over the keys of a query, Zhai et al.
      2023's attention entropy; low entropy is concentrated attention ("entropy collapse");
    - ``max_entropy``: the mean over queries of ``log(number of keys the query may attend to)``,
      the entropy of uniform attention: ``log(seq)`` without a causal mask; with one, query ``i``
      sees ``i + 1`` keys, so the mean is ``log(seq!) / seq``;
    - ``max_probability``: the mean of a query's largest probability (1 for the first query of a
      causal mask, which sees one key);
    - ``logit_std``: the spread the softmax sees: for each query, the sample standard deviation
      (``ddof=1``) of its scaled logits over the keys it may attend to (adding a constant to a
      query's logits changes nothing, so the spread within a query is what saturates the
      softmax), root-mean-squared over examples, heads and queries; queries with a single key are
      left out (NaN if every query has one: ``seq = 1``). Compare with
      :func:`softmax_saturation`'s ``logit_std``.
    """
    _check_model(model)
    tokens = _check_tokens(tokens)
    dtype = _check_dtype(dtype)
    twin = _twin(model, dtype)
    seen: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    for b, block in enumerate(twin.blocks):
        seen[b] = {}
        attention = block.attention
        handles.append(
            attention.softmax.register_forward_hook(lambda _m, _a, out, b=b: seen[b].__setitem__("p", out))
        )
        handles.append(
            attention.logits.register_forward_hook(lambda _m, _a, out, b=b: seen[b].__setitem__("z", out))
        )
    try:
        twin(tokens)
    finally:
        for handle in handles:
            handle.remove()
    rows: list[tuple[float, float, float, float]] = []
    for b, block in enumerate(twin.blocks):
        probs, logits = seen[b]["p"].double(), seen[b]["z"].double()
        seq = probs.shape[-1]
        allowed = _allowed_keys(seq, block.attention.causal, probs.device)
        keys = allowed.sum(-1)  # (query,)
        max_entropy = float(torch.log(keys.double()).mean())
        centred = torch.where(allowed, logits - _masked_mean(logits, allowed, keys), 0.0)
        several = keys > 1
        if bool(several.any()):
            variance = centred.pow(2).sum(-1)[..., several] / (keys[several] - 1)
            logit_std = float(variance.mean().sqrt())
        else:
            logit_std = float("nan")
        rows.append((float(_entropy(probs).mean()), max_entropy, float(probs.amax(-1).mean()), logit_std))
    entropy, max_entropy_, max_probability, logit_std_ = (
        np.array(c, dtype=np.float64) for c in zip(*rows, strict=True)
    )
    return AttentionStatistics(
        names=tuple(f"blocks.{b}" for b in range(twin.depth)),
        entropy=entropy,
        max_entropy=max_entropy_,
        max_probability=max_probability,
        logit_std=logit_std_,
    )


def _masked_mean(logits: torch.Tensor, allowed: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each query's mean logit over the keys it may attend to, ``(..., query, 1)``."""
    return (torch.where(allowed, logits, 0.0).sum(-1) / keys).unsqueeze(-1)


# --- rank collapse ----------------------------------------------------------------------------------------


@torch.no_grad()
def token_uniformity(
    model: Transformer, tokens: torch.Tensor, *, dtype: torch.dtype = torch.float64
) -> np.ndarray:
    """How far the tokens of a sequence are from all being the same, at every stream point.

    For each example, ``X`` is the ``(seq, width)`` matrix of its tokens at a point of
    ``model.stream_modules()`` and ``xbar`` their mean; the result is
    ``||X - 1 xbar^T||_F / ||X||_F`` averaged over the examples, one float64 value per stream point
    (``L + 1``, input side first), from one forward pass on a copy of the model in ``dtype``
    (float64 by default, so values far below float32's resolution are still measured). 0 means
    every token is the same vector: the matrix has collapsed to rank 1 (Dong et al. 2021's "token
    uniformity"); an example whose ``X`` is 0 gives NaN.

    ``1 xbar^T`` is the matrix with identical rows nearest to ``X`` in Frobenius norm (the
    least-squares fit of one row to all rows is their mean), so this is the relative distance to
    the nearest rank-1 matrix of identical rows. Dong et al. measure the residual ``res(X) = X - 1
    x^T`` in a composite ``l1,l_inf`` norm (``sqrt(||res||_1 ||res||_inf)``, the maximum column and
    row sums), with ``x`` the minimiser in that norm; the Frobenius version is used here because
    its minimiser is exactly the mean token, a closed form with no optimisation, and any two norms
    on these matrices differ by at most a constant factor, so "converges to 0" and "does not" read
    the same in both.
    """
    _check_model(model)
    tokens = _check_tokens(tokens)
    dtype = _check_dtype(dtype)
    twin = _twin(model, dtype)
    stream, _ = _stream_inputs(twin, tokens)
    values = []
    for x in stream:
        x = x.double()
        residual = x - x.mean(dim=1, keepdim=True)
        per_example = torch.linalg.vector_norm(residual, dim=(1, 2)) / torch.linalg.vector_norm(x, dim=(1, 2))
        values.append(float(per_example.mean()))
    return np.array(values, dtype=np.float64)


# --- softmax saturation: Vaswani et al.'s footnote 4 -------------------------------------------------------


@dataclass(frozen=True)
class SoftmaxSaturation:
    """The softmax of random dot-product logits, per dimension ``d`` (see :func:`softmax_saturation`);
    every array runs over ``d_values``, float64."""

    d_values: np.ndarray
    scaled: bool
    keys: int
    samples: int
    logit_std: np.ndarray
    jacobian_norm: np.ndarray
    max_probability: np.ndarray
    entropy: np.ndarray
    query_jacobian_norm: np.ndarray
    key_jacobian_norm: np.ndarray

    @property
    def max_entropy(self) -> float:
        """``log(keys)``, the entropy of uniform attention."""
        return math.log(self.keys)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per ``d``: ``d``, ``logit_std``, ``jacobian_norm``, ``max_probability``,
        ``entropy``, ``query_jacobian_norm``, ``key_jacobian_norm``. Needs pandas (``pip install
        "vglib[pandas]"``)."""
        from .tables import require_pandas

        return require_pandas().DataFrame(
            {
                "d": self.d_values,
                "logit_std": self.logit_std,
                "jacobian_norm": self.jacobian_norm,
                "max_probability": self.max_probability,
                "entropy": self.entropy,
                "query_jacobian_norm": self.query_jacobian_norm,
                "key_jacobian_norm": self.key_jacobian_norm,
            }
        )


def _softmax_jacobian(probs: torch.Tensor) -> torch.Tensor:
    """``diag(p) - p p^T`` over the last dimension (the diagonal as ``p (1 - p)``, which keeps its
    relative accuracy where ``p`` is small)."""
    jacobian = -probs.unsqueeze(-1) * probs.unsqueeze(-2)
    jacobian.diagonal(dim1=-2, dim2=-1).copy_(probs * (1 - probs))
    return jacobian


def _softmax_jacobian_norm(probs: torch.Tensor) -> torch.Tensor:
    """``||diag(p) - p p^T||_F`` over the last dimension, from the matrix itself."""
    return torch.linalg.vector_norm(_softmax_jacobian(probs), dim=(-2, -1))


_SAMPLES_PER_CHUNK = 2**22
"""Entries of ``k`` (or of the softmax Jacobians) held at once (32 MiB in float64)."""


def softmax_saturation(
    d_values: Sequence[int] | np.ndarray,
    *,
    scaled: bool,
    keys: int = 16,
    samples: int = 2000,
    seed: int = 0,
) -> SoftmaxSaturation:
    """Monte Carlo of Vaswani et al. 2017's footnote 4: why dot-product logits are scaled by ``1/sqrt(d)``.

    For each ``d`` in ``d_values``, ``samples`` independent draws of a query ``q`` and ``keys`` keys
    ``k_j``, every component independent ``N(0, 1)`` in dimension ``d``; the logits are ``q . k_j``
    (times ``1/sqrt(d)`` if ``scaled``) and ``p = softmax`` over the keys. Per ``d``, float64:

    - ``logit_std``: the sample standard deviation (``ddof=1``) of a draw's logits over its keys,
      root-mean-squared over the draws. Given ``q`` the logits are independent with variance
      ``||q||^2``, whose mean is ``d``: so ``sqrt(d)`` unscaled and 1 scaled, up to sampling error;
    - ``jacobian_norm``: the mean Frobenius norm of the softmax's Jacobian ``dp/dz = diag(p) - p p^T``,
      how much of the gradient reaching the probabilities passes back to the logits (for two keys
      ``2 p_1 (1 - p_1)``; 0 as the softmax saturates to one key);
    - ``max_probability``: the mean largest probability (``1/keys`` uniform, 1 saturated);
    - ``entropy``: the mean ``-sum_j p_j log p_j`` in nats (``log(keys)`` uniform, 0 saturated);
    - ``query_jacobian_norm``: the mean Frobenius norm of ``dp/dq = s J K`` (``keys x d``; ``s`` the
      logit scale, ``1/sqrt(d)`` or 1, ``J`` the softmax's Jacobian, ``K`` the keys as rows): what
      reaches the query. It is the softmax's Jacobian *times* ``dz/dq = s K``, whose size is
      ``sqrt(keys d)`` unscaled and ``sqrt(keys)`` scaled, so dropping the scale shrinks ``J`` but
      multiplies the other factor by ``sqrt(d)``;
    - ``key_jacobian_norm``: the mean Frobenius norm of ``dp/dK`` (``keys x keys x d``), which is
      ``s ||J||_F ||q||`` (``dp_i/dk_j = s J_ij q^T``).

    The Frobenius norm of a Jacobian ``A`` is the root-mean-square size of the gradient ``A^T g`` it
    passes back for a random upstream gradient ``g`` with independent ``N(0, 1)`` entries.

    The draws come from a generator seeded with ``seed`` (the global random state is left as it
    was); each ``d`` has its own stream of draws, so adding a value to ``d_values`` leaves the
    others' results as they were.
    """
    if not isinstance(scaled, bool):
        raise TypeError(f"scaled must be True or False, got {scaled!r}")
    check_positive_int("keys", keys, minimum=2)
    check_positive_int("samples", samples, minimum=2)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(d_values, str | bytes) or not isinstance(d_values, Sequence | np.ndarray):
        raise TypeError(f"d_values must be a sequence of positive ints, got {type(d_values).__name__}")
    dims = list(d_values.tolist() if isinstance(d_values, np.ndarray) else d_values)
    if not dims:
        raise ValueError("d_values must hold at least one dimension (a positive int), got an empty sequence")
    for d in dims:
        check_positive_int("every entry of d_values", d)
    columns: list[list[float]] = [[], [], [], [], [], []]
    for d in dims:
        per_d = np.random.SeedSequence([shifted_seed(seed), d]).generate_state(1)[0]  # one stream per d
        gen = torch.Generator().manual_seed(int(per_d))
        chunk = max(1, _SAMPLES_PER_CHUNK // (keys * max(d, keys)))
        scale = 1.0 / math.sqrt(d) if scaled else 1.0
        sums = np.zeros(6)
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            q = torch.randn(n, 1, d, generator=gen, dtype=torch.float64)
            k = torch.randn(n, keys, d, generator=gen, dtype=torch.float64)
            logits = (q * k).sum(-1) * scale
            probs = torch.softmax(logits, dim=-1)
            jacobian = _softmax_jacobian(probs)  # (n, keys, keys)
            jacobian_norm = torch.linalg.vector_norm(jacobian, dim=(-2, -1))
            sums += [
                float(logits.var(dim=-1, unbiased=True).sum()),
                float(jacobian_norm.sum()),
                float(probs.amax(-1).sum()),
                float(_entropy(probs).sum()),
                float(torch.linalg.vector_norm(scale * (jacobian @ k), dim=(-2, -1)).sum()),
                float((scale * jacobian_norm * torch.linalg.vector_norm(q, dim=(-2, -1))).sum()),
            ]
        means = sums / samples
        for column, value in zip(columns, (math.sqrt(means[0]), *means[1:]), strict=True):
            column.append(float(value))
    return SoftmaxSaturation(
        d_values=np.array(dims, dtype=np.int64),
        scaled=scaled,
        keys=keys,
        samples=samples,
        logit_std=np.array(columns[0]),
        jacobian_norm=np.array(columns[1]),
        max_probability=np.array(columns[2]),
        entropy=np.array(columns[3]),
        query_jacobian_norm=np.array(columns[4]),
        key_jacobian_norm=np.array(columns[5]),
    )


# --- the amplification of weight changes: Liu et al. 2020 (Admin) --------------------------------------


_PERTURBATIONS: tuple[str, ...] = ("absolute", "relative")
"""How :func:`output_change` sizes its random weight change: entrywise ``delta`` for every matrix,
or ``delta`` times each matrix's own root-mean-square entry."""


@torch.no_grad()
def output_change(
    model: Transformer,
    tokens: torch.Tensor,
    *,
    delta: float,
    perturbation: str = "absolute",
    samples: int = 8,
    seed: int = 0,
) -> float:
    """How much a small random change of every block weight moves the residual stream's output:
    Liu et al. 2020 (Admin)'s amplification measure ``E ||F(x; W + dW) - F(x; W)||^2``, relative.

    On a float64 copy of ``model``: ``F(x; W)`` is the stream leaving the last block (the input of
    ``final_norm``, a ``(batch, seq, width)`` tensor, every example and position of ``tokens``). Each
    of ``samples`` perturbations adds to every weight matrix of the blocks (:data:`BLOCK_WEIGHTS`:
    ``q``, ``k``, ``v``, ``out`` and the MLP's two; not biases, norms, embeddings, the head or the
    residual scales) a random ``dW`` with independent normal entries of standard deviation

    - ``perturbation="absolute"`` (the default): ``delta``, the same for every matrix of every
      model, whatever its weights (an optimiser step such as Adam's moves every entry by about the
      learning rate, whatever the weight's size);
    - ``perturbation="relative"``: ``delta * ||W||_F / sqrt(numel(W))``, a change of relative size
      ``delta`` (``E ||dW||_F^2 = delta^2 ||W||_F^2``). For a remedy that initialises some weights
      smaller (DeepNorm's and T-Fixup's ``beta``) this perturbs those weights less in absolute
      terms, so it mixes the model's sensitivity with the size of its weights.

    The result is the mean over the perturbations of ``||F(x; W + dW) - F(x; W)||_F^2 /
    ||F(x; W)||_F^2`` (0 for ``delta = 0``; about ``delta^2`` times a depth-dependent amplification
    for small ``delta``).

    Why the stream and not the head's output: the head reads one position through a random
    projection that is not perturbed, and pre-LN's ``final_norm`` would divide out the stream's
    growth with depth; the stream leaving the last block is the "output of the layers" whose
    dependence on their residual branches Liu et al. analyse, the same tensor for every norm
    placement. The output's change is divided by its size because a pre-LN stream's size grows
    with depth while a post-LN stream's is fixed by its last layer norm.

    ``seed`` seeds the perturbations' generator (the global random state is left as it was); the
    model is left as it was.
    """
    _check_model(model)
    tokens = _check_tokens(tokens)
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise TypeError(f"delta must be a number >= 0, got {delta!r}")
    if not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    check_choice("perturbation", perturbation, _PERTURBATIONS)
    check_positive_int("samples", samples)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    twin = _twin(model, torch.float64)
    stream, _ = _stream_inputs(twin, tokens)
    base = stream[-1].clone()
    base_square = float(base.pow(2).sum())
    if base_square == 0.0:
        raise ValueError("the stream leaving the last block is 0: its relative change is undefined")
    matrices = [w for block in twin.blocks for w in _weights(block).values() if w is not None]
    originals = [w.detach().clone() for w in matrices]
    scales = [
        delta * float(torch.linalg.vector_norm(w0)) / math.sqrt(w0.numel())
        if perturbation == "relative"
        else float(delta)
        for w0 in originals
    ]
    gen = generator(seed)
    ratios = []
    for _ in range(samples):
        for w, w0, scale in zip(matrices, originals, scales, strict=True):
            w.copy_(w0 + scale * torch.randn(w0.shape, generator=gen, dtype=torch.float64))
        moved, _ = _stream_inputs(twin, tokens)
        ratios.append(float((moved[-1] - base).pow(2).sum()) / base_square)
    return float(np.mean(ratios))


# --- the explorer's frames -----------------------------------------------------------------------------

TRANSFORMER_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "pre-LN": ("pre", "plain"),
    "pre-LN + ReZero": ("pre", "rezero"),
    "pre-LN + LayerScale": ("pre", "layerscale"),
    "post-LN": ("post", "plain"),
    "post-LN + DeepNorm": ("post", "deepnorm"),
    "post-LN + ReZero": ("post", "rezero"),
    "post-LN + LayerScale": ("post", "layerscale"),
    "no norm": ("none", "plain"),
    "no norm + ReZero": ("none", "rezero"),
    "no norm + LayerScale": ("none", "layerscale"),
    "no norm + T-Fixup": ("none", "tfixup"),
}
"""Every valid ``(norm, residual)`` combination of :func:`~vglib.transformers.build_transformer`,
under a readable label (the transformers chapter's explorer offers them in this order)."""


def stream_frame(
    architecture: str, depth: int, tokens: torch.Tensor, targets: torch.Tensor, *, seed: int = 0
) -> tuple[str, list[np.ndarray]]:
    """One explorer frame: the residual stream of ``build_transformer(depth, norm=..., residual=...,
    seed=seed)`` at initialisation, for the :data:`TRANSFORMER_ARCHITECTURES` label ``architecture``.

    Returns ``(title, [grad_norms, rms])``: ``||dL/dx_l||`` at the ``depth + 1`` stream points
    (:func:`transformer_profile`) and the stream's root-mean-square token norm
    ``sqrt(mean_squares)``; the title gives ``||dL/dx_0|| / ||dL/dx_L||``. A frame function for
    :func:`~vglib.widgets.curve_explorer`.
    """
    if architecture not in TRANSFORMER_ARCHITECTURES:
        choices = ", ".join(repr(a) for a in TRANSFORMER_ARCHITECTURES)
        raise ValueError(f"architecture must be one of {choices}; got {architecture!r}")
    check_positive_int("depth", depth)
    norm, residual = TRANSFORMER_ARCHITECTURES[architecture]
    from .transformers import build_transformer

    model = build_transformer(depth, norm=norm, residual=residual, seed=seed)
    profile = transformer_profile(model, tokens, targets)
    title = f"{architecture}, depth {depth}: ‖∂L/∂x_0‖ / ‖∂L/∂x_L‖ = {profile.first_to_last():.2g}"
    return title, [profile.grad_norms, np.sqrt(profile.mean_squares)]
