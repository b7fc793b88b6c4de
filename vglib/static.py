"""Kernel-free explorers for the static HTML page.

On a built page there is no Python kernel to recompute anything, so an explorer ships its answers:
one precomputed frame (a title and a few per-layer curves) per combination of control values, and
a small self-contained script (``assets/curve_explorer.js``, no libraries, no network) that draws
the selected frame as SVG whenever a control changes. Any chapter can build one with
``curve_explorer_html``; the gradient explorer is one such use.

Shareable state: the page address records the controls, so a link reproduces a curve. The
fragment holds one entry per explorer that differs from its defaults, each with every control::

    #explorer-1:depth=50,activation=tanh,init=he&explorer-3:lr=1e-3,init=he%20(ReLU)

Explorers are numbered from 1 in page order (among the page's ``.vg-curve-explorer`` elements);
entries are separated by ``&``, controls by ``,``, and a name from its value by ``=``. Names and
values are URI-encoded (JavaScript's ``encodeURIComponent``; ``explorer_fragment`` writes the same
from Python); a value is the control's value as the page shows it (``str(v)``, so ``2.0`` stays
``2.0``). A control redraws on every ``input`` event (each step of a dragged slider), and the
script rewrites the fragment with ``history.replaceState`` (no history entry, no scroll) only on
``change``, when the value is committed (a slider released or stepped with the keyboard, a menu
choice), and only when the fragment would differ: browsers rate-limit ``replaceState`` (Safari
throws a SecurityError past 100 calls in 30 s, Chrome ignores calls past its limit), so a write
per drag step could leave the address behind the curve. An explorer back at its defaults leaves
the fragment, and when all are, so does the explorer state. It reads the fragment on load (and
scrolls the first explorer it names into view) and on ``hashchange``. In an explorer state, an
explorer or control the fragment omits takes its default, and so does a control given a value
that is not among its values; entries for explorers the page lacks are ignored. A fragment with
no ``explorer-N:`` entry is an ordinary anchor (a section heading): the explorers leave it alone
until a control changes, when it is replaced by the explorer state.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote

import numpy as np

from .plots import Series

__all__ = [
    "Control",
    "curve_explorer_html",
    "encode_log10",
    "explorer_fragment",
    "pack_curves",
    "unpack_curves",
]

_CEILING = 3854  # 100 * log10(float32 max): where overflow (inf/nan) is drawn
_ZERO = -32768  # int16 code of an exact zero


@dataclass(frozen=True)
class Control:
    """A control of a static explorer: a slider (``kind="range"``) or a menu (``"select"``)."""

    name: str
    values: tuple[str | int | float, ...]
    value: str | int | float
    kind: str = "select"

    def __post_init__(self) -> None:
        if self.kind not in ("range", "select"):
            raise ValueError(f"unknown control kind {self.kind!r}; valid choices are 'range', 'select'")
        if self.value not in self.values:
            raise ValueError(f"{self.name}: initial value {self.value!r} is not among {self.values!r}")


def encode_log10(values: np.ndarray) -> list[int | None]:
    """Values as ``round(100 * log10(v))``: compact, and plenty for a log-scale plot. Exact zeros
    (underflow) become ``None``, drawn at the floor and marked; inf and NaN the float32 ceiling."""
    values = np.asarray(values, dtype=np.float64)
    out: list[int | None] = []
    for v in values:
        if v == 0.0:
            out.append(None)
        elif not np.isfinite(v):
            out.append(_CEILING)
        else:
            out.append(round(100 * float(np.log10(v))))
    return out


def pack_curves(curves: Sequence[np.ndarray]) -> str:
    """Curves of equal length as one base64 string of little-endian int16 ``encode_log10`` codes
    (zeros as -32768): about 2.7 characters a value, half the size of JSON numbers."""
    codes = [_ZERO if v is None else v for curve in curves for v in encode_log10(curve)]
    return base64.b64encode(np.asarray(codes, dtype="<i2").tobytes()).decode("ascii")


def unpack_curves(packed: str, n_curves: int) -> list[list[int | None]]:
    """The inverse of ``pack_curves`` (what the page's script does), as ``encode_log10`` codes."""
    codes = np.frombuffer(base64.b64decode(packed), dtype="<i2").reshape(n_curves, -1)
    return [[None if v == _ZERO else int(v) for v in row] for row in codes]


def _inline_script() -> str:
    """``assets/curve_explorer.js`` as each explorer carries it: without its comment lines and
    indentation (a page holds one copy per explorer, and pages have a size budget)."""
    script = resources.files("vglib").joinpath("assets/curve_explorer.js").read_text(encoding="utf-8")
    lines = (line.strip() for line in script.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//"))


def curve_explorer_html(
    controls: Sequence[Control],
    frame: Callable[..., tuple[str, Sequence[np.ndarray]]],
    series: Sequence[Series],
    *,
    xlabel: str,
    ylabel: str,
    floor: float = 1e-45,
) -> str:
    """A self-contained HTML explorer: ``frame(**settings) -> (title, curves)`` is called for every
    combination of control values now, and the page only looks the answers up."""
    names = [c.name for c in controls]
    frames: dict[str, dict[str, object]] = {}
    for combination in itertools.product(*(c.values for c in controls)):
        title, curves = frame(**dict(zip(names, combination, strict=True)))
        if len(curves) != len(series):
            raise ValueError(f"frame returned {len(curves)} curves for {len(series)} series")
        key = "|".join(str(v) for v in combination)
        frames[key] = {"title": title, "y": pack_curves(curves)}
    spec = {
        "controls": [
            # values travel as the same strings the frame keys are made of (JSON would turn 1.0 into 1)
            {"name": c.name, "kind": c.kind, "values": [str(v) for v in c.values], "value": str(c.value)}
            for c in controls
        ],
        "series": [{"label": s.label, "color": s.color, "dash": s.dash} for s in series],
        "frames": frames,
        "floor": round(100 * float(np.log10(floor))),
        "xlabel": xlabel,
        "ylabel": ylabel,
    }
    data = json.dumps(spec, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    script = _inline_script()
    first = next(iter(frames.values()))
    return (
        '<div class="vg-curve-explorer">'
        '<form class="vg-controls" onsubmit="return false" '
        'style="display:flex;flex-wrap:wrap;gap:0.3em 1.2em;font-size:0.9em"></form>'
        '<svg viewBox="0 0 640 330" role="img" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        'style="width:100%;max-width:640px;height:auto;'
        f'background:#fff" aria-label="{html.escape(str(first["title"]))}"></svg>'
        f'<script type="application/json">{data}</script>'
        f"<script>{script}</script>"
        "</div>"
    )


def _uri_component(value: object) -> str:
    # what JavaScript's encodeURIComponent leaves alone: letters, digits and -_.!~*'()
    return quote(str(value), safe="!~*'()")


def explorer_fragment(states: Mapping[int, Mapping[str, str | int | float]]) -> str:
    """The page-address fragment (without ``#``) that opens explorers in the given states.

    Parameters
    ----------
    states
        Control values by explorer number (1-based, in page order), e.g.
        ``{1: {"depth": 50, "activation": "tanh", "init": "he"}}``. Values are written as
        ``str(v)``, as the page shows them; controls left out take their defaults on the page.

    Returns
    -------
    str
        The fragment in the syntax of this module's docstring, as the page's script writes it,
        e.g. ``"explorer-1:depth=50,activation=tanh,init=he"``.
    """
    entries = []
    for index, values in states.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 1:
            raise ValueError(f"explorer numbers start at 1 (page order); got {index!r}")
        pairs = []
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"control names are non-empty strings; got {name!r}")
            pairs.append(f"{_uri_component(name)}={_uri_component(value)}")
        entries.append(f"explorer-{index}:" + ",".join(pairs))
    return "&".join(entries)
