"""The gradient explorer: its redraw for every setting, its agreement with build_mlp, its widget."""

import itertools
import json
import re

import numpy as np
import pytest

import vglib
from vglib.plots import UNDERFLOW_FLOOR
from vglib.static import encode_log10, unpack_curves
from vglib.widgets import MAX_DEPTH, GradientExplorer


@pytest.fixture(scope="module")
def explorer():
    return GradientExplorer(width=64, max_depth=MAX_DEPTH)


@pytest.mark.parametrize(("activation", "init"), list(itertools.product(vglib.ACTIVATIONS, vglib.INITS)))
@pytest.mark.parametrize("depth", [1, MAX_DEPTH])
def test_redraw_draws_every_layer_for_every_setting(explorer, depth, activation, init):
    fig = explorer.redraw(depth, activation, init)
    for curve in (explorer.plot.weight, explorer.plot.activation):
        x, y = curve.line.get_data()
        np.testing.assert_array_equal(x, np.arange(1, depth + 1))
        assert np.isfinite(y).all() and (y >= UNDERFLOW_FLOOR).all()  # nothing blank
        bottom, top = explorer.plot.ax.get_ylim()
        assert bottom < y.min() and y.max() < top  # every point inside the axes
    assert f"depth {depth}, {activation}, {init}" in explorer.plot.ax.get_title()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    assert (rgb < 200).any(axis=-1).mean() > 0.01  # something is drawn


def test_underflow_to_zero_is_drawn_and_announced(explorer):
    explorer.redraw(MAX_DEPTH, "sigmoid", "small")
    prof = explorer.profile(MAX_DEPTH, "sigmoid", "small")
    zeros = int((prof.weight_grad_norms == 0).sum() + (prof.activation_grad_norms == 0).sum())
    assert zeros > 0  # (0.25 * 0.01 * sqrt(64))**100 is far below float32's 1e-45
    assert f"{zeros} norm(s) exactly 0" in explorer.plot.note.get_text()
    assert len(explorer.plot.weight.zeros.get_data()[0]) > 0


@pytest.mark.parametrize(("depth", "activation", "init"), [(1, "gelu", "he"), (37, "tanh", "small")])
def test_explorer_model_is_exactly_build_mlp(explorer, depth, activation, init):
    fresh = vglib.build_mlp(depth, 64, activation, init, seed=0)
    expected = vglib.gradient_profile(fresh, explorer.x, explorer.y)
    measured = explorer.profile(depth, activation, init)
    np.testing.assert_array_equal(measured.weight_grad_norms, expected.weight_grad_norms)
    np.testing.assert_array_equal(measured.activation_grad_norms, expected.activation_grad_norms)


def test_redraw_is_a_function_of_its_arguments(explorer):
    first = explorer.profile(20, "relu", "he")
    explorer.redraw(80, "selu", "lecun")
    again = explorer.profile(20, "relu", "he")
    np.testing.assert_array_equal(first.weight_grad_norms, again.weight_grad_norms)


def test_png_is_a_png(explorer):
    png = explorer.png(10, "elu", "orthogonal")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


@pytest.mark.parametrize(
    ("args", "error", "pattern"),
    [
        ((0, "relu", "he"), ValueError, "depth must be an int >= 1"),
        ((MAX_DEPTH + 1, "relu", "he"), ValueError, f"between 1 and {MAX_DEPTH}"),
        ((5, "swish", "he"), ValueError, "'leaky_relu'"),
        ((5, "relu", "kaiming"), ValueError, "'he'"),
    ],
)
def test_bad_settings_raise_clear_errors(explorer, args, error, pattern):
    with pytest.raises(error, match=pattern):
        explorer.redraw(*args)


def test_widget_controls_cover_every_choice_and_redraw_on_change():
    import ipywidgets as w

    explorer = vglib.gradient_explorer(depth=5, activation="tanh", init="he", max_depth=12, static=False)
    controls, image = explorer.widget.children
    depth, activation, init = controls.children
    assert (depth.min, depth.max, depth.value) == (1, 12, 5)
    assert tuple(activation.options) == vglib.ACTIVATIONS
    assert tuple(init.options) == vglib.INITS
    assert isinstance(image, w.Image)
    before = image.value
    activation.value = "sigmoid"
    assert image.value != before
    depth.value = 1
    after_depth = image.value
    init.value = "small"
    assert image.value not in (before, after_depth)


def test_live_explorer_carries_the_widget_and_its_static_twin():
    live = vglib.gradient_explorer(depth=3, activation="relu", init="he", max_depth=4)
    bundle = live._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # Jupyter: the live widget
    assert bundle["text/html"] == live.static_html  # the built page: the kernel-free explorer
    assert 'class="vg-curve-explorer"' in live.static_html


def test_static_explorer_holds_every_setting_as_measured():
    small = GradientExplorer(width=16, max_depth=5)
    page = small.static_html(depth=2, activation="tanh", init="he", depths=(1, 2, 5, 9))
    spec = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page, re.S)[1])
    depth, activation, init = spec["controls"]
    assert depth["values"] == ["1", "2", "5"] and depth["value"] == "2"  # 9 > max_depth is dropped
    assert activation["values"] == list(vglib.ACTIVATIONS) and init["values"] == list(vglib.INITS)
    assert len(spec["frames"]) == 3 * len(vglib.ACTIVATIONS) * len(vglib.INITS)
    prof = small.profile(5, "sigmoid", "small")
    frame = spec["frames"]["5|sigmoid|small"]
    weights, activations = unpack_curves(frame["y"], 2)
    assert weights == encode_log10(prof.weight_grad_norms)
    assert activations == encode_log10(prof.activation_grad_norms)
    assert frame["title"] == small.title(5, "sigmoid", "small", prof)
    with pytest.raises(ValueError, match="static grid"):
        small.static_html(depth=3, depths=(1, 2))


def test_curve_explorer_is_live_and_static():
    from vglib.plots import Series
    from vglib.static import Control

    calls = []

    def frame(scale: float, kind: str):
        calls.append((scale, kind))
        power = 1 if kind == "linear" else 2
        return f"{kind} x{scale}", [scale ** (power * np.arange(1, 6))]

    live = vglib.curve_explorer(
        [Control("scale", (0.5, 2.0), 0.5, kind="range"), Control("kind", ("linear", "square"), "linear")],
        frame, [Series("growth", "#000")], xlabel="layer", ylabel="value",
    )  # fmt: skip
    assert len(calls) == 1 + 4  # the first live frame, then every combination for the page
    spec = json.loads(re.search(r'<script type="application/json">(.*?)</script>', live.static_html, re.S)[1])
    assert set(spec["frames"]) == {"0.5|linear", "0.5|square", "2.0|linear", "2.0|square"}
    scale, _kind = live.widget.children[0].children
    image = live.widget.children[1]
    before = image.value
    scale.value = 2.0
    assert image.value != before and calls[-1] == (2.0, "linear")
