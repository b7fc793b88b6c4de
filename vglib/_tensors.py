"""Small tensor helpers shared by the probes, the monitor and the diagnosis."""

from __future__ import annotations

import numpy as np
import torch

# Below this a float32 norm may have lost its squares to underflow (or above it to overflow):
# such norms are recomputed with float64 accumulation. Typical norms take the fast float32 path.
_FLOAT32_SAFE = (1e-15, 1e15)


def exact_norm(tensor: torch.Tensor | None, fast: float | None = None) -> float:
    """``||tensor||``, exact for tiny (vanishing) and huge (exploding) values alike."""
    if tensor is None:
        return 0.0
    value = float(torch.linalg.vector_norm(tensor.detach())) if fast is None else fast
    if not _FLOAT32_SAFE[0] < value < _FLOAT32_SAFE[1]:
        value = float(torch.linalg.vector_norm(tensor.detach(), dtype=torch.float64))
    return value


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy copy of ``tensor``, wherever it lives (moved to the CPU first, detached)."""
    return tensor.detach().cpu().numpy()
