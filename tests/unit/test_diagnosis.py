"""diagnose and loss_stalled: the rules on synthetic flows, and each reviewed bug (B1-B6, B10, B16,
B18 in ../shared/reviews/practitioner.md) on a small model that shows it. The labelled zoo in
tests/zoo checks the verdicts on 40+ architectures against independent labels."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import vglib
from vglib.diagnosis import DEPTH_DECADES, TIME_DECADES, judge


def _flow(rms, time=None, **changes) -> vglib.GradientFlow:
    """A GradientFlow with the given per-element gradient profile (the last entry is the output)."""
    n = len(rms)
    flow = vglib.GradientFlow(
        layer_names=tuple(f"l{i}" for i in range(n)), layer_types=("Linear",) * n,
        output_grad_norms=np.asarray(rms, float), output_grad_rms=np.asarray(rms, float),
        unit_spread=np.ones(n), weight_grad_norms=np.ones(n), bias_grad_norms=np.ones(n),
        param_grad_norms={}, param_norms={},
        time=None if time is None else vglib.TimeFlow("model input", 1, np.asarray(time, float)),
        loss=1.0, inputs_finite=True,
    )  # fmt: skip
    return dataclasses.replace(flow, **changes)


def test_the_depth_rule_fires_past_its_threshold_on_the_fitted_line():
    def profile(decades: float, n: int = 11) -> list[float]:
        return [*np.logspace(-decades, 0, n - 1), 1.0]  # hidden layers, then the output

    below, above = DEPTH_DECADES - 0.1, DEPTH_DECADES + 0.1
    assert judge(_flow(profile(below))).status == "healthy"
    vanishing = judge(_flow(profile(above)))
    assert vanishing.status == "vanishing" and vanishing.depth_change == pytest.approx(10**-above)
    assert vanishing.depth_factor == pytest.approx(10 ** (-above / 9))
    assert judge(_flow(profile(-above))).status == "exploding"
    # one unusual layer (a stem, an embedding) does not decide: the fit is a median of slopes
    flat = [1.0] * 10 + [1.0]
    flat[0] = 1e-9
    assert judge(_flow(flat)).status == "healthy"
    # gradients that underflowed to exactly 0 at the input side are vanishing, whatever the fit
    zeros = judge(_flow([0.0, 0.0, *[1.0] * 8, 1.0]))
    assert zeros.status == "vanishing" and zeros.flagged == ("l0", "l1")


def test_the_gap_below_the_output_layer_counts_against_the_best_served_hidden_layer():
    flat_but_tiny = judge(_flow([1e-7, 1e-8, 2e-7, 1e-8, 1.0]))
    assert (
        flat_but_tiny.status == "vanishing"
        and flat_but_tiny.findings[0].rule == "vanishing below the output layer"
    )
    # a residual stream at 1e-3 beside branch layers scaled down to 1e-9: the stream carries the gradient
    assert judge(_flow([1e-3, 1e-9, 1e-9, 1e-3, 1e-9, 1e-9, 1.0])).status == "healthy"
    assert judge(_flow([1e4, 2e4, 1e4, 1.0])).status == "exploding"


def test_the_time_rule_and_disagreeing_axes():
    flat = [1.0] * 6
    above = TIME_DECADES + 0.1
    assert judge(_flow(flat, time=np.logspace(-above, 0, 50))).status == "vanishing"
    assert judge(_flow(flat, time=np.logspace(above, 0, 50))).status == "exploding"
    assert judge(_flow(flat, time=np.logspace(-(TIME_DECADES - 0.1), 0, 50))).status == "healthy"
    both = judge(_flow([*np.logspace(-5, 0, 5), 1.0], time=np.logspace(5, 0, 50)))
    assert both.status == "undetermined" and "disagree" in both.reason


def test_undetermined_where_the_evidence_cannot_decide():
    # B10: a NaN in the input is not exploding gradients; no advice about initialisation
    nan_input = judge(_flow([1.0] * 5, inputs_finite=False))
    assert nan_input.status == "undetermined" and "NaN" in nan_input.reason and nan_input.remedies == ()
    one_layer = judge(_flow([1.0]))
    assert one_layer.status == "undetermined" and "no depth or time" in one_layer.reason
    overflow = judge(_flow([1.0, np.inf, 1.0], nonfinite=("l1",)))
    assert overflow.status == "exploding" and overflow.flagged == ("l1",)


def test_forward_collapse_is_reported_beside_the_verdict():
    collapsed = judge(_flow([1.0] * 6, unit_spread=np.array([1.0, 0.3, 1e-6, 0.0, 0.0, 1.0])))
    assert collapsed.status == "healthy"
    (finding,) = collapsed.findings
    assert finding.rule == "forward collapse" and finding.where == "l2" and collapsed.flagged == ("l2",)


def test_a_saturated_output_and_a_cut_graph_are_findings_not_vanishing():
    saturated = judge(_flow([1e-6] * 5 + [1e-6], loss_grad_rms=1.0))
    assert saturated.status == "healthy" and [f.rule for f in saturated.findings] == ["saturated output"]
    torch.manual_seed(0)

    class Squashed(nn.Module):  # logits pushed into the sigmoid's flat tail, scored by MSE
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
            )

        def forward(self, x):
            return torch.sigmoid(self.body(x) + 10.0)

    report = vglib.diagnose(Squashed(), torch.randn(64, 8), torch.rand(64, 1))
    assert report.status == "healthy" and "saturated output" in [f.rule for f in report.findings]
    # at an offset of 20 the sigmoid rounds to exactly 1 in float32: every gradient is exactly 0,
    # from the output on, which is not vanishing over depth
    zero = judge(_flow([0.0, 0.0, 0.0, 0.0], loss_grad_rms=0.1))
    assert zero.status == "healthy" and [f.rule for f in zero.findings] == ["saturated output"]

    class Cut(nn.Module):  # a detach() in the middle: the first two layers get no gradient at all
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(6))
            self.head = nn.Linear(16, 1)

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                x = torch.relu(layer(x))
                x = x.detach() if i == 1 else x
            return self.head(x)

    cut = vglib.diagnose(Cut(), torch.randn(32, 16), torch.randn(32, 1))
    assert cut.flow.unreached == ("layers.0", "layers.1") and cut.status == "healthy"
    assert cut.findings[0].rule == "no gradient" and set(cut.flagged) >= {"layers.0", "layers.1"}


def test_diagnose_gives_the_three_verdicts_on_mlps():
    x, y = vglib.probe_batch(64, batch_size=128, seed=0)
    assert vglib.diagnose(vglib.build_mlp(20, 64, "sigmoid", "default"), x, y).status == "vanishing"
    healthy = vglib.diagnose(vglib.build_mlp(10, 64, "relu", "he"), x, y)
    assert healthy.status == "healthy" and healthy.flagged == ()
    scaled = vglib.build_mlp(10, 64, "relu", "he")
    with torch.no_grad():
        for layer in scaled:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(3.0)
    assert vglib.diagnose(scaled, x, y).status == "exploding"


def test_equal_weight_gradients_do_not_hide_a_vanishing_backward_signal():
    # Glorot & Bengio 2010, section 4.2; review finding 3a: every ||dL/dW|| is about 3e-22
    torch.manual_seed(0)
    layers = [nn.Linear(64, 64, bias=False) for _ in range(20)]
    for layer in layers:
        nn.init.normal_(layer.weight, std=0.01)
    model = nn.Sequential(*[m for layer in layers for m in (layer, nn.Tanh())], nn.Linear(64, 1, bias=False))
    x, y = torch.randn(32, 64), torch.randn(32, 1)
    report = vglib.diagnose(model, x, y)
    weights = report.flow.weight_grad_norms[:-1]
    assert weights.max() / weights.min() < 10  # the weight gradients are level ...
    assert report.status == "vanishing" and report.depth_change < 1e-15  # ... the backward signal is not


class _Temperature(nn.Module):
    """B2: a deep sigmoid net with a learnable output temperature on the root module."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16 if i == 0 else 64, 64) for i in range(20)])
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=0.05)
        self.head = nn.Linear(64, 3)
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x):
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return self.head(x) / self.temperature


def test_a_root_parameter_does_not_flip_the_verdict():
    torch.manual_seed(0)
    report = vglib.diagnose(_Temperature(), torch.randn(32, 16), torch.randint(0, 3, (32,)))
    assert report.layer_names[0] == "layers.0" and report.layer_names[-1] == "_Temperature"
    assert report.status == "vanishing"


def test_a_transformer_encoder_is_not_judged_by_a_module_it_never_calls():
    # B1: MultiheadAttention's out_proj was taken as the output layer
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.Sequential(
        nn.Embedding(100, 32), nn.TransformerEncoder(layer, 1), nn.Flatten(), nn.Linear(32 * 8, 3)
    )
    report = vglib.diagnose(model, torch.randint(0, 100, (16, 8)), torch.randint(0, 3, (16,)))
    assert report.status == "healthy" and report.layer_names[-1] == "3"
    assert "1.layers.0.self_attn.out_proj" in report.flow.uncalled


class _Scaled(nn.Module):
    """A residual MLP whose branches are scaled by LayerScale gammas (B3) or start at zero (B4)."""

    def __init__(self, gamma: float, depth: int = 6):
        super().__init__()
        self.stem, self.head = nn.Linear(16, 32), nn.Linear(32, 3)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
            for _ in range(depth)
        )
        self.gammas = nn.ParameterList(nn.Parameter(torch.full((32,), gamma)) for _ in range(depth))
        if gamma == 0.0:
            for branch in self.branches:
                nn.init.zeros_(branch[-1].weight)

    def forward(self, x):
        h = self.stem(x)
        for branch, gamma in zip(self.branches, self.gammas, strict=True):
            h = h + gamma * branch(h)
        return self.head(h)


@pytest.mark.parametrize("gamma", [1e-6, 0.0, 0.1])
def test_small_or_zero_initial_branches_are_healthy(gamma):
    # B3: a LayerScale gamma of 1e-6 read as exploding; B4: zero-initialised branches as vanishing
    torch.manual_seed(0)
    report = vglib.diagnose(_Scaled(gamma), torch.randn(32, 16), torch.randint(0, 3, (32,)))
    assert report.status == "healthy", report.reason


class _LSTMClassifier(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.emb, self.lstm, self.head = (
            nn.Embedding(vocab, 32),
            nn.LSTM(32, 32, batch_first=True),
            nn.Linear(32, 2),
        )

    def forward(self, tokens):
        return self.head(self.lstm(self.emb(tokens))[0][:, -1])


def test_the_verdict_does_not_depend_on_the_vocabulary():
    # B5: the embedding's norm grows with the vocabulary, the rows used do not
    tokens, y = torch.randint(0, 100, (8, 20)), torch.randint(0, 2, (8,))
    reports = []
    for vocab in (100, 50_000):
        torch.manual_seed(0)
        model = _LSTMClassifier(vocab)
        reports.append(vglib.diagnose(model, tokens, y))
    assert reports[0].status == reports[1].status
    assert reports[0].time_change == pytest.approx(reports[1].time_change, rel=0.5)


def test_vanishing_through_time_is_seen_in_rnns():
    # B6: an nn.RNN whose input gradient is exactly 0 at t = 1 was "a single hidden layer"
    torch.manual_seed(0)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.RNN(8, 64, batch_first=True), nn.Linear(64, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    report = vglib.diagnose(Classifier(), torch.randn(8, 100, 8), torch.randint(0, 2, (8,)))
    assert report.status == "vanishing" and report.time_change < 1e-10
    assert report.findings[0].rule == "vanishing over time" and "at rnn" in report.findings[0].where
    # vglib's own failing ElmanRNN at T = 100 (recurrence chapter), found without naming the axis
    x, y = vglib.adding_problem(16, 100, seed=0)
    elman = vglib.diagnose(vglib.build_rnn(32, activation="tanh", seed=0), x, y)
    assert elman.status == "vanishing" and elman.flow.time.steps == 100


def test_a_single_layer_is_undetermined_and_one_hidden_layer_is_judged_against_the_output():
    report = vglib.diagnose(nn.Linear(8, 3), torch.randn(8, 8), torch.randint(0, 3, (8,)))
    assert report.status == "undetermined" and "time_dim" in report.reason and report.remedies == ()
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    report = vglib.diagnose(cnn, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    assert (
        report.layer_names == ("0", "3")
        and report.status == "healthy"
        and "one hidden layer" in report.reason
    )
    with torch.no_grad():
        cnn[3].weight.mul_(1e-5)  # the head passes on a hundred-thousandth of its gradient
    assert vglib.diagnose(cnn, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))).status == "vanishing"


def test_nan_input_is_undetermined():
    model = vglib.build_mlp(6, 16, "relu", "he")
    x, y = vglib.probe_batch(16, batch_size=8, seed=0)
    x[0, 0] = float("nan")
    report = vglib.diagnose(model, x, y)
    assert report.status == "undetermined" and report.remedies == ()


def test_report_prints_full_names_and_points_to_remedies():
    # B18: names were cut at 23 characters
    x, y = vglib.probe_batch(32, batch_size=64, seed=0)
    report = vglib.diagnose(vglib.build_mlp(15, 32, "sigmoid", "default"), x, y)
    text = str(report)
    assert text.startswith("status: VANISHING") and "finding: vanishing over depth" in text
    assert "linear1" in report.flagged and "<-- look here" in text
    assert "chapter: Initialisation" in text and len(report.layer_names) == 16
    torch.manual_seed(0)
    long_names = nn.Sequential()
    long_names.add_module("encoder_layers_0_self_attention_query", nn.Linear(4, 8))
    long_names.add_module("encoder_layers_0_self_attention_value", nn.Linear(8, 8))
    long_names.add_module("encoder_layers_0_self_attention_output", nn.Linear(8, 2))
    text = str(vglib.diagnose(long_names, torch.randn(8, 4), torch.randn(8, 2)))
    assert all(name in text for name, _ in long_names.named_children())


def test_diagnose_refuses_what_it_cannot_measure_with_a_clear_message():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    with pytest.raises(ValueError, match="no parameters"):
        vglib.diagnose(nn.Sequential(nn.ReLU()), torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(
        ValueError, match="inside layer '0' \\(Conv2d, which expects inputs of shape \\(batch, 1"
    ):
        vglib.diagnose(cnn, torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,)))
    # B16: a non-scalar loss, a float loss
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="scalar"):
        vglib.diagnose(cnn, x, y, lambda out, t: nn.functional.cross_entropy(out, t, reduction="none"))
    with pytest.raises(TypeError, match="scalar torch.Tensor"):
        vglib.diagnose(cnn, x, y, lambda out, t: 0.5)
    frozen = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)).requires_grad_(False)
    with pytest.raises(ValueError, match="does not depend on any parameter"):
        vglib.diagnose(frozen, torch.randn(4, 2), torch.randn(4, 2))


def test_loss_stalled():
    rng = np.random.default_rng(0)
    flat = 1.0 + 0.05 * rng.standard_normal(200)
    falling = np.linspace(2.0, 0.5, 200) + 0.05 * rng.standard_normal(200)
    assert vglib.loss_stalled(flat) and not vglib.loss_stalled(falling)
    # minibatch noise larger than the trend: a 3% dip in one window is not progress
    noisy_flat = 1.0 + 0.3 * rng.standard_normal(200)
    assert vglib.loss_stalled(noisy_flat)
    assert not vglib.loss_stalled(np.append(flat, [np.inf] * 100))
    with pytest.raises(ValueError, match="at least 100 losses"):
        vglib.loss_stalled(flat[:99], window=50)


def test_verdict_matrix_counts_each_label_and_verdict():
    cases = {
        "a": {"label": "healthy", "verdict": "healthy"},
        "b": {"label": "healthy", "verdict": "healthy"},
        "c": {"label": "ambiguous", "verdict": "undetermined"},
        "d": {"label": "vanishing", "verdict": "exploding"},
    }
    rows = {line.split()[0]: line.split()[1:] for line in vglib.verdict_matrix(cases).splitlines()[1:]}
    assert rows["healthy"] == ["2", "0", "0", "0", "2"] and rows["ambiguous"] == ["0", "0", "0", "1", "1"]
    assert rows["vanishing"] == ["0", "0", "1", "0", "1"] and rows["exploding"] == ["0"] * 5
    with pytest.raises(ValueError, match="labels must be in"):
        vglib.verdict_matrix({"e": {"label": "dubious", "verdict": "healthy"}})


def test_spreads_below_float32_resolution_print_as_a_bound():
    # a 20-layer default-init sigmoid net collapses its forward signal to float32's rounding
    model = vglib.build_mlp(20, 64, "sigmoid", "default", seed=0, in_features=16)
    x, y = vglib.teacher_student(64, seed=0)
    report = vglib.diagnose(model, x, y)
    spreads = report.flow.unit_spread
    assert (spreads < vglib.diagnosis.SPREAD_RESOLUTION).any() and (spreads > 1e-3).any()
    rows = {line.split()[0]: line for line in str(report).splitlines() if line.startswith("linear")}
    for name, spread in zip(report.layer_names, spreads, strict=True):
        if name in rows:
            shown = "<1e-06" if spread < 1e-6 else f"{spread:.2g}"
            assert f" {shown} " in rows[name]


def test_remedies_follow_what_was_found():
    # over time: the recurrent remedies, not the depth ones
    with vglib.torch_seed(0):
        lstm = vglib.examples.AddingLSTM()
    sequences, sums = vglib.adding_problem(64, 100, seed=0)
    report = vglib.diagnose(lstm, sequences, sums)
    assert report.status == "vanishing"
    assert any("forget-gate bias" in r for r in report.remedies)
    assert not any("He for ReLU" in r for r in report.remedies)
    # exact zeros (a ReLU net dead at initialisation): not a scale problem
    dead, _ = vglib.examples.lookalike("dead ReLUs")
    x, y = vglib.teacher_student(64, seed=0)
    report = vglib.diagnose(dead, x, y)
    assert report.status == "vanishing" and "exactly 0" in report.reason
    assert "exactly 0, not small" in report.remedies[0]
    # over depth, by the fit: the depth remedies
    report = vglib.diagnose(vglib.build_mlp(20, 64, "sigmoid", "default", seed=0, in_features=16), x, y)
    assert any("He for ReLU" in r for r in report.remedies)
    assert not any("exactly 0" in r for r in report.remedies)
