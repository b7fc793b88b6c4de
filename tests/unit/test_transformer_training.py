"""vglib.transformer_training: one run against a hand-written loop, a batched group against its runs
alone (vglib.train), divergence, the lr choice on a
hand-made table, the summaries, the JSON round trip, the experiments' job lists, bad input."""

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vglib as vg
from vglib import transformer_training as tt
from vglib._seed import generator as seeded_generator

TINY = tt.SweepSettings(steps=6, eval_every=3, warmup_steps=2, lrs=(1e-3,), seeds=(0,),
                        warmup_depth=1, scaling_depths=(1,))  # fmt: skip


def _hand_written_updates(job: tt.RecallJob, steps: int) -> Iterator[tuple[int, nn.Module]]:
    """The updates of train_recall's run, written out: Adam, linear warm-up, minibatches of 64 drawn
    with the run's seed; yields ``(update, model)`` after each, the update's gradients in ``.grad``."""
    x, y = tt.recall_splits()["train"]
    model = job.config.build(job.seed)
    opt = torch.optim.Adam(model.parameters(), lr=job.lr)
    generator = seeded_generator(job.seed)
    for step in range(1, steps + 1):
        if job.warmup_steps:
            for group in opt.param_groups:
                group["lr"] = job.lr * min(1.0, step / job.warmup_steps)
        index = torch.randint(0, len(x), (tt.RECALL_BATCH,), generator=generator)
        opt.zero_grad()
        F.cross_entropy(model(x[index]), y[index]).backward()
        opt.step()
        yield step, model


def _hand_written(job: tt.RecallJob, settings: tt.SweepSettings) -> tuple[list[float], list[float]]:
    """The same run as train_recall, written out, with the accuracy on the validation and test
    splits after every eval_every updates."""
    splits = tt.recall_splits()
    validation, test = [], []
    for step, model in _hand_written_updates(job, settings.steps):
        if step % settings.eval_every == 0:
            with torch.no_grad():
                for name, out in (("validation", validation), ("test", test)):
                    xs, ys = splits[name]
                    out.append(float((model(xs).argmax(1) == ys).double().mean()))
    return validation, test


@pytest.mark.parametrize("warmup", [0, 2])
def test_a_run_is_the_hand_written_loop(warmup):
    job = tt.RecallJob(tt.TransformerConfig("post", depth=2), 3e-3, 1, warmup)
    run = tt.train_recall(job, TINY, flush_denormal=False)
    validation, test = _hand_written(job, TINY)
    assert run.eval_steps == (3, 6) and not run.diverged
    assert run.validation == tuple(validation) and run.test == tuple(test)  # exactly
    assert run.seconds > 0


def test_runs_repeat_and_leave_the_global_rng_and_denormal_mode_alone():
    job = tt.RecallJob(tt.TransformerConfig("pre", "layerscale", depth=2), 1e-2, 0)
    state = torch.get_rng_state()
    first, second = tt.train_recall(job, TINY), tt.train_recall(job, TINY)
    assert first == second  # seconds are not compared
    assert torch.equal(torch.get_rng_state(), state)
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert float(tiny * 1.0) > 0  # denormals are back on after the run


def test_an_absurd_learning_rate_diverges_and_stops_early():
    settings = tt.SweepSettings(steps=60, eval_every=3, warmup_steps=1)
    job = tt.RecallJob(tt.TransformerConfig("none", depth=2), 1e6, 0)
    run = tt.train_recall(job, settings)
    assert run.diverged and 1 < run.diverged_at < 60
    assert len(run.eval_steps) == 20 and math.isnan(run.final_test) and math.isnan(run.final_validation)
    before = [v for s, v in zip(run.eval_steps, run.test, strict=True) if s < run.diverged_at]
    assert all(math.isfinite(v) for v in before[:-1])
    assert all(math.isnan(v) for s, v in zip(run.eval_steps, run.test, strict=True) if s >= run.diverged_at)
    assert not run.trained()


def _run(config, lr, seed, validation, test=None, warmup=0, diverged_at=None):
    test = validation if test is None else test
    return tt.RecallRun(tt.RecallJob(config, lr, seed, warmup), (10, 20), validation, test, diverged_at)


def _table():
    """A hand-made results table of one configuration: three rates, three seeds."""
    c = tt.TransformerConfig("post", depth=2)
    nan = math.nan
    return c, [
        # lr 1e-3: medians 0.5 (no divergence)
        _run(c, 1e-3, 0, (0.3, 0.5)), _run(c, 1e-3, 1, (0.3, 0.4)), _run(c, 1e-3, 2, (0.3, 0.6)),
        # lr 1e-2: the best medians (0.95), test reaches 0.9 at step 10 or 20
        _run(c, 1e-2, 0, (0.5, 0.95), (0.9, 0.95)), _run(c, 1e-2, 1, (0.4, 0.92), (0.5, 0.91)),
        _run(c, 1e-2, 2, (0.5, 0.97), (0.5, 0.97)),
        # lr 1e-1: one seed diverged: ranked after every clean rate
        _run(c, 1e-1, 0, (0.9, 0.6)), _run(c, 1e-1, 1, (0.9, 0.5)),
        _run(c, 1e-1, 2, (nan, nan), diverged_at=12),
        # with warm-up at 1e-1: all seeds train
        _run(c, 1e-1, 0, (0.9, 0.99), warmup=5), _run(c, 1e-1, 1, (0.9, 0.98), warmup=5),
        _run(c, 1e-1, 2, (0.9, 0.97), warmup=5),
    ]  # fmt: skip


def test_the_lr_choice_follows_the_grid_rule_on_a_hand_made_table():
    c, runs = _table()
    assert tt.choose_recall_lr(runs, c) == 1e-2  # 1e-1 had a diverged seed
    assert tt.choose_recall_lr(runs, c, 5) == 1e-1
    # without the clean rates, the diverged one is all there is
    assert tt.choose_recall_lr([r for r in runs if r.job.lr == 1e-1], c) == 1e-1
    # ties go to the smaller rate, and tied_rates names the others
    tie = [_run(c, lr, s, (0.5, 0.8)) for lr in (1e-2, 1e-3) for s in (0, 1)]
    assert tt.choose_recall_lr(tie, c) == 1e-3 and tt.tied_rates(tie, c) == [1e-2]
    assert tt.tied_rates(runs, c) == []  # 1e-2's 0.95 is alone; 1e-1 had a diverged seed


def test_summaries_on_a_hand_made_table(monkeypatch):
    c, runs = _table()
    s = tt.summarize_recall(runs, c)
    assert (s.lr, s.test.values, s.trained, s.diverged, s.seeds) == (1e-2, (0.95, 0.91, 0.97), 3, 0, 3)
    assert s.test.median == 0.95 and s.steps.values == (10.0, 20.0, 20.0)
    assert not s.edge  # 1e-2 lies between 1e-3 and 1e-1
    assert s.reached == 3
    assert s.row() == {"chosen lr": "1.0e-02", "final test accuracy": "0.95 (0.91–0.97)",
                       "updates to 0.9": "20 (10–20)", "seeds trained": "3 of 3"}  # fmt: skip
    glued = {}
    monkeypatch.setattr(vg._glue, "glue", lambda name, value, fmt=None: glued.setdefault(name, value))
    s.glue("b6_pre")  # what the page glues: the row's cells under the group's prefix
    assert glued == {"b6_pre_lr": "1.0e-02", "b6_pre_acc": "0.95 (0.91–0.97)", "b6_pre_steps": "20 (10–20)",
                     "b6_pre_reached": 3}  # fmt: skip
    by_lr = tt.spread_by_lr(runs, c)
    assert list(by_lr) == [1e-3, 1e-2, 1e-1] and math.isnan(by_lr[1e-1].values[2])
    assert tt.warmup_relation(runs, c, 1e-1, 5) == "above"  # a diverged seed ranks below all
    # every seed ends at >= 0.9 only at 1e-2 (0.95, 0.91, 0.97); with warm-up only at 1e-1
    assert tt.rates_that_train(runs, c) == [1e-2] and tt.rates_that_train(runs, c, 5) == [1e-1]
    assert tt.rates_that_train(runs, c, threshold=0.92) == [] and tt.rates_that_train(
        runs, c, threshold=0.5
    ) == [1e-2]
    better = [r for r in runs if r.job.lr != 1e-1 or r.job.warmup_steps or r.job.seed] + [
        _run(c, 1e-1, 0, (0.9, 0.975))
    ]
    assert tt.warmup_relation(better, c, 1e-1, 5) == "overlaps"  # 0.975 lies among 0.97-0.99
    with pytest.raises(ValueError, match="no runs of"):
        tt.warmup_relation(runs, c, 1e-3, 5)
    with pytest.raises(ValueError, match="no runs of"):
        tt.summarize_recall(runs, tt.TransformerConfig("pre", depth=2))
    # restricted to a grid without 1e-2 (experiment B's plain groups), the choice is among the rest
    narrow = tt.summarize_recall(runs, c, lrs=(1e-3, 1e-1))
    assert narrow.lr == 1e-3 and narrow.test.values == (0.5, 0.4, 0.6) and narrow.trained == 0
    assert narrow.edge  # the smallest rate of that grid: a smaller one might have done better
    assert tt.summarize_recall(runs, c, lrs=(1e-3, 1e-2)).edge  # 1e-2, the largest of that grid
    # no seed reaches 0.9 at 1e-3 (its steps are inf): "never"; the edge is starred
    assert narrow.row() == {"chosen lr": "1.0e-03*", "final test accuracy": "0.50 (0.40–0.60)",
                            "updates to 0.9": "never (never–never)", "seeds trained": "0 of 3"}  # fmt: skip
    diverged = tt.summarize_recall([r for r in runs if r.job.lr == 1e-1 and not r.job.warmup_steps], c)
    assert diverged.row()["final test accuracy"] == "0.55 (0.50–0.60), 1 diverged" and diverged.diverged == 1
    # seeds 0 and 1 touch 0.9 at step 10 and end at 0.6 and 0.5: reached, not trained
    assert (diverged.reached, diverged.trained) == (2, 0)
    gone = tt.summarize_recall([_run(c, 1.0, seed, (math.nan,) * 2, diverged_at=3) for seed in (0, 1)], c)
    assert gone.row()["final test accuracy"] == "every seed diverged"
    assert gone.row()["seeds trained"] == "0 of 2"


def test_the_json_round_trip_is_exact(tmp_path):
    _, runs = _table()
    real = tt.train_recall(tt.RecallJob(tt.TransformerConfig("none", "rezero", depth=1), 1e-3, 2), TINY)
    runs = [*runs, real]
    path = tmp_path / "r.json"
    baseline = [tt.BaselineRun(1e-3, 0, 0.5, 0.41, 0.4), tt.BaselineRun(1e-2, 0, 0.9, math.nan, math.nan)]
    tt.save_recall_runs(path, runs, TINY, {"note": "x"}, baseline)
    back, settings, meta = tt.load_recall_runs(path)
    again = tt.load_recall_baseline(path)
    assert again[0] == baseline[0] and math.isnan(again[1].test) and again[1].train == 0.9
    assert settings == TINY and meta["note"] == "x" and meta["bag_bound"] == vg.recall_bag_accuracy()
    assert len(back) == len(runs)
    for a, b in zip(runs, back, strict=True):
        assert a.job == b.job and a.eval_steps == b.eval_steps and a.diverged_at == b.diverged_at
        for u, v in ((a.validation, b.validation), (a.test, b.test)):
            assert all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(u, v, strict=True))
    assert back[-1] == real and back[-1].seconds == real.seconds
    with pytest.raises(FileNotFoundError, match="benchmarks/transformer_training.py --write"):
        tt.load_recall_runs(tmp_path / "missing.json")


def test_the_experiments_list_each_run_once():
    full = tt.FULL_SWEEP
    a, b, both = full.jobs("A"), full.jobs("B"), full.jobs("all")
    # B: 4 remedies at depth 6 on GRID_LRS (8 rates), 6 variants at depth 24 on DEEP_LRS (4), and
    # plain pre/post at depth 6, which are A's groups without warm-up, on A's 11 rates (B chooses
    # among the 8)
    assert len(a) == 2 * 2 * 11 * 3 and len(b) == (4 * 8 + 2 * 11 + 6 * 4) * 3
    shared = {j for j in a if j.warmup_steps == 0}
    assert len(shared) == 2 * 11 * 3 and shared <= set(b)
    assert len(both) == len(set(both)) == len(a) + len(b) - len(shared) == 300
    assert set(both) == set(a) | set(b)
    assert [j.config.depth for j in both] == sorted((j.config.depth for j in both), reverse=True)
    assert {j.warmup_steps for j in a} == {0, 150} and {j.warmup_steps for j in b} == {0}
    assert full.warmup_steps == full.steps // 10 and full.lrs == vg.grid.GRID_LRS
    assert full.warmup_lrs == tt.WARMUP_LRS and full.deep_lrs == tt.DEEP_LRS
    assert full.seeds == vg.HARNESS_SEEDS
    labels = {j.config.label for j in b if j.config.depth == 24}
    assert labels == {"pre-LN, 24 blocks", "post-LN, 24 blocks", "DeepNorm (post-LN), 24 blocks",
                      "ReZero (no LN), 24 blocks", "T-Fixup (no LN), 24 blocks",
                      "LayerScale (pre-LN), 24 blocks"}  # fmt: skip
    assert tt.SweepSettings.from_json(full.to_json()) == full


def test_the_splits_are_fixed_and_the_threshold_is_far_above_the_bag_bound():
    splits = tt.recall_splits()
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 20_000, "validation": 1_000, "test": 1_000}
    x, y = vg.associative_recall(1_000, seed=162)
    assert torch.equal(splits["test"][0], x) and torch.equal(splits["test"][1], y)
    assert tt.RECALL_THRESHOLD > vg.recall_bag_accuracy() + 0.4 and tt.recall_chance() == 1 / 8


def test_bad_input_names_the_valid_choices():
    with pytest.raises(ValueError, match="'pre', 'post', 'none'"):
        tt.TransformerConfig("middle")
    with pytest.raises(ValueError, match="needs norm='post'"):
        tt.TransformerConfig("pre", "deepnorm")
    with pytest.raises(ValueError, match="'A', 'B', 'all'"):
        tt.FULL_SWEEP.jobs("C")
    with pytest.raises(ValueError, match="multiple of eval_every"):
        tt.SweepSettings(steps=10, eval_every=3)
    with pytest.raises(ValueError, match="lrs must be"):
        tt.SweepSettings(lrs=())
    with pytest.raises(TypeError, match="RecallJob"):
        tt.train_recall((tt.TransformerConfig("pre"), 1e-3, 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr must be"):
        tt.train_recall(tt.RecallJob(tt.TransformerConfig("pre"), -1.0, 0), TINY)


# --- the batched groups ------------------------------------------------------------------------------------

GROUP = tt.SweepSettings(steps=20, eval_every=10, warmup_steps=5, lrs=(1e-3, 1e-2), seeds=(0, 2),
                         warmup_depth=2, scaling_depths=(2,))  # fmt: skip


@pytest.mark.parametrize(("norm", "residual"), [("post", "plain"), ("pre", "layerscale"), ("none", "rezero")])
def test_each_member_of_a_group_follows_vglib_train(norm, residual):
    # train_ensemble with warm-up, on LongTensor tokens and class targets, against vglib.train alone.
    # The training losses agree to float32 rounding (measured: 5e-7 absolute, 2e-7 relative, over 20
    # Adam updates). So do all weights (measured: at most 7e-7) except the attention's key biases:
    # adding b_k to the keys adds q.b_k to every logit of a query's row, which the softmax ignores, so
    # their gradient is exactly 0 in exact arithmetic and rounding noise in float32, which Adam scales
    # up to steps of +-lr (measured differences up to lr); they change no output.
    from vglib.ensemble import train_ensemble

    config = tt.TransformerConfig(norm, residual, depth=2)
    x, y = tt.recall_splits()["train"]
    members = [(s, lr) for lr in GROUP.lrs for s in GROUP.seeds]
    run = train_ensemble(tt._batchable_builder(config), x, y, members=members, steps=20, optimizer="adam",
                         warmup_steps=5, x_eval=x[:64], y_eval=y[:64], eval_every=10)  # fmt: skip
    for k, (seed, lr) in enumerate(members):
        model = config.build(seed)
        history = vg.train(model, x, y, steps=20, lr=lr, batch_size=64, optimizer="adam", seed=seed,
                           warmup_steps=5, x_eval=x[:64], y_eval=y[:64], eval_every=10)  # fmt: skip
        np.testing.assert_allclose(run.loss[k], history.loss, rtol=2e-6, atol=0)
        trained = run.model(k).state_dict()
        assert type(run.model(k)) is tt._BatchableTransformer
        for name, value in model.state_dict().items():
            if not name.endswith("attention.k.bias"):
                torch.testing.assert_close(trained[name], value, atol=1e-5, rtol=1e-5, msg=name)
    assert np.abs(run.loss[0] - run.loss[2]).max() > 1e-3  # the members differ: agreement is not trivial


def test_a_group_records_what_its_runs_record_one_by_one():
    config = tt.TransformerConfig("post", depth=2)
    runs = tt.train_recall_group(config, 5, GROUP)
    assert [r.job for r in runs] == [tt.RecallJob(config, lr, s, 5) for lr in GROUP.lrs for s in GROUP.seeds]
    assert [r.job for r in runs] == [j for j in GROUP.jobs("A") if j.config == config and j.warmup_steps]
    for run in runs:
        alone = tt.train_recall(run.job, GROUP)
        assert run.eval_steps == alone.eval_steps == (10, 20) and not run.diverged
        # exact fractions k / 1000, as train_recall's; equal up to a sequence or two whose largest
        # logit a rounding difference may flip (here: equal)
        assert all(v * 1000 == round(v * 1000) for v in (*run.validation, *run.test))
        assert run.validation == pytest.approx(alone.validation, abs=0.002)
        assert run.test == pytest.approx(alone.test, abs=0.002)
        assert run.seconds > 0 and run.cpu_seconds > 0
    prefix = tt.train_recall_group(config, 5, GROUP, steps=10)  # the first updates of the same group
    assert [(r.eval_steps, r.validation, r.test) for r in prefix] == [
        ((10,), r.validation[:1], r.test[:1]) for r in runs
    ]
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert float(tiny * 1.0) > 0  # denormals are back on after the group


def test_a_diverged_member_of_a_group_is_nan_from_its_divergence_and_leaves_the_others_alone():
    settings = tt.SweepSettings(steps=30, eval_every=3, warmup_steps=1, lrs=(1e-3, 1e6), seeds=(0,))
    config = tt.TransformerConfig("none", depth=2)
    sane, wild = tt.train_recall_group(config, 0, settings)
    alone = tt.train_recall(wild.job, settings)
    assert not sane.diverged and all(math.isfinite(v) for v in (*sane.validation, *sane.test))
    assert sane.validation == tt.train_recall_group(config, 0, replace(settings, lrs=(1e-3,)))[0].validation
    # the update at which the logits overflow: weights near 1e38 after two updates at lr 1e6, where
    # rounding decides whether a logit overflows at this update or the next
    assert wild.diverged and alone.diverged and abs(wild.diverged_at - alone.diverged_at) <= 1
    assert all(
        math.isnan(v) for s, v in zip(wild.eval_steps, wild.test, strict=True) if s >= wild.diverged_at
    )
    assert not wild.trained()


def test_groups_list_the_sweeps_runs_once():
    full = tt.FULL_SWEEP
    groups = full.groups("all")
    assert len(groups) == len(set(groups)) == 14 and [c.depth for c, _ in groups][:6] == [24] * 6
    assert len(full.groups("A")) == 4 and len(full.groups("B")) == 12
    assert set(full.jobs("all")) == {tt.RecallJob(c, lr, s, w) for c, w in groups for lr in full.rates(c)
                                     for s in full.seeds}  # fmt: skip
    assert {len(full.rates(c)) for c, _ in full.groups("A")} == {11}
    assert {len(full.rates(c)) for c, _ in full.groups("B") if c.residual != "plain" and c.depth == 6} == {8}
    assert {full.rates(c) for c, _ in full.groups("B") if c.depth == 24} == {tt.DEEP_LRS}


def test_the_deep_grid_is_the_four_rates_from_1e_4_to_1e_2():
    assert tt.DEEP_LRS == pytest.approx((1e-4, 10 ** (-10 / 3), 10 ** (-8 / 3), 1e-2), rel=1e-12)
    assert set(tt.DEEP_LRS) <= set(vg.grid.GRID_LRS)
    with pytest.raises(ValueError, match="deep_lrs must be rates of lrs"):
        tt.SweepSettings(lrs=(1e-3, 1e-2), deep_lrs=(1e-4,))
    with pytest.raises(ValueError, match="deep_lrs must be"):
        tt.SweepSettings(deep_lrs=())
    # None: every model deeper than warmup_depth runs on lrs, as before
    assert tt.SweepSettings(lrs=(1e-3,)).rates(tt.TransformerConfig("pre", depth=24)) == (1e-3,)
    settings = tt.SweepSettings(lrs=(1e-3, 1e-2), deep_lrs=(1e-2,))
    assert settings.rates(tt.TransformerConfig("pre", depth=24)) == (1e-2,)
    assert settings.rates(tt.TransformerConfig("pre", "layerscale")) == (1e-3, 1e-2)
    assert tt.SweepSettings.from_json(settings.to_json()) == settings


def test_experiment_a_has_the_grid_with_its_midpoints():
    grid, rates = vg.grid.GRID_LRS, tt.WARMUP_LRS
    assert set(grid) <= set(rates) and len(rates) == len(grid) + 3 and list(rates) == sorted(rates)
    added = sorted(set(rates) - set(grid))
    assert added == pytest.approx([1e-3, 10 ** (-7 / 3), 10 ** (-5 / 3)], rel=1e-12)
    # each added rate sits halfway (in log) between its neighbours
    for lr in added:
        k = rates.index(lr)
        assert math.log(lr / rates[k - 1]) == pytest.approx(math.log(rates[k + 1] / lr), rel=1e-9)
    with pytest.raises(ValueError, match="warmup_lrs must hold every rate of lrs"):
        tt.SweepSettings(lrs=(1e-3, 1e-2), warmup_lrs=(1e-3,))
    with pytest.raises(ValueError, match="lrs must be increasing"):
        tt.SweepSettings(lrs=(1e-2, 1e-3))
    plain = tt.SweepSettings(lrs=(1e-3,))
    assert plain.rates(tt.TransformerConfig("post")) == (1e-3,)  # None: the same rates
    assert (
        tt.TransformerConfig("pre").causal and tt.TransformerConfig("pre").build(0).blocks[0].attention.causal
    )


def test_bad_group_input_names_the_valid_choices():
    with pytest.raises(TypeError, match="TransformerConfig"):
        tt.train_recall_group("pre", 0, GROUP)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of eval_every"):
        tt.train_recall_group(tt.TransformerConfig("pre", depth=1), 0, GROUP, steps=15)
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        tt.train_recall_group(tt.TransformerConfig("pre", depth=1), -1, GROUP)


# --- the MLP baseline --------------------------------------------------------------------------------------


def test_the_mlp_baseline_sees_one_hot_tokens_and_trains_like_the_transformers():
    model = tt.build_recall_mlp(3)
    vocab, length, classes = vg.recall_dims()
    assert model.net[0].in_features == vocab * length and model.net[-1].out_features == classes
    tokens, _ = vg.associative_recall(5, seed=1)
    hand = model.net(F.one_hot(tokens, vocab).reshape(5, -1).float())
    torch.testing.assert_close(model(tokens), hand, rtol=0, atol=0)
    assert torch.equal(tt.build_recall_mlp(3).net[0].weight, model.net[0].weight)
    assert not torch.equal(tt.build_recall_mlp(4).net[0].weight, model.net[0].weight)
    # one baseline run is vglib.train on this model, with the transformers' batch and budget
    run = tt.train_recall_mlp(1e-2, 1, TINY)
    reference = tt.build_recall_mlp(1)
    x, y = tt.recall_splits()["train"]
    vg.train(reference, x, y, steps=TINY.steps, lr=1e-2, batch_size=tt.RECALL_BATCH, optimizer="adam", seed=1)
    x_test, y_test = tt.recall_splits()["test"]
    with torch.no_grad():
        expected = float((reference(x_test).argmax(1) == y_test).double().mean())
    assert run.test == expected and run.lr == 1e-2 and run.seed == 1
    assert tt.train_recall_mlp(1e-2, 1, TINY) == run
    with pytest.raises(ValueError, match="lr must be"):
        tt.train_recall_mlp(0.0, 0, TINY)


def test_the_baseline_summary_chooses_on_validation():
    runs = [tt.BaselineRun(lr, s, 1.0, val, test) for lr, s, val, test in [
        (1e-3, 0, 0.40, 0.38), (1e-3, 1, 0.42, 0.44), (1e-2, 0, 0.43, 0.30), (1e-2, 1, 0.41, 0.31),
    ]]  # fmt: skip
    lr, test, fit = tt.summarize_baseline(runs)
    assert lr == 1e-2 and test.values == (0.30, 0.31) and fit.values == (1.0, 1.0)  # median 0.42 > 0.41


# --- the first updates in gradient terms --------------------------------------------------------------------


def test_early_gradients_are_the_block_gradients_of_the_runs_updates():
    job = tt.RecallJob(tt.TransformerConfig("post", depth=2), 3e-3, 1, 4)
    early = tt.early_gradients(job, steps=6, every=2)
    # update 1 (the gradient at initialisation), then every second one
    assert early.steps == (1, 2, 4, 6) and early.block_grad_norms.shape == (4, 2)
    # by hand: the same Adam, warm-up and minibatches as the hand-written run above
    splits = tt.recall_splits()
    x_val, y_val = splits["validation"][0][:256], splits["validation"][1][:256]
    for step, model in _hand_written_updates(job, 6):
        if step == 1 or step % 2 == 0:
            row = early.steps.index(step)
            for b, block in enumerate(model.blocks):
                expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in block.parameters()))
                assert early.block_grad_norms[row, b] == pytest.approx(expected, rel=1e-12)
            with torch.no_grad():
                loss = float(F.cross_entropy(model(x_val), y_val))
            assert early.validation_loss[row] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_array_equal(
        early.first_to_last(), early.block_grad_norms[:, 0] / early.block_grad_norms[:, 1]
    )
    with pytest.raises(TypeError, match="RecallJob"):
        tt.early_gradients("post")  # type: ignore[arg-type]


# --- the figures of the training sections -------------------------------------------------------------------


def test_plot_accuracy_by_lr_draws_medians_ranges_and_marks_divergence():
    spreads = {
        "a": {
            1e-3: vg.SeedSpread((0, 1, 2), (0.2, 0.4, 0.3)),
            1e-2: vg.SeedSpread((0, 1, 2), (0.9, 1.0, math.nan)),
        },
        "b": {1e-3: vg.SeedSpread((0, 1), (0.5, 0.7))},
    }
    fig = vg.plot_accuracy_by_lr(spreads, {"bound": 0.41})
    ax = fig.axes[0]
    a_line = ax.lines[0]
    medians = a_line.get_ydata()
    assert medians[0] == pytest.approx(0.3) and math.isnan(medians[1])  # the diverged rate is left out
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_ydata()) == [0.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bound", "a", "b"]
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="at least one"):
        vg.plot_accuracy_by_lr({})


def test_plot_early_gradients_draws_the_ratio_and_the_loss():
    job = tt.RecallJob(tt.TransformerConfig("post", depth=2), 1e-3, 0)
    run = tt.EarlyGradients(job, (1, 2), np.array([[2.0, 4.0], [1.0, 8.0]]), np.array([2.1, 2.0]))
    fig = vg.plot_early_gradients({"no warm-up": run}, chance_loss=math.log(8))
    left, right = fig.axes
    np.testing.assert_array_equal(left.lines[0].get_ydata(), [0.5, 0.125])
    np.testing.assert_array_equal(right.lines[0].get_ydata(), [2.1, 2.0])
    assert right.lines[-1].get_ydata()[0] == pytest.approx(math.log(8))
    with pytest.raises(ValueError, match="at least one run"):
        vg.plot_early_gradients({})


def test_early_gradients_keep_the_trained_model():
    job = tt.RecallJob(tt.TransformerConfig("pre", depth=1), 1e-3, 0)
    early = tt.early_gradients(job, steps=3)
    x_val, y_val = (t[:256] for t in tt.recall_splits()["validation"])
    with torch.no_grad():
        loss = float(F.cross_entropy(early.model(x_val), y_val))
    assert loss == early.validation_loss[-1]  # the model after the last recorded update
