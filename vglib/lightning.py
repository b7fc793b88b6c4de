"""``GradientMonitorCallback``: ``GradientMonitor`` and ``diagnose`` inside a PyTorch Lightning
``Trainer.fit``.

::

    import lightning as L
    from vglib.lightning import GradientMonitorCallback

    trainer = L.Trainer(max_steps=1000, callbacks=[GradientMonitorCallback(every=10)])
    trainer.fit(module, loader)

At fit start the callback puts a ``vglib.GradientMonitor`` around the ``LightningModule`` and the
trainer's optimizer; every ``every``-th optimizer step it sends the step's per-layer figures to
the trainer's loggers, one key per quantity and layer (``vglib/grad_norm/net.linear1``), never one
per parameter tensor; at the first training batch (and every ``diagnose_every`` sampled steps
after it) it runs ``vglib.diagnose`` on the batch and warns once, with the reason, when the
gradients vanish or explode. At fit end (or on an exception) the monitor is closed: no hook is
left on the model or the optimizer, and ``callback.monitor.table()`` holds everything recorded.

This module needs Lightning (``pip install "vglib[lightning]"``); ``import vglib`` does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_warn
except ImportError as error:  # pragma: no cover - exercised only where Lightning is absent
    raise ModuleNotFoundError(
        'vglib.lightning needs PyTorch Lightning (the "lightning" package, 2.2 or later): '
        'pip install "vglib[lightning]"',
        name=error.name,
    ) from error

from ._batch import Inputs
from ._validation import check_positive_int
from .diagnosis import Diagnosis, diagnose
from .monitor import GradientMonitor
from .tables import QUANTITIES as TABLE_QUANTITIES
from .tables import MonitorTable

__all__ = [
    "ALL_QUANTITIES",
    "QUANTITIES",
    "GradientMonitorCallback",
    "GradientWarning",
    "default_diagnose_with",
    "logged_metrics",
]

# (row kind, table column) -> the quantity's name, the names vglib.tensorboard writes too
_QUANTITY_OF = {(q.kind, q.column): name for name, q in TABLE_QUANTITIES.items()}

QUANTITIES = ("grad_norm", "update_ratio", "activation_grad_norm", "saturated", "dead", "global_grad_norm")
"""What ``GradientMonitorCallback`` logs by default, each under ``{prefix}/{quantity}/{layer}``:

- ``grad_norm``: ``||dL/dW||`` of each module with parameters; ``update_ratio``: ``||W_after -
  W_before|| / ||W_before||`` of the step;
- ``activation_grad_norm``: ``||dL/dh||`` at the output of each activation call (``act``,
  ``act#2``, ... for a module called several times);
- ``saturated`` (sigmoid, tanh) and ``dead`` (ReLU family): fractions, for the activation calls
  where the test applies;
- ``global_grad_norm``: the norm of every watched parameter's gradient together, in the
  monitor's ``norm_type``, as the optimizer step used it, so after Lightning's gradient clipping:
  one key, ``{prefix}/global_grad_norm``. Where the trainer clips (``gradient_clip_val``), the
  norm before clipping (what ``clip_grad_norm_`` returns) is logged too, as
  ``{prefix}/global_grad_norm_before_clipping``.

A value that is NaN (a column that does not apply to a row) is not logged."""

ALL_QUANTITIES = tuple(TABLE_QUANTITIES)
"""Every quantity ``quantities=`` may name: ``QUANTITIES``, then ``weight_norm`` (``||W||`` before
the step), ``activation_mean``, ``activation_std``, ``unit_std`` (of each activation call's
output), ``global_weight_norm`` and ``global_update_ratio`` (one key each), and per optimizer
parameter group (``{prefix}/{quantity}/group0``, or the group's ``"name"``) ``group_grad_norm``,
``group_weight_norm``, ``group_update_ratio``, ``lr`` and ``weight_decay``. The columns are those of
``vglib.tables.MonitorTable``."""


class GradientWarning(UserWarning):
    """Warned by ``GradientMonitorCallback`` when ``diagnose`` finds vanishing or exploding
    gradients (``warnings.filterwarnings("error", category=GradientWarning)`` stops the run)."""


def logged_metrics(
    step_table: MonitorTable, quantities: Iterable[str] = QUANTITIES, prefix: str = "vglib"
) -> dict[str, float]:
    """The scalars ``GradientMonitorCallback`` logs for a table's rows (one step's): ``{prefix}/
    {quantity}/{layer}``, or ``{prefix}/{quantity}`` for the ``"global"`` row's, for each quantity
    of ``quantities`` (see ``ALL_QUANTITIES``) whose value is not NaN (NaN marks a column that does
    not apply to the row). One key per quantity and layer or activation call, never per parameter
    tensor."""
    wanted = _check_quantities(quantities)
    metrics: dict[str, float] = {}
    for index, (layer, kind) in enumerate(zip(step_table.layer, step_table.kind, strict=True)):
        for column, values in step_table.columns.items():
            quantity = _QUANTITY_OF.get((kind, column))
            if quantity is None or quantity not in wanted:
                continue
            value = float(values[index])
            if not math.isnan(value):
                key = f"{prefix}/{quantity}" if kind == "global" else f"{prefix}/{quantity}/{layer}"
                metrics[key] = value
    return metrics


def _check_quantities(quantities: Iterable[str]) -> frozenset[str]:
    if isinstance(quantities, str):
        quantities = (quantities,)
    chosen = frozenset(quantities)
    unknown = sorted(q for q in chosen if q not in ALL_QUANTITIES)
    if unknown:
        raise ValueError(f"unknown quantities {unknown}; valid choices are {', '.join(ALL_QUANTITIES)}")
    return chosen


def default_diagnose_with(batch: Any) -> tuple[Inputs, torch.Tensor]:
    """``(inputs, targets)`` of a Lightning batch for ``diagnose``: the first two entries of a
    tuple or list batch (``(x, y)``, ``(x, y, *rest)``), or the ``"x"``/``"y"`` entries of a dict
    (``"inputs"``/``"targets"`` and ``"input"``/``"target"`` too). Other batches raise a
    ``TypeError`` that says how to pass ``diagnose_with=``."""
    if isinstance(batch, tuple | list) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        for x_key, y_key in (("x", "y"), ("inputs", "targets"), ("input", "target")):
            if x_key in batch and y_key in batch:
                return batch[x_key], batch[y_key]
    shown = type(batch).__name__ + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
    raise TypeError(
        f"cannot tell inputs from targets in a batch of type {shown}: pass "
        "GradientMonitorCallback(diagnose_with=lambda batch: (inputs, targets)), where the module's "
        "forward takes inputs (a tensor, a tuple or a dict of keyword arguments), or warn=False"
    )


class GradientMonitorCallback(pl.Callback):
    """Record gradient health with ``vglib.GradientMonitor`` during ``Trainer.fit``, log it through
    the trainer's loggers and warn when ``vglib.diagnose`` finds vanishing or exploding gradients.

    Parameters
    ----------
    every
        Record (and log) every ``every``-th optimizer step, the first included.
    histograms
        Passed to the monitor: keep activation and gradient histograms (read them with
        ``callback.monitor.histogram(...)``; they are not logged).
    include, exclude
        Passed to the monitor: which modules to watch, by name pattern (``"net.linear*"``) or class,
        as ``GradientMonitor`` takes them. Names are those of ``pl_module.named_modules()``.
    norm_type
        Passed to the monitor: the norm of the global and per-group gradient norms (2, or
        ``math.inf``), as ``clip_grad_norm_`` takes it.
    activations
        Passed to the monitor: extra activation classes and their kinds.
    quantities
        What to log, from ``ALL_QUANTITIES`` (default ``QUANTITIES``).
    prefix
        First part of every logged key.
    log
        Whether to log at all (``False``: only record; read ``callback.monitor.table()``).
    warn
        Run ``diagnose`` at the first training batch and every ``diagnose_every`` sampled steps,
        and warn (``GradientWarning``, once per status, on global rank 0 only) when it finds
        vanishing or exploding gradients. *Undetermined* and *healthy* verdicts are not warned;
        every verdict is kept in ``callback.diagnoses``.
    diagnose_every
        Sampled steps between diagnoses after the first (``None``: the first batch only).
    diagnose_with
        ``batch -> (inputs, targets)``: what to call the module's ``forward`` with and what the loss
        compares its output to; default ``default_diagnose_with`` (``(x, y)`` batches).
    loss_fn
        ``loss_fn(output, targets)`` for ``diagnose``; default the module's ``loss_fn`` attribute
        when it has a callable one, else MSE for float targets and cross-entropy for class indices.
    optimizer
        Which of ``trainer.optimizers`` the monitor follows (its steps are the recorded steps).

    Attributes
    ----------
    monitor
        The ``GradientMonitor`` of the last fit (``None`` before one starts): its ``table()`` has
        every recorded step, numbered from 0 at the fit's first optimizer step.
    diagnoses
        ``(trainer.global_step, Diagnosis)`` for each diagnosis run.

    Notes
    -----
    - **What is logged**: at each sampled step, ``logged_metrics`` of that step's rows, through
      ``logger.log_metrics(metrics, step=trainer.global_step)`` for every logger of the trainer
      (the step the optimizer was taking); ``Trainer(log_every_n_steps=...)`` does not apply, and
      nothing is logged where the trainer has no logger. A Lightning ``TensorBoardLogger`` is
      written through ``vglib.tensorboard.TensorBoardLogger`` on its ``SummaryWriter`` instead:
      the same keys and values, the step's values as one event (``log_metrics`` makes one per
      key) and a Custom Scalars layout with one chart per quantity, a line per layer (a NaN after
      a series began is written there, and skipped by ``log_metrics``).
    - **Keys**: a module called several times per pass has keys ``.../act``, ``.../act#2``, ...;
      MLflow's logger deletes ``#`` from keys, so ``act#2`` would share ``act2``'s key if the model
      also has a module named ``act2``.
    - **Automatic optimization** (Lightning calls ``optimizer.step(closure)``, the forward and
      backward pass inside the closure): parameter rows hold the gradient the step uses, after
      Lightning's gradient clipping (which runs inside the closure); activation rows the closure's
      forward pass.
    - **Gradient accumulation** (``accumulate_grad_batches=k``): one recorded step per optimizer
      step (``trainer.global_step`` counts those); parameter rows use the accumulated ``.grad``,
      activation rows pool every micro-batch of the step (the last one runs inside the closure,
      which adds to the gradients the others left; see ``GradientMonitor``).
    - **Manual optimization**: steps are recorded at ``opt.step()``, parameter rows as usual, and
      activation rows from the passes made before it (the closure Lightning hands the optimizer
      runs no pass of its own).
    - **Several optimizers** (manual optimization): the monitor follows the optimizer that
      ``optimizer=`` picks, over the modules ``include``/``exclude`` leave; to watch each, make one
      callback per optimizer with its modules and its own ``prefix``, and ``warn=False`` on all but
      one (a diagnosis's pass must not run while another callback's monitor records; untested).
    - **Diagnosis** runs ``diagnose(pl_module, inputs, targets, loss_fn)`` (one forward and
      backward pass of the module's ``forward``, gradients taken with ``torch.autograd.grad``, so
      ``.grad`` and the optimizer are untouched) on the batch about to be trained on, with the
      random number generators restored afterwards; it is skipped while the monitor records a
      step (so with ``every=1`` only the first batch is diagnosed).
    - **Distributed** training: each process runs its monitor; loggers and the warning act on
      rank 0 only (not tested here).
    """

    def __init__(
        self,
        every: int = 10,
        *,
        histograms: bool = False,
        include: Any = None,
        exclude: Any = None,
        norm_type: float = 2.0,
        activations: Mapping[type[nn.Module], str | None] | None = None,
        quantities: Sequence[str] = QUANTITIES,
        prefix: str = "vglib",
        log: bool = True,
        warn: bool = True,
        diagnose_every: int | None = 100,
        diagnose_with: Callable[[Any], tuple[Inputs, torch.Tensor]] | None = None,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
        optimizer: int = 0,
    ):
        self.every = check_positive_int("every", int(every) if isinstance(every, np.integer) else every)
        self.diagnose_every = (
            None if diagnose_every is None else check_positive_int("diagnose_every", diagnose_every)
        )
        if isinstance(optimizer, bool) or not isinstance(optimizer, int) or optimizer < 0:
            raise TypeError(f"optimizer is an index into trainer.optimizers (an int >= 0), got {optimizer!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        for name, fn in (("diagnose_with", diagnose_with), ("loss_fn", loss_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.quantities = _check_quantities(quantities)
        self._monitor_kwargs: dict[str, Any] = {
            "every": self.every, "histograms": histograms, "activations": activations,
            "include": include, "exclude": exclude, "norm_type": norm_type,
        }  # fmt: skip
        self.prefix = prefix
        self.log = log
        self.warn = warn
        self.diagnose_with = diagnose_with or default_diagnose_with
        self.loss_fn = loss_fn
        self.optimizer_index = optimizer
        self.monitor: GradientMonitor | None = None
        self.diagnoses: list[tuple[int, Diagnosis]] = []
        self._warned: set[str] = set()
        self._trainer: pl.Trainer | None = None
        self._attached = False
        self._sampled_at_diagnosis = 0
        self._before_clipping: float | None = None
        self._writers: dict[int, Any] = {}  # id(Lightning TensorBoardLogger) -> vglib's writer, or None

    # -- life cycle ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = trainer.optimizers
        if self.optimizer_index >= len(optimizers):
            raise ValueError(
                f"GradientMonitorCallback(optimizer={self.optimizer_index}): the trainer has "
                f"{len(optimizers)} optimizer(s); valid choices are 0 to {len(optimizers) - 1}"
            )
        self.monitor = GradientMonitor(
            pl_module, optimizers[self.optimizer_index], callbacks=(self._on_step,), **self._monitor_kwargs
        )
        self._trainer = trainer
        self._attached = False
        self._sampled_at_diagnosis = 0
        self._before_clipping = None
        self._writers = {}
        # attached at the first training batch, after the first diagnosis (whose pass it must not see)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        if self.warn and (not self._attached or self._diagnosis_due(monitor)):
            self._diagnose(trainer, pl_module, batch)
        if not self._attached:
            monitor.attach()
            self._attached = True

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Lightning calls this after the backward pass and before it clips the gradients: where it
        will clip, the global norm before clipping is read here (on sampled steps only)."""
        self._before_clipping = None
        monitor = self.monitor
        if monitor is None or not self._attached or not monitor.sampling or not _clips(trainer, pl_module):
            return
        followed = trainer.optimizers[self.optimizer_index]
        if optimizer is followed or getattr(optimizer, "optimizer", None) is followed:
            self._before_clipping = monitor.current_global_grad_norm()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(failed=False)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close(failed=True)

    def _close(self, failed: bool) -> None:
        if self.monitor is not None:
            if failed:  # closed without the monitor's "no step was taken" advice
                self.monitor.__exit__(RuntimeError, None, None)
            else:
                self.monitor.close()
        self._trainer = None
        self._attached = False

    # -- logging -----------------------------------------------------------------------------------
    def _on_step(self, monitor: GradientMonitor, step_table: MonitorTable) -> None:
        """After each sampled step (from inside ``optimizer.step``: ``trainer.global_step`` is the
        step being taken)."""
        trainer = self._trainer
        before, self._before_clipping = self._before_clipping, None
        if not self.log or trainer is None or not trainer.loggers:
            return
        step = trainer.global_step
        extra = {}
        if before is not None and "global_grad_norm" in self.quantities:
            extra[f"{self.prefix}/global_grad_norm_before_clipping"] = before
        metrics: dict[str, float] | None = None
        for logger in trainer.loggers:
            writer = self._tensorboard_writer(logger)
            if writer is not None:  # one event per step and a chart per quantity (vglib.tensorboard)
                writer(self.monitor, replace(step_table, step=np.full(len(step_table), step, dtype=np.int64)))
                for key, value in extra.items():
                    writer.writer.add_scalar(key, value, step)
                continue
            if metrics is None:
                metrics = {**logged_metrics(step_table, self.quantities, self.prefix), **extra}
            if metrics:
                logger.log_metrics(metrics, step=step)

    def _tensorboard_writer(self, logger: Any) -> Any:
        """vglib's TensorBoard writer on a Lightning ``TensorBoardLogger``'s ``SummaryWriter``, or
        ``None`` for any other logger (or where that writer cannot be used: a non-zero rank's
        stand-in, tensorboardX without tensorboard), which gets ``log_metrics``."""
        key = id(logger)
        if key not in self._writers:
            writer = None
            if isinstance(logger, TensorBoardLogger):
                from .tensorboard import TensorBoardLogger as VglibWriter

                try:
                    order = [q for q in ALL_QUANTITIES if q in self.quantities]
                    writer = VglibWriter(logger.experiment, prefix=self.prefix, quantities=order)
                except (ImportError, TypeError):
                    writer = None
            self._writers[key] = writer
        return self._writers[key]

    # -- diagnosis ---------------------------------------------------------------------------------
    def _diagnosis_due(self, monitor: GradientMonitor) -> bool:
        if self.diagnose_every is None or monitor.sampling:  # a recorded step must not see its pass
            return False
        sampled = -(-monitor.steps_taken // monitor.every)  # sampled steps recorded so far
        return sampled - self._sampled_at_diagnosis >= self.diagnose_every

    def _diagnose(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any) -> None:
        monitor = self.monitor
        if monitor is not None:
            self._sampled_at_diagnosis = -(-monitor.steps_taken // monitor.every)
        if type(pl_module).forward is pl.LightningModule.forward:
            raise TypeError(
                f"{type(pl_module).__name__} has no forward(): diagnose calls the module on the batch's "
                "inputs; define forward(), or pass GradientMonitorCallback(warn=False)"
            )
        inputs, targets = self.diagnose_with(batch)
        loss_fn = self.loss_fn
        if loss_fn is None:
            own = getattr(pl_module, "loss_fn", None)
            loss_fn = own if callable(own) else None
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            verdict = diagnose(pl_module, inputs, targets, loss_fn)
        step = trainer.global_step
        self.diagnoses.append((step, verdict))
        if verdict.status in ("vanishing", "exploding") and verdict.status not in self._warned:
            self._warned.add(verdict.status)
            names = verdict.flagged[:3]
            more = f" and {len(verdict.flagged) - 3} more" if len(verdict.flagged) > 3 else ""
            flagged = f"; look at {', '.join(names)}{more}" if names else ""
            advice = f"; what to try: {verdict.remedies[0]}" if verdict.remedies else ""
            message = (
                f"vglib: gradients are {verdict.status.upper()} at step {step} "
                f"({verdict.reason}){flagged}{advice}. callback.diagnoses holds the full diagnosis."
            )
            rank_zero_warn(message, category=GradientWarning)


def _clips(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether Lightning clips this step's gradients (automatic optimization, gradient_clip_val)."""
    value = trainer.gradient_clip_val
    return bool(pl_module.automatic_optimization) and value is not None and float(value) > 0
