"""Without Chromium the site test must fail and say how to get it, never pass or skip."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_site_test_fails_with_instructions_when_chromium_is_missing(tmp_path):
    env = {**os.environ, "VG_CHROMIUM": str(tmp_path / "no-such-chromium")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
         "tests/site/test_site.py::test_explorer_redraws_without_a_kernel"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:]
    assert "Chromium not found" in result.stdout and "apt-get install chromium" in result.stdout
    assert "skipped" not in result.stdout
