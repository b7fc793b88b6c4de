"""Two independent label sources for every zoo case, computed with plain torch (no vglib).

Each case is labelled per AXIS: "depth" always, "time" for recurrent models (``time_module``).
A label is one of "vanishing", "exploding", "healthy", "borderline".

(a) MEASURE: one forward/backward pass on the case's own inputs, target and loss.
    depth: ratio = ||dL/dh_first|| / ||dL/dh_last||, h_first / h_last = the tensors named by
           ``first_hidden`` / ``last_hidden`` (outputs taken with forward hooks; for residual nets
           the residual stream after the first block and before the head; see models.py). Norms
           over the whole batch, in float64. When first and last are the same tensor (one hidden
           layer: an RNN with a head, a frozen backbone with one trainable layer) the ratio is 1
           by definition: there is no depth to vanish over.
    time:  ratio = ||dL/dx_1|| / ||dL/dx_T||, x = the input of the recurrent module (a leaf put
           in its place by a forward pre-hook), norm over batch and features at the first and at
           the last time step.
    label: ratio < 1e-3 vanishing; > 1e3 exploding; within [1e-1, 1e1] healthy; otherwise
           borderline. A non-finite loss or gradient is "exploding" (recorded as nonfinite).
           Reasons: 1e-3/1e3 are three orders of magnitude, far beyond what a learning rate or
           a normalisation layer absorbs; one order of magnitude either way is the spread of
           ordinary healthy nets (e.g. a 10-layer He-ReLU MLP); in between we do not decide.

(b) TRAIN: does the first layer (first time step) learn within a fixed budget, compared with a
    MATCHED HEALTHY CONTROL (``case.control`` / ``case.time_control``: same architecture and
    task, healthy init/config, e.g. He-ReLU for a sigmoid MLP, pre-LN for post-LN, gamma = 0.1
    for LayerScale 1e-6, the usual init for zero-init residuals; a fresh seed where the case is
    itself the healthy config; for time: a gated RNN that keeps its state, forget-gate bias 5
    for LSTM and nn.RNN models (an LSTM in place of the nn.RNN), update-gate bias 5 for GRU:
    memory sigmoid(5)^T = 0.993^T. We first used IRNN with clipping for nn.RNN models, but its
    own first/last movement ratio is only 0.017 at T = 50 (ReLU masks cut most paths), a weak
    yardstick; IRNN stays in the zoo as a case).
    depth: plain SGD, lr 0.01, 20 full-batch steps on the case's own inputs/target/loss, seed
           fixed (dropout is reseeded every step). lr 0.01 is the largest of 0.05 / 0.02 / 0.01
           at which no control diverged for model seeds 0, 1, 2, 7 (at 0.05 the 30-layer He-ReLU
           control and the x10 shared-activation net blew up); a smaller lr only makes the
           movement more linear in the gradient, but also hides milder explosions. Relative
           movement of a layer m = ||theta_K - theta_0|| / ||theta_0|| over the parameters of
           ``first_params`` / ``last_params`` (an Embedding counts only the rows the batch
           uses, so the vocabulary size does not matter; an all-zero theta_0 is divided by
           ||theta_K|| instead).
           r = m_first / m_last, the same for the control, q = r / r_ctrl. (Dividing by
           max(||theta_0||, ||theta_K||) instead would cap m near 1 and hide explosions.)
    time:  a first/last-signal task (models.TimeTask): the target depends on a signal that
           appears ONLY at t = 1 and on one that appears ONLY at t = T (input channel 0 / 1 for
           float sequences, reserved tokens 0,1 / 2,3 for token sequences), the other inputs are
           distractors. So the slice of the input weights (or Embedding rows) that reads the
           t = 1 signal can learn only through T - 1 recurrent steps, the slice that reads the
           t = T signal only through none: the per-time-step analogue of first/last layer.
           Plain SGD, lr 0.01, 20 steps, a fresh batch of 32 each step (fixed generator), no
           clipping.
           r = m_first / m_last of those slices, q = r / r_ctrl.
    label: the model DIVERGES (a non-finite loss or parameter, or the mean of the last 5 losses
           above 10 x the first loss) while the control does not -> exploding ("the step size
           that trains the control blows the model up"). Otherwise on q: q < 1e-2 vanishing (the
           first layer/time step learns 100 x less, relative to the last, than in the healthy
           control); q > 1e2 exploding; q within [1e-1, 1e1] healthy (within the spread of
           seeds and of healthy configs); otherwise borderline. In addition the ABSOLUTE
           comparison q_abs = m_first / m_first_ctrl (same lr, same steps) can only add an
           extreme verdict: q_abs < 1e-2 -> vanishing, q_abs > 1e2 -> exploding (both extremes
           at once, from q and q_abs: borderline). Why: in a bias-free ReLU/linear net
           (positively homogeneous) a weight's gradient is dL/dh_l * h_(l-1), and the two
           factors shrink/grow in opposite directions along depth, so every layer's relative
           movement scales by the same factor and q stays ~1 even when dL/dh vanishes 1e-6 (ReLU
           0.5 x He) or explodes 1e4 (conv ReLU 2 x He with a cross-entropy that saturates and so
           never diverges). Then the whole net, first layer included, moves 1e5 x less (more) than
           the control. A control that diverges or does not move gives "borderline" (no valid
           reference). Why movement and not "loss reached
           X": the budget is tiny (20 steps), and at this size SGD moves weights linearly in
           the accumulated gradient, so the movement shows WHERE learning happens, which is
           what vanishing/exploding is about, while the loss reached after 20 steps mostly
           depends on the task. We tried learning the copy-the-first-input task to a loss
           threshold instead: with SGD nothing (control included) learns T = 100 in a few
           hundred steps, and with Adam the outcome flips with the seed.
    Depth with one hidden layer (first = last): q = 1, healthy, not trained.

FINAL: per axis, the agreed label when (a) and (b) agree, else "ambiguous". Overall: vanishing
if an axis is vanishing, exploding if an axis is exploding (both: ambiguous), healthy if all
axes are healthy, ambiguous otherwise (an ambiguous or borderline axis and nothing decides).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .models import CASES, ZooCase

# ------------------------------------------------------------------------------- thresholds
VANISH_RATIO = 1e-3
EXPLODE_RATIO = 1e3
HEALTHY_BAND = (1e-1, 1e1)

DEPTH_STEPS = 20
DEPTH_LR = 0.01
TIME_STEPS = 20
TIME_LR = 0.01
TIME_BATCH = 32
Q_VANISH = 1e-2
Q_EXPLODE = 1e2
Q_HEALTHY = (1e-1, 1e1)
DIVERGE_FACTOR = 10.0
DIVERGE_WINDOW = 5

MEASURE_SEED = 0
TRAIN_SEED = 1234
TIME_DATA_SEED = 4321

LABELS = ("vanishing", "exploding", "healthy", "borderline")


# ---------------------------------------------------------------------------------- helpers
def call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def default_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE for float targets of the output's shape, cross-entropy for class indices."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the default loss needs a tensor output, got {type(out).__name__}: give loss_fn")
    if y.is_floating_point():
        return F.mse_loss(out, y)
    return F.cross_entropy(out, y)


def case_loss(case: ZooCase) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    return case.loss_fn or default_loss


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def ratio_label(r: float) -> str:
    if math.isnan(r):
        return "borderline"
    if r < VANISH_RATIO:
        return "vanishing"
    if r > EXPLODE_RATIO:
        return "exploding"
    if HEALTHY_BAND[0] <= r <= HEALTHY_BAND[1]:
        return "healthy"
    return "borderline"


def q_label(q: float) -> str:
    if math.isnan(q):
        return "borderline"
    if q < Q_VANISH:
        return "vanishing"
    if q > Q_EXPLODE:
        return "exploding"
    if Q_HEALTHY[0] <= q <= Q_HEALTHY[1]:
        return "healthy"
    return "borderline"


def _div(a: float, b: float) -> float:
    if b == 0.0:
        return math.nan if a == 0.0 else math.inf
    return a / b


# ------------------------------------------------------------------------------ hook probes
def parse_spec(spec: str) -> tuple[str, str, int]:
    """'name' / 'name#k' / 'name:in' / 'name:in#k' -> (module name, 'out'|'in', call index)."""
    index = 0
    if "#" in spec:
        spec, k = spec.rsplit("#", 1)
        index = int(k)
    kind = "out"
    if spec.endswith(":in"):
        spec, kind = spec[:-3], "in"
    return spec, kind, index


class Capture:
    """Records the outputs (or first inputs) of the named modules on every call."""

    def __init__(self, model: nn.Module, specs: list[str]):
        self.specs = specs
        self.calls: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.handles = []
        for spec in specs:
            name, kind, _ = parse_spec(spec)
            if (name, kind) in self.calls:
                continue
            self.calls[(name, kind)] = []
            mod = model.get_submodule(name)
            store = self.calls[(name, kind)]
            if kind == "out":

                def hook(m, args, out, store=store):
                    store.append(out[0] if isinstance(out, (tuple, list)) else out)

                self.handles.append(mod.register_forward_hook(hook))
            else:

                def pre(m, args, store=store):
                    store.append(args[0])

                self.handles.append(mod.register_forward_pre_hook(pre))

    def get(self, spec: str) -> torch.Tensor:
        name, kind, index = parse_spec(spec)
        calls = self.calls[(name, kind)]
        if not calls:
            raise RuntimeError(f"module {name!r} was not called")
        return calls[index]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------- (a) measurement
def measure_depth(case: ZooCase) -> dict:
    res: dict = {"first_hidden": case.first_hidden, "last_hidden": case.last_hidden}
    if case.first_hidden == case.last_hidden:
        res.update(ratio=1.0, label="healthy", trivial=True, nonfinite=False)
        return res
    model = case.model
    torch.manual_seed(MEASURE_SEED)
    cap = Capture(model, [case.first_hidden, case.last_hidden])
    try:
        out = call(model, case.inputs)
        loss = case_loss(case)(out, case.target)
        hf, hl = cap.get(case.first_hidden), cap.get(case.last_hidden)
    finally:
        cap.remove()
    if not (hf.requires_grad and hl.requires_grad):
        raise RuntimeError(f"{case.name}: a measured tensor does not require grad")
    gf, gl = torch.autograd.grad(loss, [hf, hl], allow_unused=True)
    nf = 0.0 if gf is None else float(gf.double().norm())
    nl = 0.0 if gl is None else float(gl.double().norm())
    r = _div(nf, nl)
    nonfinite = not (math.isfinite(float(loss.detach())) and math.isfinite(nf) and math.isfinite(nl))
    res.update(
        loss=float(loss.detach()),
        grad_first=nf,
        grad_last=nl,
        ratio=r,
        trivial=False,
        nonfinite=nonfinite,
        label="exploding" if nonfinite else ratio_label(r),
    )
    return res


def rnn_time_dim(mod: nn.Module, default: int | None) -> int:
    if isinstance(mod, nn.RNNBase):
        return 1 if mod.batch_first else 0
    if default is None:
        raise ValueError("time module is not an nn.RNNBase: give time_dim")
    return default


def measure_time(case: ZooCase) -> dict:
    model = case.model
    mod = model.get_submodule(case.time_module)
    tdim = rnn_time_dim(mod, case.time_dim)
    seen: list[torch.Tensor] = []

    def pre(m, args):
        x = args[0].detach().requires_grad_(True)
        seen.append(x)
        return (x, *args[1:])

    torch.manual_seed(MEASURE_SEED)
    h = mod.register_forward_pre_hook(pre)
    try:
        out = call(model, case.inputs)
    finally:
        h.remove()
    loss = case_loss(case)(out, case.target)
    (g,) = torch.autograd.grad(loss, [seen[0]])
    g = g.double().movedim(tdim, 0)
    per_step = g.reshape(g.shape[0], -1).norm(dim=1)
    nf, nl = float(per_step[0]), float(per_step[-1])
    r = _div(nf, nl)
    nonfinite = not (math.isfinite(float(loss.detach())) and math.isfinite(nf) and math.isfinite(nl))
    return {
        "module": case.time_module,
        "steps": int(per_step.shape[0]),
        "loss": float(loss.detach()),
        "grad_first": nf,
        "grad_last": nl,
        "ratio": r,
        "nonfinite": nonfinite,
        "label": "exploding" if nonfinite else ratio_label(r),
    }


# ------------------------------------------------------------------------- (b) training
def resolve_params(model: nn.Module, names: tuple[str, ...]) -> list[nn.Parameter]:
    out, ids = [], set()
    modules = dict(model.named_modules())
    for name in names:
        if name in modules:
            ps = list(modules[name].parameters())
        else:
            ps = [model.get_parameter(name)]
        for p in ps:
            if p.requires_grad and id(p) not in ids:
                ids.add(id(p))
                out.append(p)
    if not out:
        raise ValueError(f"no trainable parameters in {names}")
    return out


def _norm(ts: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in ts))


def _relative_move(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    """||theta_K - theta_0|| / ||theta_0|| (/ ||theta_K|| for an all-zero theta_0)."""
    delta = _norm([a - b for a, b in zip(after, before, strict=True)])
    n0 = _norm(before)
    return _div(delta, n0 if n0 > 0 else _norm(after))


def _sgd(
    model: nn.Module,
    steps: int,
    lr: float,
    batch: Callable[[int], tuple[Any, torch.Tensor]],
    loss_fn: Callable,
) -> dict:
    """Plain SGD; returns the losses and whether the run diverged."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    losses: list[float] = []
    diverged = False
    for k in range(steps):
        x, y = batch(k)
        torch.manual_seed(TRAIN_SEED + k)  # dropout masks
        loss = loss_fn(call(model, x), y)
        v = float(loss.detach())
        losses.append(v)
        if not math.isfinite(v):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if not diverged:
        diverged = not all(bool(torch.isfinite(p).all()) for p in params)
    if not diverged and len(losses) >= DIVERGE_WINDOW:
        tail = sum(losses[-DIVERGE_WINDOW:]) / DIVERGE_WINDOW
        diverged = tail > DIVERGE_FACTOR * losses[0]
    return {
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_max": max(losses),
        "diverged": diverged,
        "steps_run": len(losses),
    }


def _depth_run(case: ZooCase) -> dict:
    model = case.model
    first = resolve_params(model, case.first_params)
    last = resolve_params(model, case.last_params)
    # rows of each Embedding weight that the batch uses (only those can move)
    emb_of = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Embedding)}
    used: dict[int, set[int]] = {}
    hooks = []
    for pid, m in emb_of.items():
        used[pid] = set()
        hooks.append(
            m.register_forward_pre_hook(
                lambda mod, args, pid=pid: used[pid].update(args[0].unique().tolist())
            )
        )

    def sel(p: torch.Tensor, pid: int) -> torch.Tensor:
        if pid in emb_of:
            return p[sorted(used[pid])] if used[pid] else p[:0]
        return p

    before = {id(p): p.detach().clone() for p in first + last}
    try:
        run = _sgd(model, DEPTH_STEPS, DEPTH_LR, lambda k: (case.inputs, case.target), case_loss(case))
    finally:
        for h in hooks:
            h.remove()
    mf = _relative_move([sel(before[id(p)], id(p)) for p in first], [sel(p.detach(), id(p)) for p in first])
    ml = _relative_move([sel(before[id(p)], id(p)) for p in last], [sel(p.detach(), id(p)) for p in last])
    run.update(move_first=mf, move_last=ml, r=_div(mf, ml))
    return run


def _time_run(case: ZooCase, task) -> dict:
    model = case.model
    p = model.get_parameter(task.param)
    fi, li = torch.tensor(task.first_index), torch.tensor(task.last_index)
    before = p.detach().clone()
    gen = torch.Generator().manual_seed(TIME_DATA_SEED)
    batches = [task.batch(gen, TIME_BATCH) for _ in range(TIME_STEPS)]
    run = _sgd(model, TIME_STEPS, TIME_LR, lambda k: batches[k], task.loss_fn)
    after = p.detach()
    mf = _relative_move([before.index_select(task.dim, fi)], [after.index_select(task.dim, fi)])
    ml = _relative_move([before.index_select(task.dim, li)], [after.index_select(task.dim, li)])
    run.update(move_first=mf, move_last=ml, r=_div(mf, ml))
    return run


def _compare(model_run: dict, control_run: dict) -> tuple[str, float, float, str]:
    """(label, q, q_abs, note) from a model run and its control run.

    q = r / r_ctrl (first relative to last, against the control) decides; q_abs =
    m_first / m_first_ctrl (the first layer against the control's first layer, same lr) can only
    add an extreme verdict (< 1e-2 vanishing, > 1e2 exploding); the two extremes together, one
    vanishing and one exploding, give borderline."""
    rc, mc = control_run["r"], control_run["move_first"]
    q, q_abs = _div(model_run["r"], rc), _div(model_run["move_first"], mc)
    if control_run["diverged"] or not (finite(rc) and rc > 0 and finite(mc) and mc > 0):
        return "borderline", math.nan, math.nan, "the control diverged or did not move: no valid reference"
    if model_run["diverged"]:
        return "exploding", q, q_abs, "the model diverged at the control's step size"
    rel = q_label(q)
    van = rel == "vanishing" or (not math.isnan(q_abs) and q_abs < Q_VANISH)
    exp = rel == "exploding" or (not math.isnan(q_abs) and q_abs > Q_EXPLODE)
    if van and exp:
        return "borderline", q, q_abs, "first-vs-last and absolute first-layer movement disagree"
    if van:
        return (
            "vanishing",
            q,
            q_abs,
            "" if rel == "vanishing" else "absolute first-layer movement < 1e-2 x control",
        )
    if exp:
        return (
            "exploding",
            q,
            q_abs,
            "" if rel == "exploding" else "absolute first-layer movement > 1e2 x control",
        )
    return rel, q, q_abs, ""


def train_depth(case: ZooCase, control: ZooCase | None) -> dict:
    if case.first_hidden == case.last_hidden and case.first_params == case.last_params:
        return {"label": "healthy", "trivial": True, "q": 1.0, "q_abs": 1.0}
    if control is None:
        raise ValueError(f"{case.name}: no control")
    m, c = _depth_run(case), _depth_run(control)
    label, q, q_abs, note = _compare(m, c)
    return {
        "label": label,
        "trivial": False,
        "q": q,
        "q_abs": q_abs,
        "note": note,
        "model": m,
        "control": c,
        "control_name": control.name,
    }


def train_time(case: ZooCase, control: ZooCase) -> dict:
    task = case.time_task
    m, c = _time_run(case, task), _time_run(control, task)
    label, q, q_abs, note = _compare(m, c)
    return {
        "label": label,
        "q": q,
        "q_abs": q_abs,
        "note": note,
        "model": m,
        "control": c,
        "control_name": control.name,
    }


# ------------------------------------------------------------------------------- combine
def final_axis(measure_label: str, train_label: str) -> str:
    return measure_label if measure_label == train_label else "ambiguous"


def overall(axis_labels: list[str]) -> str:
    v, e = "vanishing" in axis_labels, "exploding" in axis_labels
    if v and e:
        return "ambiguous"
    if v:
        return "vanishing"
    if e:
        return "exploding"
    if all(a == "healthy" for a in axis_labels):
        return "healthy"
    return "ambiguous"


def has_time(case: ZooCase) -> bool:
    return case.time_module is not None


def measure_case(name: str) -> dict:
    """Source (a) for every axis of one case (cheap: one forward/backward per axis)."""
    case = CASES[name]()
    out = {"depth": measure_depth(case)}
    if has_time(case):
        out["time"] = measure_time(CASES[name]())
    return out


def train_case(name: str) -> dict:
    """Source (b) for every axis of one case (tens of SGD steps for the case and its controls)."""
    case = CASES[name]()
    out = {"depth": train_depth(case, case.control() if case.control else None)}
    if has_time(case):
        case = CASES[name]()
        out["time"] = train_time(case, case.time_control())
    return out


def label_case(name: str) -> dict:
    case = CASES[name]()
    meas, train = measure_case(name), train_case(name)
    axes = {}
    for axis in meas:
        axes[axis] = {
            "label": final_axis(meas[axis]["label"], train[axis]["label"]),
            "measure": meas[axis],
            "train": train[axis],
        }
    label = overall([a["label"] for a in axes.values()])
    notes = [case.note] if case.note else []
    for axis, a in axes.items():
        if a["label"] == "ambiguous" or a["label"] == "borderline":
            m, t = a["measure"], a["train"]
            notes.append(
                f"{axis}: measure says {m['label']} (ratio {m['ratio']:.3g}), train says {t['label']} "
                f"(q {t['q']:.3g}, q_abs {t['q_abs']:.3g}){'; ' + t['note'] if t.get('note') else ''}"
            )
    return {
        "name": name,
        "source": case.source,
        "family": case.family,
        "expected": case.expected,
        "label": label,
        "axes": axes,
        "note": "; ".join(notes),
    }
