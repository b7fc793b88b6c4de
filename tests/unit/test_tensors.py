"""The one way vglib turns tensors into NumPy arrays, and exact norms."""

import pathlib
import re

import numpy as np
import torch

import vglib
from vglib._tensors import exact_norm, to_numpy


def test_to_numpy_copies_detached_values_from_any_tensor():
    t = torch.arange(6.0, requires_grad=True).reshape(2, 3).T  # needs grad, not contiguous
    array = to_numpy(t)
    assert isinstance(array, np.ndarray) and array.shape == (3, 2)
    np.testing.assert_array_equal(array, [[0, 3], [1, 4], [2, 5]])


def test_every_conversion_to_numpy_in_vglib_goes_through_to_numpy():
    """A tensor on a GPU cannot become a NumPy array without moving to the CPU first: one helper
    does both, and no other place in vglib calls .numpy() (the monitor's histograms did, B23)."""
    root = pathlib.Path(vglib.__file__).parent
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(root.glob("*.py"))
        if path.name != "_tensors.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.numpy\(\)", line)
    ]
    assert not offenders, offenders


def test_exact_norm_keeps_tiny_and_huge_norms():
    tiny = torch.full((1000,), 1e-30)
    assert float(torch.linalg.vector_norm(tiny)) == 0.0  # float32 squares underflow
    assert np.isclose(exact_norm(tiny), np.sqrt(1000) * float(np.float32(1e-30)), rtol=1e-12)
    huge = torch.full((1000,), 1e30)
    assert np.isclose(exact_norm(huge), np.sqrt(1000) * 1e30, rtol=1e-6)
    assert exact_norm(None) == 0.0
