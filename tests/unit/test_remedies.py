"""The remedies' building blocks: build_network (norms, residual, highway), build_recurrent,
lsuv_init, PReLU, value clipping, and their physics."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import vglib


def test_plain_build_network_is_build_mlp():
    a = vglib.build_network(6, 16, "tanh", "xavier", seed=3, in_features=5)
    b = vglib.build_mlp(6, 16, "tanh", "xavier", seed=3, in_features=5)
    assert [n for n, _ in a.named_children()] == [n for n, _ in b.named_children()]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


VARIANTS = [("batch", "none"), ("layer", "none"), ("none", "residual"), ("batch", "residual"),
            ("none", "highway"), ("layer", "highway")]  # fmt: skip


@pytest.mark.parametrize(("norm", "skip"), VARIANTS)
def test_variants_share_the_plain_nets_weight_layers(norm, skip):
    plain = vglib.build_mlp(5, 16, "relu", "he", seed=1, in_features=4)
    net = vglib.build_network(5, 16, "relu", "he", seed=1, norm=norm, skip=skip, in_features=4)
    names = vglib.hidden_weight_layers(net)
    assert len(names) == 5
    for i, name in enumerate(names, start=1):
        assert torch.equal(net.get_submodule(name).weight, plain.get_submodule(f"linear{i}").weight)
    assert torch.equal(net.head.weight, plain.head.weight)
    assert net(torch.randn(8, 4)).shape == (8, 1)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d | nn.LayerNorm)]
    assert len(norms) == (0 if norm == "none" else 5)
    assert all(not list(m.parameters()) for m in norms)  # no affine parameters: same trainable weights


def test_bad_architecture_names_list_the_choices():
    with pytest.raises(ValueError, match="'none', 'batch', 'layer', 'rms', 'group'"):
        vglib.build_network(3, 8, norm="weight")
    with pytest.raises(ValueError, match="'none', 'residual', 'highway', 'rezero', 'layerscale'"):
        vglib.build_network(3, 8, skip="dense")
    with pytest.raises(ValueError, match="residual_scale"):
        vglib.build_network(3, 8, skip="residual", residual_scale=0.0)
    with pytest.raises(ValueError, match="depth"):
        vglib.build_network(0, 8)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_residual_forward_second_moment_grows_by_one_plus_scale_squared(scale):
    # h' = h + s W relu(h) with Var(W) = 2/n: E[(W relu h)^2] = 2 E[relu(h)^2] = E[h^2] for symmetric
    # h, and the cross term vanishes (W independent of h), so E[h'^2] = (1 + s^2) E[h^2] per block.
    torch.manual_seed(0)
    x = torch.randn(512, 256)
    model = vglib.build_network(20, 256, "relu", "he", skip="residual", residual_scale=scale)
    moments, h = [], x
    with torch.no_grad():
        for name, module in model.named_children():
            h = module(h)
            if name.startswith("block"):
                moments.append(float(h.pow(2).mean()))
    growth = np.exp(np.polyfit(np.arange(len(moments)), np.log(moments), 1)[0])
    assert growth == pytest.approx(1 + scale**2, rel=0.06)


def test_residual_blocks_keep_an_identity_path_for_the_gradient():
    # Jacobian I + s W D: with a tiny branch scale the gradient reaches the input untouched,
    # where the plain net with the same weights (PyTorch's default init) loses it.
    x, y = vglib.probe_batch(64, batch_size=128)
    plain = vglib.gradient_profile(vglib.build_network(30, 64, "relu", "default"), x, y)
    res = vglib.gradient_profile(
        vglib.build_network(30, 64, "relu", "default", skip="residual", residual_scale=0.01), x, y
    )
    assert plain.first_to_last_ratio() < 1e-8
    # block l's weight gradient is s (dL/dh_{l+1}) relu(h_l)^T: equal for block 2 and block 30
    # when the residual stream carries the gradient unchanged
    assert 0.9 < res.weight_grad_norms[1] / res.weight_grad_norms[-1] < 1.1


def test_highway_gate_bias_sets_how_close_blocks_start_to_the_identity():
    x = torch.randn(16, 32)
    shut = vglib.build_network(8, 32, "tanh", "xavier", skip="highway", gate_bias=-30.0)
    with torch.no_grad():
        after_first, before_head = shut[:3](x), shut[:-1](x)
        assert torch.allclose(after_first, before_head, atol=1e-6)  # T = sigmoid(-30): pure carry
        gates = [torch.sigmoid(b.gate(after_first)).mean() for b in shut if isinstance(b, vglib.HighwayBlock)]
    assert max(float(g) for g in gates) < 1e-10
    block = vglib.build_network(3, 32, "tanh", "xavier", skip="highway", gate_bias=-2.0).block2
    assert torch.all(block.gate.bias == -2.0)


def test_batch_norm_without_skips_makes_gradients_explode_at_init():
    # Yang et al. (2019): at init, a deep batch-normalised ReLU net multiplies the squared gradient
    # norm by pi / (pi - 1) per layer towards the input (large-batch limit), the norm by its root.
    x, y = vglib.probe_batch(256, batch_size=512)
    depth = 30
    bn = vglib.gradient_profile(vglib.build_network(depth, 256, "relu", "he", norm="batch"), x, y)
    plain = vglib.gradient_profile(vglib.build_network(depth, 256, "relu", "he"), x, y)
    slope = np.polyfit(np.arange(depth), np.log(bn.weight_grad_norms), 1)[0]
    assert math.exp(-slope) == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), abs=0.04)
    assert bn.first_to_last_ratio() > 50
    assert 0.05 < plain.first_to_last_ratio() < 20


def test_layer_norm_normalises_each_example():
    net = vglib.build_network(3, 32, "relu", "he", norm="layer", in_features=8)
    with torch.no_grad():
        z = net.norm1(net.linear1(torch.randn(4, 8)))
    assert torch.allclose(z.mean(dim=1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.var(dim=1, unbiased=False), torch.ones(4), atol=1e-3)


@pytest.mark.parametrize("kind", vglib.RECURRENT_KINDS)
def test_recurrent_models_take_sequences_and_are_seeded(kind):
    x = torch.randn(5, 7, 2)
    a, b, c = (
        vglib.build_recurrent(kind, 12, seed=0),
        vglib.build_recurrent(kind, 12, seed=0),
        vglib.build_recurrent(kind, 12, seed=1),
    )
    assert a(x).shape == (5, 1)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))
    with pytest.raises(ValueError, match=r"\(batch, time, 2\)"):
        a(torch.randn(5, 7, 3))


def test_recurrent_initialisations_are_the_documented_ones():
    lstm = vglib.build_recurrent("lstm", 8, forget_bias=1.0)
    forget = lstm.cell.bias_ih_l0[8:16] + lstm.cell.bias_hh_l0[8:16]
    assert torch.allclose(forget, torch.ones(8))
    irnn = vglib.build_recurrent("irnn", 8)
    assert torch.equal(irnn.recurrent.weight, torch.eye(8)) and irnn.activation == "relu"
    tanh = vglib.build_recurrent("tanh", 8)
    radius = torch.linalg.eigvals(tanh.recurrent.weight.detach().double()).abs().max()
    assert float(radius) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="'tanh', 'irnn', 'lstm', 'gru'"):
        vglib.build_recurrent("transformer", 8)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lsuv_gives_every_layer_unit_output_variance(activation):
    x, _ = vglib.probe_batch(32, batch_size=256)
    model = vglib.build_mlp(12, 64, activation, "small", in_features=32)  # a bad start on purpose
    vglib.lsuv_init(model, x, tol=0.02)
    outputs = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        for _, m in vglib.weight_layers(model)
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    variances = [float(z.var()) for z in outputs]
    assert variances == pytest.approx([1.0] * len(variances), abs=0.03)


def test_lsuv_leaves_batch_norm_statistics_alone_and_rejects_bad_input():
    model = vglib.build_network(4, 16, "relu", "he", norm="batch", in_features=8)
    before = [b.clone() for b in model.buffers()]
    vglib.lsuv_init(model, torch.randn(64, 8))
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))
    with pytest.raises(TypeError, match="floating-point"):
        vglib.lsuv_init(model, [[1.0] * 8])
    with pytest.raises(ValueError, match="max_iter"):
        vglib.lsuv_init(model, torch.randn(4, 8), max_iter=0)


def test_prelu_starts_as_a_leaky_relu_with_slope_a_quarter():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    slope = vglib.activation_derivative("prelu", x)
    assert torch.allclose(slope[x < 0], torch.full_like(slope[x < 0], 0.25))
    assert torch.allclose(slope[x > 0], torch.ones_like(slope[x > 0]))
    prelus = [m for m in vglib.build_mlp(3, 4, "prelu").modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 3 and all(p.weight.requires_grad for p in prelus)  # the slope is learned


def _one_sgd_step(**clip):
    """The parameter moves of one plain SGD step (lr 0.1) on a fixed batch."""
    model = vglib.build_mlp(3, 16, "tanh", "xavier", seed=0, in_features=4)
    before = [p.detach().clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=generator), 10 * torch.randn(32, 1, generator=generator)
    vglib.train(model, x, y, steps=1, lr=0.1, batch_size=32, optimizer="sgd", **clip)
    return [(p.detach() - b) for p, b in zip(model.parameters(), before, strict=True)]


def test_value_clipping_bounds_every_component_and_norm_clipping_the_global_norm():
    raw = _one_sgd_step()
    assert max(float(m.abs().max()) for m in raw) > 0.1 * 0.05  # the unclipped step is larger
    assert math.sqrt(sum(float(m.pow(2).sum()) for m in raw)) > 0.1 * 0.5
    value = _one_sgd_step(clip_value=0.05)
    largest = max(float(m.abs().max()) for m in value)
    assert largest == pytest.approx(0.1 * 0.05, rel=1e-4)  # lr * clip_value, reached
    norm = _one_sgd_step(clip_norm=0.5)
    total = math.sqrt(sum(float(m.pow(2).sum()) for m in norm))
    assert total == pytest.approx(0.1 * 0.5, rel=1e-3)
    with pytest.raises(ValueError, match="clip_value"):
        vglib.train(
            vglib.build_mlp(1, 4), torch.randn(4, 4), torch.randn(4, 1), steps=1, lr=0.1, clip_value=0
        )


def test_norm_clipping_leaves_the_first_to_last_gradient_ratio_exactly_as_it_was():
    # clipping multiplies every gradient by one factor <= 1: it cannot lift a vanishing layer
    x, y = vglib.probe_batch(16, batch_size=64)
    model = vglib.build_mlp(12, 32, "sigmoid", "default", in_features=16)
    loss = F.mse_loss(model(x), y)
    grads = torch.autograd.grad(loss, [model.linear1.weight, model.linear12.weight])
    ratio = float(grads[0].norm() / grads[1].norm())
    model.linear1.weight.grad, model.linear12.weight.grad = grads[0].clone(), grads[1].clone()
    nn.utils.clip_grad_norm_([model.linear1.weight, model.linear12.weight], 1e-6)
    clipped = float(model.linear1.weight.grad.norm() / model.linear12.weight.grad.norm())
    assert clipped == pytest.approx(ratio, rel=1e-5)
    assert float(model.linear1.weight.grad.norm()) < float(grads[0].norm())


def test_held_out_data_never_enters_batch_norm_running_statistics():
    model = vglib.build_network(2, 8, "relu", "he", norm="batch", in_features=4)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    x_far = torch.randn(64, 4) + 100.0  # held-out inputs far from the training ones
    vglib.train(model, x, y, steps=3, lr=1e-3, x_eval=x_far, y_eval=y, eval_every=1)
    reference = vglib.build_network(2, 8, "relu", "he", norm="batch", in_features=4)
    vglib.train(reference, x, y, steps=3, lr=1e-3, eval_every=1)
    for a, b in zip(model.buffers(), reference.buffers(), strict=True):
        assert torch.equal(a, b)


def test_saved_for_backward_memory_grows_with_the_batch_and_with_norm_layers():
    x, y = torch.randn(256, 16), torch.randn(256, 1)
    plain = vglib.build_network(10, 64, "relu", "he", in_features=16)
    bn = vglib.build_network(10, 64, "relu", "he", norm="batch", in_features=16)
    small = vglib.saved_for_backward_megabytes(plain, x[:128], y[:128])
    large = vglib.saved_for_backward_megabytes(plain, x, y)
    # each of the 10 blocks keeps at least its (batch x 64) float32 input: a lower bound
    assert large * 2**20 >= 10 * 256 * 64 * 4
    # activations scale with the batch, the saved weight matrices do not: 2 small - large = weights
    weights = sum(m.weight.numel() * 4 for _, m in vglib.weight_layers(plain)) / 2**20
    assert 2 * small - large == pytest.approx(weights, rel=0.1)
    assert vglib.saved_for_backward_megabytes(bn, x, y) > 1.3 * large
    before = [b.clone() for b in bn.buffers()]
    vglib.saved_for_backward_megabytes(bn, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, bn.buffers(), strict=True))
    with pytest.raises(TypeError, match="torch.Tensor"):
        vglib.saved_for_backward_megabytes(plain, x.numpy(), y)


def _grad_norm_run(**clip):
    model = vglib.build_mlp(3, 16, "tanh", "xavier", seed=0, in_features=4)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=generator), 10 * torch.randn(32, 1, generator=generator)
    return vglib.train(model, x, y, steps=5, lr=0.05, batch_size=8, optimizer="sgd", seed=3,
                       record_grad_norm=True, **clip)  # fmt: skip


def test_the_gradient_norm_is_recorded_before_clipping():
    free = _grad_norm_run()
    assert free.grad_norm.shape == (5,)
    # the first step's norm, by hand: the same network and the minibatch train draws first
    model = vglib.build_mlp(3, 16, "tanh", "xavier", seed=0, in_features=4)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=generator), 10 * torch.randn(32, 1, generator=generator)
    index = torch.randint(0, 32, (8,), generator=vglib._seed.generator(3))
    F.mse_loss(model(x[index]), y[index]).backward()
    by_hand = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    assert free.grad_norm[0] == pytest.approx(by_hand, rel=1e-5)
    clipped = _grad_norm_run(clip_norm=0.01)
    assert clipped.grad_norm[0] == pytest.approx(free.grad_norm[0], rel=1e-6)  # before clipping
    assert (clipped.grad_norm > 0.01).all()  # the threshold acted at every step, the record shows why
    unrecorded = vglib.train(vglib.build_mlp(1, 4), torch.randn(4, 4), torch.randn(4, 1), steps=1, lr=0.1)
    assert unrecorded.grad_norm is None


def test_the_recorded_gradient_norm_stays_finite_where_float32_squares_overflow():
    model = vglib.build_mlp(1, 4, "tanh", "xavier", seed=0, in_features=2)
    x, y = torch.ones(8, 2), torch.full((8, 1), 1e21)  # gradients near 1e21: finite in float32, squares not
    history = vglib.train(
        model, x, y, steps=1, lr=1e-30, batch_size=8, optimizer="sgd", record_grad_norm=True
    )
    fresh = vglib.build_mlp(1, 4, "tanh", "xavier", seed=0, in_features=2)
    F.mse_loss(fresh(x), y).backward()
    assert math.isinf(
        float(nn.utils.get_total_norm([p.grad for p in fresh.parameters()]))
    )  # float32 overflows
    by_hand = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in fresh.parameters()))
    assert math.isfinite(history.grad_norm[0]) and history.grad_norm[0] == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("eval_mode", [True, False])
def test_batch_norm_is_evaluated_on_running_statistics_unless_asked_otherwise(eval_mode):
    x, y = vglib.teacher_student(256, seed=0)
    x_eval, y_eval = vglib.teacher_student(64, seed=1)
    model = vglib.build_network(4, 16, "relu", "he", norm="batch", in_features=16, seed=0)
    history = vglib.train(model, x, y, steps=30, lr=0.01, optimizer="sgd", momentum=0.9, x_eval=x_eval,
                          y_eval=y_eval, eval_every=30, eval_mode=eval_mode)  # fmt: skip
    assert model.training and all(m.training for m in model.modules())  # modes left as they were
    with torch.no_grad():
        model.eval()
        on_running = F.mse_loss(model(x_eval), y_eval).item()
        model.train()
        on_batch = F.mse_loss(model(x_eval), y_eval).item()  # (changes the running stats: last)
    assert abs(on_running - on_batch) > 1e-4  # the modes differ, so the test can tell them apart
    assert history.final_eval_loss == pytest.approx(on_running if eval_mode else on_batch, rel=1e-6)
