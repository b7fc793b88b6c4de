"""The book's example models and the look-alikes of vanishing gradients: each condition is what
its name says, measured independently of diagnose where it can be."""

import math

import numpy as np
import pytest
import torch

import vglib
from vglib.examples import (
    LOOKALIKES,
    AddingLSTM,
    lookalike,
    lookalike_training,
    sigmoid_cnn,
    signature,
    signature_table,
)


def test_adding_lstm_and_sigmoid_cnn_take_their_inputs():
    x, _ = vglib.adding_problem(4, 10, seed=0)
    assert AddingLSTM(8)(x).shape == (4, 1)
    assert sigmoid_cnn()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def _acts(model, x):
    """Every activation module's output, by plain forward hooks."""
    outs = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: outs.setdefault(n, o.detach()))
               for n, m in model.named_modules() if n.rsplit(".", 1)[-1].startswith("act")]  # fmt: skip
    model(x)
    for h in handles:
        h.remove()
    return outs


def test_each_lookalike_is_the_condition_it_names():
    x, _ = vglib.teacher_student(256, seed=1)
    dead, lr = lookalike("dead ReLUs")
    fired = [float((o > 0).any(0).float().mean()) for o in _acts(dead, x).values()]
    assert fired[0] > 0.5 and fired[-1] == 0.0 and lr == 0.005  # fewer units fire until none does
    collapse, _ = lookalike("forward collapse")
    first = _acts(collapse, x)["act1"]
    assert float(first.std(0).median() / first.pow(2).mean().sqrt()) < 1e-4
    saturated, _ = lookalike("saturated output")
    out = saturated(x).detach()
    assert float((out * (1 - out)).max()) < 1e-3  # the sigmoid's derivative at the output
    detached, _ = lookalike("detached graph")
    detached(x).sum().backward()
    assert detached.linear10.weight.grad is None and detached.linear11.weight.grad is not None
    assert lookalike("too small a learning rate")[1] < 1e-4 * lookalike("vanishing gradients")[1]
    with pytest.raises(ValueError, match="valid choices"):
        lookalike("exploding")
    exploding, _ = lookalike("exploding gradients")
    profile = vglib.gradient_profile(exploding, x, torch.zeros(len(x), 1))
    # ReLU with weights N(0, 8/n): the backward signal grows by sqrt(8/2) = 2 per layer
    assert profile.fitted_factor() == pytest.approx(2.0, rel=0.1)
    _, lr = lookalike("too much weight decay")
    assert lookalike_training("too much weight decay") == {"lr": lr, "weight_decay": 1.0}
    assert all(lookalike_training(name)["weight_decay"] == 0 for name in LOOKALIKES[:-2])
    assert all(lookalike_training(name)["lr"] == lookalike(name)[1] for name in LOOKALIKES)


def test_train_weight_decay_is_the_optimisers_l2_penalty():
    class Muted(torch.nn.Module):  # an output multiplied by 0: the loss gives no gradient at all
        def forward(self, h):
            return 0.0 * h

    x, y = vglib.teacher_student(128, seed=0)
    model = torch.nn.Sequential(vglib.build_mlp(2, 8, "tanh", "xavier", seed=0, in_features=16), Muted())
    before = [p.detach().clone() for p in model.parameters()]
    vglib.train(model, x, y, steps=5, lr=0.1, optimizer="sgd", weight_decay=0.5)
    # SGD on the loss plus (0.5 / 2) ||w||^2 alone: every parameter shrinks by 1 - 0.1 * 0.5 per step
    for p, p0 in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), p0 * 0.95**5)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        vglib.train(model, x, y, steps=1, lr=0.1, weight_decay=-1.0)


def test_signature_reads_the_verdict_and_the_monitor():
    x_train, y_train = vglib.teacher_student(256, seed=0)
    model, lr = lookalike("detached graph")
    report = vglib.diagnose(model, x_train, y_train)
    run = vglib.train(model, x_train, y_train, steps=20, lr=lr, optimizer="sgd", momentum=0.9,
                      eval_every=10, monitor_every=5)  # fmt: skip
    row = signature(report, run)
    assert row["verdict"] == "healthy" and "no gradient" in row["findings"]
    assert row["update first"] == 0.0 and row["update last"] > 0  # blocks 1-10 never move
    assert math.isnan(row["dead max"]) and row["spread min"] > 0
    assert "detached graph" in signature_table({"detached graph": row})
    after = signature(report, run, vglib.diagnose(model, x_train, y_train))
    assert after["verdict after"] == "healthy" and "verdict after" not in row
    assert "healthy -> healthy" in signature_table({"detached graph": after, "other": row})
    with pytest.raises(ValueError, match="monitor_every"):
        signature(report, vglib.train(model, x_train, y_train, steps=2, lr=lr))


def test_time_gradient_figure_draws_each_step():
    flow = vglib.TimeFlow("lstm", 1, np.array([0.0, 1e-10, 1e-3, 1.0]))
    fig = vglib.plot_time_gradients({"LSTM": flow})
    lines = fig.axes[0].lines
    index = next(i for i, line in enumerate(lines) if line.get_label() == "LSTM")
    line, zeros = lines[index], lines[index + 1]
    np.testing.assert_array_equal(line.get_data()[0], [1, 2, 3, 4])
    assert len(zeros.get_data()[0]) == 1 and "exactly 0" in fig.axes[0].texts[0].get_text()


def test_resnet_bn_is_torchvisions_basic_block_layout():
    model = vglib.examples.ResNetBN((8, 16))
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)
    first, second = model.blocks[0], model.blocks[2]
    assert first.downsample is None and second.downsample is not None  # 8 -> 16 channels, stride 2
    assert second.conv1.stride == (2, 2) and isinstance(first.relu, torch.nn.ReLU)
