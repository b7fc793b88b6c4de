"""Equal tuning: every remedy trained on every task at every learning rate of one grid, with several
seeds, its learning rate chosen on the validation split, and reported on the test split.

One *group* is one ``(remedy, task)``: its ``len(lrs) x len(seeds)`` networks train together as one
batched ensemble (``vglib.ensemble.train_ensemble``), each evaluated every ``eval_every`` steps
on the task's validation and test splits. ``choose_lr`` picks, for each group, the learning rate
whose median final validation metric over the seeds is best among those at which no seed diverged;
the test metric is read at that learning rate only, so the test split never chooses anything.

``run_group`` returns ``GridCell`` values (one per network), ``cells_to_json`` and
``cells_from_json`` write and read them (``benchmarks/harness_grid.py`` keeps the whole grid in
``benchmarks/results/harness_grid.json``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ._seed import SeedSpread, torch_seed
from .diagnosis import _fitted_change, _hidden, diagnose
from .ensemble import train_ensemble
from .harness import HARNESS_SEEDS, Remedy, _ratio, harness_first_batch
from .probes import gradient_profile
from .tasks import Task, harness_task, one_hidden_layer_width

__all__ = [
    "GRID_EVAL_EVERY",
    "GRID_LRS",
    "GRID_REMEDIES",
    "GRID_STEPS",
    "SHALLOW_TWIN",
    "THRESHOLDS",
    "GridCell",
    "cells_from_json",
    "cells_to_json",
    "choose_lr",
    "init_ratios",
    "run_group",
    "shallow_twin",
    "spread_at",
    "steps_to",
]

_CORE_LRS = np.logspace(-4, -2, 4)  # 1e-4 to 1e-2, a factor of 10^(2/3) apart
_STEP = _CORE_LRS[1] / _CORE_LRS[0]
GRID_LRS = tuple(
    float(v) for v in (_CORE_LRS[0] / _STEP, *_CORE_LRS, *(_CORE_LRS[-1] * _STEP**k for k in (1, 2, 3)))
)
"""The learning rates every remedy is tried with: 8 values a factor of 10^(2/3) apart, about
2.2e-5 to 1. The grid began as the middle four (1e-4 to 1e-2). A value at each end was added
because rows chose its edges (a best value at the edge of a grid is not known to be the best);
then 0.22 above, because eight residual and highway rows still chose 4.6e-2; then 1, because two
rows chose 0.22 (at 1 the highway net diverges in two runs of three, sigmoid + residual
in all three)."""
GRID_STEPS = 800
"""The training budget of one network, in steps of batch ``HARNESS_BATCH``."""
GRID_EVAL_EVERY = 10
"""Evaluation period: step counts to a threshold are known to within this many steps."""


def _catalogue() -> tuple[Remedy, ...]:
    R = Remedy
    scale = 1 / math.sqrt(R("x").depth)  # the residual branch scale 1/sqrt(depth)
    return (
        R("sigmoid, default init", activation="sigmoid", init="default"),
        R("ReLU, default init", init="default"),
        R("ReLU, Var(W) = 1/n", init="lecun"),
        R("sigmoid, Xavier", activation="sigmoid", init="xavier"),
        R("tanh, Xavier", activation="tanh", init="xavier"),
        R("ReLU, He", init="he"),
        R("ReLU, orthogonal (gain 1)", init="orthogonal"),
        R("ReLU, orthogonal (gain √2)", init="orthogonal_relu"),
        R("ReLU, LSUV", lsuv=True),
        R("leaky ReLU, He", activation="leaky_relu"),
        R("SELU, LeCun", activation="selu", init="lecun"),
        R("SiLU, He", activation="silu"),
        R("PReLU, He", activation="prelu"),
        R("ELU, He", activation="elu"),
        R("ELU, LeCun", activation="elu", init="lecun"),
        R("GELU, He", activation="gelu"),
        R("ReLU, default + batch norm", init="default", norm="batch"),
        R("ReLU, default + layer norm", init="default", norm="layer"),
        R("sigmoid, default + batch norm", activation="sigmoid", init="default", norm="batch"),
        R("sigmoid, default + layer norm", activation="sigmoid", init="default", norm="layer"),
        R("ReLU, default + residual", init="default", skip="residual", residual_scale=scale),
        R("ReLU, He + residual, scale 1", skip="residual"),
        R("ReLU, He + residual", skip="residual", residual_scale=scale),
        R("ReLU, He + residual + batch norm", skip="residual", norm="batch"),
        R("tanh, Xavier + highway", activation="tanh", init="xavier", skip="highway"),
        R(
            "sigmoid, default + residual",
            activation="sigmoid",
            init="default",
            skip="residual",
            residual_scale=scale,
        ),
        R("ReLU, He + ReZero", skip="rezero"),
        R("ReLU, He + Fixup", skip="fixup"),
        R(
            "ReLU, He + LayerScale 1e-6", skip="layerscale", residual_scale=1e-6
        ),  # CaiT's start beyond 24 blocks
        R("ReLU, default + RMS norm", init="default", norm="rms"),
        R("ReLU, default + group norm", init="default", norm="group"),
        # depth 50 (Skip connections)
        R("ReLU, default init, depth 50", init="default", depth=50),
        R("ReLU, He, depth 50", depth=50),
        R(
            "ReLU, default + residual, depth 50",
            init="default",
            depth=50,
            skip="residual",
            residual_scale=1 / math.sqrt(50),
        ),
        R(
            "ReLU, default + residual + batch norm, depth 50",
            init="default",
            depth=50,
            skip="residual",
            norm="batch",
        ),
        R("sigmoid, default + Adam", activation="sigmoid", init="default", optimizer="adam"),
        R("sigmoid, Xavier + Adam", activation="sigmoid", init="xavier", optimizer="adam"),
        R("ReLU, Var(W) = 1/n + Adam", init="lecun", optimizer="adam"),
    )


GRID_REMEDIES = _catalogue()
"""The remedies of the Remedies part, each alone and in the combinations practitioners use, all at
the harness's depth and width (30 x 64) unless the label gives another depth, SGD with momentum 0.9
unless the label says Adam."""

SHALLOW_TWIN = "shallow twin: 1 hidden layer, ReLU, He"
"""The label of ``shallow_twin``'s rows."""


def shallow_twin(task: str | Task, deep: Remedy | None = None) -> Remedy:
    """A one-hidden-layer ReLU network (He init, SGD with momentum) with as many parameters as
    ``deep`` (default: the harness's 30 x 64 ReLU network) has on ``task``: what depth buys is the
    difference between the two, at equal tuning."""
    task = harness_task(task) if isinstance(task, str) else task
    deep = deep or Remedy("deep")
    count = sum(p.numel() for p in deep.build(0, task).parameters())
    width = one_hidden_layer_width(count, task.in_features, task.out_features)
    return Remedy(SHALLOW_TWIN, depth=1, width=width)


@dataclass(frozen=True)
class GridCell:
    """One network of the grid: its remedy (by label), task, learning rate and seed, and its
    validation and test metric (loss for ``"mse"`` tasks, accuracy for ``"accuracy"`` tasks) at
    every evaluation step."""

    remedy: str
    task: str
    lr: float
    seed: int
    eval_steps: tuple[int, ...]
    validation: tuple[float, ...]
    test: tuple[float, ...]

    @property
    def final_validation(self) -> float:
        return self.validation[-1]

    @property
    def final_test(self) -> float:
        return self.test[-1]


def run_group(
    remedy: Remedy,
    task: str | Task = "teacher",
    *,
    lrs: Sequence[float] = GRID_LRS,
    seeds: Sequence[int] = HARNESS_SEEDS,
    steps: int = GRID_STEPS,
    eval_every: int = GRID_EVAL_EVERY,
) -> list[GridCell]:
    """Train ``remedy`` on ``task`` at every learning rate and seed, as one ensemble."""
    if not isinstance(remedy, Remedy):
        raise TypeError(f"remedy must be a vglib.Remedy, got {type(remedy).__name__}")
    task = harness_task(task) if isinstance(task, str) else task
    members = [(int(seed), float(lr)) for lr in lrs for seed in seeds]
    run = train_ensemble(
        lambda seed: remedy.build(seed, task),
        *task.train,
        members=members,
        steps=steps,
        batch_size=64,
        optimizer=remedy.optimizer,
        momentum=remedy.momentum if remedy.optimizer == "sgd" else 0.0,
        clip_norm=remedy.clip_norm,
        clip_value=remedy.clip_value,
        x_eval=task.validation[0],
        y_eval=task.validation[1],
        eval_every=eval_every,
        x_test=task.test[0],
        y_test=task.test[1],
    )
    accuracy = task.metric == "accuracy"
    validation = run.eval_accuracy if accuracy else run.eval_loss
    test = run.test_accuracy if accuracy else run.test_loss
    steps_seen = tuple(int(s) for s in run.eval_steps)
    return [
        GridCell(remedy.label, task.name, lr, seed, steps_seen,
                 tuple(float(v) for v in validation[k]), tuple(float(v) for v in test[k]))  # type: ignore[index]
        for k, (seed, lr) in enumerate(members)
    ]  # fmt: skip


def _score(value: float, metric: str) -> float:
    """Lower is better; a diverged run (NaN or inf) is worst."""
    if not math.isfinite(value):
        return math.inf
    return value if metric == "mse" else -value


def choose_lr(cells: Iterable[GridCell], metric: str) -> float:
    """The learning rate of one group whose median final validation metric over the seeds is best,
    among the rates at which no seed diverged (a rate where one did comes after all where none did,
    as a practitioner would not train at it; ties: the smaller learning rate)."""
    by_lr: dict[float, list[float]] = {}
    for cell in cells:
        by_lr.setdefault(cell.lr, []).append(_score(cell.final_validation, metric))
    if not by_lr:
        raise ValueError("no cells to choose a learning rate from")

    def rank(lr: float) -> tuple[bool, float]:
        scores = by_lr[lr]
        return (any(math.isinf(v) for v in scores), float(np.median(scores)))

    return min(sorted(by_lr), key=rank)


def spread_at(cells: Iterable[GridCell], lr: float) -> SeedSpread:
    """The final test metric at learning rate ``lr``, median and range over the seeds."""
    chosen = sorted((c for c in cells if c.lr == lr), key=lambda c: c.seed)
    if not chosen:
        raise ValueError(f"no cells at lr {lr!r}")
    return SeedSpread(tuple(c.seed for c in chosen), tuple(c.final_test for c in chosen))


def init_ratios(remedy: Remedy, task: str | Task, seed: int) -> tuple[float, float]:
    """Two first-to-last-hidden-layer gradient ratios of ``remedy``'s network of seed ``seed`` at
    initialisation, on its first minibatch, named for what they measure: the *weight*-gradient
    ratio ``||dL/dW_1|| / ||dL/dW_L||`` of the first and last hidden weight layers (weights only,
    as ``GradientProfile.first_to_last_ratio``) and the
    *backpropagated* ratio of ``||dL/dh||`` per element from the last hidden layer to the first, by
    ``diagnose``'s fit over the hidden layers. Both leave out the gates of highway blocks (a side
    road: the last hidden layer is the last block's transform, not its gate). The first can stay
    near 1 where the second vanishes (Glorot & Bengio 2010, section 4.2)."""
    task = harness_task(task) if isinstance(task, str) else task
    with torch_seed(seed):
        model = remedy.build(seed, task)
    x, y = harness_first_batch(seed, task)
    profile = gradient_profile(model, x, y)
    stream = [i for i, name in enumerate(profile.layer_names) if not _is_gate(name)]
    first, last = profile.weight_grad_norms[stream[0]], profile.weight_grad_norms[stream[-1]]
    weight = _ratio(first, last)  # as the harness divides: NaN for 0/0, inf for x/0
    return float(weight), _backprop_ratio(model, x, y)


def _is_gate(name: str) -> bool:
    return name.rpartition(".")[2] == "gate"


def _backprop_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``diagnose``'s fitted first-to-last change of ``||dL/dh||`` per element over the hidden
    layers, leaving out the gates of highway blocks: a gate's output is a side road whose gradient
    is not the stream's, and with one gate per block they would be half the points of the fit."""
    report = diagnose(model, x, y)
    hidden, names, _ = _hidden(report.flow)
    keep = np.array([not _is_gate(name) for name in names], dtype=bool)
    if keep.all():
        return float(report.depth_change)
    decades, _, _ = _fitted_change(hidden[keep])
    return float(10.0 ** (-decades)) if math.isfinite(decades) else math.nan


THRESHOLDS = {"teacher": 0.5, "digits": 0.9}
"""What counts as "trains" on each task, for ``steps_to``: a test loss of 0.5 on *teacher* (well
below its linear baseline and the loss of predicting 0, both about 0.86: only a nonlinear model
gets there), and a test accuracy of 0.9 on *digits* (chance is 0.1; logistic regression reaches
0.96, so this threshold asks for a network that learns at all, not for one that beats it)."""


def steps_to(cells: Iterable[GridCell], lr: float, threshold: float, metric: str) -> SeedSpread:
    """Per seed at learning rate ``lr``: the first evaluation step at which the test metric reaches
    ``threshold`` (a loss at or below it, an accuracy at or above it), ``inf`` where it never does
    within the budget; median and range over the seeds."""
    chosen = sorted((c for c in cells if c.lr == lr), key=lambda c: c.seed)
    if not chosen:
        raise ValueError(f"no cells at lr {lr!r}")

    def first(cell: GridCell) -> float:
        for step, value in zip(cell.eval_steps, cell.test, strict=True):
            if math.isfinite(value) and (value <= threshold if metric == "mse" else value >= threshold):
                return float(step)
        return math.inf

    return SeedSpread(tuple(c.seed for c in chosen), tuple(first(c) for c in chosen))


def cells_to_json(cells: Iterable[GridCell]) -> list[dict]:
    """The cells as JSON-ready dicts (NaN and inf as strings, which JSON lacks)."""

    def number(v: float) -> float | str:
        return v if math.isfinite(v) else repr(v)

    out = []
    for cell in cells:
        row = asdict(cell)
        row["validation"] = [number(v) for v in cell.validation]
        row["test"] = [number(v) for v in cell.test]
        row["eval_steps"] = list(cell.eval_steps)
        out.append(row)
    return out


def cells_from_json(rows: Iterable[dict]) -> list[GridCell]:
    """The inverse of ``cells_to_json``."""
    return [
        GridCell(r["remedy"], r["task"], float(r["lr"]), int(r["seed"]), tuple(r["eval_steps"]),
                 tuple(float(v) for v in r["validation"]), tuple(float(v) for v in r["test"]))
        for r in rows
    ]  # fmt: skip
