"""The kernel-free explorer builder: encoding, page structure, errors."""

import json
import re

import numpy as np
import pytest

from vglib.plots import Series
from vglib.static import Control, curve_explorer_html, encode_log10, pack_curves, unpack_curves


def test_encode_log10_keeps_two_decimals_and_marks_zeros_and_overflow():
    assert encode_log10(np.array([1.0, 1e-3, 2.0, 0.0, np.inf, np.nan])) == [0, -300, 30, None, 3854, 3854]


def test_page_holds_one_frame_per_combination_and_the_script():
    calls = []

    def frame(n: int, kind: str):
        calls.append((n, kind))
        return f"{kind} {n}", [np.logspace(-n, 0, n)]

    page = curve_explorer_html(
        [Control("n", (2, 3), 2, kind="range"), Control("kind", ("a", "b</script>"), "a")],
        frame,
        [Series("curve", "#000")],
        xlabel="x",
        ylabel="y",
    )
    assert len(calls) == 4
    data = re.search(r'<script type="application/json">(.*?)</script>', page, re.S)[1]
    spec = json.loads(data.replace("<\\/", "</"))
    assert set(spec["frames"]) == {"2|a", "3|a", "2|b</script>", "3|b</script>"}
    assert spec["frames"]["3|a"]["title"] == "a 3"
    assert unpack_curves(spec["frames"]["3|a"]["y"], 1) == [[-300, -150, 0]]
    assert "document.querySelectorAll" in page  # the renderer travels with the page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_bad_controls_and_frames_are_rejected():
    with pytest.raises(ValueError, match="'range', 'select'"):
        Control("n", (1,), 1, kind="slider")
    with pytest.raises(ValueError, match="not among"):
        Control("n", (1, 2), 3)
    with pytest.raises(ValueError, match="2 curves for 1 series"):
        curve_explorer_html(
            [Control("n", (1,), 1)], lambda n: ("t", [np.ones(1), np.ones(1)]), [Series("s", "#000")],
            xlabel="x", ylabel="y",
        )  # fmt: skip


def test_packing_round_trips_codes_zeros_and_overflow():
    curves = [np.array([1.0, 0.0, 1e-44]), np.array([np.inf, 3e38, 1e-3])]
    assert unpack_curves(pack_curves(curves), 2) == [encode_log10(c) for c in curves]


def test_float_control_values_match_the_frame_keys():
    page = curve_explorer_html(
        [Control("s", (1.0, 2.5), 1.0)], lambda s: (str(s), [np.ones(2)]), [Series("c", "#000")],
        xlabel="x", ylabel="y",
    )  # fmt: skip
    spec = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page, re.S)[1])
    assert spec["controls"][0]["values"] == ["1.0", "2.5"] and set(spec["frames"]) == {"1.0", "2.5"}
