"""gradient_profile: agreement with plain autograd, leaving the model alone, physics, bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import vglib


def batch(in_features, out_features=1, n=64, seed=0):
    return vglib.probe_batch(in_features, out_features, batch_size=n, seed=seed)


def test_profile_matches_a_plain_backward_pass():
    model = vglib.build_mlp(6, 20, "tanh", "xavier", seed=0, in_features=7, out_features=3)
    x, y = batch(7, 3)
    prof = vglib.gradient_profile(model, x, y)

    # the same computation by hand: run the blocks one by one, keeping each block's output
    reference = vglib.build_mlp(6, 20, "tanh", "xavier", seed=0, in_features=7, out_features=3)
    h, block_outputs = x, []
    for name, module in reference.named_children():
        h = module(h)
        if name.startswith("act"):
            h.retain_grad()
            block_outputs.append(h)
    loss = F.mse_loss(h, y)
    loss.backward()

    assert prof.layer_names == tuple(f"linear{i}" for i in range(1, 7))
    assert prof.head_name == "head"
    weight_norms = [reference.get_submodule(f"linear{i}").weight.grad.norm() for i in range(1, 7)]
    np.testing.assert_allclose(prof.weight_grad_norms, weight_norms, rtol=1e-5)
    np.testing.assert_allclose(prof.activation_grad_norms, [h.grad.norm() for h in block_outputs], rtol=1e-5)
    assert prof.head_weight_grad_norm == pytest.approx(reference.head.weight.grad.norm().item())
    assert prof.loss == pytest.approx(loss.item())
    assert prof.depth == 6
    assert prof.weight_grad_norms.dtype == np.float64
    assert model.linear1.weight.grad is None  # the profiled model itself got no .grad


def test_the_model_is_left_exactly_as_it_was():
    model = nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 8),
        nn.Tanh(), nn.Linear(8, 1),
    )  # fmt: skip
    model.train()
    model[4].weight.grad = torch.full_like(model[4].weight, 3.0)  # a .grad the user had
    model[6].bias.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch(5)
    vglib.gradient_profile(model, x, y)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # weights and running statistics
    assert model[0].weight.grad is None
    assert torch.equal(model[4].weight.grad, torch.full_like(model[4].weight, 3.0))
    assert model.training and not model[6].bias.requires_grad
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_any_module_with_linear_or_conv_layers_can_be_profiled():
    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 6 * 6, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.relu(self.conv2(x))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    x, labels = torch.randn(8, 1, 12, 12), torch.randint(0, 10, (8,))
    prof = vglib.gradient_profile(SmallCNN(), x, labels)
    assert prof.layer_names == ("conv1", "conv2")
    assert prof.head_name == "fc"
    assert np.all(prof.weight_grad_norms > 0) and np.all(prof.activation_grad_norms > 0)


def test_layers_are_ordered_by_execution_not_registration():
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(4, 1)
            self.inp = nn.Linear(3, 4)

        def forward(self, x):
            return self.out(torch.relu(self.inp(x)))

    prof = vglib.gradient_profile(Reversed(), *batch(3))
    assert prof.layer_names == ("inp",) and prof.head_name == "out"


def test_frozen_layers_report_nan_and_unaffected_layers_zero():
    model = vglib.build_mlp(3, 8)
    model.linear2.weight.requires_grad_(False)
    prof = vglib.gradient_profile(model, *batch(8))
    assert np.isnan(prof.weight_grad_norms[1])
    assert np.isfinite(prof.weight_grad_norms[[0, 2]]).all()


def test_deep_sigmoid_gradients_vanish_within_the_derivative_bound():
    # dL/dh_l = W_{l+1}^T (phi'(z_{l+1}) * dL/dh_{l+1}) and phi' <= 1/4, so
    # ||dL/dh_1|| / ||dL/dh_L|| <= prod_{k=2..L} ||W_k||_2 / 4.
    depth = 30
    model = vglib.build_mlp(depth, 128, "sigmoid", "xavier", seed=0)
    prof = vglib.gradient_profile(model, *batch(128, n=128))
    spectral = [
        torch.linalg.matrix_norm(model.get_submodule(f"linear{k}").weight.detach().double(), ord=2)
        for k in range(2, depth + 1)
    ]
    bound = float(np.prod([0.25 * float(s) for s in spectral]))
    measured = prof.activation_grad_norms[0] / prof.activation_grad_norms[-1]
    assert 0 < measured <= bound
    assert bound < 1e-6
    assert prof.first_to_last_ratio() < 1e-10  # many orders of magnitude


@pytest.mark.parametrize("seed", range(3))
def test_relu_he_keeps_gradients_while_variance_one_over_n_shrinks_them(seed):
    # Backward analogue of He et al. (2015), eq. 14: each ReLU layer multiplies
    # E||dL/dh||^2 by n Var(W) / 2: 1 with He init, 1/2 with Var(W) = 1/n ("lecun").
    depth, width = 30, 256
    x, y = batch(width, n=256, seed=seed)
    he = vglib.gradient_profile(vglib.build_mlp(depth, width, "relu", "he", seed=seed), x, y)
    lecun = vglib.gradient_profile(vglib.build_mlp(depth, width, "relu", "lecun", seed=seed), x, y)

    he_ratio = he.activation_grad_norms[0] / he.activation_grad_norms[-1]
    assert 0.5 < he_ratio < 2.0

    layers = np.arange(depth)
    slope = np.polyfit(layers, np.log(lecun.activation_grad_norms), 1)[0]
    per_layer_factor = np.exp(-slope)  # from the output side towards the input
    assert per_layer_factor == pytest.approx(2**-0.5, abs=0.03)
    assert lecun.fitted_factor() == pytest.approx(per_layer_factor, rel=1e-12)


def test_cross_entropy_for_class_targets_and_custom_losses():
    model = vglib.build_mlp(2, 8, out_features=4)
    x = torch.randn(16, 8)
    labels = torch.arange(16) % 4
    prof = vglib.gradient_profile(model, x, labels)
    assert prof.loss == pytest.approx(F.cross_entropy(model(x), labels).item(), rel=1e-6)
    l1 = vglib.gradient_profile(model, x, torch.zeros(16, 4), loss_fn=F.l1_loss)
    assert l1.loss == pytest.approx(model(x).abs().mean().item(), rel=1e-6)


def test_wrong_input_shape_names_the_expected_shape():
    model = vglib.build_mlp(3, 16, in_features=10)
    expected = r"inside layer 'linear1' \(Linear, which expects inputs of shape \(\.\.\., 10\)\)"
    with pytest.raises(ValueError, match=expected):
        vglib.gradient_profile(model, torch.randn(4, 7), torch.randn(4, 1))
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(8, 1))
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        vglib.gradient_profile(conv, torch.randn(2, 1, 4, 4), torch.randn(2, 1))


def test_wrong_target_shape_names_the_expected_shape():
    model = vglib.build_mlp(2, 8, out_features=3)
    with pytest.raises(ValueError, match=r"need the output's shape"):
        vglib.gradient_profile(model, torch.randn(4, 8), torch.randn(4))
    with pytest.raises(ValueError, match=r"need shape \(4,\)"):
        vglib.gradient_profile(model, torch.randn(4, 8), torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        vglib.gradient_profile(model, torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))


def test_bad_models_and_inputs_raise_clear_errors():
    x, y = batch(4)
    with pytest.raises(ValueError, match=r"no layers to measure.*nn\.Linear"):
        vglib.gradient_profile(nn.Sequential(nn.ReLU()), x, y)
    with pytest.raises(ValueError, match="at least two layers"):
        vglib.gradient_profile(nn.Linear(4, 1), x, y)
    with pytest.raises(TypeError, match="nn.Module"):
        vglib.gradient_profile(lambda t: t, x, y)
    with pytest.raises(TypeError, match=r"torch\.as_tensor"):
        vglib.gradient_profile(vglib.build_mlp(2, 4), x.numpy(), y)
    with pytest.raises(ValueError, match="non-empty batch"):
        vglib.gradient_profile(vglib.build_mlp(2, 4), torch.randn(0, 4), y)

    shared = nn.Linear(4, 4)
    looped = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(4, 1))
    with pytest.raises(ValueError, match="called more than once"):
        vglib.gradient_profile(looped, x, y)
    assert not shared._forward_pre_hooks  # hooks removed even on error


def test_first_to_last_ratio_handles_zeros():
    def profile(norms):
        return vglib.GradientProfile(
            ("a", "b"), np.array(norms), np.ones(2), "head", 1.0, 0.0
        )  # fmt: skip

    assert profile([1e-3, 1.0]).first_to_last_ratio() == pytest.approx(1e-3)
    assert profile([0.0, 1.0]).first_to_last_ratio() == 0.0
    assert profile([1.0, 0.0]).first_to_last_ratio() == float("inf")
    assert np.isnan(profile([0.0, 0.0]).first_to_last_ratio())


def test_per_layer_factor_is_the_geometric_mean_step():
    def profile(norms):
        norms = np.array(norms, dtype=np.float64)
        return vglib.GradientProfile(tuple("abcd"[: len(norms)]), norms, norms, "head", 1.0, 0.0)

    assert profile([1e-3, 1e-2, 1e-1, 1.0]).per_layer_factor() == pytest.approx(0.1)
    assert profile([8.0, 4.0, 2.0, 1.0]).per_layer_factor() == pytest.approx(2.0)
    assert np.isnan(profile([1.0]).per_layer_factor())
    assert np.isnan(profile([1.0, 0.0]).per_layer_factor())
    assert profile([0.0, 1.0]).per_layer_factor() == 0.0
    # the fitted factor: equal to the two-end one on an exact geometric sequence, not fooled by
    # one noisy end layer, NaN where a norm has no logarithm
    assert profile([8.0, 4.0, 2.0, 1.0]).fitted_factor() == pytest.approx(2.0)
    noisy_end = profile([8.0 * 10, 4.0, 2.0, 1.0])
    assert noisy_end.per_layer_factor() == pytest.approx(80 ** (1 / 3))
    assert 2.0 < noisy_end.fitted_factor() < noisy_end.per_layer_factor()
    assert np.isnan(profile([1.0]).fitted_factor()) and np.isnan(profile([1.0, 0.0]).fitted_factor())


def test_forward_statistics_of_saturated_and_dead_units():
    x = torch.randn(128, 32)
    big = vglib.build_gaussian_mlp(5, 32, "sigmoid", 40.0, seed=0)  # huge pre-activations
    small = vglib.build_gaussian_mlp(5, 32, "sigmoid", 0.01, seed=0)
    # layer 1: z ~ N(0, 40); sigmoid'(z) < 0.1 * 0.25 where |z| > t, sigmoid(t)(1 - sigmoid(t)) = 0.025
    t = 2 * math.acosh(1 / (2 * math.sqrt(0.025)))  # sigma(1-sigma) = 1 / (4 cosh^2(z/2))
    expected = math.erfc(t / math.sqrt(40) / math.sqrt(2))  # P(|z| > t)
    fractions = vglib.forward_statistics(big, x, "sigmoid").saturated_fraction
    assert fractions[0] == pytest.approx(expected, abs=0.03)
    assert fractions.min() > 0.3
    assert vglib.forward_statistics(small, x, "sigmoid").saturated_fraction.max() == 0.0

    relu = vglib.build_mlp(3, 16, "relu", "he", seed=0)
    with torch.no_grad():
        relu.linear2.bias.fill_(-100.0)  # every unit of layer 2 is off for every input
    stats = vglib.forward_statistics(relu, torch.randn(64, 16), "relu")
    assert stats.dead_fraction[1] == 1.0 and stats.dead_fraction[0] < 0.5
    assert stats.layer_names == ("linear1", "linear2", "linear3")

    plain = vglib.forward_statistics(relu, torch.randn(64, 16))
    assert np.isnan(plain.saturated_fraction).all() and np.isfinite(plain.preactivation_variance).all()


def test_forward_statistics_rejects_bad_input():
    with pytest.raises(ValueError, match="does not fit"):
        vglib.forward_statistics(vglib.build_mlp(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="no layers"):
        vglib.forward_statistics(nn.Sequential(nn.Tanh()), torch.randn(3, 5))
    with pytest.raises(ValueError, match="valid choices"):
        vglib.forward_statistics(vglib.build_mlp(2, 4), torch.randn(3, 4), "swish")


def test_jacobian_singular_values_match_the_product_of_layer_jacobians():
    model = vglib.build_mlp(2, 6, "tanh", "xavier", seed=0)
    x = torch.randn(6, dtype=torch.float32)
    w1, w2 = model.linear1.weight.detach().double(), model.linear2.weight.detach().double()
    z1 = w1 @ x.double() + model.linear1.bias.detach().double()
    z2 = w2 @ torch.tanh(z1) + model.linear2.bias.detach().double()
    jacobian = torch.diag(1 - torch.tanh(z2) ** 2) @ w2 @ torch.diag(1 - torch.tanh(z1) ** 2) @ w1
    expected = torch.linalg.svdvals(jacobian).numpy()
    np.testing.assert_allclose(vglib.jacobian_singular_values(model[:-1], x), expected, rtol=1e-4)


def test_orthogonal_linear_products_are_isometries_and_gaussian_ones_spread():
    # Saxe et al. (2013): a product of orthogonal matrices is orthogonal, all singular values 1;
    # a product of Gaussian matrices with variance 1/n keeps E[s^2] = 1 but spreads the spectrum.
    x = torch.randn(128)
    orthogonal = vglib.jacobian_singular_values(vglib.build_mlp(30, 128, "linear", "orthogonal")[:-1], x)
    np.testing.assert_allclose(orthogonal, np.ones(128), atol=1e-4)
    spreads = []
    for depth in (1, 5, 20):
        s = vglib.jacobian_singular_values(vglib.build_mlp(depth, 128, "linear", "lecun", seed=1)[:-1], x)
        assert (s**2).mean() == pytest.approx(1.0, abs=0.25)
        spreads.append(s[0] / s[len(s) // 2])  # largest over median
    assert spreads[0] < spreads[1] < spreads[2]


def test_jacobian_is_exact_in_float64_where_float32_is_rounding_noise():
    """A deep Gaussian linear product: its small singular values, from the product of the weights in
    float64, are what the probe returns; float32 gets them wrong by orders of magnitude (the noise
    floor is ~1e-7 of the largest)."""
    model = vglib.build_mlp(50, 64, "linear", "lecun", seed=0)
    product = torch.eye(64, dtype=torch.float64)
    for layer in model[:-1]:
        if isinstance(layer, torch.nn.Linear):
            product = layer.weight.detach().double() @ product
    exact = torch.linalg.svdvals(product).numpy()
    x = torch.randn(64)
    s64 = vglib.jacobian_singular_values(model[:-1], x)
    resolved = exact > 1e-10 * exact[0]  # float64's own floor is ~1e-16 of the largest
    np.testing.assert_allclose(s64[resolved], exact[resolved], rtol=1e-5)
    s32 = vglib.jacobian_singular_values(model[:-1], x, dtype=torch.float32)
    small = resolved & (exact < 4e-9 * exact[0])  # resolved in float64, far below float32's floor
    assert small.sum() >= 3
    assert np.all(np.abs(np.log10(s32[small] / exact[small])) > 1)
    assert model[0].weight.dtype == torch.float32  # the model itself is not converted
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        vglib.jacobian_singular_values(model[:-1], x, dtype=torch.float16)


def test_jacobian_rejects_batches():
    model = vglib.build_mlp(2, 4)
    with pytest.raises(ValueError, match="one example"):
        vglib.jacobian_singular_values(model, torch.randn(3, 4))
    with pytest.raises(TypeError, match="nn.Module"):
        vglib.jacobian_singular_values(lambda t: t, torch.randn(4))


def test_fitted_growth_recovers_the_factor_of_a_noisy_geometric_sequence():
    assert vglib.fitted_growth([3.0 * 0.5**k for k in range(10)]) == pytest.approx(0.5, rel=1e-12)
    # a transient at the start is skipped with start; the indices keep their positions
    assert vglib.fitted_growth([100.0, 1.0, 2.0, 4.0, 8.0], start=1) == pytest.approx(2.0, rel=1e-12)
    # multiplicative noise of +-10 % around 1.3^k over 40 steps: the fit is within 1 %
    noise = np.random.default_rng(0).uniform(0.9, 1.1, 40)
    assert vglib.fitted_growth(1.3 ** np.arange(40) * noise) == pytest.approx(1.3, rel=1e-2)
    # and matches the gradient profile's end-to-end factor on a clean ReLU net (He init: ~1)
    x, y = vglib.probe_batch(64, 1, 128)
    prof = vglib.gradient_profile(vglib.build_mlp(20, 64, "relu", "he"), x, y)
    fitted = 1 / vglib.fitted_growth(prof.activation_grad_norms)  # towards the input
    assert fitted == pytest.approx(prof.per_layer_factor(), rel=0.05)


def test_fitted_growth_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="at least 2"):
        vglib.fitted_growth([1.0])
    with pytest.raises(ValueError, match="at least 2"):
        vglib.fitted_growth([1.0, 2.0, 3.0], start=2)
    with pytest.raises(ValueError, match="positive and finite"):
        vglib.fitted_growth([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="positive and finite"):
        vglib.fitted_growth([1.0, float("nan")])


def test_covariate_shift_measures_how_far_each_layer_input_moves():
    torch.manual_seed(0)
    model = vglib.build_network(2, 16, "relu", "he", 0, in_features=8)  # linear1, linear2, head
    x = torch.randn(128, 8)

    def inputs():  # what linear2 and the head see: the two layers measured
        h1 = torch.relu(model.linear1(x))
        return [h1.double(), torch.relu(model.linear2(h1)).double()]

    shift = vglib.CovariateShift(x, every=10)
    shift(1, model)
    shift(5, model)  # not a multiple of every: no look
    shift(10, model)
    assert shift.steps == [10] and shift.shifts == [0.0]  # nothing changed
    with torch.no_grad():
        before = inputs()
        model.linear1.bias += 0.5
        after = inputs()
    spreads = [b.std(0, unbiased=False) for b in before]
    moves = [(a.mean(0) - b.mean(0)).abs() for a, b in zip(after, before, strict=True)]
    expected = np.mean([float((m[s > 0] / s[s > 0]).median()) for m, s in zip(moves, spreads, strict=True)])
    shift(20, model)
    assert shift.steps == [10, 20] and shift.shifts[1] == pytest.approx(expected, rel=1e-6) and expected > 0.1
    assert shift.mean_shift == pytest.approx(expected / 2)


def test_covariate_shift_sees_injected_noise_but_not_plain_batch_norm_on_a_fixed_model():
    x = torch.randn(256, 8)
    plain_bn = vglib.build_network(4, 16, "relu", "he", 0, norm="batch", in_features=8)
    noisy = vglib.build_network(4, 16, "relu", "he", 0, norm="noisy_batch", in_features=8)
    for model, expected_zero in ((plain_bn, True), (noisy, False)):
        shift = vglib.CovariateShift(x, every=1)
        before = [b.clone() for b in model.buffers()]
        shift(1, model)
        shift(2, model)
        assert (shift.shifts[0] == 0.0) is expected_zero
        assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))  # stats kept
    with pytest.raises(ValueError, match="two looks"):
        _ = vglib.CovariateShift(x).mean_shift


def test_train_calls_back_after_every_update():
    seen = []
    model = vglib.build_mlp(2, 8, "tanh", "xavier", 0, in_features=4)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    vglib.train(model, x, y, steps=5, lr=1e-2, callback=lambda step, m: seen.append((step, m is model)))
    assert seen == [(k, True) for k in range(1, 6)]


@pytest.mark.parametrize(
    "clip",
    [{"clip_norm": 1e-2}, {"clip_value": 1e-3}, {"clip_norm": 0.05, "clip_value": 2e-3}, {"clip_norm": 1e6}],
)
def test_clipped_profile_is_what_the_optimiser_sees_after_torch_clips(clip):
    model = vglib.build_mlp(5, 16, "tanh", "xavier", seed=0, in_features=7, out_features=2)
    model.linear3.bias.requires_grad_(False)  # a frozen parameter takes no part in the norm
    x, y = batch(7, 2)
    prof = vglib.gradient_profile(model, x, y, **clip)
    plain = vglib.gradient_profile(model, x, y)
    # torch's own clipping, after a plain backward pass, over every trainable parameter
    F.mse_loss(model(x), y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    if "clip_norm" in clip:
        nn.utils.clip_grad_norm_(params, clip["clip_norm"])
    if "clip_value" in clip:
        nn.utils.clip_grad_value_(params, clip["clip_value"])
    expected = [model.get_submodule(f"linear{i}").weight.grad.norm().item() for i in range(1, 6)]
    np.testing.assert_allclose(prof.weight_grad_norms, expected, rtol=1e-5)
    assert prof.head_weight_grad_norm == pytest.approx(model.head.weight.grad.norm().item(), rel=1e-5)
    np.testing.assert_array_equal(prof.activation_grad_norms, plain.activation_grad_norms)  # never clipped
    if clip == {"clip_norm": 1e6}:  # a threshold above the norm leaves every gradient alone
        np.testing.assert_array_equal(prof.weight_grad_norms, plain.weight_grad_norms)
    else:
        assert (prof.weight_grad_norms < plain.weight_grad_norms).any()


def test_norm_clipping_scales_every_layer_by_one_factor_and_bad_thresholds_are_refused():
    model = vglib.build_mlp(8, 16, "sigmoid", "default", seed=0, in_features=4)
    x, y = batch(4)
    plain = vglib.gradient_profile(model, x, y)
    clipped = vglib.gradient_profile(model, x, y, clip_norm=1e-6)
    factors = clipped.weight_grad_norms / plain.weight_grad_norms
    np.testing.assert_allclose(factors, factors[0], rtol=1e-5)  # the ratio of any two layers is kept
    assert factors[0] < 1e-3
    for bad in (0, -1.0, "1"):
        with pytest.raises(ValueError, match="clip_norm"):
            vglib.gradient_profile(model, x, y, clip_norm=bad)
        with pytest.raises(ValueError, match="clip_value"):
            vglib.gradient_profile(model, x, y, clip_value=bad)


def test_block_outputs_are_the_layers_outputs_in_order():
    model = vglib.build_network(4, 16, "relu", "he", in_features=5, seed=0)
    x = torch.randn(32, 5)
    outputs = vglib.block_outputs(model, x)
    assert list(outputs) == [f"act{i}" for i in range(1, 5)]
    h = x  # the same forward pass, module by module
    for name, module in model.named_children():
        h = module(h)
        if name in outputs:
            torch.testing.assert_close(outputs[name], h.detach(), rtol=0, atol=0)
    assert not any(o.requires_grad for o in outputs.values())
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="no child named block"):
        vglib.block_outputs(model, x, prefixes=("block",))
    with pytest.raises(TypeError, match="prefixes"):
        vglib.block_outputs(model, x, prefixes="act")


def test_stream_profile_matches_retained_gradients_of_the_stream():
    model = vglib.build_network(
        6, 16, "relu", "he", skip="residual", residual_scale=0.5, in_features=5, seed=1
    )
    x, y = batch(5)
    prof = vglib.stream_profile(model, x, y)
    assert prof.names == ("act1", *tuple(f"block{i}" for i in range(2, 7)))
    assert prof.weight_names == ("linear1", *tuple(f"block{i}.linear" for i in range(2, 7)))
    h, kept = x, []  # by hand: the stream's tensors, their total gradient through both paths
    for name, module in model.named_children():
        h = module(h)
        if name in prof.names:
            h.retain_grad()
            kept.append(h)
    F.mse_loss(h, y).backward()
    np.testing.assert_allclose(prof.grad_norms, [k.grad.norm().item() for k in kept], rtol=1e-5)
    np.testing.assert_allclose(prof.mean_squares, [k.detach().pow(2).mean().item() for k in kept], rtol=1e-5)
    by_hand = [model.get_submodule(n).weight.grad.norm().item() for n in prof.weight_names]
    np.testing.assert_allclose(prof.weight_grad_norms, by_hand, rtol=1e-5)
    assert prof.first_to_last() == pytest.approx(prof.grad_norms[0] / prof.grad_norms[-1])
    model.zero_grad(set_to_none=True)
    vglib.stream_profile(model, x, y)
    assert model.linear1.weight.grad is None  # the profile leaves .grad alone


@pytest.mark.parametrize("seed", [0, 1])
def test_an_unscaled_residual_relu_stream_doubles_forward_and_backward_per_block(seed):
    # E||h + W relu-branch||^2 = (1 + s^2 sigma_w^2 E[phi^2]/q) E||h||^2 = 2 E||h||^2 for He and s = 1,
    # and the backward pass grows by the same factor per block (the Skip connections chapter)
    model = vglib.build_network(
        20, 256, "relu", "he", skip="residual", residual_scale=1.0, in_features=16, seed=seed
    )
    x, y = torch.randn(512, 16), torch.randn(512, 1)
    prof = vglib.stream_profile(model, x, y)
    forward = vglib.fitted_growth(prof.mean_squares, 5)
    backward = 1 / vglib.fitted_growth(prof.grad_norms**2, 5)  # grows towards the input
    assert 1.8 < forward < 2.1 and 1.8 < backward < 2.2


def test_spectral_spread_against_isometry_rank_one_and_marchenko_pastur():
    assert vglib.spectral_spread(np.full(8, 3.0)) == 0.0  # an isometry, whatever its scale
    assert vglib.spectral_spread([5.0, 0, 0, 0]) == pytest.approx(3.0)  # rank one of n = 4: n - 1
    s = np.array([0.5, 1.0, 2.0])
    assert vglib.spectral_spread(s) == pytest.approx(vglib.spectral_spread(7 * s))  # scale-free
    # A square Gaussian matrix with variance 1/n: the eigenvalues of W W^T follow Marchenko-Pastur
    # with ratio 1, mean 1 and variance 1, so the spread tends to 1 (to within O(1/n) at n = 400).
    g = torch.Generator().manual_seed(0)
    w = torch.randn(400, 400, generator=g, dtype=torch.float64) / 20.0
    assert vglib.spectral_spread(torch.linalg.svdvals(w).numpy()) == pytest.approx(1.0, abs=0.05)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    assert vglib.spectral_spread(torch.linalg.svdvals(q).numpy()) < 1e-12  # orthogonal
    for bad, match in (
        ([], "1-d"),
        ([[1.0]], "1-d"),
        ([1.0, -1.0], ">= 0"),
        ([np.nan], "finite"),
        ([0.0, 0.0], "all 0"),
    ):
        with pytest.raises(ValueError, match=match):
            vglib.spectral_spread(bad)
