"""GradientMonitorCallback in a real ``lightning.Trainer.fit`` on the CPU (no mocks): what reaches the
logger is the monitor's table, no hook outlives the fit, and the vanishing warning comes once for a
deep sigmoid network and never for a healthy one."""

import copy
import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vglib

L = pytest.importorskip("lightning")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from vglib.lightning import (  # noqa: E402
    ALL_QUANTITIES,
    QUANTITIES,
    GradientMonitorCallback,
    GradientWarning,
    logged_metrics,
)

# Lightning's own advice (few dataloader workers, a small logging interval) is a PossibleUserWarning;
# its _pytree module warns about a deprecated torch call
pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings("ignore:.*treespec"),
]


class Regressor(L.LightningModule):
    def __init__(self, net: nn.Module, lr: float = 0.01, manual: bool = False):
        super().__init__()
        self.net, self.lr = net, lr
        self.automatic_optimization = not manual

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader(width=16, batch=16, batches=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(batch * batches, width, generator=g), torch.randn(batch * batches, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def fit(module, callback, steps, data=None, logger=None, **trainer_kwargs):
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=logger if logger is not None else False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback] if callback is not None else [], **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(module, data if data is not None else loader())
    return trainer


def small_net(seed=0):
    return vglib.build_mlp(3, 16, activation="tanh", init="xavier", seed=seed)


def csv_rows(trainer):
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


# the logged name of each (row kind, column), written out here as the callback's docstring states it
NAMES = {
    "parameters": {"grad_norm": "grad_norm", "weight_norm": "weight_norm", "update_ratio": "update_ratio"},
    "activation": {
        "grad_norm": "activation_grad_norm", "mean": "activation_mean", "std": "activation_std",
        "unit_std": "unit_std", "saturated": "saturated", "dead": "dead",
    },
    "global": {
        "grad_norm": "global_grad_norm", "weight_norm": "global_weight_norm",
        "update_ratio": "global_update_ratio",
    },
    "group": {
        "grad_norm": "group_grad_norm", "weight_norm": "group_weight_norm",
        "update_ratio": "group_update_ratio", "lr": "lr", "weight_decay": "weight_decay",
    },
}  # fmt: skip


def test_logged_metrics_are_the_monitors_table(tmp_path):
    """Every value in the CSV logger's file is the table's value at the same step and row, one key
    per quantity and layer (none per parameter tensor), at the sampled steps only, with
    trainer.global_step; the global norm is one key."""
    callback = GradientMonitorCallback(every=3, quantities=ALL_QUANTITIES, warn=False)
    trainer = fit(Regressor(small_net()), callback, steps=7, logger=CSVLogger(tmp_path, name="run"))
    assert trainer.global_step == 7
    table = callback.monitor.table(summaries=True)
    assert sorted(set(table.step.tolist())) == [0, 3, 6]
    assert set(table.kind) == {"parameters", "activation", "global", "group"}
    rows = [r for r in csv_rows(trainer) if any(k.startswith("vglib/") and v for k, v in r.items())]
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    logged = {
        (int(r["step"]), k): float(v) for r in rows for k, v in r.items() if k.startswith("vglib/") and v
    }
    expected = {}
    for index, (step, layer, kind) in enumerate(zip(table.step, table.layer, table.kind, strict=True)):
        for column, name in NAMES[kind].items():
            value = table[column][index]
            if not math.isnan(value):
                key = f"vglib/{name}" if kind == "global" else f"vglib/{name}/{layer}"
                expected[int(step), key] = float(value)
    assert logged == expected  # exactly: the CSV holds each float's repr
    assert not any(k.endswith((".weight", ".bias")) for _, k in logged)
    assert "vglib/global_grad_norm" in {k for _, k in logged}
    assert {k.split("/")[2] for _, k in logged if k.startswith("vglib/grad_norm/")} == set(
        table.layers("parameters")
    )


def test_default_quantities_and_logged_metrics_helper():
    callback = GradientMonitorCallback(every=2, warn=False)
    fit(Regressor(small_net()), callback, steps=2)
    table = callback.monitor.table(summaries=True)
    metrics = logged_metrics(table, QUANTITIES, prefix="p")
    quantities = {k.split("/")[1] for k in metrics}
    assert quantities <= set(QUANTITIES)
    assert {
        "grad_norm",
        "update_ratio",
        "activation_grad_norm",
        "saturated",
        "global_grad_norm",
    } <= quantities
    assert "weight_norm" not in quantities and "dead" not in quantities  # tanh: no dead test
    assert metrics["p/grad_norm/net.head"] == table.series("net.head", "grad_norm")[0]
    # the first step's head gradient, by hand: the same weights, the first batch, the same loss
    net, (x, y) = small_net(), next(iter(loader()))
    F.mse_loss(net(x), y).backward()
    by_hand = math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in net.head.parameters()))
    assert metrics["p/grad_norm/net.head"] == pytest.approx(by_hand, rel=1e-6)
    assert metrics["p/global_grad_norm"] == pytest.approx(
        math.sqrt(sum(v**2 for v in table["grad_norm"][table.kind == "parameters"])), rel=1e-12
    )


def test_no_hook_is_left_after_fit_and_training_is_unchanged():
    """After fit no module, parameter or optimizer hook remains; the monitored run trains exactly as
    an unmonitored one (the diagnoses restore the random generators, which dropout draws from, and
    leave .grad alone)."""

    def net():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.2), nn.Tanh(), nn.Linear(32, 1))

    plain, watched = Regressor(net()), Regressor(net())
    callback = GradientMonitorCallback(every=2, diagnose_every=1)
    torch.manual_seed(5)
    fit(plain, None, steps=5)
    torch.manual_seed(5)
    trainer = fit(watched, callback, steps=5)
    assert len(callback.diagnoses) >= 2 and len(callback.monitor.table()) > 0
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)
    for module in watched.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks and not module._backward_pre_hooks
    for p in watched.parameters():
        assert not getattr(p, "_post_accumulate_grad_hooks", None)
    optimizer = trainer.optimizers[0]
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_warns_once_for_a_deep_sigmoid_network():
    """diagnose at the first batch and every sampled step after it says vanishing each time; the
    warning comes once, with the reason."""
    net = vglib.build_mlp(30, 64, activation="sigmoid", init="xavier")
    callback = GradientMonitorCallback(every=2, diagnose_every=1, log=False)
    with pytest.warns(GradientWarning) as record:
        fit(Regressor(net, lr=0.1), callback, steps=6, data=loader(width=64))
    ours = [w for w in record if issubclass(w.category, GradientWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "VANISHING at step 0" in message and "by the fit" in message
    assert len(callback.diagnoses) >= 3
    assert {d.status for _, d in callback.diagnoses} == {"vanishing"}
    assert callback.diagnoses[0][0] == 0


def test_no_warning_for_a_healthy_network():
    net = vglib.build_mlp(8, 32, activation="relu", init="he")
    callback = GradientMonitorCallback(every=2, diagnose_every=1, log=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientWarning)
        fit(Regressor(net, lr=1e-3), callback, steps=4, data=loader(width=32))
    assert {d.status for _, d in callback.diagnoses} == {"healthy"}


def test_batches_it_cannot_split_need_diagnose_with():
    """A dict batch without x/y keys: a TypeError that names diagnose_with; with it, the diagnosis
    runs on the module's forward and its loss_fn attribute."""

    class DictModule(Regressor):
        loss_fn = staticmethod(F.mse_loss)

        def training_step(self, batch, batch_idx):
            return self.loss_fn(self(batch["features"]), batch["label"])

    x, y = loader().dataset.tensors
    data = DataLoader([{"features": a, "label": b} for a, b in zip(x, y, strict=True)], batch_size=16)
    with pytest.raises(TypeError, match="diagnose_with"):
        fit(DictModule(small_net()), GradientMonitorCallback(every=2), steps=1, data=data)
    callback = GradientMonitorCallback(every=2, diagnose_with=lambda b: (b["features"], b["label"]))
    fit(DictModule(small_net()), callback, steps=2, data=data)
    assert [d.status for _, d in callback.diagnoses] == ["healthy"]
    with torch.no_grad():
        first = float(F.mse_loss(small_net()(x[:16]), y[:16]))
    assert callback.diagnoses[0][1].flow.loss == pytest.approx(
        first, rel=1e-5
    )  # the first batch, scored by the module's loss_fn, at the initial weights


def hidden_means(net, batches):
    """The mean of the first Tanh's outputs over the examples of ``batches`` (no monitor involved)."""
    with torch.no_grad():
        return float(torch.cat([net[:2](x) for x, _ in batches]).double().mean())


def test_gradient_accumulation_and_manual_optimization():
    """accumulate_grad_batches=2: one recorded step per optimizer step, the step trainer.global_step
    counts, and each step's activation rows pool both micro-batches (Lightning runs the second
    inside the closure it hands step()). Manual optimization: steps recorded at opt.step(), with
    the activation rows of the pass before it."""
    data = loader(batches=6)
    batches = list(data)
    net = small_net()
    callback = GradientMonitorCallback(every=1, warn=False)
    steps = []  # the weights each step starts from, to compute its activations independently
    module = Regressor(net)
    module.on_before_optimizer_step = lambda optimizer: steps.append(copy.deepcopy(net))
    trainer = fit(module, callback, steps=3, data=data, accumulate_grad_batches=2)
    table = callback.monitor.table()
    assert trainer.global_step == 3 == callback.monitor.steps_taken
    assert sorted(set(table.step.tolist())) == [0, 1, 2]
    assert set(table.kind) == {"parameters", "activation"}
    first_act = (table.layer == "net.act1") & (table.kind == "activation")
    expected = [hidden_means(steps[k], batches[2 * k : 2 * k + 2]) for k in range(3)]
    assert table["mean"][first_act] == pytest.approx(expected, rel=1e-5)
    one_batch = [hidden_means(steps[k], batches[2 * k + 1 : 2 * k + 2]) for k in range(3)]
    assert table["mean"][first_act] != pytest.approx(one_batch, rel=1e-3)  # not the last micro-batch alone

    net = small_net()
    callback = GradientMonitorCallback(every=1, warn=False)
    module = Regressor(net, manual=True)
    starts = []
    module.on_train_batch_start = lambda batch, batch_idx: starts.append(copy.deepcopy(net))
    trainer = fit(module, callback, steps=3, data=data)
    table = callback.monitor.table()
    assert trainer.global_step == 3 == callback.monitor.steps_taken
    assert set(table.kind) == {"parameters", "activation"}
    assert np.all(table["grad_norm"][table.kind == "parameters"] > 0)
    first_act = (table.layer == "net.act1") & (table.kind == "activation")
    expected = [hidden_means(starts[k], batches[k : k + 1]) for k in range(3)]
    assert table["mean"][first_act] == pytest.approx(expected, rel=1e-5)


class ClipWatcher(Regressor):
    """Reads the global gradient norm where Lightning's hook runs, before Lightning clips."""

    def __init__(self, net):
        super().__init__(net)
        self.norms = []

    def on_before_optimizer_step(self, optimizer):
        self.norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in self.parameters()])))


def test_under_gradient_clipping_the_norm_before_clipping_is_logged_too(tmp_path):
    """global_grad_norm is the gradient the step used (clipped to gradient_clip_val); the norm
    before clipping, what clip_grad_norm_ returns, is its own key (it was missing: a flat line)."""
    module = ClipWatcher(small_net())
    callback = GradientMonitorCallback(every=2, warn=False)
    trainer = fit(module, callback, steps=6, logger=CSVLogger(tmp_path), gradient_clip_val=0.05)
    logged = {int(r["step"]): r for r in csv_rows(trainer) if r.get("vglib/global_grad_norm")}
    assert sorted(logged) == [0, 2, 4]
    for step, row in logged.items():
        before = float(row["vglib/global_grad_norm_before_clipping"])
        assert before == pytest.approx(module.norms[step], rel=1e-5)
        assert before > 0.05  # the clip acted, so the two keys differ
        assert float(row["vglib/global_grad_norm"]) == pytest.approx(0.05, rel=1e-4)

    module = ClipWatcher(small_net())  # without clipping there is nothing to tell apart: one key
    callback = GradientMonitorCallback(every=2, warn=False)
    trainer = fit(module, callback, steps=2, logger=CSVLogger(tmp_path / "plain"))
    assert not any("before_clipping" in key for row in csv_rows(trainer) for key in row)


def test_a_tensorboard_logger_gets_one_chart_per_quantity(tmp_path):
    """With Lightning's TensorBoardLogger the callback writes through vglib.tensorboard: the same
    keys and values (float32) as logged_metrics gives, at trainer.global_step, and a Custom Scalars
    layout with one chart per quantity (not one chart per key)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing import event_accumulator

    callback = GradientMonitorCallback(every=2, warn=False)
    logger = TensorBoardLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    trainer = fit(Regressor(small_net()), callback, steps=5, logger=logger, gradient_clip_val=1e-3)
    logger.experiment.flush()
    accumulator = event_accumulator.EventAccumulator(
        logger.log_dir, size_guidance={kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    )
    accumulator.Reload()
    written = {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
        if tag.startswith("vglib/")
    }
    table = callback.monitor.table(summaries=True)
    expected: dict[str, list] = {}
    for step in (0, 2, 4):
        rows = table.step == step
        step_table = vglib.MonitorTable(
            step=table.step[rows], layer=table.layer[rows], kind=table.kind[rows],
            columns={c: v[rows] for c, v in table.columns.items()},
        )  # fmt: skip
        for key, value in logged_metrics(step_table).items():
            expected.setdefault(key, []).append((step, float(np.float32(value))))
    assert trainer.global_step == 5
    before = written.pop("vglib/global_grad_norm_before_clipping")
    assert [s for s, _ in before] == [0, 2, 4] and all(v > 1e-3 for _, v in before)
    assert written == expected
    charts = accumulator.Tensors("custom_scalars__config__")
    assert len(charts) == 1
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(charts[0].tensor_proto).item())
    charted = [chart.title.split(":")[0] for category in layout.category for chart in category.chart]
    logged = {key.split("/")[1] for key in expected}  # a tanh network: every quantity but "dead"
    assert sorted(charted) == sorted(logged) == sorted(set(QUANTITIES) - {"dead"})
    assert len(charted) < len(expected)  # a chart per quantity, not per key


def test_bad_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="every"):
        GradientMonitorCallback(every=0)
    with pytest.raises(ValueError, match="valid choices are grad_norm"):
        GradientMonitorCallback(quantities=("grad_norm", "gradnorm"))
    with pytest.raises(TypeError, match="index into trainer.optimizers"):
        GradientMonitorCallback(optimizer="adam")
    with pytest.raises(ValueError, match="valid choices are 0 to 0"):
        fit(Regressor(small_net()), GradientMonitorCallback(optimizer=1), steps=1)


def test_vglib_imports_without_lightning():
    """vglib itself never imports Lightning; vglib.lightning says which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['lightning'] = None\n"
        "import vglib\n"
        "assert 'vglib.lightning' not in sys.modules\n"
        "try:\n"
        "    import vglib.lightning\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "vglib[lightning]"' in out
