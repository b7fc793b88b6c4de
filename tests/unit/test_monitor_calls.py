"""GradientMonitor's activation rows against plain autograd: one row per call of a module,
evaluation passes left out, micro-batches pooled, rows in the order the model uses its layers."""

import copy

import numpy as np
import pytest
import torch
import torch.utils.checkpoint
from torch import nn

import vglib


def captured_calls(model, module, x, y, loss_fn=nn.functional.mse_loss):
    """Every output of ``module`` in one forward/backward pass of a copy of ``model``, with its
    gradient: what a user would compute by hand."""
    model = copy.deepcopy(model)
    module = dict(model.named_modules())[module]
    outputs = []

    def keep(_, __, output):
        output.retain_grad()
        outputs.append(output)

    handle = module.register_forward_hook(keep)
    loss_fn(model(x), y).backward()
    handle.remove()
    return [(o.detach(), o.grad) for o in outputs]


def hand_statistics(h, g=None):
    """mean, std, dead, unit_std (lower median) and ||g|| of one call, in float64 NumPy."""
    values = h.double().numpy().reshape(h.shape[0], -1)
    unit_std = np.sort(values.std(axis=0))[(values.shape[1] - 1) // 2]
    stats = {
        "mean": values.mean(),
        "std": values.std(),
        "dead": np.mean(np.all(values == 0, axis=0)),
        "unit_std": unit_std,
    }
    if g is not None:
        stats["grad_norm"] = float(np.linalg.norm(g.double().numpy()))
    return stats


class SharedAct(nn.Module):
    """One ReLU module for every layer, as in many hand-written MLPs."""

    def __init__(self, width=12):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(6, width), nn.Linear(width, width), nn.Linear(width, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.l3(self.act(self.l2(self.act(self.l1(x)) * 10.0)))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: ``self.relu`` (in place) twice per call."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv1, self.conv2 = (nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))
        self.bn1, self.bn2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def one_step(model, x, y, *, histograms=False, loss_fn=nn.functional.mse_loss):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with vglib.GradientMonitor(model, optimizer, histograms=histograms) as monitor:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    return monitor


def assert_rows_are_the_calls(monitor, names, calls, histograms):
    """Each call's row (and histogram) holds that call's own statistics, computed by hand."""
    table = monitor.table()
    assert table.layers("activation") == names
    for name, (h, g) in zip(names, calls, strict=True):
        row = (table.kind == "activation") & (table.layer == name)
        for column, expected in hand_statistics(h, g).items():
            assert table[column][row][0] == pytest.approx(expected, rel=1e-5, abs=1e-7), (name, column)
        if histograms:
            steps, edges, counts = monitor.histogram(name)
            assert list(steps) == [0]
            expected = torch.histc(h, bins=len(edges) - 1, min=edges[0], max=edges[-1])
            np.testing.assert_array_equal(counts[0], expected.numpy())


@pytest.mark.parametrize("histograms", [False, True])
def test_a_module_called_several_times_gets_one_row_per_call(histograms):
    torch.manual_seed(0)
    model = SharedAct()
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    calls = captured_calls(model, "act", x, y)
    monitor = one_step(model, x, y, histograms=histograms)
    assert_rows_are_the_calls(monitor, ["act", "act#2"], calls, histograms)


def test_a_resnet_block_relu_called_twice_has_two_rows_with_their_own_numbers():
    torch.manual_seed(1)
    model = BasicBlock()
    x, y = torch.randn(8, 4, 6, 6), torch.randn(8, 4, 6, 6)
    calls = captured_calls(model, "relu", x, y)
    assert_rows_are_the_calls(one_step(model, x, y), ["relu", "relu#2"], calls, histograms=False)


def train_with_evaluation(model, x, y, x_eval, *, every, histograms, steps=6):
    """Training steps, each followed by held-out passes with gradients off (as vglib.train does)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    means = []
    with vglib.GradientMonitor(model, optimizer, every=every, histograms=histograms) as monitor:
        for _ in range(steps):
            with torch.no_grad():
                means.append(torch.sigmoid(model.linear1(x)).mean().item())  # what the step will see
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            with torch.no_grad():
                model(x_eval)
            with torch.inference_mode():
                model(x_eval)
    return monitor, means


def test_held_out_passes_with_gradients_off_are_not_recorded():
    model = vglib.build_mlp(3, 8, "sigmoid", "xavier", seed=0)
    x, y = vglib.probe_batch(8, 1, 16, seed=0)
    x_eval = 5.0 + 3.0 * vglib.probe_batch(8, 1, 40, seed=1)[0]  # far from the training batch
    monitor, means = train_with_evaluation(model, x, y, x_eval, every=2, histograms=True)
    table = monitor.table()
    acts = table.kind == "activation"
    assert list(table.step[acts & (table.layer == "act1")]) == [0, 2, 4]  # no duplicate step labels
    assert len(table) == 3 * (4 + 3)  # 4 parameter rows and 3 activation rows per sampled step
    np.testing.assert_allclose(table["mean"][acts & (table.layer == "act1")], means[0::2], rtol=1e-5)
    for of in ("activation", "gradient"):
        steps, _, counts = monitor.histogram("act1", of=of)
        assert list(steps) == [0, 2, 4]
        assert np.all(counts.sum(axis=1) == 16 * 8)  # the training batch's values, each once


def test_gradient_accumulation_pools_the_micro_batches_of_a_step():
    torch.manual_seed(2)
    model = SharedAct()
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    calls = captured_calls(model, "act", x, y)  # one batch of 64: what pooling must reproduce
    reference = copy.deepcopy(model)
    nn.functional.mse_loss(reference(x), y).backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with vglib.GradientMonitor(model, optimizer, histograms=True) as monitor:
        optimizer.zero_grad()
        for part in range(4):  # four micro-batches of 16, each loss / 4: the same gradient
            rows = slice(16 * part, 16 * (part + 1))
            (nn.functional.mse_loss(model(x[rows]), y[rows]) / 4).backward()
        optimizer.step()
    assert_rows_are_the_calls(monitor, ["act", "act#2"], calls, histograms=True)
    table = monitor.table()
    layer = (table.kind == "parameters") & (table.layer == "l1")
    expected = torch.cat([p.grad.flatten() for p in reference.l1.parameters()]).norm().item()
    assert table["grad_norm"][layer][0] == pytest.approx(expected, rel=1e-5)


def test_micro_batches_of_different_lengths_pool_mean_and_std():
    torch.manual_seed(3)
    lstm = nn.LSTM(3, 5, batch_first=True)
    head = nn.Linear(5, 1)
    model = nn.ModuleDict({"lstm": lstm, "head": head})
    sequences = [torch.randn(4, 7, 3), torch.randn(4, 11, 3)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    outputs = []
    with vglib.GradientMonitor(model, optimizer) as monitor:
        for seq in sequences:
            out = lstm(seq)[0]
            outputs.append(out.detach().flatten())
            head(out[:, -1]).sum().backward()
        optimizer.step()
    table = monitor.table()
    row = (table.kind == "activation") & (table.layer == "lstm")
    everything = torch.cat(outputs).double()
    assert table["mean"][row][0] == pytest.approx(everything.mean().item(), rel=1e-6)
    assert table["std"][row][0] == pytest.approx(everything.std(unbiased=False).item(), rel=1e-6)
    assert np.isnan(table["unit_std"][row][0])  # units differ between the passes: not defined


class UsedOutOfOrder(nn.Module):
    """Registration order is not use order: the head first, a root parameter used first, a root
    temperature used last, a layer never called."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.unused = nn.Linear(8, 8)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.shift = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.head(self.body(x + self.shift))


def test_rows_are_in_the_order_the_model_first_uses_its_layers():
    torch.manual_seed(4)
    model = UsedOutOfOrder()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    monitor = one_step(model, x, y, loss_fn=nn.functional.cross_entropy)
    table = monitor.table()
    root = "UsedOutOfOrder"  # the root module's own parameter (shift) is used before body.0
    assert table.layers("parameters") == [root, "body.0", "body.2", "head", "unused"]
    assert table.layers("activation") == ["body.1", "body.3"]
    assert list(table.layer) == [root, "body.0", "body.1", "body.2", "body.3", "head", "unused"]
    names, _, values = table.matrix("grad_norm")
    assert names == table.layers("parameters") and values[-1, 0] == 0.0  # never called: last, no gradient


def test_a_layer_used_functionally_sits_where_it_is_used():
    """MultiheadAttention uses out_proj.weight without calling out_proj."""
    torch.manual_seed(5)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 1)
            self.inp = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            h = self.inp(x)
            return self.head(self.attn(h, h, h, need_weights=False)[0])

    net = Net()
    table = one_step(net, torch.randn(2, 5, 4), torch.randn(2, 5, 1)).table()
    assert table.layers("parameters") == ["inp", "attn", "attn.out_proj", "head"]


def test_the_order_holds_at_later_steps_and_unsampled_steps_have_no_hooks():
    torch.manual_seed(6)
    model = UsedOutOfOrder()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hooked = []
    with vglib.GradientMonitor(model, optimizer, every=3) as monitor:
        for _ in range(7):
            hooked.append(any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()))
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert hooked == [True, False, False, True, False, False, True]
    table = monitor.table()
    for step in (0, 3, 6):
        assert list(table.layer[table.step == step]) == list(table.layer[table.step == 0])


def test_recomputation_inside_backward_is_not_a_second_call():
    """torch.utils.checkpoint runs the forward again during backward, with gradients on."""
    torch.manual_seed(7)
    inner = nn.Sequential(nn.Linear(6, 6), nn.Tanh())

    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.head = inner, nn.Linear(6, 1)

        def forward(self, x):
            return self.head(torch.utils.checkpoint.checkpoint(self.inner, x, use_reentrant=False))

    model = Checkpointed()
    x, y = torch.randn(10, 6), torch.randn(10, 1)
    expected = torch.tanh(model.inner[0](x)).detach()
    table = one_step(model, x, y).table()
    acts = table.kind == "activation"
    assert list(table.layer[acts]) == ["inner.1"]
    assert table["mean"][acts][0] == pytest.approx(expected.mean().item(), rel=1e-6)
    assert np.isfinite(table["grad_norm"][acts][0])


def test_an_output_changed_in_place_later_is_measured_as_it_was():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.act, self.l2 = nn.Linear(4, 6), nn.SiLU(), nn.Linear(6, 1)

        def forward(self, x):
            h = self.act(self.l1(x))
            h.mul_(0.0)  # legal: SiLU's backward needs its input, not its output
            return self.l2(h)

    torch.manual_seed(8)
    model = InPlace()
    x, y = torch.randn(12, 4), torch.randn(12, 1)
    expected = nn.functional.silu(model.l1(x)).detach()
    table = one_step(model, x, y).table()
    row = table.kind == "activation"
    assert table["mean"][row][0] == pytest.approx(expected.mean().item(), rel=1e-6)
    assert table["std"][row][0] == pytest.approx(expected.std(unbiased=False).item(), rel=1e-5)
