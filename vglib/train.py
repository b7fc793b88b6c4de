"""Small, deterministic training loops."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._batch import default_loss
from ._seed import generator as seeded_generator
from ._seed import torch_seed
from ._state import buffers_kept, evaluating
from ._validation import check_choice, check_positive_int
from .monitor import GradientMonitor
from .tables import RecordedMonitor

__all__ = ["OPTIMIZERS", "TrainingHistory", "train"]

OPTIMIZERS = ("sgd", "adam")
_TRAIN_OPTIMIZERS = (*OPTIMIZERS, "adamw")  # train() also takes AdamW; the ensembles do not


@dataclass(frozen=True)
class TrainingHistory:
    """Training loss at every step, and the loss on held-out data every ``eval_every`` steps.

    ``grad_norm``, where ``train(..., record_grad_norm=True)`` asked for it, is the global norm of
    the gradient (every trainable parameter's gradient as one vector) at every step, *before* any
    clipping: what ``torch.nn.utils.clip_grad_norm_`` returns, and what Pascanu et al. (2013) advise
    looking at to choose a clipping threshold. It is computed in float64 from the float32
    gradients, so it stays finite where ``clip_grad_norm_``'s float32 norm overflows to inf (any
    gradient norm above about 1e19, whose square exceeds float32's range)."""

    loss: np.ndarray
    eval_steps: np.ndarray
    eval_loss: np.ndarray
    monitor: GradientMonitor | RecordedMonitor | None = None
    # recorded only where set: recordings made before the field existed stay valid
    grad_norm: np.ndarray | None = field(default=None, metadata={"recorded_if_set": True})

    @property
    def final_eval_loss(self) -> float:
        """The last held-out loss."""
        return float(self.eval_loss[-1])

    def steps_to(self, level: float) -> int | None:
        """The first evaluation step at which the held-out loss is at or below ``level``; ``None``
        if it never is (a NaN loss never is)."""
        reached = np.nonzero(self.eval_loss <= level)[0]
        return int(self.eval_steps[reached[0]]) if len(reached) else None


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "adam",
    momentum: float = 0.0,
    seed: int = 0,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    x_eval: torch.Tensor | None = None,
    y_eval: torch.Tensor | None = None,
    eval_every: int = 50,
    monitor_every: int | None = None,
    histograms: bool = False,
    callback: Callable[[int, nn.Module], None] | None = None,
    record_grad_norm: bool = False,
    eval_mode: bool = True,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
) -> TrainingHistory:
    """Train ``model`` in place on ``(x, y)`` by minibatch gradient descent; returns its history.

    Minibatches are drawn with their own generator seeded by ``seed``, so a run is repeatable
    and leaves the global RNG alone. The loss is MSE for float targets and cross-entropy for
    class indices. ``clip_norm`` rescales the gradient so that its global norm is at most
    ``clip_norm`` (Pascanu et al. 2013); ``clip_value`` clamps every component to
    ``[-clip_value, clip_value]``; both apply before each step, norm first. Without
    held-out data the model is evaluated on ``(x, y)``. Evaluation runs in eval mode, as a
    deployed model runs (batch norm normalises with the running statistics of the training
    batches, dropout is off); ``eval_mode=False`` evaluates in the model's current mode instead
    (batch norm in training mode normalises the held-out set with its own statistics, which is
    transductive). Either way the model's buffers and modes are left as they were, so held-out
    data never leaks into running statistics. With
    ``monitor_every`` a ``GradientMonitor`` records every that many steps (``histograms`` too, if
    asked) and comes back as ``history.monitor``. ``callback(step, model)``, if given, is called
    after every update with the number of updates made so far (e.g. ``vglib.CovariateShift``).
    ``record_grad_norm=True`` keeps every step's gradient norm before clipping as
    ``history.grad_norm``. ``weight_decay`` is the optimiser's own L2 penalty (``torch.optim.SGD``'s
    and ``torch.optim.Adam``'s ``weight_decay``: ``weight_decay * w`` added to every gradient).
    ``optimizer="adamw"`` is ``torch.optim.AdamW`` (Loshchilov & Hutter 2019), whose
    ``weight_decay`` shrinks the weights directly, apart from the adaptive step (with the default
    ``weight_decay=0`` it is Adam). ``warmup_steps`` warms the learning rate up linearly: update
    ``s = 1, 2, ...`` uses ``lr * min(1, s / warmup_steps)``, so the first update is
    ``lr / warmup_steps`` and update ``warmup_steps`` and later use ``lr`` (``torch.optim.lr_scheduler.
    LambdaLR``); 0, the default, is no warm-up. Inputs may be any tensor the model takes, e.g. the
    LongTensor token ids of ``vglib.associative_recall`` with its class-index targets.
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("eval_every", eval_every)
    check_choice("optimizer", optimizer, _TRAIN_OPTIMIZERS)
    check_positive_int("warmup_steps", warmup_steps, minimum=0)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 or None, got {value!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if len(x) != len(y):
        raise ValueError(f"x and y hold different numbers of examples: {len(x)} and {len(y)}")
    x_eval, y_eval = (x, y) if x_eval is None or y_eval is None else (x_eval, y_eval)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    warmup = None
    if warmup_steps > 0:  # the factor for update s + 1 (s = updates made so far)
        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup_steps))
    generator = seeded_generator(seed)
    losses, eval_steps, eval_losses, grad_norms = [], [], [], []
    monitor = None
    if monitor_every is not None:
        monitor = GradientMonitor(model, opt, every=monitor_every, histograms=histograms)
    with (
        torch_seed(seed),
        monitor or contextlib.nullcontext(),
    ):  # dropout and the like draw from here, not from the caller's stream
        for step in range(steps):
            index = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
            opt.zero_grad(set_to_none=True)
            loss = default_loss(model(x[index]), y[index])
            loss.backward()
            if record_grad_norm:  # before clipping
                grad_norms.append(_global_norm_float64(params))
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_norm)
            if clip_value is not None:
                nn.utils.clip_grad_value_(params, clip_value)
            opt.step()
            if warmup is not None:
                warmup.step()
            if callback is not None:
                callback(step + 1, model)
            losses.append(float(loss.detach()))
            if (step + 1) % eval_every == 0 or step == steps - 1:
                with torch.no_grad(), buffers_kept(model), evaluating(model, eval_mode):
                    eval_steps.append(step + 1)
                    eval_losses.append(float(default_loss(model(x_eval), y_eval)))
    return TrainingHistory(
        np.array(losses),
        np.array(eval_steps),
        np.array(eval_losses),
        monitor,
        np.array(grad_norms) if record_grad_norm else None,
    )


def _global_norm_float64(params: list[torch.Tensor]) -> float:
    """The norm of every parameter's gradient as one vector, summed in float64."""
    squares = [
        torch.linalg.vector_norm(p.grad, dtype=torch.float64) ** 2 for p in params if p.grad is not None
    ]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0
