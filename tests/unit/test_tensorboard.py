"""vglib.tensorboard, for real: a short training run with GradientMonitor writes through
torch's SummaryWriter, and TensorBoard's own event reader reads the files back."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import vglib
import vglib.tensorboard as vtb
from vglib.tables import MonitorTable

# What each default quantity is, written out here independently of vglib.tensorboard.QUANTITIES:
# tag name -> (row kind, table column); the global one has no layer part in its tag.
EXPECTED = {
    "grad_norm": ("parameters", "grad_norm"),
    "update_ratio": ("parameters", "update_ratio"),
    "activation_grad_norm": ("activation", "grad_norm"),
    "saturated": ("activation", "saturated"),
    "dead": ("activation", "dead"),
    "unit_std": ("activation", "unit_std"),
    "global_grad_norm": ("global", "grad_norm"),
}


def mixed_model() -> nn.Module:
    """ReLU (dead fractions) and tanh (saturated fractions) layers, and a ReLU called twice."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(8, 32)
            self.relu = nn.ReLU()
            self.mid = nn.Linear(32, 32)
            self.tanh = nn.Tanh()
            self.mid2 = nn.Linear(32, 32)
            self.out = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.inp(x))
            h = self.tanh(3 * self.mid(h))  # scaled up: some units saturate
            return self.out(self.relu(self.mid2(h)))

    return Net()


def train(writer, *, steps=10, every=3, histograms=False, model=None, **logger_options):
    """A real short run (Adam) with the logger as the monitor's step callback."""
    model = model if model is not None else mixed_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=generator), torch.randn(64, 1, generator=generator)
    logger = vtb.TensorBoardLogger(writer, histograms=histograms, **logger_options)
    with vglib.GradientMonitor(
        model, optimizer, every=every, histograms=histograms, callbacks=(logger,)
    ) as monitor:
        for _ in range(steps):
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()
    writer.close()
    return monitor


def read(logdir):
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    )
    accumulator.Reload()
    return accumulator


def scalars(accumulator):
    """{tag: [(step, value), ...]} of every scalar in the run."""
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def layout(accumulator):
    """The run's last Custom Scalars layout: the one TensorBoard shows."""
    events = accumulator.Tensors("custom_scalars__config__")
    return layout_pb2.Layout.FromString(tensor_util.make_ndarray(events[-1].tensor_proto).item())


def expected_scalars(table, prefix="vglib"):
    """{tag: [(step, float32 value), ...]} that the table should give, NaN (not applicable) left out."""
    out = {}
    for name, (kind, column) in EXPECTED.items():
        rows = table.kind == kind
        for step, layer, value in zip(table.step[rows], table.layer[rows], table[column][rows], strict=True):
            if np.isnan(value):
                continue
            tag = f"{prefix}/{name}" if kind == "global" else f"{prefix}/{name}/{layer}"
            out.setdefault(tag, []).append((int(step), float(np.float32(value))))
    return out


def test_every_scalar_read_back_is_the_table_value_in_float32(tmp_path):
    monitor = train(SummaryWriter(tmp_path), steps=10, every=3)
    table = monitor.table(summaries=True)
    assert sorted(set(table.step)) == [0, 3, 6, 9]
    expected = expected_scalars(table)
    # the run has every default quantity: dead (ReLU), saturated (tanh), the global norm
    assert {tag.split("/")[1] for tag in expected} == set(EXPECTED)
    assert {"vglib/activation_grad_norm/relu#2", "vglib/dead/relu#2"} <= set(expected)
    written = scalars(read(tmp_path))
    assert set(written) == set(expected)
    for tag, points in expected.items():
        assert written[tag] == points, tag  # the same steps, the float32 of the table's value
    assert sum(len(points) for points in written.values()) == 4 * 18  # 4 steps x 18 series


def test_the_layout_has_one_chart_per_quantity_with_a_line_per_layer(tmp_path):
    monitor = train(SummaryWriter(tmp_path), steps=4, every=2)
    table, accumulator = monitor.table(summaries=True), read(tmp_path)
    assert len(accumulator.Tensors("custom_scalars__config__")) == 1
    (category,) = layout(accumulator).category
    assert category.title == "vglib"
    charts = {chart.title.split(":")[0]: chart for chart in category.chart}
    assert list(charts) == list(EXPECTED)  # one chart each, in DEFAULT_QUANTITIES' order
    tags = accumulator.Tags()["scalars"]
    for name, chart in charts.items():
        assert chart.WhichOneof("content") == "multiline"
        (regex,) = chart.multiline.tag
        lines = [tag for tag in tags if re.match(regex, tag)]  # how Custom Scalars selects its lines
        kind, column = EXPECTED[name]
        if kind == "global":
            assert lines == ["vglib/global_grad_norm"]
            continue
        rows = (table.kind == kind) & ~np.isnan(table[column])
        assert sorted(lines) == sorted(f"vglib/{name}/{layer}" for layer in set(table.layer[rows]))
    # every scalar tag is a line of exactly one chart
    for tag in tags:
        assert sum(bool(re.match(c.multiline.tag[0], tag)) for c in charts.values()) == 1, tag


def test_a_relu_network_gets_no_saturated_chart(tmp_path):
    model = vglib.build_mlp(3, 16, "relu", "he", seed=0)
    model[0] = nn.Linear(8, 16)
    train(SummaryWriter(tmp_path), steps=2, every=1, model=model)
    accumulator = read(tmp_path)
    titles = [chart.title.split(":")[0] for chart in layout(accumulator).category[0].chart]
    assert "saturated" not in titles and "dead" in titles
    assert not any("/saturated/" in tag for tag in accumulator.Tags()["scalars"])


def test_histograms_are_the_monitors_bins_not_rebinned(tmp_path):
    monitor = train(SummaryWriter(tmp_path), steps=7, every=2, histograms=True)
    accumulator = read(tmp_path)
    layers = monitor.table(summaries=True).layers("activation")
    assert layers == ["relu", "tanh", "relu#2"]
    tags = set(accumulator.Tags()["histograms"])
    assert len(tags) == 2 * len(layers)
    for layer in layers:
        for of, name in (("activation", "activation"), ("gradient", "log10_activation_grad")):
            steps, edges, counts = monitor.histogram(layer, of=of)
            events = accumulator.Histograms(f"vglib/histogram/{name}/{layer}")
            assert [e.step for e in events] == list(steps) == [0, 2, 4, 6]
            for event, row in zip(events, counts, strict=True):
                h = event.histogram_value
                np.testing.assert_array_equal(h.bucket, row)
                np.testing.assert_array_equal(h.bucket_limit, edges[1:])
                filled = np.flatnonzero(row)
                assert (h.min, h.max) == (edges[filled[0]], edges[filled[-1] + 1])
                assert h.num == row.sum() > 0


def test_write_table_after_the_run_writes_what_the_logger_wrote(tmp_path):
    monitor = train(SummaryWriter(tmp_path / "live"), steps=7, every=2, histograms=True)
    writer = SummaryWriter(tmp_path / "after")
    count = vtb.write_table(monitor, writer, histograms=True)
    writer.close()
    live, after = read(tmp_path / "live"), read(tmp_path / "after")
    assert scalars(after) == scalars(live)
    assert count == sum(len(points) for points in scalars(after).values())
    assert layout(after) == layout(live)
    assert after.Tags()["histograms"] == live.Tags()["histograms"]
    for tag in live.Tags()["histograms"]:
        assert [(e.step, e.histogram_value) for e in after.Histograms(tag)] == [
            (e.step, e.histogram_value) for e in live.Histograms(tag)
        ]
    # a RecordedMonitor's table gives the same scalars (it holds no histograms, and, as recorded
    # today, no global rows)
    writer = SummaryWriter(tmp_path / "recorded")
    vtb.write_table(monitor.recorded(), writer)
    writer.close()
    recorded = scalars(read(tmp_path / "recorded"))
    recorded.setdefault("vglib/global_grad_norm", scalars(live)["vglib/global_grad_norm"])
    assert recorded == scalars(live)


def test_one_call_per_value_writes_the_same_events(tmp_path):
    """The path for writers other than torch's (add_scalar, add_histogram_raw per value) and the
    batched one (one event per step) give the same scalars and histograms."""
    monitor = train(SummaryWriter(tmp_path / "live"), steps=4, every=2, histograms=True)
    table = monitor.table(summaries=True)
    emitter = vtb._Emitter("vglib", vtb.DEFAULT_QUANTITIES)
    values = emitter.scalars(table)
    steps, edges, counts = monitor.histogram("tanh")
    histograms = [(int(s), vtb._Histogram("h/tanh", edges, c)) for s, c in zip(steps, counts, strict=True)]
    runs = {}
    for batched in (True, False):
        writer = SummaryWriter(tmp_path / str(batched))
        vtb._emit(writer, values, histograms, batched=batched)
        writer.close()
        runs[batched] = read(tmp_path / str(batched))
    assert scalars(runs[True]) == scalars(runs[False]) == scalars(read(tmp_path / "live"))
    assert [e.histogram_value for e in runs[True].Histograms("h/tanh")] == [
        e.histogram_value for e in runs[False].Histograms("h/tanh")
    ]


def test_a_nan_after_a_finite_value_is_written_a_nan_before_is_not(tmp_path):
    table = MonitorTable(
        step=np.array([0, 0, 1, 1]),
        layer=np.array(["fc", "act", "fc", "act"], dtype=object),
        kind=np.array(["parameters", "activation", "parameters", "activation"], dtype=object),
        columns={
            "grad_norm": np.array([2.0, 0.5, np.nan, 0.25]),  # the run blew up at step 1
            "update_ratio": np.array([1e-3, np.nan, 2e-3, np.nan]),
            "saturated": np.array([np.nan, np.nan, np.nan, np.nan]),  # a ReLU: does not apply
            "dead": np.array([np.nan, 0.1, np.nan, 0.2]),
            "unit_std": np.array([np.nan, 0.3, np.nan, 0.4]),
        },
    )
    writer = SummaryWriter(tmp_path)
    assert vtb.write_table(table, writer) == 10  # 5 series x 2 steps, saturated left out
    writer.close()
    written = scalars(read(tmp_path))
    assert written["vglib/grad_norm/fc"][0] == (0, 2.0)
    assert written["vglib/grad_norm/fc"][1][0] == 1 and np.isnan(written["vglib/grad_norm/fc"][1][1])
    assert written["vglib/dead/act"] == [(0, np.float32(0.1)), (1, np.float32(0.2))]
    assert not any("saturated" in tag or "global" in tag for tag in written)  # no global rows here


def test_parameter_groups_and_a_prefix(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "name": "body", "lr": 0.1},
            {"params": model[2].parameters(), "name": "head", "lr": 0.01},
        ]
    )
    writer = SummaryWriter(tmp_path)
    logger = vtb.TensorBoardLogger(writer, prefix="health", quantities=("lr", "group_grad_norm"))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with vglib.GradientMonitor(model, optimizer, callbacks=(logger,)) as monitor:
        for _ in range(3):
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()
    writer.close()
    table = monitor.table(summaries=True)
    written = scalars(read(tmp_path))
    assert set(written) == {f"health/{q}/{g}" for q in ("lr", "group_grad_norm") for g in ("body", "head")}
    assert [v for _, v in written["health/lr/head"]] == [np.float32(0.01)] * 3
    rows = (table.kind == "group") & (table.layer == "body")
    assert [v for _, v in written["health/group_grad_norm/body"]] == list(
        table["grad_norm"][rows].astype(np.float32)
    )


def test_layouts_on_one_writer_are_merged(tmp_path):
    """TensorBoard shows a run's last layout: a second model logged to the same writer under
    another prefix adds its category; the same layout again writes nothing."""
    writer = SummaryWriter(tmp_path / "both")
    monitor = train(SummaryWriter(tmp_path / "a"), steps=2, every=1)
    vtb.write_table(monitor, writer)
    vtb.write_table(monitor, writer)  # the same layout again: nothing new
    vtb.write_table(monitor, writer, quantities=("grad_norm",))  # charted already
    vtb.write_table(monitor, writer, prefix="disc", quantities=("grad_norm", "global_grad_norm"))
    vtb.write_table(monitor, writer, prefix="other", layout=False)
    writer.close()
    accumulator = read(tmp_path / "both")
    assert len(accumulator.Tensors("custom_scalars__config__")) == 2
    last = layout(accumulator)  # the one TensorBoard shows
    assert [c.title for c in last.category] == ["vglib", "disc"]
    assert [c.title.split(":")[0] for c in last.category[1].chart] == ["grad_norm", "global_grad_norm"]
    assert len(last.category[0].chart) == len(EXPECTED)
    assert any(tag.startswith("other/") for tag in accumulator.Tags()["scalars"])


def test_bad_arguments_name_the_valid_choices(tmp_path):
    writer = SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="'grad_norm'.*Did you mean 'dead'"):
        vtb.TensorBoardLogger(writer, quantities=("deadd",))
    with pytest.raises(TypeError, match="sequence of names"):
        vtb.TensorBoardLogger(writer, quantities="grad_norm")
    with pytest.raises(ValueError, match="prefix"):
        vtb.TensorBoardLogger(writer, prefix="/")
    with pytest.raises(TypeError, match="SummaryWriter.*add_histogram_raw"):
        vtb.TensorBoardLogger(object())
    with pytest.raises(TypeError, match="MonitorTable, a GradientMonitor or a RecordedMonitor"):
        vtb.write_table([1, 2], writer)
    monitor = train(SummaryWriter(tmp_path / "run"), steps=1, every=1)
    with pytest.raises(RuntimeError, match="histograms=True"):
        vtb.write_table(monitor.table(summaries=True), writer, histograms=True)
    with pytest.raises(RuntimeError, match=r"GradientMonitor\(\.\.\., histograms=True\)"):
        vtb.TensorBoardLogger(writer, histograms=True)(monitor, monitor.table(summaries=True))
    writer.close()


def test_vglib_imports_without_tensorboard_and_says_what_to_install():
    code = """
import sys
sys.modules["tensorboard"] = None  # as if it were not installed
import vglib, vglib.tensorboard
loaded = [m for m, v in sys.modules.items() if v is not None and "tensorboard" in m]
assert loaded == ["vglib.tensorboard"], loaded
try:
    vglib.tensorboard.TensorBoardLogger(object())
except ImportError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "vglib[tensorboard]"' in result.stdout


def test_the_readme_snippet_runs_and_writes_a_run(tmp_path):
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = re.split(r"\n##+ ", readme.split("\n### TensorBoard\n", 1)[1], maxsplit=1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    accumulator = read(tmp_path / "runs" / "tanh-mlp")
    assert "vglib/global_grad_norm" in accumulator.Tags()["scalars"]
    assert "vglib/histogram/activation/act1" in accumulator.Tags()["histograms"]
    assert [e.step for e in accumulator.Scalars("vglib/saturated/act20")] == list(range(0, 100, 10))
