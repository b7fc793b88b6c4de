"""vglib.glue / vglib.rounded: a number is stored at the precision the page shows it."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import vglib


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (1.9019649062855035, ".3f", 1.902),
        (1.4207747780569426e-19, ".1e", 1.4e-19),
        (1.420774708864332e-19, ".1e", 1.4e-19),  # the same page number from another CPU's last bits
        (0.0027999, ".4f", 0.0028),
        (9626.4, ".0f", 9626.0),
        (0.12345, ".1%", 0.123),
        (0.98765, ".2g", 0.99),
        (-2.5e-7, ".0e", -2e-07),  # round half to even, as format() does
        (4.0, "g", 4.0),
    ],
)
def test_rounded_keeps_exactly_what_the_format_shows(value, fmt, expected):
    stored = vglib.rounded(value, fmt)
    assert stored == expected
    assert format(stored, fmt) == format(value, fmt)  # the page reads the same
    assert vglib.rounded(stored, fmt) == stored  # and nothing beyond it is kept


@pytest.mark.parametrize(
    ("value", "digits", "expected"), [(123456.0, 2, 120000.0), (0.000123456, 3, 0.000123), (7.0, 1, 7.0)]
)
def test_rounded_to_significant_digits(value, digits, expected):
    assert vglib.rounded(value, digits=digits) == expected


def test_rounded_keeps_non_finite_values():
    assert vglib.rounded(math.inf, ".3f") == math.inf
    assert math.isnan(vglib.rounded(math.nan, digits=2))


@pytest.mark.parametrize("fmt", ["3f", ".3", ".3d", "{:.3f}", ".3s", 3, ""])
def test_rounded_rejects_formats_it_cannot_honour(fmt):
    with pytest.raises(ValueError, match="format spec"):
        vglib.rounded(1.0, fmt)


def test_rounded_needs_exactly_one_precision():
    with pytest.raises(TypeError, match="exactly one"):
        vglib.rounded(1.0)
    with pytest.raises(TypeError, match="exactly one"):
        vglib.rounded(1.0, ".2f", digits=2)
    with pytest.raises(ValueError, match="significant"):
        vglib.rounded(1.0, digits=0)


def test_glue_converts_array_scalars_and_keeps_ints_and_strings():
    assert vglib.glue("a", np.float64(0.123456), ".2f") == 0.12
    assert type(vglib.glue("b", np.float32(2.5), ".1f")) is float
    assert vglib.glue("c", torch.tensor(3.14159), ".3f") == 3.142
    assert vglib.glue("d", np.int64(42)) == 42 and type(vglib.glue("d", np.int64(42))) is int
    assert vglib.glue("e", "healthy") == "healthy"
    assert vglib.glue("f", True) is True


def test_glue_refuses_a_float_without_a_precision_and_a_precision_without_a_float():
    with pytest.raises(TypeError, match="exactly one of fmt"):
        vglib.glue("x", 0.5)
    with pytest.raises(TypeError, match="for floats"):
        vglib.glue("n", 3, ".2f")
    with pytest.raises(TypeError, match="a number, a bool or a str"):
        vglib.glue("t", torch.ones(3), ".2f")


def test_glue_stores_the_rounded_text_that_myst_nb_reads(capsys):
    """In a kernel, myst-nb stores repr() of what it is given; glue gives it the rounded value."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    published = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: published.append((data, metadata))
    try:
        vglib.glue("loss", 0.28012345, ".3f")
    finally:
        InteractiveShell.clear_instance()
    (data, metadata) = published[0]
    assert data == {"application/papermill.record/text/plain": "0.28"}
    assert metadata["scrapbook"]["name"] == "loss"


def test_glue_runs_where_myst_nb_is_absent():
    """On Colab there is no myst-nb: a chapter's glue calls still run, and return the value."""
    code = (
        "import sys; sys.modules['myst_nb'] = None\n"
        "import vglib\n"
        "assert vglib.glue('x', 1.23456, '.2f') == 1.23\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
