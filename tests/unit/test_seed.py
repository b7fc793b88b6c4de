"""seed_everything: one call makes torch, numpy and random repeat themselves."""

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
