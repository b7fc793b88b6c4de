"""Recorded results: training runs computed once, on a pinned CPU kernel path, and read back.

Training a network can be chaotic. A difference in the last bit of one float (another CPU's vector
kernels; in float64 as in float32) can grow over a few hundred steps into a visibly different loss
(measured for the harness runs: a batch-normalised network that reaches the threshold in 240 steps
on one kernel path takes 340 on another), so a chapter that quotes such an outcome cannot
reproduce it digit for digit on every machine; some measurements on batch-normalised networks at
initialisation are ill-conditioned enough to move by a few per cent as well. The
book therefore records such results once and reads them back: a chapter wraps each training
experiment in a :class:`Records` call, ``make record`` executes the chapter with
``VGLIB_RECORDS=write`` on the pinned path
``ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`` (the same arithmetic on any
CPU of the recording's vendor with AVX2, AVX-512 included: MKL keeps its AVX2 branch
reproducible across Intel CPUs and picks its own branch on other vendors, so each entry keeps the
CPU vendor it was recorded on), and the recording is committed beside it. ``tests/test_recorded_runs.py``
re-runs a sample of it on that path and requires the same numbers. A recording makes the page
reproducible; it does not make a single run's outcome robust: a live run on another CPU, or
another seed, can differ as much as another draw does.

``VGLIB_RECORDS`` chooses what a call does:

- unset or ``use``: the recorded value, where there is one for this name and this
  ``VGLIB_SEED_OFFSET``; otherwise the value is computed (and not written), as where the recording
  is absent (Colab). A recorded value made from another ``config`` is refused with an error, but
  an edit that leaves the name and the ``config`` alone still reads the recording: run edited
  chapters with ``VGLIB_RECORDS=live``;
- ``live``: always compute, never read (how the robustness checks re-run the chapters); with
  ``VGLIB_RECORDS_OUT=DIR`` the computed values are also written to ``DIR/<file name>``, which is
  how the re-check test compares a fresh run with the recording;
- ``write``: compute and record (the recording of this seed offset is made anew);
- ``resume``: finish a ``write`` that stopped part-way (an assertion failed after some entries were
  recorded): an entry already recorded with the same ``config`` is read back, every other one is
  computed and recorded. Only for that: an entry whose computation changed while its name and
  ``config`` did not is read back stale.

A recorded value is exactly what the computation returns, through a JSON encoding that keeps
NumPy arrays, tuples, dicts with non-string keys and vglib's result types (``TrainingHistory``,
``MonitorTable``, ``HarnessResult``, ``HarnessRuns``, ``Remedy``, ``SeedSpread``); a live value goes
through the same encoding, so a chapter sees the same types either way. A training history's
monitor comes back as a :class:`~vglib.tables.RecordedMonitor` that holds its table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ._seed import SeedSpread, seed_offset
from ._tensors import to_numpy
from .compare import TunedRuns
from .grid import GridCell
from .harness import HarnessResult, HarnessRuns, Remedy
from .monitor import GradientMonitor
from .tables import MonitorTable, RecordedMonitor
from .train import TrainingHistory

__all__ = [
    "RECORDS_MODES",
    "RecordedMonitor",
    "Records",
    "cpu_model",
    "cpu_signature",
    "cpu_vendor",
    "load_model_state",
    "model_state",
    "pinned_path_available",
    "records_mode",
]

T = TypeVar("T")
RECORDS_MODES = ("use", "live", "write", "resume")
RECORDING_PATH = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
"""The environment ``make record`` records under and the re-check test re-runs under: PyTorch's
AVX2 kernels, MKL's AVX2 branch (its conditional numerical reproducibility, which holds across Intel
CPUs) and oneDNN capped at AVX2."""


def _cpuinfo(field: str) -> str | None:
    """One field of Linux's ``/proc/cpuinfo`` (its first CPU), or None where there is none."""
    import re

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    match = re.search(rf"^{field}\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_model() -> str:
    """The CPU's model name from Linux's ``/proc/cpuinfo`` (``platform.processor()`` elsewhere):
    two CPUs of one vendor and kernel level can still run different MKL code paths."""
    import platform

    return _cpuinfo("model name") or platform.processor()


def cpu_vendor() -> str:
    """The CPU vendor (``GenuineIntel``, ``AuthenticAMD``, ...; ``platform.machine()`` where Linux's
    ``/proc/cpuinfo`` does not say)."""
    import platform

    return _cpuinfo("vendor_id") or platform.machine()


def pinned_path_available(vendor: str) -> bool:
    """Whether this machine can reproduce a recording made on a ``vendor`` CPU on the pinned path: a
    CPU of that vendor on which PyTorch runs its AVX2 kernels under ``RECORDING_PATH`` (checked in
    a subprocess, since the kernel level is fixed when torch is imported)."""
    if cpu_vendor() != vendor:
        return False
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, **RECORDING_PATH}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return result.stdout.strip() == "AVX2"


def cpu_signature() -> dict[str, str]:
    """What decides the arithmetic of a one-thread CPU run beyond the code: the vendor, the model
    and PyTorch's kernel level (``torch.backends.cpu.get_cpu_capability()``)."""
    return {
        "vendor": cpu_vendor(),
        "model": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def records_mode() -> str:
    """``VGLIB_RECORDS`` (``use`` when unset)."""
    mode = os.environ.get("VGLIB_RECORDS", "").strip() or "use"
    if mode not in RECORDS_MODES:
        raise ValueError(f"VGLIB_RECORDS must be one of {', '.join(RECORDS_MODES)}, got {mode!r}")
    return mode


_DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        TrainingHistory,
        MonitorTable,
        HarnessResult,
        HarnessRuns,
        Remedy,
        SeedSpread,
        RecordedMonitor,
        GridCell,
        TunedRuns,
    )
}


def encode(value: Any) -> Any:
    """A JSON-able form of ``value`` that :func:`decode` turns back into an equal value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, torch.Tensor):
        value = to_numpy(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return _encode_floats(value)
        if value.dtype == object and value.size and all(isinstance(v, str) for v in value.ravel().tolist()):
            names = list(dict.fromkeys(value.ravel().tolist()))  # each distinct string once, then indices
            code = {name: i for i, name in enumerate(names)}
            return {
                "__strings__": names,
                "codes": [code[v] for v in value.ravel().tolist()],
                "shape": list(value.shape),
            }
        if value.dtype.kind in "biuU":
            items = value.ravel().tolist()
        else:
            items = [encode(v) for v in value.ravel().tolist()]
        dtype = str(value.dtype) if value.dtype.kind in "biufU" else "object"
        return {"__ndarray__": items, "dtype": dtype, "shape": list(value.shape)}
    if isinstance(value, GradientMonitor):
        return encode(RecordedMonitor(value.table()))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _DATACLASSES.get(name) is not type(value):
            raise TypeError(
                f"cannot record a {name}; recordable dataclasses: {', '.join(sorted(_DATACLASSES))}"
            )
        return {
            "__dataclass__": name,
            "fields": {
                f.name: encode(getattr(value, f.name))
                for f in dataclasses.fields(value)
                # a field added after recordings were made is written only where it is set, so
                # that a fresh run of an old configuration encodes exactly as its recording
                if not (f.metadata.get("recorded_if_set") and getattr(value, f.name) is None)
            },
        }
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(
        f"cannot record a {type(value).__name__}: record numbers, strings, arrays, lists, tuples, dicts "
        f"and vglib's result types ({', '.join(sorted(_DATACLASSES))})"
    )


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _encode_floats(value: np.ndarray) -> dict[str, Any]:
    """A float array, compactly: non-finite values as the strings "nan", "inf" and "-inf", and, when
    every value is a float32 (as norms and losses computed in float32 are), each written as the
    shortest decimal that gives that float32 back, which decoding restores exactly."""
    flat = value.ravel().astype(np.float64)
    finite = np.isfinite(flat)
    numbers = flat[finite]
    short = np.array([float(str(v)) for v in numbers.astype(np.float32)], dtype=np.float64)
    float32 = bool(np.array_equal(short.astype(np.float32).astype(np.float64), numbers))
    written = iter((short if float32 else numbers).tolist())
    items = [
        next(written) if ok else repr(float(v)) for ok, v in zip(finite.tolist(), flat.tolist(), strict=True)
    ]
    return {"__floats__": items, "float32": float32, "dtype": str(value.dtype), "shape": list(value.shape)}


def _decode_floats(value: dict[str, Any]) -> np.ndarray:
    items = value["__floats__"]
    flat = np.array([_NON_FINITE[v] if isinstance(v, str) else v for v in items], dtype=np.float64)
    if value["float32"]:
        flat = flat.astype(np.float32).astype(np.float64)
    return flat.astype(value["dtype"]).reshape(value["shape"])


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__floats__" in value:
        return _decode_floats(value)
    if "__strings__" in value:
        strings = np.empty(len(value["codes"]), dtype=object)
        strings[:] = [value["__strings__"][i] for i in value["codes"]]
        return strings.reshape(value["shape"])
    if "__ndarray__" in value:  # as recorded before float arrays were written compactly
        items = [decode(v) for v in value["__ndarray__"]]
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.astype(value["dtype"]).reshape(value["shape"])
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_hashable(decode(k)): decode(v) for k, v in value["__dict__"]}
    if "__dataclass__" in value:
        cls = _DATACLASSES[value["__dataclass__"]]
        return cls(**{name: decode(v) for name, v in value["fields"].items()})
    raise ValueError(f"not a recorded value: {value!r}")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


def fingerprint(config: Any) -> str:
    """A short hash of a configuration (anything :func:`encode` takes)."""
    text = json.dumps(encode(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Records:
    """A chapter's recorded results, one JSON file (``path``, relative to the working directory,
    which is the chapter's folder when it is executed).

    ``records(name, compute, config=...)`` returns the recorded value of ``name`` or computes it
    (see the module docstring for ``VGLIB_RECORDS``). ``config`` describes what ``compute``
    depends on (e.g. the list of ``Remedy`` it trains): a recorded value made from another
    configuration is refused with an error that says how to re-record it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.suffix != ".json":
            raise ValueError(f"a records file is a .json file, got {str(self.path)!r}")
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self.entries = json.loads(self.path.read_text())["entries"]
        if records_mode() == "write":  # made anew: names a chapter no longer uses do not linger
            self.entries = {k: v for k, v in self.entries.items() if self._offset_of(k) != seed_offset()}
        out = os.environ.get("VGLIB_RECORDS_OUT", "").strip()
        self._out = Path(out) / self.path.name if out and records_mode() == "live" else None
        self.sources: dict[str, str] = {}
        """For each name asked for in this session: ``"recorded"`` or ``"computed"``."""

    @staticmethod
    def _offset_of(key: str) -> int:
        marker = " [VGLIB_SEED_OFFSET="
        return int(key.rsplit(marker, 1)[1].rstrip("]")) if marker in key else 0

    @staticmethod
    def key(name: str) -> str:
        offset = seed_offset()
        return name if offset == 0 else f"{name} [VGLIB_SEED_OFFSET={offset}]"

    def __call__(self, name: str, compute: Callable[[], T], *, config: Any = None) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if not callable(compute):
            raise TypeError(f"compute must be a function of no arguments, got {type(compute).__name__}")
        mode, key, made_from = records_mode(), self.key(name), fingerprint(config)
        entry = self.entries.get(key)
        if mode == "resume" and entry is not None and entry["config"] == made_from:
            self.sources[name] = "recorded"
            return decode(entry["value"])
        if mode == "use" and entry is not None:
            if entry["config"] != made_from:
                raise ValueError(
                    f"the recording of {name!r} in {self.path} was made from another configuration: "
                    "re-record it (make record) or run with VGLIB_RECORDS=live"
                )
            self.sources[name] = "recorded"
            return decode(entry["value"])
        stored = encode(compute())
        self.sources[name] = "computed"
        if mode in ("write", "resume") or self._out is not None:
            made = {
                "config": made_from,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "cpu_vendor": cpu_vendor(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "value": stored,
            }
            if mode in ("write", "resume"):
                self.entries[key] = made
                self._save(self.path, self.entries)
            else:
                fresh = json.loads(self._out.read_text())["entries"] if self._out.exists() else {}
                self._save(self._out, {**fresh, key: made})
        return decode(stored)

    @staticmethod
    def _save(path: Path, entries: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        about = (
            "Recorded by `make record` (VGLIB_RECORDS=write, ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=AVX2): "
            "the chapter's training runs, read back when it is executed; see vglib/records.py."
        )
        text = json.dumps({"about": about, "entries": dict(sorted(entries.items()))}, indent=None)
        path.write_text(text + "\n")


def model_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as NumPy arrays (copies), to record a trained network."""
    return {name: to_numpy(tensor).copy() for name, tensor in model.state_dict().items()}


def load_model_state(model: torch.nn.Module, state: dict[str, np.ndarray]) -> torch.nn.Module:
    """Load a recorded :func:`model_state` into ``model`` (same architecture); returns the model."""
    model.load_state_dict({name: torch.as_tensor(np.asarray(value)) for name, value in state.items()})
    return model
