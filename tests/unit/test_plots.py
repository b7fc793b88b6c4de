"""Figures: returned as Figures, zeros drawn at the floor and marked, blitting never drops artists."""

import io

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.figure import Figure

import vglib
from vglib.plots import UNDERFLOW_FLOOR, ProfileFigure


def fake_profile(weights, activations=None):
    weights = np.asarray(weights, dtype=np.float64)
    activations = weights if activations is None else np.asarray(activations, dtype=np.float64)
    names = tuple(f"linear{i}" for i in range(1, len(weights) + 1))
    return vglib.GradientProfile(names, weights, activations, "head", 1.0, 0.5)


def pixels_differ_from_white(fig):
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return (rgb < 250).any(axis=-1).mean()


def test_profile_figure_draws_zeros_at_the_floor_and_says_so():
    plot = ProfileFigure()
    fig = plot.update(fake_profile([0.0, 0.0, 1e-30, 1e-3]), title="t")
    x, y = plot.weight.line.get_data()
    np.testing.assert_array_equal(x, [1, 2, 3, 4])
    np.testing.assert_array_equal(y, [UNDERFLOW_FLOOR, UNDERFLOW_FLOOR, 1e-30, 1e-3])
    np.testing.assert_array_equal(plot.weight.zeros.get_data()[0], [1, 2])
    assert plot.note.get_visible() and "4 norm(s) exactly 0" in plot.note.get_text()
    bottom, top = plot.ax.get_ylim()
    assert bottom < UNDERFLOW_FLOOR and top > 1e-3
    assert isinstance(fig, Figure)


def test_profile_figure_hides_the_note_without_zeros_and_marks_overflow():
    plot = ProfileFigure()
    plot.update(fake_profile([1.0, 2.0]))
    assert not plot.note.get_visible()
    plot.update(fake_profile([1.0, np.inf], [np.nan, 1.0]))
    assert "overflowed" in plot.note.get_text()
    assert np.isfinite(plot.weight.line.get_data()[1]).all()


def test_a_frozen_layer_is_a_gap_not_an_overflow():
    # B9: NaN (a frozen layer: no gradient to measure) was drawn at 1e39 as "overflowed"
    plot = ProfileFigure()
    plot.update(fake_profile([np.nan, np.nan, 0.2], [0.1, 0.1, 0.2]))
    y = plot.weight.line.get_data()[1]
    assert np.isnan(y[:2]).all() and y[2] == 0.2 and len(plot.weight.overflow.get_data()[0]) == 0
    note = plot.note.get_text()
    assert "2 layer(s) without a gradient (frozen)" in note and "overflow" not in note
    assert plot.ax.get_ylim()[1] < 1e3
    fig = vglib.plot_gradient_profile(fake_profile([np.nan, np.nan]))  # nothing to draw at all
    (text,) = fig.axes[0].texts
    assert "frozen" in text.get_text() and np.isfinite(fig.axes[0].get_ylim()).all()


def test_render_matches_a_full_draw_and_savefig_keeps_every_curve():
    plot = ProfileFigure()
    plot.update(fake_profile(np.logspace(-8, 0, 20)), title="first")
    plot.render()  # draws and keeps the background for these limits
    plot.update(fake_profile(np.logspace(-7, 0, 20)), title="second")  # same snapped limits
    blitted = plot.render().copy()
    with mpl.rc_context({"text.hinting": "no_hinting"}):  # as render draws text
        plot.figure.canvas.draw()  # an ordinary full draw of the same state
    full = np.asarray(plot.figure.canvas.buffer_rgba())
    differ = np.abs(blitted.astype(int) - full.astype(int)).max(axis=-1) > 8
    assert differ.mean() < 0.001
    buffer = io.BytesIO()
    plot.figure.savefig(buffer, format="png")  # artists must not stay 'animated' (skipped)
    assert all(not a.get_animated() for a in plot.ax.get_children())


def test_background_cache_is_bounded():
    plot = ProfileFigure(cache_size=3)
    for depth in (5, 15, 25, 35, 45):
        plot.update(fake_profile(np.ones(depth)))
        plot.render()
    assert len(plot._backgrounds) == 3


def test_plot_gradient_profile_overlays_labelled_profiles():
    profiles = {"a": fake_profile([1e-5, 1.0]), "b": fake_profile([0.0, 1.0, 2.0])}
    fig = vglib.plot_gradient_profile(profiles, quantity="activation", title="x")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.get_yscale() == "log"
    assert pixels_differ_from_white(fig) > 0.01
    assert any("exactly 0" in t.get_text() for t in ax.texts)


def test_plot_gradient_profile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'weight', 'activation'"):
        vglib.plot_gradient_profile(fake_profile([1.0]), quantity="bias")
    with pytest.raises(ValueError, match="at least one"):
        vglib.plot_gradient_profile({})


def test_activation_derivative_figure_marks_each_bound():
    fig = vglib.plot_activation_derivatives(("sigmoid", "tanh"))
    left, right = fig.axes
    assert len(left.lines) == 2
    bounds = sorted(line.get_ydata()[0] for line in right.lines if line.get_linestyle() == ":")
    assert bounds == [0.25, 1.0]
    with pytest.raises(ValueError, match="valid choices"):
        vglib.plot_activation_derivatives(("softsign",))


def test_curve_figure_draws_any_number_of_series():
    from vglib.plots import CurveFigure, Series

    series = [Series("a", "#000"), Series("b", "#111", dash="4 2"), Series("c", "#222")]
    plot = CurveFigure(series, xlabel="layer", ylabel="variance")
    plot.update([np.ones(5), np.full(5, 1e-3), np.array([1.0, 0.0, 1.0, 1.0, 1.0])], title="three")
    pixels = plot.render()
    assert pixels.shape[-1] == 4 and (pixels[..., :3] < 200).any()
    assert [c.line.get_linestyle() for c in plot.curves] == ["-", "--", "-"]
    assert plot.ax.get_xlabel() == "layer" and "1 norm(s) exactly 0" in plot.note.get_text()
    with pytest.raises(ValueError, match="2 curves for 3 series"):
        plot.update([np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match="at least one series"):
        CurveFigure([])


def test_order_to_chaos_figure_crosses_one_at_the_critical_point():
    fig = vglib.plot_order_to_chaos("tanh", [0.5, 1.0, 1.5])
    chis = fig.axes[0].lines[0].get_ydata()
    assert chis[0] == pytest.approx(0.5) and chis[1] == pytest.approx(1.0, abs=1e-9) and chis[2] > 1
    with pytest.raises(ValueError, match="two positive"):
        vglib.plot_order_to_chaos("tanh", [1.0])


def test_training_curves_show_each_run_and_the_baseline():
    from vglib.train import TrainingHistory

    runs = {"a": TrainingHistory(np.ones(4), np.array([2, 4]), np.array([0.5, 0.2]))}
    fig = vglib.plot_training_curves(runs, baseline=1 / 6)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [0.5, 0.2])
    assert ax.lines[1].get_ydata()[0] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="at least one"):
        vglib.plot_training_curves({})


def test_training_curves_draw_every_seed_of_a_label_in_its_colour_with_one_legend_entry():
    from vglib.train import TrainingHistory

    seeds = [TrainingHistory(np.ones(4), np.array([2, 4]), np.array([0.5, v])) for v in (0.1, 0.2, 0.3)]
    alone = TrainingHistory(np.ones(4), np.array([2, 4]), np.array([0.9, 0.8]))
    ax = vglib.plot_training_curves({"three seeds": seeds, "one": alone}).axes[0]
    assert [line.get_ydata()[-1] for line in ax.lines] == [0.1, 0.2, 0.3, 0.8]
    colours = [line.get_color() for line in ax.lines]
    assert colours[0] == colours[1] == colours[2] != colours[3]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["three seeds", "one"]
    with pytest.raises(TypeError, match="sequence of them"):
        vglib.plot_training_curves({"bad": [0.5]})


def test_plot_curves_pairs_dashed_theory_with_its_measurement():
    fig = vglib.plot_curves(
        np.arange(3), {"measured": np.ones(3), "theory": np.ones(3), "other": np.zeros(3)},
        xlabel="x", ylabel="y", dashed=("theory",),
    )  # fmt: skip
    measured, theory, other = fig.axes[0].lines
    assert theory.get_color() == measured.get_color() != other.get_color()
    assert theory.get_linestyle() == "--"
    with pytest.raises(ValueError, match="at least one"):
        vglib.plot_curves(np.arange(2), {}, xlabel="x", ylabel="y")


def test_harness_figure_shows_each_remedy_with_its_ratio_and_loss():
    results = [
        vglib.run_harness(vglib.Remedy(label, activation=act, init=init, depth=4, width=16, lr=lr), steps=20)
        for label, act, init, lr in (
            ("vanishing", "sigmoid", "default", 1e-3),
            ("diverges", "relu", "he", 50.0),
        )
    ]
    fig = vglib.plot_harness_results(results)
    left, right = fig.axes
    rows = {t.get_text(): y for t, y in zip(left.get_yticklabels(), left.get_yticks(), strict=True)}
    assert rows["vanishing"] > rows["diverges"]  # first result on top
    widths = sorted((bar.get_y(), bar.get_width()) for bar in left.patches)
    expected = sorted((row, np.log10(r.gradient_ratio)) for row, r in zip((1, 0), results, strict=True))
    assert [w for _, w in widths] == pytest.approx([np.clip(w, -45, 39) for _, w in expected], rel=1e-6)
    assert any(
        t.get_text().strip() == "diverged" for t in right.texts
    )  # an infinite loss is marked, not lost
    with pytest.raises(ValueError, match="at least one"):
        vglib.plot_harness_results([])


def test_harness_figure_over_seeds_draws_the_median_with_the_range_as_a_whisker():
    runs = vglib.run_harnesses([vglib.Remedy("tanh", activation="tanh", init="xavier", depth=4, width=16)],
                               steps=20, seeds=(0, 1, 2), processes=1)["tanh"]  # fmt: skip
    fig = vglib.plot_harness_results([runs])
    left, right = fig.axes
    (bar,) = left.patches
    assert bar.get_width() == pytest.approx(np.log10(runs.gradient_ratio.median), rel=1e-6)
    (whiskers,) = [c for c in left.collections if len(c.get_segments()) == 1]
    (segment,) = whiskers.get_segments()
    low, high = sorted(segment[:, 0])
    assert low == pytest.approx(np.log10(runs.gradient_ratio.low), rel=1e-6)
    assert high == pytest.approx(np.log10(runs.gradient_ratio.high), rel=1e-6)
    (loss_bar,) = right.patches
    assert loss_bar.get_width() == pytest.approx(runs.final_loss.median)


def test_remedy_and_tuning_figures_from_the_committed_grid():
    from pathlib import Path

    grid = vglib.Grid.load(Path(__file__).resolve().parents[2] / "benchmarks/results/harness_grid.json")
    labels = ["ReLU, He", "ReLU, He + residual, scale 1"]  # the second diverges on teacher
    tables = [vglib.RemedyTable([grid.runs(label, task) for label in labels]) for task in vglib.TASKS]
    fig = vglib.plot_remedies(tables)
    assert [ax.get_title() for ax in fig.axes] == list(vglib.TASKS)
    assert fig.axes[0].get_xlim() == (0.0, 1.2) and fig.axes[1].get_xlim() == (0.0, 1.0)
    tuning = vglib.plot_tuning(grid, labels)
    assert [ax.get_xscale() for ax in tuning.axes] == ["log", "log"]
    with pytest.raises(ValueError, match="same remedies"):
        vglib.plot_remedies([tables[0], vglib.RemedyTable([grid.runs("ReLU, He", "digits")])])


def test_panels_gives_gridded_axes_side_by_side():
    fig, axes = vglib.plots.panels(3, width=9, height=3, sharey=True)
    assert len(axes) == 3 and fig.get_size_inches().tolist() == [9.0, 3.0]
    lefts = [ax.get_position().x0 for ax in axes]
    assert lefts == sorted(lefts)  # one row, left to right
    fig.canvas.draw()
    assert all(
        ax.xaxis.get_gridlines()[0].get_visible() and ax.yaxis.get_gridlines()[0].get_alpha() == 0.3
        for ax in axes
    )
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[2])
    _, (only,) = vglib.plots.panels(np.int64(1))  # any integer type
    assert not only.get_shared_y_axes().joined(only, axes[0])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="count"):
            vglib.plots.panels(bad)
    with pytest.raises(ValueError, match="width"):
        vglib.plots.panels(2, width=-1)


def test_seed_lines_labels_the_group_once():
    _, (ax,) = vglib.plots.panels(1)
    curves = [np.arange(4.0) * k for k in (1, 2, 3)]
    lines = vglib.plots.seed_lines(ax, np.arange(4), curves, label="ReLU", color="#0072B2", linestyle="--")
    assert len(lines) == 3 and [line.get_label().startswith("_") for line in lines] == [False, True, True]
    assert all(line.get_color() == "#0072B2" and line.get_linestyle() == "--" for line in lines)
    np.testing.assert_array_equal(lines[2].get_ydata(), curves[2])
    _, labels = ax.get_legend_handles_labels()
    assert labels == ["ReLU"]
    # one x per curve, of the curve's own length (runs that stopped at different steps)
    xs = [np.arange(2), np.arange(5)]
    lines = vglib.plots.seed_lines(ax, xs, [np.ones(2), np.ones(5)])
    assert [len(line.get_xdata()) for line in lines] == [2, 5]
    # three seeds of three points: the x is shared, not one scalar per curve
    lines = vglib.plots.seed_lines(ax, np.arange(3.0), [np.zeros(3)] * 3)
    assert all(np.array_equal(line.get_xdata(), np.arange(3.0)) for line in lines)
    with pytest.raises(ValueError, match="at least one curve"):
        vglib.plots.seed_lines(ax, np.arange(3), [])


def update_table(ratios):
    """A MonitorTable of update ratios: ``ratios[layer][step]``, layers named linear1, linear2, ..."""
    ratios = np.asarray(ratios, dtype=np.float64)
    layers, steps = ratios.shape
    columns = {c: np.full(layers * steps, np.nan) for c in vglib.tables.COLUMNS}
    columns["update_ratio"] = ratios.T.ravel()
    return vglib.MonitorTable(
        step=np.repeat(np.arange(steps) * 10, layers),
        layer=np.array([f"linear{i + 1}" for i in range(layers)] * steps, dtype=object),
        kind=np.array(["parameters"] * (layers * steps), dtype=object),
        columns=columns,
    )


def test_update_ratios_draw_exact_zeros_at_a_floor_and_count_them():
    fig = vglib.plot_update_ratios(update_table([[0.0, 0.0, 1e-9], [1e-3, 2e-3, 3e-3]]))
    ax = fig.axes[0]
    first = ax.lines[0]  # linear1's curve
    np.testing.assert_allclose(first.get_ydata(), [1e-10, 1e-10, 1e-9])  # a decade below the smallest ratio
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["▼ 2 ratio(s) exactly 0 (no change in float32), drawn at 1e-10"]
    assert ax.get_legend() is not None and len(fig.axes) == 1


def test_update_ratios_of_many_layers_get_a_colour_bar_not_a_legend():
    fig = vglib.plot_update_ratios(update_table(np.full((20, 3), 1e-3)))
    assert len(fig.axes) == 2  # the plot and its colour bar
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["linear1", "linear20"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["rule of thumb 0.001"]
    assert not fig.axes[0].texts  # no zeros, no note
