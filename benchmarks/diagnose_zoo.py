"""How far ``vglib.diagnose`` can be trusted: its verdict on every model of the labelled zoo
(``tests/zoo``), against the zoo's committed labels, as a confusion matrix.

The labels come from two sources computed with plain torch (a gradient measurement and where 20
SGD steps move the weights, against a matched healthy control); a model whose two sources
disagree is *ambiguous* (see ``tests/zoo/README.md``). The target: no wrong verdict of any kind
(healthy, vanishing and exploding never confused), and *undetermined* only on ambiguous models.

    python benchmarks/diagnose_zoo.py            # print the matrix and every disagreement
    python benchmarks/diagnose_zoo.py --write    # also write benchmarks/results/diagnose_zoo.json

The JSON file holds every case's label and verdict (with the verdict's reason), ``diagnose``'s fitted
change over depth and time (log10, 2 decimals; ``null`` where there is none or it is exactly 0) and
the two sources' labels per axis (measurement, training), and is what the detection chapter reads;
``tests/zoo/test_zoo_verdicts.py`` re-runs ``diagnose`` on every case and
checks it against both the labels and this file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vglib  # noqa: E402
from tests.zoo.models import CASES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "diagnose_zoo.json"


def labels() -> dict[str, dict]:
    return tomllib.loads((ROOT / "tests" / "zoo" / "labels.toml").read_text())["cases"]


def log10_or_none(change: float) -> float | None:
    """``log10`` of a fitted change, rounded; ``None`` where there is none (NaN) or it is 0."""
    return round(math.log10(change), 2) if math.isfinite(change) and change > 0 else None


def verdict(name: str) -> vglib.Diagnosis:
    case = CASES[name]()
    return vglib.diagnose(
        case.model, case.inputs, case.target, case.loss_fn, time_dim=case.time_dim, time_input=case.time_input
    )


def is_right(label: str, status: str) -> bool:
    """A verdict is right when it matches a decided label; on an ambiguous model any verdict is
    allowed, undetermined included (and only there)."""
    return label == "ambiguous" or status == label


def run() -> dict[str, dict]:
    torch.set_num_threads(1)
    out = {}
    for name, case in sorted(labels().items()):
        report = verdict(name)
        out[name] = {
            "label": case["label"],
            "verdict": report.status,
            "reason": report.reason,
            "log10_depth_change": log10_or_none(report.depth_change),
            "log10_time_change": log10_or_none(report.time_change),
            "sources": {a: [case[a]["measure_label"], case[a]["train_label"]] for a in case["axes"]},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    results = run()
    print(vglib.verdict_matrix(results))
    wrong = {n: r for n, r in results.items() if not is_right(r["label"], r["verdict"])}
    print(f"\n{len(results)} models, {len(wrong)} wrong verdicts")
    for name, r in wrong.items():
        print(f"  {name}: label {r['label']}, verdict {r['verdict']} ({r['reason']})")
    if args.write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"torch": torch.__version__, "cases": results}, indent=1) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
