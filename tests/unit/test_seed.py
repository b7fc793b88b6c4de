"""seed_everything: one call makes torch, numpy and random repeat themselves."""

import math
import random

import numpy as np
import pytest
import torch

import vglib


def draw():
    return random.random(), float(np.random.rand())  # noqa: NPY002, float(torch.rand(1))


def test_seeding_repeats_every_generator():
    vglib.seed_everything(11)
    first = draw()
    vglib.seed_everything(11)
    assert draw() == first
    vglib.seed_everything(12)
    assert draw() != first


def test_threads_are_fixed_unless_asked_not_to():
    before = torch.get_num_threads()
    try:
        vglib.seed_everything(0, threads=1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        vglib.seed_everything(0, threads=None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_seed_restores_the_outer_state():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with vglib.torch_seed(99):
        inside = torch.rand(2)
    torch.testing.assert_close(torch.rand(2), expected)
    with vglib.torch_seed(99):
        torch.testing.assert_close(torch.rand(2), inside)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seeds_are_rejected(seed):
    with pytest.raises(ValueError, match="non-negative int"):
        vglib.seed_everything(seed)


def test_seed_offset_zero_or_unset_changes_nothing(monkeypatch):
    monkeypatch.delenv("VGLIB_SEED_OFFSET", raising=False)
    net = vglib.build_mlp(3, 8, "tanh", "xavier", seed=4)
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "0")
    assert vglib.shifted_seed(4) == 4
    again = vglib.build_mlp(3, 8, "tanh", "xavier", seed=4)
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_seed_offset_redraws_models_data_and_batches_repeatably(monkeypatch):
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "0")
    base = (vglib.build_mlp(3, 8, "relu", "he", seed=0).linear1.weight, vglib.probe_batch(8, seed=0)[0],
            vglib.adding_problem(4, 10, seed=0)[0], vglib.teacher_student(4, seed=0)[1])  # fmt: skip
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "3")
    shifted = (vglib.build_mlp(3, 8, "relu", "he", seed=0).linear1.weight, vglib.probe_batch(8, seed=0)[0],
               vglib.adding_problem(4, 10, seed=0)[0], vglib.teacher_student(4, seed=0)[1])  # fmt: skip
    repeated = vglib.build_mlp(3, 8, "relu", "he", seed=0).linear1.weight
    assert all(not torch.equal(a, b) for a, b in zip(base, shifted, strict=True))
    assert torch.equal(shifted[0], repeated)
    # an offset is an independent draw, not a relabelling of the seeds: seed 0 at offset 3 is not seed 3
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "0")
    assert not torch.equal(shifted[1], vglib.probe_batch(8, seed=3)[0])


def test_seed_everything_follows_the_offset(monkeypatch):
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "0")
    vglib.seed_everything(0)
    plain = torch.rand(3)
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "1")
    vglib.seed_everything(0)
    assert not torch.equal(torch.rand(3), plain)


@pytest.mark.parametrize("raw", ["-1", "one", "1.5"])
def test_bad_seed_offsets_name_the_variable(monkeypatch, raw):
    monkeypatch.setenv("VGLIB_SEED_OFFSET", raw)
    with pytest.raises(ValueError, match="VGLIB_SEED_OFFSET must be an integer >= 0"):
        vglib.build_mlp(2, 4, "relu", "he")


def test_vglib_threads_sets_the_thread_count_unless_the_call_does(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("VGLIB_THREADS", "2")
        vglib.seed_everything(0)
        assert torch.get_num_threads() == 2
        vglib.seed_everything(0, threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("VGLIB_THREADS", "0")
        with pytest.raises(ValueError, match="VGLIB_THREADS must be an integer >= 1"):
            vglib.seed_everything(0)
        monkeypatch.delenv("VGLIB_THREADS")
        vglib.seed_everything(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_over_seeds_gives_the_median_and_range_of_independent_draws():
    spread = vglib.over_seeds(
        lambda seed: float(vglib.probe_batch(64, seed=seed)[0].var()), seeds=(0, 1, 2, 3, 4)
    )
    assert spread.seeds == (0, 1, 2, 3, 4) and len(set(spread.values)) == 5  # other draws, other values
    assert spread.low <= spread.median <= spread.high
    assert spread.median == sorted(spread.values)[2]
    assert 0.9 < spread.median < 1.1  # the variance of N(0, 1) draws
    assert format(spread, ".2f") == f"{spread.median:.2f} ({spread.low:.2f}–{spread.high:.2f})"


def test_over_seeds_refuses_repeated_or_missing_seeds():
    with pytest.raises(ValueError, match="distinct"):
        vglib.over_seeds(float, seeds=(1, 1))
    with pytest.raises(ValueError, match="distinct"):
        vglib.over_seeds(float, seeds=())


def test_a_seed_spread_pads_the_whole_text_to_the_width_asked_for():
    spread = vglib.SeedSpread((0, 1, 2), (0.25, 0.5, 0.75))
    assert f"{spread:>24.2f}" == "    0.50 (0.25–0.75)".rjust(24)
    assert f"{spread:<20.1f}" == "0.5 (0.2–0.8)".ljust(20)


def test_a_seed_spread_writes_a_value_that_is_not_finite_as_the_word_asked_for():
    spread = vglib.SeedSpread((0, 1, 2), (300.0, 350.0, math.inf))
    assert spread.text(".0f") == "350 (300–never)"
    assert spread.text(".1f", missing="diverged") == "350.0 (300.0–diverged)"
    finite = vglib.SeedSpread((0, 1), (0.25, 0.75))
    assert finite.text(".2f") == f"{finite:.2f}" == "0.50 (0.25–0.75)"
    never = vglib.SeedSpread((0, 1, 2), (math.inf,) * 3)
    assert never.text(".0f") == "never (never–never)"
