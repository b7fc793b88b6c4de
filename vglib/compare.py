"""Remedies compared as the Remedies part shows them: each at the learning rate that the grid chose
for it on the validation split, over several seeds, side by side with the baselines.

``Grid`` reads the committed results of ``benchmarks/harness_grid.py`` (every remedy, task,
learning rate of ``GRID_LRS`` and seed): ``grid.tuned(remedy, task)`` is the remedy at its chosen
learning rate and ``grid.tuning(label, task)`` its tuning curve (the final validation metric at every
learning rate). ``run_tuned`` trains a remedy at its learning rate over the seeds, as one batched
ensemble, and measures it (``TunedRuns``): the final test metric, the steps to the task's threshold
and, before any update, two gradient ratios named for what they measure (``grid.init_ratios``). A
chapter runs its rows live (or reads them from its recording) and reads the grid only for the
learning rate and the tuning curves. ``RemedyTable`` prints them with the baselines beside: the best
linear model, predicting 0 (or the most frequent class) and, where given, the one-hidden-layer
network of equal parameter count, tuned on the same grid.

A difference is called one only where the ranges over the seeds do not overlap
(``SeedSpread.relation``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ._render import html_table, text_table
from ._seed import SeedSpread
from ._tensors import to_numpy
from .grid import (
    GRID_EVAL_EVERY,
    GRID_LRS,
    GRID_REMEDIES,
    GRID_STEPS,
    SHALLOW_TWIN,
    THRESHOLDS,
    GridCell,
    cells_from_json,
    choose_lr,
    init_ratios,
    run_group,
    shallow_twin,
    spread_at,
    steps_to,
)
from .harness import HARNESS_SEEDS, Remedy, map_in_processes
from .tasks import harness_task

__all__ = ["Grid", "RemedyTable", "TunedRuns", "compare_tuned", "run_tuned", "run_tuned_many"]


@dataclass(frozen=True)
class TunedRuns:
    """One remedy on one task at one learning rate (``remedy.lr``), once per seed: each seed draws
    another network and another minibatch order. ``cells`` hold each run's validation and test
    metric at every evaluation; ``weight_ratio`` and ``backprop_ratio`` are the two gradient ratios
    at initialisation of each seed's network on its first minibatch (``vglib.grid.init_ratios``:
    ``||dL/dW_1|| / ||dL/dW_L||`` of the first and last hidden Linear layers, weights only, and
    ``||dL/dh||`` per element from the last hidden layer back to the first, by ``diagnose``'s
    fit)."""

    remedy: Remedy
    task: str
    cells: tuple[GridCell, ...]
    weight_ratio: SeedSpread
    backprop_ratio: SeedSpread

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(c.seed for c in self.cells)

    @property
    def metric(self) -> str:
        """``"mse"`` (lower is better) or ``"accuracy"`` (higher is better)."""
        return harness_task(self.task).metric

    @property
    def threshold(self) -> float:
        return THRESHOLDS[self.task]

    @property
    def final(self) -> SeedSpread:
        """The test metric after the budget, median and range over the seeds (NaN: diverged)."""
        return spread_at(self.cells, self.remedy.lr)

    @property
    def steps(self) -> SeedSpread:
        """Per seed, the first evaluation step at which the test metric reaches the threshold
        (``inf``: not within the budget)."""
        return steps_to(self.cells, self.remedy.lr, self.threshold, self.metric)

    @property
    def budget(self) -> int:
        return self.cells[0].eval_steps[-1]

    @property
    def n_reached(self) -> int:
        return sum(math.isfinite(v) for v in self.steps.values)

    @property
    def diverged(self) -> int:
        """How many runs ended with a NaN or infinite metric."""
        return sum(not math.isfinite(v) for v in self.final.values)

    def curves(self) -> np.ndarray:
        """The test metric at every evaluation (``eval_steps``), one row per seed."""
        return np.array([c.test for c in self.cells], dtype=float)

    @property
    def eval_steps(self) -> np.ndarray:
        return np.array(self.cells[0].eval_steps)

    def final_text(self, fmt: str = ".3f") -> str:
        """The final test metric as "median (low–high)"; "diverged" where every run did, and a
        diverged run counted as the worst value."""
        spread = _finite(self.final, self.metric)
        if all(math.isinf(v) for v in spread.values):
            return "diverged"
        return spread.text(fmt, missing="diverged")

    def steps_text(self) -> str:
        """Steps to the threshold as "median (fewest–most)", "never" for a run that did not reach it
        within the budget; "not within N" where no run did."""
        if self.n_reached == 0:
            return f"not within {self.budget}"
        return self.steps.text(".0f")

    def ratio_text(self, which: str = "weight", fmt: str = ".1e") -> str:
        """``weight_ratio`` or ``backprop_ratio`` as "median (low–high)"."""
        spread = {"weight": self.weight_ratio, "backprop": self.backprop_ratio}[which]
        return format(spread, fmt)

    def relation(self, other: TunedRuns) -> str:
        """How this remedy's final test metric lies against ``other``'s over the seeds, as a
        sentence can take it: "better than", "worse than" or "overlapping with" (only ranges that
        do not overlap count as a difference)."""
        rel = _finite(self.final, self.metric).relation(_finite(other.final, other.metric))
        if rel == "overlaps":
            return "overlapping with"
        better = rel == ("below" if self.metric == "mse" else "above")
        return "better than" if better else "worse than"

    def glue(self, prefix: str, *, fmt: str = ".3f", ratio_fmt: str = ".1e") -> None:
        """Glue ``{prefix}_final``, ``{prefix}_steps``, ``{prefix}_reached`` ("2 of 3"),
        ``{prefix}_lr``, ``{prefix}_wratio`` and ``{prefix}_bratio`` as the table shows them."""
        from ._glue import glue

        glue(f"{prefix}_final", self.final_text(fmt))
        glue(f"{prefix}_steps", self.steps_text())
        glue(f"{prefix}_reached", f"{self.n_reached} of {len(self.cells)}")
        glue(f"{prefix}_lr", f"{self.remedy.lr:.1e}")
        glue(f"{prefix}_wratio", self.ratio_text("weight", ratio_fmt))
        glue(f"{prefix}_bratio", self.ratio_text("backprop", ratio_fmt))


def _finite(spread: SeedSpread, metric: str) -> SeedSpread:
    """A diverged run (NaN) as the worst possible value, so that ranges compare."""
    worst = math.inf if metric == "mse" else -math.inf
    return SeedSpread(spread.seeds, tuple(v if math.isfinite(v) else worst for v in spread.values))


def run_tuned(
    remedy: Remedy,
    task: str = "teacher",
    *,
    seeds: Sequence[int] = HARNESS_SEEDS,
    steps: int = GRID_STEPS,
) -> TunedRuns:
    """Train ``remedy`` at its learning rate (``remedy.lr``; take it from ``Grid.tuned``) on
    ``task`` once per seed, as one batched ensemble, with the grid's budget and evaluation period,
    and measure it."""
    if not isinstance(remedy, Remedy):
        raise TypeError(f"remedy must be a vglib.Remedy, got {type(remedy).__name__}")
    name = harness_task(task).name if isinstance(task, str) else task
    cells = run_group(remedy, name, lrs=[remedy.lr], seeds=seeds, steps=steps, eval_every=GRID_EVAL_EVERY)
    ratios = [init_ratios(remedy, name, seed) for seed in seeds]
    seeds = tuple(int(s) for s in seeds)
    return TunedRuns(
        remedy,
        name,
        tuple(cells),
        SeedSpread(seeds, tuple(r[0] for r in ratios)),
        SeedSpread(seeds, tuple(r[1] for r in ratios)),
    )


def _run_tuned_job(job: tuple[Remedy, str, tuple[int, ...], int]) -> TunedRuns:
    remedy, task, seeds, steps = job
    return run_tuned(remedy, task, seeds=seeds, steps=steps)


def run_tuned_many(
    remedies: Sequence[Remedy],
    task: str = "teacher",
    *,
    seeds: Sequence[int] = HARNESS_SEEDS,
    steps: int = GRID_STEPS,
    processes: int | None = None,
) -> dict[str, TunedRuns]:
    """``run_tuned`` for every remedy, keyed by label, in order, in worker processes as
    ``run_harnesses`` runs them (same results in any process)."""
    remedies = list(remedies)
    labels = [r.label for r in remedies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"remedy labels must be unique (they key the results), got {labels}")
    jobs = [(r, task, tuple(seeds), steps) for r in remedies]
    done = map_in_processes(_run_tuned_job, jobs, processes)
    return dict(zip(labels, done, strict=True))


@dataclass(frozen=True)
class Grid:
    """The committed results of ``benchmarks/harness_grid.py``: every grid cell, and both gradient
    ratios at initialisation of every remedy, task and seed."""

    cells: tuple[GridCell, ...]
    init: tuple[dict, ...]
    meta: dict

    @classmethod
    def load(cls, path: str | Path) -> Grid:
        data = json.loads(Path(path).read_text())
        return cls(tuple(cells_from_json(data["cells"])), tuple(data.get("init", ())), data.get("meta", {}))

    def group(self, label: str, task: str) -> list[GridCell]:
        """The cells of one remedy on one task (every learning rate and seed)."""
        cells = [c for c in self.cells if c.remedy == label and c.task == task]
        if not cells:
            known = sorted({c.remedy for c in self.cells if c.task == task})
            raise ValueError(f"the grid has no remedy {label!r} on task {task!r}; it has: {known}")
        return cells

    def lr(self, label: str, task: str) -> float:
        """The learning rate chosen for ``label`` on ``task`` on the validation split."""
        return choose_lr(self.group(label, task), harness_task(task).metric)

    def tuned(self, remedy: Remedy, task: str) -> Remedy:
        """``remedy`` (found in the grid by its label) at its chosen learning rate."""
        return replace(remedy, lr=self.lr(remedy.label, task))

    def tuning(self, label: str, task: str) -> dict[float, SeedSpread]:
        """The tuning curve: at every learning rate of the grid, the final *validation* metric over
        the seeds (what chose the learning rate)."""
        out: dict[float, SeedSpread] = {}
        for lr in sorted({c.lr for c in self.group(label, task)}):
            chosen = sorted((c for c in self.group(label, task) if c.lr == lr), key=lambda c: c.seed)
            out[lr] = SeedSpread(tuple(c.seed for c in chosen), tuple(c.final_validation for c in chosen))
        return out

    def runs(self, label: str, task: str, *, remedy: Remedy | None = None) -> TunedRuns:
        """The grid's own runs of ``label`` on ``task`` at its chosen learning rate, as
        ``TunedRuns`` (the ratios at initialisation from the file). The file keeps only labels: the
        runs' ``remedy`` is the one of vglib's catalogue (``GRID_REMEDIES``, or the shallow twin)
        with that label, at the chosen rate; a grid of remedies of your own needs ``remedy=``
        (the one the label stands for), since a label alone cannot rebuild a network."""
        if remedy is None:
            remedy = _catalogued(label, task)
        elif not isinstance(remedy, Remedy) or remedy.label != label:
            raise ValueError(f"remedy= must be the vglib.Remedy labelled {label!r}, got {remedy!r}")
        lr = self.lr(label, task)
        cells = tuple(sorted((c for c in self.group(label, task) if c.lr == lr), key=lambda c: c.seed))
        seeds = tuple(c.seed for c in cells)
        entries = {e["seed"]: e for e in self.init if (e["remedy"], e["task"]) == (label, task)}

        def ratio(key: str) -> SeedSpread:
            values = (float(entries[s][key]) if s in entries else math.nan for s in seeds)
            return SeedSpread(seeds, tuple(values))

        return TunedRuns(replace(remedy, lr=lr), task, cells, ratio("weight_ratio"), ratio("backprop_ratio"))

    def labels(self, task: str) -> list[str]:
        """The remedies of ``task`` in the order the grid ran them."""
        return list(dict.fromkeys(c.remedy for c in self.cells if c.task == task))


def _catalogued(label: str, task: str) -> Remedy:
    """The remedy of vglib's grid catalogue with this label (the shallow twin of ``task`` for its
    label); a clear error for any other label."""
    for remedy in GRID_REMEDIES:
        if remedy.label == label:
            return remedy
    if label == SHALLOW_TWIN:
        return shallow_twin(task)
    raise ValueError(
        f"{label!r} is not a remedy of vglib.grid.GRID_REMEDIES: pass remedy= (the vglib.Remedy "
        "with this label) to Grid.runs"
    )


class RemedyTable:
    """``TunedRuns`` of one task side by side, with the baselines below them: the best linear model
    (least squares, or logistic regression), for regression the best quadratic model (least squares
    on the degree-2 terms), predicting 0 (regression) or the most frequent class
    (classification), and ``shallow`` (the one-hidden-layer network of equal parameter count, tuned
    on the same grid) where given; with ``grid``, a last column gives the grid's own runs at each
    row's learning rate, which differ from the table's where training is chaotic (the same
    arithmetic in a larger batched ensemble rounds differently). Prints as text, shows as an HTML
    table in a notebook."""

    def __init__(
        self, runs: Iterable[TunedRuns], *, shallow: TunedRuns | None = None, grid: Grid | None = None
    ):
        self.runs = list(runs)
        self.grid = grid
        if not self.runs:
            raise ValueError("a RemedyTable needs at least one TunedRuns")
        tasks = {r.task for r in self.runs} | ({shallow.task} if shallow else set())
        if len(tasks) != 1:
            raise ValueError(f"a RemedyTable shows one task, got {sorted(tasks)}")
        self.task = tasks.pop()
        self.shallow = shallow
        t = harness_task(self.task)
        self.metric = t.metric
        name = "test accuracy" if self.metric == "accuracy" else "test loss"
        threshold = THRESHOLDS[self.task]
        counts = sorted({len(r.cells) for r in self.runs})
        self.caption = (
            f"{self.task}: median (min–max) over {'/'.join(map(str, counts))} seeds at the learning rate "
            f"chosen on the validation split from {len(GRID_LRS)} values, {GRID_STEPS} steps; "
            f"gradient ratios on each network's first minibatch before any update (the backpropagated "
            f"one is vglib.diagnose's fit of ||dL/dh|| over every called layer, not two layers alone)"
        )
        self.header = (
            "remedy",
            "lr",
            "‖∂L/∂W₁‖/‖∂L/∂W_L‖ (weights)",
            "‖∂L/∂h₁‖/‖∂L/∂h_L‖ (backprop, fitted over layers)",
            name,
            f"steps to {'accuracy' if self.metric == 'accuracy' else 'loss'} {threshold:g}",
            "runs that reach it",
        )
        if grid is not None:
            self.header = (*self.header, "the grid's runs at this lr")
            self.caption += (
                "; last column: the grid's own runs at the same learning rate, trained in a larger "
                "batched ensemble (another rounding, so another draw where training is chaotic)"
            )

    def __getitem__(self, label: str) -> TunedRuns:
        """The runs of the remedy (or the shallow twin) with this label."""
        every = {r.remedy.label: r for r in [*self.runs, *([self.shallow] if self.shallow else [])]}
        if label not in every:
            raise KeyError(f"no row {label!r}; the table has {list(every)}")
        return every[label]

    def rows(self) -> list[tuple[str, ...]]:
        rows = [self._row(r) for r in self.runs]
        if self.shallow is not None:
            rows.append(self._row(self.shallow, ratios=False))
        t = harness_task(self.task)
        if self.metric == "mse":
            baselines = {
                "linear model (least squares)": t.linear_baseline(),
                "quadratic model (least squares, degree-2 terms)": t.quadratic_baseline(),
                "predicting 0": t.predict_zero_loss(),
            }
        else:
            counts = np.bincount(to_numpy(t.train[1]))
            baselines = {
                "linear model (logistic regression)": t.linear_baseline(),
                "most frequent class": float((to_numpy(t.test[1]) == counts.argmax()).mean()),
            }
        blank = ("",) * (len(self.header) - 5)
        rows += [(name, "", "", "", f"{value:.3f}", *blank) for name, value in baselines.items()]
        return rows

    def _row(self, r: TunedRuns, ratios: bool = True) -> tuple[str, ...]:
        row = (
            r.remedy.label,
            f"{r.remedy.lr:.1e}",
            r.ratio_text("weight") if ratios else "",
            r.ratio_text("backprop") if ratios else "",
            r.final_text(),
            r.steps_text(),
            f"{r.n_reached}/{len(r.cells)}",
        )
        if self.grid is None:
            return row
        return (*row, self.grid.runs(r.remedy.label, r.task, remedy=r.remedy).final_text())

    def __repr__(self) -> str:
        return text_table(self.header, self.rows(), self.caption)

    def _repr_html_(self) -> str:
        return html_table(self.header, self.rows(), self.caption)


def compare_tuned(
    grid: Grid,
    remedies: Sequence[str | Remedy],
    task: str,
    *,
    records: Callable[..., dict[str, TunedRuns]] | None = None,
    seeds: Sequence[int] = HARNESS_SEEDS,
    steps: int = GRID_STEPS,
) -> RemedyTable:
    """The table a chapter shows: ``remedies`` (labels of ``GRID_REMEDIES``, or ``Remedy`` values
    the grid holds under their label) and the shallow twin, each at the learning rate ``grid``
    chose for it on ``task``, trained over ``seeds`` (``run_tuned_many``), with the grid's own runs
    at that rate in the last column. With ``records`` (a
    chapter's ``vglib.Records``) the runs are recorded under the name ``"tuned <task>"``."""
    catalogue = {r.label: r for r in GRID_REMEDIES}
    chosen = []
    for remedy in remedies:
        if isinstance(remedy, str):
            if remedy not in catalogue:
                raise ValueError(
                    f"no remedy {remedy!r} in vglib.grid.GRID_REMEDIES; it has: {sorted(catalogue)}"
                )
            remedy = catalogue[remedy]
        chosen.append(grid.tuned(remedy, task))
    rows = [*chosen, grid.tuned(shallow_twin(task), task)]
    seeds = tuple(seeds)

    def compute() -> dict[str, TunedRuns]:
        return run_tuned_many(rows, task, seeds=seeds, steps=steps)

    config = (rows, seeds) if steps == GRID_STEPS else (rows, seeds, steps)
    done = compute() if records is None else records(f"tuned {task}", compute, config=config)
    return RemedyTable([done[r.label] for r in chosen], shallow=done[rows[-1].label], grid=grid)
