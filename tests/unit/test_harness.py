"""The common harness of the Remedies part: what it measures, measured independently."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import vglib
from vglib.harness import HARNESS_BATCH
from vglib.train import TrainingHistory


def test_gradient_ratio_is_the_first_minibatch_gradient_ratio_at_init():
    remedy = vglib.Remedy("tanh", activation="tanh", init="xavier", depth=6, width=32)
    result = vglib.run_harness(remedy, steps=5)
    # by hand: the same model, the same first minibatch (train() draws it from a generator seeded
    # with the seed), one backward pass
    (x, y), _ = vglib.harness_data()
    model = remedy.build(0)
    index = torch.randint(0, len(x), (HARNESS_BATCH,), generator=torch.Generator().manual_seed(0))
    x_first, y_first = vglib.harness_first_batch(0)
    assert torch.equal(x_first, x[index]) and torch.equal(y_first, y[index])
    F.mse_loss(model(x[index]), y[index]).backward()

    def layer_grad(name):
        module = model.get_submodule(name)
        return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in module.parameters()))

    assert vglib.hidden_weight_layers(model) == [f"linear{i}" for i in range(1, 7)]
    assert result.gradient_ratio == pytest.approx(layer_grad("linear1") / layer_grad("linear6"), rel=1e-5)


def test_steps_to_threshold_and_final_loss_come_from_the_held_out_curve():
    result = vglib.run_harness(  # a threshold the first evaluations miss and a later one meets
        vglib.Remedy("tanh", activation="tanh", init="xavier", depth=4, width=32, lr=1e-2),
        steps=100,
        threshold=0.85,
    )
    history = result.history
    assert result.final_loss == pytest.approx(history.eval_loss[-1])
    assert result.trains
    first = int(np.argmax(history.eval_loss <= result.threshold))
    assert result.steps_to_threshold == history.eval_steps[first]
    assert np.all(history.eval_loss[:first] > result.threshold)
    assert first > 0 and len(history.loss) == 100 and history.monitor is not None


def test_a_vanishing_configuration_measures_as_vanishing_and_does_not_train():
    vanishing = vglib.run_harness(
        vglib.Remedy("sigmoid", activation="sigmoid", init="default", depth=20), steps=100
    )
    healthy = vglib.run_harness(vglib.Remedy("relu he", depth=20), steps=100)
    assert vanishing.gradient_ratio < 1e-12
    _, (_, y_test) = vglib.harness_data()
    assert not vanishing.trains and vanishing.final_loss > 0.97 * float(y_test.pow(2).mean())  # predicting 0
    assert 1e-2 < healthy.gradient_ratio < 1e2


def test_the_harness_is_deterministic_and_lsuv_is_applied():
    remedy = vglib.Remedy("lsuv", depth=5, width=32, lsuv=True)
    a, b = vglib.run_harness(remedy, steps=20), vglib.run_harness(remedy, steps=20)
    assert np.array_equal(a.history.loss, b.history.loss)
    plain = remedy.but("orthogonal", init="orthogonal", lsuv=False).build()
    lsuv = remedy.build()
    assert not torch.equal(plain.linear2.weight, lsuv.linear2.weight)
    # LSUV rescales orthogonal weights: the directions are the same
    cos = F.cosine_similarity(
        plain.linear2.weight.detach().flatten(), lsuv.linear2.weight.detach().flatten(), dim=0
    )
    assert float(cos) == pytest.approx(1.0, abs=1e-5)


def test_divergence_is_reported_as_infinite_loss():
    result = vglib.run_harness(vglib.Remedy("too fast", depth=5, lr=50.0), steps=30)
    assert result.final_loss == math.inf and not result.trains
    assert "diverged" in repr(vglib.HarnessTable([result]))


def test_table_shows_every_result_as_text_and_html():
    results = [
        vglib.run_harness(vglib.Remedy(label, activation=act, init=init, depth=3, width=16), steps=20)
        for label, act, init in (("a <tanh>", "tanh", "xavier"), ("b relu", "relu", "he"))
    ]
    table = vglib.HarnessTable(results)
    text = repr(table)
    assert "a <tanh>" in text and "b relu" in text and "steps to loss 0.5" in text
    html = table._repr_html_()
    assert "&lt;tanh&gt;" in html and html.count("<tr>") == 6  # the header, 2 results, 3 baselines
    linear, quadratic, zero = table.rows()[-3:]
    assert quadratic[0].startswith("quadratic model") and len(quadratic) == len(table.header)
    assert linear[0].startswith("linear model") and float(linear[-1]) == pytest.approx(
        vglib.harness_linear_baseline(), abs=5e-4
    )
    assert zero[0] == "predicting 0" and len(zero) == len(table.header)
    dicts = table.as_dicts()
    assert dicts[1]["activation"] == "relu" and dicts[1]["final_loss"] == results[1].final_loss


def test_bad_input_is_refused_clearly():
    with pytest.raises(TypeError, match="Remedy"):
        vglib.run_harness({"activation": "relu"})
    with pytest.raises(ValueError, match="depth must be >= 2"):
        vglib.run_harness(vglib.Remedy("shallow", depth=1), steps=1)
    with pytest.raises(ValueError, match="unknown activation"):
        vglib.run_harness(vglib.Remedy("typo", activation="rleu"), steps=1)
    with pytest.raises(ValueError, match="at least one"):
        vglib.HarnessTable([])
    with pytest.raises(TypeError, match="HarnessResult"):
        vglib.HarnessTable(["not a result"])
    with pytest.raises(ValueError, match="threshold"):
        vglib.run_harness(vglib.Remedy("x", depth=2), threshold=0)


def test_run_harnesses_in_worker_processes_gives_the_same_bits_as_one_by_one():
    # the batch-norm net is chaotic at init (its gradient explodes), so any difference in
    # arithmetic order between processes would show in its losses
    remedies = [
        vglib.Remedy("bn", init="default", norm="batch", depth=12, width=32),
        vglib.Remedy("sigmoid", activation="sigmoid", init="default", depth=12, width=32),
        vglib.Remedy("lsuv", depth=12, width=32, lsuv=True),
    ]
    serial = {r.label: vglib.run_harness(r, steps=40) for r in remedies}
    parallel = vglib.run_harnesses(remedies, processes=2, steps=40)
    assert list(parallel) == ["bn", "sigmoid", "lsuv"]  # in the order given
    for label, result in serial.items():
        assert np.array_equal(parallel[label].history.loss, result.history.loss), label
        assert parallel[label].gradient_ratio == result.gradient_ratio
        assert parallel[label].final_loss == result.final_loss
        assert parallel[label].remedy == result.remedy
    one = vglib.run_harnesses(remedies[:1], steps=40)  # one remedy: no worker at all
    assert np.array_equal(one["bn"].history.loss, serial["bn"].history.loss)


def test_run_harnesses_refuses_bad_input_clearly():
    remedy = vglib.Remedy("x", depth=2)
    with pytest.raises(ValueError, match="at least one"):
        vglib.run_harnesses([])
    with pytest.raises(TypeError, match="Remedy"):
        vglib.run_harnesses([remedy, "relu"])
    with pytest.raises(ValueError, match=r"unique.*\['x'\]"):
        vglib.run_harnesses([remedy, remedy.but("x", depth=3)])
    with pytest.raises(ValueError, match="processes"):
        vglib.run_harnesses([remedy], processes=0)


def fake_run(remedy, seed, steps, final_loss=0.3, ratio=0.1):
    """A HarnessResult with the given outcome (no training: for the bookkeeping of HarnessRuns)."""
    history = TrainingHistory(np.zeros(400), np.arange(20, 401, 20), np.zeros(20))
    return vglib.HarnessResult(remedy, ratio, steps, final_loss, 0.5, history, seed=seed)


def test_harness_runs_summarise_seeds_by_median_and_range_counting_misses_as_slowest():
    remedy = vglib.Remedy("r")
    runs = vglib.HarnessRuns(
        remedy,
        (
            fake_run(remedy, 0, 100, 0.2, 0.05),
            fake_run(remedy, 1, None, math.inf, 0.2),
            fake_run(remedy, 2, 60, 0.4, 0.1),
        ),
    )
    assert runs.seeds == (0, 1, 2) and runs.steps == (100, None, 60)
    assert runs.steps_to_threshold == 100  # median of 60, 100 and "not reached"
    assert runs.fastest == 60 and runs.slowest is None
    assert runs.n_trained == 2 and not runs.trains and not runs.never_trains
    assert runs.gradient_ratio.median == 0.1 and (runs.gradient_ratio.low, runs.gradient_ratio.high) == (
        0.05,
        0.2,
    )
    assert runs.final_loss.median == 0.4 and runs.final_loss.high == math.inf
    mostly_missed = vglib.HarnessRuns(
        remedy, tuple(fake_run(remedy, s, st) for s, st in ((0, None), (1, 40), (2, None)))
    )
    assert mostly_missed.steps_to_threshold is None and mostly_missed.fastest == 40
    # "faster" needs the ranges of steps to separate; a run that never reached counts as slowest
    quick = vglib.HarnessRuns(remedy, tuple(fake_run(remedy, s, st) for s, st in ((0, 20), (1, 60), (2, 40))))
    assert not quick.faster_than(runs)  # its slowest run, 60 steps, is not before runs' fastest, 60
    early = vglib.HarnessRuns(remedy, tuple(fake_run(remedy, s, 20) for s in range(3)))
    assert early.faster_than(runs) and early.faster_than(mostly_missed)
    assert not runs.faster_than(early)  # a run of runs never reached the threshold
    assert early.steps_relation(runs) == "lies entirely below"
    assert runs.steps_relation(early) == "lies entirely above"
    assert quick.steps_relation(runs) == "overlaps" and runs.steps_relation(quick) == "overlaps"
    assert runs.steps_text() == "100 (60–>400)" and mostly_missed.steps_text() == ">400 (40–>400)"
    never = vglib.HarnessRuns(remedy, (fake_run(remedy, 0, None), fake_run(remedy, 1, None)))
    assert never.steps_text() == "not within 400" and never.trained_text() == "0 of 2"
    diverged = vglib.HarnessRuns(remedy, tuple(fake_run(remedy, s, None, math.inf) for s in (0, 1)))
    assert diverged.loss_text() == "diverged"
    assert runs.loss_text() == "0.400 (0.200–diverged)" and runs.trained_text() == "2 of 3"
    assert runs.ratio_text(".2f") == "0.10 (0.05–0.20)"
    text = repr(vglib.HarnessTable([runs, mostly_missed]))
    assert "median (min–max) over 3 seeds" in text
    assert "100 (60–>400)" in text and "2/3" in text and "(0.200–diverged)" in text
    assert "1/3" in text and ">400 (40–>400)" in text
    with pytest.raises(TypeError, match="not both"):
        vglib.HarnessTable([runs, runs.runs[0]])
    with pytest.raises(ValueError, match="of its remedy"):
        vglib.HarnessRuns(remedy, (fake_run(remedy.but("other"), 0, 20),))


def test_run_harnesses_over_seeds_trains_each_seed_as_run_harness_does():
    remedies = [vglib.Remedy("bn", init="default", norm="batch", depth=8, width=16)]
    seeded = vglib.run_harnesses(remedies, seeds=(0, 3), processes=2, steps=40)
    assert list(seeded) == ["bn"] and isinstance(seeded["bn"], vglib.HarnessRuns)
    for run, seed in zip(seeded["bn"].runs, (0, 3), strict=True):
        alone = vglib.run_harness(remedies[0], seed=seed, steps=40)
        assert run.seed == seed and np.array_equal(run.history.loss, alone.history.loss)
    assert not np.array_equal(seeded["bn"].runs[0].history.loss, seeded["bn"].runs[1].history.loss)
    for bad in ((), (0, 0), (-1,), (1.5,)):
        with pytest.raises(ValueError, match="seeds must be distinct non-negative ints"):
            vglib.run_harnesses(remedies, seeds=bad)


def test_linear_baseline_is_the_held_out_loss_of_least_squares():
    (x, y), (x_test, y_test) = vglib.harness_data()
    # independently: the normal equations in float64 with torch
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.solve(design.T @ design, design.T @ y.double())
    test_design = torch.cat([x_test.double(), torch.ones(len(x_test), 1, dtype=torch.float64)], dim=1)
    expected = float(((test_design @ coef - y_test.double()) ** 2).mean())
    assert vglib.harness_linear_baseline() == pytest.approx(expected, rel=1e-9)
    # the teacher task has no linear part: least squares does no better than predicting 0
    assert vglib.HARNESS_THRESHOLD < 0.97 * float(y_test.pow(2).mean()) < vglib.harness_linear_baseline()


def test_gradient_ratio_at_a_later_step_is_measured_on_the_trained_weights():
    remedy = vglib.Remedy("bn", init="default", norm="batch", depth=6, width=32)
    result = vglib.run_harness(remedy, steps=21)
    assert result.gradient_ratio_at(0) == result.gradient_ratio
    # by hand: the same 20 steps, then the gradient of the 21st minibatch
    (x, y), _ = vglib.harness_data()
    model = remedy.build(0)
    vglib.train(model, x, y, steps=20, lr=remedy.lr, batch_size=HARNESS_BATCH, optimizer="sgd",
                momentum=remedy.momentum, seed=0)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    for _ in range(21):
        index = torch.randint(0, len(x), (HARNESS_BATCH,), generator=generator)
    model.zero_grad()
    F.mse_loss(model(x[index]), y[index]).backward()

    def layer_grad(name):
        return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.get_submodule(name).parameters()))

    expected = layer_grad("linear1") / layer_grad("linear6")
    assert result.gradient_ratio_at(20) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="not 7"):
        result.gradient_ratio_at(7)


def test_first_step_gradients_are_each_layers_gradient_on_the_first_minibatch_after_clipping():
    remedy = vglib.Remedy(
        "sigmoid clipped", activation="sigmoid", init="default", depth=5, width=16, clip_norm=1e-4
    )
    result = vglib.run_harness(remedy, steps=3)
    x_first, y_first = vglib.harness_first_batch(0)
    model = remedy.build(0)
    F.mse_loss(model(x_first), y_first).backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1e-4)  # what the optimiser saw
    grads = result.first_step_gradients()
    assert set(grads) == {f"linear{i}" for i in range(1, 6)} | {"head"}
    for name, value in grads.items():
        by_hand = math.sqrt(
            sum(float(p.grad.double().pow(2).sum()) for p in model.get_submodule(name).parameters())
        )
        assert value == pytest.approx(by_hand, rel=1e-5), name
    assert math.sqrt(sum(v**2 for v in grads.values())) == pytest.approx(
        1e-4, rel=1e-3
    )  # clipped to the threshold


def test_the_quadratic_baseline_is_least_squares_on_every_degree_two_term():
    task = vglib.harness_task("teacher")
    (x, y), (x_test, y_test) = task.train, task.test

    def design(inputs):  # by hand: 1, every x_i, every x_i x_j with i <= j
        inputs = inputs.double()
        i, j = torch.triu_indices(inputs.shape[1], inputs.shape[1])
        return torch.cat(
            [torch.ones(len(inputs), 1, dtype=torch.float64), inputs, inputs[:, i] * inputs[:, j]], 1
        )

    coef = torch.linalg.lstsq(design(x), y.double()).solution
    expected = float(((design(x_test) @ coef - y_test.double()) ** 2).mean())
    assert design(x).shape[1] == 153
    assert task.quadratic_baseline() == pytest.approx(expected, rel=1e-6)
    # the even target defeats every linear model and not a quadratic one
    assert task.quadratic_baseline() < 0.5 * task.linear_baseline()
    with pytest.raises(ValueError, match="regression"):
        vglib.harness_task("digits").quadratic_baseline()
