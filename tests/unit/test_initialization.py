"""Initialisation schemes: variances, PyTorch's default, orthogonality, seeding."""

import math

import pytest
import torch
from torch import nn

import vglib
from vglib.initialization import init_layer, init_variance, init_weights, layer_seed

REQUIRED = {"default", "small", "xavier", "he", "orthogonal", "lecun"}


def test_registry_holds_the_required_schemes():
    assert REQUIRED <= set(vglib.INITS)


@pytest.mark.parametrize("scheme", vglib.INITS)
@pytest.mark.parametrize(("fan_in", "fan_out"), [(400, 400), (600, 300), (300, 600)])
def test_weight_variance_matches_the_documented_formula(scheme, fan_in, fan_out):
    layer = init_layer(nn.Linear(fan_in, fan_out), scheme, seed=1)
    expected = init_variance(scheme, fan_in, fan_out)
    # 1e5+ entries: the sample variance is within a few percent of the true one
    assert layer.weight.var().item() == pytest.approx(expected, rel=0.04)
    assert abs(layer.weight.mean().item()) < 3 * math.sqrt(expected / layer.weight.numel()) * 3


def test_default_is_pytorchs_own_init_and_not_he():
    seed = 7
    ours = init_layer(nn.Linear(64, 32), "default", seed=seed)
    torch.manual_seed(seed)
    theirs = nn.Linear(64, 32)  # PyTorch's constructor runs reset_parameters
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    # U(-1/sqrt(n), 1/sqrt(n)) has variance 1/(3n): a sixth of He's 2/n
    assert init_variance("default", 64, 32) == pytest.approx(init_variance("he", 64, 32) / 6)
    assert ours.weight.abs().max() <= 1 / math.sqrt(64)


def test_orthogonal_weights_are_orthogonal():
    w = init_layer(nn.Linear(50, 50), "orthogonal", seed=0).weight.double()
    torch.testing.assert_close(w @ w.T, torch.eye(50, dtype=torch.float64), atol=1e-5, rtol=0)


def test_schemes_other_than_default_zero_the_biases():
    for scheme in set(vglib.INITS) - {"default"}:
        assert torch.count_nonzero(init_layer(nn.Linear(8, 8), scheme, seed=0).bias) == 0


def test_init_weights_covers_linear_and_conv_layers_and_is_seeded():
    def model():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4, 2))

    a, b, c = model(), model(), model()
    init_weights(a, "he", seed=3)
    init_weights(b, "he", seed=3)
    init_weights(c, "he", seed=4)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
        if pa.ndim > 1:
            assert not torch.equal(pa, pc)
    conv_var = a[0].weight.var().item()
    assert conv_var == pytest.approx(2 / (3 * 3 * 3), rel=0.35)  # fan_in = 27, only 216 entries


def test_init_leaves_the_global_rng_alone():
    layer = nn.Linear(10, 10)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    init_weights(layer, "orthogonal", seed=0)
    torch.testing.assert_close(torch.rand(3), expected)


def test_layer_seeds_differ_by_index_and_seed():
    seeds = {layer_seed(s, i) for s in range(5) for i in range(50)}
    assert len(seeds) == 250


def test_unknown_scheme_names_the_valid_choices():
    with pytest.raises(ValueError, match="'he'.*'orthogonal'") as info:
        init_weights(nn.Linear(2, 2), "kaiming")
    assert "'kaiming'" in str(info.value)
    with pytest.raises(ValueError, match="valid choices"):
        init_variance("glorot", 2, 2)


def test_model_without_layers_is_rejected():
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        init_weights(nn.Sequential(nn.ReLU()), "he")
    with pytest.raises(TypeError, match="nn.Module"):
        init_weights("not a model", "he")
    with pytest.raises(TypeError, match="nn.Linear"):
        init_layer(nn.ReLU(), "he", seed=0)
