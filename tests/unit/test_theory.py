"""Theory functions against hand computation and against measurement."""

import math

import numpy as np
import pytest
import torch

import vglib


def test_chain_rule_bound_by_hand_for_three_layers():
    model = vglib.build_mlp(3, 6, "sigmoid", "he", seed=0)
    norms = [
        torch.linalg.matrix_norm(model.get_submodule(f"linear{k}").weight.detach(), ord=2).item()
        for k in (2, 3)
    ]
    expected = [0.25 * norms[0] * 0.25 * norms[1], 0.25 * norms[1], 1.0]
    np.testing.assert_allclose(vglib.chain_rule_bound(model, "sigmoid"), expected, rtol=1e-6)
    np.testing.assert_allclose(vglib.chain_rule_bound(vglib.build_mlp(1, 4), "relu"), [1.0])


@pytest.mark.parametrize(
    ("activation", "init"), [("sigmoid", "xavier"), ("tanh", "orthogonal"), ("gelu", "he")]
)
def test_measured_gradients_never_exceed_the_chain_rule_bound(activation, init):
    model = vglib.build_mlp(20, 32, activation, init, seed=1)
    prof = vglib.gradient_profile(model, *vglib.probe_batch(32, batch_size=50, seed=1))
    measured = prof.activation_grad_norms / prof.activation_grad_norms[-1]
    assert np.all(measured <= vglib.chain_rule_bound(model, activation) * (1 + 1e-6))


@pytest.mark.parametrize(("init", "expected"), [("he", 1.0), ("lecun", 2**-0.5), ("default", 6**-0.5)])
def test_relu_gradient_factor_of_each_init(init, expected):
    assert vglib.relu_gradient_factor(init, 128) == pytest.approx(expected)


def test_relu_gradient_factor_matches_a_measurement_with_pytorch_defaults():
    depth, width = 30, 256
    prof = vglib.gradient_profile(
        vglib.build_mlp(depth, width, "relu", "default", seed=2),
        *vglib.probe_batch(width, batch_size=256, seed=2),
    )
    slope = np.polyfit(np.arange(depth), np.log(prof.activation_grad_norms), 1)[0]
    assert math.exp(-slope) == pytest.approx(vglib.relu_gradient_factor("default", width), abs=0.03)


def test_bad_input():
    with pytest.raises(TypeError, match="build_mlp"):
        vglib.chain_rule_bound(torch.nn.Linear(2, 2), "relu")
    with pytest.raises(ValueError, match="build_mlp"):
        vglib.chain_rule_bound(torch.nn.Sequential(torch.nn.ReLU()), "relu")
    with pytest.raises(ValueError, match="'lecun'"):
        vglib.relu_gradient_factor("glorot", 4)


def test_gaussian_expectation_against_moments():
    assert vglib.gaussian_expectation(lambda x: x**2, 2.5) == pytest.approx(2.5)
    assert vglib.gaussian_expectation(lambda x: x**4, 2.0) == pytest.approx(3 * 2.0**2)
    assert vglib.gaussian_expectation(lambda x: (x > 0).astype(float), 1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=">= 0"):
        vglib.gaussian_expectation(np.abs, -1.0)


def test_relu_variance_map_halves_with_lecun_and_keeps_with_he():
    np.testing.assert_allclose(
        vglib.variance_propagation("relu", 1.0, depth=5), [1, 0.5, 0.25, 0.125, 0.0625]
    )
    np.testing.assert_allclose(vglib.variance_propagation("relu", 2.0, depth=5), np.full(5, 2.0))
    np.testing.assert_allclose(vglib.predicted_gradient_norms("relu", 2.0, depth=4), np.ones(4))
    np.testing.assert_allclose(vglib.predicted_gradient_norms("relu", 1.0, depth=3), [0.5, 2**-0.5, 1.0])


def test_tanh_order_to_chaos_transition_at_sigma_w2_one():
    # sigma_b = 0: q* = 0 and chi_1 = sigma_w2 * tanh'(0)^2 = sigma_w2 in the ordered phase
    for sigma_w2 in (0.5, 0.9):
        assert vglib.fixed_point("tanh", sigma_w2) == pytest.approx(0.0, abs=1e-12)
        assert vglib.chi_1("tanh", sigma_w2) == pytest.approx(sigma_w2)
    assert vglib.chi_1("tanh", 1.0) == pytest.approx(1.0, abs=1e-9)
    assert vglib.gradient_depth_scale("tanh", 1.0) == math.inf
    assert vglib.chi_1("tanh", 1.5) > 1 and vglib.fixed_point("tanh", 1.5) > 0.1
    assert vglib.gradient_depth_scale("tanh", 0.5) == pytest.approx(-1 / math.log(0.5))
    assert vglib.gradient_depth_scale("tanh", 1.5) < 0  # chaotic: gradients grow


def test_fixed_point_is_a_fixed_point_of_the_map():
    q = vglib.fixed_point("tanh", 1.8, 0.1)
    assert vglib.variance_propagation("tanh", 1.8, 0.1, depth=2, q0=q / 1.8 - 0.1 / 1.8)[1] == pytest.approx(
        q
    )


@pytest.mark.parametrize("sigma_w2", [0.8, 1.0, 1.5])
def test_mean_field_predicts_a_wide_tanh_network(sigma_w2):
    depth, width = 30, 512
    x, y = vglib.probe_batch(width, batch_size=256, seed=3)
    model = vglib.build_gaussian_mlp(depth, width, "tanh", sigma_w2, seed=3)
    measured_q = vglib.forward_statistics(model, x).preactivation_variance
    np.testing.assert_allclose(
        measured_q, vglib.variance_propagation("tanh", sigma_w2, depth=depth), rtol=0.1
    )
    prof = vglib.gradient_profile(model, x, y)
    measured = prof.activation_grad_norms / prof.activation_grad_norms[-1]
    predicted = vglib.predicted_gradient_norms("tanh", sigma_w2, depth=depth)
    np.testing.assert_allclose(np.log(measured), np.log(predicted), atol=0.25)  # within ~30%


def test_relu_has_no_finite_fixed_point_off_criticality_but_a_constant_chi():
    assert vglib.fixed_point("relu", 3.0) == math.inf
    assert vglib.fixed_point("relu", 1.0) == pytest.approx(0.0, abs=1e-12)
    for sigma_w2 in (1.0, 2.0, 3.0):
        assert vglib.chi_1("relu", sigma_w2) == pytest.approx(sigma_w2 / 2)


def test_saturation_thresholds_in_closed_form():
    # sigmoid' = 1 / (4 cosh^2(z/2)) = 0.025 and tanh' = 1 - tanh^2 = 0.1
    assert vglib.saturation_threshold("sigmoid") == pytest.approx(2 * math.acosh(1 / (2 * math.sqrt(0.025))))
    assert vglib.saturation_threshold("tanh") == pytest.approx(math.atanh(math.sqrt(0.9)))
    with pytest.raises(ValueError, match=r"saturating activations: \['sigmoid', 'tanh'\]"):
        vglib.saturation_threshold("relu")


@pytest.mark.parametrize(("activation", "sigma_w2"), [("sigmoid", 16.0), ("tanh", 4.0), ("tanh", 1.0)])
def test_saturated_fraction_predicts_a_wide_layer(activation, sigma_w2):
    x, _ = vglib.probe_batch(256, batch_size=512, seed=4)
    model = vglib.build_gaussian_mlp(3, 256, activation, sigma_w2, seed=4)
    measured = vglib.forward_statistics(model, x, activation).saturated_fraction
    predicted = vglib.saturated_fraction(
        activation, vglib.variance_propagation(activation, sigma_w2, depth=3)
    )
    # For sigmoid layers each unit's pre-activation carries a fixed offset (sigmoid outputs have
    # mean ~0.5), so the 256 units, not the 512 x 256 values, are the independent samples:
    # allow three binomial standard errors over 256 units.
    tolerance = 3 * np.sqrt(predicted * (1 - predicted) / 256) + 1e-3
    assert np.all(np.abs(measured - predicted) <= tolerance), (measured, predicted)
    assert vglib.saturated_fraction("tanh", 0.0) == 0.0


def test_gaussian_expectation_is_exact_across_the_kink_at_zero():
    # E[relu(z)] = 1/sqrt(2 pi), E[relu'(z)^2] = 1/2, E[|z|^3] = 2 sqrt(2/pi): all non-smooth at 0
    relu = vglib.gaussian_expectation(lambda x: np.maximum(x, 0.0), 1.0)
    assert relu == pytest.approx(1 / math.sqrt(2 * math.pi), abs=1e-13)
    assert vglib.gaussian_expectation(lambda x: (x > 0).astype(float), 4.0) == pytest.approx(0.5, abs=1e-13)
    assert vglib.gaussian_expectation(lambda x: np.abs(x) ** 3, 1.0) == pytest.approx(
        2 * math.sqrt(2 / math.pi), abs=1e-12
    )
    # batch norm's gradient factor for ReLU (Yang et al. 2019): E[phi'^2] / Var[phi] = pi / (pi - 1)
    second = vglib.gaussian_expectation(lambda x: np.maximum(x, 0.0) ** 2, 1.0)
    assert 0.5 / (second - relu**2) == pytest.approx(math.pi / (math.pi - 1), abs=1e-12)


def test_gaussian_moments_and_normalised_chi_against_closed_forms():
    import math

    mean, var, slope2 = vglib.gaussian_moments("relu")  # z ~ N(0, 1): E[relu] = 1/sqrt(2 pi), E[relu^2] = 1/2
    assert mean == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-9)
    assert var == pytest.approx(0.5 - 1 / (2 * math.pi), rel=1e-9) and slope2 == pytest.approx(0.5, rel=1e-9)
    assert vglib.chi_normalised("relu", "batch") == pytest.approx(
        math.pi / (math.pi - 1), rel=1e-9
    )  # Yang et al.
    assert vglib.chi_normalised("relu", "layer") == pytest.approx(1.0, rel=1e-9)
    assert vglib.chi_normalised("linear", "batch") == pytest.approx(
        1.0, rel=1e-9
    )  # Poincare: equality if affine
    for name in ("tanh", "sigmoid", "gelu", "silu", "elu"):  # Gaussian Poincare: chi_BN >= 1
        assert vglib.chi_normalised(name, "batch") >= 1.0
    mean, var, _ = vglib.gaussian_moments("tanh", q=4.0)
    assert abs(mean) < 1e-12 and var == pytest.approx(
        vglib.variance_propagation("tanh", 1.0, q0=4.0, depth=2)[1]
    )
    with pytest.raises(ValueError, match="'batch', 'layer'"):
        vglib.chi_normalised("relu", "group")
    with pytest.raises(ValueError, match="q must be > 0"):
        vglib.gaussian_moments("relu", q=0.0)
