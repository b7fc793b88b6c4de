"""The common harness of the Remedies part: every remedy trained on the same task, for the same
budget, with the gradient monitor on, and measured the same way.

``Remedy`` names one configuration (architecture, initialisation, optimiser, clipping);
``run_harness`` trains it on ``HARNESS_TASK`` and returns a ``HarnessResult``:

- ``gradient_ratio``: the gradient norm of the first hidden layer over that of the last, each
  layer's weight and bias together (as the monitor records a module), on the first minibatch
  before any update. It is a symptom to read with care: with zero biases at initialisation the
  last layer's bias gradient can dominate it, and forward and backward growth can cancel in it.
  The chapters' tables use the two ratios of ``vglib.grid.init_ratios`` instead (weights only,
  and the backpropagated gradient), through ``vglib.compare``.
- ``steps_to_threshold``: the first evaluation step at which the held-out loss is at most
  ``HARNESS_THRESHOLD`` (``None``: never within the budget).
- ``final_loss``: the held-out loss at the end (``inf`` if training diverged).

One run is one draw: another seed (another network, another minibatch order) can cross the
threshold a few evaluations earlier or later, or not at all. ``run_harnesses(..., seeds=HARNESS_SEEDS)``
trains every remedy once per seed and returns ``HarnessRuns``: the median and range of each
measurement over the seeds, which is what the chapters state; a difference between two remedies is
only called one where their ranges do not overlap.

The task is ``HARNESS_TASK``, the *teacher* task of ``vglib.tasks`` (its training and test splits):
a regression target that no linear map fits (``harness_linear_baseline``: least squares does no
better than predicting 0), so reaching the threshold of 0.5 takes a nonlinear model. Equal tuning
over learning rates, and the second task (*digits*), are ``vglib.grid``'s and ``vglib.compare``'s.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from typing import TypeVar, overload

import numpy as np
import torch
from torch import nn

from ._render import html_table, text_table
from ._seed import SeedSpread, torch_seed
from ._seed import generator as seeded_generator
from ._validation import check_positive_int
from .initialization import hidden_weight_layers, lsuv_init
from .models import build_network
from .tables import MonitorTable
from .tasks import Task, harness_task
from .train import TrainingHistory, train

J = TypeVar("J")
T = TypeVar("T")

__all__ = [
    "HARNESS_BATCH",
    "HARNESS_EVAL_EVERY",
    "HARNESS_MONITOR_EVERY",
    "HARNESS_SEEDS",
    "HARNESS_STEPS",
    "HARNESS_TASK",
    "HARNESS_THRESHOLD",
    "HarnessResult",
    "HarnessRuns",
    "HarnessTable",
    "Remedy",
    "harness_data",
    "harness_first_batch",
    "harness_linear_baseline",
    "hidden_weight_layers",
    "run_harness",
    "run_harnesses",
]

HARNESS_TASK = "teacher"
"""The task of ``harness_data`` and ``run_harness``: a name of ``vglib.tasks.TASKS``."""
HARNESS_STEPS = 800
"""Training steps of the fixed budget."""
HARNESS_BATCH = 64
HARNESS_THRESHOLD = 0.5
"""The held-out loss that counts as "trains": half the loss of predicting 0."""
HARNESS_EVAL_EVERY = 10
HARNESS_MONITOR_EVERY = 20
HARNESS_SEEDS = (0, 1, 2)
"""The seeds a remedy is trained with when a claim must not rest on one draw."""
MAX_DEFAULT_PROCESSES = 2
"""``run_harnesses`` starts at most this many worker processes unless told otherwise."""


@dataclass(frozen=True)
class Remedy:
    """One configuration of the harness. Architecture arguments are ``build_network``'s;
    ``lsuv`` re-initialises with ``lsuv_init`` on a training batch; the optimiser is SGD with
    momentum (which, unlike Adam, does not rescale small gradients, so what the architecture does
    to them shows) unless ``optimizer="adam"``."""

    label: str
    activation: str = "relu"
    init: str = "he"
    depth: int = 30
    width: int = 64
    norm: str = "none"
    skip: str = "none"
    residual_scale: float = 1.0
    gate_bias: float = -2.0
    lsuv: bool = False
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    clip_norm: float | None = None
    clip_value: float | None = None

    def but(self, label: str, **changes: object) -> Remedy:
        """A copy with a new label and some fields changed."""
        return replace(self, label=label, **changes)  # type: ignore[arg-type]

    def build(self, seed: int = 0, task: Task | None = None) -> nn.Sequential:
        """The configured network, initialised (LSUV included, on training inputs) from ``seed``,
        sized for ``task`` (a ``vglib.tasks.Task``; default: the teacher-student task of
        ``harness_data``)."""
        task = harness_task(HARNESS_TASK) if task is None else task
        in_features, out_features = task.in_features, task.out_features
        model = build_network(
            self.depth,
            self.width,
            self.activation,
            self.init,
            seed,
            norm=self.norm,
            skip=self.skip,
            residual_scale=self.residual_scale,
            gate_bias=self.gate_bias,
            in_features=in_features,
            out_features=out_features,
        )
        if self.lsuv:
            x = task.train[0]
            lsuv_init(model, x[:256], seed=seed)
        return model


@dataclass(frozen=True)
class HarnessResult:
    """What ``run_harness`` measured for one ``Remedy`` (see the module docstring)."""

    remedy: Remedy
    gradient_ratio: float
    steps_to_threshold: int | None
    final_loss: float
    threshold: float
    history: TrainingHistory = field(repr=False)
    seed: int = 0

    @property
    def trains(self) -> bool:
        """Whether the held-out loss reached the threshold within the budget."""
        return self.steps_to_threshold is not None

    def gradient_ratio_at(self, step: int) -> float:
        """The gradient ratio (as ``gradient_ratio``: first over last hidden layer, weight and
        bias together) at a later step the monitor sampled (every ``HARNESS_MONITOR_EVERY``
        steps), before that step's update."""
        hidden = hidden_weight_layers(self.remedy.build(self.seed))
        return _ratio_at(self.history.monitor.table(), hidden, step)  # type: ignore[union-attr]

    def first_step_gradients(self) -> dict[str, float]:
        """Every monitored layer's gradient norm (its weight and bias as one vector) at the first
        step, before any update, as the optimiser saw it (after any clipping): ``{layer: norm}``."""
        table = self.history.monitor.table()  # type: ignore[union-attr]
        rows = (table.step == 0) & (table.kind == "parameters")
        return {str(n): float(g) for n, g in zip(table.layer[rows], table["grad_norm"][rows], strict=True)}


@dataclass(frozen=True)
class HarnessRuns:
    """One ``Remedy`` trained on the harness once per seed: each seed draws another network and
    another minibatch order. Measurements come back as their median and range over the seeds
    (``SeedSpread``); ``steps_to_threshold`` is the median number of steps, counting a run that
    never reached the threshold as slower than any that did."""

    remedy: Remedy
    runs: tuple[HarnessResult, ...]

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("HarnessRuns needs at least one HarnessResult")
        if any(r.remedy != self.remedy for r in self.runs):
            raise ValueError("every run of a HarnessRuns must be of its remedy")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def threshold(self) -> float:
        return self.runs[0].threshold

    @property
    def budget(self) -> int:
        """Training steps of each run."""
        return len(self.runs[0].history.loss)

    @property
    def gradient_ratio(self) -> SeedSpread:
        return SeedSpread(self.seeds, tuple(r.gradient_ratio for r in self.runs))

    def gradient_ratio_at(self, step: int) -> SeedSpread:
        """``HarnessResult.gradient_ratio_at`` of every run."""
        return SeedSpread(self.seeds, tuple(r.gradient_ratio_at(step) for r in self.runs))

    @property
    def final_loss(self) -> SeedSpread:
        """The final held-out loss over the seeds (``inf`` for a run that diverged)."""
        return SeedSpread(self.seeds, tuple(r.final_loss for r in self.runs))

    @property
    def steps(self) -> tuple[int | None, ...]:
        """Steps to the threshold of each run (``None``: not within the budget)."""
        return tuple(r.steps_to_threshold for r in self.runs)

    @property
    def steps_to_threshold(self) -> int | None:
        """The median (the lower one for an even count) of ``steps``, a run that never reached the
        threshold counting as slower than any that did; ``None`` when that median run never did."""
        ordered = sorted(self.steps, key=lambda s: math.inf if s is None else s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def fastest(self) -> int | None:
        """The fewest steps any run took to the threshold (``None``: no run reached it)."""
        reached = [s for s in self.steps if s is not None]
        return min(reached) if reached else None

    @property
    def slowest(self) -> int | None:
        """The most steps any run took (``None`` when some run never reached the threshold)."""
        return None if None in self.steps else max(self.steps)  # type: ignore[type-var]

    @property
    def n_trained(self) -> int:
        """How many runs reached the threshold."""
        return sum(r.trains for r in self.runs)

    @property
    def trains(self) -> bool:
        """Whether every run reached the threshold."""
        return self.n_trained == len(self.runs)

    @property
    def never_trains(self) -> bool:
        """Whether no run reached the threshold."""
        return self.n_trained == 0

    def ratio_text(self, fmt: str = ".1e") -> str:
        """The gradient ratio at init as "median (low–high)"."""
        ratio = self.gradient_ratio
        return f"{ratio.median:{fmt}} ({ratio.low:{fmt}}–{ratio.high:{fmt}})"

    def steps_text(self) -> str:
        """Steps to the threshold as "median (fewest–most)"; ``>N`` stands for a run that did not
        reach it within its N steps, and "not within N" for a remedy none of whose runs did."""
        over = f">{self.budget}"
        if self.never_trains:
            return f"not within {self.budget}"
        median, slowest = self.steps_to_threshold, self.slowest
        return (
            f"{median if median is not None else over} "
            f"({self.fastest}–{slowest if slowest is not None else over})"
        )

    def loss_text(self, fmt: str = ".3f") -> str:
        """The final held-out loss as "median (low–high)"; a diverged run reads "diverged"."""
        loss = self.final_loss

        def one(value: float) -> str:
            return f"{value:{fmt}}" if math.isfinite(value) else "diverged"

        if math.isinf(loss.low):  # every run diverged
            return "diverged"
        return f"{one(loss.median)} ({one(loss.low)}–{one(loss.high)})"

    def trained_text(self) -> str:
        """How many runs reached the threshold: "2 of 3"."""
        return f"{self.n_trained} of {len(self.runs)}"

    def glue(self, prefix: str, *, ratio_fmt: str = ".1e", loss_fmt: str = ".3f") -> None:
        """Glue the texts above for the page: ``{prefix}_ratio``, ``{prefix}_steps``,
        ``{prefix}_loss`` and ``{prefix}_trained``."""
        from ._glue import glue

        glue(f"{prefix}_ratio", self.ratio_text(ratio_fmt))
        glue(f"{prefix}_steps", self.steps_text())
        glue(f"{prefix}_loss", self.loss_text(loss_fmt))
        glue(f"{prefix}_trained", self.trained_text())

    def faster_than(self, other: HarnessRuns) -> bool:
        """Whether every run of this remedy reached the threshold before any run of ``other`` did
        (the ranges of steps do not overlap)."""
        slowest, fastest = self.slowest, other.fastest
        return slowest is not None and (fastest is None or slowest < fastest)

    def steps_relation(self, other: HarnessRuns) -> str:
        """How this remedy's range of steps to the threshold lies against ``other``'s, in words a
        sentence can take: "lies entirely below" (every run was faster), "lies entirely above"
        (every run was slower) or "overlaps"."""
        if self.faster_than(other):
            return "lies entirely below"
        if other.faster_than(self):
            return "lies entirely above"
        return "overlaps"


def harness_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((x_train, y_train), (x_test, y_test))`` of ``HARNESS_TASK`` (``vglib.harness_task``'s
    training and test splits; its validation split chooses learning rates in ``vglib.grid``)."""
    task = harness_task(HARNESS_TASK)
    return task.train, task.test


def harness_linear_baseline() -> float:
    """The held-out loss of the best linear map: least squares (with an intercept) on the harness
    training set, evaluated on its test set. For the teacher task it is no better than predicting 0."""
    return harness_task(HARNESS_TASK).linear_baseline("test")


def harness_first_batch(seed: int = 0, task: Task | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first minibatch ``run_harness(..., seed=seed)`` trains on (the one ``gradient_ratio`` is
    measured on), or with ``task`` the first one a network of that seed trains on in
    ``vglib.grid.run_group``: ``train`` and ``train_ensemble`` draw it from a generator seeded with
    ``seed``."""
    (x, y) = harness_data()[0] if task is None else task.train
    index = torch.randint(0, len(x), (min(HARNESS_BATCH, len(x)),), generator=seeded_generator(seed))
    return x[index], y[index]


def run_harness(
    remedy: Remedy,
    *,
    steps: int = HARNESS_STEPS,
    threshold: float = HARNESS_THRESHOLD,
    seed: int = 0,
) -> HarnessResult:
    """Train ``remedy`` on the harness task for ``steps`` steps with the monitor on; measure it."""
    if not isinstance(remedy, Remedy):
        raise TypeError(f"remedy must be a vglib.Remedy, got {type(remedy).__name__}")
    check_positive_int("steps", steps)
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    (x, y), (x_test, y_test) = harness_data()
    with torch_seed(seed):
        model = remedy.build(seed)
    hidden = hidden_weight_layers(model)
    if len(hidden) < 2:
        raise ValueError(
            f"the harness compares the first and last hidden layers: depth must be >= 2, got {remedy.depth}"
        )
    with np.errstate(all="ignore"):
        history = train(
            model,
            x,
            y,
            steps=steps,
            lr=remedy.lr,
            batch_size=HARNESS_BATCH,
            optimizer=remedy.optimizer,
            momentum=remedy.momentum,
            seed=seed,
            clip_norm=remedy.clip_norm,
            clip_value=remedy.clip_value,
            x_eval=x_test,
            y_eval=y_test,
            eval_every=HARNESS_EVAL_EVERY,
            monitor_every=HARNESS_MONITOR_EVERY,
        )
    # keep the monitor's table, not the monitor: it holds the model and its hooks, which are heavy
    # to send back from a worker process (and a recording keeps only the table anyway)
    # the layer rows only: what the chapters read, and what their recorded runs hold
    history = replace(history, monitor=history.monitor.recorded(summaries=False))  # type: ignore[union-attr]
    table = history.monitor.table()
    ratio = _ratio_at(table, hidden, int(table.step.min()))
    final = float(history.eval_loss[-1])
    return HarnessResult(
        remedy=remedy,
        gradient_ratio=ratio,
        steps_to_threshold=history.steps_to(threshold),
        final_loss=final if math.isfinite(final) else math.inf,
        threshold=threshold,
        history=history,
        seed=seed,
    )


@overload
def run_harnesses(
    remedies: Sequence[Remedy],
    *,
    processes: int | None = ...,
    steps: int = ...,
    threshold: float = ...,
    seed: int = ...,
    seeds: None = ...,
) -> dict[str, HarnessResult]: ...


@overload
def run_harnesses(
    remedies: Sequence[Remedy],
    *,
    processes: int | None = ...,
    steps: int = ...,
    threshold: float = ...,
    seed: int = ...,
    seeds: Sequence[int],
) -> dict[str, HarnessRuns]: ...


def run_harnesses(
    remedies: Sequence[Remedy],
    *,
    processes: int | None = None,
    steps: int = HARNESS_STEPS,
    threshold: float = HARNESS_THRESHOLD,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
) -> dict[str, HarnessResult] | dict[str, HarnessRuns]:
    """``run_harness`` for every remedy, keyed by label, in order; several at a time.

    With ``seeds`` (e.g. ``HARNESS_SEEDS``) every remedy is trained once per seed and comes back as
    ``HarnessRuns``; otherwise once, with ``seed``, as a ``HarnessResult``.

    The runs are made by ``map_in_processes``: the same results, to the last bit, in one process
    or several. From a script, call it under ``if __name__ == "__main__":``.
    """
    remedies = list(remedies)
    if not remedies:
        raise ValueError("run_harnesses needs at least one Remedy")
    for remedy in remedies:
        if not isinstance(remedy, Remedy):
            raise TypeError(f"remedies must be vglib.Remedy objects, got {type(remedy).__name__}")
    labels = [r.label for r in remedies]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ValueError(f"remedy labels must be unique (they key the results), repeated: {duplicated}")
    if seeds is not None:
        seeds = tuple(seeds)
        if (
            not seeds
            or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and s >= 0 for s in seeds)
        ):
            raise ValueError(f"seeds must be distinct non-negative ints, at least one, got {seeds!r}")
    jobs = [(r, s, steps, threshold) for r in remedies for s in (seeds if seeds is not None else (seed,))]
    done = map_in_processes(_run_harness_job, jobs, processes)
    if seeds is None:
        return {r.label: result for r, result in zip(remedies, done, strict=True)}
    per = len(seeds)
    return {r.label: HarnessRuns(r, tuple(done[i * per : (i + 1) * per])) for i, r in enumerate(remedies)}


def _run_harness_job(job: tuple[Remedy, int, int, float]) -> HarnessResult:
    remedy, seed, steps, threshold = job
    return run_harness(remedy, seed=seed, steps=steps, threshold=threshold)


def map_in_processes(fn: Callable[[J], T], jobs: Sequence[J], processes: int | None = None) -> list[T]:
    """``[fn(job) for job in jobs]``, in worker processes, in order.

    Each job must be seeded on its own and do the same arithmetic in any process, so the results
    are the same, to the last bit, whether the jobs share one process or ``processes`` worker
    processes. The default is one worker per CPU core this process may use, at most
    ``MAX_DEFAULT_PROCESSES``: each worker imports PyTorch afresh (a few hundred MB), and a
    container may report more cores than its quota lets it use. Workers are started with
    ``spawn`` and use the caller's PyTorch thread count. From a script, call it under
    ``if __name__ == "__main__":``, as any code that starts processes: without, the workers fail
    to start, and the jobs run in this process after a ``RuntimeWarning`` (slower, same results).
    """
    jobs = list(jobs)
    if processes is None:
        processes = min(
            MAX_DEFAULT_PROCESSES,
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        )
    check_positive_int("processes", processes)
    processes = min(processes, max(len(jobs), 1))
    if processes == 1:
        return [fn(job) for job in jobs]
    try:
        with ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=torch.set_num_threads,
            initargs=(torch.get_num_threads(),),
        ) as pool:
            return list(pool.map(fn, jobs))
    except BrokenProcessPool:
        warnings.warn(
            "the worker processes stopped before they finished (from a script, call this under "
            '`if __name__ == "__main__":`, since each worker re-imports the script; or a worker ran '
            f"out of memory); running the {len(jobs)} jobs in this process instead, with the same results",
            RuntimeWarning,
            stacklevel=3,
        )
        return [fn(job) for job in jobs]


def _ratio_at(table: MonitorTable, hidden: list[str], step: int) -> float:
    """The first over the last hidden layer's gradient norm in the monitor's table at ``step``."""
    at = table.step == step
    if not at.any():
        raise ValueError(f"the monitor sampled steps {sorted(set(table.step.tolist()))}, not {step}")
    grads = {n: g for n, g in zip(table.layer[at], table["grad_norm"][at], strict=True)}
    return _ratio(grads[hidden[0]], grads[hidden[-1]])


def _ratio(first: float, last: float) -> float:
    if last == 0.0:
        return math.nan if first == 0.0 else math.inf
    return first / last


def _loss_text(loss: float) -> str:
    return f"{loss:.3f}" if math.isfinite(loss) else "diverged"


class HarnessTable:
    """Harness results side by side; prints as text and shows as an HTML table in a notebook.

    Takes ``HarnessResult`` (one run each) or ``HarnessRuns`` (several seeds each: every cell is the
    median with the range over the seeds in brackets, and a column counts the runs that reached the
    threshold), not a mix of the two."""

    def __init__(self, results: Iterable[HarnessResult] | Iterable[HarnessRuns]):
        self.results: list = list(results)
        if not self.results:
            raise ValueError("a HarnessTable needs at least one HarnessResult or HarnessRuns")
        kinds = {type(r) for r in self.results}
        if not kinds <= {HarnessResult, HarnessRuns}:
            raise TypeError("a HarnessTable takes HarnessResult objects (from run_harness) or HarnessRuns")
        if len(kinds) > 1:
            raise TypeError("a HarnessTable takes either HarnessResult or HarnessRuns objects, not both")
        self.seeded = kinds == {HarnessRuns}
        thresholds = sorted({r.threshold for r in self.results})
        steps = f"steps to loss {'/'.join(f'{t:g}' for t in thresholds)}"
        if self.seeded:
            counts = sorted({len(r.runs) for r in self.results})
            self.caption = (
                f"median (min–max) over {'/'.join(map(str, counts))} seeds; "
                f">N: some run did not reach the loss within its N steps"
            )
            self.header: tuple[str, ...] = (
                "remedy",
                "grad ratio at init",
                steps,
                "runs that reach it",
                "final loss",
            )
        else:
            self.caption = ""
            self.header = ("remedy", "grad ratio at init", steps, "final loss")

    @staticmethod
    def _one(r: HarnessResult) -> tuple[str, ...]:
        steps = str(r.steps_to_threshold) if r.trains else f"not in {len(r.history.loss)}"
        return (r.remedy.label, f"{r.gradient_ratio:.1e}", steps, _loss_text(r.final_loss))

    @staticmethod
    def _seeded(r: HarnessRuns) -> tuple[str, ...]:
        steps = r.steps_text().replace("within", "in")
        return (r.remedy.label, r.ratio_text(), steps, f"{r.n_trained}/{len(r.runs)}", r.loss_text())

    def rows(self) -> list[tuple[str, ...]]:
        """Each result as formatted cells, then the baselines of the harness task in the final-loss
        column: the best linear map (least squares), the best quadratic one and predicting 0."""
        rows = [self._seeded(r) if self.seeded else self._one(r) for r in self.results]
        task = harness_task(HARNESS_TASK)
        blank = ("",) * (len(self.header) - 2)
        rows.append(("linear model (least squares)", *blank, f"{task.linear_baseline():.3f}"))
        quadratic = f"{task.quadratic_baseline():.3f}"
        rows.append(("quadratic model (least squares, degree-2 terms)", *blank, quadratic))
        rows.append(("predicting 0", *blank, f"{task.predict_zero_loss():.3f}"))
        return rows

    def __repr__(self) -> str:
        return text_table(self.header, self.rows(), self.caption)

    def _repr_html_(self) -> str:
        return html_table(self.header, self.rows(), self.caption)

    def as_dicts(self) -> list[dict[str, object]]:
        """One dict per result: the remedy's fields and the measurements (for ``HarnessRuns``, their
        medians, and per seed as lists)."""
        if not self.seeded:
            return [
                {
                    **asdict(r.remedy),
                    "gradient_ratio": r.gradient_ratio,
                    "steps_to_threshold": r.steps_to_threshold,
                    "final_loss": r.final_loss,
                }
                for r in self.results
            ]
        return [
            {
                **asdict(r.remedy),
                "seeds": list(r.seeds),
                "gradient_ratio": r.gradient_ratio.median,
                "steps_to_threshold": r.steps_to_threshold,
                "final_loss": r.final_loss.median,
                "runs_that_reach_threshold": r.n_trained,
                "gradient_ratio_per_seed": [float(v) for v in r.gradient_ratio.values],
                "steps_per_seed": list(r.steps),
                "final_loss_per_seed": [float(v) for v in r.final_loss.values],
            }
            for r in self.results
        ]
