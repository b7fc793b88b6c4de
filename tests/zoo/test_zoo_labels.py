"""The zoo's committed labels (labels.toml) are complete, spread, and reproducible.

(i)   labels.toml covers every case, with enough repro cases and a spread of labels;
(ii)  the training label (b) of 8 fixed cases is recomputed (a few seconds);
(iii) the measurement label (a) of every case is recomputed (one forward/backward each).
Regenerate with `python tests/zoo/make_labels.py` (see README.md).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.zoo import labelling as L
from tests.zoo.models import CASES, ZooCase

LABELS = tomllib.loads((Path(__file__).parent / "labels.toml").read_text())["cases"]
FINAL = {"vanishing", "exploding", "healthy", "ambiguous"}
AXIS_FINAL = FINAL | {"borderline"}

# (ii): a mix of vanishing / exploding / healthy, depth and time, repro and zoo
TRAIN_SAMPLE = [
    "repro_deep_sigmoid_d20",  # vanishing (depth)
    "bug_root_temperature",  # vanishing (depth), B2
    "bug_rnn_T100",  # vanishing (time), B6
    "repro_deep_relu_1p5he",  # exploding (depth, divergence)
    "rnn_tanh_orth3_T50",  # exploding (time)
    "bug_layerscale_1e-6",  # healthy, B3
    "repro_resnet_zero_init_residual",  # healthy, B4
    "bug_transformer_1l",  # healthy, B1
]


def close(a: float, b: float, rel: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b) or a == 0.0 or b == 0.0:
        return a == b or abs(a - b) <= 1e-300
    return math.isclose(a, b, rel_tol=rel)


# ---------------------------------------------------------------------------------- (i)
def test_every_case_has_labels_and_the_zoo_is_big_enough():
    assert set(LABELS) == set(CASES), set(CASES) ^ set(LABELS)
    assert len(CASES) >= 40
    repro = [n for n, c in LABELS.items() if c["source"].startswith("repro:")]
    assert len(repro) >= 10, repro


def test_labels_are_spread():
    counts = Counter(c["label"] for c in LABELS.values())
    assert set(counts) <= FINAL, counts
    for label in ("vanishing", "exploding", "healthy"):
        assert counts[label] >= 3, counts


def test_every_ambiguous_case_has_a_note():
    for name, c in LABELS.items():
        if c["label"] == "ambiguous":
            assert c["note"].strip(), name


def test_final_labels_follow_the_combination_rules():
    for name, c in LABELS.items():
        axes = c["axes"]
        assert "depth" in axes, name
        for axis in axes:
            a = c[axis]
            assert a["label"] in AXIS_FINAL, (name, axis)
            assert a["label"] == L.final_axis(a["measure_label"], a["train_label"]), (name, axis)
        assert c["label"] == L.overall([c[a]["label"] for a in axes]), name
        assert c["label"] in FINAL, name


def test_cases_are_well_formed():
    for name, build in CASES.items():
        case = build()
        assert isinstance(case, ZooCase)
        assert case.name == name
        assert case.source == "zoo" or case.source.startswith("repro:"), case.source
        assert isinstance(case.model, torch.nn.Module)
        assert isinstance(case.target, torch.Tensor)
        assert isinstance(case.inputs, (torch.Tensor, tuple, dict))
        if case.time_input is not None:
            assert case.time_dim is not None
        assert (case.time_module is None) == ("time" not in LABELS[name]["axes"]), name


def test_vocabulary_size_does_not_change_the_label():
    labels = {LABELS[n]["label"] for n in ("bug_lstm_vocab100", "bug_lstm_vocab10k", "bug_lstm_vocab50k")}
    assert len(labels) == 1, labels


def test_builders_are_deterministic():
    for name in ("bug_root_temperature", "repro_resnet_bn", "dict_gru_mask"):
        a, b = CASES[name](), CASES[name]()
        for (ka, va), (kb, vb) in zip(
            a.model.state_dict().items(), b.model.state_dict().items(), strict=True
        ):
            assert ka == kb and torch.equal(va, vb), (name, ka)
        assert torch.equal(a.target, b.target)


# --------------------------------------------------------------------------------- (ii)
@pytest.mark.parametrize("name", TRAIN_SAMPLE)
def test_training_label_reproduces(name):
    committed = LABELS[name]
    train = L.train_case(name)
    for axis in committed["axes"]:
        assert train[axis]["label"] == committed[axis]["train_label"], (name, axis)
        if not committed[axis]["train_trivial"]:
            assert close(float(train[axis]["q"]), committed[axis]["train_q"], 1e-2), (name, axis)
            assert close(float(train[axis]["q_abs"]), committed[axis]["train_q_abs"], 1e-2), (name, axis)


def test_training_sample_is_mixed():
    labels = {LABELS[n]["label"] for n in TRAIN_SAMPLE}
    assert {"vanishing", "exploding", "healthy"} <= labels


# -------------------------------------------------------------------------------- (iii)
@pytest.mark.parametrize("name", list(CASES))
def test_measurement_label_reproduces(name):
    committed = LABELS[name]
    meas = L.measure_case(name)
    assert sorted(meas) == sorted(committed["axes"])
    for axis, m in meas.items():
        assert m["label"] == committed[axis]["measure_label"], (name, axis)
        assert close(float(m["ratio"]), committed[axis]["measure_ratio"], 1e-3), (name, axis)


# ------------------------------------------------------------- the repro copies are faithful
def _review_dir() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    for d in (root / "shared" / "reviews" / "repro", root.parent / "shared" / "reviews" / "repro"):
        if d.is_dir():
            return d
    return None


def test_repro_copies_are_verbatim():
    """Every copy is unchanged since it was checked against its original (the manifest holds the
    hashes of both); where the review's folder is at hand, against the original itself too."""
    here = Path(__file__).parent
    manifest = tomllib.loads((here / "repro_manifest.toml").read_text())["files"]
    copies = sorted(p.name for p in here.glob("repro_*.py"))
    assert copies == sorted(manifest), set(copies) ^ set(manifest)
    originals = _review_dir()
    for name, entry in manifest.items():
        header, body = (here / name).read_text().split("\n", 1)
        assert header.startswith(("# Copied unchanged", "# Classes")), name
        assert hashlib.sha256(body.encode()).hexdigest() == entry["copy"], f"{name} was edited"
        if originals is not None:
            original = (originals / entry["original"]).read_text()
            assert hashlib.sha256(original.encode()).hexdigest() == entry["original_sha256"], name
            if name in ("repro_mymodels.py", "repro_cases.py"):
                assert body == original, name
            else:
                for block in body.split("\n\n\n"):
                    assert block.strip() in original, (name, block[:60])


def test_repro_models_reproduce_review_numbers():
    """Numbers printed in the review (section 4) come out of the zoo's copies of its models."""
    import torch.nn.functional as F
    from torch import nn

    case = CASES["bug_rnn_T100"]()
    x = case.inputs.clone().requires_grad_(True)
    F.mse_loss(case.model(x), case.target).backward()
    per_step = x.grad.norm(dim=(0, 2))
    # B6, with float32 norms as in the review
    assert f"{per_step[-1]:.1e}" == "7.3e-02" and f"{per_step[50]:.1e}" == "1.5e-15" and per_step[0] == 0
    # the 0 at t=1 is the float32 norm underflowing: the entries are ~1e-29, the float64 norm 2.7e-29
    assert 1e-30 < float(x.grad[:, 0].double().norm()) < 1e-27

    case = CASES["bug_parametrized"]()
    with nn.utils.parametrize.cached():
        loss = F.cross_entropy(case.model(case.inputs), case.target)
        grads = torch.autograd.grad(loss, [case.model[i].weight for i in (0, 2, 4)])
    assert [round(float(g.norm()), 3) for g in grads] == [0.123, 0.139, 0.072]  # B7

    case = CASES["bug_shared_activation"]()
    outs = []

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    handle = case.model.act.register_forward_hook(keep)
    F.mse_loss(case.model(case.inputs), case.target).backward()
    handle.remove()
    assert [round(float(o.detach().mean()), 2) for o in outs] == [0.22, 0.95]  # B8
    assert [round(float(o.grad.norm()), 3) for o in outs] == [0.625, 0.171]
