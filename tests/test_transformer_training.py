"""The committed transformer training comparisons (``benchmarks/results/transformer_training.json``,
written by ``benchmarks/transformer_training.py --write`` on the pinned kernel path of
``vglib.records``, one thread per run) cover their sweep's runs once, and are what the code computes:
one random recorded group of at most ``MAX_RECHECK_DEPTH`` blocks (a configuration with a warm-up
setting: every rate times every seed, trained as one batched ensemble as the sweep trains it) is
re-run for its first ``PREFIX`` updates in a subprocess on the pinned path, and every run's
validation and test accuracy at every evaluation up to there, and the update at which it diverged
where that lies within them, must be exactly the recorded ones (the first updates of a group are
those of its whole budget: the warm-up does not depend on the budget).

The file is the full sweep (``FULL_SWEEP``) or, until that has been run, the small trial sweep
(``TRIAL_SWEEP``, its meta says ``"trial": true``); either is checked against its own settings. A
missing file fails, naming the command that writes it.

The exact re-run needs a CPU of the vendor that wrote the file on which PyTorch runs its AVX2 kernels
under the pinned environment; elsewhere it is skipped, with the reason (training amplifies another
kernel path's rounding, so there is nothing exact to compare). The run is drawn afresh each day
(``VGLIB_RECHECK_SEED`` fixes it) and printed."""

import datetime
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from vglib import recall_bag_accuracy
from vglib import transformer_training as tt
from vglib.records import RECORDING_PATH, cpu_vendor, pinned_path_available

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / tt.RESULTS_FILE
MAX_RECHECK_DEPTH = 6
"""The deepest group the re-run may draw."""
PREFIX = 50
"""Updates re-run (one evaluation; a 6-block group of experiment A, 33 runs, takes about 25
CPU-seconds for them, 70 on a machine as loaded as the one the test suite runs on)."""


def recorded() -> tuple[list[tt.RecallRun], tt.SweepSettings, dict]:
    if not PATH.exists():
        pytest.fail(
            f"{tt.RESULTS_FILE} is missing: write it with "
            + " ".join(f"{k}={v}" for k, v in RECORDING_PATH.items())
            + " python benchmarks/transformer_training.py --write (the full sweep) or ... --trial --write "
            "(the small trial sweep, a few minutes)"
        )
    return tt.load_recall_runs(PATH)


def test_the_file_covers_its_sweep_once_on_the_pinned_path():
    runs, settings, meta = recorded()
    assert settings in (tt.FULL_SWEEP, tt.TRIAL_SWEEP), settings
    assert meta["trial"] == (settings == tt.TRIAL_SWEEP)
    assert meta["threshold"] == tt.RECALL_THRESHOLD and meta["batch"] == tt.RECALL_BATCH
    assert {k: tuple(v) for k, v in meta["splits"].items()} == tt.RECALL_SPLITS
    assert meta["bag_bound"] == recall_bag_accuracy() and meta["chance"] == tt.recall_chance()
    cpu = meta["cpu"]
    assert cpu["env"] == RECORDING_PATH and cpu["capability"] == "AVX2" and cpu["threads"] == 1, cpu
    # the sweep runs in parts (benchmarks/transformer_training.py --experiment, --max-depth): every
    # group in the file is whole, and the meta says whether groups are missing
    groups = set(settings.groups("all"))
    present = {(r.job.config, r.job.warmup_steps) for r in runs}
    assert present <= groups, present - groups
    expected = {
        tt.RecallJob(c, lr, s, w) for c, w in present for lr in settings.rates(c) for s in settings.seeds
    }
    keys = [r.job for r in runs]
    assert len(keys) == len(set(keys)) and set(keys) == expected
    assert meta["missing_groups"] == len(groups - present)
    assert not (meta["trial"] and meta["missing_groups"])
    baseline = tt.load_recall_baseline(PATH)
    assert sorted((b.lr, b.seed) for b in baseline) == sorted(
        (lr, s) for lr in settings.lrs for s in settings.seeds
    )
    steps = tuple(range(settings.eval_every, settings.steps + 1, settings.eval_every))
    assert all(r.eval_steps == steps for r in runs)
    for r in runs:  # diverged runs are NaN from their divergence on, and only they are NaN at the end
        assert r.diverged == math.isnan(r.final_test) == math.isnan(r.final_validation), r.job


RERUN = """
import json, sys
import vglib
from vglib import transformer_training as tt
vglib.seed_everything(0, threads=1)  # as benchmarks/transformer_training.py runs each group
row, settings = json.loads(sys.argv[1]), tt.SweepSettings.from_json(json.loads(sys.argv[2]))
job = tt.runs_from_json([row])[0].job
runs = tt.train_recall_group(job.config, job.warmup_steps, settings, steps=int(sys.argv[3]))
print(json.dumps(tt.runs_to_json(runs)))
"""


def test_a_random_group_reproduces_its_first_updates_exactly_on_the_pinned_path():
    runs, settings, meta = recorded()
    vendor = meta["cpu"]["vendor"]
    if not pinned_path_available(vendor):
        pytest.skip(f"written on a {vendor} CPU with AVX2; this CPU ({cpu_vendor()}) differs or lacks AVX2, "
                    "so its pinned path need not give the same bits")  # fmt: skip
    draw_seed = os.environ.get("VGLIB_RECHECK_SEED") or datetime.date.today().isoformat()
    present = {(r.job.config, r.job.warmup_steps) for r in runs}
    groups = [g for g in settings.groups("all") if g[0].depth <= MAX_RECHECK_DEPTH and g in present]
    config, warmup = random.Random(draw_seed).choice(groups)
    print(f"re-running the first {PREFIX} updates of {config.label}, warm-up {warmup} "
          f"(drawn with VGLIB_RECHECK_SEED={draw_seed!r})")  # fmt: skip
    recorded_group = {r.job: r for r in runs if r.job.config == config and r.job.warmup_steps == warmup}
    prefix = min(PREFIX, settings.steps)
    env = {**os.environ, **RECORDING_PATH, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("VGLIB_SEED_OFFSET", None)
    row = json.dumps(tt.runs_to_json([next(iter(recorded_group.values()))])[0])
    command = [sys.executable, "-c", RERUN, row, json.dumps(settings.to_json()), str(prefix)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh_group = tt.runs_from_json(json.loads(result.stdout))
    assert {r.job for r in fresh_group} == set(recorded_group)
    for fresh in fresh_group:
        old = recorded_group[fresh.job]
        n = len(fresh.eval_steps)
        where = (draw_seed, old.job)
        assert fresh.eval_steps == old.eval_steps[:n] and fresh.eval_steps[-1] == prefix, where
        was_within = old.diverged_at if old.diverged_at is not None and old.diverged_at <= prefix else None
        assert fresh.diverged_at == was_within, (*where, fresh.diverged_at, old.diverged_at)
        for new, was in ((fresh.validation, old.validation[:n]), (fresh.test, old.test[:n])):
            same = [a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(new, was, strict=True)]
            assert all(same), (*where, new, was)


RERUN_BASELINE = """
import json, sys
import vglib
from vglib import transformer_training as tt
vglib.seed_everything(0, threads=1)
settings = tt.SweepSettings.from_json(json.loads(sys.argv[3]))
print(json.dumps(tt.baseline_to_json([tt.train_recall_mlp(float(sys.argv[1]), int(sys.argv[2]), settings)])))
"""


def test_a_random_baseline_run_reproduces_exactly_on_the_pinned_path():
    """One MLP baseline run, drawn as the group above, re-run for its whole budget (a few seconds)."""
    _, settings, meta = recorded()
    vendor = meta["cpu"]["vendor"]
    if not pinned_path_available(vendor):
        pytest.skip(f"written on a {vendor} CPU with AVX2; this CPU ({cpu_vendor()}) differs or lacks AVX2")
    draw_seed = os.environ.get("VGLIB_RECHECK_SEED") or datetime.date.today().isoformat()
    old = random.Random(draw_seed).choice(tt.load_recall_baseline(PATH))
    print(
        f"re-running the MLP baseline at lr {old.lr:.2e}, seed {old.seed} (VGLIB_RECHECK_SEED={draw_seed!r})"
    )
    env = {**os.environ, **RECORDING_PATH, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("VGLIB_SEED_OFFSET", None)
    command = [
        sys.executable,
        "-c",
        RERUN_BASELINE,
        repr(old.lr),
        str(old.seed),
        json.dumps(settings.to_json()),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (fresh,) = tt.baseline_from_json(json.loads(result.stdout))
    same = [
        a == b or (math.isnan(a) and math.isnan(b))
        for a, b in zip(
            (fresh.train, fresh.validation, fresh.test), (old.train, old.validation, old.test), strict=True
        )
    ]
    assert fresh.lr == old.lr and fresh.seed == old.seed and all(same), (draw_seed, fresh, old)
