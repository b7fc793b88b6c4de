"""Recurrent pieces: the adding problem, ElmanRNN against torch.nn.RNN, BPTT norms against theory."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import vglib


def test_adding_problem_has_two_markers_one_per_half_and_sums_them():
    x, y = vglib.adding_problem(500, 20, seed=0)
    assert x.shape == (500, 20, 2) and y.shape == (500, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :10].sum(1) == 1) and torch.all(markers[:, 10:].sum(1) == 1)
    torch.testing.assert_close((x[..., 0] * markers).sum(1, keepdim=True), y)
    again, _ = vglib.adding_problem(500, 20, seed=0)
    assert torch.equal(x, again)


def test_predicting_one_scores_a_sixth():
    _, y = vglib.adding_problem(40_000, 10, seed=1)
    # Var(U1 + U2) = 2/12; the standard error of the estimate is about 0.0012
    assert ((y - 1) ** 2).mean().item() == pytest.approx(vglib.ADDING_BASELINE_MSE, abs=0.005)


def test_elman_rnn_computes_what_torch_rnn_computes():
    model = vglib.build_rnn(16, "tanh", seed=0, input_size=3)
    reference = nn.RNN(3, 16, nonlinearity="tanh", batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(model.input.weight)
        reference.bias_ih_l0.copy_(model.input.bias)
        reference.weight_hh_l0.copy_(model.recurrent.weight)
        reference.bias_hh_l0.zero_()
    x = torch.randn(4, 7, 3)
    _, states = model(x, return_states=True)
    expected, _ = reference(x)
    torch.testing.assert_close(torch.stack(states, dim=1), expected)


@pytest.mark.parametrize("radius", [0.5, 0.9, 1.3])
def test_spectral_radius_is_set_exactly(radius):
    model = vglib.build_rnn(32, "tanh", radius, seed=1)
    eigenvalues = torch.linalg.eigvals(model.recurrent.weight.detach().double())
    assert eigenvalues.abs().max().item() == pytest.approx(radius)


def test_identity_recurrence_for_irnn():
    model = vglib.build_rnn(8, "relu", recurrent_init="identity")
    assert torch.equal(model.recurrent.weight.detach(), torch.eye(8))


def test_bptt_norms_match_retained_gradients():
    model = vglib.build_rnn(12, "tanh", 0.9, seed=2)
    x, y = vglib.adding_problem(16, 9, seed=2)
    norms = vglib.bptt_gradient_norms(model, x, y)
    output, states = model(x, return_states=True)
    for h in states:
        h.retain_grad()
    nn.functional.mse_loss(output, y).backward()
    np.testing.assert_allclose(norms, [h.grad.norm().item() for h in states], rtol=1e-5)


def test_gradients_through_time_obey_the_pascanu_bound():
    # dL/dh_{t-1} = W^T diag(phi'(.)) dL/dh_t, and ||W||_2 = radius for a scaled orthogonal W,
    # so with tanh (phi' <= 1): ||dL/dh_{T-k}|| <= radius^k ||dL/dh_T||.
    radius, length = 0.8, 60
    model = vglib.build_rnn(32, "tanh", radius, seed=3)
    x, y = vglib.adding_problem(64, length, seed=3)
    norms = vglib.bptt_gradient_norms(model, x, y)
    lags = np.arange(length)[::-1]  # entry t is lag T-1-t
    assert np.all(norms <= norms[-1] * radius**lags * (1 + 1e-6))
    assert radius < vglib.rnn_vanishing_radius("tanh") == 1.0
    assert vglib.rnn_vanishing_radius("sigmoid") == 4.0


def test_the_guarantee_is_on_the_largest_singular_value_not_the_spectral_radius():
    # A non-normal W_hh (Gaussian, rescaled to spectral radius 0.9) has ||W||_2 well above 1, so
    # Pascanu's sufficient condition fails although rho < 1/gamma; rescaled to ||W||_2 = 0.9
    # instead, the bound 0.9^k holds at every lag.
    model = vglib.build_rnn(32, "tanh", 0.9, recurrent_init="lecun", seed=0)
    w = model.recurrent.weight.detach().double()
    assert abs(torch.linalg.eigvals(w).abs().max().item() - 0.9) < 1e-5
    assert torch.linalg.matrix_norm(w, ord=2).item() > 1.2 > vglib.rnn_vanishing_radius("tanh")
    with torch.no_grad():
        model.recurrent.weight.mul_(0.9 / torch.linalg.matrix_norm(w, ord=2).item())
    x, y = vglib.adding_problem(64, 40, seed=0)
    norms = vglib.bptt_gradient_norms(model, x, y)
    lags = np.arange(40)[::-1]
    assert np.all(norms <= norms[-1] * 0.9**lags * (1 + 1e-5))


def test_bptt_rejects_models_without_states():
    with pytest.raises(TypeError, match="return_states"):
        vglib.bptt_gradient_norms(vglib.build_mlp(2, 4, in_features=2), torch.randn(3, 2), torch.randn(3, 1))
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        vglib.build_rnn(4)(torch.randn(3, 5))


def test_training_is_repeatable_and_learns():
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])

    def run():
        model = vglib.build_mlp(2, 16, "tanh", "xavier", seed=0, in_features=4)
        return vglib.train(model, x, y, steps=200, lr=1e-2, seed=5, eval_every=50)

    first, second = run(), run()
    np.testing.assert_array_equal(first.loss, second.loss)
    assert list(first.eval_steps) == [50, 100, 150, 200]
    # y has variance 5.25; a trained model explains more than 98% of it
    assert math.isfinite(first.final_eval_loss) and first.final_eval_loss < 0.02 * y.var().item()
    assert first.eval_loss[-1] < first.eval_loss[0]


def test_training_rejects_bad_arguments():
    model = vglib.build_mlp(1, 2, in_features=2)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    with pytest.raises(ValueError, match="'sgd', 'adam'"):
        vglib.train(model, x, y, steps=1, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be > 0"):
        vglib.train(model, x, y, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="different numbers"):
        vglib.train(model, x, y[:4], steps=1, lr=0.1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        vglib.train(nn.Sequential(nn.ReLU()), x, y, steps=1, lr=0.1)


def test_training_can_bring_a_monitor():
    x, y = vglib.teacher_student(256, in_features=8, seed=0)
    model = vglib.build_mlp(3, 16, "tanh", "xavier", seed=0, in_features=8)
    history = vglib.train(model, x, y, steps=20, lr=0.05, optimizer="sgd", momentum=0.9, monitor_every=5)
    table = history.monitor.table()
    assert sorted(set(table.step.tolist())) == [0, 5, 10, 15]
    assert all(not m._forward_hooks for m in model.modules())  # closed after training


def test_teacher_student_has_unit_variance_and_one_teacher():
    x, y = vglib.teacher_student(20_000, seed=0)
    x_test, y_test = vglib.teacher_student(500, seed=1)
    assert y.var().item() == pytest.approx(1.0, abs=0.05) and not torch.equal(x[:500], x_test)
    _, y_again = vglib.teacher_student(500, seed=1)
    assert torch.equal(y_again, y_test)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_gates_rebuild_pytorchs_states_from_the_gate_equations(kind):
    model = vglib.build_recurrent(kind, 16, seed=0)
    x, _ = vglib.adding_problem(32, 25, seed=4)
    gates = vglib.recurrent_gates(model.cell, x)
    with torch.no_grad():
        states, last = model.cell(x)
    torch.testing.assert_close(gates["h"], states, atol=1e-6, rtol=1e-5)
    if kind == "lstm":
        assert set(gates) == {"input", "forget", "cell", "output", "c", "h"}
        torch.testing.assert_close(gates["c"][:, -1], last[1][0], atol=1e-6, rtol=1e-5)
        # the cell update the gates describe: c_t = f_t c_(t-1) + i_t g_t
        c_prev = torch.cat([torch.zeros_like(gates["c"][:, :1]), gates["c"][:, :-1]], 1)
        torch.testing.assert_close(gates["c"], gates["forget"] * c_prev + gates["input"] * gates["cell"])
    else:
        assert set(gates) == {"reset", "update", "new", "h"}
        h_prev = torch.cat([torch.zeros_like(gates["h"][:, :1]), gates["h"][:, :-1]], 1)
        z = gates["update"]
        torch.testing.assert_close(gates["h"], (1 - z) * gates["new"] + z * h_prev)
    for name in ("forget", "input", "output") if kind == "lstm" else ("reset", "update"):
        assert gates[name].shape == (32, 25, 16) and ((gates[name] > 0) & (gates[name] < 1)).all()


def test_a_forget_gate_with_zero_weights_is_the_sigmoid_of_its_bias():
    lstm = nn.LSTM(2, 4, batch_first=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.zero_()
        lstm.bias_ih_l0[4:8] = 1.5  # PyTorch's gate order: input, forget, cell, output
    gates = vglib.recurrent_gates(lstm, torch.randn(3, 5, 2))
    torch.testing.assert_close(gates["forget"], torch.full((3, 5, 4), 1 / (1 + math.exp(-1.5))))


def test_recurrent_gates_refuse_what_they_cannot_read():
    with pytest.raises(TypeError, match="nn.LSTM or nn.GRU"):
        vglib.recurrent_gates(nn.RNN(2, 4, batch_first=True), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="one layer"):
        vglib.recurrent_gates(nn.LSTM(2, 4, num_layers=2, batch_first=True), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="batch_first"):
        vglib.recurrent_gates(nn.GRU(2, 4), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        vglib.recurrent_gates(nn.GRU(2, 4, batch_first=True), torch.zeros(3, 2))


class _LinearRecurrence(nn.Module):
    """h_t = a h_(t-1) + x_t, output h_T: the gradient k steps back is a^k times the last one."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x):
        h = torch.zeros(x.shape[0], x.shape[2])
        for t in range(x.shape[1]):
            h = self.a * h + x[:, t]
        return h.sum(1, keepdim=True)


def test_input_gradient_by_lag_decays_as_the_recurrence_says():
    x, y = torch.randn(8, 12, 3), torch.randn(8, 1)
    model = _LinearRecurrence(0.7)
    g = vglib.input_gradient_by_lag(model, x, y)
    assert g.shape == (12,) and g.dtype == np.float64
    np.testing.assert_allclose(g / g[0], 0.7 ** np.arange(12), rtol=1e-5)
    assert model.a.grad is None  # the model's .grad is left alone


def test_input_gradient_by_lag_works_where_states_are_hidden_and_matches_autograd():
    model = vglib.build_recurrent("lstm", 8, seed=1)  # nn.LSTM inside: no return_states
    x, y = vglib.adding_problem(16, 10, seed=5)
    g = vglib.input_gradient_by_lag(model, x, y)
    xr = x.clone().requires_grad_(True)
    nn.functional.mse_loss(model(xr), y).backward()
    by_hand = xr.grad.double().pow(2).sum(dim=(0, 2)).sqrt().numpy()[::-1]
    np.testing.assert_allclose(g, by_hand, rtol=1e-6)
    with pytest.raises(ValueError, match="batch, time, features"):
        vglib.input_gradient_by_lag(model, x[:, :, 0], y)
    with pytest.raises(TypeError, match="nn.Module"):
        vglib.input_gradient_by_lag(lambda v: v, x, y)


def test_steps_to_is_the_first_evaluation_at_or_below_a_level():
    history = vglib.TrainingHistory(
        np.zeros(40), np.array([10, 20, 30, 40]), np.array([1.0, 0.5, 0.4, np.nan])
    )
    assert history.steps_to(0.5) == 20  # at or below
    assert history.steps_to(0.45) == 30
    assert history.steps_to(0.1) is None  # never; a NaN loss is never below anything
