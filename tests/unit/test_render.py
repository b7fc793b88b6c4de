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


def test_table_from_rows_renders_as_text_and_html_and_converts_to_pandas():
    from vglib import Table

    table = Table.from_rows({"pre-LN": {"lr": "1e-3", "accuracy": "0.99"},
                             "post-LN": {"lr": "2e-3", "accuracy": "1.00"}}, index="variant")  # fmt: skip
    assert table.header == ("variant", "lr", "accuracy") and table.rows[1] == ("post-LN", "2e-3", "1.00")
    assert repr(table).split("\n")[0] == "variant    lr  accuracy"  # labels left, the rest right-aligned
    assert (
        table._repr_html_().startswith('<table class="vg-harness vg-results">')
        and "<td>post-LN</td>" in table._repr_html_()
    )
    assert table.column("lr") == {"pre-LN": "1e-3", "post-LN": "2e-3"}
    frame = table.to_pandas()
    assert list(frame.columns) == ["lr", "accuracy"] and frame.loc["post-LN", "accuracy"] == "1.00"
    assert frame.index.name == "variant"
    with pytest.raises(ValueError, match="no column 'loss'; the columns are"):
        table.column("loss")
    with pytest.raises(ValueError, match="row 'b' has the columns"):
        Table.from_rows({"a": {"x": "1"}, "b": {"y": "2"}})
    with pytest.raises(ValueError, match="at least one row"):
        Table.from_rows({})
    with pytest.raises(TypeError, match="must be a str"):
        Table(("a", "b"), (("x", 0.5),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 cells"):
        Table(("a", "b"), (("x",),))
