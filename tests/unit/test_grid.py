"""The grid's choice of learning rate, its test spread and its file format."""

import math

import numpy as np
import pytest

import vglib
from vglib.grid import (
    GRID_LRS,
    GridCell,
    cells_from_json,
    cells_to_json,
    choose_lr,
    init_ratios,
    run_group,
    spread_at,
    steps_to,
)


def cell(lr, seed, final_validation, final_test=0.5, task="teacher"):
    return GridCell("r", task, lr, seed, (10, 20), (1.0, final_validation), (1.0, final_test))


def test_the_learning_rate_with_the_best_median_validation_metric_is_chosen():
    cells = [cell(1e-3, s, v) for s, v in enumerate((0.30, 0.90, 0.31))]  # median 0.31
    cells += [cell(1e-2, s, v) for s, v in enumerate((0.10, 0.35, 0.34))]  # median 0.34, best single run
    assert choose_lr(cells, "mse") == 1e-3  # the median decides, not the luckiest seed
    accuracy = [cell(1e-3, s, v, task="digits") for s, v in enumerate((0.90, 0.91, 0.92))]
    accuracy += [cell(1e-2, s, v, task="digits") for s, v in enumerate((0.95, 0.96, 0.10))]
    assert choose_lr(accuracy, "accuracy") == 1e-2  # higher is better for accuracy


def test_a_diverged_run_counts_as_worst_and_ties_go_to_the_smaller_rate():
    cells = [cell(1e-2, s, v) for s, v in enumerate((math.nan, 0.2, 0.2))]  # median 0.2, one diverged
    cells += [cell(1e-3, s, 0.9) for s in range(3)]
    assert choose_lr(cells, "mse") == 1e-3  # a rate at which a seed diverged is not chosen over a stable one
    everywhere = [
        cell(lr, s, math.nan if s == 0 else v) for lr, v in ((1e-2, 0.2), (1e-3, 0.5)) for s in range(3)
    ]
    assert choose_lr(everywhere, "mse") == 1e-2  # where every rate lost a seed, the median decides
    tied = [cell(lr, s, 0.5) for lr in (1e-2, 1e-3) for s in range(3)]
    assert choose_lr(tied, "mse") == 1e-3
    with pytest.raises(ValueError, match="no cells"):
        choose_lr([], "mse")


def test_the_test_metric_is_read_at_the_chosen_rate_only():
    cells = [cell(1e-3, s, 0.3, final_test=t) for s, t in enumerate((0.4, 0.2, 0.3))]
    cells += [cell(1e-2, s, 0.9, final_test=0.0) for s in range(3)]
    spread = spread_at(cells, choose_lr(cells, "mse"))
    assert (spread.median, spread.low, spread.high) == (0.3, 0.2, 0.4)


def test_cells_survive_json_with_diverged_values():
    cells = [GridCell("r", "teacher", 1e-2, 1, (10, 20), (1.0, math.nan), (math.inf, 0.5))]
    back = cells_from_json(cells_to_json(cells))
    assert back[0].lr == 1e-2 and math.isnan(back[0].validation[1]) and back[0].test == (math.inf, 0.5)


def test_a_group_is_every_rate_times_every_seed_on_both_splits():
    cells = run_group(
        vglib.Remedy("tanh", activation="tanh", init="xavier", depth=3, width=16), "digits", steps=20
    )
    assert len(cells) == len(GRID_LRS) * 3 and {c.lr for c in cells} == set(GRID_LRS)
    assert all(c.eval_steps == (10, 20) and 0 <= c.final_test <= 1 for c in cells)
    with pytest.raises(TypeError, match="vglib.Remedy"):
        run_group("tanh", "digits")


def test_steps_to_the_threshold_per_seed_with_never_as_inf():
    def run(seed, curve, task="teacher"):
        return GridCell("r", task, 1e-3, seed, (10, 20, 30), curve, curve)

    cells = [run(0, (0.9, 0.45, 0.3)), run(1, (0.4, 0.3, 0.2)), run(2, (0.9, math.nan, 0.8))]
    spread = steps_to(cells, 1e-3, 0.5, "mse")
    assert spread.values == (20.0, 10.0, math.inf) and spread.median == 20.0
    accuracy = [run(0, (0.5, 0.91, 0.95), "digits"), run(1, (0.2, 0.3, 0.9), "digits")]
    assert steps_to(accuracy, 1e-3, 0.9, "accuracy").values == (20.0, 30.0)
    with pytest.raises(ValueError, match="no cells at lr"):
        steps_to(cells, 1e-2, 0.5, "mse")


def test_the_two_ratios_at_initialisation_tell_the_glorot_blind_spot_apart():
    # orthogonal weights with gain 1 halve the ReLU signal's square at every layer, forward and
    # backward: the weight gradients stay level while the backpropagated gradient vanishes
    weight, backprop = init_ratios(vglib.Remedy("ortho", init="orthogonal"), "teacher", 0)
    assert 0.3 < weight < 3 and backprop < 1e-3
    weight, backprop = init_ratios(vglib.Remedy("tanh", activation="tanh", init="xavier"), "teacher", 0)
    assert 0.1 < weight < 10 and 0.1 < backprop < 10


def test_highway_gates_are_left_out_of_both_ratios():
    from scipy.stats import theilslopes

    remedy = vglib.Remedy("highway", activation="tanh", init="xavier", skip="highway", depth=8)
    weight, backprop = init_ratios(remedy, "teacher", 0)
    model = remedy.build(0, vglib.harness_task("teacher"))
    x, y = vglib.harness_first_batch(0, vglib.harness_task("teacher"))
    profile = vglib.gradient_profile(model, x, y)
    names = list(profile.layer_names)
    assert names[-1].endswith("gate")  # the last layer called before the head is a gate
    transforms = [i for i, n in enumerate(names) if not n.endswith("gate")]
    by_hand = profile.weight_grad_norms[transforms[0]] / profile.weight_grad_norms[transforms[-1]]
    assert weight == pytest.approx(by_hand, rel=1e-12)
    # backprop: Theil-Sen (scipy's) over the non-gate hidden layers' ||dL/dh|| per element
    flow = vglib.gradient_flow(model, x, y)
    pairs = zip(flow.layer_names[:-1], flow.output_grad_rms[:-1], strict=True)
    rms = [r for n, r in pairs if not n.endswith("gate")]
    slope = theilslopes(np.log10(rms), np.arange(len(rms)))[0]
    assert backprop == pytest.approx(10 ** (-slope * (len(rms) - 1)), rel=1e-9)
    plain = vglib.Remedy("tanh", activation="tanh", init="xavier", depth=8)  # no gates: diagnose's own
    model = plain.build(0, vglib.harness_task("teacher"))
    assert init_ratios(plain, "teacher", 0)[1] == vglib.diagnose(model, x, y).depth_change
