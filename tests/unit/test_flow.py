"""gradient_flow: every quantity against plain autograd, on models vglib did not build."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

import vglib


def _manual(model: nn.Module, x: torch.Tensor, y: torch.Tensor, modules: list[nn.Module]):
    """||dL/dh|| at each module's output and every parameter's gradient, with plain autograd."""
    outputs = []
    handles = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o)) for m in modules]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    loss = F.cross_entropy(out, y) if not y.is_floating_point() else F.mse_loss(out, y)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [*outputs, *params.values()])
    h_norms = [float(g.double().norm()) for g in grads[: len(outputs)]]
    p_grads = dict(zip(params, grads[len(outputs) :], strict=True))
    return h_norms, p_grads, outputs


def test_norms_match_plain_autograd_and_weights_and_biases_are_apart():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    flow = vglib.gradient_flow(model, x, y)
    h_norms, p_grads, outputs = _manual(model, x, y, [model[0], model[2], model[4]])
    assert flow.layer_names == ("0", "2", "4") and flow.layer_types == ("Linear",) * 3
    np.testing.assert_allclose(flow.output_grad_norms, h_norms, rtol=1e-6)
    np.testing.assert_allclose(
        flow.output_grad_rms,
        [n / math.sqrt(o.numel()) for n, o in zip(h_norms, outputs, strict=True)],
        rtol=1e-6,
    )
    for i in (0, 2, 4):
        assert flow.weight_grad_norms[i // 2] == pytest.approx(float(p_grads[f"{i}.weight"].norm()), rel=1e-6)
        assert flow.bias_grad_norms[i // 2] == pytest.approx(float(p_grads[f"{i}.bias"].norm()), rel=1e-6)
        assert flow.param_norms[f"{i}.weight"] == pytest.approx(
            float(model[i].weight.detach().norm()), rel=1e-6
        )
    # the global norm is what clip_grad_norm_ measures
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    total = float(nn.utils.clip_grad_norm_(model.parameters(), 1e9))
    assert flow.global_grad_norm == pytest.approx(total, rel=1e-6)


def test_the_model_is_left_exactly_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vglib.gradient_flow(model, torch.randn(8, 4), torch.randn(8, 2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (
        torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[3].weight.grad is None
    )
    assert model.training and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class _Shared(nn.Module):
    """One layer applied three times, then a head; and a root parameter (a temperature)."""

    def __init__(self):
        super().__init__()
        self.inp, self.block, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.temperature = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for _ in range(3):
            h = torch.tanh(self.block(h))
        return self.head(h) / self.temperature


def test_a_shared_layer_is_a_layer_per_call_and_a_container_comes_after_its_children():
    torch.manual_seed(0)
    model = _Shared()
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    flow = vglib.gradient_flow(model, x, y)
    # B2: the root's own parameter does not make the root the first layer; it is called last
    assert flow.layer_names == ("inp", "block", "block#2", "block#3", "head", "_Shared")
    calls = []
    handle = model.block.register_forward_hook(lambda _m, _i, o: calls.append(o))
    loss = F.cross_entropy(model(x), y)
    handle.remove()
    grads = torch.autograd.grad(loss, calls)
    np.testing.assert_allclose(
        flow.output_grad_norms[1:4], [float(g.double().norm()) for g in grads], rtol=1e-6
    )
    # the shared weight's gradient sums over its calls: every call reports the whole of it
    whole = float(torch.autograd.grad(F.cross_entropy(model(x), y), model.block.weight)[0].norm())
    assert flow.weight_grad_norms[1] == flow.weight_grad_norms[3] == pytest.approx(whole, rel=1e-6)
    assert flow.param_grad_norms["temperature"] > 0


def test_a_module_never_called_lends_its_parameters_to_the_one_that_uses_them():
    # B1: MultiheadAttention uses out_proj.weight functionally; out_proj itself is never called
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 1)
    model = nn.Sequential(nn.Embedding(50, 16), encoder, nn.Flatten(), nn.Linear(16 * 6, 3))
    x, y = torch.randint(0, 50, (4, 6)), torch.randint(0, 3, (4,))
    flow = vglib.gradient_flow(model, x, y)
    assert flow.uncalled == ("1.layers.0.self_attn.out_proj",)
    assert "1.layers.0.self_attn.out_proj" not in flow.layer_names and flow.layer_names[-1] == "3"
    attention = flow.layer_names.index("1.layers.0.self_attn")
    p = flow.param_grad_norms
    weights = math.hypot(p["1.layers.0.self_attn.in_proj_weight"], p["1.layers.0.self_attn.out_proj.weight"])
    biases = math.hypot(p["1.layers.0.self_attn.in_proj_bias"], p["1.layers.0.self_attn.out_proj.bias"])
    assert flow.weight_grad_norms[attention] == pytest.approx(weights, rel=1e-6)
    assert flow.bias_grad_norms[attention] == pytest.approx(biases, rel=1e-6)


def test_parametrised_layers_report_the_gradient_of_the_weight_used():
    # B7: reading layer.weight after the forward pass recomputes it outside the graph
    torch.manual_seed(0)
    model = nn.Sequential(
        parametrizations.weight_norm(nn.Linear(5, 8)), nn.Tanh(),
        parametrizations.spectral_norm(nn.Linear(8, 8)), nn.Tanh(),
        parametrizations.orthogonal(nn.Linear(8, 8)), nn.Tanh(), nn.Linear(8, 2),
    )  # fmt: skip
    x, y = torch.randn(16, 5), torch.randint(0, 2, (16,))
    flow = vglib.gradient_flow(model, x, y)
    assert flow.layer_names == ("0", "2", "4", "6")
    _, p_grads, _ = _manual(model, x, y, [])
    for i in (0, 2, 4):
        originals = [n for n in p_grads if n.startswith(f"{i}.parametrizations.weight.")]
        expected = math.sqrt(sum(float(p_grads[n].norm()) ** 2 for n in originals))
        assert expected > 0 and flow.weight_grad_norms[i // 2] == pytest.approx(expected, rel=1e-5)
    profile = vglib.gradient_profile(model, x, y)
    assert (profile.weight_grad_norms > 0).all()  # B7 in gradient_profile: [0, 0, 0] before
    with parametrizations.weight_norm.__globals__["parametrize"].cached():
        used = model[0].weight
        grad = torch.autograd.grad(F.cross_entropy(model(x), y), used)[0]
    assert profile.weight_grad_norms[0] == pytest.approx(float(grad.norm()), rel=1e-5)


def test_frozen_layers_have_no_gradient_and_say_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    for p in model[:2].parameters():
        p.requires_grad_(False)
    flow = vglib.gradient_flow(model, torch.randn(8, 4), torch.randint(0, 2, (8,)))
    assert flow.frozen == ("0",) and math.isnan(flow.weight_grad_norms[0]) and flow.weight_grad_norms[1] > 0
    assert math.isnan(flow.param_grad_norms["0.weight"]) and not math.isnan(flow.param_grad_norms["2.weight"])
    # the frozen layer's output needs no gradient: there is none to report
    assert math.isnan(flow.output_grad_norms[0]) and flow.output_grad_norms[1] > 0


class _Batchy(nn.Module):
    """Takes input_ids and an attention mask; returns a dict, HF-style."""

    def __init__(self):
        super().__init__()
        self.emb, self.mix, self.head = nn.Embedding(20, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.mix(self.emb(input_ids))) * attention_mask[..., None]
        return {"logits": self.head(h.sum(1) / attention_mask.sum(1, keepdim=True)), "hidden": h}


def test_dict_batches_and_dict_and_tuple_outputs():
    torch.manual_seed(0)
    model = _Batchy()
    batch = {"input_ids": torch.randint(0, 20, (4, 5)), "attention_mask": torch.ones(4, 5)}
    y = torch.randint(0, 3, (4,))
    flow = vglib.gradient_flow(model, batch, y)
    assert flow.layer_names == ("emb", "mix", "head")
    expected = F.cross_entropy(model(**batch)["logits"], y)
    assert flow.loss == pytest.approx(float(expected.detach()), rel=1e-6)
    tupled = vglib.gradient_flow(model, (batch["input_ids"], batch["attention_mask"]), y)
    np.testing.assert_allclose(tupled.output_grad_norms, flow.output_grad_norms, rtol=1e-6)
    scored = vglib.gradient_flow(model, batch, y, lambda out, t: F.cross_entropy(out["logits"], t))
    assert scored.loss == pytest.approx(flow.loss, rel=1e-6)

    class NoLogits(_Batchy):
        def forward(self, input_ids, attention_mask):
            return {"scores": super().forward(input_ids, attention_mask)["logits"]}

    with pytest.raises(ValueError, match=r"keys \['scores'\].*loss_fn"):
        vglib.gradient_flow(NoLogits(), batch, y)

    class Tupled(_Batchy):
        def forward(self, input_ids, attention_mask):
            out = super().forward(input_ids, attention_mask)
            return out["logits"], out["hidden"]

    assert vglib.gradient_flow(Tupled(), batch, y).layer_names == ("emb", "mix", "head")


class _Cached(nn.Module):
    """Creates (or grows) a buffer in forward, as rotary-embedding caches do (B12)."""

    def __init__(self, grow: bool):
        super().__init__()
        self.q, self.head = nn.Linear(6, 6), nn.Linear(6, 2)
        if grow:
            self.register_buffer("cos", torch.ones(2, 1), persistent=False)

    def forward(self, x):
        t = x.shape[1]
        if getattr(self, "cos", None) is None or self.cos.shape[0] < t:
            self.register_buffer("cos", torch.cos(torch.arange(t).float())[:, None], persistent=False)
        return self.head(torch.tanh(self.q(x) * self.cos[:t]).mean(1))


@pytest.mark.parametrize("grow", [False, True])
def test_buffers_created_or_resized_in_forward_are_put_back(grow):
    model = _Cached(grow)
    before = {n: b.clone() for n, b in model.named_buffers()}
    x, y = torch.randn(4, 5, 6), torch.randint(0, 2, (4,))
    vglib.gradient_flow(model, x, y)
    vglib.gradient_profile(model, x, y)
    after = dict(model.named_buffers())
    assert after.keys() == before.keys() and all(torch.equal(before[n], after[n]) for n in before)


def test_time_axis_of_an_rnn_matches_plain_autograd():
    # B6: the gradient reaching each time step, at the recurrent module's input
    torch.manual_seed(0)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.RNN(3, 16, batch_first=True), nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    model, x, y = Classifier(), torch.randn(4, 30, 3), torch.randint(0, 2, (4,))
    flow = vglib.gradient_flow(model, x, y)
    assert flow.time is not None and flow.time.where == "rnn" and flow.time.steps == 30
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)
    np.testing.assert_allclose(flow.time.grad_norms, g.double().norm(dim=(0, 2)).numpy(), rtol=1e-6)
    assert flow.time.grad_norms[0] < flow.time.grad_norms[-1]


def test_time_axis_named_by_the_caller_and_found_for_vglib_rnns():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 10, 1))
    x, y = torch.randn(3, 2, 10), torch.randn(3, 1)
    flow = vglib.gradient_flow(conv, x, y, time_dim=2)
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.mse_loss(conv(leaf), y), leaf)
    np.testing.assert_allclose(flow.time.grad_norms, g.double().norm(dim=(0, 1)).numpy(), rtol=1e-6)
    rnn = vglib.build_rnn(8, activation="tanh", seed=0)
    xs, ys = vglib.adding_problem(4, 12, seed=0)
    assert vglib.gradient_flow(rnn, xs, ys).time.steps == 12  # ElmanRNN: time along dimension 1
    # token ids have no gradient: the time axis is read at the embedding's output
    torch.manual_seed(0)
    lm = nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(12, 2))
    ids, labels = torch.randint(0, 5, (2, 3)), torch.randint(0, 2, (2,))
    flow = vglib.gradient_flow(lm, ids, labels, time_dim=1)
    embedded = lm[0](ids)
    (g,) = torch.autograd.grad(F.cross_entropy(lm[2](embedded.flatten(1)), labels), embedded)
    assert flow.time.where == "0"
    np.testing.assert_allclose(flow.time.grad_norms, g.double().norm(dim=(0, 2)).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        vglib.gradient_flow(conv, x, y, time_dim=3)


def test_unit_spread_is_zero_for_a_collapsed_layer_and_near_one_for_a_healthy_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    with torch.no_grad():
        model[2].weight.zero_()  # every example gives layer 2 the same output: its bias
    flow = vglib.gradient_flow(model, torch.randn(64, 4), torch.randn(64, 1))
    assert flow.unit_spread[1] < 1e-6  # float32 rounding of the mean, at most
    # a standard-normal input through an identity-like layer: std over the batch = rms = 1
    identity = nn.Sequential(nn.Linear(32, 32, bias=False), nn.Linear(32, 1))
    with torch.no_grad():
        identity[0].weight.copy_(torch.eye(32))
    spread = vglib.gradient_flow(identity, torch.randn(4096, 32), torch.randn(4096, 1)).unit_spread[0]
    assert spread == pytest.approx(1.0, abs=0.03)


def test_clear_errors_for_inputs_losses_and_forward_failures():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="inside layer '0' .*expects inputs of shape \\(\\.\\.\\., 4\\)"):
        vglib.gradient_flow(model, torch.randn(8, 5), y)
    with pytest.raises(ValueError, match="scalar tensor, got shape \\(8,\\)"):
        vglib.gradient_flow(model, x, y, lambda out, t: F.cross_entropy(out, t, reduction="none"))
    with pytest.raises(TypeError, match="scalar torch.Tensor, got float"):
        vglib.gradient_flow(model, x, y, lambda out, t: 1.0)
    with pytest.raises(TypeError, match="a tuple/list .* or a dict"):
        vglib.gradient_flow(model, np.zeros((8, 4)), y)
    with pytest.raises(ValueError, match="no parameters"):
        vglib.gradient_flow(nn.Sequential(nn.ReLU()), x, y)
    with torch.inference_mode():  # works there too: vglib leaves inference mode for its pass
        x_inf, y_inf = torch.randn(8, 4), torch.randint(0, 2, (8,))
        flow = vglib.gradient_flow(model, x_inf, y_inf)
    assert flow.layer_names == ("0", "2") and np.isfinite(flow.output_grad_norms).all()


def test_gradient_profile_errors_name_the_right_place():
    class Viewer(nn.Module):  # B15: fails in a view() after the conv, not in the conv
        def __init__(self):
            super().__init__()
            self.c, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 8 * 8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.c(x)).view(-1, 8 * 8 * 8))

    with pytest.raises(ValueError, match="after layer 'c', in the model's own code"):
        vglib.gradient_profile(Viewer(), torch.randn(2, 3, 9, 9), torch.randint(0, 4, (2,)))

    class StdConv2d(nn.Conv2d):  # B14: a subclass used to raise KeyError
        pass

    for conv in (StdConv2d(3, 8, 3), parametrizations.weight_norm(nn.Conv2d(3, 8, 3))):
        model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
        with pytest.raises(ValueError, match=r"inside layer '0' .*\(batch, 3, H, W\)"):
            vglib.gradient_profile(model, torch.randn(2, 5, 8, 8), torch.randint(0, 4, (2,)))


def test_gradient_profile_takes_tuple_and_dict_outputs():
    # B13: it used to fail with AttributeError: 'tuple' object has no attribute 'ndim'
    torch.manual_seed(0)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head, self.aux = (
                nn.Linear(4, 8),
                nn.Linear(8, 8),
                nn.Linear(8, 2),
                nn.Linear(8, 1),
            )

        def forward(self, x):
            h = torch.relu(self.b(torch.relu(self.a(x))))
            return self.head(h), self.aux(h)

    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    model = TwoHeads()
    profile = vglib.gradient_profile(model, x, y)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x)[0], y), model.a.weight)
    assert profile.layer_names == ("a", "b", "head") and profile.weight_grad_norms[0] == pytest.approx(
        float(g.norm()), rel=1e-6
    )
    assert profile.weight_grad_norms[2] > 0  # the head scored; aux (called last) is the profile's head
