"""Remedies at their tuned learning rate over seeds, the committed grid read back, and the table."""

import json
import math
from dataclasses import replace

import pytest

import vglib
from vglib.grid import (
    GRID_LRS,
    GRID_REMEDIES,
    SHALLOW_TWIN,
    GridCell,
    cells_to_json,
    choose_lr,
    init_ratios,
    run_group,
)

TINY = vglib.Remedy("tiny tanh", activation="tanh", init="xavier", depth=3, width=16, lr=1e-2)


def runs_of(finals, task="teacher", steps=(10, 20), lr=1e-3):
    start = 1.0 if task == "teacher" else 0.0  # the first evaluation: nothing learnt
    cells = tuple(
        GridCell("r", task, lr, seed, steps, (start, final), (start, final))
        for seed, final in enumerate(finals)
    )
    seeds = tuple(range(len(finals)))
    ratio = vglib.SeedSpread(seeds, tuple(1.0 for _ in seeds))
    return vglib.TunedRuns(vglib.Remedy("r", lr=lr), task, cells, ratio, ratio)


def test_seed_spreads_differ_only_where_their_ranges_separate():
    a, b = vglib.SeedSpread((0, 1, 2), (1, 2, 3)), vglib.SeedSpread((0, 1, 2), (3.5, 4, 9))
    assert a.relation(b) == "below" and b.relation(a) == "above"
    assert a.relation(vglib.SeedSpread((0, 1, 2), (3, 4, 5))) == "overlaps"  # touching is overlapping


def test_a_tuned_run_is_the_grid_group_at_its_learning_rate_with_both_ratios():
    runs = vglib.run_tuned(TINY, "digits", steps=20)
    cells = run_group(TINY, "digits", lrs=[1e-2], steps=20)
    assert runs.cells == tuple(cells)  # the same ensemble, the same numbers
    assert runs.seeds == vglib.HARNESS_SEEDS and runs.metric == "accuracy" and runs.budget == 20
    for seed, w, b in zip(runs.seeds, runs.weight_ratio.values, runs.backprop_ratio.values, strict=True):
        assert (w, b) == init_ratios(TINY, "digits", seed)
    with pytest.raises(TypeError, match="vglib.Remedy"):
        vglib.run_tuned("tiny", "digits")


def test_texts_count_diverged_runs_as_worst_and_unreached_thresholds_as_never():
    runs = runs_of((0.3, math.nan, 0.45))
    assert runs.final_text() == "0.450 (0.300–diverged)" and runs.diverged == 1
    assert runs.steps_text() == "20 (20–never)" and runs.n_reached == 2
    assert runs_of((math.nan, math.inf)).final_text() == "diverged"
    assert runs_of((0.9, 0.8)).steps_text() == "not within 20"
    accuracy = runs_of((0.95, 0.85, 0.92), task="digits")
    assert accuracy.steps_text() == "20 (20–never)"  # 0.85 never reaches 0.9


def test_better_and_worse_follow_the_metric_and_need_separate_ranges():
    low, high = runs_of((0.1, 0.2, 0.15)), runs_of((0.3, 0.4, 0.35))
    assert low.relation(high) == "better than" and high.relation(low) == "worse than"
    assert low.relation(runs_of((0.19, 0.5))) == "overlapping with"
    acc_low, acc_high = runs_of((0.5, 0.6), "digits"), runs_of((0.9, 0.95), "digits")
    assert acc_high.relation(acc_low) == "better than"
    assert runs_of((0.1, math.nan)).relation(high) == "overlapping with"  # a diverged run is worst


def test_the_grid_file_is_read_back_with_the_validation_choice(tmp_path):
    validation = {1e-3: (0.5, 0.6, 0.4), 1e-2: (0.3, 0.9, 0.2)}
    cells = [GridCell("a", "teacher", lr, s, (10,), (v,), (v + 0.01,))
             for lr, vs in validation.items() for s, v in enumerate(vs)]  # fmt: skip
    init = [{"remedy": "a", "task": "teacher", "seed": s, "weight_ratio": 0.5 + s, "backprop_ratio": 1e-3}
            for s in range(3)]  # fmt: skip
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"meta": {}, "cells": cells_to_json(cells), "init": init}))
    grid = vglib.Grid.load(path)
    assert grid.lr("a", "teacher") == choose_lr(cells, "mse") == 1e-2  # median 0.3 beats 0.5
    assert grid.tuned(TINY.but("a"), "teacher").lr == 1e-2
    assert grid.tuning("a", "teacher")[1e-3].median == 0.5  # validation, not test
    with pytest.raises(ValueError, match="not a remedy of vglib.grid.GRID_REMEDIES: pass remedy="):
        grid.runs("a", "teacher")  # a label alone cannot rebuild a network
    runs = grid.runs("a", "teacher", remedy=TINY.but("a"))
    assert runs.final.values == pytest.approx((0.31, 0.91, 0.21)) and runs.weight_ratio.median == 1.5
    assert runs.remedy == replace(TINY.but("a"), lr=1e-2)
    with pytest.raises(ValueError, match="labelled 'a'"):
        grid.runs("a", "teacher", remedy=TINY)
    assert grid.labels("teacher") == ["a"]
    with pytest.raises(ValueError, match="no remedy 'b'.*'a'"):
        grid.lr("b", "teacher")


def test_the_table_puts_the_baselines_beside_the_remedies():
    task = vglib.harness_task("teacher")
    table = vglib.RemedyTable([runs_of((0.3, 0.2, 0.25))], shallow=runs_of((0.4, 0.41, 0.42)))
    rows = table.rows()
    assert rows[0][4] == "0.250 (0.200–0.300)" and rows[1][2] == ""  # the shallow twin: no depth ratios
    assert rows[-3] == ("linear model (least squares)", "", "", "", f"{task.linear_baseline():.3f}", "", "")
    assert rows[-2][0].startswith("quadratic model") and rows[-2][4] == f"{task.quadratic_baseline():.3f}"
    assert rows[-1][0] == "predicting 0" and float(rows[-1][4]) == pytest.approx(
        task.predict_zero_loss(), abs=1e-3
    )
    assert "(weights)" in table.header[2] and "(backprop, fitted over layers)" in table.header[3]
    assert f"{len(GRID_LRS)} values" in repr(table) and "<table" in table._repr_html_()
    digits = vglib.RemedyTable([runs_of((0.9, 0.95), "digits")]).rows()
    assert digits[-1][0] == "most frequent class" and 0.05 < float(digits[-1][4]) < 0.2  # ten classes
    with pytest.raises(ValueError, match="one task"):
        vglib.RemedyTable([runs_of((0.3,)), runs_of((0.9,), "digits")])


def test_many_tuned_runs_are_the_same_in_worker_processes():
    other = TINY.but("tiny relu", activation="relu", init="he")
    one = vglib.run_tuned_many([TINY, other], "digits", steps=10, processes=1)
    two = vglib.run_tuned_many([TINY, other], "digits", steps=10, processes=2)
    assert list(one) == ["tiny tanh", "tiny relu"] and one == two


def test_a_chapter_table_runs_the_named_remedies_and_the_shallow_twin_at_their_chosen_rates(tmp_path):
    labels = ["ReLU, He", "tanh, Xavier"]
    twin = vglib.grid.shallow_twin("digits")
    cells = [GridCell(label, "digits", lr, s, (10,), (0.9 if lr == GRID_LRS[1] else 0.5,), (0.9,))
             for label in [*labels, twin.label] for lr in GRID_LRS for s in range(3)]  # fmt: skip
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"cells": cells_to_json(cells), "init": []}))
    grid = vglib.Grid.load(path)
    recorded = []

    def records(name, compute, config):
        recorded.append((name, config))
        return compute()

    table = vglib.compare_tuned(grid, labels, "digits", records=records, steps=10, seeds=(0,))
    rows = recorded[0][1][0]
    assert [r.label for r in rows] == [*labels, twin.label] and all(r.lr == GRID_LRS[1] for r in rows)
    assert rows[0].activation == "relu" and rows[1].activation == "tanh"  # the catalogue's remedies
    assert recorded[0][0] == "tuned digits" and recorded[0][1][1:] == ((0,), 10)
    assert [r.remedy for r in table.runs] == rows[:2] and table.shallow.remedy == rows[2]
    assert table["tanh, Xavier"].cells == tuple(
        run_group(rows[1], "digits", lrs=[rows[1].lr], seeds=(0,), steps=10)
    )
    with pytest.raises(ValueError, match="no remedy 'ReLU, Hee'"):
        vglib.compare_tuned(grid, ["ReLU, Hee"], "digits")


def test_grid_runs_carry_the_catalogued_remedy_not_just_its_label(tmp_path):
    highway = next(r for r in GRID_REMEDIES if r.skip == "highway")
    best = GRID_LRS[2]
    labels = (highway.label, SHALLOW_TWIN)
    cells = [GridCell(label, "teacher", lr, s, (10,), (0.3 if lr == best else 0.6,), (0.3,))
             for label in labels for lr in GRID_LRS[1:4] for s in range(3)]  # fmt: skip
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"meta": {}, "cells": cells_to_json(cells), "init": []}))
    grid = vglib.Grid.load(path)
    runs = grid.runs(highway.label, "teacher")
    assert runs.remedy == replace(highway, lr=best) and runs.remedy.skip == "highway"
    twin = grid.runs(SHALLOW_TWIN, "teacher").remedy
    assert twin == replace(vglib.grid.shallow_twin("teacher"), lr=best) and twin.depth == 1
