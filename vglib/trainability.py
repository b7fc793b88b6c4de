"""The trainable-depth experiment of Schoenholz et al. (2017, Fig. 6), in miniature.

Schoenholz et al. trained tanh networks of many depths at many weight variances ``sigma_w2`` (with
``sigma_b2 = 0.05``) and found them trainable up to a depth of about ``6 xi_c``, where ``xi_c`` is
the correlation depth scale of mean-field theory (``vglib.correlation_depth_scale``). Here: tanh
MLPs of width ``TRAINABILITY_WIDTH`` built with ``build_gaussian_mlp`` (weights
``N(0, sigma_w2 / fan_in)``, biases ``N(0, sigma_b2)``) on the digits task of ``vglib.tasks``
(1000 training images, 10 classes), trained with SGD (momentum 0.9, minibatches of 64) for a fixed
``TRAINABILITY_STEPS`` steps at each learning rate of ``TRAINABILITY_LRS``. A network (one
``sigma_w2``, depth and seed) counts as *trained* when its training accuracy at the end, at the best
learning rate of the grid, reaches ``TRAINABILITY_THRESHOLD``: every cell's learning rate is chosen
the same way, and the threshold was fixed before the runs.

``run_depth`` trains all the networks of one depth (every ``sigma_w2``, seed and learning rate) as one
batched ensemble (``vglib.train_ensemble``); ``benchmarks/trainable_depth.py`` runs every depth and
writes ``benchmarks/results/trainable_depth.json``, which the chapter reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ._seed import SeedSpread
from ._validation import check_positive_int
from .ensemble import train_ensemble
from .models import build_gaussian_mlp
from .tasks import harness_task

__all__ = [
    "TRAINABILITY_DEPTHS",
    "TRAINABILITY_LRS",
    "TRAINABILITY_SEEDS",
    "TRAINABILITY_SIGMA_B2",
    "TRAINABILITY_SIGMA_W2",
    "TRAINABILITY_STEPS",
    "TRAINABILITY_THRESHOLD",
    "TRAINABILITY_WIDTH",
    "TrainabilityCell",
    "best_learning_rates",
    "boundary_depth",
    "boundary_networks",
    "load_smaller_lr",
    "load_trainability",
    "run_depth",
    "success_table",
    "trainability_from_json",
    "trainability_to_json",
    "trainable_depths",
]

RESULTS_FILE = "benchmarks/results/trainable_depth.json"
"""Where the sweep's results live, relative to the repository root."""
TRAINABILITY_SIGMA_B2 = 0.05
"""Schoenholz et al.'s bias variance (their Fig. 6)."""
TRAINABILITY_SIGMA_W2 = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
TRAINABILITY_DEPTHS = (6, 10, 16, 24, 30, 36, 44, 54, 80, 120)
TRAINABILITY_SEEDS = (0, 1, 2)
TRAINABILITY_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
TRAINABILITY_STEPS = 400
TRAINABILITY_EVAL_EVERY = 50
TRAINABILITY_WIDTH = 48
TRAINABILITY_THRESHOLD = 0.5
"""Training accuracy (chance: 0.1) a network must reach to count as trained, fixed before the runs."""


@dataclass(frozen=True)
class TrainabilityCell:
    """One trained network: its ``sigma_w2``, depth, seed and learning rate, and its accuracy on the
    whole training split every ``TRAINABILITY_EVAL_EVERY`` steps (``accuracy[-1]`` at the end; NaN
    where the network diverged)."""

    sigma_w2: float
    depth: int
    seed: int
    lr: float
    accuracy: tuple[float, ...]

    @property
    def final(self) -> float:
        return self.accuracy[-1]


def _member_seed(sigma_w2: float, seed: int) -> int:
    """One ensemble seed per (sigma_w2, seed), independent of which other sigma_w2 share the run."""
    return 1000 * round(100 * sigma_w2) + seed


def run_depth(
    depth: int,
    *,
    sigma_w2s: Sequence[float] = TRAINABILITY_SIGMA_W2,
    seeds: Sequence[int] = TRAINABILITY_SEEDS,
    lrs: Sequence[float] = TRAINABILITY_LRS,
    steps: int = TRAINABILITY_STEPS,
    width: int = TRAINABILITY_WIDTH,
    sigma_b2: float = TRAINABILITY_SIGMA_B2,
) -> list[TrainabilityCell]:
    """Train every ``(sigma_w2, seed, lr)`` network of ``depth`` hidden layers as one ensemble on the
    digits task and return one cell each (see the module docstring)."""
    check_positive_int("depth", depth)
    check_positive_int("steps", steps)
    check_positive_int("width", width)
    sigma_w2s = tuple(float(s) for s in sigma_w2s)
    if not sigma_w2s or any(not s > 0 for s in sigma_w2s):
        raise ValueError(f"sigma_w2s must be one or more numbers > 0, got {sigma_w2s!r}")
    if any(s >= 1000 for s in sigma_w2s) or len({round(100 * s) for s in sigma_w2s}) != len(sigma_w2s):
        raise ValueError(f"sigma_w2s must be distinct to 0.01 and below 1000, got {sigma_w2s!r}")
    seeds = tuple(seeds)
    if not seeds or any(not (isinstance(s, int) and 0 <= s < 1000) for s in seeds):
        raise ValueError(f"seeds must be ints in [0, 1000), got {seeds!r}")
    by_member = {_member_seed(w, s): (w, s) for w in sigma_w2s for s in seeds}
    task = harness_task("digits")
    x, y = task.train

    def build(member: int) -> nn.Module:
        sigma_w2, seed = by_member[member]
        return build_gaussian_mlp(
            depth, width, "tanh", sigma_w2, sigma_b2, seed=seed, in_features=x.shape[1], out_features=10
        )

    members = [(member, float(lr)) for member in by_member for lr in lrs]
    run = train_ensemble(
        build, x, y, members=members, steps=steps, batch_size=64, optimizer="sgd", momentum=0.9,
        x_eval=x, y_eval=y, eval_every=TRAINABILITY_EVAL_EVERY,
    )  # fmt: skip
    assert run.eval_accuracy is not None  # class targets
    return [
        TrainabilityCell(
            by_member[member][0],
            depth,
            by_member[member][1],
            lr,
            tuple(float(a) for a in run.eval_accuracy[k]),
        )
        for k, (member, lr) in enumerate(members)
    ]


def _evaluation(step: int | None) -> int:
    """The index into ``TrainabilityCell.accuracy`` of the evaluation after ``step`` steps (``None``:
    the last one)."""
    if step is None:
        return -1
    if not (isinstance(step, int) and 0 < step <= TRAINABILITY_STEPS and step % TRAINABILITY_EVAL_EVERY == 0):
        raise ValueError(
            f"step must be None (the end) or a multiple of {TRAINABILITY_EVAL_EVERY} in "
            f"[{TRAINABILITY_EVAL_EVERY}, {TRAINABILITY_STEPS}], got {step!r}"
        )
    return step // TRAINABILITY_EVAL_EVERY - 1


def best_learning_rates(
    cells: Iterable[TrainabilityCell], step: int | None = None
) -> dict[tuple[float, int, int], tuple[float, float]]:
    """Per network ``(sigma_w2, depth, seed)``: ``(lr, accuracy)``, the learning rate of the grid with
    the highest training accuracy after ``step`` steps (``None``: at the end; a diverged run counts
    as accuracy 0; ties go to the smaller learning rate) and that accuracy."""
    index = _evaluation(step)
    best: dict[tuple[float, int, int], tuple[float, float]] = {}
    for c in sorted(cells, key=lambda c: c.lr):
        key = (c.sigma_w2, c.depth, c.seed)
        value = c.accuracy[index] if math.isfinite(c.accuracy[index]) else 0.0
        if key not in best or value > best[key][1]:
            best[key] = (c.lr, value)
    return best


def _trained(
    cells: Iterable[TrainabilityCell], threshold: float, step: int | None = None
) -> dict[tuple[float, int, int], bool]:
    """Per (sigma_w2, depth, seed): whether the best learning rate's accuracy after ``step`` steps
    (``None``: at the end) reaches ``threshold``."""
    return {key: value >= threshold for key, (_, value) in best_learning_rates(cells, step).items()}


def success_table(
    cells: Iterable[TrainabilityCell], threshold: float = TRAINABILITY_THRESHOLD, step: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sigma_w2s, depths, fraction)``: the share of seeds trained (``fraction[i, j]`` at
    ``sigma_w2s[i]`` and ``depths[j]``), each seed at its best learning rate, judged after ``step``
    steps (``None``: at the end of the budget; a shorter budget reads the same runs earlier, which is
    what a run of ``step`` steps at a constant learning rate would have given)."""
    trained = _trained(cells, threshold, step)
    if not trained:
        raise ValueError("no cells")
    sigma_w2s = np.array(sorted({k[0] for k in trained}))
    depths = np.array(sorted({k[1] for k in trained}))
    fraction = np.full((len(sigma_w2s), len(depths)), np.nan)
    for i, w in enumerate(sigma_w2s):
        for j, d in enumerate(depths):
            verdicts = [v for k, v in trained.items() if k[0] == w and k[1] == d]
            if verdicts:
                fraction[i, j] = float(np.mean(verdicts))
    return sigma_w2s, depths, fraction


def boundary_depth(depths: Sequence[float], success: Sequence[float], level: float = 0.5) -> float:
    """The depth where ``success`` (against increasing ``depths``) first falls below ``level``,
    interpolated linearly in log depth between the last depth at or above it and the first below:
    the geometric mean of the two for a single seed's 1/0 verdicts. ``inf`` if it never falls below
    (the boundary lies beyond the grid), ``nan`` if it is below already at the shallowest depth."""
    depths = np.asarray(depths, dtype=np.float64)
    success = np.asarray(success, dtype=np.float64)
    if depths.ndim != 1 or depths.shape != success.shape or len(depths) == 0:
        raise ValueError("depths and success must be 1-d arrays of the same, non-zero length")
    if np.any(np.diff(depths) <= 0) or np.any(depths <= 0):
        raise ValueError("depths must be positive and increasing")
    below = np.flatnonzero(success < level)
    if len(below) == 0:
        return math.inf
    j = int(below[0])
    if j == 0:
        return math.nan
    a, b = success[j - 1], success[j]
    t = (a - level) / (a - b)
    return float(np.exp(np.log(depths[j - 1]) + t * (np.log(depths[j]) - np.log(depths[j - 1]))))


def trainable_depths(
    cells: Iterable[TrainabilityCell], threshold: float = TRAINABILITY_THRESHOLD, step: int | None = None
) -> dict[float, tuple[float, SeedSpread]]:
    """Per ``sigma_w2``: the boundary depth ``L_max`` where the share of seeds trained falls through
    one half, and the boundary of each seed alone (a ``SeedSpread``, ``inf``/``nan`` as
    ``boundary_depth`` returns them); judged after ``step`` steps as in ``success_table``."""
    cells = list(cells)
    sigma_w2s, depths, fraction = success_table(cells, threshold, step)
    trained = _trained(cells, threshold, step)
    seeds = sorted({k[2] for k in trained})
    out = {}
    for i, w in enumerate(sigma_w2s):
        per_seed = [boundary_depth(depths, [float(trained[(w, int(d), s)]) for d in depths]) for s in seeds]
        out[float(w)] = (boundary_depth(depths, fraction[i]), SeedSpread(tuple(seeds), tuple(per_seed)))
    return out


def boundary_networks(
    cells: Iterable[TrainabilityCell], threshold: float = TRAINABILITY_THRESHOLD, step: int | None = None
) -> dict[float, list[tuple[int, int, float, float]]]:
    """Per ``sigma_w2`` with a boundary inside the grid: the networks of the two depths that bracket
    it (the last depth before the share of seeds trained first falls below one half, and that depth),
    each as ``(depth, seed, best lr, its accuracy)`` (``best_learning_rates``, judged after ``step``
    steps). Where the best learning rate of such a network is an end of the grid, the grid, not the
    network, may have set the boundary."""
    cells = list(cells)
    sigma_w2s, depths, fraction = success_table(cells, threshold, step)
    best = best_learning_rates(cells, step)
    out = {}
    for i, w in enumerate(sigma_w2s):
        below = np.flatnonzero(fraction[i] < 0.5)
        if len(below) == 0 or below[0] == 0:
            continue
        pair = (int(depths[below[0] - 1]), int(depths[below[0]]))
        out[float(w)] = [(d, s, *best[(w, d, s)]) for (v, d, s) in sorted(best) if v == w and d in pair]
    return out


def trainability_to_json(cells: Iterable[TrainabilityCell]) -> list[dict]:
    """Cells as JSON-ready dicts (NaN accuracies as ``None``)."""
    return [
        {
            "sigma_w2": c.sigma_w2,
            "depth": c.depth,
            "seed": c.seed,
            "lr": c.lr,
            "accuracy": [a if math.isfinite(a) else None for a in c.accuracy],
        }
        for c in cells
    ]


def trainability_from_json(rows: Iterable[dict]) -> list[TrainabilityCell]:
    """The inverse of ``trainability_to_json``."""
    return [
        TrainabilityCell(
            float(r["sigma_w2"]),
            int(r["depth"]),
            int(r["seed"]),
            float(r["lr"]),
            tuple(math.nan if a is None else float(a) for a in r["accuracy"]),
        )
        for r in rows
    ]


def results_file(path: str | Path | None = None) -> Path:
    """``path``, or by default the committed ``benchmarks/results/trainable_depth.json`` of the book:
    the checkout vglib is installed from (editable), else the first folder from the working directory
    up that holds one (a chapter's folder of a copy of the book, where vglib was installed from a wheel,
    as on Colab)."""
    if path is not None:
        candidates = [Path(path)]
    else:
        here = Path.cwd().resolve()
        candidates = [Path(__file__).resolve().parents[1] / RESULTS_FILE]
        candidates += [folder / RESULTS_FILE for folder in (here, *here.parents)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{RESULTS_FILE} not found (looked at {', '.join(map(str, candidates[:3]))}, ...): "
        "run python benchmarks/trainable_depth.py --write in the book's checkout"
    )


def load_trainability(path: str | Path | None = None) -> tuple[dict, list[TrainabilityCell]]:
    """``(meta, cells)`` of a results file written by ``benchmarks/trainable_depth.py --write``, by
    default the committed one of the book (see ``results_file``)."""
    path = results_file(path)
    saved = json.loads(path.read_text())
    return saved["meta"], trainability_from_json(saved["cells"])


def load_smaller_lr(path: str | Path | None = None) -> tuple[float, list[TrainabilityCell]]:
    """``(lr, cells)`` of the results file's ``smaller_lr`` field (written by
    ``benchmarks/trainable_depth.py --smaller-lr``): the networks next to a boundary that failed at
    the grid's smallest rate, re-run at a smaller one ``lr``. Raises ``KeyError`` if the file has no
    such field."""
    path = results_file(path)
    saved = json.loads(path.read_text())
    if "smaller_lr" not in saved:
        raise KeyError(f"{path} has no smaller_lr field: run benchmarks/trainable_depth.py --smaller-lr")
    extra = saved["smaller_lr"]
    return float(extra["lr"]), trainability_from_json(extra["cells"])
