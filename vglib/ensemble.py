"""Train several copies of one architecture at once, as one batched ensemble.

A fair comparison trains every configuration with several seeds and several learning rates; on a
CPU, small networks trained one by one spend their time in per-operation overhead, not in
arithmetic. ``train_ensemble`` trains the *members* of one configuration, each a ``(seed, lr)``
pair, together: ``torch.func.stack_module_state`` stacks the members' parameters and buffers along
a new first dimension, ``torch.func.functional_call`` under ``torch.func.vmap`` runs every member's
forward pass in one batched pass, and one backward pass of the summed losses gives every member
its own gradient (each loss depends only on its own member's parameters). The update rules are
PyTorch's (``torch.optim.SGD`` with momentum, ``torch.optim.Adam``) written over the stacked
tensors, with a learning rate per member; gradient clipping is per member, as
``clip_grad_norm_``/``clip_grad_value_`` would clip each network alone.

Member ``k`` is built as ``vglib.train``'s caller builds it (``build(seed)`` under
``torch_seed(seed)``) and draws its minibatches from its own generator seeded with its seed, so it
follows the run ``train(build(seed), x, y, lr=lr, seed=seed, ...)`` up to floating-point rounding
(tested over 20 steps for SGD with momentum, Adam and batch norm: the batched matrix products sum
in another order). Batch norm keeps running statistics per member; evaluation runs as ``train``
evaluates (in eval mode by default, on the running statistics; with ``eval_mode=False`` in
training mode), on a copy of the buffers, so held-out data never enters them.

``warmup_steps`` warms every member's learning rate up linearly as ``vglib.train`` does (update
``s = 1, 2, ...`` uses ``lr * min(1, s / warmup_steps)``, the product taken in float64 as
``torch.optim.lr_scheduler.LambdaLR`` takes it in Python floats). The members may take integer
inputs (token ids): a model whose forward checks their values with a Python ``int(...)`` (as
``vglib.Transformer.embed`` checks the id range) cannot run under ``vmap``, so such a model must
skip that check inside the batched pass (``vglib.transformer_training`` builds its members so).

**Divergence.** ``EnsembleRun.diverged_at[k]`` is the first update (1, 2, ...) at which member
``k``'s training outputs or training loss were not all finite (``None``: never). The members'
arithmetic is independent (batched products, per-member sums and clipping, element-wise updates),
so a diverged member never touches the others: it keeps training on its non-finite weights, which
costs nothing extra and changes no other member's bits. With ``stop_at_divergence=True`` its
results are NaN from that update on (its training losses from that update, its held-out losses and
accuracies at every evaluation at or after it), as if it had stopped there, which is what a run
that stops at its first non-finite loss records; its final weights (``model(k)``) are the
non-finite ones it reached, not those before the divergence. With the default ``False`` the
numbers are left as computed (the MLP grid's behaviour).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ._batch import default_loss
from ._seed import generator as seeded_generator
from ._seed import torch_seed
from ._validation import check_choice, check_positive_int
from .train import OPTIMIZERS, TrainingHistory

__all__ = ["EnsembleRun", "train_ensemble"]

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


@dataclass(frozen=True)
class EnsembleRun:
    """What ``train_ensemble`` returns: per member ``k`` (``members[k] = (seed, lr)``), the
    training loss at every step (``loss[k]``), the held-out loss every ``eval_every`` steps
    (``eval_loss[k]``, at ``eval_steps``), the held-out accuracy where the targets are class
    indices (``eval_accuracy[k]``, else ``None``), the same on a second held-out set where one was
    given (``test_loss``, ``test_accuracy``: a validation set chooses, a test set reports), and the
    trained weights (``model(k)``)."""

    members: tuple[tuple[int, float], ...]
    loss: np.ndarray
    eval_steps: np.ndarray
    eval_loss: np.ndarray
    eval_accuracy: np.ndarray | None
    test_loss: np.ndarray | None
    test_accuracy: np.ndarray | None
    _build: Callable[[int], nn.Module]
    _state: dict[str, torch.Tensor]
    diverged_at: tuple[int | None, ...] = ()

    def history(self, k: int) -> TrainingHistory:
        """Member ``k``'s run as ``vglib.train`` returns it (without a monitor)."""
        return TrainingHistory(self.loss[k], self.eval_steps, self.eval_loss[k])

    def model(self, k: int) -> nn.Module:
        """Member ``k``, trained: built again with its seed and loaded with its final weights."""
        seed = self.members[k][0]
        with torch_seed(seed):
            model = self._build(seed)
        model.load_state_dict({name: value[k] for name, value in self._state.items()})
        return model


def _check_members(members: Sequence[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    out = []
    for member in members:
        if not (isinstance(member, tuple | list) and len(member) == 2):
            raise TypeError(f"each member is a (seed, lr) pair, got {member!r}")
        seed, lr = member
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"a member's seed must be an int, got {seed!r}")
        if not (isinstance(lr, int | float | np.floating) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"a member's learning rate must be a finite number > 0, got {lr!r}")
        out.append((int(seed), float(lr)))
    if not out:
        raise ValueError("an ensemble needs at least one member (seed, lr)")
    return tuple(out)


def _build_members(
    build: Callable[[int], nn.Module], members: tuple[tuple[int, float], ...]
) -> list[nn.Module]:
    models = []
    for seed, _ in members:
        with torch_seed(seed):
            model = build(seed)
        if not isinstance(model, nn.Module):
            raise TypeError(f"build(seed) must return an nn.Module, got {type(model).__name__}")
        models.append(model)
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError(
            "build(seed) must give the same architecture for every seed (state_dict keys and shapes)"
        )
    return models


def _loss_fn(y: torch.Tensor, probe: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss ``train`` uses for these targets, checked once on ``probe`` (a member's output on a
    few examples) and returned in a form ``vmap`` can batch (no data-dependent checks inside)."""
    default_loss(probe, y[: len(probe)])  # raises the clear errors: shapes, class range, dtype
    if y.is_floating_point():
        return F.mse_loss
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= probe.shape[1]):
        raise ValueError(f"class indices in y must lie in [0, {probe.shape[1] - 1}]")
    return lambda output, target: F.cross_entropy(output, target.long())


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(K,)`` vector shaped to broadcast against a stacked tensor ``(K, ...)``."""
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


def train_ensemble(
    build: Callable[[int], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    members: Sequence[tuple[int, float]],
    steps: int,
    batch_size: int = 64,
    optimizer: str = "adam",
    momentum: float = 0.0,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    x_eval: torch.Tensor | None = None,
    y_eval: torch.Tensor | None = None,
    eval_every: int = 50,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    eval_mode: bool = True,
    warmup_steps: int = 0,
    stop_at_divergence: bool = False,
) -> EnsembleRun:
    """Train one network per member ``(seed, lr)``, all built by ``build(seed)``, together (see
    the module docstring); the arguments mean what they mean for ``vglib.train`` (``eval_mode`` and
    ``warmup_steps`` too), and ``(x_test, y_test)``, if given, is a second held-out set evaluated at
    the same steps. ``stop_at_divergence`` makes a member's results NaN from the update at which its
    training outputs or loss first became non-finite (``EnsembleRun.diverged_at``; see the module
    docstring)."""
    if not callable(build):
        raise TypeError(f"build must be a function of the seed that returns an nn.Module, got {build!r}")
    members = _check_members(members)
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("eval_every", eval_every)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_positive_int("warmup_steps", warmup_steps, minimum=0)
    if not isinstance(stop_at_divergence, bool):
        raise TypeError(f"stop_at_divergence must be True or False, got {stop_at_divergence!r}")
    for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 or None, got {value!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y hold different numbers of examples: {len(x)} and {len(y)}")
    x_eval, y_eval = (x, y) if x_eval is None or y_eval is None else (x_eval, y_eval)

    models = _build_members(build, members)
    trainable = {name for name, p in models[0].named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError(f"{type(models[0]).__name__} has no trainable parameters")
    with torch.no_grad():  # on a copy: the probe pass must not touch running statistics
        loss_fn = _loss_fn(y, copy.deepcopy(models[0])(x[: min(2, len(x))]))
    params, buffers = stack_module_state(models)  # leaves, stacked on dim 0
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    base = copy.deepcopy(models[0]).to("meta")
    evaluated = copy.deepcopy(base).eval() if eval_mode else base  # the mode held-out data sees
    del models

    def member_loss(
        p: dict, b: dict, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = functional_call(base, (p, b), (xb,))
        return loss_fn(out, yb), torch.isfinite(out).all()

    def member_output(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(evaluated, (p, b), (xb,))

    batched_loss = vmap(member_loss, randomness="different")
    batched_output = vmap(member_output, in_dims=(0, 0, None), randomness="different")
    weights = [p for name, p in params.items() if name in trainable]
    k = len(members)
    lr64 = torch.tensor([lr for _, lr in members], dtype=torch.float64)
    generators = [seeded_generator(seed) for seed, _ in members]
    size = min(batch_size, len(x))
    state: dict[str, list[torch.Tensor]] = {}
    held_out = {"eval": (x_eval, y_eval)}
    if x_test is not None and y_test is not None:
        held_out["test"] = (x_test, y_test)
    curves: dict[str, tuple[list, list]] = {name: ([], []) for name in held_out}
    losses, eval_steps = [], []
    classes = not y.is_floating_point()
    diverged_at: list[int | None] = [None] * k

    with torch_seed(members[0][0]):  # dropout and the like draw from here
        for step in range(steps):
            index = torch.stack([torch.randint(0, len(x), (size,), generator=g) for g in generators])
            for p in weights:
                p.grad = None
            loss, finite = batched_loss(params, buffers, x[index], y[index])
            loss.sum().backward()
            with torch.no_grad():
                grads = [p.grad for p in weights]
                if clip_norm is not None:  # as clip_grad_norm_, per member
                    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
                    coef = (clip_norm / (norms + 1e-6)).clamp(max=1.0)
                    for g in grads:
                        g.mul_(_per_member(coef, g))
                if clip_value is not None:
                    for g in grads:
                        g.clamp_(-clip_value, clip_value)
                # the warm-up factor of update step + 1, as vglib.train's LambdaLR (float64 product)
                lr_now = lr64 * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr64
                _update(weights, grads, state, lr_now, step + 1, optimizer, momentum)
            losses.append(loss.detach().tolist())
            bad = (~finite | ~torch.isfinite(loss.detach())).tolist()
            for i in range(k):
                if bad[i] and diverged_at[i] is None:
                    diverged_at[i] = step + 1
            if (step + 1) % eval_every == 0 or step == steps - 1:
                eval_steps.append(step + 1)
                for name, (xs, ys) in held_out.items():
                    with torch.no_grad():  # on a copy of the buffers: held-out data never enters them
                        out = batched_output(params, {n: b.clone() for n, b in buffers.items()}, xs)
                        curves[name][0].append([float(loss_fn(out[i], ys)) for i in range(k)])
                        if classes:
                            curves[name][1].append(_accuracy(out, ys).tolist())
    final = {name: t.detach().clone() for name, t in {**params, **buffers}.items()}
    stopped = [d if stop_at_divergence else None for d in diverged_at]
    evaluated_at = np.array(eval_steps)

    def curve(name: str, which: int) -> np.ndarray | None:
        if name not in curves or (which == 1 and not classes):
            return None
        values = np.array(curves[name][which]).T
        for i, d in enumerate(stopped):
            if d is not None:
                values[i, evaluated_at >= d] = math.nan
        return values

    loss_curves = np.array(losses).T
    for i, d in enumerate(stopped):
        if d is not None:
            loss_curves[i, d - 1 :] = math.nan
    return EnsembleRun(
        members=members,
        loss=loss_curves,
        eval_steps=np.array(eval_steps),
        eval_loss=curve("eval", 0),  # type: ignore[arg-type]
        eval_accuracy=curve("eval", 1),
        test_loss=curve("test", 0),
        test_accuracy=curve("test", 1),
        _build=build,
        _state=final,
        diverged_at=tuple(diverged_at),
    )


def _accuracy(out: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Per member, the share of examples whose largest output is the target class; NaN for a member
    whose outputs are not all finite (a diverged network: ``argmax`` of a NaN row returns 0, which
    would score it as the share of class 0 and hide the divergence)."""
    accuracy = (out.argmax(-1) == ys).float().mean(1)
    finite = torch.isfinite(out).flatten(1).all(1)
    return torch.where(finite, accuracy, torch.full_like(accuracy, math.nan))


def _update(
    weights: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: dict[str, list[torch.Tensor]],
    lr64: torch.Tensor,
    step: int,
    optimizer: str,
    momentum: float,
) -> None:
    """One step of PyTorch's SGD (momentum, no dampening) or Adam (default betas and eps), in the
    same operations and order as ``torch.optim`` applies them to one network, with a learning
    rate per member (computed in float64 and rounded once, as a Python float is); ``torch._foreach``
    ops over the stacked tensors, one call per operation for all of them."""
    if optimizer == "sgd":
        lr = [_per_member(lr64.to(p.dtype), p) for p in weights]
        if momentum:
            if "buf" not in state:
                state["buf"] = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(state["buf"], momentum)
                torch._foreach_add_(state["buf"], grads)
            grads = state["buf"]
        torch._foreach_sub_(weights, torch._foreach_mul(grads, lr))
        return
    beta1, beta2 = _ADAM_BETAS
    correction1 = 1 - beta1**step
    correction2_sqrt = (1 - beta2**step) ** 0.5
    if "exp_avg" not in state:
        state["exp_avg"] = [torch.zeros_like(p) for p in weights]
        state["exp_avg_sq"] = [torch.zeros_like(p) for p in weights]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sq, beta2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
    step_size = [_per_member(-(lr64 / correction1).to(p.dtype), p) for p in weights]
    denom = torch._foreach_sqrt(exp_avg_sq)
    torch._foreach_div_(denom, correction2_sqrt)
    torch._foreach_add_(denom, _ADAM_EPS)
    # addcdiv's order, (value * t1) / t2, as torch.optim.Adam updates one network
    torch._foreach_add_(weights, torch._foreach_div(torch._foreach_mul(exp_avg, step_size), denom))
