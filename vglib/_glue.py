"""Numbers for the page: glue a value at the precision the prose shows, and no finer.

nbval compares a glued value's stored text exactly. A float stored at full ``repr`` precision
differs in its last digits on another CPU (other vector kernels, another BLAS path), so a chapter
would fail as a regression test on any machine but the one that recorded it. :func:`glue` stores
the value rounded as the page displays it, which is also all the page can claim.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

__all__ = ["glue", "rounded"]

_FORMAT = re.compile(r"^(?:\.(\d+))?([efg%])$")


def _as_number(value: Any) -> Any:
    """Python scalars from NumPy/PyTorch scalars (0-d arrays and one-element tensors included)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"glue takes a number, a bool or a str, got {type(value).__name__}")


def rounded(value: float, fmt: str | None = None, *, digits: int | None = None) -> float:
    """``value`` rounded as the format spec ``fmt`` (``".3f"``, ``".1e"``, ``".2g"``, ``".0%"``)
    shows it, or to ``digits`` significant digits. Exactly one of the two is given."""
    if (fmt is None) == (digits is None):
        raise TypeError("give exactly one of fmt (a format spec: '.3f', '.1e', '.2g', '.0%') or digits")
    value = float(value)
    if not math.isfinite(value):
        return value
    if digits is not None:
        if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
            raise ValueError(f"digits must be an int >= 1 (significant digits), got {digits!r}")
        return float(f"{value:.{digits - 1}e}")
    match = _FORMAT.match(fmt) if isinstance(fmt, str) else None
    if match is None:
        raise ValueError(
            f"fmt must be a format spec '[.<precision>]<type>', type e, f, g or %, e.g. '.3f', got {fmt!r}"
        )
    precision, kind = int(match.group(1) or 6), match.group(2)  # Python's default precision is 6
    if kind == "%":
        return round(float(f"{value * 100:.{precision}f}") / 100, precision + 2)
    return float(format(value, fmt))


def glue(name: str, value: Any, fmt: str | None = None, *, digits: int | None = None) -> Any:
    """Glue ``value`` under ``name`` for the page (``{glue:text}`name:fmt```), stored at the page's
    precision: a float is rounded as ``fmt`` shows it (or to ``digits`` significant digits), so the
    notebook's stored output carries only the digits the prose displays. Ints, bools and strings are
    stored as they are. The value is stored for the page and not shown as a cell output of its own
    (it is returned, so a cell that ends with the call shows it as the cell's result).

    myst-nb is imported only here, so a chapter runs where it is not installed (Colab): the value is
    then returned and not stored.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    value = _as_number(value)
    if isinstance(value, float):
        value = rounded(value, fmt, digits=digits)
    elif fmt is not None or digits is not None:
        raise TypeError(f"fmt and digits are for floats; {name!r} is a {type(value).__name__}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # pragma: no cover - exercised where myst-nb is absent
        return value
    myst_glue(name, value, display=False)
    return value
