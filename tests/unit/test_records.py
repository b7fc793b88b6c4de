"""vglib.Records: chaotic results recorded once and read back, exactly as computed."""

import json

import numpy as np
import pytest
import torch

import vglib
from vglib.records import decode, encode, fingerprint


def test_values_round_trip_through_the_recording_with_their_types():
    value = {
        "loss": 0.25,
        "never": float("inf"),
        "curve": np.linspace(0, 1, 5),
        "counts": np.arange(3),
        "names": np.array(["a", "bb"]),
        1.5: (1, "x", None, True),
        ("lstm", 2): [np.float32(0.5), np.int64(4)],
    }
    back = decode(json.loads(json.dumps(encode(value))))
    assert back["loss"] == 0.25 and back["never"] == float("inf")
    np.testing.assert_array_equal(back["curve"], value["curve"])
    assert back["curve"].dtype == np.float64 and back["counts"].dtype == value["counts"].dtype
    assert back["names"].tolist() == ["a", "bb"]
    assert back[1.5] == (1, "x", None, True) and back["lstm", 2] == [0.5, 4]


def test_float_arrays_are_written_compactly_and_read_back_bit_for_bit():
    rng = np.random.default_rng(0)
    float32_values = (
        rng.standard_normal(500).astype(np.float32).astype(np.float64)
    )  # as norms computed in float32
    float32_values[[3, 7, 11]] = [np.nan, np.inf, -np.inf]
    float64_values = rng.standard_normal(500)
    for array in (
        float32_values,
        float64_values,
        float32_values.astype(np.float32).reshape(20, 25),
        np.array([]),
    ):
        stored = encode(array)
        back = decode(json.loads(json.dumps(stored)))
        assert back.dtype == array.dtype and back.shape == array.shape
        assert np.array_equal(back, array, equal_nan=True)
    compact, full = json.dumps(encode(float32_values)), json.dumps(encode(float64_values))
    assert encode(float32_values)["float32"] and not encode(float64_values)["float32"]
    assert len(compact) < 0.7 * len(full)  # shortest float32 decimals, and "nan" for NaN
    assert '"nan"' in compact and "__float__" not in compact
    names = np.array(["linear1", "act1", "linear1", "head"], dtype=object)  # a monitor table's layer column
    stored = encode(names)
    assert stored["__strings__"] == ["linear1", "act1", "head"] and stored["codes"] == [0, 1, 0, 2]
    back = decode(json.loads(json.dumps(stored)))
    assert back.dtype == object and back.tolist() == names.tolist()
    # recordings written before: every float its own item, non-finite values as {"__float__": ...}
    old = {"__ndarray__": [0.5, {"__float__": "nan"}], "dtype": "float64", "shape": [2]}
    np.testing.assert_array_equal(decode(old), [0.5, np.nan])


def test_a_harness_result_round_trips_with_its_history_and_monitor_table():
    result = vglib.run_harness(vglib.Remedy("small", depth=3), steps=40)
    back = decode(json.loads(json.dumps(encode(result))))
    assert isinstance(back, vglib.HarnessResult) and back.remedy == result.remedy
    assert back.gradient_ratio == result.gradient_ratio and back.final_loss == result.final_loss
    np.testing.assert_array_equal(back.history.eval_loss, result.history.eval_loss)
    table, recorded = result.history.monitor.table(), back.history.monitor.table()
    assert isinstance(back.history.monitor, vglib.RecordedMonitor)
    assert list(recorded.layer) == list(table.layer)
    np.testing.assert_array_equal(recorded["grad_norm"], table["grad_norm"])


def test_harness_runs_over_seeds_round_trip_with_every_run():
    runs = vglib.run_harnesses([vglib.Remedy("small", depth=3)], steps=40, seeds=(0, 1), processes=1)["small"]
    back = decode(json.loads(json.dumps(encode(runs))))
    assert isinstance(back, vglib.HarnessRuns) and back.seeds == (0, 1) and back.remedy == runs.remedy
    assert back.final_loss == runs.final_loss and back.steps == runs.steps
    np.testing.assert_array_equal(back.runs[1].history.loss, runs.runs[1].history.loss)


def test_things_that_cannot_be_recorded_are_refused_by_name():
    with pytest.raises(TypeError, match="cannot record a object"):
        encode(object())
    with pytest.raises(TypeError, match="cannot record a Sequential"):
        encode(vglib.build_mlp(2, 4))


def test_modes_use_live_and_write(tmp_path, monkeypatch):
    path = tmp_path / "chapter.json"
    calls = []

    def compute():
        calls.append(1)
        return {"loss": 0.5 + 0.1 * len(calls)}

    monkeypatch.setenv("VGLIB_RECORDS", "write")
    assert vglib.Records(path)("run", compute, config={"lr": 1e-3}) == {"loss": 0.6}
    monkeypatch.setenv("VGLIB_RECORDS", "use")
    records = vglib.Records(path)
    assert records("run", compute, config={"lr": 1e-3}) == {"loss": 0.6}  # read back, not recomputed
    assert len(calls) == 1 and records.sources["run"] == "recorded"
    assert records("other", compute) == {"loss": 0.7} and records.sources["other"] == "computed"
    assert "other" not in json.loads(path.read_text())["entries"]  # use mode writes nothing
    monkeypatch.setenv("VGLIB_RECORDS", "live")
    assert vglib.Records(path)("run", compute, config={"lr": 1e-3}) == {"loss": 0.8}
    entry = json.loads(path.read_text())["entries"]["run"]
    assert entry["config"] == fingerprint({"lr": 1e-3}) and entry["threads"] >= 1 and entry["cpu_capability"]


def test_a_recording_from_another_configuration_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "chapter.json"
    monkeypatch.setenv("VGLIB_RECORDS", "write")
    vglib.Records(path)("run", lambda: 1, config=[vglib.Remedy("a")])
    monkeypatch.delenv("VGLIB_RECORDS")
    with pytest.raises(ValueError, match="another configuration: re-record it"):
        vglib.Records(path)("run", lambda: 1, config=[vglib.Remedy("a", lr=1e-2)])


def test_each_seed_offset_has_its_own_recording(tmp_path, monkeypatch):
    path = tmp_path / "chapter.json"
    monkeypatch.setenv("VGLIB_RECORDS", "write")
    vglib.Records(path)("run", lambda: "offset 0")
    monkeypatch.setenv("VGLIB_RECORDS", "use")
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "2")
    records = vglib.Records(path)
    assert records("run", lambda: "computed at offset 2") == "computed at offset 2"
    monkeypatch.setenv("VGLIB_SEED_OFFSET", "0")
    assert records("run", lambda: "computed") == "offset 0"


def test_bad_modes_and_paths_name_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("VGLIB_RECORDS", "always")
    with pytest.raises(ValueError, match="use, live, write"):
        vglib.records_mode()
    with pytest.raises(ValueError, match=r"\.json"):
        vglib.Records(tmp_path / "chapter.txt")
    monkeypatch.delenv("VGLIB_RECORDS")
    with pytest.raises(TypeError, match="function of no arguments"):
        vglib.Records(tmp_path / "c.json")("run", 3)


def test_writing_makes_the_recording_anew_and_live_runs_can_be_kept_apart(tmp_path, monkeypatch):
    path = tmp_path / "chapter.json"
    monkeypatch.setenv("VGLIB_RECORDS", "write")
    records = vglib.Records(path)
    records("old name", lambda: 1)
    records("kept", lambda: 2)
    vglib.Records(path)("kept", lambda: 3)  # a new recording: "old name" is no longer there
    assert list(json.loads(path.read_text())["entries"]) == ["kept"]
    monkeypatch.setenv("VGLIB_RECORDS", "live")
    monkeypatch.setenv("VGLIB_RECORDS_OUT", str(tmp_path / "fresh"))
    assert vglib.Records(path)("kept", lambda: 4) == 4
    fresh = json.loads((tmp_path / "fresh" / "chapter.json").read_text())["entries"]
    assert fresh["kept"]["value"] == 4 and json.loads(path.read_text())["entries"]["kept"]["value"] == 3


def test_a_trained_model_is_recorded_and_restored_bit_for_bit():
    model = vglib.build_recurrent("lstm", 8, seed=0)
    state = decode(json.loads(json.dumps(encode(vglib.model_state(model)))))
    twin = vglib.load_model_state(vglib.build_recurrent("lstm", 8, seed=5), state)
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and bool((a == b).all()), name


def test_the_gradient_norm_field_is_written_only_where_it_was_recorded():
    # recordings made before TrainingHistory.grad_norm existed must equal a fresh run's encoding
    x = torch.linspace(-1, 1, 16).reshape(8, 2)
    y = torch.ones(8, 1)
    plain = vglib.train(vglib.build_mlp(1, 4, in_features=2), x, y, steps=3, lr=0.1)
    encoded = encode(plain)
    assert "grad_norm" not in encoded["fields"]  # as every recording made before the field
    assert decode(encoded).grad_norm is None
    with_norms = vglib.train(
        vglib.build_mlp(1, 4, in_features=2), x, y, steps=3, lr=0.1, record_grad_norm=True
    )
    back = decode(json.loads(json.dumps(encode(with_norms))))
    np.testing.assert_array_equal(back.grad_norm, with_norms.grad_norm)
    assert back.grad_norm.shape == (3,)


def test_resume_reads_what_a_stopped_write_recorded_and_computes_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return value

        return run

    monkeypatch.setenv("VGLIB_RECORDS", "write")
    vglib.Records("r.json")("first", compute(1.0), config="a")  # a write that stopped after one entry
    monkeypatch.setenv("VGLIB_RECORDS", "resume")
    records = vglib.Records("r.json")
    assert records("first", compute(2.0), config="a") == 1.0  # recorded: not computed again
    assert records("second", compute(3.0), config="b") == 3.0  # missing: computed and recorded
    assert records("first", compute(4.0), config="changed") == 4.0  # another config: computed anew
    assert calls == [1.0, 3.0, 4.0]
    monkeypatch.setenv("VGLIB_RECORDS", "use")
    again = vglib.Records("r.json")
    assert (
        again("second", compute(5.0), config="b") == 3.0
        and again("first", compute(6.0), config="changed") == 4.0
    )
