"""The built site as a reader sees it: headless Chromium, served on 127.0.0.1, nothing else reachable.

Needs Chromium (Debian's ``chromium``; set VG_CHROMIUM to use another). ``make test`` builds the
site first; run alone, this test rebuilds it when a source is newer than the build.
"""

from __future__ import annotations

import http.server
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "test-artifacts"
PAGE_BUDGET_BYTES = 3_000_000  # a page with everything it loads, as decoded by the browser
CHROMIUM = os.environ.get("VG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

# Console messages that are not the book's errors, each with the reason it is tolerated.
CONSOLE_ALLOWLIST = {
    # pydata-sphinx-theme logs this on a first visit, when no light/dark choice is stored yet,
    # and then uses "auto" (follow the system): the intended behaviour.
    "Got invalid theme mode": "pydata-sphinx-theme first visit",
}
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def content_pages() -> list[str]:
    """Every page of the table of contents (not search, index or the root redirect)."""
    skip = {"search.html", "genindex.html", "index.html"}
    return sorted(
        str(p.relative_to(HTML))
        for p in HTML.rglob("*.html")
        if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts
    )


def newest_source_mtime() -> float:
    sources = [ROOT / "_config.yml", ROOT / "_toc.yml", ROOT / "references.bib"]
    for folder in ("chapters", "vglib", "api", "_ext", "_templates"):
        sources += [p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    sources += list(ROOT.glob("*.md"))
    return max(p.stat().st_mtime for p in sources)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class Visit:
    """One page load with every request, console message and byte recorded."""

    def __init__(self, browser, url: str):
        self.external: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self._error(f"page error: {error}"))
        self.page.goto(url, wait_until="networkidle")

    def page_bytes(self) -> int:
        """Bytes of the page and everything it loaded, as the browser decoded them."""
        return int(
            self.page.evaluate(
                "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                ".reduce((total, entry) => total + (entry.decodedBodySize || 0), 0)"
            )
        )

    def _route(self, route) -> None:
        parsed = urlparse(route.request.url)
        if parsed.scheme in ("data", "blob") or parsed.hostname == "127.0.0.1":
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def _console(self, message) -> None:
        if message.type == "error":
            self._error(message.text)

    def _error(self, text: str) -> None:
        if not any(allowed in text for allowed in CONSOLE_ALLOWLIST):
            self.errors.append(text)

    def close(self) -> None:
        self.context.close()


PAGES = content_pages() if HTML.exists() else ["intro.html", "chapters/causes/why_gradients_vanish.html"]


@pytest.mark.parametrize("path", PAGES)
def test_page_is_self_contained_and_renders(site_url, browser, path):
    visit = Visit(browser, site_url + path)
    try:
        page = visit.page
        assert visit.external == [], "requests to other hosts (blocked)"
        assert visit.errors == [], "console errors"
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        assert broken == []
        math = page.locator("span.math, div.math").count()
        if math:
            # attached, not visible: a heading with math is also copied into the print-only table
            # of contents, which is hidden on screen and may come first
            page.wait_for_selector("mjx-container", state="attached", timeout=15_000)
            assert page.locator("mjx-container").count() >= math, "math left unrendered"
        explorers = page.locator(".vg-curve-explorer")
        if (HTML / "_sources" / path).with_suffix(".ipynb").exists():
            assert explorers.count() >= 1, "every chapter notebook has an explorer"
        for index in range(explorers.count()):
            explorer = explorers.nth(index)
            before = explorer.locator("polyline.vg-series-0").get_attribute("points")
            # every control moved to another value must redraw, with no script error
            for control in explorer.locator("[data-control]").all():
                control.evaluate(
                    "el => { if (el.type === 'range') el.value = (+el.value === 0 ? el.max : 0);"
                    " else el.selectedIndex = (el.selectedIndex + 1) % el.options.length;"
                    " el.dispatchEvent(new Event('input', {bubbles: true})); }"
                )
            assert explorer.locator("polyline.vg-series-0").get_attribute("points") != before
        assert visit.errors == [], "console errors after using the explorers"
        size = visit.page_bytes()
        ARTIFACTS.mkdir(exist_ok=True)
        with (ARTIFACTS / "page-sizes.txt").open("a") as sizes:
            sizes.write(f"{path}\t{size}\n")
        assert size < PAGE_BUDGET_BYTES, f"{path} loads {size / 1e6:.2f} MB"
    finally:
        visit.close()


def test_explorer_redraws_without_a_kernel(site_url, browser):
    visit = Visit(browser, site_url + "chapters/causes/why_gradients_vanish.html")
    try:
        page = visit.page
        explorer = page.locator(".vg-curve-explorer").first
        explorer.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        explorer.screenshot(path=str(ARTIFACTS / "explorer-before.png"))

        def state():
            curve = explorer.locator("polyline.vg-series-0")
            return explorer.get_attribute("data-key"), curve.get_attribute("points"), curve.count()

        key, points, _ = state()
        assert key == "30|sigmoid|xavier"

        depth = explorer.locator("[data-control=depth]")
        depth.evaluate("el => { el.value = 0; el.dispatchEvent(new Event('input', {bubbles: true})); }")
        key_depth, points_depth, count = state()
        assert key_depth == "1|sigmoid|xavier" and points_depth != points and count == 1
        assert len(points_depth.split()) == 1  # one hidden layer, one point

        depth.evaluate("el => { el.value = el.max; el.dispatchEvent(new Event('input', {bubbles: true})); }")
        explorer.locator("[data-control=activation]").select_option("relu")
        explorer.locator("[data-control=init]").select_option("he")
        key_after, points_after, _ = state()
        assert key_after == "100|relu|he"
        assert len(points_after.split()) == 100 and points_after != points
        assert "100, relu, he" in explorer.locator("svg").get_attribute("aria-label")

        explorer.locator("[data-control=activation]").select_option("sigmoid")
        explorer.locator("[data-control=init]").select_option("small")
        assert "exactly 0" in explorer.locator("svg").text_content()  # underflow drawn and announced
        explorer.locator("[data-control=activation]").select_option("relu")
        explorer.locator("[data-control=init]").select_option("he")
        explorer.screenshot(path=str(ARTIFACTS / "explorer-after.png"))
        assert visit.errors == [] and visit.external == []
    finally:
        visit.close()


def test_search_works_and_only_the_search_page_loads_the_index(site_url, browser):
    """The theme's search scripts are loaded by the search page alone (_templates/layout.html), and
    the search box of a chapter page still finds the book's words and its API names."""
    visit = Visit(browser, site_url + "chapters/causes/why_gradients_vanish.html")
    try:
        page = visit.page
        loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert not [name for name in loaded if "searchindex.js" in name or "searchtools.js" in name]
        page.keyboard.press("Control+k")  # the theme's shortcut opens its search dialog
        box = page.locator("#pst-search-dialog input[name=q]")
        box.fill("GradientMonitor")
        box.press("Enter")
        page.wait_for_url("**/search.html?q=GradientMonitor*")
        results = page.locator("#search-results ul.search li")
        results.first.wait_for(timeout=15_000)
        links = [results.nth(i).locator("a").first.get_attribute("href") for i in range(results.count())]
        assert any(link.startswith("api/") for link in links), links
        assert visit.external == [] and visit.errors == []
    finally:
        visit.close()
