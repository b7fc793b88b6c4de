"""The kernel-free explorer builder: encoding, page structure, errors."""

import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

import vglib
from vglib.plots import Series
from vglib.static import (
    Control,
    curve_explorer_html,
    encode_log10,
    explorer_fragment,
    pack_curves,
    unpack_curves,
)


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


def test_explorer_fragment_syntax_and_encoding_round_trip():
    states = {
        1: {"depth": 50, "activation": "tanh", "init": "he"},
        3: {"lr": "1e-3", "s": 2.0, "init": "he (ReLU)"},
    }
    fragment = explorer_fragment(states)
    assert fragment == "explorer-1:depth=50,activation=tanh,init=he&explorer-3:lr=1e-3,s=2.0,init=he%20(ReLU)"
    odd = {"a,b=c&d%": "x:y#z/é"}  # every separator of the syntax, and more, inside a name and a value
    entry = explorer_fragment({2: odd})
    head, body = entry.split(":", 1)
    name, value = body.split("=")  # exactly one raw "=": the separator
    assert head == "explorer-2" and not set(",&#:/") & set(body)
    assert (unquote(name), unquote(value)) == ("a,b=c&d%", "x:y#z/é")
    # decoded as the page does: split on & then , then the first =, then decode each part
    decoded = {}
    for item in fragment.split("&"):
        index, pairs = re.fullmatch(r"explorer-([1-9][0-9]*):(.*)", item).groups()
        decoded[int(index)] = dict(
            tuple(unquote(part) for part in pair.split("=", 1)) for pair in pairs.split(",")
        )
    assert decoded == {i: {k: str(v) for k, v in values.items()} for i, values in states.items()}
    assert explorer_fragment({}) == ""


def test_explorer_fragment_rejects_bad_numbers_and_names():
    with pytest.raises(ValueError, match="start at 1"):
        explorer_fragment({0: {"depth": 1}})
    with pytest.raises(ValueError, match="start at 1"):
        explorer_fragment({True: {"depth": 1}})
    with pytest.raises(TypeError, match="non-empty strings"):
        explorer_fragment({1: {"": 1}})


def small_page() -> str:
    """A one-control explorer page: what the script tests below read."""
    return curve_explorer_html(
        [Control("n", (1, 2), 1)],
        lambda n: (str(n), [np.ones(2)]),
        [Series("c", "#000")],
        xlabel="x",
        ylabel="y",
    )


def test_page_script_reads_and_writes_the_address():
    script = re.search(r"<script>(.*?)</script>", small_page(), re.S)[1]
    assert "history.replaceState" in script and '"hashchange"' in script and "explorer-" in script
    assert "pushState" not in script and "location.hash =" not in script  # no history entries, no jumps


def test_page_carries_the_script_without_comment_lines_or_indentation():
    inlined = re.search(r"<script>(.*?)</script>", small_page(), re.S)[1]
    source = (Path(vglib.__file__).parent / "assets" / "curve_explorer.js").read_text(encoding="utf-8")
    code = [
        line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("//")
    ]
    assert inlined.splitlines() == code  # every statement kept, in order, one per line
    assert len(inlined) < 0.85 * len(source)
    # a page carries one copy per explorer, and the heaviest chapter is close to its 3 MB budget
    # (tests/site/test_site.py): comments go on lines of their own, where they are dropped
    assert "/*" not in inlined and not any(" // " in line for line in code)
    assert len(inlined.encode("utf-8")) < 7_800
