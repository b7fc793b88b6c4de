"""The project's own promises: pinned set-up, two-command quick start, executed notebooks, nbval live."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vglib

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def pins(path: Path) -> dict[str, str]:
    return pins_from_lines(path.read_text().splitlines(), path.name)


def pins_from_lines(lines: list[str], source: str = "") -> dict[str, str]:
    """``name -> version`` of requirement lines; every line must pin an exact version."""
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"{source}: '{line}' is not pinned to an exact version"
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_requirements_pin_exact_versions_that_the_lock_agrees_with():
    direct, lock = pins(ROOT / "requirements.txt"), pins(ROOT / "constraints.txt")
    assert direct["torch"] == "2.13.0"
    assert direct["jupyter-book"] == "1.0.4.post1"
    assert direct["ipywidgets"].startswith("8.")
    for name in ("numpy", "matplotlib", "pytest", "nbval"):
        assert name in direct
    for name, version in direct.items():
        assert lock.get(name) == version, f"constraints.txt pins {name}=={lock.get(name)}, not {version}"
    assert not [name for name in lock if name.startswith(("nvidia-", "triton"))], "CUDA packages pinned"


def test_readme_quick_start_is_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", quick_start, flags=re.S)
    lines = [line.strip() for block in commands for line in block.splitlines() if line.strip()]
    assert lines == ["make book", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_vglib_example_runs_as_a_script_and_its_comments_are_true(tmp_path):
    # as a reader saves and runs it (B17: the worker processes re-import the script)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## `vglib` in one minute", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    for name in ("ACTIVATIONS", "INITS"):  # the comment beside each shows its value
        assert f"vglib.{name}  " in code
    checks = """
    assert repr(vglib.ACTIVATIONS) in CODE and repr(vglib.INITS) in CODE
    assert report.status == "vanishing"
    assert prof.per_layer_factor() < 1
    assert "linear1" in monitor.table().layer
    assert table["ReLU, default init"].n_reached == 0 and table["ReLU, He"].n_reached == 3
    print("README example: all comments true")
"""
    script = tmp_path / "quickstart.py"
    script.write_text(f"CODE = {code!r}\n{code}" + checks)
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip  (run from the clone's root, as the example's grid path says)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("README example: all comments true")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_are_committed_executed_without_errors(path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in notebook["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert all(c["execution_count"] is not None for c in code), "execute the notebook before committing"
    outputs = [o for c in code for o in c["outputs"]]
    assert outputs, "no outputs: nbval would compare nothing"
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "a chapter must not print warnings"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), "cells were executed out of order"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_glued_numbers_are_python_numbers_that_the_page_can_format(path):
    """myst-nb formats {glue:text}`x:.2f` from the glued text/plain; a NumPy scalar's repr
    ("np.float64(...)") cannot be parsed and is a build warning. Glue float(x) instead."""
    notebook = json.loads(path.read_text())
    bad = [
        output["metadata"]["scrapbook"]["name"]
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if str(output.get("data", {}).get("application/papermill.record/text/plain", "")).startswith("np.")
    ]
    assert not bad, f"glue these as Python numbers: {bad}"


def test_nbval_really_compares_the_chapter_numbers(tmp_path):
    """Tamper with one printed number in a copy of the first chapter: nbval must fail on it."""
    source = ROOT / "chapters" / "causes" / "why_gradients_vanish.ipynb"
    notebook = json.loads(source.read_text())
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", []))
            if "ratio first / last" in text:
                output["text"] = re.sub(r"ratio first / last:\s+\S+", "ratio first / last: 1.0e+00", text)
                break
        else:
            continue
        break
    else:
        pytest.fail("the chapter no longer prints its first/last ratio")
    tampered = tmp_path / source.name
    tampered.write_text(json.dumps(notebook))
    shutil.copy(ROOT / "tests" / "nbval_sanitize.cfg", tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         "--nbval-sanitize-with", "nbval_sanitize.cfg", "-o", "addopts=", "-q", tampered.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:]
    assert "ratio first / last" in result.stdout and "1 failed" in result.stdout


def test_pytest_collects_chapters_but_not_build_copies(tmp_path):
    """The book build leaves executed copies under _build/; pytest must only collect chapters/."""
    cell = {"cell_type": "code", "source": "1", "metadata": {}, "outputs": [], "execution_count": None}
    notebook = json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 4})
    for relative in (
        "chapters/a.ipynb",
        "_build/jupyter_execute/chapters/a.ipynb",
        "_build/html/_sources/a.ipynb",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(notebook)
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "tests" / "nbval_sanitize.cfg", tmp_path / "tests")
    for extra in ([], ["."]):  # by testpaths, and by walking the whole tree
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "chapters/a.ipynb" in result.stdout
        assert "_build" not in result.stdout, result.stdout


def test_theme_macro_override_differs_from_the_theme_only_by_fontawesome_js():
    """_templates/static/webpack-macros.html is the theme's own file less its fontawesome.js line."""
    import pydata_sphinx_theme

    theme = Path(pydata_sphinx_theme.__file__).parent / "theme" / "pydata_sphinx_theme"
    original = (theme / "static" / "webpack-macros.html").read_text()
    ours = (ROOT / "_templates" / "static" / "webpack-macros.html").read_text()
    ours_without_note = re.sub(r"  <!-- Vanishing Gradients:.*?-->\n", "", ours, flags=re.S)
    original_without_fontawesome = re.sub(
        r"  <!-- So that users can add custom icons -->\n.*?fontawesome\.js.*?\n", "", original
    )
    assert "scripts/fontawesome.js" in original and "scripts/fontawesome.js" not in ours
    assert ours_without_note == original_without_fontawesome


def test_layout_override_is_the_themes_head_without_its_search_scripts():
    """_templates/layout.html keeps pydata-sphinx-theme's extrahead block less its three search scripts."""
    import pydata_sphinx_theme

    theme = Path(pydata_sphinx_theme.__file__).parent / "theme" / "pydata_sphinx_theme"
    block = re.compile(r"\{%- block extrahead %\}\n(.*?)\{%- endblock extrahead %\}", re.S)
    original = block.search((theme / "layout.html").read_text()).group(1)
    ours = block.search((ROOT / "_templates" / "layout.html").read_text()).group(1)
    search_scripts = re.compile(r"  \{% if pagename == 'search' %\}.*?\{% endif %\}\n", re.S)
    assert "searchindex.js" in original and "searchindex.js" not in ours
    assert ours == search_scripts.sub("", original)
    options = (theme / "theme.conf").read_text()
    assert re.search(r"^search_as_you_type = False$", options, flags=re.M)  # nothing else used them
    assert "search_as_you_type" not in (ROOT / "_config.yml").read_text()


# --- nbval compares what the page shows, and nothing is hidden from it (issue 10) -------------------

NBVAL_UNCOMPARED_MIME = {"image/png", "image/jpeg", "application/vnd.jupyter.widget-view+json"}
NBVAL_TAGS = {"nbval-ignore-output", "nbval-skip", "nbval-raises-exception"}
NBVAL_MARKERS = re.compile(r"#\s*NBVAL_(IGNORE_OUTPUT|SKIP|RAISES_EXCEPTION)", re.IGNORECASE)
GLUE_REF = re.compile(r"\{glue(?::text)?\}`([^`]+)`")


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def escapes_comparison(cell: dict) -> bool:
    tags = set(cell.get("metadata", {}).get("tags", []))
    return bool(tags & NBVAL_TAGS) or bool(NBVAL_MARKERS.search("".join(cell["source"])))


def compared_outputs(path: Path) -> int:
    """Outputs nbval compares, outside escaping cells: each cell's printed text (its streams, which
    nbval joins) counts once, and each rich output with a compared MIME type once."""
    count = 0
    for cell in code_cells(path):
        if escapes_comparison(cell):
            continue
        outputs = cell["outputs"]
        count += any(o["output_type"] == "stream" for o in outputs)
        count += sum(1 for o in outputs if set(o.get("data", {})) - NBVAL_UNCOMPARED_MIME)
    return count


def glued(path: Path) -> dict[str, str]:
    return {
        output["metadata"]["scrapbook"]["name"]: "".join(output["data"][key])
        for cell in code_cells(path)
        for output in cell["outputs"]
        for key in output.get("data", {})
        if key == "application/papermill.record/text/plain"
    }


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_glued_name_is_glued_once(path):
    """Two glues under one name (say a median's `name_low` and another quantity's `name` + `_low`)
    leave the page showing whichever came last."""
    names = [
        output["metadata"]["scrapbook"]["name"]
        for cell in code_cells(path)
        for output in cell["outputs"]
        if "application/papermill.record/text/plain" in output.get("data", {})
    ]
    assert not sorted({n for n in names if names.count(n) > 1})


def test_nbval_compares_no_fewer_outputs_than_before():
    baseline = json.loads((ROOT / "tests" / "nbval_baseline.json").read_text())["outputs"]
    assert sorted(baseline) == sorted(str(p.relative_to(ROOT)) for p in CHAPTERS)
    fewer = {
        name: (compared_outputs(ROOT / name), n)
        for name, n in baseline.items()
        if compared_outputs(ROOT / name) < n
    }
    assert not fewer, f"chapters whose compared outputs fell below the baseline (now, before): {fewer}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_only_explorer_widgets_escape_nbval(path):
    """A cell may escape comparison only if it draws an explorer widget (whose model ids are random)
    and prints or glues nothing: no number is ever hidden from nbval by a tag or a marker."""
    for cell in code_cells(path):
        if not escapes_comparison(cell):
            continue
        source = "".join(cell["source"])
        tags = set(cell.get("metadata", {}).get("tags", [])) & NBVAL_TAGS
        assert tags == {"nbval-ignore-output"} and not NBVAL_MARKERS.search(source), source[:200]
        assert not re.search(r"\b(print|glue|display)\(", source), (
            f"a cell that escapes nbval prints: {source[:200]}"
        )
        kinds = [set(o.get("data", {})) for o in cell["outputs"]]
        assert kinds and all("application/vnd.jupyter.widget-view+json" in k for k in kinds), source[:200]


def test_nbval_sanitizers_cannot_hide_a_number():
    """The sanitizers replace memory addresses and widget model ids; none may touch a number as the
    chapters print or glue it."""
    config = (ROOT / "tests" / "nbval_sanitize.cfg").read_text()
    patterns = re.findall(r"^regex:\s*(.+)$", config, flags=re.MULTILINE)
    assert patterns == [r"at 0x[0-9a-fA-F]+", r"[0-9a-f]{32}"]
    numbers = [
        "0.123",
        "1.5e-07",
        "-3.2e+14",
        "12345678",
        "4.482428934885698e-25",
        "0.9805129789339448",
        "inf",
    ]
    for pattern in patterns:
        for number in numbers:
            assert re.sub(pattern, "X", f"loss {number}, ratio {number}") == f"loss {number}, ratio {number}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_glued_numbers_carry_only_the_digits_the_page_shows(path):
    """Every {glue:text}`name:fmt` reference formats a stored value that fmt shows exactly (nothing
    beyond the shown digits is stored, so nbval compares only those); no glued float is stored at
    full precision; every glued float is referenced or has at most 4 significant digits."""
    values = glued(path)
    markdown = "\n".join(
        "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"
    )
    formats: dict[str, set[str]] = {}
    for ref in GLUE_REF.findall(markdown):
        name, _, fmt = ref.partition(":")
        formats.setdefault(name, set()).add(fmt)

    for name, text in values.items():
        try:
            value = float(text)
        except ValueError:
            continue  # a string
        if re.fullmatch(r"-?\d+", text) or not math.isfinite(value):
            continue  # an int, or inf/nan
        digits = len(re.sub(r"e.*$|[-.]", "", text).strip("0"))  # 210.0 has 2 significant digits
        shown = sorted(f for f in formats.get(name, set()) if f)
        if not shown:
            assert digits <= 4, f"{name} = {text}: glued without a format on the page, at {digits} digits"
        else:  # stored exactly as (the finest of) the places that show it
            assert any(vglib.rounded(value, f) == value for f in shown), (
                f"{name} = {text} carries more digits than {' or '.join(shown)} shows"
            )


@pytest.mark.parametrize("path", [p for p in CHAPTERS if "remedies" in p.parts], ids=lambda p: p.stem)
def test_every_harness_table_shows_the_baselines_beside_it(path):
    """Issue 12: beside every harness table the linear model and predicting 0 (or the most frequent
    class), and beside every table of tuned rows the shallow twin, tuned alike."""
    tables = [
        "".join(out["data"]["text/html"])
        for cell in json.loads(path.read_text())["cells"]
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if 'class="vg-harness"' in "".join(out.get("data", {}).get("text/html", ""))
    ]
    for html in tables:
        assert "linear model" in html and ("predicting 0" in html or "most frequent class" in html), path.name
        if "(backprop" in html:  # a RemedyTable of tuned rows
            assert "shallow twin" in html, path.name
