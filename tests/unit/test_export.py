"""Export: MonitorTable, Diagnosis and GradientProfile to pandas, CSV and JSON (CSV and JSON without
pandas), round trips, and the message when pandas is missing."""

import csv
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import vglib
from vglib.tables import COLUMNS


@pytest.fixture(scope="module")
def table() -> vglib.MonitorTable:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    with vglib.GradientMonitor(model, opt, every=2) as monitor:
        for _ in range(5):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    return monitor.table(summaries=True)


def odd_table() -> vglib.MonitorTable:
    """Rows with infinities, NaN, a layer name that needs quoting, and a column beyond COLUMNS."""
    columns = {c: np.array([1.0, np.nan]) for c in COLUMNS}
    columns["grad_norm"] = np.array([np.inf, -np.inf])
    columns["weight_norm"] = np.array([1e-300, 0.1 + 0.2])
    columns["extra"] = np.array([np.nan, 2.5])
    return vglib.MonitorTable(
        step=np.array([0, 10]), layer=np.array(['a,"b"\nc', "é"], dtype=object),
        kind=np.array(["parameters", "global"], dtype=object), columns=columns,
    )  # fmt: skip


def assert_same(a: vglib.MonitorTable, b: vglib.MonitorTable) -> None:
    assert a.step.dtype == b.step.dtype == np.int64
    assert a.step.tolist() == b.step.tolist()
    assert a.layer.tolist() == b.layer.tolist() and a.kind.tolist() == b.kind.tolist()
    assert a.value_columns() == b.value_columns()
    for c in a.value_columns():
        np.testing.assert_array_equal(a[c], b[c])  # bit for bit, NaN where NaN


def test_to_dataframe_is_tidy_with_sensible_dtypes(table):
    df = table.to_dataframe()
    assert list(df.columns) == ["step", "layer", "kind", *COLUMNS]
    assert len(df) == len(table)
    assert df["step"].dtype == np.int64
    assert isinstance(df["layer"].dtype, pd.CategoricalDtype)
    assert isinstance(df["kind"].dtype, pd.CategoricalDtype)
    assert list(df["kind"].cat.categories) == ["parameters", "activation", "global", "group"]
    assert list(df["layer"].cat.categories) == list(dict.fromkeys(table.layer))
    for c in COLUMNS:
        assert df[c].dtype == np.float64
        np.testing.assert_array_equal(df[c].to_numpy(), table[c])
    # the tidy frame reshapes like the table: one layer's series, the matrix
    assert df.loc[df.layer == "2", "grad_norm"].tolist() == table.series("2", "grad_norm").tolist()
    wide = df[df.kind == "parameters"].pivot(index="layer", columns="step", values="grad_norm")
    names, steps, values = table.matrix("grad_norm")
    np.testing.assert_array_equal(wide.loc[names, steps].to_numpy(), values)
    # the global norm from the frame, and by hand from the layer rows (no tied weights here)
    by_step = (
        df[df.kind == "parameters"].groupby("step")["grad_norm"].apply(lambda g: math.sqrt((g**2).sum()))
    )
    np.testing.assert_allclose(table.global_grad_norm()[1], by_step.to_numpy(), rtol=1e-12)


def test_a_table_without_the_new_columns_exports_them_as_nan(table):
    plain = vglib.MonitorTable(table.step, table.layer, table.kind, {"grad_norm": table["grad_norm"]})
    df = plain.to_dataframe()
    assert list(df.columns) == ["step", "layer", "kind", *COLUMNS]
    assert df["lr"].isna().all()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_round_trip_exactly(table, tmp_path, fmt):
    for source in (table, odd_table()):
        path = tmp_path / f"t.{fmt}"
        getattr(source, f"to_{fmt}")(path)
        assert_same(getattr(vglib.MonitorTable, f"from_{fmt}")(path), source)


def test_csv_and_json_read_back_with_pandas_and_the_standard_library(table, tmp_path):
    table.to_csv(tmp_path / "t.csv")
    table.to_json(tmp_path / "t.json")
    expected = table.to_dataframe()
    for df in (pd.read_csv(tmp_path / "t.csv"), pd.read_json(tmp_path / "t.json", precise_float=True)):
        assert list(df.columns) == list(expected.columns)
        assert df["step"].tolist() == expected["step"].tolist()
        assert df["layer"].astype(str).tolist() == [str(n) for n in table.layer]
        for c in COLUMNS:
            np.testing.assert_allclose(df[c].to_numpy(dtype=float), expected[c].to_numpy(), rtol=0)
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "layer", "kind", *COLUMNS]
    nan_at = rows[0].index("mean")  # a parameter row has no mean: an empty field
    assert rows[1][2] == "parameters" and rows[1][nan_at] == ""
    records = json.loads((tmp_path / "t.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert (
        records[0]["mean"] is None and records[0]["step"] == 0 and isinstance(records[0]["grad_norm"], float)
    )


def test_infinities_are_strict_json(tmp_path):
    odd_table().to_json(tmp_path / "t.json")
    text = (tmp_path / "t.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    records = json.loads(text)
    assert records[0]["grad_norm"] == math.inf and records[1]["grad_norm"] == -math.inf


def test_csv_and_json_need_no_pandas_and_to_dataframe_says_how_to_get_it(table, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    table.to_csv(tmp_path / "t.csv")
    table.to_json(tmp_path / "t.json")
    assert_same(
        vglib.MonitorTable.from_csv(tmp_path / "t.csv"), vglib.MonitorTable.from_json(tmp_path / "t.json")
    )
    with pytest.raises(ImportError, match=r'pip install "vglib\[pandas\]"'):
        table.to_dataframe()
    model = vglib.build_mlp(3, 8, "tanh", seed=0, in_features=4)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with pytest.raises(ImportError, match=r'pip install "vglib\[pandas\]"'):
        vglib.diagnose(model, x, y).to_dataframe()
    with pytest.raises(ImportError, match=r'pip install "vglib\[pandas\]"'):
        vglib.gradient_profile(model, x, y).to_dataframe()


def test_from_json_refuses_what_is_not_a_list_of_records(tmp_path):
    (tmp_path / "t.json").write_text('{"step": [0]}')
    with pytest.raises(ValueError, match="list of records"):
        vglib.MonitorTable.from_json(tmp_path / "t.json")
    (tmp_path / "t.json").write_text('[{"step": 0, "layer": "a"}]')
    with pytest.raises(ValueError, match="step, layer, kind"):
        vglib.MonitorTable.from_json(tmp_path / "t.json")


def hand_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, dict]:
    """dL/dW per parameter and dL/dh at each Linear's output, by plain autograd."""
    outputs = {}

    def keep(name):
        def hook(_, __, out):
            out.retain_grad()
            outputs[name] = out

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    model.zero_grad()
    F.mse_loss(model(x), y).backward()
    for h in handles:
        h.remove()
    params = {n: float(p.grad.double().norm()) for n, p in model.named_parameters()}
    return params, {n: out.grad.double() for n, out in outputs.items()}


def test_diagnosis_to_dataframe_holds_the_judged_layers_and_matches_autograd():
    model = vglib.build_mlp(4, 8, "tanh", seed=0, in_features=4)
    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), torch.randn(32, 1)
    report = vglib.diagnose(model, x, y)
    df = report.to_dataframe()
    flow = report.flow
    assert df["layer"].tolist() == list(report.layer_names)
    assert df["position"].tolist() == list(range(flow.depth))
    assert df["position"].dtype == np.int64 and df["flagged"].dtype == bool
    assert df["flagged"].tolist() == [n in report.flagged for n in report.layer_names]
    assert df.attrs["status"] == report.status and df.attrs["reason"] == report.reason
    params, outputs = hand_gradients(model, x, y)
    for name, row in df.set_index("layer").iterrows():
        assert row["weight_grad_norm"] == pytest.approx(params[f"{name}.weight"], rel=1e-6)
        assert row["bias_grad_norm"] == pytest.approx(params[f"{name}.bias"], rel=1e-6)
        g = outputs[name]
        assert row["output_grad_norm"] == pytest.approx(float(g.norm()), rel=1e-6)
        assert row["output_grad_rms"] == pytest.approx(float(g.norm()) / math.sqrt(g.numel()), rel=1e-6)
    np.testing.assert_array_equal(df["unit_spread"].to_numpy(), flow.unit_spread)


def test_gradient_profile_to_dataframe_has_one_row_per_layer_and_matches_autograd():
    model = vglib.build_mlp(5, 8, "sigmoid", seed=1, in_features=4)
    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), torch.randn(32, 1)
    profile = vglib.gradient_profile(model, x, y)
    df = profile.to_dataframe()
    assert df["layer"].tolist() == [*profile.layer_names, profile.head_name]
    assert df["role"].tolist() == ["hidden"] * profile.depth + ["head"]
    assert df["position"].tolist() == list(range(profile.depth + 1))
    params, _ = hand_gradients(model, x, y)
    expected = [params[f"{n}.weight"] for n in df["layer"]]
    np.testing.assert_allclose(df["weight_grad_norm"].to_numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(df["activation_grad_norm"].to_numpy()[:-1], profile.activation_grad_norms)
    assert math.isnan(df["activation_grad_norm"].iloc[-1]) and df.attrs["loss"] == profile.loss


def test_the_readme_export_example_runs_and_its_comments_hold(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Export and selection", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), scope)
    table = scope["table"]
    _, norms = table.global_grad_norm()
    assert np.all(norms <= 1 + 1e-6) and np.isclose(norms, 1.0, rtol=1e-5).any()  # clipped to max_norm=1
    assert table.layers("group") == ["decay", "group1"]
    assert_same(vglib.MonitorTable.from_csv(tmp_path / "gradients.csv"), table)


def test_the_documented_pandas_routes_for_json(tmp_path):
    """to_json's docstring: from_json(...).to_dataframe() reads any table exactly; pandas.read_json
    with precise_float=True rejects an infinity (1e999) and reads subnormals as 0 without it. If
    pandas ever reads them, the docstring's caveat is out of date: this test then fails."""
    table = odd_table()
    table.columns["std"] = np.array([5e-324, 1.0])  # a subnormal
    table.to_json(tmp_path / "t.json")
    frame = vglib.MonitorTable.from_json(tmp_path / "t.json").to_dataframe()
    np.testing.assert_array_equal(frame["grad_norm"].to_numpy(), [np.inf, -np.inf])
    assert frame["std"].tolist() == [5e-324, 1.0]
    with pytest.raises(ValueError):
        pd.read_json(tmp_path / "t.json", precise_float=True)
    assert pd.read_json(tmp_path / "t.json")["std"].tolist() == [0.0, 1.0]
