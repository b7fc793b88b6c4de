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


class _Accumulation:
    """A tanh network, three micro-batches, and the truth computed without any monitor: each
    micro-batch's hidden outputs (the activation rows' subject) and the accumulated gradient."""

    def __init__(self):
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.x, self.y = torch.randn(30, 4), torch.randn(30, 1)
        self.parts = [slice(0, 10), slice(10, 20), slice(20, 30)]
        with torch.no_grad():
            self.hidden = [torch.tanh(self.net[0](self.x[p])).double() for p in self.parts]
        probe = copy.deepcopy(self.net)
        for p in self.parts:
            F.mse_loss(probe(self.x[p]), self.y[p]).backward()
        self.grad_norm = group_norm([q.grad for q in probe[0].parameters()])
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01)

    def backward(self, part):
        F.mse_loss(self.net(self.x[part]), self.y[part]).backward()

    def monitored_step(self, closure):
        """One monitored step: micro-batches 0 and 1 before step(), then ``step(closure)``."""
        with vglib.GradientMonitor(self.net, self.optimizer) as monitor:
            self.optimizer.zero_grad()
            self.backward(self.parts[0])
            self.backward(self.parts[1])
            self.optimizer.step(closure)
        return monitor

    def rows(self, monitor):
        table = monitor.table()
        act = (table.layer == "1") & (table.kind == "activation")
        layer = (table.layer == "0") & (table.kind == "parameters")
        return table["mean"][act], table["std"][act], table["grad_norm"][layer]


def test_accumulation_whose_last_micro_batch_runs_in_a_closure_pools_every_micro_batch():
    """Lightning's automatic optimization runs the last micro-batch of an accumulation inside the
    closure it hands step(), without zero_grad: the activation rows must pool all micro-batches,
    as they do when every micro-batch runs before a plain step() (an in-place clip after the
    closure's backward, as Lightning's gradient_clip_val does, changes nothing)."""
    for clip in (False, True):
        run = _Accumulation()

        def closure(run=run, clip=clip):
            run.backward(run.parts[2])
            if clip:
                torch.nn.utils.clip_grad_norm_(run.net.parameters(), 1e9)  # in place, a no-op clip
            return torch.tensor(0.0)

        monitor = run.monitored_step(closure)
        mean, std, grad = run.rows(monitor)
        every = torch.cat(run.hidden)
        assert mean == pytest.approx([every.mean().item()], rel=1e-6)
        assert std == pytest.approx([every.std(unbiased=False).item()], rel=1e-6)
        assert grad == pytest.approx([run.grad_norm], rel=1e-6)


def test_a_closure_that_resets_the_gradients_records_its_own_pass_only():
    """zero_grad() inside the closure (set to None, or zeroed in place) discards the passes made
    before step(): the step's gradient is the closure's alone, and so are the activation rows."""
    for set_to_none in (True, False):
        run = _Accumulation()

        def closure(run=run, set_to_none=set_to_none):
            run.optimizer.zero_grad(set_to_none=set_to_none)
            run.backward(run.parts[2])
            return torch.tensor(0.0)

        monitor = run.monitored_step(closure)
        mean, _, _ = run.rows(monitor)
        assert mean == pytest.approx([run.hidden[2].mean().item()], rel=1e-6), set_to_none


def test_a_closure_without_a_backward_pass_keeps_the_passes_before_step():
    """Lightning's manual optimization: the user's backward passes come before opt.step(), which
    hands the optimizer a closure that computes nothing. The step uses those passes' gradients,
    so the activation rows are theirs; without any pass before, there are none."""
    run = _Accumulation()
    with vglib.GradientMonitor(run.net, run.optimizer) as monitor:
        run.optimizer.zero_grad()
        for part in run.parts:
            run.backward(part)
        run.optimizer.step(lambda: None)
    mean, _, grad = run.rows(monitor)
    assert mean == pytest.approx([torch.cat(run.hidden).mean().item()], rel=1e-6)
    assert grad == pytest.approx([run.grad_norm], rel=1e-6)

    run = _Accumulation()
    with vglib.GradientMonitor(run.net, run.optimizer) as monitor:
        with torch.no_grad():
            run.net(run.x)  # an evaluation pass: not training, not recorded
        run.optimizer.step(lambda: None)
    table = monitor.table()
    assert set(table.kind) <= {"parameters"}


def test_closure_accumulation_gives_the_table_and_histograms_of_plain_accumulation():
    """Every row and histogram of a step whose last micro-batch runs in the closure equals those of
    the same step with every micro-batch before a plain step() (the documented pooling)."""

    def monitored(last_in_closure):
        run = _Accumulation()
        monitor = vglib.GradientMonitor(run.net, run.optimizer, histograms=True)
        with monitor:
            for _ in range(2):
                run.optimizer.zero_grad()
                run.backward(run.parts[0])
                run.backward(run.parts[1])
                if last_in_closure:
                    run.optimizer.step(lambda: run.backward(run.parts[2]))
                else:
                    run.backward(run.parts[2])
                    run.optimizer.step()
        return monitor

    plain, closure = monitored(False), monitored(True)
    a, b = plain.table(summaries=True), closure.table(summaries=True)
    assert list(a.layer) == list(b.layer) and list(a.kind) == list(b.kind)
    for column in ("grad_norm", "weight_norm", "update_ratio", "mean", "std", "unit_std", "saturated"):
        np.testing.assert_allclose(b[column], a[column], rtol=1e-6, err_msg=column)
    for of in ("activation", "gradient"):
        np.testing.assert_array_equal(closure.histogram("1", of)[2], plain.histogram("1", of)[2])


def test_step_histogram_is_one_step_of_histogram_and_recorded_keeps_the_summary_rows():
    run = _Accumulation()
    monitor = vglib.GradientMonitor(run.net, run.optimizer, every=2, histograms=True)
    with monitor:
        for _ in range(5):
            run.optimizer.zero_grad()
            run.backward(run.parts[0])
            run.optimizer.step()
    for of in ("activation", "gradient"):
        steps, edges, counts = monitor.histogram("1", of=of)
        assert list(steps) == [0, 2, 4]
        for k, step in enumerate(steps):
            step_edges, step_counts = monitor.step_histogram("1", int(step), of=of)
            np.testing.assert_array_equal(step_edges, edges)
            np.testing.assert_array_equal(step_counts, counts[k])
    with pytest.raises(KeyError, match="at step 1"):
        monitor.step_histogram("1", 1)  # not a sampled step
    with pytest.raises(KeyError):
        monitor.step_histogram("0", 0)  # a Linear: no activation histogram
    with pytest.raises(ValueError, match="'activation', 'gradient'"):
        monitor.step_histogram("1", 0, of="weights")

    recorded = monitor.recorded()
    assert len(monitor.recorded(summaries=False).table(summaries=True)) == len(monitor.table())
    full, layers = monitor.table(summaries=True), monitor.table()
    assert list(recorded.table(summaries=True).kind) == list(full.kind)
    assert "global" in set(full.kind)
    assert list(recorded.table().layer) == list(layers.layer)
    assert list(recorded.table().kind) == list(layers.kind)
    assert sorted(recorded.table().columns) == sorted(layers.columns)
    for column in layers.columns:
        np.testing.assert_array_equal(recorded.table()[column], layers[column])
