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
