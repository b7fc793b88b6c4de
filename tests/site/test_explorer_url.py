"""Shareable explorer state: the page address records the controls, so a link reproduces a curve.

The fragment's syntax is documented in ``vglib/static.py``; ``explorer_fragment`` writes it from
Python, and these tests check that the page's script reads what it writes and writes the same.
Headless Chromium, on the built site (``test_site``'s fixtures) and on a page of two explorers with
awkward values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import pytest

from tests.site.test_site import HTML, PAGES, Visit
from vglib.plots import Series
from vglib.static import Control, curve_explorer_html, explorer_fragment

CHAPTER = "chapters/causes/why_gradients_vanish.html"
LINKED = {"depth": 50, "activation": "tanh", "init": "he"}  # the chapter's default: 30, sigmoid, xavier


def state(explorer) -> dict[str, object]:
    """What an explorer shows: its controls' values, its key and its drawn curve."""
    controls = {
        control.get_attribute("data-control"): control.evaluate(
            "el => el.type === 'range' ? el.parentElement.querySelector('output').textContent : el.value"
        )
        for control in explorer.locator("[data-control]").all()
    }
    return {
        "controls": controls,
        "key": explorer.get_attribute("data-key"),
        "label": explorer.locator("svg").get_attribute("aria-label"),
        "points": explorer.locator("polyline.vg-series-0").get_attribute("points"),
    }


def fragment(page) -> str:
    return page.evaluate("location.hash")


def in_view(locator) -> bool:
    return locator.evaluate(
        "el => { const r = el.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; }"
    )


def commit(control, value: str | int) -> None:
    """Set a control as a reader does, an ``input`` then a ``change`` event, without Playwright's
    scrolling (a range takes the index of its value)."""
    control.evaluate(
        "(el, v) => { el.value = v; for (const t of ['input', 'change'])"
        " el.dispatchEvent(new Event(t, {bubbles: true})); }",
        value,
    )


def hashchange_after(page, action: Callable[[], object]) -> None:
    """Run ``action`` (which changes the fragment) and wait until the page has handled its
    ``hashchange``: the explorers listen from load on, so their handlers have run by then."""
    page.evaluate(
        "window.vgHashchanged = false; addEventListener('hashchange',"
        " () => setTimeout(() => { vgHashchanged = true; }), {once: true})"
    )
    action()
    page.wait_for_function("vgHashchanged", timeout=10_000)


def test_a_link_opens_the_explorer_in_its_configuration_and_a_change_rewrites_it(site_url, browser):
    default = Visit(browser, site_url + CHAPTER)
    try:
        base = state(default.page.locator(".vg-curve-explorer").first)
    finally:
        default.close()
    assert base["key"] == "30|sigmoid|xavier"

    link = "#" + explorer_fragment({1: LINKED})
    assert link == "#explorer-1:depth=50,activation=tanh,init=he"
    visit = Visit(browser, site_url + CHAPTER + link)
    try:
        page = visit.page
        explorer = page.locator(".vg-curve-explorer").first
        linked = state(explorer)
        assert linked["controls"] == {k: str(v) for k, v in LINKED.items()}
        assert linked["key"] == "50|tanh|he"
        assert linked["label"].startswith("depth 50, tanh, he init")
        assert len(linked["points"].split()) == 50 and linked["points"] != base["points"]
        assert fragment(page) == link  # read, not rewritten
        assert in_view(explorer), "the linked explorer is scrolled into view"

        # a change through the page: ArrowRight on the depth slider, then a menu
        history = page.evaluate("history.length")
        explorer.locator("[data-control=depth]").press("ArrowRight")
        moved = state(explorer)
        assert moved["key"] == "60|tanh|he" and len(moved["points"].split()) == 60
        assert fragment(page) == "#" + explorer_fragment({1: {**LINKED, "depth": 60}})
        explorer.locator("[data-control=activation]").select_option("relu")
        assert state(explorer)["key"] == "60|relu|he"
        assert fragment(page) == "#explorer-1:depth=60,activation=relu,init=he"
        assert state(explorer)["points"] != moved["points"]
        assert page.evaluate("history.length") == history, "replaceState: no new history entry"

        # back at every default, the explorer leaves the address, and the page stays where the
        # reader is (an emptied fragment set through location would jump to the top)
        scroll = page.evaluate("scrollTo(0, scrollY + 300); scrollY")
        assert scroll > 300
        commit(explorer.locator("[data-control=activation]"), "sigmoid")
        commit(explorer.locator("[data-control=init]"), "xavier")
        commit(explorer.locator("[data-control=depth]"), 10)  # the grid's 11th depth, 30
        assert state(explorer)["key"] == "30|sigmoid|xavier"
        assert fragment(page) == "" and "#" not in page.url
        assert page.evaluate("scrollY") == scroll, "no scroll jump"
        assert page.evaluate("history.length") == history, "replaceState: no new history entry"

        # an address typed or followed on the page (hashchange) is read too
        page.evaluate("location.hash = 'explorer-1:init=he'")
        page.wait_for_function("document.querySelector('.vg-curve-explorer').dataset.key === '30|sigmoid|he'")
        assert visit.errors == [] and visit.external == []
    finally:
        visit.close()


def test_a_section_anchor_still_works_and_is_left_alone(site_url, browser):
    visit = Visit(browser, site_url + CHAPTER + "#exercises")
    try:
        page = visit.page
        heading = page.locator("#exercises")
        assert heading.count() == 1
        assert fragment(page) == "#exercises"
        assert page.evaluate("scrollY") > 0 and in_view(heading)
        explorer = page.locator(".vg-curve-explorer").first
        assert state(explorer)["key"] == "30|sigmoid|xavier"
        # the anchor is replaced once a control changes
        explorer.locator("[data-control=init]").select_option("he")
        assert fragment(page) == "#explorer-1:depth=30,activation=sigmoid,init=he"
        explorer.locator("[data-control=depth]").press("ArrowRight")
        moved = state(explorer)
        assert moved["key"] == "40|sigmoid|he" and fragment(page) == "#" + explorer_fragment(
            {1: {"depth": 40, "activation": "sigmoid", "init": "he"}}
        )
        # a section link clicked on the page (the page's contents) still scrolls to its heading, and
        # the explorers keep what they show
        page.evaluate("scrollTo(0, 0)")
        assert not in_view(heading)
        link = page.locator('#pst-page-toc-nav a[href="#exercises"]')
        hashchange_after(page, link.click)
        assert fragment(page) == "#exercises"
        assert 0 <= heading.evaluate("el => el.getBoundingClientRect().top") < 100
        assert state(explorer) == moved
        # and the next change replaces the anchor again
        explorer.locator("[data-control=init]").select_option("xavier")
        assert fragment(page) == "#explorer-1:depth=40,activation=sigmoid,init=xavier"
        assert visit.errors == []
    finally:
        visit.close()


@pytest.mark.parametrize(
    "bogus, key",
    [
        ("explorer-1:depth=7,activation=nope,init=he", "30|sigmoid|he"),  # 7 is not on the depth grid
        ("explorer-1:depth=50,init=%E0%A4%A,zzz=1,=tanh,activation", "50|sigmoid|xavier"),  # malformed parts
        ("explorer-01:depth=50&explorer-9:depth=50&explorer-1", "30|sigmoid|xavier"),  # no such explorer
        ("explorer-1:depth=50&some-heading", "50|sigmoid|xavier"),  # an extra plain part is ignored
    ],
)
def test_values_a_control_lacks_are_ignored_without_errors(site_url, browser, bogus, key):
    visit = Visit(browser, site_url + CHAPTER + "#" + bogus)
    try:
        assert visit.page.locator(".vg-curve-explorer").first.get_attribute("data-key") == key
        assert visit.errors == [], "console errors"
    finally:
        visit.close()


def explorer_specs(path: str) -> list[dict]:
    """The data of every explorer on a built page, in page order."""
    text = (HTML / path).read_text(encoding="utf-8")
    pattern = r'class="vg-curve-explorer".*?<script type="application/json">(.*?)</script>'
    return [json.loads(data) for data in re.findall(pattern, text, re.S)]  # JSON reads "<\/" as "</"


CHAPTERS = [path for path in PAGES if (HTML / "_sources" / path).with_suffix(".ipynb").exists()]


@pytest.mark.parametrize("path", CHAPTERS)
def test_every_chapter_explorer_opens_from_a_link(site_url, browser, path):
    specs = explorer_specs(path)
    assert specs, "every chapter notebook has an explorer"
    # every control at its last value (another than the default where it has one)
    chosen = {
        index: {c["name"]: next(v for v in reversed(c["values"]) if v != c["value"] or len(c["values"]) == 1)
                for c in spec["controls"]}
        for index, spec in enumerate(specs, start=1)
    }  # fmt: skip
    visit = Visit(browser, site_url + path + "#" + explorer_fragment(chosen))
    try:
        explorers = visit.page.locator(".vg-curve-explorer")
        assert explorers.count() == len(specs)
        for index, values in chosen.items():
            assert explorers.nth(index - 1).get_attribute("data-key") == "|".join(values.values())
        assert visit.errors == []
    finally:
        visit.close()


# Two explorers on one page, with values that need encoding; served from memory, nothing else loads.
PAGE_URL = "http://127.0.0.1/explorers.html"


def _frame(**settings: object) -> tuple[str, list[np.ndarray]]:
    # a curve that tells every combination apart (its length and level depend on every value)
    n = 2 + sum(len(str(v)) for v in settings.values())
    level = sum(ord(c) for v in settings.values() for c in str(v)) % 40
    return ", ".join(f"{k}={v}" for k, v in settings.items()), [np.logspace(-level, 0, n)]


FIRST = [Control("depth", (1, 2, 3), 2, kind="range"), Control("kind", ("sigmoid", "tanh"), "sigmoid")]
SECOND = [
    Control("lr", ("1e-3", "1e-2"), "1e-3"),
    Control("scale", (1.0, 2.0, 2.5), 1.0, kind="range"),
    Control("init", ("he (ReLU)", "a,b=c&d%#é", "x:y"), "he (ReLU)"),
]


@pytest.fixture(scope="module")
def two_explorers() -> str:
    series = [Series("curve", "#000")]
    first = curve_explorer_html(FIRST, _frame, series, xlabel="x", ylabel="y")
    second = curve_explorer_html(SECOND, _frame, series, xlabel="x", ylabel="y")
    return (
        '<!doctype html><html><head><meta charset="utf-8"></head><body>'
        # room above the first explorer: a 700 px window shows it only when scrolled to it
        f'<h2 id="top">Top</h2><div style="height:3000px"></div>{first}'
        f'<div style="height:3000px"></div>{second}'
        '<h2 id="end">End</h2><div style="height:3000px"></div></body></html>'
    )


class MemoryPage:
    """``PAGE_URL`` served from memory in a fresh context, with page errors recorded."""

    def __init__(self, browser, body: str, hash_: str = "", init_script: str = ""):
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1000, "height": 700})
        self.context.route("**/*", self._route)
        if init_script:
            self.context.add_init_script(init_script)
        self.body = body
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.goto(PAGE_URL + hash_, wait_until="load")

    def _route(self, route) -> None:
        if route.request.url.split("#")[0] == PAGE_URL:
            route.fulfill(body=self.body, content_type="text/html; charset=utf-8")
        else:
            route.abort()

    def keys(self) -> list[str]:
        return self.page.eval_on_selector_all(".vg-curve-explorer", "els => els.map(e => e.dataset.key)")

    def close(self) -> None:
        self.context.close()


def test_two_explorers_share_the_address_and_awkward_values_round_trip(browser, two_explorers):
    memory = MemoryPage(browser, two_explorers)
    try:
        page = memory.page
        assert memory.keys() == ["2|sigmoid", "1e-3|1.0|he (ReLU)"] and fragment(page) == ""
        second = page.locator(".vg-curve-explorer").nth(1)
        second.locator("[data-control=init]").select_option("a,b=c&d%#é")
        second.locator("[data-control=scale]").press("ArrowRight")
        # only the explorer that differs from its defaults is written, with every control
        wanted = {2: {"lr": "1e-3", "scale": "2.0", "init": "a,b=c&d%#é"}}
        assert fragment(page) == "#" + explorer_fragment(wanted)
        page.locator(".vg-curve-explorer").first.locator("[data-control=kind]").select_option("tanh")
        wanted = {1: {"depth": "2", "kind": "tanh"}, **wanted}
        address = "#" + explorer_fragment(wanted)
        assert fragment(page) == address
        assert address == (
            "#explorer-1:depth=2,kind=tanh&explorer-2:lr=1e-3,scale=2.0,init=a%2Cb%3Dc%26d%25%23%C3%A9"
        )
        shown = memory.keys()
        assert shown == ["2|tanh", "1e-3|2.0|a,b=c&d%#é"]
        assert memory.errors == []
    finally:
        memory.close()

    # the address opens both explorers as they were, and the first one it names is in view
    again = MemoryPage(browser, two_explorers, address)
    try:
        assert again.keys() == shown and fragment(again.page) == address
        assert in_view(again.page.locator(".vg-curve-explorer").first)
        assert not in_view(again.page.locator(".vg-curve-explorer").nth(1))
        # a hashchange to one explorer's state puts the other back at its defaults, and scrolls to it
        again.page.evaluate("location.hash = 'explorer-2:init=he%20(ReLU),scale=2.5,lr=1e-2'")
        again.page.wait_for_function(
            "document.querySelectorAll('.vg-curve-explorer')[1].dataset.key.startsWith('1e-2')"
        )
        assert again.keys() == ["2|sigmoid", "1e-2|2.5|he (ReLU)"]
        assert in_view(again.page.locator(".vg-curve-explorer").nth(1))
        # a plain anchor leaves them as they are, and scrolls to its heading
        hashchange_after(again.page, lambda: again.page.evaluate("location.hash = 'end'"))
        assert again.keys() == ["2|sigmoid", "1e-2|2.5|he (ReLU)"] and fragment(again.page) == "#end"
        assert abs(again.page.locator("#end").evaluate("el => el.getBoundingClientRect().top")) < 1
        assert again.errors == []
    finally:
        again.close()

    # a value typed unencoded into the address bar still counts; one that is not a value does not
    typed = MemoryPage(browser, two_explorers, "#explorer-2:init=x:y,scale=2.5,lr=1e-4")
    try:
        assert typed.keys() == ["2|sigmoid", "1e-3|2.5|x:y"] and typed.errors == []
    finally:
        typed.close()


# The page's writes to its address, recorded: browsers rate-limit history.replaceState (Safari throws,
# Chrome ignores calls), so a write per step of a dragged slider could leave an older curve's address.
COUNT_WRITES = """
window.vgWrites = [];
const replaceState = history.replaceState.bind(history);
history.replaceState = (state, title, url) => { vgWrites.push(String(url)); replaceState(state, title, url) };
"""
KEYS_SEEN = """
window.vgKeys = [];
new MutationObserver(records => records.forEach(r => vgKeys.push(r.target.dataset.key)))
    .observe(document.querySelector('.vg-curve-explorer'), {attributes: true, attributeFilter: ['data-key']});
"""


def test_the_address_is_written_once_per_committed_change(browser, two_explorers):
    memory = MemoryPage(browser, two_explorers, init_script=COUNT_WRITES)
    try:
        page = memory.page
        first = page.locator(".vg-curve-explorer").first
        depth, kind = first.locator("[data-control=depth]"), first.locator("[data-control=kind]")

        def written() -> list[str]:
            return [url.partition("#")[2] for url in page.evaluate("vgWrites")]

        # a slider scrubbed to and fro: every input event redraws, none writes the address
        drawn = set()
        for index in (0, 2, 1, 0, 2, 0, 2):
            depth.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", index)
            drawn.add(state(first)["points"])
        assert len(drawn) == 3 and memory.keys()[0] == "3|sigmoid"
        assert written() == [] and fragment(page) == ""
        # released: one write, of the final value
        depth.dispatch_event("change")
        assert written() == ["explorer-1:depth=3,kind=sigmoid"] and fragment(page) == "#" + written()[-1]
        # a change that would leave the address as it is writes nothing
        depth.dispatch_event("change")
        assert len(written()) == 1
        # the keyboard and a menu: one write per committed change (back at the defaults: no fragment)
        depth.press("ArrowLeft")
        assert memory.keys()[0] == "2|sigmoid" and written()[1:] == [""] and fragment(page) == ""
        kind.select_option("tanh")
        assert written()[2:] == ["explorer-1:depth=2,kind=tanh"] and fragment(page) == "#" + written()[-1]
        kind.select_option("tanh")  # chosen again: the same address
        assert len(written()) == 3
        # dragged with the mouse from the middle to the left end, then the right end: redrawn on the
        # way, written once, on release
        depth.scroll_into_view_if_needed()
        page.evaluate(KEYS_SEEN)
        box = depth.bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + 1, y, steps=5)
        page.mouse.move(box["x"] + box["width"] - 1, y, steps=10)
        assert page.evaluate("vgKeys") == ["1|tanh", "2|tanh", "3|tanh"] and len(written()) == 3
        page.mouse.up()
        assert written()[3:] == ["explorer-1:depth=3,kind=tanh"] and fragment(page) == "#" + written()[-1]
        assert memory.keys()[0] == "3|tanh" and memory.errors == []
    finally:
        memory.close()
