"""The one renderer behind HarnessTable and RemedyTable."""

import pytest

from vglib._render import html_table, text_table


def test_text_table_aligns_columns_under_a_rule_with_the_caption_above():
    out = text_table(
        ("remedy", "loss"), [("ReLU, He", "0.355"), ("tanh", "0.1"), ("linear", "")], "a caption"
    )
    lines = out.split("\n")
    assert lines[0] == "a caption"
    assert lines[1] == "remedy     loss" and set(lines[2]) == {"-"} and len(lines[2]) == len(lines[1])
    assert lines[3] == "ReLU, He  0.355" and lines[4] == "tanh        0.1"  # first column left, others right
    assert lines[5] == "linear"  # trailing blanks dropped
    assert text_table(("a",), [("b",)]).split("\n")[0] == "a"  # no caption line without a caption


def test_html_table_escapes_and_rows_must_fit_the_header():
    html = html_table(("x<y",), [("a&b",)], "c")
    assert "<th>x&lt;y</th>" in html and "<td>a&amp;b</td>" in html and "<caption>c</caption>" in html
    assert "<caption>" not in html_table(("x",), [("1",)])
    with pytest.raises(ValueError, match="2 cells"):
        text_table(("a", "b"), [("only one",)])
