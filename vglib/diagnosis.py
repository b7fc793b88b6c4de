"""Verdicts from measurements: ``diagnose`` says whether a model's gradients vanish or explode,
and on what evidence; ``loss_stalled`` whether training has stalled.

``diagnose`` measures with ``gradient_flow`` (one forward and one backward pass; see
``vglib.flow``) and judges the *backpropagated* gradient ``||dL/dh||``, per element, at every
layer's output and, for a sequence, at every time step. It does not judge weight gradients:
those are the backpropagated gradient times the layer's input, so a forward signal that shrinks
as the backward one grows (or the other way round) makes them look balanced while the gradient
vanishes, and their size relative to ``||W||`` misreads layers initialised at or near zero
(LayerScale, zero-initialised residual branches) and embeddings (whose norm grows with the
vocabulary). Every rule, its threshold and the reason for its value are below; each finding names
the rule, the measured value, the threshold and where.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ._validation import check_positive_int
from .flow import GradientFlow, Inputs, gradient_flow

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLLAPSE_SPREAD",
    "DEPTH_DECADES",
    "LABELS",
    "MIN_DEPTH",
    "OUTPUT_DECADES",
    "SPREAD_RESOLUTION",
    "STALL_WINDOW",
    "STATUSES",
    "TIME_DECADES",
    "Diagnosis",
    "Finding",
    "diagnose",
    "loss_stalled",
    "verdict_matrix",
]

STATUSES = ("healthy", "vanishing", "exploding", "undetermined")

DEPTH_DECADES = 3.0
"""Vanishing (exploding) over depth: along a robust straight-line fit of ``log10 ||dL/dh||`` per
element against the layer's position, the gradient at the first hidden layer is below
``10**-DEPTH_DECADES`` (above ``10**DEPTH_DECADES``) times that at the last hidden layer. Why a
thousand: the error signal that reaches the layers near the input is then a thousandth of the one
that reaches the layers near the output (or, exploding, a thousand times larger), three orders
of magnitude, far outside the factor of a few that healthy networks show. It is a statement about
the backward signal: how fast a layer *learns* also depends on its input (``dL/dW = delta h^T``),
and where the forward signal shrinks as fast as the backward one grows every layer stalls alike
(Glorot & Bengio 2010, section 4.2); the monitor's update ratios show that. A Theil-Sen fit over
every hidden layer instead of the first and last alone keeps one unusual layer (a stem, an
embedding, a zero-initialised branch) from deciding the verdict once there are five or more
hidden layers; over fewer, one layer can still decide."""

TIME_DECADES = 3.0
"""Vanishing (exploding) over time: by the same fit over the time steps, the gradient reaching
the first step of the sequence is below ``10**-TIME_DECADES`` (above ``10**TIME_DECADES``) times
the gradient reaching the last. The same thousandfold learning-speed argument applies to the
weights that must use the early steps."""

MIN_DEPTH = 2
"""Fewest hidden layers (layer outputs before the output layer, with a gradient) the fit over
depth needs. With one there is no depth to vanish over, and only its gap to the output layer is
judged; with none (a single layer) and no time axis, the verdict is *undetermined*."""

OUTPUT_DECADES = 3.0
"""Saturated output: the gradient (per element) at the output layer's output is below
``10**-OUTPUT_DECADES`` times the gradient of the loss at what it scores, the model's output.
Between the two lies only what follows the last layer (a sigmoid, a softmax, a scale): when it
passes on a thousandth of the loss gradient it is saturated, and every layer learns a thousand
times more slowly alike. A look-alike of vanishing (nothing learns) that is not a depth effect,
reported beside the verdict."""

COLLAPSE_SPREAD = 1e-4
"""Forward collapse: at some layer the median unit's standard deviation over the batch is below
this fraction of the layer output's root mean square, so every example yields nearly the same
output and the layers above cannot tell the examples apart. It looks like vanishing (nothing
learns) but is a forward-signal finding. Why 1e-4: float32 resolves relative differences of about
1e-7; below 1e-4 the differences between examples are a thousandth of what a healthy layer shows
(0.1 to 1) and within a few digits of rounding."""

SPREAD_RESOLUTION = 1e-6
"""The smallest unit spread a float32 layer output can show: below it the differences between
examples are a few units in the last place of float32 (about 1.2e-7 of the scale), so the value
measures rounding, not the network, and changes with the CPU's kernels. The printed table shows
such a spread as ``<1e-06``; ``flow.unit_spread`` keeps the measured value."""

_REMEDIES = {
    "vanishing": (
        "initialise for the activation: He for ReLU, Xavier/LeCun or orthogonal for tanh "
        "(chapter: Initialisation)",
        "replace sigmoid/tanh in hidden layers by ReLU-family activations (chapter: Activation functions)",
        "add normalisation or residual connections (chapters: Normalisation, Skip connections)",
    ),
    "exploding": (
        "reduce the initial weight scale (chapter: Initialisation)",
        "clip the gradient norm (chapter: Gradient clipping) and lower the learning rate",
        "add normalisation, or scale residual branches down (chapters: Normalisation, Skip connections)",
    ),
    "healthy": (),
    "undetermined": (),
}


_ZERO_REMEDIES = (
    "the gradient is exactly 0, not small: look for ReLU units that are 0 for every input (the "
    "monitor's dead column; a non-negative bias initialisation or a leaky ReLU avoids them) or a "
    "detach()/no_grad in the forward pass",
)
_TIME_REMEDIES = (
    "use gated cells (nn.LSTM/nn.GRU) with a forget-gate bias of 1 or more, or an orthogonal "
    "recurrent matrix (chapter: Gated recurrent units)",
    "clip the gradient norm against the exploding side (chapter: Gradient clipping)",
)


def _remedies(status: str, findings: Sequence[Finding]) -> tuple[str, ...]:
    """What to try, for the axis and kind of what was found: exact zeros are not a scale problem,
    and vanishing over time calls for the recurrent remedies, not the depth ones."""
    if status != "vanishing":
        return _REMEDIES[status]
    rules = {f.rule: f for f in findings}
    advice: tuple[str, ...] = ()
    if any(f.rule.startswith("vanishing") and f.value == 0.0 for f in findings):
        advice += _ZERO_REMEDIES
    if "vanishing over time" in rules:
        advice += _TIME_REMEDIES
    if "vanishing over depth" in rules or "vanishing below the output layer" in rules:
        advice += _REMEDIES["vanishing"][:3]
    return advice or _REMEDIES["vanishing"]


@dataclass(frozen=True)
class Finding:
    """One rule that fired: its name, the measured value, the threshold and where."""

    rule: str
    value: float
    threshold: float
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule} at {self.where}: {self.message}"


def _spread_text(spread: float) -> str:
    """A unit spread as the table prints it: two digits, or ``<1e-06`` below float32's resolution."""
    return f"<{SPREAD_RESOLUTION:.0e}" if spread < SPREAD_RESOLUTION else f"{spread:.2g}"


@dataclass(frozen=True)
class Diagnosis:
    """The verdict of ``diagnose``.

    ``status`` is one of ``STATUSES``; ``reason`` says why in one line; ``findings`` lists every
    rule that fired (a forward collapse is reported beside the gradient verdict, not as one).
    ``depth_change`` is the fitted ratio of the backpropagated gradient (per element) at the first
    hidden layer to that at the last, and ``depth_factor`` the fitted factor per layer (NaN without
    enough layers); ``time_change`` the fitted ratio at the first time step to the last (NaN
    without a time axis). ``flow`` holds every measurement (``vglib.flow.GradientFlow``), and
    ``flagged`` the layers to look at. ``print(diagnosis)`` shows a table with full layer names.
    """

    status: str
    reason: str
    findings: tuple[Finding, ...]
    depth_change: float
    depth_factor: float
    time_change: float
    flagged: tuple[str, ...]
    remedies: tuple[str, ...]
    flow: GradientFlow

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.flow.layer_names

    @property
    def layer_types(self) -> tuple[str, ...]:
        return self.flow.layer_types

    def __str__(self) -> str:
        flow = self.flow
        width = max([len("layer"), *(len(n) for n in flow.layer_names)])
        header = (
            f"{'layer':<{width}}  {'type':<14}{'|dL/dh| rms':>12}{'|dL/dW|':>11}{'|dL/db|':>11}"
            f"{'unit spread':>13}  flag"
        )
        lines = [f"status: {self.status.upper()} ({self.reason})", ""]
        lines += [f"finding: {f}" for f in self.findings]
        if self.findings:
            lines.append("")
        lines += [header, "-" * len(header)]
        for i, name in enumerate(flow.layer_names):
            flag = "<-- look here" if name in self.flagged else ""
            lines.append(
                f"{name:<{width}}  {flow.layer_types[i][:13]:<14}{flow.output_grad_rms[i]:>12.3g}"
                f"{flow.weight_grad_norms[i]:>11.3g}{flow.bias_grad_norms[i]:>11.3g}"
                f"{_spread_text(flow.unit_spread[i]):>13}  {flag}"
            )
        if flow.time is not None:
            g = flow.time.grad_norms
            lines += [
                "",
                f"time ({flow.time.steps} steps, at {flow.time.where}): "
                f"|dL/dx_t| first {g[0]:.3g}, last {g[-1]:.3g}",
            ]
        if self.remedies:
            lines += ["", "what to try:"] + [f"  - {r}" for r in self.remedies]
        return "\n".join(lines)

    def to_dataframe(self) -> pd.DataFrame:
        """The per-layer measurements the verdict judged, as a ``pandas.DataFrame`` with one row
        per layer call of ``flow`` in call order (what ``print(diagnosis)`` tabulates): ``layer``,
        ``position`` (0 for the first call), ``type``, ``output_grad_norm`` and
        ``output_grad_rms`` (``||dL/dh||`` at the layer's output, whole and per element),
        ``weight_grad_norm``, ``bias_grad_norm`` (NaN where absent), ``unit_spread`` and
        ``flagged`` (one of the layers to look at). The verdict itself (status, reason, the fitted
        changes) is in ``df.attrs``. Needs pandas (``pip install "vglib[pandas]"``)."""
        from .tables import require_pandas

        pd = require_pandas()
        flow = self.flow
        frame = pd.DataFrame(
            {
                "layer": list(flow.layer_names),
                "position": np.arange(flow.depth, dtype=np.int64),
                "type": list(flow.layer_types),
                "output_grad_norm": np.asarray(flow.output_grad_norms, dtype=np.float64),
                "output_grad_rms": np.asarray(flow.output_grad_rms, dtype=np.float64),
                "weight_grad_norm": np.asarray(flow.weight_grad_norms, dtype=np.float64),
                "bias_grad_norm": np.asarray(flow.bias_grad_norms, dtype=np.float64),
                "unit_spread": np.asarray(flow.unit_spread, dtype=np.float64),
                "flagged": np.array([name in self.flagged for name in flow.layer_names], dtype=bool),
            }
        )
        frame.attrs.update(
            status=self.status,
            reason=self.reason,
            depth_change=self.depth_change,
            depth_factor=self.depth_factor,
            time_change=self.time_change,
        )
        return frame


def _fitted_change(norms: np.ndarray) -> tuple[float, float, int]:
    """``(decades lost from last to first by the fit, slope per position, zero prefix length)`` of a
    profile ordered from the input side. The fit is Theil and Sen's (the median of the slopes
    between every pair of points: a minority of outliers cannot move it) over the nonzero finite
    values; exact zeros that start the profile (gradients that underflowed before they reached the
    input side) count as a finding of their own."""
    finite = np.isfinite(norms)
    prefix = 0
    while prefix < len(norms) and finite[prefix] and norms[prefix] == 0.0:
        prefix += 1
    keep = finite & (norms > 0)
    positions = np.nonzero(keep)[0]
    if len(positions) < 2:
        return math.nan, math.nan, prefix
    logs = np.log10(norms[positions])
    pairs_i, pairs_j = np.triu_indices(len(positions), k=1)
    slopes = (logs[pairs_j] - logs[pairs_i]) / (positions[pairs_j] - positions[pairs_i])
    slope = float(np.median(slopes))
    return slope * (len(norms) - 1), slope, prefix


def diagnose(
    model: nn.Module,
    x: Inputs,
    y: torch.Tensor,
    loss_fn: Callable[[object, torch.Tensor], torch.Tensor] | None = None,
    *,
    time_dim: int | None = None,
    time_input: int | str | None = None,
) -> Diagnosis:
    """One forward and backward pass, and a verdict on the gradients (see ``Diagnosis`` and the
    module docstring for the rules).

    ``x`` is what the model is called with: a tensor, a tuple/list (``model(*x)``) or a dict
    (``model(**x)``, e.g. ``input_ids`` and ``attention_mask``). ``loss_fn(output, y)`` defaults to
    MSE for float ``y`` and cross-entropy for class indices. ``time_dim``/``time_input`` name a time
    axis on the input (see ``gradient_flow``); ``nn.RNN``/``nn.LSTM``/``nn.GRU`` are found without.
    The model is left as it was.
    """
    flow = gradient_flow(model, x, y, loss_fn, time_dim=time_dim, time_input=time_input)
    return judge(flow)


def judge(flow: GradientFlow) -> Diagnosis:
    """The verdict on a ``GradientFlow`` (what ``diagnose`` returns)."""
    findings: list[Finding] = []
    flagged: list[str] = []
    verdicts: list[tuple[str, str]] = []
    depth, time_change = (math.nan, math.nan), math.nan

    def done(status: str, reason: str) -> Diagnosis:
        return Diagnosis(
            status=status, reason=reason, findings=tuple(findings), depth_change=depth[0],
            depth_factor=depth[1], time_change=time_change, flagged=tuple(dict.fromkeys(flagged)),
            remedies=_remedies(status, findings), flow=flow,
        )  # fmt: skip

    if not flow.inputs_finite:
        findings.append(Finding("non-finite input", math.nan, math.nan, "input", "x or y holds NaN or inf"))
        return done("undetermined", "the input holds NaN or inf: the gradients say nothing about the model")
    if not math.isfinite(flow.loss) or flow.nonfinite:
        where = ", ".join(flow.nonfinite[:3]) or "loss"
        findings.append(Finding("non-finite gradient", math.inf, math.inf, where, "inf or NaN"))
        flagged += list(flow.nonfinite)
        return done("exploding", "the loss or a gradient overflowed to inf/nan from a finite input")

    collapsed = [
        (n, v) for n, v in zip(flow.layer_names, flow.unit_spread, strict=True) if v < COLLAPSE_SPREAD
    ]
    if collapsed:  # reported beside the gradient verdict, not as one
        name, spread = collapsed[0]
        message = (
            f"its units vary over the batch by {_spread_text(spread)} of their scale: "
            "every example looks alike"
        )
        findings.append(Finding("forward collapse", float(spread), COLLAPSE_SPREAD, name, message))
        flagged.append(name)

    if flow.unreached:
        message = (
            f"no gradient at all reaches {len(flow.unreached)} layer(s) with trainable parameters: the "
            "graph is cut between them and the loss (detach(), torch.no_grad(), a cast to an integer, "
            "or an output the loss does not use); this is not vanishing"
        )
        findings.append(Finding("no gradient", math.nan, math.nan, flow.unreached[0], message))
        flagged += list(flow.unreached)

    hidden, names, output = _hidden(flow)
    measurable = int(np.sum(np.isfinite(hidden)))
    silent = output is not None and flow.output_grad_rms[output] == 0.0  # zero from the output on
    rule, prefix = None, 0
    if measurable >= MIN_DEPTH and not silent:
        decades, slope, prefix = _fitted_change(hidden)
        if math.isfinite(decades):
            depth = (10.0 ** (-decades), 10.0 ** (-slope))
        rule = _axis_rule("depth", decades, prefix, DEPTH_DECADES, "hidden layer output")
    if rule is None and measurable >= 1 and not silent:
        gap = float(np.nanmax(hidden)) / flow.output_grad_rms[output]
        rule = _head_rule(gap, flow.layer_names[output])
    if rule is not None:
        finding, verdict = rule
        findings.append(replace(finding, where=finding.where or names[0]))
        verdicts.append(verdict)
        flagged += list(names[:prefix]) or _weakest(names, hidden, low=verdict[0] == "vanishing")
    if output is not None:
        head = flow.output_grad_rms[output] / flow.loss_grad_rms
        if head < 10.0**-OUTPUT_DECADES:
            name = flow.layer_names[output]
            message = (
                f"the output layer's gradient is {head:.2g} of the loss gradient at the model's output: "
                "what follows the output layer (a sigmoid or softmax) is saturated, and every layer "
                "learns slowly alike"
            )
            findings.append(Finding("saturated output", head, 10.0**-OUTPUT_DECADES, name, message))
            flagged.append(name)
    if flow.time is not None and flow.time.steps >= 2:
        decades, _, prefix = _fitted_change(flow.time.grad_norms)
        time_change = 0.0 if prefix else 10.0 ** (-decades) if math.isfinite(decades) else math.nan
        rule = _axis_rule("time", decades, prefix, TIME_DECADES, "time step")
        if rule is not None:
            finding, verdict = rule
            findings.append(replace(finding, where=f"step 1 of {flow.time.steps} at {flow.time.where}"))
            verdicts.append(verdict)

    kinds = {kind for kind, _ in verdicts}
    if len(kinds) > 1:
        return done("undetermined", "; ".join(r for _, r in verdicts) + ": the axes disagree")
    if kinds:
        return done(kinds.pop(), verdicts[0][1])
    if measurable == 0 and flow.time is None:
        return done(
            "undetermined",
            "no hidden layer output with a gradient and no time axis: a single layer has no depth or "
            "time to vanish over (name a time axis with time_dim)",
        )
    parts = []
    if math.isfinite(depth[0]):
        parts.append(f"first/last hidden layer gradient {depth[0]:.2g} by the fit")
    elif measurable == 1:
        parts.append(
            "one hidden layer, no depth to vanish over; its gradient is within a thousandfold "
            "of the output layer's"
        )
    if math.isfinite(time_change):
        parts.append(f"first/last time step {time_change:.2g}")
    reason = "; ".join(parts) or "no vanishing or exploding rule fired"
    if findings:  # healthy gradients, and yet something to look at
        reason += "; but see " + ", ".join(dict.fromkeys(f.rule for f in findings))
    return done("healthy", reason)


def _axis_rule(
    axis: str, decades: float, prefix: int, threshold: float, unit: str
) -> tuple[Finding, tuple[str, str]] | None:
    """The finding and verdict of one axis (depth or time), if a rule fires."""
    if prefix:
        message = f"the first {prefix} {unit}(s) receive a gradient of exactly 0"
        return Finding(f"vanishing over {axis}", 0.0, 0.0, "", message), ("vanishing", message)
    if not math.isfinite(decades) or abs(decades) <= threshold:
        return None
    change = 10.0 ** (-decades)
    kind = "vanishing" if decades > 0 else "exploding"
    limit = 10.0 ** (-threshold if kind == "vanishing" else threshold)
    message = f"by the fit, the first {unit} gets {change:.2g} times the gradient of the last"
    return Finding(f"{kind} over {axis}", change, limit, "", message), (kind, message)


def _hidden(flow: GradientFlow) -> tuple[np.ndarray, tuple[str, ...], int | None]:
    """The hidden layers' ``||dL/dh||`` per element, and their names: every layer call before the
    output layer (the last call the loss depends on; calls after it, such as an auxiliary head the
    loss does not use, are not part of the path), from the first trainable layer on (a frozen stem
    is not trained, however small its gradient)."""
    reached = np.nonzero(~np.isnan(flow.output_grad_rms))[0]
    if not len(reached):
        return np.array([]), (), None
    output = int(reached[-1])
    frozen = set(flow.frozen)
    start = next((i for i, n in enumerate(flow.layer_names) if n not in frozen), output)
    return flow.output_grad_rms[start:output], flow.layer_names[start:output], output


def _head_rule(gap: float, output: str) -> tuple[Finding, tuple[str, str]] | None:
    """Vanishing (exploding) between the hidden layers and the output layer: the largest hidden
    layer gradient against the output layer's (both per element). The largest, because inside a
    residual block a layer's gradient is scaled by the branch's own gain (a LayerScale, a zero-
    initialised last layer) while the residual stream carries the gradient on: only when even the
    best-served hidden layer gets a thousandth of the output layer's gradient do all of them."""
    if not math.isfinite(gap) or gap <= 0 or abs(math.log10(gap)) <= DEPTH_DECADES:
        return None
    kind = "vanishing" if gap < 1 else "exploding"
    limit = 10.0 ** (-DEPTH_DECADES if kind == "vanishing" else DEPTH_DECADES)
    message = f"the hidden layers get at most {gap:.2g} times the output layer's gradient"
    return Finding(f"{kind} below the output layer", gap, limit, output, message), (kind, message)


def _weakest(names: Sequence[str], norms: np.ndarray, *, low: bool, count: int = 3) -> list[str]:
    finite = [(v, n) for n, v in zip(names, norms, strict=True) if math.isfinite(v)]
    return [n for _, n in sorted(finite, reverse=not low)[:count]]


LABELS = ("healthy", "vanishing", "exploding", "ambiguous")
"""The labels of a model zoo: the three verdicts a model can deserve, and *ambiguous* for a model
whose independent labels disagree (``tests/zoo``)."""


def verdict_matrix(cases: Mapping[str, Mapping[str, str]]) -> str:
    """The confusion matrix of labelled verdicts as text: one row per label (``LABELS``), one
    column per verdict (``STATUSES``), from ``{model: {"label": ..., "verdict": ...}}``."""
    counts = Counter((case["label"], case["verdict"]) for case in cases.values())
    unknown = {key for key in counts if key[0] not in LABELS or key[1] not in STATUSES}
    if unknown:
        raise ValueError(f"labels must be in {LABELS} and verdicts in {STATUSES}, got {sorted(unknown)}")
    lines = [f"{'label / verdict':<17}" + "".join(f"{v:>14}" for v in STATUSES) + f"{'total':>8}"]
    for label in LABELS:
        row = [counts[label, v] for v in STATUSES]
        lines.append(f"{label:<17}" + "".join(f"{n:>14}" for n in row) + f"{sum(row):>8}")
    return "\n".join(lines)


# -- stalled loss ----------------------------------------------------------------------------------

STALL_WINDOW = 100
"""Steps over which ``loss_stalled`` compares the loss."""


def loss_stalled(
    losses: Sequence[float] | np.ndarray, window: int = STALL_WINDOW, tolerance: float = 0.01
) -> bool:
    """Whether training has stalled: over the last ``window`` steps the mean loss has not fallen
    below the mean of the ``window`` steps before by more than ``tolerance`` (relative) *and* by
    more than two standard errors of that difference. The second test keeps minibatch noise,
    which moves window means by a few percent, from passing for progress. Needs ``2 * window``
    losses; a history that is not finite (diverging) is not stalled."""
    check_positive_int("window", window)
    values = np.asarray(losses, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2 * window:
        raise ValueError(f"need a 1-D history of at least {2 * window} losses, got shape {values.shape}")
    before, after = values[-2 * window : -window], values[-window:]
    if not (np.isfinite(before).all() and np.isfinite(after).all()):
        return False
    decrease = before.mean() - after.mean()
    noise = 2.0 * math.sqrt((before.var(ddof=1) + after.var(ddof=1)) / window)
    return bool(decrease < max(tolerance * abs(before.mean()), noise))
