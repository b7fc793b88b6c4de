"""Which modules GradientMonitor watches, and what it measures on them: every activation PyTorch
ships, subclasses, registered classes, dead/saturated tests only where they are exact, the
collapse column unit_std and histograms, all against plain torch."""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import vglib
import vglib.monitor

# name -> (module, expected kind)
SHIPPED = {
    "sigmoid": (nn.Sigmoid(), "sigmoid"),
    "tanh": (nn.Tanh(), "tanh"),
    "relu": (nn.ReLU(), "relu"),
    "relu6": (nn.ReLU6(), "relu"),
    "threshold": (nn.Threshold(0.1, 0.0), "relu"),
    "hardshrink": (nn.Hardshrink(), "shrink"),
    "softshrink": (nn.Softshrink(), "shrink"),
    "leaky_relu": (nn.LeakyReLU(), "other"),
    "elu": (nn.ELU(), "other"),
    "selu": (nn.SELU(), "other"),
    "celu": (nn.CELU(), "other"),
    "gelu": (nn.GELU(), "other"),
    "prelu": (nn.PReLU(), "other"),
    "silu": (nn.SiLU(), "other"),
    "mish": (nn.Mish(), "other"),
    "hardswish": (nn.Hardswish(), "other"),
    "hardsigmoid": (nn.Hardsigmoid(), "other"),
    "softplus": (nn.Softplus(), "other"),
    "softsign": (nn.Softsign(), "other"),
    "hardtanh": (nn.Hardtanh(), "other"),
    "glu": (nn.GLU(), "other"),
    "logsigmoid": (nn.LogSigmoid(), "other"),
    "tanhshrink": (nn.Tanhshrink(), "other"),
    "rrelu": (nn.RReLU(), "other"),
}


def every_activation_model(width=8):
    torch.manual_seed(0)
    layers = []
    for name, (module, _) in SHIPPED.items():
        layers += [(f"{name}_in", nn.Linear(width, 2 * width if name == "glu" else width)), (name, module)]
    layers.append(("head", nn.Linear(width, 1)))
    return nn.Sequential(OrderedDict(layers))


def outputs_by_hand(model, x, y, names):
    model = copy.deepcopy(model)
    kept = {}

    def keeper(name):
        def keep(_, __, output):
            output.retain_grad()
            kept[name] = output

        return keep

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(keeper(name)) for name in names]
    nn.functional.mse_loss(model(x), y).backward()
    for handle in handles:
        handle.remove()
    return {name: (o.detach().double(), o.grad.double()) for name, o in kept.items()}


def monitored_step(model, x, y, **options):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with vglib.GradientMonitor(model, optimizer, **options) as monitor:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return monitor


def test_every_activation_module_pytorch_ships_is_watched_and_measured():
    model = every_activation_model().eval()  # RReLU's slope fixed, so the hand computation repeats it
    x, y = torch.randn(33, 8) * 2, torch.randn(33, 1)
    hand = outputs_by_hand(model, x, y, SHIPPED)
    table = monitored_step(model, x, y).table()
    assert table.layers("activation") == list(SHIPPED)
    for name, (_, kind) in SHIPPED.items():
        row = (table.kind == "activation") & (table.layer == name)
        h, g = hand[name]
        units = h.numpy()
        assert table["mean"][row][0] == pytest.approx(units.mean(), rel=1e-5, abs=1e-7), name
        assert table["std"][row][0] == pytest.approx(units.std(), rel=1e-5), name
        unit_std = np.sort(units.std(axis=0))[(units.shape[1] - 1) // 2]
        assert table["unit_std"][row][0] == pytest.approx(unit_std, rel=1e-4), name
        assert table["grad_norm"][row][0] == pytest.approx(float(g.norm()), rel=1e-5), name
        dead, saturated = table["dead"][row][0], table["saturated"][row][0]
        if kind in ("relu", "shrink"):
            assert dead == pytest.approx(np.mean(np.all(units == 0, axis=0))), name
        else:
            assert np.isnan(dead), name
        if kind == "sigmoid":
            assert saturated == pytest.approx(np.mean(units * (1 - units) < 0.025)), name
        elif kind == "tanh":
            assert saturated == pytest.approx(np.mean(1 - units**2 < 0.1)), name
        else:
            assert np.isnan(saturated), name
    # the dead test does find dead units where they are (x * 2 and 8 units: some always off)
    assert np.nansum(table["dead"]) > 0


@pytest.mark.parametrize(
    ("module", "dead_test"),
    [
        (nn.Threshold(-0.5, 0.0), False),  # passes negative values through: 0 is not "off"
        (nn.Threshold(0.1, 20.0), False),  # off means 20, not 0
        (nn.LeakyReLU(0.0), True),  # slope 0: a ReLU
        (nn.Hardtanh(0.0, 1.0), True),  # clamp(x, 0, 1): 0 exactly where the derivative is 0
        (nn.Hardswish(), False),  # 0 also at z = 0, where the derivative is 1/2
    ],
)
def test_the_dead_test_applies_exactly_where_zero_means_no_gradient(module, dead_test):
    model = nn.Sequential(nn.Linear(4, 6), module, nn.Linear(6, 1))
    table = monitored_step(model, torch.randn(10, 4), torch.randn(10, 1)).table()
    assert np.isnan(table["dead"][table.kind == "activation"][0]) != dead_test


class MyReLU(nn.ReLU):
    pass


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class SquashedTanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


def test_subclasses_are_watched_and_other_classes_can_be_added(monkeypatch):
    monkeypatch.setattr(vglib.monitor, "_REGISTRY", dict(vglib.monitor._REGISTRY))  # undone after the test
    model = nn.Sequential(nn.Linear(4, 6), MyReLU(), nn.Linear(6, 6), Swish(), nn.Linear(6, 6))
    model.add_module("squash", SquashedTanh())
    model.add_module("gelu", nn.GELU())
    model.add_module("head", nn.Linear(6, 1))
    x, y = torch.randn(12, 4), torch.randn(12, 1)
    table = monitored_step(model, x, y).table()
    assert table.layers("activation") == ["1", "gelu"]  # MyReLU is a ReLU; Swish, SquashedTanh unknown
    assert not np.isnan(table["dead"][(table.layer == "1") & (table.kind == "activation")][0])

    vglib.monitor.register_activation(SquashedTanh, "tanh")
    table = monitored_step(model, x, y, activations={Swish: "other", nn.GELU: None}).table()
    assert table.layers("activation") == ["1", "3", "squash"]
    hand = outputs_by_hand(model, x, y, ["squash"])["squash"][0].numpy()
    squash = (table.layer == "squash") & (table.kind == "activation")
    assert table["saturated"][squash][0] == pytest.approx(np.mean(1 - hand**2 < 0.1))
    vglib.monitor.register_activation(SquashedTanh, None)
    assert "squash" not in monitored_step(model, x, y).table().layers("activation")


def test_bad_activation_registrations_name_what_is_valid():
    with pytest.raises(ValueError, match="valid choices are 'sigmoid', 'tanh', 'relu', 'shrink', 'other'"):
        vglib.monitor.register_activation(Swish, "swish")
    with pytest.raises(TypeError, match="a class, not an instance"):
        vglib.monitor.register_activation(Swish(), "other")
    with pytest.raises(TypeError, match=r"mapping \{activation class: kind\}"):
        vglib.GradientMonitor(nn.Linear(2, 1), activations=[Swish])
    with pytest.raises(ValueError, match="Did you mean 'relu'"):
        vglib.GradientMonitor(nn.Linear(2, 1), activations={Swish: "relus"})


def test_unit_std_tells_a_collapsed_layer_from_a_healthy_one():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7), nn.Tanh(), nn.Linear(7, 1))
    with torch.no_grad():
        model[2].weight.zero_()  # every example gets the same output: the bias, squashed
        model[2].bias.copy_(torch.linspace(-2.0, 2.0, 7))
    x, y = torch.randn(21, 5), torch.randn(21, 1)
    hand = outputs_by_hand(model, x, y, ["1", "3"])
    table = monitored_step(model, x, y).table()
    acts = table.kind == "activation"
    healthy, collapsed = acts & (table.layer == "1"), acts & (table.layer == "3")
    units = hand["1"][0].numpy()
    assert table["unit_std"][healthy][0] == pytest.approx(np.median(units.std(axis=0)), rel=1e-5)  # 7: odd
    assert table["unit_std"][collapsed][0] == 0.0  # exactly: no unit changes from example to example
    assert table["std"][collapsed][0] == pytest.approx(hand["3"][0].numpy().std(), rel=1e-5)
    assert table["std"][collapsed][0] > 0.5  # the units differ from each other, not between examples


def test_histograms_match_torch_and_come_to_the_host_through_to_numpy(monkeypatch):
    moved = []

    def spy(tensor):
        moved.append(tensor.device)
        return vglib._tensors.to_numpy(tensor)

    monkeypatch.setattr(vglib.monitor, "to_numpy", spy)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 9), nn.ReLU6(), nn.Linear(9, 9), nn.Hardsigmoid(), nn.Linear(9, 1))
    x, y = torch.randn(30, 4) * 3, torch.randn(30, 1)
    hand = outputs_by_hand(model, x, y, ["1", "3"])
    monitor = monitored_step(model, x, y, histograms=True)
    assert moved  # every histogram reached NumPy through _tensors.to_numpy (a GPU tensor would too)
    for name, span in (("1", (0.0, 6.0)), ("3", (0.0, 1.0))):
        _, edges, counts = monitor.histogram(name)
        assert (edges[0], edges[-1]) == span
        expected = torch.histc(hand[name][0].float(), bins=40, min=span[0], max=span[1])
        np.testing.assert_array_equal(counts[0], expected.numpy())
        assert counts.sum() == 30 * 9  # the range holds every value
