"""Where the chain-rule bound's slack comes from, the sigmoid's mean, and fits past underflow."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import vglib


def test_weight_gains_against_numpy_and_random_matrix_theory():
    net = vglib.build_gaussian_mlp(6, 200, "tanh", 1.0, seed=0)
    largest, typical = vglib.weight_gains(net)
    linears = [m for name, m in net.named_children() if name.startswith("linear")]
    assert largest.shape == typical.shape == (6,)
    for layer, top, rms in zip(linears, largest, typical, strict=True):
        w = layer.weight.detach().double().numpy()
        assert top == pytest.approx(np.linalg.svd(w, compute_uv=False)[0], rel=1e-12)
        # the root mean square gain of W^T over random directions, by Monte Carlo
        g = np.random.default_rng(0).standard_normal((200, 20_000))
        monte_carlo = np.sqrt(np.mean(np.sum((w.T @ g) ** 2, axis=0) / np.sum(g**2, axis=0)))
        assert rms == pytest.approx(monte_carlo, rel=0.01)
    # an n x n matrix of variance 1/n: largest singular value near 2 (Marchenko-Pastur edge), typical gain 1
    assert np.all(np.abs(largest - 2) < 0.15) and np.all(np.abs(typical - 1) < 0.03)


def test_weight_gains_rejects_other_models():
    with pytest.raises(TypeError, match="weight_gains takes a build_mlp model"):
        vglib.weight_gains(nn.Linear(3, 3))


def test_derivative_rms_is_the_root_mean_square_slope():
    net = vglib.build_gaussian_mlp(4, 32, "sigmoid", 4.0, seed=1)
    x, _ = vglib.probe_batch(32, batch_size=128, seed=1)
    stats = vglib.forward_statistics(net, x, "sigmoid")
    h, expected = x, []
    with torch.no_grad():
        for name, module in net.named_children():
            if name.startswith("linear"):
                z = module(h).double()
                s = torch.sigmoid(z)
                expected.append(float(torch.sqrt(torch.mean((s * (1 - s)) ** 2))))
            h = module(h)
    np.testing.assert_allclose(stats.derivative_rms, expected, rtol=1e-6)
    assert np.all(np.isnan(vglib.forward_statistics(net, x).derivative_rms))


def test_centred_sigmoid_net_is_a_tanh_net():
    """sigma(z) = 1/2 + tanh(z/2)/2: with b = -W 1/2 after the first layer, every pre-activation is
    twice that of a tanh net with the first layer's weights halved and the others quartered."""
    sig = vglib.centre_sigmoid_biases(vglib.build_gaussian_mlp(5, 24, "sigmoid", 16.0, seed=2))
    tanh = vglib.build_gaussian_mlp(5, 24, "tanh", 16.0, seed=2)
    linears = [m for m in tanh if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linears[0].weight.mul_(0.5)
        for layer in linears[1:]:
            layer.weight.mul_(0.25)
            layer.bias.zero_()
    x, _ = vglib.probe_batch(24, batch_size=16, seed=2)
    zs_sig, zs_tanh = [], []
    for model, zs in ((sig, zs_sig), (tanh, zs_tanh)):
        h = x.double()
        for module in model.double():
            h = module(h)
            if isinstance(module, nn.Linear):
                zs.append(h)
    for z_sig, z_tanh in zip(zs_sig[:-1], zs_tanh[:-1], strict=True):
        torch.testing.assert_close(z_sig, 2 * z_tanh, rtol=1e-5, atol=1e-5)  # biases summed in float32
    assert torch.all(sig.linear1.bias == 0), (
        "the first layer, which sees the centred input, is left as it was"
    )


def test_centring_removes_saturation_and_most_of_the_vanishing():
    x, y = vglib.probe_batch(128, batch_size=256, seed=0)
    plain = vglib.build_gaussian_mlp(20, 128, "sigmoid", 16.0, seed=0)
    centred = vglib.centre_sigmoid_biases(vglib.build_gaussian_mlp(20, 128, "sigmoid", 16.0, seed=0))
    sat_plain = vglib.forward_statistics(plain, x, "sigmoid").saturated_fraction[-1]
    sat_centred = vglib.forward_statistics(centred, x, "sigmoid").saturated_fraction[-1]
    assert sat_plain > 0.05 and sat_centred < 0.01
    # mean-field: zero biases give chi_1 = 0.40 (norm factor ~0.63); centred is critical tanh
    assert vglib.gradient_profile(plain, x, y).per_layer_factor() == pytest.approx(
        math.sqrt(vglib.chi_1("sigmoid", 16.0)), abs=0.05
    )
    assert vglib.gradient_profile(centred, x, y).per_layer_factor() > 0.9


def test_centre_sigmoid_biases_bad_input():
    with pytest.raises(ValueError, match="at least two nn.Linear"):
        vglib.centre_sigmoid_biases(nn.Sequential(nn.Linear(3, 3), nn.Sigmoid()))
    with pytest.raises(ValueError, match="to have a bias"):
        vglib.centre_sigmoid_biases(nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 1, bias=False)))


def test_fitted_factor_can_skip_the_layers_that_underflowed():
    net = vglib.build_mlp(50, 64, "tanh", "small", seed=0)
    x, y = vglib.probe_batch(64, batch_size=64, seed=0)
    profile = vglib.gradient_profile(net, x, y)
    norms = profile.activation_grad_norms
    assert norms[0] == 0.0 and norms[-1] > 0
    assert math.isnan(profile.fitted_factor())
    alive = norms[np.flatnonzero(norms == 0)[-1] + 1 :]
    # by hand: least squares of log norm against layer index over the surviving layers
    slope = np.polyfit(np.arange(alive.size), np.log(alive), 1)[0]
    assert profile.fitted_factor(skip_underflow=True) == pytest.approx(math.exp(-slope), rel=1e-9)
    # the typical gain of N(0, 0.01^2) weights on a 64-vector is sqrt(64) * 0.01 = 0.08
    assert profile.fitted_factor(skip_underflow=True) == pytest.approx(0.08, abs=0.005)
    healthy = vglib.gradient_profile(vglib.build_mlp(10, 64, "relu", "he", seed=0), x, y)
    assert healthy.fitted_factor(skip_underflow=True) == healthy.fitted_factor()
