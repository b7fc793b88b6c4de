"""The training comparisons of the transformers chapter: learning-rate warm-up for post-LN and pre-LN
(Xiong et al. 2020), and residual scaling for deep stacks (DeepNorm, ReZero, T-Fixup, LayerScale),
on the associative recall task, with the equal tuning of ``vglib.grid``.

**Task.** :func:`~vglib.data.associative_recall` with its defaults (4 key-value pairs at random
places among 3 filler tokens, then the query: sequences of 12 over 17 tokens, 8 classes), in three
fixed splits (``RECALL_SPLITS``): 20,000 training sequences (seed 160), 1,000 validation sequences
(seed 161) and 1,000 test sequences (seed 162). About 963 million sequences exist, so a validation
or test sequence is in the training split with probability about 0.002 %. Chance is 1/8; a model of
the tokens' multiset reaches at best :func:`~vglib.data.recall_bag_accuracy` (0.41); a
one-hidden-layer MLP on the flattened one-hot sequence, trained with the same budget and grid
(:func:`train_recall_mlp`), fits much of the training split but reaches little more than that
bound on new sequences (0.44 at its best rate).

**Models.** :func:`~vglib.transformers.build_transformer` with its defaults (width 32, 4 heads, MLP
ratio 4, the head reading the last position) and causal attention, one :class:`TransformerConfig`
per placement and residual scaling; the model seed is the run's seed.

**Training.** Adam (``vglib.train(..., optimizer="adam")``, PyTorch's betas (0.9, 0.999), no weight
decay; Xiong et al. used betas (0.9, 0.98)), minibatches of ``RECALL_BATCH`` = 64 drawn with the
run's seed, for a fixed budget of ``SweepSettings.steps`` updates (1,500 in the sweep: in pilots at
lr 1e-3, causal pre-LN and post-LN at 6 blocks sat near the bag bound for 500-750 updates and were
at 0.99 by update 750-1,000; the budget leaves room for other rates and deeper stacks to make the
same jump). Warm-up, where a run has it, is ``vglib.train``'s linear warm-up over
``SweepSettings.warmup_steps`` = 10 % of the budget (150 updates; Xiong et al. warmed up over 4,000
updates of a much longer run), with no decay after it. Experiment B tries every learning rate of
``vglib.grid.GRID_LRS`` (2.2e-5 to 1, a factor 4.6 apart), experiment A ``WARMUP_LRS`` (the same
with three midpoints added where the rates that train lie); seeds ``vglib.HARNESS_SEEDS``.

**Metric.** Validation and test accuracy every ``SweepSettings.eval_every`` = 50 updates (so a step
count to the threshold is known to within 50). Per group (one configuration, with or without
warm-up) the learning rate is chosen as ``vglib.grid.choose_lr`` chooses it (its code is reused):
the best median final *validation* accuracy over the seeds, among the rates at which no seed
diverged; the *test* accuracy is read at that rate only. A run *trains* when its final test accuracy
reaches ``RECALL_THRESHOLD`` = 0.9, fixed before the runs: far above the bag bound (0.41) and chance
(0.125), so only a model that found the key-value pairing passes. Steps to the threshold: the first
evaluation at which the test accuracy reaches it (``vglib.grid.steps_to``).

**Batched training.** The sweep trains each *group* (one configuration with one warm-up setting:
every rate of ``SweepSettings.rates(config)`` times every seed: 24 runs in the full sweep, 33 in
experiment A's groups) as one batched
ensemble (:func:`train_recall_group`, by ``vglib.ensemble.train_ensemble``: one vmapped forward and
backward pass for all members, Adam over the stacked weights). Small transformers on a CPU spend much
of their time in per-operation overhead, which the batch shares: a group of 24 trains 1.8 times
faster than its runs one at a time at 6 blocks and 1.45 times faster at 24 (measured on the earlier,
bidirectional task of length 9, in
``benchmarks/transformer_training.py``'s docstring). Each member follows
its run by :func:`train_recall` (the same model, minibatches, warm-up and Adam) up to
floating-point rounding, as the batched products sum in another order; training amplifies such
rounding, so the recorded numbers are the batched ones, and the exact re-check re-runs a group.
:func:`train_recall` stays the reference of one run.

**Divergence.** A run whose training loss becomes non-finite is recorded as diverged
(``RecallRun.diverged_at``, the update whose loss was non-finite; NaN accuracies at every
evaluation from there on). This is the only early stop: a run that stalls trains for the whole
budget. The check reads the logits of each training minibatch (a non-finite loss has non-finite
logits, as cross-entropy of finite logits is finite); a gradient that overflows while the loss is
finite makes the weights, hence the next update's logits, non-finite, and is caught one update
later. :func:`train_recall` stops there; in a group the diverged member trains on (its arithmetic
is independent of the others') and its results are NaN from that update on
(``train_ensemble(..., stop_at_divergence=True)``), which records the same.

**Denormals.** Once attention sharpens, subnormal floats (below about 1.2e-38) appear in the
backward pass and make every step 10-30 times slower on x86 CPUs. :func:`train_recall` flushes them
to zero for the run (``torch.set_flush_denormal(True)``) and switches that off again afterwards
(PyTorch's default; PyTorch has no getter to restore another state). Flushing changes only numbers
below about 1e-38, and every recorded run and its re-check use it; :func:`train_recall_group` does
the same around its ensemble.

**Determinism.** Each run is seeded through vglib (model, minibatches) and leaves the global RNG
alone; its bits depend on the thread count and the CPU's kernel path, so the sweep
(``benchmarks/transformer_training.py``) runs each group on one torch thread, in worker processes
(``vglib.harness.map_in_processes``), on the pinned kernel path of ``vglib.records.RECORDING_PATH``,
and ``tests/test_transformer_training.py`` re-runs the first updates of a random recorded group
there and compares them exactly.

**The experiments** (``SweepSettings.jobs``):

- ``A`` (warm-up): post-LN and pre-LN, both plain, at ``WARMUP_DEPTH`` = 6 blocks (the depth of
  Xiong et al.'s encoder and decoder; deep enough for post-LN's gradient at the last layers to stand
  out, shallow enough that pre-LN needs no help), each with and without warm-up.
- ``B`` (residual scaling): ``SCALING_VARIANTS`` (plain pre-LN, plain post-LN, DeepNorm, ReZero,
  T-Fixup, LayerScale) at ``SCALING_DEPTHS`` = 6 and 24 blocks, without warm-up, since each remedy
  is meant to train deep stacks without it (T-Fixup's and ReZero's papers train without it;
  DeepNorm's and CaiT's recipes keep a warm-up, so this is a harder test for them), on
  ``GRID_LRS`` at 6 blocks and on ``DEEP_LRS`` (four of its rates) at 24. 24 is the
  deepest stack whose runs the sweep affords on this CPU (one at a time, a 24-block run takes about
  115 CPU-seconds for the budget, 3-4 times a 6-block one, and a 48-block run about 225; batched,
  see ``benchmarks/transformer_training.py``), and
  the depth at which CaiT's LayerScale starts at 1e-5 and DeepNet already found post-LN unstable
  (18 blocks each side).

Experiment B's plain runs at depth 6 are experiment A's runs without warm-up (B chooses their rate
among ``GRID_LRS`` only, as for every remedy): a run is stored once and keyed by ``(configuration,
lr, seed, warmup_steps)``. The MLP baseline (:func:`train_recall_mlp`) is stored beside the runs.
:func:`save_recall_runs` and :func:`load_recall_runs` write and read the plain JSON results file
(``RESULTS_FILE``); :func:`choose_recall_lr`, :func:`summarize_recall`, :func:`spread_by_lr` and
:func:`warmup_relation` are what the chapter calls.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._seed import SeedSpread, torch_seed
from ._validation import check_choice, check_positive_int
from .data import associative_recall, recall_bag_accuracy, recall_dims
from .ensemble import train_ensemble
from .grid import GRID_LRS, GridCell, choose_lr, steps_to
from .harness import HARNESS_SEEDS, map_in_processes
from .train import train
from .transformers import NORM_PLACEMENTS, RESIDUAL_SCALINGS, Transformer, build_transformer

__all__ = [
    "DEEP_LRS",
    "EXPERIMENTS",
    "FULL_SWEEP",
    "MLP_HIDDEN",
    "RECALL_BATCH",
    "RECALL_SPLITS",
    "RECALL_THRESHOLD",
    "SCALING_DEPTHS",
    "SCALING_VARIANTS",
    "TRIAL_SWEEP",
    "WARMUP_DEPTH",
    "WARMUP_LRS",
    "BaselineRun",
    "EarlyGradients",
    "RecallJob",
    "RecallMLP",
    "RecallRun",
    "RecallSummary",
    "SweepSettings",
    "TransformerConfig",
    "baseline_from_json",
    "baseline_to_json",
    "build_recall_mlp",
    "choose_recall_lr",
    "early_gradients",
    "load_recall_baseline",
    "load_recall_runs",
    "rates_that_train",
    "recall_chance",
    "recall_splits",
    "run_recall_baseline",
    "run_recall_groups",
    "run_recall_jobs",
    "runs_from_json",
    "runs_to_json",
    "save_recall_runs",
    "spread_by_lr",
    "summarize_baseline",
    "summarize_recall",
    "tied_rates",
    "train_recall",
    "train_recall_group",
    "train_recall_mlp",
    "warmup_relation",
]

RESULTS_FILE = "benchmarks/results/transformer_training.json"
"""Where the sweep's results live, relative to the repository root."""
RECALL_SPLITS: dict[str, tuple[int, int]] = {
    "train": (20_000, 160),
    "validation": (1_000, 161),
    "test": (1_000, 162),
}
"""``split -> (number of sequences, seed)`` of the fixed splits of ``associative_recall``."""
RECALL_BATCH = 64
"""Sequences per minibatch."""
RECALL_THRESHOLD = 0.9
"""The final test accuracy at which a run counts as trained (bag bound 0.41, chance 0.125)."""
WARMUP_DEPTH = 6
"""Blocks of experiment A's models (Xiong et al.'s 6-layer encoder and decoder)."""
WARMUP_LRS: tuple[float, ...] = tuple(
    sorted(GRID_LRS + tuple(math.sqrt(a * b) for a, b in pairwise(GRID_LRS[2:6])))
)
"""The learning rates of experiment A (warm-up): ``GRID_LRS`` with the geometric midpoints of its
steps from 4.6e-4 to 4.6e-2 added (1e-3, 4.6e-3, 2.2e-2), a factor 10^(1/3) apart where the
rates that train lie, so that the edge where post-LN stops training without warm-up is located
more finely. Every group of the experiment (pre- and post-LN, with and without warm-up) uses all of
them; experiment B chooses among ``GRID_LRS`` only, as every remedy there."""
SCALING_DEPTHS: tuple[int, ...] = (6, 24)
DEEP_LRS: tuple[float, ...] = GRID_LRS[1:5]
"""The learning rates of experiment B at 24 blocks: the four of ``GRID_LRS`` from 1e-4 to 1e-2,
fixed from the 6-block runs before any 24-block run. At 6 blocks every variant reached the
threshold only at 4.6e-4, 2.2e-3 or 1e-2 (in at least one seed), and none came near it (best
accuracy 0.43 or less) at the other five rates; the grid keeps the trainable three and the next
rate below, since a deeper stack is expected to need a smaller rate (Wang et al. 2022), and drops
2.2e-5 and the three rates from 4.6e-2 up. A 24-block run costs about 120 CPU-seconds (measured),
so the four rates save half of the 6 CPU-hours the whole grid would take; a variant whose chosen
rate is an end of this grid is flagged (``RecallSummary``'s edge)."""
"""Depths of experiment B."""
SCALING_VARIANTS: tuple[tuple[str, str], ...] = (
    ("pre", "plain"),
    ("post", "plain"),
    ("post", "deepnorm"),
    ("none", "rezero"),
    ("none", "tfixup"),
    ("pre", "layerscale"),
)
"""``(norm, residual)`` of experiment B: plain pre-LN, plain post-LN, DeepNorm, ReZero (no norm, as
in the paper), T-Fixup (no norm) and LayerScale (pre-LN, CaiT's initial value by depth)."""
EXPERIMENTS: tuple[str, ...] = ("A", "B", "all")
"""What ``SweepSettings.jobs`` takes: the warm-up experiment, the residual-scaling one, or both."""

_LABELS = {
    ("pre", "plain"): "pre-LN",
    ("post", "plain"): "post-LN",
    ("none", "plain"): "no LN",
    ("post", "deepnorm"): "DeepNorm (post-LN)",
    ("none", "tfixup"): "T-Fixup (no LN)",
}


def recall_chance() -> float:
    """The accuracy of a blind guess on the recall task: one over the number of values (0.125)."""
    return 1.0 / recall_dims()[2]


@dataclass(frozen=True)
class TransformerConfig:
    """One model of the comparisons: ``build_transformer(depth, width, heads, norm=norm,
    residual=residual, causal=causal, seed=seed)`` with the recall task's dimensions. The models
    are causal (each position attends to itself and the positions before it), as in the
    decoder-only language models readers train; a causal stack learns the recall task several times
    faster than a bidirectional one (a pilot at 2 blocks: about 500 updates against 2,200)."""

    norm: str
    residual: str = "plain"
    depth: int = WARMUP_DEPTH
    width: int = 32
    heads: int = 4
    causal: bool = True

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, NORM_PLACEMENTS)
        check_choice("residual", self.residual, RESIDUAL_SCALINGS)
        for name in ("depth", "width", "heads"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.causal, bool):
            raise TypeError(f"causal must be a bool, got {type(self.causal).__name__}")
        # build_transformer's own checks (combinations, width % heads), on a model of one block
        build_transformer(1, self.width, self.heads, norm=self.norm, residual=self.residual)

    @property
    def label(self) -> str:
        """E.g. ``"pre-LN, 6 blocks"``, ``"ReZero (no LN), 24 blocks"``."""
        name = _LABELS.get((self.norm, self.residual))
        if name is None:
            placement = {"pre": "pre-LN", "post": "post-LN", "none": "no LN"}[self.norm]
            remedy = {"rezero": "ReZero", "layerscale": "LayerScale", "plain": "plain"}[self.residual]
            name = f"{remedy} ({placement})"
        return f"{name}, {self.depth} blocks"

    def build(self, seed: int) -> Transformer:
        """The model of seed ``seed``, sized for ``associative_recall``'s defaults."""
        vocab, seq_len, classes = recall_dims()
        return build_transformer(
            self.depth, self.width, self.heads, norm=self.norm, residual=self.residual, vocab=vocab,
            max_len=seq_len, out_features=classes, causal=self.causal, seed=seed,
        )  # fmt: skip


@dataclass(frozen=True)
class RecallJob:
    """One run to make: a configuration, a learning rate, a seed and a warm-up length (0: none)."""

    config: TransformerConfig
    lr: float
    seed: int
    warmup_steps: int = 0


@dataclass(frozen=True)
class RecallRun:
    """One trained run: its job, the validation and test accuracy after every ``eval_every``
    updates (``eval_steps``; NaN from the evaluation at or after ``diverged_at`` on), the update
    whose training loss was non-finite (``None``: it never was), and the run's wall time
    (``seconds``) and CPU time (``cpu_seconds``, the process time of a one-thread run, which a shared
    machine does not inflate) in seconds; the times are not part of what a re-run must reproduce."""

    job: RecallJob
    eval_steps: tuple[int, ...]
    validation: tuple[float, ...]
    test: tuple[float, ...]
    diverged_at: int | None = None
    seconds: float = field(default=math.nan, compare=False)
    cpu_seconds: float = field(default=math.nan, compare=False)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final_validation(self) -> float:
        """The validation accuracy at the end of the budget (NaN where the run diverged)."""
        return self.validation[-1]

    @property
    def final_test(self) -> float:
        """The test accuracy at the end of the budget (NaN where the run diverged)."""
        return self.test[-1]

    def trained(self, threshold: float = RECALL_THRESHOLD) -> bool:
        """Whether the final test accuracy reaches ``threshold`` (a diverged run never does)."""
        return math.isfinite(self.final_test) and self.final_test >= threshold

    def as_cell(self) -> GridCell:
        """The run as a ``vglib.grid.GridCell`` (remedy: its configuration's label; task:
        ``"recall"`` with ``" + warm-up"`` where it warmed up), for the grid's rules."""
        task = "recall + warm-up" if self.job.warmup_steps else "recall"
        return GridCell(self.job.config.label, task, self.job.lr, self.job.seed, self.eval_steps,
                        self.validation, self.test)  # fmt: skip


@dataclass(frozen=True)
class SweepSettings:
    """The budget and the grid of one sweep: ``FULL_SWEEP`` (the chapter's) or ``TRIAL_SWEEP``
    (a small one that tries the machinery in a few minutes). ``lrs``: the rates of every group;
    ``warmup_lrs``: experiment A's instead, a superset of ``lrs`` (None: ``lrs``); ``deep_lrs``:
    those of experiment B's groups deeper than ``warmup_depth``, a subset of ``lrs`` (None:
    ``lrs``); see :meth:`rates`."""

    steps: int = 1_500
    eval_every: int = 50
    warmup_steps: int = 150
    lrs: tuple[float, ...] = GRID_LRS
    warmup_lrs: tuple[float, ...] | None = None
    deep_lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = HARNESS_SEEDS
    warmup_depth: int = WARMUP_DEPTH
    scaling_depths: tuple[int, ...] = SCALING_DEPTHS
    variants: tuple[tuple[str, str], ...] = SCALING_VARIANTS

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("eval_every", self.eval_every)
        check_positive_int("warmup_steps", self.warmup_steps)
        if self.steps % self.eval_every:
            raise ValueError(
                f"steps must be a multiple of eval_every, got {self.steps} and {self.eval_every}"
            )
        for name in ("lrs", "warmup_lrs", "deep_lrs"):
            rates = getattr(self, name)
            if rates is None and name != "lrs":
                continue
            if not rates or any(not (isinstance(v, float) and v > 0) for v in rates):
                raise ValueError(f"{name} must be one or more floats > 0, got {rates!r}")
            if list(rates) != sorted(set(rates)):
                raise ValueError(f"{name} must be increasing, got {rates!r}")
        if self.warmup_lrs is not None and not set(self.lrs) <= set(self.warmup_lrs):
            raise ValueError("warmup_lrs must hold every rate of lrs (experiment B's plain groups at "
                             "warmup_depth are experiment A's)")  # fmt: skip
        if self.deep_lrs is not None and not set(self.deep_lrs) <= set(self.lrs):
            raise ValueError(f"deep_lrs must be rates of lrs, got {self.deep_lrs!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct ints, at least one, got {self.seeds!r}")

    def groups(self, experiment: str = "all") -> list[tuple[TransformerConfig, int]]:
        """The groups ``(configuration, warmup_steps)`` of experiment ``"A"`` (warm-up), ``"B"``
        (residual scaling) or ``"all"`` (both; a group the two share is listed once), the deepest
        first, so that worker processes finish together. A group's runs are every rate of ``lrs``
        times every seed of ``seeds``, trained together by :func:`train_recall_group`."""
        check_choice("experiment", experiment, EXPERIMENTS)
        groups: list[tuple[TransformerConfig, int]] = []
        if experiment in ("A", "all"):
            for norm in ("post", "pre"):
                config = TransformerConfig(norm, depth=self.warmup_depth)
                groups += [(config, 0), (config, self.warmup_steps)]
        if experiment in ("B", "all"):
            groups += [(TransformerConfig(n, r, depth=d), 0) for d in self.scaling_depths
                       for n, r in self.variants]  # fmt: skip
        return sorted(dict.fromkeys(groups), key=lambda g: -g[0].depth)

    def rates(self, config: TransformerConfig) -> tuple[float, ...]:
        """The learning rates of ``config``'s groups: ``warmup_lrs`` for experiment A's models
        (plain pre- and post-LN at ``warmup_depth``; ``lrs`` where ``warmup_lrs`` is None),
        ``deep_lrs`` for the models deeper than ``warmup_depth`` (``lrs`` where it is None), ``lrs``
        for every other."""
        in_a = config.depth == self.warmup_depth and config.residual == "plain" and config.norm != "none"
        if in_a and self.warmup_lrs is not None:
            return self.warmup_lrs
        if config.depth > self.warmup_depth and self.deep_lrs is not None:
            return self.deep_lrs
        return self.lrs

    def jobs(self, experiment: str = "all") -> list[RecallJob]:
        """The runs of :meth:`groups` (each run once), group by group, each group's in the order
        rate (:meth:`rates`), then seed."""
        return [RecallJob(c, lr, s, w) for c, w in self.groups(experiment) for lr in self.rates(c)
                for s in self.seeds]  # fmt: skip

    def to_json(self) -> dict:
        return {**asdict(self), "variants": [list(v) for v in self.variants]}

    @classmethod
    def from_json(cls, data: dict) -> SweepSettings:
        return cls(
            steps=int(data["steps"]), eval_every=int(data["eval_every"]),
            warmup_steps=int(data["warmup_steps"]), lrs=tuple(float(v) for v in data["lrs"]),
            warmup_lrs=None if data["warmup_lrs"] is None else tuple(float(v) for v in data["warmup_lrs"]),
            deep_lrs=None if data.get("deep_lrs") is None else tuple(float(v) for v in data["deep_lrs"]),
            seeds=tuple(int(s) for s in data["seeds"]), warmup_depth=int(data["warmup_depth"]),
            scaling_depths=tuple(int(d) for d in data["scaling_depths"]),
            variants=tuple((str(n), str(r)) for n, r in data["variants"]),
        )  # fmt: skip


FULL_SWEEP = SweepSettings(warmup_lrs=WARMUP_LRS, deep_lrs=DEEP_LRS)
"""The chapter's sweep: 1,500 updates, warm-up over 150, every rate of ``WARMUP_LRS`` for A, of
``GRID_LRS`` for B at 6 blocks and of ``DEEP_LRS`` for B at 24, seeds ``HARNESS_SEEDS``, depth 6
for A, depths 6 and 24 for B (300 runs in all: 132 for A, 216 for B, 48 of them shared)."""
TRIAL_SWEEP = SweepSettings(
    steps=300,
    eval_every=50,
    warmup_steps=30,
    lrs=(GRID_LRS[2], GRID_LRS[4], GRID_LRS[6]),
    warmup_lrs=(GRID_LRS[2], GRID_LRS[3], GRID_LRS[4], GRID_LRS[6]),
    seeds=(0, 1),
    warmup_depth=2,
    scaling_depths=(2, 4),
)
"""A small sweep that runs in a few CPU-minutes: 300 updates, three rates (4.6e-4, 1e-2, 0.22; A
also 2.2e-3),
two seeds, depth 2 for A, depths 2 and 4 for B. Too short for the task (no run reaches the
threshold): it checks the machinery, not the claims."""


@lru_cache(maxsize=1)
def _splits_cached(offset_key: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: associative_recall(n, seed=seed) for name, (n, seed) in RECALL_SPLITS.items()}


def recall_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train", "validation", "test"} -> (tokens, targets)`` of ``RECALL_SPLITS`` (cached; do not
    modify the tensors)."""
    from ._seed import seed_offset

    return _splits_cached(seed_offset())


class _Diverged(Exception):
    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


class _DivergenceGuard(nn.Module):
    """The model, with a check that the logits of every training minibatch are finite."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.updates = 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        logits = self.model(tokens)
        if torch.is_grad_enabled():  # a training step (evaluations run under no_grad)
            self.updates += 1
            if not bool(torch.isfinite(logits).all()):
                raise _Diverged(self.updates)
        return logits


def _accuracy(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> float:
    """The share of ``tokens`` whose largest logit is the target's; NaN where a logit is not finite
    (weights that an overflowing gradient made non-finite)."""
    with torch.no_grad():
        logits = model(tokens)
    if not bool(torch.isfinite(logits).all()):
        return math.nan
    return int((logits.argmax(1) == targets).sum()) / len(targets)


def train_recall(
    job: RecallJob, settings: SweepSettings = FULL_SWEEP, *, flush_denormal: bool = True
) -> RecallRun:
    """Train one run of the comparisons (see the module docstring) and return its record.

    The model is ``job.config.build(job.seed)``, trained by ``vglib.train`` with Adam at
    ``job.lr`` (warmed up linearly over ``job.warmup_steps`` updates where that is not 0) on the
    training split, minibatches of ``RECALL_BATCH`` drawn with ``job.seed``, for
    ``settings.steps`` updates, evaluated on the validation and test splits every
    ``settings.eval_every``; it stops early only when its training loss becomes non-finite.
    ``flush_denormal`` flushes subnormal floats to zero during the run (and switches that off
    afterwards); the results depend on the thread count and the kernel path, not on the global
    RNG.
    """
    if not isinstance(job, RecallJob):
        raise TypeError(f"job must be a RecallJob, got {type(job).__name__}")
    if not isinstance(settings, SweepSettings):
        raise TypeError(f"settings must be a SweepSettings, got {type(settings).__name__}")
    check_positive_int("warmup_steps", job.warmup_steps, minimum=0)
    if not (isinstance(job.lr, float) and math.isfinite(job.lr) and job.lr > 0):
        raise ValueError(f"lr must be a finite float > 0, got {job.lr!r}")
    splits = recall_splits()
    x, y = splits["train"]
    x_val, y_val = splits["validation"]
    x_test, y_test = splits["test"]
    model = job.config.build(job.seed)
    guard = _DivergenceGuard(model)
    eval_steps, validation, test = [], [], []

    def evaluate(step: int, _: nn.Module) -> None:
        if step % settings.eval_every == 0:
            eval_steps.append(step)
            validation.append(_accuracy(model, x_val, y_val))
            test.append(_accuracy(model, x_test, y_test))

    diverged_at = None
    start, cpu_start = time.perf_counter(), time.process_time()
    if flush_denormal:
        torch.set_flush_denormal(True)
    try:
        train(
            guard, x, y, steps=settings.steps, lr=job.lr, batch_size=RECALL_BATCH, optimizer="adam",
            seed=job.seed, warmup_steps=job.warmup_steps, callback=evaluate,
            # train() evaluates its loss once at the end: on one sequence, as the curve is ours
            x_eval=x_val[:1], y_eval=y_val[:1], eval_every=settings.steps,
        )  # fmt: skip
    except _Diverged as stop:
        diverged_at = stop.step
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    all_steps = tuple(range(settings.eval_every, settings.steps + 1, settings.eval_every))
    missing = len(all_steps) - len(eval_steps)
    return RecallRun(
        job, all_steps, tuple(validation) + (math.nan,) * missing, tuple(test) + (math.nan,) * missing,
        diverged_at, round(seconds, 2), round(cpu_seconds, 2),
    )  # fmt: skip


class _BatchableTransformer(Transformer):
    """A ``Transformer`` whose ``embed`` skips the token-id range check (a Python ``int(...)``,
    which ``vmap`` cannot batch); the ids are checked once for the whole split instead. The same
    arithmetic as ``Transformer.embed``."""

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.token_embedding(tokens) + self.position_embedding(positions)


def _batchable_builder(config: TransformerConfig) -> Callable[[int], Transformer]:
    def build(seed: int) -> Transformer:
        model = config.build(seed)
        model.__class__ = _BatchableTransformer  # no new state: only embed's check differs
        return model

    return build


def _exact_accuracy(value: float, n: int) -> float:
    """An accuracy that ``train_ensemble`` computed in float32 as the exact fraction ``k / n`` that
    :func:`train_recall` computes (float32 holds ``k / n`` to a relative 6e-8, so ``k`` is exact
    for ``n`` below a million); NaN stays NaN."""
    return round(value * n) / n if math.isfinite(value) else math.nan


def train_recall_group(
    config: TransformerConfig,
    warmup_steps: int = 0,
    settings: SweepSettings = FULL_SWEEP,
    *,
    steps: int | None = None,
    flush_denormal: bool = True,
) -> list[RecallRun]:
    """Train the group ``(config, warmup_steps)``: the runs ``RecallJob(config, lr, seed,
    warmup_steps)`` for every ``lr`` of ``settings.rates(config)`` and ``seed`` of ``settings.seeds``, as one
    batched ensemble (``vglib.ensemble.train_ensemble``; see the module docstring), and return their
    records in the order rate, then seed.

    Each member follows :func:`train_recall` of its job up to floating-point rounding; a member
    whose training loss becomes non-finite is recorded as diverged at that update, NaN from there
    on, and does not disturb the others. ``steps`` (a multiple of ``settings.eval_every``; default
    ``settings.steps``) trains only the first updates, which are those of the whole run (the
    warm-up does not depend on the budget): the re-check's prefix. ``seconds`` and ``cpu_seconds``
    of each run are its share of the group's (the group's divided by its number of runs).
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
    if not isinstance(settings, SweepSettings):
        raise TypeError(f"settings must be a SweepSettings, got {type(settings).__name__}")
    check_positive_int("warmup_steps", warmup_steps, minimum=0)
    steps = settings.steps if steps is None else check_positive_int("steps", steps)
    if steps % settings.eval_every:
        raise ValueError(f"steps must be a multiple of eval_every, got {steps} and {settings.eval_every}")
    splits = recall_splits()
    vocab = recall_dims()[0]
    for tokens, _ in splits.values():  # the check _BatchableTransformer leaves out, once
        if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
            raise ValueError(f"token ids must lie in [0, {vocab - 1}]")
    (x_val, y_val), (x_test, y_test) = splits["validation"], splits["test"]
    members = [(seed, lr) for lr in settings.rates(config) for seed in settings.seeds]
    start, cpu_start = time.perf_counter(), time.process_time()
    if flush_denormal:
        torch.set_flush_denormal(True)
    try:
        run = train_ensemble(
            _batchable_builder(config), *splits["train"], members=members, steps=steps,
            batch_size=RECALL_BATCH, optimizer="adam", warmup_steps=warmup_steps,
            stop_at_divergence=True, x_eval=x_val, y_eval=y_val, eval_every=settings.eval_every,
            x_test=x_test, y_test=y_test,
        )  # fmt: skip
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)
    share = len(members)
    seconds = (time.perf_counter() - start) / share
    cpu_seconds = (time.process_time() - cpu_start) / share
    eval_steps = tuple(int(s) for s in run.eval_steps)
    assert run.eval_accuracy is not None and run.test_accuracy is not None
    runs = []
    for k, (seed, lr) in enumerate(members):
        validation = tuple(_exact_accuracy(float(v), len(y_val)) for v in run.eval_accuracy[k])
        test = tuple(_exact_accuracy(float(v), len(y_test)) for v in run.test_accuracy[k])
        job = RecallJob(config, lr, seed, warmup_steps)
        runs.append(RecallRun(job, eval_steps, validation, test, run.diverged_at[k], round(seconds, 2),
                              round(cpu_seconds, 2)))  # fmt: skip
    return runs


def _train_job(args: tuple[RecallJob, SweepSettings]) -> RecallRun:
    return train_recall(*args)


def _train_group(args: tuple[TransformerConfig, int, SweepSettings]) -> list[RecallRun]:
    return train_recall_group(*args)


def run_recall_groups(
    groups: Sequence[tuple[TransformerConfig, int]],
    settings: SweepSettings = FULL_SWEEP,
    processes: int | None = None,
) -> list[RecallRun]:
    """The runs of ``train_recall_group(config, warmup_steps, settings)`` for every group of
    ``groups`` (e.g. ``settings.groups("all")``), one group per job in ``processes`` worker
    processes (``vglib.harness.map_in_processes``; fix the torch thread count first, e.g.
    ``vglib.seed_everything(0, threads=1)``), in the order of ``groups``. From a script, call it
    under ``if __name__ == "__main__":``."""
    done = map_in_processes(_train_group, [(c, w, settings) for c, w in groups], processes)
    return [run for group in done for run in group]


def run_recall_jobs(
    jobs: Sequence[RecallJob], settings: SweepSettings = FULL_SWEEP, processes: int | None = None
) -> list[RecallRun]:
    """``[train_recall(job, settings) for job in jobs]``, one run at a time (the sweep trains by
    :func:`run_recall_groups` instead), in ``processes`` worker processes
    (``vglib.harness.map_in_processes``: the same bits in one process or several; each worker uses
    the caller's torch thread count, so fix it first, e.g. ``vglib.seed_everything(0, threads=1)``).
    From a script, call it under ``if __name__ == "__main__":``."""
    return map_in_processes(_train_job, [(job, settings) for job in jobs], processes)


# --- the first updates, in gradient terms -------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyGradients:
    """The first updates of one run, as :func:`early_gradients` records them: after each update in
    ``steps``, the norm of the gradient of each block's parameters (``block_grad_norms``, shape
    ``(len(steps), depth)``, block 1 first: the gradient that update used), and the mean
    cross-entropy on the first 256 validation sequences (``validation_loss``; ``ln 8`` = 2.08 is a
    uniform guess over the 8 classes); ``model``, the model after the last update (None where not
    kept), to measure further. ``block_grad_norms`` are *parameter* gradients, not the
    backpropagated ``||dL/dx||`` of the stream (measure that with
    :func:`~vglib.attention.transformer_profile` on ``model``)."""

    job: RecallJob
    steps: tuple[int, ...]
    block_grad_norms: np.ndarray
    validation_loss: np.ndarray
    model: nn.Module | None = field(default=None, compare=False, repr=False)

    def first_to_last(self) -> np.ndarray:
        """Block 1's gradient norm over the last block's, at each recorded update."""
        return self.block_grad_norms[:, 0] / self.block_grad_norms[:, -1]


def _grad_norm(module: nn.Module) -> float:
    """The norm of the gradient of ``module``'s parameters, all of them as one vector (float64)."""
    grads = [p.grad.double() for p in module.parameters() if p.grad is not None]
    return float(nn.utils.get_total_norm(grads)) if grads else 0.0


def early_gradients(job: RecallJob, steps: int = 100, every: int = 1) -> EarlyGradients:
    """The first ``steps`` updates of :func:`train_recall`'s run ``job`` (the same model,
    minibatches, warm-up and Adam, through ``vglib.train``), recording after the first update (whose
    gradient is the one at initialisation) and every ``every``-th one the gradient norm of each
    block's parameters and the validation loss (see
    :class:`EarlyGradients`). Denormals are flushed as in :func:`train_recall`. For what
    "needs warm-up" means in gradient terms: compare a post-LN run with and without warm-up at a
    rate where only the run with warm-up trains."""
    if not isinstance(job, RecallJob):
        raise TypeError(f"job must be a RecallJob, got {type(job).__name__}")
    check_positive_int("steps", steps)
    check_positive_int("every", every)
    splits = recall_splits()
    x, y = splits["train"]
    x_val, y_val = (t[:256] for t in splits["validation"])
    model = job.config.build(job.seed)
    recorded: list[int] = []
    norms: list[list[float]] = []
    losses: list[float] = []

    def record(step: int, _: nn.Module) -> None:
        if step == 1 or step % every == 0:
            recorded.append(step)
            norms.append([_grad_norm(block) for block in model.blocks])
            with torch.no_grad():
                losses.append(float(nn.functional.cross_entropy(model(x_val), y_val)))

    torch.set_flush_denormal(True)
    try:
        train(model, x, y, steps=steps, lr=job.lr, batch_size=RECALL_BATCH, optimizer="adam", seed=job.seed,
              warmup_steps=job.warmup_steps, callback=record, x_eval=x_val[:1], y_eval=y_val[:1],
              eval_every=steps)  # fmt: skip
    finally:
        torch.set_flush_denormal(False)
    return EarlyGradients(job, tuple(recorded), np.array(norms), np.array(losses), model)


# --- the MLP baseline -------------------------------------------------------------------------------------

MLP_HIDDEN = 512
"""Hidden units of the MLP baseline (:func:`build_recall_mlp`)."""


class RecallMLP(nn.Module):
    """The baseline without attention: the one-hot sequence, flattened (``vocab x length`` inputs),
    through one hidden ReLU layer of ``hidden`` units to the ``classes`` logits. It sees every
    token at every position, so it could represent the task; what it lacks is attention's way of
    reading the token after a matching key wherever that pair stands."""

    def __init__(self, vocab: int, length: int, classes: int, hidden: int = MLP_HIDDEN):
        super().__init__()
        self.vocab = vocab
        self.net = nn.Sequential(nn.Linear(vocab * length, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.net(nn.functional.one_hot(tokens, self.vocab).flatten(1).float())


def build_recall_mlp(seed: int, hidden: int = MLP_HIDDEN) -> RecallMLP:
    """The MLP baseline of seed ``seed``, sized for ``associative_recall``'s defaults (PyTorch's
    default ``nn.Linear`` initialisation, drawn with ``seed``)."""
    check_positive_int("hidden", hidden)
    vocab, length, classes = recall_dims()
    with torch_seed(seed):
        return RecallMLP(vocab, length, classes, hidden)


@dataclass(frozen=True)
class BaselineRun:
    """One run of the MLP baseline: its rate and seed, and its final accuracy on the first 1,000
    training sequences (``train``: how well it fits what it saw), the validation and the test
    split; NaN where its loss became non-finite."""

    lr: float
    seed: int
    train: float
    validation: float
    test: float

    def as_cell(self) -> GridCell:
        return GridCell("MLP", "recall", self.lr, self.seed, (0,), (self.validation,), (self.test,))


def train_recall_mlp(lr: float, seed: int, settings: SweepSettings = FULL_SWEEP) -> BaselineRun:
    """Train the MLP baseline as the transformers are trained (``vglib.train`` with Adam at ``lr``,
    minibatches of ``RECALL_BATCH`` drawn with ``seed``, ``settings.steps`` updates, no warm-up) on
    the training split, and return its final accuracies."""
    if not (isinstance(lr, float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite float > 0, got {lr!r}")
    splits = recall_splits()
    x, y = splits["train"]
    model = build_recall_mlp(seed)
    train(model, x, y, steps=settings.steps, lr=lr, batch_size=RECALL_BATCH, optimizer="adam", seed=seed,
          x_eval=x[:1], y_eval=y[:1], eval_every=settings.steps)  # fmt: skip
    return BaselineRun(
        lr, seed, _accuracy(model, x[:1_000], y[:1_000]), _accuracy(model, *splits["validation"]),
        _accuracy(model, *splits["test"]),
    )  # fmt: skip


def _train_baseline(args: tuple[float, int, SweepSettings]) -> BaselineRun:
    return train_recall_mlp(*args)


def run_recall_baseline(
    settings: SweepSettings = FULL_SWEEP, processes: int | None = None
) -> list[BaselineRun]:
    """The MLP baseline at every rate of ``settings.lrs`` (``GRID_LRS``: the remedies' grid) and
    every seed, in ``processes`` worker processes, in the order rate, then seed."""
    jobs = [(lr, seed, settings) for lr in settings.lrs for seed in settings.seeds]
    return map_in_processes(_train_baseline, jobs, processes)


def summarize_baseline(runs: Iterable[BaselineRun]) -> tuple[float, SeedSpread, SeedSpread]:
    """``(lr, test, train)`` of the MLP baseline at the rate chosen as for the transformers (best
    median final validation accuracy, no seed diverged): its test accuracy and its accuracy on
    training sequences, median and range over the seeds."""
    runs = list(runs)
    lr = choose_lr((r.as_cell() for r in runs), "accuracy")
    at = sorted((r for r in runs if r.lr == lr), key=lambda r: r.seed)
    seeds = tuple(r.seed for r in at)
    return lr, SeedSpread(seeds, tuple(r.test for r in at)), SeedSpread(seeds, tuple(r.train for r in at))


def baseline_to_json(runs: Iterable[BaselineRun]) -> list[dict]:
    """The baseline runs as JSON-ready dicts (NaN as the string ``"nan"``)."""
    return [{"lr": r.lr, "seed": r.seed, "train": _number(r.train), "validation": _number(r.validation),
             "test": _number(r.test)} for r in runs]  # fmt: skip


def baseline_from_json(rows: Iterable[dict]) -> list[BaselineRun]:
    """The inverse of :func:`baseline_to_json`."""
    return [BaselineRun(float(r["lr"]), int(r["seed"]), float(r["train"]), float(r["validation"]),
                        float(r["test"])) for r in rows]  # fmt: skip


# --- choosing, summarising ---------------------------------------------------------------------------------


def _group(
    runs: Iterable[RecallRun],
    config: TransformerConfig,
    warmup_steps: int,
    lrs: Sequence[float] | None = None,
) -> list[RecallRun]:
    chosen = [r for r in runs if r.job.config == config and r.job.warmup_steps == warmup_steps
              and (lrs is None or r.job.lr in lrs)]  # fmt: skip
    if not chosen:
        raise ValueError(f"no runs of {config.label} with warmup_steps={warmup_steps}"
                         + ("" if lrs is None else f" at the rates {tuple(lrs)}"))  # fmt: skip
    return chosen


def choose_recall_lr(
    runs: Iterable[RecallRun],
    config: TransformerConfig,
    warmup_steps: int = 0,
    lrs: Sequence[float] | None = None,
) -> float:
    """The learning rate ``vglib.grid.choose_lr`` chooses for one group (``config`` with
    ``warmup_steps``): the best median final validation accuracy over the seeds, among the rates
    at which no seed diverged (ties: the smaller rate). ``lrs`` restricts the choice to those rates
    (experiment B passes ``SweepSettings.lrs``, so that plain pre- and post-LN, whose runs at
    ``warmup_depth`` have experiment A's finer grid, are tuned on the same grid as the remedies)."""
    return choose_lr((r.as_cell() for r in _group(runs, config, warmup_steps, lrs)), "accuracy")


def tied_rates(
    runs: Iterable[RecallRun],
    config: TransformerConfig,
    warmup_steps: int = 0,
    lrs: Sequence[float] | None = None,
) -> list[float]:
    """The rates, other than the one :func:`choose_recall_lr` picks, that tie with it: no seed
    diverged and the median final validation accuracy is the same. The choice breaks a tie towards
    the smaller rate, and a saturated accuracy (1.0) ties easily, so the steps to the threshold at
    the chosen rate are not the fastest the grid shows where this list is not empty."""
    group = _group(runs, config, warmup_steps, lrs)
    chosen = choose_recall_lr(group, config, warmup_steps)

    def median(lr: float) -> float:
        return float(np.median([r.validation[-1] for r in group if r.job.lr == lr]))

    clean = sorted({r.job.lr for r in group} - {r.job.lr for r in group if r.diverged})
    return [lr for lr in clean if lr != chosen and median(lr) == median(chosen)]


@dataclass(frozen=True)
class RecallSummary:
    """One group at its chosen learning rate: the final test accuracy (NaN where a seed diverged)
    and the steps to ``threshold`` (inf where a seed never reached it), median and range over the
    seeds; how many seeds trained and how many diverged; ``edge``: whether the chosen rate is the
    smallest or the largest the group was run at (a rate beyond it might have done better)."""

    config: TransformerConfig
    warmup_steps: int
    lr: float
    test: SeedSpread
    steps: SeedSpread
    trained: int
    diverged: int
    threshold: float = RECALL_THRESHOLD
    edge: bool = False

    @property
    def seeds(self) -> int:
        return len(self.test.seeds)

    @property
    def reached(self) -> int:
        """How many seeds reached the threshold at some evaluation (``trained`` asks it of the
        final one): the count the harness's tables give (``TunedRuns.n_reached``)."""
        return sum(math.isfinite(v) for v in self.steps.values)

    def row(self) -> dict[str, str]:
        """The summary as the cells of a table row: the chosen rate (``*`` where it is an end of the
        group's grid), the final test accuracy as median (range) over the seeds that did not
        diverge (and how many did), the updates to the threshold as median (range) over every seed
        ("never" where a seed did not get there), and how many seeds trained."""
        kept = [i for i, v in enumerate(self.test.values) if math.isfinite(v)]
        if kept:
            seeds, values = (tuple(t[i] for i in kept) for t in (self.test.seeds, self.test.values))
            accuracy = format(SeedSpread(seeds, values), ".2f")
            if len(kept) < self.seeds:
                accuracy += f", {self.seeds - len(kept)} diverged"
        else:
            accuracy = "every seed diverged"
        return {
            "chosen lr": f"{self.lr:.1e}" + ("*" if self.edge else ""),
            "final test accuracy": accuracy,
            f"updates to {self.threshold:g}": self.steps.text(".0f"),
            "seeds trained": f"{self.trained} of {self.seeds}",
        }

    def glue(self, prefix: str) -> None:
        """Glue the summary for the page: ``{prefix}_lr`` (the chosen rate, ``1.0e-03``),
        ``{prefix}_acc`` and ``{prefix}_steps`` (the :meth:`row`'s final test accuracy and updates to
        the threshold) and ``{prefix}_reached`` (how many seeds reached it, :attr:`reached`)."""
        from ._glue import glue

        row = self.row()
        glue(f"{prefix}_lr", f"{self.lr:.1e}")
        glue(f"{prefix}_acc", row["final test accuracy"])
        glue(f"{prefix}_steps", row[f"updates to {self.threshold:g}"])
        glue(f"{prefix}_reached", self.reached)


def summarize_recall(
    runs: Iterable[RecallRun],
    config: TransformerConfig,
    warmup_steps: int = 0,
    threshold: float = RECALL_THRESHOLD,
    lrs: Sequence[float] | None = None,
) -> RecallSummary:
    """The summary of one group at the learning rate :func:`choose_recall_lr` picks (among
    ``lrs`` where given)."""
    group = _group(runs, config, warmup_steps, lrs)
    lr = choose_recall_lr(group, config, warmup_steps)
    at = [r for r in group if r.job.lr == lr]
    cells = [r.as_cell() for r in at]
    test = SeedSpread(tuple(c.seed for c in sorted(cells, key=lambda c: c.seed)),
                      tuple(c.final_test for c in sorted(cells, key=lambda c: c.seed)))  # fmt: skip
    return RecallSummary(
        config, warmup_steps, lr, test, steps_to(cells, lr, threshold, "accuracy"),
        sum(r.trained(threshold) for r in at), sum(r.diverged for r in at), threshold,
        lr in (min(r.job.lr for r in group), max(r.job.lr for r in group)),
    )  # fmt: skip


def spread_by_lr(
    runs: Iterable[RecallRun], config: TransformerConfig, warmup_steps: int = 0
) -> dict[float, SeedSpread]:
    """``{lr: spread}``: the final test accuracy over the seeds (NaN where a seed diverged), for every
    learning rate of one group, in increasing order: at which rates the group trains."""
    group = _group(runs, config, warmup_steps)
    out = {}
    for lr in sorted({r.job.lr for r in group}):
        at = sorted((r for r in group if r.job.lr == lr), key=lambda r: r.job.seed)
        out[lr] = SeedSpread(tuple(r.job.seed for r in at), tuple(r.final_test for r in at))
    return out


def rates_that_train(
    runs: Iterable[RecallRun],
    config: TransformerConfig,
    warmup_steps: int = 0,
    threshold: float = RECALL_THRESHOLD,
) -> list[float]:
    """The learning rates of one group at which every seed trains (final test accuracy at least
    ``threshold``), in increasing order."""
    return [lr for lr, spread in spread_by_lr(runs, config, warmup_steps).items()
            if all(math.isfinite(v) and v >= threshold for v in spread.values)]  # fmt: skip


def warmup_relation(
    runs: Iterable[RecallRun], config: TransformerConfig, lr: float, warmup_steps: int
) -> str:
    """How the final test accuracies of ``config`` at ``lr`` *with* warm-up (``warmup_steps``)
    stand to those without: ``"above"`` where every seed with warm-up beats every seed without,
    ``"below"`` the reverse, ``"overlaps"`` otherwise (``SeedSpread.relation``). A diverged run
    ranks below every finite accuracy. "Needs warm-up at this rate" is a claim only where this says
    ``"above"`` and the runs with warm-up train."""
    check_positive_int("warmup_steps", warmup_steps)
    runs = list(runs)

    def spread(w: int) -> SeedSpread:
        at = spread_by_lr(runs, config, w).get(lr)
        if at is None:
            raise ValueError(f"no runs of {config.label} at lr {lr!r} with warmup_steps={w}")
        return SeedSpread(at.seeds, tuple(v if math.isfinite(v) else -math.inf for v in at.values))

    return spread(warmup_steps).relation(spread(0))


# --- the results file --------------------------------------------------------------------------------------


def _number(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)


def runs_to_json(runs: Iterable[RecallRun]) -> list[dict]:
    """The runs as plain JSON-ready dicts, one per run: the configuration's fields, ``lr``,
    ``seed``, ``warmup_steps``, ``eval_steps``, ``validation``, ``test`` (NaN as the string
    ``"nan"``), ``diverged_at`` (null where it never diverged), ``seconds`` and ``cpu_seconds``."""
    rows = []
    for run in runs:
        rows.append({
            **asdict(run.job.config), "lr": run.job.lr, "seed": run.job.seed,
            "warmup_steps": run.job.warmup_steps, "eval_steps": list(run.eval_steps),
            "validation": [_number(v) for v in run.validation], "test": [_number(v) for v in run.test],
            "diverged_at": run.diverged_at, "seconds": _number(run.seconds),
            "cpu_seconds": _number(run.cpu_seconds),
        })  # fmt: skip
    return rows


def runs_from_json(rows: Iterable[dict]) -> list[RecallRun]:
    """The inverse of :func:`runs_to_json`."""
    runs = []
    for r in rows:
        config = TransformerConfig(
            r["norm"], r["residual"], int(r["depth"]), int(r["width"]), int(r["heads"]), bool(r["causal"])
        )
        job = RecallJob(config, float(r["lr"]), int(r["seed"]), int(r["warmup_steps"]))
        diverged = r["diverged_at"]
        runs.append(RecallRun(
            job, tuple(int(s) for s in r["eval_steps"]), tuple(float(v) for v in r["validation"]),
            tuple(float(v) for v in r["test"]), None if diverged is None else int(diverged),
            float(r["seconds"]), float(r["cpu_seconds"]),
        ))  # fmt: skip
    return runs


def save_recall_runs(
    path: str | Path,
    runs: Iterable[RecallRun],
    settings: SweepSettings,
    meta: dict | None = None,
    baseline: Iterable[BaselineRun] = (),
) -> None:
    """Write ``{"meta": {...}, "settings": settings, "runs": [...], "baseline": [...]}`` to ``path``
    as JSON. The meta records the task's splits, batch, threshold, bag bound and chance beside
    anything passed in ``meta`` (the CPU, the wall time); ``baseline`` holds the MLP baseline's
    runs (:func:`run_recall_baseline`)."""
    fixed = {
        "splits": {k: list(v) for k, v in RECALL_SPLITS.items()},
        "batch": RECALL_BATCH,
        "threshold": RECALL_THRESHOLD,
        "bag_bound": recall_bag_accuracy(),
        "chance": recall_chance(),
        "optimizer": "adam",
        "flush_denormal": True,
    }
    data = {"meta": {**fixed, **(meta or {})}, "settings": settings.to_json(), "runs": runs_to_json(runs),
            "baseline": baseline_to_json(baseline)}  # fmt: skip
    Path(path).write_text(json.dumps(data) + "\n")


def load_recall_runs(path: str | Path) -> tuple[list[RecallRun], SweepSettings, dict]:
    """``(runs, settings, meta)`` of a file :func:`save_recall_runs` wrote. A missing file raises
    ``FileNotFoundError`` naming the script that writes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: write it with `ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 "
            "ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/transformer_training.py --write`"
        )
    data = json.loads(path.read_text())
    return runs_from_json(data["runs"]), SweepSettings.from_json(data["settings"]), data["meta"]


def load_recall_baseline(path: str | Path) -> list[BaselineRun]:
    """The MLP baseline's runs in a file :func:`save_recall_runs` wrote."""
    return baseline_from_json(json.loads(Path(path).read_text())["baseline"])
