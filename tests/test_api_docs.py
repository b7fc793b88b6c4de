"""The book's API reference (api/*.md, Sphinx autodoc) documents every public name of vglib exactly once.

Read from the built site: Sphinx's object inventory (``objects.inv``) says where each documented object
is, and the page must carry that object's anchor. A name counts as documented when an entry of the
inventory ends in it, is anchored under its own name (not a ``:canonical:`` alias of another entry) and
imports as the very object ``vglib`` exports.
"""

from __future__ import annotations

import importlib
import re

import pytest
from sphinx.util.inventory import InventoryFile

import vglib
from tests.site.conftest import site_url  # noqa: F401 (the site, rebuilt when a source is newer)
from tests.site.test_site import HTML, ROOT

API = "api/"


def resolve(fullname: str) -> object | None:
    """The object a dotted name imports as (the longest importable module, then attributes)."""
    parts = fullname.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)  # a dataclass field without a default: None
        return obj
    return None


def api_anchors() -> dict[str, tuple[str, str]]:
    """Every Python object anchored in the API pages: its full name -> (its page, its anchor)."""
    with (HTML / "objects.inv").open("rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    anchors = {}
    for kind, entries in inventory.items():
        if not kind.startswith("py:"):
            continue
        for name, (_project, _version, uri, _display) in entries.items():
            page, _, fragment = uri.partition("#")
            if page.startswith(API) and fragment in (name, f"module-{name}"):
                anchors[name] = (page, fragment)
    return anchors


@pytest.mark.usefixtures("site_url")
def test_every_public_name_is_documented_exactly_once():
    anchors = api_anchors()
    assert anchors, "no API pages in the built site"
    wrong = {}
    for name in vglib.__all__:
        exported = getattr(vglib, name)
        found = [
            full
            for full in anchors
            if (full == f"vglib.{name}" or full.endswith(f".{name}")) and resolve(full) is exported
        ]
        if len(found) != 1:
            wrong[name] = found
    assert wrong == {}, f"vglib.__all__ names documented never ([]) or more than once: {wrong}"


@pytest.mark.usefixtures("site_url")
def test_each_documented_name_is_an_anchor_on_its_page():
    pages: dict[str, str] = {}
    for full, (page, anchor) in api_anchors().items():
        if page not in pages:
            pages[page] = (HTML / page).read_text(encoding="utf-8")
        assert f'id="{anchor}"' in pages[page], f"{full} has no anchor on {page}"


def test_the_api_pages_are_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    pages = sorted(p.stem for p in (ROOT / "api").glob("*.md"))
    listed = sorted(re.findall(r"file:\s*api/(\w+)", toc))
    assert listed == pages
