"""The project's own promises: pinned set-up, two-command quick start, executed notebooks, nbval live."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_readme_vglib_example_runs_and_its_comments_are_true():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## `vglib` in one minute", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    vglib = namespace["vglib"]
    for name in ("ACTIVATIONS", "INITS"):  # the comment beside each shows its value
        assert f"vglib.{name}  " in code and repr(getattr(vglib, name)) in code
    assert namespace["report"].status == "vanishing"
    assert namespace["prof"].per_layer_factor() < 1
    assert "linear1" in namespace["monitor"].table().layer
    results = namespace["results"]
    assert not results["ReLU, default init"].trains and results["ReLU, He"].trains


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


def test_binder_installs_the_same_versions_with_cpu_only_torch():
    lines = [line for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    binder = pins_from_lines([line for line in lines if not line.startswith("--")], "binder/requirements.txt")
    direct = pins(ROOT / "requirements.txt")
    assert binder.pop("torch") == direct.pop("torch") + "+cpu"
    assert binder == direct
    assert "pip install --no-deps" in (ROOT / "binder" / "postBuild").read_text()


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
