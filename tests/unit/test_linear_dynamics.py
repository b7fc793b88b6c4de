"""Products of random matrices and the learning dynamics of deep linear networks: vglib against
independent computations (explicit products, QR iterations, Saxe et al.'s closed forms)."""

import math

import numpy as np
import pytest
import torch

import vglib


def test_jacobian_of_a_deep_tanh_net_is_the_float64_product_of_diag_phi_prime_w():
    """The probe against the explicit product D_L W_L ... D_1 W_1, built in float64 NumPy from the
    float32 weights, down to singular values far below float32's floor (~1e-7 of the largest)."""
    model = vglib.build_mlp(30, 32, "tanh", "lecun", seed=3)
    x = torch.randn(32, generator=torch.Generator().manual_seed(1))
    h, product = x.double().numpy(), np.eye(32)
    for layer in model[:-1]:
        if isinstance(layer, torch.nn.Linear):
            w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
            z = w @ h + b
            h = np.tanh(z)
            product = np.diag(1.0 - h**2) @ w @ product
    exact = np.linalg.svd(product, compute_uv=False)
    s = vglib.jacobian_singular_values(model[:-1], x)
    assert exact[-8] < 1e-9 * exact[0]  # the comparison reaches far below float32 rounding
    resolved = exact > 1e-10 * exact[0]  # float64 itself resolves ~1e-16 of the largest
    np.testing.assert_allclose(s[resolved], exact[resolved], rtol=1e-5)
    assert np.median(s) == pytest.approx(np.median(exact), rel=1e-8)


def test_scale_weights_multiplies_hidden_weights_only_and_draws_biases():
    model = vglib.build_mlp(3, 8, "tanh", "orthogonal", seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert vglib.scale_weights(model, 1.5) is model
    for index in (1, 2, 3):
        torch.testing.assert_close(
            model.get_submodule(f"linear{index}").weight, 1.5 * before[f"linear{index}.weight"]
        )
    torch.testing.assert_close(model.head.weight, before["head.weight"])
    # singular values of the orthogonal hidden stack's Jacobian of a linear net: gain ** depth exactly
    linear = vglib.scale_weights(vglib.build_mlp(10, 16, "linear", "orthogonal", seed=0), 0.9)
    s = vglib.jacobian_singular_values(linear[:-1], torch.randn(16))
    np.testing.assert_allclose(s, 0.9**10, rtol=1e-5)
    wide = vglib.scale_weights(
        vglib.build_mlp(2, 1000, "linear", "orthogonal", seed=0), 1.0, bias_variance=0.25
    )
    assert wide.linear1.bias.std().item() == pytest.approx(0.5, rel=0.1)
    assert not torch.equal(wide.linear1.bias, wide.linear2.bias)
    assert torch.all(wide.head.bias == 0)
    with pytest.raises(TypeError, match="finite number"):
        vglib.scale_weights(model, "2")
    with pytest.raises(ValueError, match=">= 0"):
        vglib.scale_weights(model, 1.0, bias_variance=-1.0)
    with pytest.raises(ValueError, match="no hidden layers"):
        vglib.scale_weights(torch.nn.Sequential(torch.nn.Linear(3, 3)), 2.0)


def test_lyapunov_exponents_match_a_qr_iteration():
    """Newman (1986): the exponents of a product of Gaussian n x n matrices (entries N(0, 1/n)),
    measured by the standard QR re-orthonormalisation over a long product."""
    n, depth = 4, 10000
    rng = np.random.default_rng(0)
    q, logs = np.eye(n), np.zeros(n)
    for _ in range(depth):
        q, r = np.linalg.qr(rng.standard_normal((n, n)) / math.sqrt(n) @ q)
        logs += np.log(np.abs(np.diag(r)))
    measured = np.sort(logs / depth)[::-1]
    np.testing.assert_allclose(measured, vglib.lyapunov_exponents(n), atol=0.04)  # ~3.5 standard errors
    # variance 2/n shifts every exponent by ln(2)/2; n = 1 is E[ln|g|] = (psi(1/2) + ln 2)/2
    np.testing.assert_allclose(
        vglib.lyapunov_exponents(5, 2.0), vglib.lyapunov_exponents(5) + math.log(2) / 2
    )
    assert vglib.lyapunov_exponents(1)[0] == pytest.approx(-(np.euler_gamma + math.log(2)) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="variance"):
        vglib.lyapunov_exponents(4, 0.0)


def test_fuss_catalan_edge_against_large_gaussian_products():
    assert vglib.fuss_catalan_edge(1) == pytest.approx(2.0)  # Marchenko-Pastur: s in [0, 2]
    assert vglib.fuss_catalan_edge(1000) == pytest.approx(math.sqrt(math.e * 1001), rel=1e-3)
    rng = np.random.default_rng(0)
    n = 400
    product = np.eye(n)
    for _ in range(3):
        product = rng.standard_normal((n, n)) / math.sqrt(n) @ product
    assert np.linalg.norm(product, 2) == pytest.approx(vglib.fuss_catalan_edge(3), rel=0.05)
    with pytest.raises(ValueError):
        vglib.fuss_catalan_edge(0)


def test_saxe_closed_forms_are_inverse_and_solve_the_flow():
    s, u0 = 2.0, 1e-3
    for depth in (1, 2, 3, 6):
        t = vglib.saxe_learning_time(s, u0, 1.5, depth)
        assert vglib.saxe_mode_strength(t, s, u0, depth) == pytest.approx(1.5, rel=1e-7)
    # depth 2: the logistic curve and the learning time ~ ln(s/u0) / (2s), i.e. inversely proportional to s
    assert vglib.saxe_learning_time(s, u0, s / 2) == pytest.approx(math.log((s - u0) / u0) / (2 * s))
    # the flow tau du/dt = N u^(2 - 2/N) (s - u) by a finite difference
    for depth in (2, 4):
        t = np.array([1.0, 1.0 + 1e-6])
        u = vglib.saxe_mode_strength(t, s, 0.05, depth)
        rate = (u[1] - u[0]) / 1e-6
        assert rate == pytest.approx(depth * u[0] ** (2 - 2 / depth) * (s - u[0]), rel=1e-4)
    with pytest.raises(ValueError, match="0 < u0 < s"):
        vglib.saxe_mode_strength(1.0, s, 3.0)
    with pytest.raises(ValueError, match="u0 < uf < s"):
        vglib.saxe_learning_time(s, u0, 2.5)


@pytest.mark.parametrize(("depth", "scale"), [(1, 0.01), (2, 0.03), (4, 0.3)])
def test_decoupled_gradient_descent_follows_saxes_solution(depth, scale):
    """Gradient descent from Saxe et al.'s decoupled initial conditions: every mode follows the
    analytic curve for its own singular value, and its learning time is the analytic one."""
    s = [3.0, 1.0, 0.5]
    run = vglib.train_deep_linear(
        s, depth, 6, init="decoupled", scale=scale, lr=0.002, steps=8000, record_every=20
    )
    np.testing.assert_allclose(run.mode_strengths[0], scale**depth, rtol=1e-10)
    for a, s_a in enumerate(s):
        predicted = vglib.saxe_mode_strength(run.times, s_a, scale**depth, depth)
        assert np.abs(run.mode_strengths[:, a] - predicted).max() < 0.02 * s_a
        assert run.learning_times()[a] == pytest.approx(
            vglib.saxe_learning_time(s_a, scale**depth, s_a / 2, depth), rel=0.01
        )
    assert run.loss[-1] < 1e-3 * run.loss[0]
    early = vglib.train_deep_linear(
        s, depth, 6, init="decoupled", scale=scale, lr=0.002, steps=8000, record_every=20, stop_fraction=0.9
    )
    assert len(early.times) < len(run.times)
    np.testing.assert_array_equal(early.learning_times(0.9), run.learning_times(0.9))


def test_train_deep_linear_gradient_matches_autograd():
    """One step of train_deep_linear is one gradient-descent step on 0.5 ||T - W_N ... W_1||^2."""
    run = vglib.train_deep_linear([2.0, 1.0], 3, 4, init="gaussian", scale=1.0, lr=1e-7, steps=1)
    # the loss falls by lr * ||grad||^2 to first order: check with autograd on the same weights
    rng = np.random.default_rng(0)
    from vglib.linear_dynamics import _orthogonal

    u, v = _orthogonal(4, rng), _orthogonal(4, rng)
    weights = [torch.tensor(rng.standard_normal((4, 4)) / 2.0, requires_grad=True) for _ in range(3)]
    teacher = torch.tensor((u[:, :2] * [2.0, 1.0]) @ v[:, :2].T)
    loss = 0.5 * ((weights[2] @ weights[1] @ weights[0] - teacher) ** 2).sum()
    loss.backward()
    squared = sum(float((w.grad**2).sum()) for w in weights)
    assert run.loss[0] == pytest.approx(loss.item(), rel=1e-12)
    assert (run.loss[0] - run.loss[1]) / 1e-7 == pytest.approx(squared, rel=1e-4)


def test_train_deep_linear_bad_input():
    with pytest.raises(ValueError, match="'decoupled', 'orthogonal', 'gaussian'"):
        vglib.train_deep_linear([1.0], 2, 4, init="he")
    with pytest.raises(ValueError, match="positive numbers"):
        vglib.train_deep_linear([1.0, -1.0], 2, 4)
    with pytest.raises(ValueError, match="positive numbers"):
        vglib.train_deep_linear([1.0] * 5, 2, 4)
    with pytest.raises(TypeError, match="depth"):
        vglib.train_deep_linear([1.0], 2.0, 4)
    with pytest.raises(ValueError, match="stop_fraction"):
        vglib.train_deep_linear([1.0], 2, 4, stop_fraction=1.0)
    run = vglib.train_deep_linear([1.0], 1, 2, steps=3)
    with pytest.raises(ValueError, match="fraction"):
        run.learning_times(1.5)


def test_saxe_loss_time_against_closed_forms_and_gradient_descent():
    """The time for the summed loss 0.5 sum_a (s_a - u_a)^2 to reach a level: depth 1 decays as
    e^(-2t) for every mode at once; depth 2 from the logistic curves; depth 3 against gradient
    descent from decoupled weights with one mode per unit of width (nothing to unlearn)."""
    s = np.array([3.0, 2.0, 1.5])
    start = 0.5 * float(np.sum((s - 0.2) ** 2))
    assert vglib.saxe_loss_time(s, 0.2, 0.1 * start, 1) == pytest.approx(0.5 * math.log(10.0), rel=1e-8)
    t = vglib.saxe_loss_time(s, 0.2, 0.1 * start, 2)
    u = np.array([vglib.saxe_mode_strength(t, s_a, 0.2) for s_a in s])
    assert 0.5 * float(np.sum((s - u) ** 2)) == pytest.approx(0.1 * start, rel=1e-7)
    assert vglib.saxe_loss_time(s, 0.2, 0.1 * start, 2, tau=3.0) == pytest.approx(3.0 * t, rel=1e-8)
    level = 0.1 * 0.5 * float(np.sum(s**2))
    run = vglib.train_deep_linear(
        s, 3, 3, init="decoupled", scale=0.8, lr=0.001, steps=20000, stop_loss=level
    )
    assert run.loss[-1] <= level < run.loss[-2]  # stopped at the first step below the level
    assert run.time_below(level) == pytest.approx(vglib.saxe_loss_time(s, 0.8**3, level, 3), rel=0.01)
    full = vglib.train_deep_linear(s, 3, 3, init="decoupled", scale=0.8, lr=0.001, steps=len(run.times) + 50)
    assert full.time_below(level) == run.time_below(level)
    assert math.isnan(full.time_below(1e-30))
    assert run.time_below(10 * run.loss[0]) == 0.0


def test_saxe_loss_time_and_stop_loss_bad_input():
    with pytest.raises(ValueError, match="u0"):
        vglib.saxe_loss_time([1.0, 2.0], 1.5, 0.01)
    with pytest.raises(ValueError, match="initial loss"):
        vglib.saxe_loss_time([1.0, 2.0], 0.5, 10.0)
    with pytest.raises(TypeError, match="depth"):
        vglib.saxe_loss_time([1.0, 2.0], 0.5, 0.1, 2.0)
    with pytest.raises(ValueError, match="stop_loss"):
        vglib.train_deep_linear([1.0], 2, 4, stop_loss=0.0)
    with pytest.raises(ValueError, match="level"):
        vglib.train_deep_linear([1.0], 1, 2, steps=3).time_below(-1.0)
