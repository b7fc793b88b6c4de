"""The committed trainable-depth sweep (``benchmarks/results/trainable_depth.json``, written by
``benchmarks/trainable_depth.py --write`` on the pinned kernel path of ``vglib.records``, one thread
per process) covers the whole sweep and is what the code computes. Two re-runs, each for the whole
budget of ``TRAINABILITY_STEPS`` steps in a subprocess on the pinned path: one random depth of at
most ``MAX_RECHECK_DEPTH`` layers (every ``sigma_w2``, seed and learning rate, one batched ensemble
of 120 networks; at these depths every network trained), and the two depths that bracket the
boundary ``L_max`` of one random ``sigma_w2`` (its 15 networks at each depth), so that verdicts
that set an ``L_max`` are re-checked too. Every network's training accuracy at every evaluation,
the final one included, must be exactly the recorded one, so every trained/not-trained verdict is
too. The bracket draw is restricted to the ``sigma_w2`` whose deeper bracket depth is at most
``MAX_BRACKET_DEPTH`` (1, 3.5 and 4: 30-36 or 36-44 layers, about 25-30 CPU-seconds), to keep
the whole file under about 90 CPU-seconds: the brackets at 44-54 (3), 54-80 and 80-120 layers are
left to ``make``-time re-runs (depth 24 takes about 50 CPU-seconds for all its networks, depth 120
about five times that; the 44-54 bracket of 3 alone about 45). A network
trained in a smaller ensemble gets the same bits as in the sweep's (each member is seeded and
computed on its own).

The exact re-run needs a CPU of the vendor that wrote the file on which PyTorch runs its AVX2
kernels under the pinned environment (MKL keeps its AVX2 branch reproducible across Intel CPUs);
elsewhere it is skipped, with the reason: training amplifies another kernel path's rounding, in the
chaotic phase by definition, so there is nothing exact to compare.

The depth and the ``sigma_w2`` are drawn afresh each day (``VGLIB_RECHECK_SEED`` fixes them)."""

import datetime
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from vglib import trainability as tr
from vglib.records import RECORDING_PATH, cpu_vendor, pinned_path_available

ROOT = Path(__file__).resolve().parents[1]
FILE = json.loads((ROOT / tr.RESULTS_FILE).read_text())
CELLS = tr.trainability_from_json(FILE["cells"])
MAX_RECHECK_DEPTH = 24
"""The deepest depth the daily re-run may draw (depth 24: about 50 CPU-seconds on one thread)."""
MAX_BRACKET_DEPTH = 44
"""The deepest bracket depth of a ``sigma_w2`` the daily bracket re-run may draw."""


def test_the_file_covers_the_whole_sweep_once_on_the_pinned_path():
    meta = FILE["meta"]
    assert meta["steps"] == tr.TRAINABILITY_STEPS and meta["eval_every"] == tr.TRAINABILITY_EVAL_EVERY
    assert meta["width"] == tr.TRAINABILITY_WIDTH and meta["sigma_b2"] == tr.TRAINABILITY_SIGMA_B2
    assert meta["threshold"] == tr.TRAINABILITY_THRESHOLD
    assert tuple(meta["lrs"]) == tr.TRAINABILITY_LRS and tuple(meta["seeds"]) == tr.TRAINABILITY_SEEDS
    assert tuple(meta["depths"]) == tr.TRAINABILITY_DEPTHS
    assert tuple(meta["sigma_w2s"]) == tr.TRAINABILITY_SIGMA_W2
    cpu = meta["cpu"]
    assert cpu["env"] == RECORDING_PATH and cpu["capability"] == "AVX2" and cpu["threads"] == 1, cpu
    keys = [(c.sigma_w2, c.depth, c.seed, c.lr) for c in CELLS]
    expected = {
        (w, d, s, lr)
        for w in tr.TRAINABILITY_SIGMA_W2
        for d in tr.TRAINABILITY_DEPTHS
        for s in tr.TRAINABILITY_SEEDS
        for lr in tr.TRAINABILITY_LRS
    }
    assert len(keys) == len(set(keys)) and set(keys) == expected
    evaluations = tr.TRAINABILITY_STEPS // tr.TRAINABILITY_EVAL_EVERY
    assert all(len(c.accuracy) == evaluations for c in CELLS)


RERUN = """
import json, sys
import vglib
from vglib import trainability as tr
vglib.seed_everything(0, threads=1)  # as benchmarks/trainable_depth.py runs each depth
sigma_w2s = tuple(float(w) for w in sys.argv[2:]) or tr.TRAINABILITY_SIGMA_W2
cells = tr.run_depth(int(sys.argv[1]), sigma_w2s=sigma_w2s)
print(json.dumps(tr.trainability_to_json(cells)))
"""


def draw() -> random.Random:
    return random.Random(os.environ.get("VGLIB_RECHECK_SEED") or datetime.date.today().isoformat())


def skip_unless_pinned_path() -> None:
    vendor = FILE["meta"]["cpu"]["vendor"]
    if not pinned_path_available(vendor):
        pytest.skip(f"written on a {vendor} CPU with AVX2; this CPU ({cpu_vendor()}) differs or lacks AVX2, "
                    "so its pinned path need not give the same bits")  # fmt: skip


def assert_rerun_reproduces(depth: int, sigma_w2s: tuple[float, ...] = ()) -> list[tr.TrainabilityCell]:
    """Re-run ``depth`` (only ``sigma_w2s`` if given) on the pinned path and compare every accuracy."""
    env = {**os.environ, **RECORDING_PATH, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("VGLIB_SEED_OFFSET", None)
    command = [sys.executable, "-c", RERUN, str(depth), *map(str, sigma_w2s)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = tr.trainability_from_json(json.loads(result.stdout))
    recorded = {(c.sigma_w2, c.seed, c.lr): c for c in CELLS
                if c.depth == depth and (not sigma_w2s or c.sigma_w2 in sigma_w2s)}  # fmt: skip
    assert sorted((c.sigma_w2, c.seed, c.lr) for c in fresh) == sorted(recorded)
    for cell in fresh:
        old = recorded[cell.sigma_w2, cell.seed, cell.lr]
        pairs = zip(cell.accuracy, old.accuracy, strict=True)
        where = (depth, cell.sigma_w2, cell.seed, cell.lr, cell.accuracy, old.accuracy)
        assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in pairs), where
    return fresh


def test_a_random_depth_reproduces_its_whole_training_exactly_on_the_pinned_path():
    skip_unless_pinned_path()
    depth = draw().choice([d for d in tr.TRAINABILITY_DEPTHS if d <= MAX_RECHECK_DEPTH])
    fresh = assert_rerun_reproduces(depth)
    depth_cells = [c for c in CELLS if c.depth == depth]
    assert tr.success_table(fresh)[2].tolist() == tr.success_table(depth_cells)[2].tolist()


def test_the_bracket_of_a_random_boundary_reproduces_exactly_on_the_pinned_path():
    skip_unless_pinned_path()
    brackets = {w: sorted({d for d, *_ in nets}) for w, nets in tr.boundary_networks(CELLS).items()}
    cheap = sorted(w for w, pair in brackets.items() if max(pair) <= MAX_BRACKET_DEPTH)
    assert cheap == [1.0, 3.5, 4.0], brackets  # the docstring names them
    rng = draw()
    rng.random()  # a draw of its own, not the depth test's
    w = rng.choice(cheap)
    fresh = [c for d in brackets[w] for c in assert_rerun_reproduces(d, (w,))]
    recorded = [c for c in CELLS if c.sigma_w2 == w and c.depth in brackets[w]]
    verdicts = tr.success_table(fresh)[2].tolist()
    assert verdicts == tr.success_table(recorded)[2].tolist()
    # the share of seeds trained falls through one half between the two depths
    assert verdicts[0][0] >= 0.5 > verdicts[0][1], (w, brackets[w], verdicts)
