"""BPTT read by lag: bptt_gradient_norms(by_lag, relative), first_lag_below, and Pascanu et al.'s
temporal contributions to dL/dW_hh against autograd and a hand-written backward loop."""

import numpy as np
import pytest
import torch
from torch import nn

import vglib


def test_by_lag_and_relative_read_the_same_norms_backwards_from_the_last_step():
    model = vglib.build_rnn(12, "tanh", 0.9, seed=2)
    x, y = vglib.adding_problem(16, 9, seed=2)
    by_time = vglib.bptt_gradient_norms(model, x, y)
    by_lag = vglib.bptt_gradient_norms(model, x, y, by_lag=True)
    relative = vglib.bptt_gradient_norms(model, x, y, by_lag=True, relative=True)
    np.testing.assert_array_equal(by_lag, by_time[::-1])
    np.testing.assert_allclose(relative, by_time[::-1] / by_time[-1])
    assert relative[0] == 1.0
    np.testing.assert_allclose(vglib.bptt_gradient_norms(model, x, y, relative=True)[-1], 1.0)
    with pytest.raises(TypeError, match="by_lag must be True or False"):
        vglib.bptt_gradient_norms(model, x, y, by_lag=1)


def test_first_lag_below():
    assert vglib.first_lag_below([1.0, 0.5, 0.2, 0.05, 0.01], 0.1) == 3
    assert vglib.first_lag_below(np.array([1.0, 0.5]), 0.1) is None
    assert vglib.first_lag_below([1.0, 0.09, 0.5, 0.01], 0.1) == 1  # the first crossing, not the last
    curve = 0.8 ** np.arange(100)  # 0.8^k < 1e-6 first at k = ceil(ln 1e-6 / ln 0.8) = 62
    assert vglib.first_lag_below(curve, 1e-6) == int(np.ceil(np.log(1e-6) / np.log(0.8)))
    with pytest.raises(ValueError, match="1-d"):
        vglib.first_lag_below(np.ones((2, 2)), 0.1)
    with pytest.raises(TypeError, match="level must be a number"):
        vglib.first_lag_below([1.0], "0.1")


def test_lag_contributions_sum_to_the_autograd_weight_gradient():
    model = vglib.build_rnn(16, "tanh", 1.1, seed=4)
    x, y = vglib.adding_problem(32, 25, seed=4)
    parts = vglib.bptt_weight_gradient_by_lag(model, x, y)
    double = vglib.build_rnn(16, "tanh", 1.1, seed=4).double()
    nn.functional.mse_loss(double(x.double()), y.double()).backward()
    full = double.recurrent.weight.grad
    assert parts.total == pytest.approx(full.norm().item(), rel=1e-12)
    assert len(parts.norms) == 25 and parts.norms[-1] == 0.0  # h_0 = 0: the first step adds nothing
    assert parts.dropped_by_truncation(25) == 0.0 and parts.dropped_by_truncation(0) == 1.0
    assert model.recurrent.weight.grad is None  # the model itself is untouched


def test_lag_contributions_match_a_hand_written_backward_loop():
    # delta_s = phi'(a_s) * dL/dh_s, dL/dh_{s-1} = W^T delta_s; lag k contributes delta_{T-k} h_{T-k-1}^T.
    model = vglib.build_rnn(10, "tanh", 1.0, seed=5).double()
    x, y = vglib.adding_problem(8, 12, seed=5)
    x, y = x.double(), y.double()
    w, u, b = model.recurrent.weight.detach(), model.input.weight.detach(), model.input.bias.detach()
    states, pre = [torch.zeros(8, 10, dtype=torch.float64)], []
    for t in range(12):
        pre.append(x[:, t] @ u.T + b + states[-1] @ w.T)
        states.append(torch.tanh(pre[-1]))
    out = model.head(states[-1]).detach()
    grad_h = 2 * (out - y) / out.numel() @ model.head.weight.detach()
    expected, contributions = [], []
    for s in range(12, 0, -1):
        delta = (1 - torch.tanh(pre[s - 1]) ** 2) * grad_h
        contributions.append(delta.T @ states[s - 1])
        expected.append(contributions[-1].norm().item())
        grad_h = delta @ w
    parts = vglib.bptt_weight_gradient_by_lag(model, x, y)
    np.testing.assert_allclose(parts.norms, expected, rtol=1e-10, atol=1e-300)
    tail_3 = torch.stack(contributions[3:]).sum(0).norm().item()
    assert parts.dropped_by_truncation(3) == pytest.approx(tail_3 / parts.total, rel=1e-10)


def test_long_lags_are_swamped_although_the_weight_gradient_is_not_small():
    # Pascanu et al.'s picture: at rho = 0.8 the lag-30 term is tiny next to the short-lag ones.
    model = vglib.build_rnn(32, "tanh", 0.8, seed=0)
    x, y = vglib.adding_problem(64, 60, seed=0)
    parts = vglib.bptt_weight_gradient_by_lag(model, x, y)
    assert parts.norms[30] < 1e-3 * parts.norms[:5].max()
    assert parts.dropped_by_truncation(30) < 1e-3


def test_bptt_weight_gradient_by_lag_rejects_bad_input():
    x, y = vglib.adding_problem(4, 5, seed=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        vglib.bptt_weight_gradient_by_lag("rnn", x, y)
    with pytest.raises(ValueError, match=r"Linear children: \['input', 'recurrent', 'head'\]"):
        vglib.bptt_weight_gradient_by_lag(vglib.build_rnn(4), x, y, recurrent="cell")
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        vglib.bptt_weight_gradient_by_lag(vglib.build_rnn(4), x, y, dtype=torch.float16)
    with pytest.raises(ValueError, match="steps must be an int"):
        vglib.bptt_weight_gradient_by_lag(vglib.build_rnn(4), x, y).dropped_by_truncation(-1)


def test_state_gradient_by_lag_of_an_elman_rnn_is_bptt_gradient_norms_in_float64():
    model = vglib.build_rnn(12, "tanh", 1.0, seed=3)
    x, y = vglib.adding_problem(16, 15, seed=3)
    expected = vglib.bptt_gradient_norms(model.double(), x.double(), y.double(), by_lag=True, relative=True)
    model = model.float()
    np.testing.assert_allclose(vglib.state_gradient_by_lag(model, x, y), expected, rtol=1e-12)
    assert model.recurrent.weight.dtype == torch.float32 and model.recurrent.weight.grad is None


def test_gru_hidden_state_gradient_matches_a_hand_written_gru():
    # PyTorch's GRU: r, z, n = chunks; n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) n + z h
    model = vglib.build_recurrent("gru", 6, seed=1).double()
    x, y = vglib.adding_problem(5, 9, seed=1)
    x, y = x.double(), y.double()
    cell = model.cell
    h, states = torch.zeros(5, 6, dtype=torch.float64), []
    for t in range(9):
        gi = x[:, t] @ cell.weight_ih_l0.T + cell.bias_ih_l0
        gh = h @ cell.weight_hh_l0.T + cell.bias_hh_l0
        r = torch.sigmoid(gi[:, :6] + gh[:, :6])
        z = torch.sigmoid(gi[:, 6:12] + gh[:, 6:12])
        n = torch.tanh(gi[:, 12:] + r * gh[:, 12:])
        h = (1 - z) * n + z * h
        states.append(h)
    loss = nn.functional.mse_loss(model.head(h), y)
    expected = [g.norm().item() for g in torch.autograd.grad(loss, states)][::-1]
    np.testing.assert_allclose(vglib.state_gradient_by_lag(model, x, y, relative=False), expected, rtol=1e-10)


def test_lstm_hidden_and_cell_state_gradients_match_a_hand_written_lstm():
    # PyTorch's LSTM: i, f, g, o = chunks; c' = f c + i g; h' = o tanh(c'); both states kept as nodes
    model = vglib.build_recurrent("lstm", 6, seed=3).double()
    x, y = vglib.adding_problem(5, 9, seed=3)
    x, y = x.double(), y.double()
    cell = model.cell
    h, c, hs, cs = torch.zeros(5, 6, dtype=torch.float64), torch.zeros(5, 6, dtype=torch.float64), [], []
    for t in range(9):
        a = x[:, t] @ cell.weight_ih_l0.T + cell.bias_ih_l0 + h @ cell.weight_hh_l0.T + cell.bias_hh_l0
        i, f, g, o = a.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    loss = nn.functional.mse_loss(model.head(h), y)
    for state, nodes in (("hidden", hs), ("cell", cs)):
        expected = [g.norm().item() for g in torch.autograd.grad(loss, nodes, retain_graph=True)][::-1]
        measured = vglib.state_gradient_by_lag(model, x, y, state=state, relative=False)
        np.testing.assert_allclose(measured, expected, rtol=1e-10)


def test_a_closed_gru_update_gate_carries_the_gradient_unchanged_and_an_open_one_halves_it():
    # z = 1 (bias +50): h_t = h_{t-1}, so dL/dh is the same at every lag. At z = 1/2 with the
    # recurrent weights at zero, h_t = h_{t-1} / 2 + n(x_t): the gradient halves per step, 2^-k.
    model = vglib.build_recurrent("gru", 8, seed=0)
    x, y = vglib.adding_problem(16, 20, seed=0)
    with torch.no_grad():
        model.cell.bias_hh_l0[8:16] = 50.0
    np.testing.assert_allclose(vglib.state_gradient_by_lag(model, x, y), np.ones(20), rtol=1e-12)
    with torch.no_grad():
        model.cell.weight_hh_l0[:] = 0.0  # r, z and the candidate n independent of h
        model.cell.weight_ih_l0[8:16] = 0.0  # z from its biases alone: sigma(0) = 1/2
        model.cell.bias_ih_l0[8:16], model.cell.bias_hh_l0[8:16] = 0.0, 0.0
    np.testing.assert_allclose(vglib.state_gradient_by_lag(model, x, y), 0.5 ** np.arange(20), rtol=1e-12)


def test_lstm_cell_state_gradient_with_a_closed_forget_gate_and_the_unrolled_lstm_is_nn_lstm():
    # f = 1, i = 0, o frozen (weights into i, f, o zero): c_t = c_{t-1} exactly and the o gate does
    # not depend on h, so dL/dc is the same at every lag.
    model = vglib.build_recurrent("lstm", 8, seed=0)
    x, y = vglib.adding_problem(16, 12, seed=0)
    with torch.no_grad():
        for weight in (model.cell.weight_ih_l0, model.cell.weight_hh_l0):
            weight[:16] = 0.0
            weight[24:] = 0.0
        model.cell.bias_ih_l0[:8], model.cell.bias_ih_l0[8:16] = -60.0, 60.0
        model.cell.bias_hh_l0[:16] = 0.0
    cell = vglib.state_gradient_by_lag(model, x, y, state="cell")
    np.testing.assert_allclose(cell, np.ones(12), rtol=1e-12)
    from vglib.recurrence import _gated_states

    fresh = vglib.build_recurrent("lstm", 8, seed=4).double()
    xd = x.double()
    torch.testing.assert_close(_gated_states(fresh, xd, "hidden")[0], fresh(xd), rtol=1e-12, atol=1e-12)


def test_train_with_lag_probes_does_not_change_the_run():
    x, y = vglib.adding_problem(64, 8, seed=0)
    recipe = dict(steps=6, lr=1e-2, batch_size=16, seed=0, eval_every=3)
    plain = vglib.train(vglib.build_recurrent("gru", 8, seed=0), x, y, **recipe)
    model = vglib.build_recurrent("gru", 8, seed=0)
    probed, probes = vglib.train_with_lag_probes(
        model, x, y, probe_x=x[:8], probe_y=y[:8], probe_steps=(0, 3, 6), **recipe
    )
    np.testing.assert_array_equal(probed.loss, plain.loss)
    assert list(probes) == [0, 3, 6] and all(p[0] == 1.0 and len(p) == 8 for p in probes.values())
    np.testing.assert_allclose(probes[6], vglib.state_gradient_by_lag(model, x[:8], y[:8]))
    with pytest.raises(ValueError, match="beyond the 6 training steps"):
        vglib.train_with_lag_probes(model, x, y, probe_x=x, probe_y=y, probe_steps=(7,), **recipe)
    with pytest.raises(ValueError, match="whole numbers"):
        vglib.train_with_lag_probes(model, x, y, probe_x=x, probe_y=y, probe_steps=(-1,), **recipe)


def test_state_gradient_by_lag_rejects_bad_input():
    x, y = vglib.adding_problem(4, 5, seed=0)
    with pytest.raises(TypeError, match="ElmanRNN or GatedRNN"):
        vglib.state_gradient_by_lag(nn.Linear(2, 1), x, y)
    with pytest.raises(ValueError, match=r"one of \('hidden', 'cell'\)"):
        vglib.state_gradient_by_lag(vglib.build_recurrent("gru", 4), x, y, state="memory")
    with pytest.raises(ValueError, match="needs an LSTM"):
        vglib.state_gradient_by_lag(vglib.build_recurrent("gru", 4), x, y, state="cell")
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        vglib.state_gradient_by_lag(vglib.build_recurrent("lstm", 4), x, y, dtype=torch.float16)
