"""The trainable-depth bookkeeping (boundaries, success tables, the JSON round trip) against hand
computation, one small ensemble run against a network trained alone, and the mean-field
measurements of ``vglib.meanfield`` against theory."""

import json
import math

import numpy as np
import pytest
import torch

import vglib
from vglib import meanfield
from vglib import trainability as tr


def cell(sigma_w2, depth, seed, lr, final):
    return tr.TrainabilityCell(sigma_w2, depth, seed, lr, (0.1, final))


def test_boundary_depth_by_hand():
    depths = [10, 20, 40, 80]
    # one seed: trained at 10 and 20, not at 40: the geometric mean of 20 and 40
    assert vglib.boundary_depth(depths, [1, 1, 0, 0]) == pytest.approx(math.sqrt(20 * 40))
    # a share falling from 1 to 1/3 between 20 and 40 crosses 1/2 at 3/4 of the way in log depth
    assert vglib.boundary_depth(depths, [1, 1, 1 / 3, 0]) == pytest.approx(20 * 2**0.75)
    assert vglib.boundary_depth(depths, [1, 1, 1, 1]) == math.inf
    assert math.isnan(vglib.boundary_depth(depths, [0, 1, 1, 1]))
    # the first fall counts, not a later recovery
    assert vglib.boundary_depth(depths, [1, 0, 1, 0]) == pytest.approx(math.sqrt(200))


def test_success_table_and_boundaries_take_each_seeds_best_learning_rate():
    cells = [
        cell(1.0, 10, 0, 0.1, 0.9), cell(1.0, 10, 0, 0.01, 0.2),  # best lr passes
        cell(1.0, 10, 1, 0.1, 0.3), cell(1.0, 10, 1, 0.01, math.nan),  # NaN: diverged, fails
        cell(1.0, 20, 0, 0.1, 0.2), cell(1.0, 20, 1, 0.1, 0.2),
    ]  # fmt: skip
    sigma_w2s, depths, fraction = vglib.success_table(cells, threshold=0.5)
    assert sigma_w2s.tolist() == [1.0] and depths.tolist() == [10, 20]
    np.testing.assert_array_equal(fraction, [[0.5, 0.0]])
    boundary, per_seed = vglib.trainable_depths(cells, threshold=0.5)[1.0]
    assert boundary == pytest.approx(10)  # the share is exactly 1/2 at depth 10, then falls below
    assert per_seed.values[0] == pytest.approx(math.sqrt(200)) and math.isnan(per_seed.values[1])


def test_best_learning_rate_and_an_earlier_step_by_hand():
    evals = tr.TRAINABILITY_STEPS // tr.TRAINABILITY_EVAL_EVERY

    def curve(early, late):  # accuracy `early` up to half the budget, `late` after
        return tuple([early] * (evals // 2) + [late] * (evals - evals // 2))

    cells = [
        tr.TrainabilityCell(1.0, 10, 0, 0.01, curve(0.6, 0.7)),
        tr.TrainabilityCell(1.0, 10, 0, 0.001, curve(0.2, 0.9)),  # slow, but best at the end
        tr.TrainabilityCell(1.0, 10, 1, 0.01, curve(0.3, math.nan)),  # diverges late: counts as 0
        tr.TrainabilityCell(1.0, 10, 1, 0.001, curve(0.3, 0.4)),
    ]
    half = tr.TRAINABILITY_STEPS // 2
    assert vglib.best_learning_rates(cells) == {(1.0, 10, 0): (0.001, 0.9), (1.0, 10, 1): (0.001, 0.4)}
    # after half the budget: seed 0's best is the fast rate; seed 1's tie goes to the smaller rate
    early = {(1.0, 10, 0): (0.01, 0.6), (1.0, 10, 1): (0.001, 0.3)}
    assert vglib.best_learning_rates(cells, step=half) == early
    assert vglib.success_table(cells, 0.5)[2].tolist() == [[0.5]]
    assert vglib.success_table(cells, 0.5, step=half)[2].tolist() == [[0.5]]
    assert vglib.success_table(cells, 0.65, step=half)[2].tolist() == [[0.0]]
    for bad in (0, 25, tr.TRAINABILITY_STEPS + tr.TRAINABILITY_EVAL_EVERY, 100.0):
        with pytest.raises(ValueError, match="multiple of"):
            vglib.best_learning_rates(cells, step=bad)


def test_boundary_networks_are_those_of_the_two_depths_that_bracket_the_boundary():
    cells = [cell(1.0, d, s, lr, final) for d, s, lr, final in [
        (10, 0, 0.1, 0.9), (10, 0, 0.01, 0.8), (10, 1, 0.1, 0.7), (10, 1, 0.01, 0.8),
        (20, 0, 0.1, 0.6), (20, 0, 0.01, 0.2), (20, 1, 0.1, 0.2), (20, 1, 0.01, 0.3),  # share 1/2: not below
        (40, 0, 0.1, 0.2), (40, 0, 0.01, 0.1), (40, 1, 0.1, 0.2), (40, 1, 0.01, 0.3),  # below: the boundary
        (80, 0, 0.1, 0.1), (80, 0, 0.01, 0.1), (80, 1, 0.1, 0.1), (80, 1, 0.01, 0.1),
    ]] + [cell(2.0, d, 0, 0.1, 0.9) for d in (10, 20, 40, 80)]  # fmt: skip
    found = vglib.boundary_networks(cells, threshold=0.5)
    assert list(found) == [1.0]  # sigma_w2 = 2 trains everywhere: no boundary in the grid
    assert found[1.0] == [(20, 0, 0.1, 0.6), (20, 1, 0.01, 0.3), (40, 0, 0.1, 0.2), (40, 1, 0.01, 0.3)]


def test_json_round_trip_keeps_nan():
    cells = [cell(1.5, 6, 2, 0.003, math.nan), cell(2.0, 10, 0, 0.01, 0.75)]
    back = tr.trainability_from_json(tr.trainability_to_json(cells))
    assert back[1] == cells[1] and math.isnan(back[0].final) and back[0].sigma_w2 == 1.5


def test_run_depth_follows_a_network_trained_alone():
    cells = vglib.run_depth(3, sigma_w2s=(1.0, 4.0), seeds=(0,), lrs=(0.01,), steps=50)
    assert [(c.sigma_w2, c.depth, c.seed, c.lr) for c in cells] == [(1.0, 3, 0, 0.01), (4.0, 3, 0, 0.01)]
    # the same network trained alone, with vglib.train_ensemble's single-member semantics
    x, y = vglib.harness_task("digits").train
    member = tr._member_seed(4.0, 0)

    def build(seed):
        assert seed == member
        return vglib.build_gaussian_mlp(3, tr.TRAINABILITY_WIDTH, "tanh", 4.0, 0.05, seed=0, in_features=64,
                                        out_features=10)  # fmt: skip

    alone = vglib.train_ensemble(
        build, x, y, members=[(member, 0.01)], steps=50, optimizer="sgd", momentum=0.9, x_eval=x, y_eval=y,
        eval_every=tr.TRAINABILITY_EVAL_EVERY,
    )  # fmt: skip
    assert cells[1].final == pytest.approx(float(alone.eval_accuracy[0, -1]), abs=0.01)


def test_load_smaller_lr_reads_the_field_and_names_what_is_missing(tmp_path):
    cells = [cell(2.0, 120, 0, 3e-5, 0.18), cell(4.0, 44, 2, 3e-5, math.nan)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"meta": {}, "cells": [], "smaller_lr": {"lr": 3e-5, "how": "by hand",
                                "cells": tr.trainability_to_json(cells)}}))  # fmt: skip
    lr, back = vglib.load_smaller_lr(path)
    assert lr == 3e-5 and back[0] == cells[0] and math.isnan(back[1].final)
    path.write_text(json.dumps({"meta": {}, "cells": []}))
    with pytest.raises(KeyError, match="--smaller-lr"):
        vglib.load_smaller_lr(path)
    with pytest.raises(FileNotFoundError, match="--write"):
        vglib.load_smaller_lr(tmp_path / "absent.json")


def test_the_committed_smaller_lr_field_holds_the_failed_bracket_networks_at_the_grids_smallest_rate():
    _, cells = vglib.load_trainability()
    lr, small = vglib.load_smaller_lr()
    low = min(tr.TRAINABILITY_LRS)
    # from the sweep (boundary_networks is checked by hand above): the bracket networks that failed
    # and did best at the smallest rate
    edge = vglib.boundary_networks(cells)
    threshold = tr.TRAINABILITY_THRESHOLD
    expected = sorted((w, d, s) for w, nets in edge.items() for d, s, best, acc in nets
                      if best == low and acc < threshold)  # fmt: skip
    assert lr < low and sorted((c.sigma_w2, c.depth, c.seed) for c in small) == expected
    evaluations = tr.TRAINABILITY_STEPS // tr.TRAINABILITY_EVAL_EVERY
    assert all(c.lr == lr and len(c.accuracy) == evaluations for c in small)


def test_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        vglib.boundary_depth([10, 5], [1, 0])
    with pytest.raises(ValueError, match="same"):
        vglib.boundary_depth([10, 20], [1])
    with pytest.raises(ValueError, match="sigma_w2s"):
        vglib.run_depth(3, sigma_w2s=(1.0, 1.001))
    with pytest.raises(ValueError, match="seeds"):
        vglib.run_depth(3, seeds=(-1,))
    with pytest.raises(ValueError, match="depth"):
        vglib.run_depth(0)
    with pytest.raises(ValueError, match="no cells"):
        vglib.success_table([])


def test_input_pair_has_the_asked_correlation_and_norm():
    x1, x2 = meanfield.input_pair(100, 0.3, seed=1)
    assert float(x1 @ x1) == pytest.approx(100) and float(x2 @ x2) == pytest.approx(100)
    assert float(x1 @ x2) / 100 == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        meanfield.input_pair(10, 1.5)


def test_preactivation_correlations_match_a_hand_loop_and_theory():
    net = vglib.build_gaussian_mlp(8, 1500, "tanh", 2.5, 0.05, seed=0)
    x1, x2 = meanfield.input_pair(1500, 0.6)
    measured = meanfield.preactivation_correlations(net, x1, x2)
    h, hand = torch.stack([x1, x2]), []
    with torch.no_grad():
        for k in range(1, 9):
            z = (
                h @ net.get_submodule(f"linear{k}").weight.double().T
                + net.get_submodule(f"linear{k}").bias.double()
            )
            hand.append(float(z[0] @ z[1] / (z[0].norm() * z[1].norm())))
            h = torch.tanh(z)
    np.testing.assert_allclose(measured, hand, rtol=1e-10)
    np.testing.assert_allclose(
        measured, vglib.correlation_propagation("tanh", 2.5, 0.05, 0.6, depth=8), atol=0.05
    )
    with pytest.raises(TypeError, match="Sequential"):
        meanfield.preactivation_correlations(torch.nn.Linear(3, 3), x1, x2)


def test_gradient_growth_matches_chi_1():
    assert meanfield.gradient_growth("relu", 2.5, 20, 256) == pytest.approx(1.25, rel=0.05)
    assert meanfield.gradient_growth("tanh", 0.8, 20, 256) == pytest.approx(
        vglib.chi_1("tanh", 0.8), rel=0.05
    )


def test_log_length_variance_against_direct_draws_of_the_layer_factors():
    # independent: draw each layer's factor (2/n) sum relu(g)^2 directly, 20,000 networks
    rng = np.random.default_rng(0)
    for width in (32, 64):
        g = rng.standard_normal((20_000, 10, width))
        logs = np.log((2 / width) * (np.maximum(g, 0) ** 2).sum(axis=2)).sum(axis=1)
        exact = vglib.log_length_variance(10, width)
        assert logs.var() == pytest.approx(exact, rel=0.04)  # sampling: ~1 %
        assert exact > 50 / width  # the first-order 5 L / n is low at small widths
    assert vglib.log_length_variance(10, 4096) == pytest.approx(50 / 4096, rel=0.01)
    with pytest.raises(ValueError, match="width"):
        vglib.log_length_variance(10, 1)


def test_log_length_spread_shrinks_like_one_over_width():
    narrow = meanfield.log_length_growth("relu", 2.0, 10, 64, range(40))
    wide = meanfield.log_length_growth("relu", 2.0, 10, 256, range(40))
    assert 2 < narrow.var() / wide.var() < 8
    assert 0.5 < wide.var() / (5 * 10 / 256) < 2


def test_the_results_file_is_found_from_a_chapter_folder_of_a_copy_of_the_book(tmp_path, monkeypatch):
    # as on Colab: vglib installed from a wheel (not beside benchmarks/), the chapter run in its folder
    # of a copy of the book
    monkeypatch.setattr(tr, "__file__", str(tmp_path / "site-packages" / "vglib" / "trainability.py"))
    book = tmp_path / "book"
    chapter = book / "chapters" / "causes"
    chapter.mkdir(parents=True)
    monkeypatch.chdir(chapter)
    with pytest.raises(FileNotFoundError, match="trainable_depth.json not found"):
        tr.results_file()
    (book / tr.RESULTS_FILE).parent.mkdir(parents=True)
    (book / tr.RESULTS_FILE).write_text(json.dumps({"meta": {"seeds": 3}, "cells": []}))
    assert tr.results_file() == (book / tr.RESULTS_FILE).resolve()
    assert vglib.load_trainability() == ({"seeds": 3}, [])
