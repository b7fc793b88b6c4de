"""diagnose and loss_stalled: verdicts on models with a known answer."""

import numpy as np
import pytest
import torch
from torch import nn

import vglib


def test_diagnose_gives_the_three_verdicts():
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


def test_diagnosis_report_reads_well_and_points_to_remedies():
    x, y = vglib.probe_batch(32, batch_size=64, seed=0)
    report = vglib.diagnose(vglib.build_mlp(15, 32, "sigmoid", "default"), x, y)
    text = str(report)
    assert text.startswith("status: VANISHING")
    assert "linear1" in report.flagged and "<-- look here" in text
    assert "chapter: Initialisation" in text and len(report.layer_names) == 16
    assert report.layer_types[0] == "Linear"


def test_diagnose_works_on_models_vglib_did_not_build():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    report = vglib.diagnose(cnn, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    assert report.layer_names == ("0", "3") and report.status in {"healthy", "vanishing", "exploding"}
    with pytest.raises(ValueError, match="nothing to diagnose"):
        vglib.diagnose(nn.Sequential(nn.ReLU()), torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        vglib.diagnose(cnn, torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,)))


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
