"""Sphinx extension for the API reference: attribute docstrings are shown as written.

napoleon reads the first line of a data, attribute or property docstring as Google style's inline
``type: description``, so a vglib constant documented as "Forward collapse: at some layer ..." would
show "Forward collapse" as its type (and ``-n`` would report it as a missing class). vglib types its
attributes with annotations, never inline: these docstrings are kept as they were before napoleon
ran; napoleon still parses every module, class and function docstring.
"""

from __future__ import annotations

from typing import Any

_KINDS = ("data", "attribute", "property")
_kept: dict[int, list[str]] = {}


def _keep(app: Any, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    if what in _KINDS:
        _kept[id(lines)] = list(lines)


def _restore(app: Any, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    kept = _kept.pop(id(lines), None)
    if kept is not None:
        lines[:] = kept


def setup(app: Any) -> dict[str, Any]:
    # napoleon listens at the default priority, 500: keep before it, restore after it
    app.connect("autodoc-process-docstring", _keep, priority=400)
    app.connect("autodoc-process-docstring", _restore, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
