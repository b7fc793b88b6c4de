"""The book's example models, written as a reader would write them, and the look-alikes of
vanishing gradients: conditions that stall training as vanishing gradients do, but are not them.

The look-alikes are variants of the detection chapter's 20-layer, width-64 students on the
teacher-student task (``vglib.teacher_student``, 16 inputs); ``lookalike(name)`` builds one with
the learning rate of its demonstration (SGD with momentum 0.9), and ``signature(report, run)``
condenses what ``diagnose`` and the ``GradientMonitor`` show for it into one row.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import check_choice
from .diagnosis import Diagnosis
from .models import build_gaussian_mlp, build_mlp
from .train import TrainingHistory

__all__ = [
    "LOOKALIKES", "AddingLSTM", "BasicBlock", "ResNetBN", "ScaledSigmoid", "lookalike", "lookalike_training",
    "sigmoid_cnn", "signature", "signature_table",
]  # fmt: skip


class AddingLSTM(nn.Module):
    """An ``nn.LSTM`` with a linear head on its last output: a model for the adding problem
    (``vglib.adding_problem``), as a reader would write it."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(sequences)[0][:, -1])


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convolutions with batch norm, one ``self.relu`` module
    called twice, and a 1x1 convolution on the shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetBN(nn.Module):
    """A small ResNet with batch norm for 3-channel images: a 3x3 stem, then per entry of
    ``widths`` a stage of two ``BasicBlock`` (the first of each later stage halves the resolution),
    global average pooling and a linear head."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks, c_in = [], widths[0]
        for i, c_out in enumerate(widths):
            blocks += [BasicBlock(c_in, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def sigmoid_cnn(channels: int = 8, classes: int = 10, size: int = 8) -> nn.Sequential:
    """Three 3x3 convolutions with sigmoids and a linear head, PyTorch's default initialisation,
    for ``size`` x ``size`` one-channel images (built from the global RNG, as ``nn`` layers are)."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.Sigmoid(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(channels * size * size, classes),
    )  # fmt: skip


LOOKALIKES = (
    "vanishing gradients",
    "too small a learning rate",
    "dead ReLUs",
    "forward collapse",
    "detached graph",
    "saturated output",
    "too much weight decay",
    "exploding gradients",
)
"""The conditions ``lookalike`` builds: the real thing first, then six that stall or wreck training
too, the last its opposite."""


def lookalike(name: str, seed: int = 0) -> tuple[nn.Module, float]:
    """A 20 x 64 student (16 inputs, 1 output) in condition ``name`` (one of ``LOOKALIKES``), and
    the SGD learning rate of its demonstration:

    - *vanishing gradients*: sigmoid, PyTorch's default initialisation, lr 0.02;
    - *too small a learning rate*: a healthy tanh/Xavier student at lr 2e-6 (1e4 times smaller
      than the 0.02 it trains with);
    - *dead ReLUs*: ReLU/He with every hidden bias at -0.3, so fewer units fire at each layer until
      a whole layer is dead for every input, lr 0.005;
    - *forward collapse*: tanh/Xavier whose first layer's weights are scaled by 1e-6 and biases
      drawn from U(-1, 1): that layer gives every input (nearly) the same output, lr 0.02;
    - *detached graph*: tanh/Xavier with ``detach()`` after the tenth block (a forward hook), so no
      gradient reaches blocks 1-10, lr 0.02;
    - *saturated output*: tanh/Xavier with a squashing output ``8 sigmoid(z) - 4`` (``ScaledSigmoid``:
      its range holds the targets) and the head's bias at 10, so the output sits on the sigmoid's
      flat tail (derivative ``8 sigmoid'(10) = 3.6e-4``), lr 0.02;
    - *too much weight decay*: a healthy tanh/Xavier student at lr 0.02 trained with weight decay
      1 (``lookalike_training`` gives it), which pulls every weight towards 0 faster than the
      data pull it anywhere, until the gradients vanish *during* training;
    - *exploding gradients*: ReLU with weights ``N(0, 8/fan_in)``, four times He's variance, so
      the backward (and forward) signal grows by about 2 per layer, lr 0.02.
    """
    check_choice("look-alike", name, LOOKALIKES)

    def student(activation: str, init: str) -> nn.Sequential:
        return build_mlp(20, 64, activation, init, seed=seed, in_features=16)

    with torch.no_grad():
        if name == "vanishing gradients":
            return student("sigmoid", "default"), 0.02
        if name == "too small a learning rate":
            return student("tanh", "xavier"), 2e-6
        if name == "dead ReLUs":
            model = student("relu", "he")
            for i in range(1, 21):
                model.get_submodule(f"linear{i}").bias.fill_(-0.3)
            return model, 0.005
        if name == "forward collapse":
            model = student("tanh", "xavier")
            model.linear1.weight.mul_(1e-6)
            model.linear1.bias.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(seed))
            return model, 0.02
        if name == "detached graph":
            model = student("tanh", "xavier")
            model.act10.register_forward_hook(_detach)
            return model, 0.02
        if name == "too much weight decay":
            return student("tanh", "xavier"), 0.02
        if name == "exploding gradients":
            return build_gaussian_mlp(20, 64, "relu", 8.0, seed=seed, in_features=16), 0.02
        model = student("tanh", "xavier")
        model.head.bias.fill_(10.0)
        return nn.Sequential(model, ScaledSigmoid()), 0.02


def lookalike_training(name: str) -> dict[str, float]:
    """The ``vglib.train`` settings of look-alike ``name``'s demonstration beside SGD with momentum
    0.9: its learning rate (as ``lookalike`` returns it) and its weight decay (0 but for *too much
    weight decay*)."""
    check_choice("look-alike", name, LOOKALIKES)
    return {"lr": lookalike(name)[1], "weight_decay": 1.0 if name == "too much weight decay" else 0.0}


class ScaledSigmoid(nn.Module):
    """``8 sigmoid(z) - 4``: an output squashed into (-4, 4), a range that holds the teacher-student
    targets, so a network with this head can fit them once it leaves the sigmoid's tails."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 8.0 * torch.sigmoid(z) - 4.0


def _detach(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.detach()


def signature(report: Diagnosis, run: TrainingHistory, after: Diagnosis | None = None) -> dict[str, Any]:
    """One row of what the instruments show for a model: ``diagnose``'s verdict and findings
    before training (and, with ``after``, the verdict of a ``diagnose`` of the trained model), the
    loss it measured (``report`` made on the held-out set: the loss before training), the held-out
    loss at the run's first and last evaluation, and from the run's monitor (``monitor_every`` must
    have been set) the median update ratio of the first and the last hidden layer (``||dW|| / ||W||``
    per step), the largest fraction of dead units in any activation module, and the smallest spread
    of an activation's units over the batch relative to its overall spread (``unit_std / std``), all
    over the run."""
    if run.monitor is None:
        raise ValueError("signature needs a run trained with monitor_every set (it reads the monitor)")
    table = run.monitor.table()
    blocks = {}  # linear1 ... linear20, by block number, whatever the order of the rows
    for name in table.layers("parameters"):
        if match := re.search(r"linear(\d+)$", name):
            blocks[name] = int(match.group(1))
    parameters = sorted(blocks, key=blocks.__getitem__)
    acts = table.kind == "activation"

    def median_update(layer: str) -> float:
        return float(np.median(table["update_ratio"][(table.kind == "parameters") & (table.layer == layer)]))

    with np.errstate(invalid="ignore", divide="ignore"):
        spread = table["unit_std"][acts] / table["std"][acts]
    dead = table["dead"][acts]
    row = {
        "verdict": report.status,
        "findings": ", ".join(dict.fromkeys(f.rule for f in report.findings)) or "-",
        "loss start": float(report.flow.loss),
        "loss first": float(run.eval_loss[0]),
        "loss last": float(run.eval_loss[-1]),
        "update first": median_update(parameters[0]),
        "update last": median_update(parameters[-1]),
        "dead max": float(np.nanmax(dead)) if np.isfinite(dead).any() else math.nan,
        "spread min": float(np.nanmin(spread)) if np.isfinite(spread).any() else math.nan,
    }
    if after is not None:
        row["verdict after"] = after.status
    return row


def signature_table(rows: dict[str, dict[str, Any]]) -> str:
    """``signature`` rows as a plain-text table, one line per condition, at the few digits the
    comparison needs (the update ratios and spreads span tens of decades); "-" where a column does
    not apply (dead units, for activations other than the ReLU family). Rows with a verdict after
    training show it beside the one before, ``before -> after``."""

    def number(value: float, spec: str) -> str:
        return "-" if math.isnan(value) else format(value, spec)

    verdicts = {
        name: r["verdict"] + (f" -> {r['verdict after']}" if "verdict after" in r else "")
        for name, r in rows.items()
    }
    verdict_width = max(11, *(len(v) + 2 for v in verdicts.values()))
    header = (
        f"{'condition':<27}{'diagnose':<{verdict_width}}{'findings':<40}{'loss: start, 1st eval, end':>27}"
        f"{'update ratio 1st/last':>23}{'dead max':>10}{'spread min':>12}"
    )
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        loss = f"{r['loss start']:.2g} -> {r['loss first']:.2g} -> {r['loss last']:.2g}"
        updates = f"{r['update first']:.0e} / {r['update last']:.0e}"
        lines.append(
            f"{name:<27}{verdicts[name]:<{verdict_width}}{r['findings']:<40}{loss:>27}{updates:>23}"
            f"{number(r['dead max'], '.2f'):>10}{number(r['spread min'], '.0e'):>12}"
        )
    return "\n".join(lines)
