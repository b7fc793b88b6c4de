"""build_mlp: structure, seeding, the depth-prefix property, and forward variance physics."""

import pytest
import torch
from torch import nn

import vglib


def linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("activation", vglib.ACTIVATIONS)
def test_structure_is_depth_blocks_then_a_head(activation):
    model = vglib.build_mlp(depth=4, width=16, activation=activation, in_features=3, out_features=5)
    names = [name for name, _ in model.named_children()]
    assert names == [f"{kind}{i}" for i in range(1, 5) for kind in ("linear", "act")] + ["head"]
    shapes = [tuple(m.weight.shape) for m in linears(model)]
    assert shapes == [(16, 3), (16, 16), (16, 16), (16, 16), (5, 16)]
    expected_act = type(vglib.get_activation(activation).make_module())
    assert all(isinstance(model.get_submodule(f"act{i}"), expected_act) for i in range(1, 5))
    assert model(torch.randn(2, 3)).shape == (2, 5)


def test_defaults_in_features_to_width_and_out_features_to_one():
    model = vglib.build_mlp(depth=1, width=8)
    assert model(torch.randn(4, 8)).shape == (4, 1)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b = (vglib.build_mlp(5, 32, "tanh", "xavier", seed=1) for _ in range(2))
    c = vglib.build_mlp(5, 32, "tanh", "xavier", seed=2)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        if pa.ndim > 1:  # xavier biases are all zero whatever the seed
            assert not torch.equal(pa, pc)


@pytest.mark.parametrize("init", vglib.INITS)
def test_a_deeper_model_starts_with_the_layers_of_a_shallower_one(init):
    shallow = vglib.build_mlp(3, 16, "relu", init, seed=5)
    deep = vglib.build_mlp(10, 16, "relu", init, seed=5)
    for name, param in shallow.named_parameters():
        assert torch.equal(param, deep.get_parameter(name)), name


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    vglib.build_mlp(3, 8, init="default")
    torch.testing.assert_close(torch.rand(2), expected)


@torch.no_grad()
def forward_second_moments(model, x):
    """E[h^2] of each block's output (after the activation)."""
    moments = []
    for name, module in model.named_children():
        x = module(x)
        if name.startswith("act"):
            moments.append(x.pow(2).mean().item())
    return torch.tensor(moments)


def test_relu_with_variance_one_over_n_halves_the_signal_per_layer_and_he_keeps_it():
    # He et al. (2015), eq. 10: E[h_l^2] = (n Var(W) / 2) E[h_{l-1}^2] for ReLU, zero biases.
    x = torch.randn(2048, 256)
    lecun = forward_second_moments(vglib.build_mlp(12, 256, "relu", "lecun", seed=0), x)
    he = forward_second_moments(vglib.build_mlp(12, 256, "relu", "he", seed=0), x)
    per_layer_lecun = (lecun[-1] / lecun[0]) ** (1 / 11)
    per_layer_he = (he[-1] / he[0]) ** (1 / 11)
    assert per_layer_lecun.item() == pytest.approx(0.5, abs=0.03)
    assert per_layer_he.item() == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"depth": 0}, ValueError, "depth must be an int >= 1; got 0"),
        ({"depth": -3}, ValueError, "depth must be an int >= 1"),
        ({"depth": 2.5}, TypeError, "depth must be an int"),
        ({"depth": True}, TypeError, "depth must be an int"),
        ({"width": 0}, ValueError, "width must be an int >= 1"),
        ({"activation": "swish"}, ValueError, "'sigmoid'.*'gelu'"),
        ({"init": "glorot"}, ValueError, "'xavier'"),
        ({"out_features": 0}, ValueError, "out_features"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, pattern):
    arguments = {"depth": 3, "width": 8, **kwargs}
    with pytest.raises(error, match=pattern):
        vglib.build_mlp(**arguments)


def test_gaussian_mlp_has_the_asked_variances():
    model = vglib.build_gaussian_mlp(3, 400, "tanh", 1.7, 0.3, seed=0)
    weights = model.linear2.weight
    assert weights.var().item() == pytest.approx(1.7 / 400, rel=0.03)
    assert model.linear2.bias.var().item() == pytest.approx(0.3, rel=0.2)
    no_bias = vglib.build_gaussian_mlp(3, 8, "tanh", 1.0)
    assert torch.count_nonzero(no_bias.linear1.bias) == 0
    with pytest.raises(ValueError, match="sigma_w2 > 0"):
        vglib.build_gaussian_mlp(3, 8, "tanh", 0.0)


def test_rezero_blocks_start_as_the_identity_and_learn_their_scalar_first():
    model = vglib.build_network(6, 16, "relu", "he", seed=0, skip="rezero", in_features=4)
    blocks = [m for m in model if isinstance(m, vglib.ReZeroBlock)]
    assert len(blocks) == 5 and all(b.alpha.item() == 0.0 for b in blocks)
    x = torch.randn(8, 4)
    first = model.act1(model.linear1(x))
    torch.testing.assert_close(model(x), model.head(first))  # every block passes h through unchanged
    loss = model(x).pow(2).mean()
    loss.backward()
    assert all(b.linear.weight.grad.abs().max() == 0 for b in blocks)  # alpha = 0 hides the branch
    assert all(b.alpha.grad != 0 for b in blocks)  # the scalar itself gets a gradient


def test_layerscale_blocks_scale_each_channel_from_a_small_start():
    model = vglib.build_network(
        4, 16, "gelu", "he", seed=0, skip="layerscale", residual_scale=1e-4, in_features=4
    )
    block = model.block2
    assert isinstance(block, vglib.LayerScaleBlock) and block.gamma.shape == (16,)
    torch.testing.assert_close(block.gamma.detach(), torch.full((16,), 1e-4))
    h = torch.randn(8, 16)
    torch.testing.assert_close(block(h), h + 1e-4 * block.branch(h))


@pytest.mark.parametrize("norm", ["rms", "group"])
def test_rms_and_group_norm_normalise_each_example(norm):
    model = vglib.build_network(3, 16, "relu", "he", seed=0, norm=norm, in_features=4)
    z = model.linear2(model.act1(model.norm1(model.linear1(torch.randn(8, 4) * 5))))
    out = model.norm2(z)
    if norm == "rms":  # no mean taken away: the mean square of each example is 1
        torch.testing.assert_close(out.pow(2).mean(1), torch.ones(8), atol=1e-4, rtol=0)
    else:  # 8 groups of 2 channels: each group has mean 0 within each example
        torch.testing.assert_close(out.view(8, 8, 2).mean(2), torch.zeros(8, 8), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'rms', 'group'"):
        vglib.build_network(3, 16, norm="weight")


def test_fixup_blocks_start_as_the_identity_yet_their_weights_learn_from_the_first_step():
    model = vglib.build_network(6, 16, "relu", "he", seed=0, skip="fixup", in_features=4)
    blocks = [m for m in model if isinstance(m, vglib.FixupBlock)]
    assert len(blocks) == 5 and all(torch.count_nonzero(b.linear.weight) == 0 for b in blocks)
    x = torch.randn(8, 4)
    first = model.act1(model.linear1(x))
    torch.testing.assert_close(model(x), model.head(first))  # a zero branch passes h through
    model(x).pow(2).mean().backward()
    # unlike ReZero's alpha = 0, the multiplier is 1: the zeroed weights get the branch's gradient
    assert all(b.linear.weight.grad.abs().max() > 0 for b in blocks)
    h = torch.randn(8, 16)
    with torch.no_grad():
        blocks[0].linear.weight.normal_()
        blocks[0].bias_in.fill_(0.3)
        blocks[0].bias_out.fill_(-0.2)
        blocks[0].multiplier.fill_(0.5)
    expected = h + 0.5 * blocks[0].linear(torch.relu(h + 0.3)) - 0.2
    torch.testing.assert_close(blocks[0](h), expected)


def test_noisy_batch_norm_shifts_each_unit_at_training_steps_only():
    torch.manual_seed(0)
    norm = vglib.NoisyBatchNorm(64)
    x = torch.randn(256, 64) * 3 + 1
    plain = torch.nn.functional.batch_norm(x, None, None, training=True)
    noisy = norm(x)
    # a training step: each unit's mean moved by N(0, s^2), its scale by U[1-s, 1+s]
    means, stds = noisy.mean(0), noisy.std(0, unbiased=False)
    s = vglib.models.NOISY_BN_STRENGTH
    assert 0.5 * s < means.std() < 1.5 * s and stds.min() >= 1 - s - 1e-3 and stds.max() <= 1 + s + 1e-3
    assert not torch.allclose(norm(x), noisy)  # drawn afresh at every step
    with torch.no_grad():  # held-out evaluation (vglib.train evaluates under no_grad): plain batch norm
        torch.testing.assert_close(norm(x), plain)
    norm.eval()  # running statistics, no noise
    expected = (x - norm.running_mean) / (norm.running_var + norm.eps).sqrt()
    torch.testing.assert_close(norm(x), expected)


def test_orthogonal_relu_init_is_orthogonal_with_the_relu_gain():
    w = vglib.init_layer(torch.nn.Linear(64, 64), "orthogonal_relu", seed=0).weight.double()
    torch.testing.assert_close(w @ w.T, 2 * torch.eye(64, dtype=torch.float64), atol=1e-5, rtol=0)
    assert vglib.init_variance("orthogonal_relu", 64, 64) == pytest.approx(2 / 64)
    # with ReLU it keeps the forward signal as He's init does (Saxe et al.'s gain for rectifiers)
    x = torch.randn(512, 64)
    model = vglib.build_network(20, 64, "relu", "orthogonal_relu", 0, in_features=64)
    h = x
    for i in range(1, 21):
        h = torch.relu(model.get_submodule(f"linear{i}")(h))
    assert 0.3 < h.pow(2).mean().item() / x.pow(2).mean().item() < 3
