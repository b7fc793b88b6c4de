"""The site tests' shared fixtures, one instance per test session: the built site served on
127.0.0.1 and one headless Chromium (Playwright's sync API allows one per process, so a module
that imported these fixtures would start a second one and fail)."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from pathlib import Path

import pytest

from tests.site.test_site import CHROMIUM, CHROMIUM_FLAGS, HTML, ROOT, QuietHandler, newest_source_mtime


@pytest.fixture(scope="session")
def site_url():
    index = HTML / "intro.html"
    if not index.exists() or index.stat().st_mtime < newest_source_mtime():
        subprocess.run(["make", "book"], cwd=ROOT, check=True)
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install it (Debian/Ubuntu: 'sudo apt-get install "
            "chromium'; 'make test' does this itself when CI=true) or point VG_CHROMIUM at a "
            "Chrome/Chromium binary. The site test never skips.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
