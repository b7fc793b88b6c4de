"""The book's example models and the look-alikes of vanishing gradients: each condition is what
its name says, measured independently of diagnose where it can be."""

import math

import numpy as np
import pytest
import torch

import vglib
from vglib.examples import AddingLSTM, lookalike, sigmoid_cnn, signature, signature_table


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
