"""vglib.attention: each quantity against an independent computation on a tiny transformer (the
stream rebuilt block by block, gradients by autograd from there, entropies and spreads from the
softmax's own output, the token residual in numpy, the softmax's Jacobian by autograd, theory for
the random logits), the model left as it was, and bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import vglib as vg
from vglib._seed import generator as seeded_generator
from vglib.attention import BLOCK_WEIGHTS, _softmax_jacobian_norm


def _tiny(depth: int = 3, **kwargs) -> vg.Transformer:
    return vg.build_transformer(depth, 16, 2, **{"seed": 1, **kwargs})


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return vg.associative_recall(n, seed=seed)


def _stream_by_hand(model: vg.Transformer, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The stream entering every block and leaving the last, by running the blocks one by one."""
    h = model.embed(tokens)
    stream = [h]
    for block in model.blocks:
        h = block(h)
        stream.append(h)
    return stream


def _loss_from(model: vg.Transformer, point: int, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The cross-entropy as a function of the stream entering block ``point`` (``depth``: the final norm)."""
    for block in list(model.blocks)[point:]:
        x = block(x)
    return F.cross_entropy(model.head(model.final_norm(x)[:, -1]), targets)


# --- transformer_profile ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("norm", "mlp"), [("pre", True), ("post", True), ("none", False)])
def test_profile_matches_gradients_taken_from_each_point_of_a_rebuilt_stream(norm, mlp):
    model = _tiny(norm=norm, mlp=mlp)
    tokens, targets = _batch()
    profile = vg.transformer_profile(model, tokens, targets)
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        stream = _stream_by_hand(reference, tokens)
    grads, squares = [], []
    for point, x in enumerate(stream):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_loss_from(reference, point, x, targets), x)
        grads.append(float(g.norm()))
        squares.append(float((x.detach() ** 2).sum(-1).mean()))
    assert profile.names == ("blocks.0", "blocks.1", "blocks.2", "final_norm")
    assert profile.depth == 3 and profile.dtype == "float64"
    np.testing.assert_allclose(profile.grad_norms, grads, rtol=1e-10)
    np.testing.assert_allclose(profile.mean_squares, squares, rtol=1e-12)
    np.testing.assert_allclose(profile.block_factors, np.array(grads[:-1]) / np.array(grads[1:]), rtol=1e-10)
    assert profile.first_to_last() == pytest.approx(float(np.prod(profile.block_factors)), rel=1e-12)
    assert profile.first_to_last() == pytest.approx(grads[0] / grads[-1], rel=1e-10)
    # the weight gradients, from loss.backward() on the float64 copy
    loss = F.cross_entropy(reference(tokens), targets)
    loss.backward()
    assert profile.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    assert set(profile.weight_grad_norms) == set(BLOCK_WEIGHTS)
    for name in BLOCK_WEIGHTS:
        got = profile.weight_grad_norms[name]
        assert got.shape == (3,)
        if name.startswith("mlp") and not mlp:
            assert np.isnan(got).all()
            continue
        expected = [float(block.get_submodule(name).weight.grad.norm()) for block in reference.blocks]
        np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_post_ln_stream_has_per_token_squared_norm_width_and_pre_ln_grows():
    tokens, targets = _batch(32)
    post = vg.transformer_profile(_tiny(6, norm="post"), tokens, targets)
    # after a layer norm (weight 1, bias 0) every token has mean 0 and variance 1: ||x||^2 = width
    # (up to the norm's eps = 1e-5 in the variance)
    np.testing.assert_allclose(post.mean_squares[1:], 16.0, rtol=1e-4)
    pre = vg.transformer_profile(_tiny(6, norm="pre"), tokens, targets)
    assert np.all(np.diff(pre.mean_squares) > 0)


def test_profile_in_float32_agrees_and_a_custom_loss_is_used():
    model = _tiny()
    tokens, targets = _batch()
    double = vg.transformer_profile(model, tokens, targets)
    single = vg.transformer_profile(model, tokens, targets, dtype=torch.float32)
    assert single.dtype == "float32"
    np.testing.assert_allclose(single.grad_norms, double.grad_norms, rtol=1e-4)
    doubled = vg.transformer_profile(model, tokens, targets, lambda out, y: 2 * F.cross_entropy(out, y))
    np.testing.assert_allclose(doubled.grad_norms, 2 * double.grad_norms, rtol=1e-12)
    np.testing.assert_allclose(doubled.block_factors, double.block_factors, rtol=1e-12)


def test_rezero_profile_at_init_passes_the_gradient_unchanged_and_gives_branches_none():
    model = _tiny(4, norm="none", residual="rezero")
    tokens, targets = _batch()
    profile = vg.transformer_profile(model, tokens, targets)
    np.testing.assert_allclose(profile.block_factors, 1.0, rtol=1e-14)
    assert all(float(np.max(v)) == 0.0 for v in profile.weight_grad_norms.values())


def test_frozen_weights_report_nan_and_the_dataframe_has_one_row_per_point():
    pytest.importorskip("pandas")
    model = _tiny()
    model.blocks[1].attention.q.weight.requires_grad_(False)
    tokens, targets = _batch()
    profile = vg.transformer_profile(model, tokens, targets)
    q = profile.weight_grad_norms["attention.q"]
    assert np.isnan(q[1]) and np.isfinite(q[[0, 2]]).all()
    frame = profile.to_dataframe()
    assert list(frame["point"]) == list(profile.names)
    assert frame["block_factor"].isna().tolist() == [False, False, False, True]
    assert frame.attrs["loss"] == profile.loss


# --- the model is left as it was ----------------------------------------------------------------------------


def _probe_all(model: vg.Transformer, tokens: torch.Tensor, targets: torch.Tensor) -> None:
    vg.transformer_profile(model, tokens, targets)
    vg.attention_statistics(model, tokens)
    vg.token_uniformity(model, tokens)
    vg.output_change(model, tokens, delta=0.1, samples=2)


def test_probes_leave_weights_grads_mode_rng_and_hooks_alone():
    model = _tiny(norm="post")
    tokens, targets = _batch()
    F.cross_entropy(model(tokens), targets).backward()  # a .grad to keep
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    calls: list[str] = []
    handle = model.blocks[0].register_forward_hook(lambda *_: calls.append("hook"))
    rng = torch.random.get_rng_state()
    try:
        _probe_all(model, tokens, targets)
        vg.softmax_saturation([4, 8], scaled=True, samples=50)
    finally:
        handle.remove()
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert calls == []  # the probes run on a copy without the model's hooks
    assert not model.training and all(not m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_probes_work_under_inference_mode():
    model = _tiny()
    with torch.inference_mode():
        tokens, targets = _batch()
        profile = vg.transformer_profile(model, tokens, targets)
    assert np.isfinite(profile.grad_norms).all()


# --- attention_statistics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_attention_statistics_match_the_softmax_output(causal):
    model = _tiny(causal=causal, logit_scale=0.9)
    tokens, _ = _batch()
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    reference = copy.deepcopy(model).double()
    handles = []
    for b, block in enumerate(reference.blocks):
        store: dict[str, torch.Tensor] = {}
        handles.append(
            block.attention.softmax.register_forward_hook(lambda _m, _a, o, s=store: s.update(p=o))
        )
        handles.append(block.attention.logits.register_forward_hook(lambda _m, _a, o, s=store: s.update(z=o)))
        seen[b] = store  # type: ignore[assignment]
    with torch.no_grad():
        reference(tokens)
    for handle in handles:
        handle.remove()
    stats = vg.attention_statistics(model, tokens)
    seq = tokens.shape[1]
    for b in range(3):
        p, z = seen[b]["p"].numpy(), seen[b]["z"].numpy()  # type: ignore[index]
        batch, heads = p.shape[:2]
        entropies, peaks, variances, logs = [], [], [], []
        for e in range(batch):
            for h in range(heads):
                for i in range(seq):
                    n = i + 1 if causal else seq
                    row, logits = p[e, h, i, :n], z[e, h, i, :n]
                    entropies.append(-sum(x * math.log(x) for x in row if x > 0))
                    peaks.append(row.max())
                    logs.append(math.log(n))
                    if n > 1:
                        variances.append(np.var(logits, ddof=1))
        assert stats.entropy[b] == pytest.approx(np.mean(entropies), rel=1e-12)
        assert stats.max_probability[b] == pytest.approx(np.mean(peaks), rel=1e-12)
        assert stats.max_entropy[b] == pytest.approx(np.mean(logs), rel=1e-12)
        assert stats.logit_std[b] == pytest.approx(math.sqrt(np.mean(variances)), rel=1e-10)
    expected_max = math.lgamma(seq + 1) / seq if causal else math.log(seq)
    np.testing.assert_allclose(stats.max_entropy, expected_max, rtol=1e-12)
    assert stats.names == ("blocks.0", "blocks.1", "blocks.2")


def test_zero_queries_give_uniform_attention_at_maximum_entropy():
    model = _tiny()
    with torch.no_grad():
        for block in model.blocks:
            block.attention.q.weight.zero_()
    tokens = _batch()[0]
    seq = tokens.shape[1]
    stats = vg.attention_statistics(model, tokens)
    np.testing.assert_allclose(stats.entropy, math.log(seq), rtol=1e-12)
    np.testing.assert_allclose(stats.max_probability, 1 / seq, rtol=1e-12)
    np.testing.assert_allclose(stats.logit_std, 0.0, atol=1e-15)


def test_larger_logit_scale_concentrates_attention():
    tokens, _ = _batch(32)
    low = vg.attention_statistics(_tiny(logit_scale=0.1), tokens)
    high = vg.attention_statistics(_tiny(logit_scale=10.0), tokens)
    # the first block sees the same stream, so the same q k^T, scaled 100 times more
    assert high.logit_std[0] / low.logit_std[0] == pytest.approx(100.0, rel=1e-9)
    assert np.all(high.entropy < low.entropy) and np.all(high.max_probability > low.max_probability)


# --- token_uniformity ---------------------------------------------------------------------------------------


def test_token_uniformity_matches_numpy():
    model = _tiny(norm="post")
    tokens, _ = _batch()
    with torch.no_grad():
        stream = [x.double().numpy() for x in _stream_by_hand(copy.deepcopy(model).double(), tokens)]
    expected = []
    for x in stream:
        per_example = []
        for example in x:
            centred = example - example.mean(axis=0, keepdims=True)
            per_example.append(np.linalg.norm(centred) / np.linalg.norm(example))
        expected.append(np.mean(per_example))
    got = vg.token_uniformity(model, tokens)
    assert got.dtype == np.float64 and got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_identical_tokens_have_uniformity_zero_and_the_mean_is_the_nearest_identical_rows():
    model = _tiny(1)
    with torch.no_grad():
        model.position_embedding.weight.zero_()
    tokens = torch.full((3, 9), 5)
    assert vg.token_uniformity(model, tokens)[0] == 0.0
    # ||X - 1 x^T||_F is smallest at x = the mean token
    x = np.random.default_rng(0).normal(size=(9, 16))
    best = np.linalg.norm(x - x.mean(0))
    for shift in np.random.default_rng(1).normal(scale=0.1, size=(20, 16)):
        assert np.linalg.norm(x - (x.mean(0) + shift)) > best


@pytest.mark.parametrize("norm", vg.NORM_PLACEMENTS)
def test_pure_attention_collapses_to_identical_tokens_and_the_skip_slows_it(norm):
    tokens, _ = _batch(16)
    without = vg.token_uniformity(_tiny(8, norm=norm, mlp=False, skip=False), tokens)
    with_skip = vg.token_uniformity(_tiny(8, norm=norm, mlp=False), tokens)
    assert without[0] == with_skip[0] > 0.5  # the same embeddings
    assert without[-1] < 1e-10  # rank 1 to float64's resolution after 8 blocks
    assert with_skip[-1] > 0.1


# --- softmax_saturation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scaled", [False, True])
def test_logit_std_is_root_d_unscaled_and_one_scaled(scaled):
    d_values, keys, samples = [4, 16, 64, 256], 16, 2000
    result = vg.softmax_saturation(d_values, scaled=scaled, keys=keys, samples=samples)
    for d, std in zip(d_values, result.logit_std, strict=True):
        expected = 1.0 if scaled else math.sqrt(d)
        # the sample variance given q has mean ||q||^2 (mean d) and relative variance 2/(keys-1)
        relative_var_se = math.sqrt((1 + 2 / d) * (1 + 2 / (keys - 1)) - 1) / math.sqrt(samples)
        assert abs(std / expected - 1) < 4 * relative_var_se / 2, (d, std)
    np.testing.assert_array_equal(result.d_values, d_values)
    assert (result.keys, result.samples, result.scaled) == (keys, samples, scaled)


def test_jacobian_norm_against_autograd_and_the_two_key_formula():
    probs = torch.softmax(
        torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1
    )
    for p in probs:
        jacobian = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, -1), torch.log(p))
        assert float(_softmax_jacobian_norm(p)) == pytest.approx(float(jacobian.norm()), rel=1e-12)
    p = torch.tensor([[0.3, 0.7], [0.5, 0.5], [1e-3, 1 - 1e-3]], dtype=torch.float64)
    torch.testing.assert_close(_softmax_jacobian_norm(p), 2 * p[:, 0] * (1 - p[:, 0]), rtol=1e-12, atol=0)


def test_two_keys_mean_jacobian_matches_an_independent_monte_carlo():
    d, n = 4, 400_000
    result = vg.softmax_saturation([d], scaled=True, keys=2, samples=40_000, seed=3)
    rng = np.random.default_rng(7)
    q, k1, k2 = (rng.normal(size=(n, d)) for _ in range(3))
    gap = (q * (k1 - k2)).sum(1) / math.sqrt(d)  # z_1 - z_2; p_1 = sigmoid(gap)
    p = 1 / (1 + np.exp(-gap))
    values = 2 * p * (1 - p)
    se = values.std() * math.sqrt(1 / n + 1 / 40_000)
    assert abs(result.jacobian_norm[0] - values.mean()) < 4 * se
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert abs(result.entropy[0] - entropy.mean()) < 4 * entropy.std() * math.sqrt(1 / n + 1 / 40_000)


def test_softmax_saturates_as_the_logits_grow():
    d_values = [4, 16, 64, 256, 1024]
    unscaled = vg.softmax_saturation(d_values, scaled=False, samples=500)
    scaled = vg.softmax_saturation(d_values, scaled=True, samples=500)
    assert np.all(np.diff(unscaled.jacobian_norm) < 0) and unscaled.jacobian_norm[-1] < 0.1
    assert np.all(np.diff(unscaled.entropy) < 0) and np.all(np.diff(unscaled.max_probability) > 0)
    assert unscaled.max_probability[-1] > 0.9
    # scaled: the same distribution of logits at every d (up to ||q||^2 / d's spread), no saturation
    assert np.ptp(scaled.jacobian_norm) < 0.05 and scaled.entropy.min() > 0.8 * math.log(16) - 0.5
    assert unscaled.max_entropy == pytest.approx(math.log(16))


def test_softmax_saturation_is_reproducible_per_d():
    a = vg.softmax_saturation([8, 32], scaled=False, samples=300, seed=2)
    b = vg.softmax_saturation([32], scaled=False, samples=300, seed=2)
    c = vg.softmax_saturation([32], scaled=False, samples=300, seed=3)
    assert a.jacobian_norm[1] == b.jacobian_norm[0] and a.logit_std[1] == b.logit_std[0]
    assert c.jacobian_norm[0] != b.jacobian_norm[0]


def test_softmax_saturation_dataframe():
    pytest.importorskip("pandas")
    frame = vg.softmax_saturation(np.array([4, 8]), scaled=True, samples=10).to_dataframe()
    assert list(frame.columns) == [
        "d",
        "logit_std",
        "jacobian_norm",
        "max_probability",
        "entropy",
        "query_jacobian_norm",
        "key_jacobian_norm",
    ]
    assert list(frame["d"]) == [4, 8]


@pytest.mark.parametrize("scaled", [False, True])
def test_query_and_key_jacobians_against_autograd_on_the_same_draws(scaled):
    d, keys, samples, seed = 5, 4, 3, 2
    result = vg.softmax_saturation([d], scaled=scaled, keys=keys, samples=samples, seed=seed)
    # the same draws, as the docstring says: one generator per d, q then k
    per_d = np.random.SeedSequence([vg.shifted_seed(seed), d]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(per_d))
    q = torch.randn(samples, 1, d, generator=gen, dtype=torch.float64)
    k = torch.randn(samples, keys, d, generator=gen, dtype=torch.float64)
    scale = 1 / math.sqrt(d) if scaled else 1.0
    by_query, by_key = [], []
    for qi, ki in zip(q, k, strict=True):
        dq, dk = torch.autograd.functional.jacobian(
            lambda qq, kk: torch.softmax(scale * (kk @ qq[0]), -1), (qi, ki)
        )
        by_query.append(float(dq.norm()))
        by_key.append(float(dk.norm()))
    assert result.query_jacobian_norm[0] == pytest.approx(np.mean(by_query), rel=1e-10)
    assert result.key_jacobian_norm[0] == pytest.approx(np.mean(by_key), rel=1e-10)


def test_without_the_scale_the_query_gets_more_gradient_though_the_softmax_saturates():
    d_values = [16, 64, 256]
    unscaled = vg.softmax_saturation(d_values, scaled=False, samples=500)
    scaled = vg.softmax_saturation(d_values, scaled=True, samples=500)
    assert np.all(unscaled.jacobian_norm < scaled.jacobian_norm)  # dp/dz shrinks ...
    ratio = unscaled.query_jacobian_norm / scaled.query_jacobian_norm  # ... dp/dq = s J K grows
    assert np.all(ratio > 2) and np.all(np.diff(ratio) > 0)
    # scaled, dp/dq = J K / sqrt(d) with ||K||_F ~ sqrt(keys d): about ||J||_F sqrt(keys) / sqrt(keys)
    np.testing.assert_allclose(scaled.query_jacobian_norm, scaled.jacobian_norm, rtol=0.1)


# --- output_change ------------------------------------------------------------------------------------------


def test_output_change_is_zero_without_perturbation_and_scales_as_delta_squared():
    model = _tiny(4, norm="post")
    tokens, _ = _batch()
    assert vg.output_change(model, tokens, delta=0.0) == 0.0
    small = vg.output_change(model, tokens, delta=5e-4, samples=8, seed=1)
    half = vg.output_change(model, tokens, delta=2.5e-4, samples=8, seed=1)
    assert small / half == pytest.approx(4.0, rel=0.02)


def test_output_change_matches_a_hand_made_perturbation():
    model = _tiny(2, norm="pre")
    tokens, _ = _batch()
    for perturbation in ("absolute", "relative"):
        got = vg.output_change(model, tokens, delta=0.05, perturbation=perturbation, samples=1, seed=4)
        # the same perturbation, drawn as the docstring says: one generator, matrices in block order
        reference = copy.deepcopy(model).double()
        with torch.no_grad():
            base = _stream_by_hand(reference, tokens)[-1]
            gen = seeded_generator(4)
            for block in reference.blocks:
                for name in BLOCK_WEIGHTS:
                    w = block.get_submodule(name).weight
                    size = w.norm() / math.sqrt(w.numel()) if perturbation == "relative" else 1.0
                    w += 0.05 * size * torch.randn(w.shape, generator=gen, dtype=w.dtype)
            moved = _stream_by_hand(reference, tokens)[-1]
        expected = float((moved - base).pow(2).sum() / base.pow(2).sum())
        assert got == pytest.approx(expected, rel=1e-10), perturbation
    default = vg.output_change(model, tokens, delta=0.05, samples=1, seed=4)
    assert default == vg.output_change(model, tokens, delta=0.05, perturbation="absolute", samples=1, seed=4)


def test_relative_perturbation_also_shrinks_the_change_of_smaller_weights():
    tokens, _ = _batch()
    model = _tiny(3, norm="post")
    smaller = copy.deepcopy(model)
    with torch.no_grad():  # the value, output and MLP weights halved, as a beta-scaled init does
        for block in smaller.blocks:
            for layer in (block.attention.v, block.attention.out, block.mlp[0], block.mlp[2]):
                layer.weight.mul_(0.5)
    changes = {
        (which, perturbation): vg.output_change(m, tokens, delta=1e-3, perturbation=perturbation, seed=1)
        for which, m in (("plain", model), ("smaller", smaller))
        for perturbation in ("absolute", "relative")
    }
    # relative: the halved weights also get a halved change (a quarter of the squared change), on
    # top of whatever the smaller weights do to the model's sensitivity, which absolute measures alone
    relative_over_absolute = {
        which: changes[which, "relative"] / changes[which, "absolute"] for which in ("plain", "smaller")
    }
    assert relative_over_absolute["smaller"] < 0.6 * relative_over_absolute["plain"]


def test_rezero_blocks_are_the_identity_so_their_weights_change_nothing():
    model = _tiny(4, norm="none", residual="rezero")
    assert vg.output_change(model, _batch()[0], delta=0.5) == 0.0


# --- bad input ----------------------------------------------------------------------------------------------


def test_bad_input_names_the_valid_choices():
    model = _tiny(1)
    tokens, targets = _batch()
    for call in (
        lambda m, t: vg.transformer_profile(m, t, targets),
        lambda m, t: vg.attention_statistics(m, t),
        lambda m, t: vg.token_uniformity(m, t),
        lambda m, t: vg.output_change(m, t, delta=0.1),
    ):
        with pytest.raises(TypeError, match=r"vglib.Transformer \(build one with vglib.build_transformer\)"):
            call(torch.nn.Linear(4, 2), tokens)
        with pytest.raises(TypeError, match=r"integer torch.Tensor \(torch.long\) .* dtype torch.float32"):
            call(model, tokens.float())
    with pytest.raises(TypeError, match="got list"):
        vg.attention_statistics(model, [[1, 2]])
    with pytest.raises(ValueError, match="non-empty batch"):
        vg.token_uniformity(model, torch.zeros(0, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=f"max_len = {model.max_len}"):
        vg.token_uniformity(model, torch.zeros(2, model.max_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"torch.float32, torch.float64; got torch.float16"):
        vg.transformer_profile(model, tokens, targets, dtype=torch.float16)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        vg.attention_statistics(model, tokens, dtype="float64")
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        vg.transformer_profile(model, tokens, [1, 2])
    with pytest.raises(ValueError, match="empty sequence"):
        vg.softmax_saturation([], scaled=True)
    with pytest.raises(TypeError, match="sequence of positive ints"):
        vg.softmax_saturation(16, scaled=True)
    with pytest.raises(ValueError, match="every entry of d_values must be an int >= 1"):
        vg.softmax_saturation([4, 0], scaled=True)
    with pytest.raises(TypeError, match="scaled must be True or False"):
        vg.softmax_saturation([4], scaled=1)
    with pytest.raises(ValueError, match="keys must be an int >= 2"):
        vg.softmax_saturation([4], scaled=True, keys=1)
    with pytest.raises(ValueError, match="delta must be a finite number >= 0"):
        vg.output_change(model, tokens, delta=-0.1)
    with pytest.raises(TypeError, match="delta must be a number"):
        vg.output_change(model, tokens, delta="small")
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        vg.output_change(model, tokens, delta=0.1, samples=0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        vg.output_change(model, tokens, delta=0.1, seed=-1)
    with pytest.raises(ValueError, match="'absolute', 'relative'"):
        vg.output_change(model, tokens, delta=0.1, perturbation="rel")


# --- the explorer's frames and the norm-placement figure ----------------------------------------------------


def test_architectures_are_every_valid_combination_and_frames_match_a_direct_profile():
    valid = {(n, r) for n in vg.NORM_PLACEMENTS for r in vg.RESIDUAL_SCALINGS}
    valid -= {(n, "deepnorm") for n in ("pre", "none")} | {(n, "tfixup") for n in ("pre", "post")}
    assert set(vg.TRANSFORMER_ARCHITECTURES.values()) == valid and len(vg.TRANSFORMER_ARCHITECTURES) == 11
    tokens, targets = _batch()
    for label, (norm, residual) in vg.TRANSFORMER_ARCHITECTURES.items():
        title, (grads, rms) = vg.stream_frame(label, 3, tokens, targets, seed=1)
        model = vg.build_transformer(3, norm=norm, residual=residual, seed=1)
        reference = copy.deepcopy(model).double()
        with torch.no_grad():
            stream = _stream_by_hand(reference, tokens)
        squares = [float(x.pow(2).sum(-1).mean()) for x in stream]
        np.testing.assert_allclose(rms, np.sqrt(squares), rtol=1e-12)
        profile = vg.transformer_profile(model, tokens, targets)
        np.testing.assert_array_equal(grads, profile.grad_norms)
        assert title.startswith(f"{label}, depth 3") and f"{profile.first_to_last():.2g}" in title


def test_stream_frame_bad_input_names_the_choices():
    tokens, targets = _batch()
    with pytest.raises(ValueError, match="pre-LN \\+ ReZero"):
        vg.stream_frame("pre-LN + DeepNorm", 3, tokens, targets)
    with pytest.raises(ValueError, match="depth"):
        vg.stream_frame("pre-LN", 0, tokens, targets)


def test_plot_norm_placement_draws_medians_and_the_band():
    band = (np.arange(4.0), np.arange(4.0) + 2)
    runs = np.array([[1.0, 0.5], [2.0, 0.25], [3.0, 1.0]])
    fig = vg.plot_norm_placement({"pre-LN": np.arange(4.0) + 1}, band, (6, 48), {"pre-LN": runs})
    left, right = fig.axes
    np.testing.assert_array_equal(left.lines[0].get_ydata(), np.arange(4.0) + 1)
    np.testing.assert_array_equal(right.lines[0].get_ydata(), [2.0, 0.5])  # the medians over the seeds
