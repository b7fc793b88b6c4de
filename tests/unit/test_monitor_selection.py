"""GradientMonitor in a practitioner's loop: step callbacks, the global gradient norm (against
``clip_grad_norm_``), optimizer parameter-group rows, and include/exclude."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import vglib
from vglib.tables import COLUMNS, LAYER_COLUMNS


class Tied(nn.Module):
    """A tiny language model whose output layer shares the embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.hid = nn.Linear(8, 8)
        self.act = nn.Tanh()
        self.out = nn.Linear(8, 12, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hid(self.emb(x))))


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 12, (32,), generator=torch.Generator().manual_seed(seed))


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Sequential(nn.Linear(8, 8), nn.Sigmoid()),
        nn.Linear(8, 1),
    )  # fmt: skip


def run(monitor: vglib.GradientMonitor, model: nn.Module, optimizer, steps: int, before_step=None) -> list:
    """Train ``steps`` steps; returns what ``before_step(model)`` gave at each."""
    seen = []
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(1)), torch.randn(16, 1)
    with monitor:
        for _ in range(steps):
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            if before_step is not None:
                seen.append(before_step(model))
            optimizer.step()
    return seen


def rows_equal(a: vglib.MonitorTable, b: vglib.MonitorTable) -> None:
    assert a.step.tolist() == b.step.tolist()
    assert a.layer.tolist() == b.layer.tolist() and a.kind.tolist() == b.kind.tolist()
    for c in COLUMNS:
        np.testing.assert_array_equal(a[c], b[c])


# -- callbacks ------------------------------------------------------------------------------------
def test_a_callback_gets_each_sampled_step_once_with_that_steps_rows_only():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls, late = [], []
    monitor = vglib.GradientMonitor(
        model, opt, every=3, callbacks=(lambda m, t: calls.append((m, m.steps_taken, t)),)
    )
    monitor.add_callback(lambda m, t: late.append(int(t.step[0])))
    run(monitor, model, opt, 7)
    assert [int(t.step[0]) for _, _, t in calls] == [0, 3, 6] == late
    whole = monitor.table(summaries=True)
    for m, taken, t in calls:
        step = int(t.step[0])
        assert m is monitor and taken == step + 1  # the step is counted when the callback runs
        assert set(t.step.tolist()) == {step}
        at = whole.step == step
        part = vglib.MonitorTable(
            whole.step[at], whole.layer[at], whole.kind[at], {c: whole[c][at] for c in COLUMNS}
        )
        rows_equal(t, part)
        assert {"parameters", "activation", "global", "group"} == set(t.kind.tolist())


def test_an_exception_in_a_callback_propagates_after_the_step_is_recorded():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def fail(monitor, table):
        raise RuntimeError("logger down")

    monitor = vglib.GradientMonitor(model, opt, callbacks=[fail])
    with pytest.raises(RuntimeError, match="logger down"), monitor:
        run(monitor, model, opt, 2)
    assert monitor.table().step.tolist()[0] == 0 and monitor.steps_taken == 1


def test_bad_callbacks_are_refused():
    model = mlp()
    with pytest.raises(TypeError, match="callbacks=\\(fn,\\)"):
        vglib.GradientMonitor(model, callbacks=print)
    with pytest.raises(TypeError, match="callable"):
        vglib.GradientMonitor(model, callbacks=(1,))
    with pytest.raises(TypeError, match="callable"):
        vglib.GradientMonitor(model).add_callback("log")


def test_a_monitor_without_an_optimizer_calls_back_at_monitor_step():
    model = mlp()
    got = []
    monitor = vglib.GradientMonitor(model, callbacks=[lambda m, t: got.append(t)], every=2)
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    with monitor:
        for _ in range(4):
            model.zero_grad()
            F.mse_loss(model(x), y).backward()
            monitor.step(lr=0.1)
    assert [t.step[0] for t in got] == [0, 2]
    assert "group" not in got[0].kind  # no optimizer, no groups
    g = got[1]
    at = g.kind == "global"
    grads = [p.grad for p in model.parameters()]
    norm = math.sqrt(sum(float(gr.double().norm()) ** 2 for gr in grads))
    weight = math.sqrt(sum(float(p.detach().double().norm()) ** 2 for p in model.parameters()))
    assert g["grad_norm"][at][0] == pytest.approx(norm, rel=1e-6)
    assert g["update_ratio"][at][0] == pytest.approx(0.1 * norm / weight, rel=1e-6)


# -- the global gradient norm ----------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 3.0])
def test_the_global_norm_is_what_clip_grad_norm_returns_with_tied_weights_counted_once(norm_type):
    torch.manual_seed(0)
    model = Tied()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = vglib.GradientMonitor(model, opt, norm_type=norm_type)
    expected = []
    x = tokens()
    with monitor:
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), x).backward()
            expected.append(
                float(nn.utils.clip_grad_norm_(model.parameters(), math.inf, norm_type=norm_type))
            )
            opt.step()
    table = monitor.table(summaries=True)
    steps, norms = table.global_grad_norm()
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
    if norm_type == 2.0:  # the layer rows hold the shared weight twice: their sum overcounts
        params = table.kind == "parameters"
        by_layers = np.sqrt(np.bincount(table.step[params], table["grad_norm"][params] ** 2))
        assert np.all(by_layers > norms * (1 + 1e-3))
    assert table.layers("global") == [vglib.tables.GLOBAL_ROW]


def test_after_clipping_the_global_norm_is_the_clipped_one_the_step_uses():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = run(
        m := vglib.GradientMonitor(model, opt),
        model,
        opt,
        2,
        before_step=lambda net: float(nn.utils.clip_grad_norm_(net.parameters(), 1e-3)),
    )
    _, norms = m.table(summaries=True).global_grad_norm()
    assert min(before) > 1e-2  # it did clip
    np.testing.assert_allclose(norms, 1e-3, rtol=1e-5)


def test_bad_norm_types_are_refused():
    with pytest.raises(ValueError, match="math.inf"):
        vglib.GradientMonitor(mlp(), norm_type=0.5)
    with pytest.raises(TypeError, match="norm_type"):
        vglib.GradientMonitor(mlp(), norm_type="inf")


def test_the_default_table_is_unchanged_and_the_summaries_come_on_request():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = vglib.GradientMonitor(model, opt, every=2)
    run(monitor, model, opt, 4)
    plain, full = monitor.table(), monitor.table(summaries=True)
    assert set(plain.kind.tolist()) == {"parameters", "activation"}
    assert tuple(plain.columns) == LAYER_COLUMNS
    assert len(full) == len(plain) + 2 * 2  # a global and a group row per sampled step
    keep = np.isin(full.kind, ["parameters", "activation"])
    assert full.layer[keep].tolist() == plain.layer.tolist()
    for kind in ("parameters", "activation"):
        assert full.layers(kind) == plain.layers(kind)
        for column in ("grad_norm", "std"):
            np.testing.assert_array_equal(full.matrix(column, kind)[2], plain.matrix(column, kind)[2])
            np.testing.assert_array_equal(
                full.mean_by_step(column, kind)[1], plain.mean_by_step(column, kind)[1]
            )
    assert full.layers("group") == ["group0"]
    with pytest.raises(ValueError, match="summaries=True"):
        plain.global_grad_norm()


# -- parameter groups -----------------------------------------------------------------------------
def test_group_rows_hold_each_groups_norms_and_the_lr_and_weight_decay_the_step_used():
    torch.manual_seed(0)
    model = Tied()
    decay = [model.emb.weight, model.hid.weight]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.1, "name": "decay"},
            {"params": [model.hid.bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    monitor = vglib.GradientMonitor(model, opt)
    by_hand = []
    x = tokens()
    with monitor:
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), x).backward()
            entry = {}
            for name, params in (("decay", decay), ("group1", [model.hid.bias])):
                entry[name] = {
                    "grad_norm": math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in params)),
                    "weight_norm": math.sqrt(sum(float(p.detach().double().norm()) ** 2 for p in params)),
                    "before": [p.detach().clone() for p in params],
                    "params": params,
                    "lr": opt.param_groups[0]["lr"],
                }
            opt.step()
            for values in entry.values():
                moved = math.sqrt(
                    sum(
                        float((p.detach() - b).double().norm()) ** 2
                        for p, b in zip(values["params"], values["before"], strict=True)
                    )
                )
                values["update_ratio"] = moved / values["weight_norm"]
            by_hand.append(entry)
            schedule.step()
    table = monitor.table(summaries=True)
    assert table.layers("group") == ["decay", "group1"]
    for step, entry in enumerate(by_hand):
        for name, values in entry.items():
            row = (table.step == step) & (table.layer == name)
            assert table.kind[row].tolist() == ["group"]
            for column in ("grad_norm", "weight_norm", "update_ratio"):
                assert table[column][row][0] == pytest.approx(values[column], rel=1e-5), (step, name, column)
            assert table["lr"][row][0] == values["lr"] == 1e-2 * 0.5**step
            assert table["weight_decay"][row][0] == (0.1 if name == "decay" else 0.0)
    assert np.isnan(table["lr"][table.kind != "group"]).all()


def test_a_group_name_that_names_a_module_falls_back_to_its_index():
    model = mlp()
    opt = torch.optim.SGD([{"params": model.parameters(), "name": "0"}], lr=0.1)
    monitor = vglib.GradientMonitor(model, opt)
    run(monitor, model, opt, 1)
    assert monitor.table(summaries=True).layers("group") == ["group0"]


# -- include / exclude ----------------------------------------------------------------------------
def names(monitor: vglib.GradientMonitor) -> tuple[list[str], list[str]]:
    return [n for n, _ in monitor.layers], [n for n, _ in monitor.activations]


def test_include_and_exclude_by_pattern_and_type_select_layers_and_activations():
    model = mlp()
    # a selector selects a container with everything inside it
    assert names(vglib.GradientMonitor(model, include="4")) == (["4.0"], ["4.1"])
    assert names(vglib.GradientMonitor(model, exclude=["4", nn.ReLU])) == (["0", "2", "5"], ["3"])
    assert names(vglib.GradientMonitor(model, include=nn.Linear, exclude="[05]")) == (["2", "4.0"], [])
    assert names(vglib.GradientMonitor(model, include=(nn.Tanh, "0"))) == (["0"], ["3"])
    everything = vglib.GradientMonitor(model, include="Sequential")  # the model itself, by its class name
    assert names(everything) == names(vglib.GradientMonitor(model))


def test_the_selection_filters_the_rows_and_the_global_norm_covers_the_watched_parameters():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = vglib.GradientMonitor(model, opt, exclude=["0", "1"])
    watched = list(model[2:].parameters())
    clipped = run(monitor, model, opt, 2, lambda _: float(nn.utils.clip_grad_norm_(watched, math.inf)))
    table = monitor.table(summaries=True)
    assert table.layers("parameters") == ["2", "4.0", "5"] and table.layers("activation") == ["3", "4.1"]
    np.testing.assert_allclose(table.global_grad_norm()[1], clipped, rtol=1e-6)


def test_a_selection_that_leaves_nothing_names_the_modules():
    with pytest.raises(ValueError, match="leave no layer.*modules are: Sequential, 0, 1, 2"):
        vglib.GradientMonitor(mlp(), include="encoder*")
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        vglib.GradientMonitor(mlp(), exclude=[3])
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        vglib.GradientMonitor(mlp(), include=int)


def test_watching_activations_only_records_no_summary_rows():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    got = []
    monitor = vglib.GradientMonitor(model, opt, include=nn.Tanh, callbacks=[lambda m, t: got.append(t)])
    run(monitor, model, opt, 2)
    assert set(monitor.table(summaries=True).kind.tolist()) == {"activation"} == set(got[1].kind.tolist())


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_gradient_gives_the_global_norm_clip_grad_norm_gives(norm_type, bad):
    def spoil(net):
        net[2].weight.grad[0, 0] = bad  # get_total_norm: clip_grad_norm_ would turn every gradient NaN
        return float(nn.utils.get_total_norm([p.grad for p in net.parameters()], norm_type=norm_type))

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = vglib.GradientMonitor(model, opt, norm_type=norm_type)
    expected = run(monitor, model, opt, 1, spoil)
    np.testing.assert_array_equal(monitor.table(summaries=True).global_grad_norm()[1], expected)
