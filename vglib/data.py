"""Synthetic data made locally: nothing is downloaded."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import torch

from ._seed import generator as seeded_generator
from ._validation import check_positive_int
from .models import build_mlp

__all__ = [
    "ADDING_BASELINE_MSE",
    "RECALL_KEYS",
    "RECALL_LENGTH",
    "RECALL_PAIRS",
    "RECALL_VALUES",
    "adding_problem",
    "associative_recall",
    "probe_batch",
    "recall_bag_accuracy",
    "recall_dims",
    "teacher_student",
]


def probe_batch(
    in_features: int, out_features: int = 1, batch_size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch for measuring gradients: inputs ``x ~ N(0, I)`` and regression targets ``y ~ N(0, I)``.

    Unit-variance inputs are what the initialisation schemes assume, so what a profile shows is
    the network's doing, not the data's. The global RNG state is left as it was.
    """
    check_positive_int("in_features", in_features)
    check_positive_int("out_features", out_features)
    check_positive_int("batch_size", batch_size)
    generator = seeded_generator(seed)
    x = torch.randn(batch_size, in_features, generator=generator)
    y = torch.randn(batch_size, out_features, generator=generator)
    return x, y


ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1 on the adding problem: the variance of a sum of two U(0, 1)."""


def adding_problem(n_sequences: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem in the form Le et al. (2015) used; Hochreiter & Schmidhuber's (1997)
    original draws the values from [-1, 1], marks the first number among the first ten steps, and
    asks for 0.5 + (X1 + X2) / 4.

    Each sequence has ``length`` steps of two features: a value ``U(0, 1)`` and a marker that is
    1 at exactly two steps, one in each half of the sequence, 0 elsewhere. The target is the sum
    of the two marked values. ``x`` has shape ``(n_sequences, length, 2)``, ``y`` ``(n_sequences, 1)``.
    Predicting 1 whatever the input scores ``ADDING_BASELINE_MSE`` = 1/6; beating it needs memory
    across up to ``length`` steps.
    """
    check_positive_int("n_sequences", n_sequences)
    check_positive_int("length", length, minimum=2)
    generator = seeded_generator(seed)
    values = torch.rand(n_sequences, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n_sequences,), generator=generator)
    second = torch.randint(half, length, (n_sequences,), generator=generator)
    markers = torch.zeros(n_sequences, length)
    rows = torch.arange(n_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)
    return x, y


def teacher_student(
    n_examples: int, in_features: int = 16, seed: int = 0, teacher_seed: int = 1234
) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable regression task: ``x ~ N(0, I)`` and ``y = teacher(x)``, where the teacher is a
    fixed random 2-layer tanh network (Xavier init, width 32) and ``y`` is scaled to unit variance
    over this draw. A student that learns reaches a loss far below 1, the loss of predicting 0.
    ``teacher_seed`` fixes the teacher, ``seed`` the inputs, so train and test sets share a teacher.
    """
    check_positive_int("n_examples", n_examples)
    check_positive_int("in_features", in_features)
    teacher = build_mlp(2, 32, "tanh", "xavier", seed=teacher_seed, in_features=in_features)
    x = torch.randn(n_examples, in_features, generator=seeded_generator(seed))
    with torch.no_grad():
        y = teacher(x)
    return x, y / _teacher_scale(teacher, in_features)


def _teacher_scale(teacher: torch.nn.Module, in_features: int) -> float:
    """The teacher's output standard deviation over a large fixed probe, so every draw shares it."""
    probe = torch.randn(20_000, in_features, generator=seeded_generator(0))
    with torch.no_grad():
        return float(teacher(probe).std())


RECALL_PAIRS = 4
"""``associative_recall``'s default number of key-value pairs per sequence."""
RECALL_KEYS = 8
"""``associative_recall``'s default number of key tokens."""
RECALL_VALUES = 8
"""``associative_recall``'s default number of value tokens (and classes)."""
RECALL_LENGTH = 12
"""``associative_recall``'s default sequence length: 4 pairs, 3 filler tokens and the query."""


def _check_recall(pairs: int, keys: int, values: int, length: int) -> None:
    check_positive_int("pairs", pairs)
    check_positive_int("keys", keys)
    check_positive_int("values", values, minimum=2)
    check_positive_int("length", length)
    if keys < pairs:
        raise ValueError(
            f"keys must be >= pairs (the keys of a sequence are distinct), got keys={keys}, pairs={pairs}"
        )
    if length < 2 * pairs + 1:
        raise ValueError(
            f"length must be >= 2 pairs + 1 (the pairs and the query), got length={length}, pairs={pairs}"
        )


def recall_dims(
    pairs: int = RECALL_PAIRS,
    keys: int = RECALL_KEYS,
    values: int = RECALL_VALUES,
    length: int = RECALL_LENGTH,
) -> tuple[int, int, int]:
    """``(vocab, seq_len, out_features)`` of :func:`associative_recall`: ``keys + values + 1``
    tokens (the last is the filler), ``length`` positions, ``values`` classes.
    ``build_transformer(depth, vocab=..., max_len=..., out_features=...)`` takes them as they come;
    its defaults are ``recall_dims()``."""
    _check_recall(pairs, keys, values, length)
    return keys + values + 1, length, values


def associative_recall(
    n_examples: int,
    pairs: int = RECALL_PAIRS,
    keys: int = RECALL_KEYS,
    values: int = RECALL_VALUES,
    length: int = RECALL_LENGTH,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative recall with the pairs at random places: ``P = pairs`` key-value pairs ``k v``
    and ``F = length - 1 - 2 P`` filler tokens in a random order, then a query key ``q``; the target
    is the value that followed ``q``.

    The ``P`` keys of a sequence are distinct tokens drawn from ``[0, keys)``; the values are drawn
    with replacement from ``[keys, keys + values)``; the filler is the token ``keys + values``. The
    ``P`` pairs (each a key with its value right after it) and the ``F`` fillers are arranged
    uniformly at random, so a pair can start at any position that leaves room for the others. The
    query, at the last position, is one of the sequence's keys, chosen uniformly. The target is the
    class ``v - keys`` (in ``0 .. values-1``) of the value that follows the query key. Returns
    ``tokens``, a LongTensor ``(n_examples, length)``, and ``targets``, a LongTensor
    ``(n_examples,)``; see :func:`recall_dims` for the vocabulary size. The global RNG state is left
    as it was. With the defaults (4 pairs, 8 keys, 8 values, length 12) a sequence looks like
    ``k1 v1 _ k2 v2 _ _ k3 v3 k4 v4 q``.

    What it takes: the answer is set by *which value stands next to* the key that the query
    repeats, wherever that pair sits. A model of the tokens' multiset alone (a bag of tokens) sees
    which keys and values occur but not how they pair; its best accuracy is
    :func:`recall_bag_accuracy` (0.41 with the defaults), above the ``1/values`` of a blind guess
    but far from 1. With the pairs at fixed positions (``length = 2 pairs + 1``) a one-hidden-layer
    ReLU network on the flattened one-hot sequence learns the task from enough examples (0.999 test
    accuracy from 60,000); with the pairs at random places it has to learn the pairing at every
    offset, and from 20,000 training sequences it learns little beyond the bag bound (0.44 test
    accuracy at its best rate in ``benchmarks/transformer_training.py``'s MLP baseline, while it
    fits 0.87 of the sequences it trained on). A transformer solves it by attention: a
    previous-token head writes each key into its value's position, and the query attends to the
    position whose previous token matches it (an induction head; Olsson et al. 2022).
    """
    check_positive_int("n_examples", n_examples)
    _check_recall(pairs, keys, values, length)
    generator = seeded_generator(seed)
    chosen_keys = torch.rand(n_examples, keys, generator=generator).argsort(dim=1)[:, :pairs]
    chosen_values = torch.randint(0, values, (n_examples, pairs), generator=generator)
    query = torch.randint(0, pairs, (n_examples,), generator=generator)
    items = length - 1 - pairs  # the P pairs and the F fillers, in a random order
    order = torch.rand(n_examples, items, generator=generator).argsort(dim=1)[:, :pairs]
    is_pair = torch.zeros(n_examples, items, dtype=torch.bool).scatter_(1, order, True)
    size = 1 + is_pair.long()
    starts = (torch.cumsum(size, dim=1) - size)[is_pair].view(n_examples, pairs)  # in order
    rows = torch.arange(n_examples)
    tokens = torch.full((n_examples, length), keys + values, dtype=torch.long)
    tokens[rows[:, None], starts] = chosen_keys
    tokens[rows[:, None], starts + 1] = keys + chosen_values
    tokens[:, -1] = chosen_keys[rows, query]
    return tokens, chosen_values[rows, query].clone()


def recall_bag_accuracy(pairs: int = RECALL_PAIRS, values: int = RECALL_VALUES) -> float:
    """The best accuracy on :func:`associative_recall` of any function of the tokens' multiset:
    ``E[max_v count(v)] / pairs``, the expected count of the most frequent of ``pairs`` values drawn
    uniformly from ``values``, divided by ``pairs``.

    Given the multiset, the sequence of values is a uniformly random arrangement of its values
    (they are i.i.d.), independent of the order of the keys, so the query's value is each value
    ``v`` of the multiset with probability ``count(v) / pairs``; predicting the most frequent value
    is optimal. Computed exactly: ``P(max count <= m)`` is the number of sequences in which every
    value occurs at most ``m`` times, ``pairs! [x^pairs] (sum_{j<=m} x^j / j!)^values``, over
    ``values^pairs``. (The number of keys does not enter.)
    """
    check_positive_int("pairs", pairs)
    check_positive_int("values", values, minimum=2)
    total = values**pairs

    def at_most(m: int) -> int:  # sequences of length `pairs` with every count <= m
        # ways[n]: sequences of length n over the values seen so far, each count <= m
        ways = [1] + [0] * pairs
        for _ in range(values):
            ways = [sum(ways[n - j] * comb(n, j) for j in range(min(m, n) + 1)) for n in range(pairs + 1)]
        return ways[pairs]

    cdf = [Fraction(at_most(m), total) for m in range(pairs + 1)]
    expected_max = sum(m * (cdf[m] - cdf[m - 1]) for m in range(1, pairs + 1))
    return float(expected_max / pairs)
