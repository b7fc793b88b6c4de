"""GradientMonitor and the training step: closures (LBFGS), a monitor never stepped, the optimizer
argument, the weight copy, and training that stays bit for bit what it is without the monitor."""

import contextlib
import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vglib


def group_norm(tensors):
    return math.sqrt(sum(float(t.double().norm()) ** 2 for t in tensors))


def test_a_closure_optimizer_records_the_gradient_its_step_starts_from():
    """LBFGS calls the closure inside step(): the gradient at the weights the step starts from is
    the closure's first evaluation, not what .grad held before step() (zeros at step 0)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    optimizer = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=5)

    def closure():
        optimizer.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        return loss

    truth = []
    with vglib.GradientMonitor(net, optimizer) as monitor:
        for _ in range(3):
            probe = copy.deepcopy(net)
            F.mse_loss(probe(x), y).backward()
            before = [p.detach().clone() for p in net[0].parameters()]
            hidden = torch.tanh(probe[0](x)).detach()
            optimizer.step(closure)
            after = list(net[0].parameters())
            truth.append(
                {
                    "grad_norm": group_norm([p.grad for p in probe[0].parameters()]),
                    "weight_norm": group_norm(before),
                    "update": group_norm([a.detach() - b for a, b in zip(after, before, strict=True)]),
                    "mean": hidden.mean().item(),
                }
            )
    table = monitor.table()
    layer = (table.layer == "0") & (table.kind == "parameters")
    act = (table.layer == "1") & (table.kind == "activation")
    assert list(table.step[layer]) == [0, 1, 2] and list(table.step[act]) == [0, 1, 2]
    for step, expected in enumerate(truth):
        assert table["grad_norm"][layer][step] == pytest.approx(expected["grad_norm"], rel=1e-5)
        assert table["weight_norm"][layer][step] == pytest.approx(expected["weight_norm"], rel=1e-6)
        ratio = expected["update"] / expected["weight_norm"]
        assert table["update_ratio"][layer][step] == pytest.approx(ratio, rel=1e-4)
        assert table["mean"][act][step] == pytest.approx(expected["mean"], rel=1e-5)  # first evaluation only


def test_a_closure_passed_by_keyword_to_sgd_is_observed_too():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    probe = copy.deepcopy(net)
    F.mse_loss(probe(x), y).backward()
    expected = group_norm([p.grad for p in probe[2].parameters()])

    def closure():
        optimizer.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        return loss

    with vglib.GradientMonitor(net, optimizer) as monitor:
        loss = optimizer.step(closure=closure)
    assert loss.item() == pytest.approx(F.mse_loss(probe(x), y).item())  # the closure's loss comes back
    table = monitor.table()
    assert table["grad_norm"][(table.layer == "2") & (table.kind == "parameters")][0] == pytest.approx(
        expected
    )


def test_training_is_bit_for_bit_the_same_with_the_monitor():
    def run(monitored, optimizer_name):
        torch.manual_seed(2)
        net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1))
        x, y = torch.randn(24, 4), torch.randn(24, 1)
        if optimizer_name == "lbfgs":
            optimizer = torch.optim.LBFGS(net.parameters(), lr=0.3, max_iter=4)
        else:
            optimizer = torch.optim.Adam(net.parameters(), lr=0.01)

        def closure():
            optimizer.zero_grad()
            loss = F.mse_loss(net(x), y)
            loss.backward()
            return loss

        monitor = vglib.GradientMonitor(net, optimizer, every=2, histograms=True) if monitored else None
        with monitor or contextlib.nullcontext():
            for _ in range(5):
                if optimizer_name == "lbfgs":
                    optimizer.step(closure)
                else:
                    optimizer.zero_grad()
                    for part in (slice(0, 12), slice(12, 24)):  # accumulation
                        F.mse_loss(net(x[part]), y[part]).backward()
                    optimizer.step()
        return [p.detach().clone() for p in net.parameters()] + [p.grad.clone() for p in net.parameters()]

    for name in ("adam", "lbfgs"):
        plain, watched = run(False, name), run(True, name)
        assert all(torch.equal(a, b) for a, b in zip(plain, watched, strict=True)), name


def test_a_monitor_never_stepped_says_so():
    model = vglib.build_mlp(2, 8, "tanh", seed=0)
    x, y = vglib.probe_batch(8, 1, 16)
    monitor = vglib.GradientMonitor(model)
    with pytest.warns(UserWarning, match=r"call monitor\.step\(lr=\.\.\.\) after each backward pass"):
        with monitor:
            F.mse_loss(model(x), y).backward()
    assert len(monitor.table()) == 0  # warned once: reading the table again is quiet
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stepless = vglib.GradientMonitor(model, optimizer).attach()
    F.mse_loss(model(x), y).backward()
    with pytest.warns(UserWarning, match=r"optimizer's step\(\) never ran"):
        stepless.table()
    stepless.close()


def test_a_monitor_that_saw_nothing_or_stepped_stays_quiet():
    model = vglib.build_mlp(2, 8, "tanh", seed=0)
    x, y = vglib.probe_batch(8, 1, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with vglib.GradientMonitor(model) as idle:
            with torch.no_grad():
                model(x)  # evaluation is not training
        assert len(idle.table()) == 0
        with vglib.GradientMonitor(model) as stepped:
            F.mse_loss(model(x), y).backward()
            stepped.step()
        assert len(stepped.table()) > 0


def test_the_optimizer_argument_is_checked():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        TypeError, match=r"got int; every is keyword-only: GradientMonitor\(model, optimizer, every=10\)"
    ):
        vglib.GradientMonitor(model, 10)
    with pytest.raises(TypeError, match="got list; pass one optimizer"):
        vglib.GradientMonitor(model, [optimizer])
    for every in (np.int64(5), np.int32(3)):
        assert vglib.GradientMonitor(model, optimizer, every=every).every == int(every)
        assert type(vglib.GradientMonitor(model, optimizer, every=every).every) is int
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        vglib.GradientMonitor(model, every=np.int64(0))
    with pytest.raises(TypeError, match="every must be an int"):
        vglib.GradientMonitor(model, every=np.float64(2.0))


def test_no_copy_of_the_weights_lives_between_sampled_steps():
    model = vglib.build_mlp(2, 16, "relu", seed=0)
    x, y = vglib.probe_batch(16, 1, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for every in (2, 3):
        held = []
        with vglib.GradientMonitor(model, optimizer, every=every) as monitor:
            for _ in range(6):
                optimizer.zero_grad()
                F.mse_loss(model(x), y).backward()
                optimizer.step()
                held.append(monitor._snapshot is not None)
        assert held == [False] * 6
        table = monitor.table()
        ratios = table["update_ratio"][table.kind == "parameters"]
        assert np.isfinite(ratios).all() and len(ratios) == 3 * (6 // every)  # 3 layers, every sampled step


def hooks_left(model, optimizer):
    modules = [m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules()]
    params = [getattr(p, "_post_accumulate_grad_hooks", None) for p in model.parameters()]
    steps = [optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks]
    return any(modules) or any(params) or any(steps)


@pytest.mark.parametrize("stop_at", [0, 1, 4])
def test_every_hook_goes_when_the_monitor_closes_even_mid_step(stop_at):
    model = vglib.build_mlp(2, 8, "relu", seed=0)
    x, y = vglib.probe_batch(8, 1, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyboardInterrupt), vglib.GradientMonitor(model, optimizer, every=3):
        for step in range(6):
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()  # step 0: the row order is read off this pass
            if step == stop_at:
                raise KeyboardInterrupt
            optimizer.step()
    assert not hooks_left(model, optimizer)
    assert all(p.requires_grad for p in model.parameters())
