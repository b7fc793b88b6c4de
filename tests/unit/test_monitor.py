"""GradientMonitor, diagnose and loss_stalled: numbers against plain autograd, hooks, verdicts."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import vglib
from vglib._tensors import exact_norm as _norm


def batch(width=16, n=32, seed=0):
    return vglib.probe_batch(width, 1, n, seed=seed)


def sgd_run(model, x, y, steps, every=1, with_optimizer=True, lr=0.1):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    monitor = vglib.GradientMonitor(model, optimizer if with_optimizer else None, every=every)
    with monitor:
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            if with_optimizer:
                optimizer.step()
            else:
                monitor.step(lr=lr)
                optimizer.step()
    return monitor


def test_records_only_sampled_steps_and_every_layer():
    model = vglib.build_mlp(3, 16, "tanh", "xavier", seed=0)
    table = sgd_run(model, *batch(), steps=7, every=3).table()
    assert sorted(set(table.step.tolist())) == [0, 3, 6]
    assert table.layers("parameters") == ["linear1", "linear2", "linear3", "head"]
    assert table.layers("activation") == ["act1", "act2", "act3"]
    names, steps, values = table.matrix("grad_norm")
    assert names == table.layers("parameters") and list(steps) == [0, 3, 6]
    assert values.shape == (4, 3) and np.isfinite(values).all()


def test_gradient_and_update_numbers_match_plain_autograd():
    model = vglib.build_mlp(2, 8, "tanh", "xavier", seed=1)
    x, y = batch(8)
    reference = vglib.build_mlp(2, 8, "tanh", "xavier", seed=1)
    nn.functional.mse_loss(reference(x), y).backward()
    first = reference.linear1
    expected = math.hypot(first.weight.grad.norm().item(), first.bias.grad.norm().item())
    weight = math.hypot(first.weight.detach().norm().item(), first.bias.detach().norm().item())

    auto = sgd_run(model, x, y, steps=1).table()
    by_hand = sgd_run(
        vglib.build_mlp(2, 8, "tanh", "xavier", seed=1), x, y, steps=1, with_optimizer=False
    ).table()
    for table in (auto, by_hand):
        row = (table.layer == "linear1") & (table.step == 0)
        assert table["grad_norm"][row][0] == pytest.approx(expected, rel=1e-5)
        assert table["weight_norm"][row][0] == pytest.approx(weight, rel=1e-5)
        # plain SGD moves W by lr * grad: the measured update and lr ||g|| / ||W|| agree
        assert table["update_ratio"][row][0] == pytest.approx(0.1 * expected / weight, rel=1e-4)


def test_activation_statistics_and_gradients_match_the_profile():
    model = vglib.build_mlp(4, 16, "relu", "he", seed=2)
    x, y = batch(16, n=64, seed=2)
    profile = vglib.gradient_profile(model, x, y)
    stats = vglib.forward_statistics(model, x)
    with torch.no_grad():
        h1 = torch.relu(model.linear1(x))  # before the step changes the weights
    table = sgd_run(model, x, y, steps=1).table()
    acts = table.kind == "activation"
    np.testing.assert_allclose(table["grad_norm"][acts], profile.activation_grad_norms, rtol=1e-4)
    first = acts & (table.layer == "act1")
    assert table["mean"][first][0] == pytest.approx(h1.mean().item(), rel=1e-5)
    assert table["std"][first][0] == pytest.approx(h1.std(unbiased=False).item(), rel=1e-4)
    assert np.isnan(table["saturated"][acts]).all() and np.isfinite(stats.preactivation_variance).all()


def test_dead_and_saturated_units_are_counted():
    model = vglib.build_mlp(2, 16, "relu", "he", seed=0)
    with torch.no_grad():
        model.linear2.bias.fill_(-100.0)
    table = sgd_run(model, *batch(), steps=1).table()
    assert table["dead"][(table.layer == "act2")][0] == 1.0
    saturating = vglib.build_gaussian_mlp(2, 64, "sigmoid", 40.0, seed=0)
    table = sgd_run(saturating, *batch(64, n=64), steps=1).table()
    assert table["saturated"][(table.layer == "act1")][0] > 0.3


def test_hooks_are_removed_and_a_closed_monitor_refuses_to_record():
    model = vglib.build_mlp(2, 8, "sigmoid", seed=0)
    monitor = sgd_run(model, *batch(8), steps=2)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="closed"):
        monitor.step()
    with pytest.raises(RuntimeError, match="closed"):
        monitor.attach()
    assert len(monitor.table()) > 0  # records stay readable


def test_the_monitor_changes_nothing_by_itself():
    model = vglib.build_mlp(2, 8, "tanh", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with vglib.GradientMonitor(model) as monitor:
        nn.functional.mse_loss(model(torch.randn(4, 8)), torch.zeros(4, 1)).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        monitor.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))


def test_recurrent_models_are_watched():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(2, 8, batch_first=True)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    x, y = vglib.adding_problem(16, 12, seed=0)
    table = sgd_run(Tagger(), x, y, steps=2).table()
    assert table.layers("parameters") == ["lstm", "head"]
    assert table.layers("activation") == ["lstm"]
    assert np.isfinite(table["grad_norm"]).all()


def test_tiny_gradients_do_not_underflow():
    tiny = torch.full((100,), 1e-30)
    assert _norm(tiny) == pytest.approx(1e-29, rel=1e-5)  # float32 squares would underflow to 0
    huge = torch.full((4,), 1e30)
    assert _norm(huge) == pytest.approx(2e30, rel=1e-5)


def test_bad_input_to_the_monitor():
    with pytest.raises(ValueError, match="no parameters"):
        vglib.GradientMonitor(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        vglib.GradientMonitor(nn.Linear(2, 2), every=0)
    with pytest.raises(TypeError, match="nn.Module"):
        vglib.GradientMonitor("model")
    model = nn.Linear(2, 1)
    monitor = vglib.GradientMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="follows its optimizer"):
        monitor.step()
    with pytest.raises(KeyError, match="columns are"):
        monitor.table()["gradient"]


def monitored_training(histograms=True):
    model = vglib.build_mlp(4, 16, "sigmoid", "xavier", seed=0)
    x, y = batch(16, n=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with vglib.GradientMonitor(model, optimizer, every=2, histograms=histograms) as monitor:
        for _ in range(10):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
    return monitor


def test_histograms_over_training():
    monitor = monitored_training()
    steps, edges, counts = monitor.histogram("act2")
    assert list(steps) == [0, 2, 4, 6, 8] and edges[0] == 0.0 and edges[-1] == 1.0  # sigmoid range
    assert counts.shape == (5, 40) and np.all(counts.sum(1) == 64 * 16)  # every value counted once
    grad_steps, grad_edges, grad_counts = monitor.histogram("act2", of="gradient")
    assert list(grad_steps) == [0, 2, 4, 6, 8] and grad_counts.sum(1)[0] == 64 * 16
    assert (grad_edges[0], grad_edges[-1]) == vglib.monitor.GRADIENT_LOG_RANGE
    with pytest.raises(KeyError, match="layers with them"):
        monitor.histogram("linear1")
    with pytest.raises(ValueError, match="'activation', 'gradient'"):
        monitor.histogram("act2", of="weights")
    with pytest.raises(RuntimeError, match="histograms=True"):
        monitored_training(histograms=False).histogram("act2")


def test_monitor_plots():
    monitor = monitored_training()
    table = monitor.table()
    heat = vglib.plot_gradient_heatmap(table)
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()] == table.layers("parameters")
    ratios = vglib.plot_update_ratios(table)
    lines = ratios.axes[0].lines
    (rule,) = [line for line in lines if line.get_label().startswith("rule of thumb")]
    assert rule.get_ydata()[0] == pytest.approx(1e-3)
    layers = table.layers("parameters")
    assert [line.get_label() for line in lines if line.get_label() in layers] == layers
    fig = vglib.plot_histograms_over_training(*monitor.histogram("act1"), title="act1")
    assert fig.axes[0].images
    with pytest.raises(ValueError, match="shape"):
        vglib.plot_histograms_over_training(np.arange(2), np.arange(5), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="no update ratios"):
        empty = vglib.GradientMonitor(vglib.build_mlp(1, 2))
        vglib.plot_update_ratios(empty.table())


def test_a_table_recorded_before_a_column_existed_reads_nan_in_it():
    old = vglib.MonitorTable(
        step=np.array([0, 0]),
        layer=np.array(["linear1", "act1"], dtype=object),
        kind=np.array(["parameters", "activation"], dtype=object),
        columns={c: np.ones(2) for c in vglib.tables.COLUMNS if c != "unit_std"},
    )
    assert np.isnan(old["unit_std"]).all() and len(old["unit_std"]) == 2
    with pytest.raises(KeyError, match="unit_std"):  # the message lists the columns, the new one too
        old["unit_sd"]


def test_mean_by_step_averages_one_kind_over_layers_at_each_step():
    nan = np.nan
    table = vglib.MonitorTable(
        step=np.array([0, 0, 0, 5, 5, 5, 9]),
        layer=np.array(["linear1", "act1", "act2", "linear1", "act1", "act2", "act1"], dtype=object),
        kind=np.array(["parameters", "activation", "activation"] * 2 + ["activation"], dtype=object),
        columns={"dead": np.array([nan, 0.2, 0.4, nan, 0.5, nan, nan]), "grad_norm": np.arange(7.0)},
    )
    steps, dead = table.mean_by_step("dead")
    np.testing.assert_array_equal(steps, [0, 5, 9])
    np.testing.assert_allclose(dead[:2], [0.3, 0.5])  # act2's NaN at step 5 is left out
    assert np.isnan(dead[2])  # nothing known at step 9
    steps, grads = table.mean_by_step("grad_norm", "parameters")
    np.testing.assert_array_equal(steps, [0, 5])
    np.testing.assert_array_equal(grads, [0.0, 3.0])
    # against a real monitor: the hand-written per-step mean the chapters used to write
    torch.manual_seed(0)
    model = vglib.build_mlp(4, 8, activation="relu")
    x, y = batch(width=8)
    monitor = sgd_run(model, x, y, steps=6, every=2)
    recorded = monitor.table()
    acts = recorded.kind == "activation"
    steps, std = recorded.mean_by_step("std")
    by_hand = [recorded["std"][acts & (recorded.step == s)].mean() for s in np.unique(recorded.step[acts])]
    np.testing.assert_allclose(std, by_hand, rtol=1e-12)
    with pytest.raises(ValueError, match="'parameters' or 'activation'"):
        recorded.mean_by_step("std", "act")
    with pytest.raises(KeyError, match="columns are"):
        recorded.mean_by_step("stdd")


def test_series_is_one_layers_column_in_step_order():
    table = vglib.MonitorTable(
        step=np.array([0, 0, 5, 5, 9]),
        layer=np.array(["linear1", "act1", "linear1", "act1", "linear1"], dtype=object),
        kind=np.array(["parameters", "activation", "parameters", "activation", "parameters"], dtype=object),
        columns={c: np.arange(5.0) + 10 * i for i, c in enumerate(vglib.tables.COLUMNS)},
    )
    np.testing.assert_array_equal(table.series("linear1", "grad_norm"), table["grad_norm"][[0, 2, 4]])
    np.testing.assert_array_equal(table.series("act1", "step"), [0, 5])
    with pytest.raises(KeyError, match="its layers are linear1, act1"):
        table.series("linear2", "grad_norm")
    with pytest.raises(KeyError, match="unknown column"):
        table.series("linear1", "gradnorm")
