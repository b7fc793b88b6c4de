"""One renderer for vglib's result tables: aligned text for ``repr`` and an HTML table for notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["html_table", "text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """Columns padded to their widest cell (the first left-aligned, the rest right-aligned), a rule
    under the header, and the caption, if any, above."""
    every = [tuple(header), *(tuple(row) for row in rows)]
    if any(len(row) != len(header) for row in every):
        raise ValueError(f"every row needs {len(header)} cells, one per column")
    widths = [max(len(row[i]) for row in every) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)).rstrip()

    lines = [line(row) for row in every]
    lines.insert(1, "-" * max(len(x) for x in lines))
    return "\n".join([caption, *lines] if caption else lines)


def html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", classes: str = "vg-harness"
) -> str:
    """The same table as HTML (class ``vg-harness``, which the book's stylesheet formats, by default:
    the harness's tables; other tables add a class of their own to it)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    top = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (
        f'<table class="{escape(classes)}">{top}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )
