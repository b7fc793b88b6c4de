"""Every button in a built page's header leads somewhere that works: Binder and Colab open this
chapter of the repository named in ``_config.yml``, downloads exist, and there is no Live code
(Thebe) button, whose library would come from a CDN.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlparse

import pytest
from bs4 import BeautifulSoup

from tests.site.test_site import HTML, ROOT
from tests.test_launch import URL, config_value

ORG_REPO = URL.removeprefix("https://github.com/")


def chapter_pages() -> list[Path]:
    notebooks = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return [p.relative_to(ROOT).with_suffix(".html") for p in notebooks]


def header_links(page: Path) -> list[str]:
    soup = BeautifulSoup((HTML / page).read_text(), "html.parser")
    header = soup.select_one(".bd-header-article")
    assert header is not None, f"{page}: no article header"
    return [a["href"] for a in header.select("a[href]")]


@pytest.mark.parametrize("page", chapter_pages(), ids=lambda p: p.stem)
def test_launch_buttons_open_this_chapter_of_the_configured_repository(site_url, page):
    notebook = page.with_suffix(".ipynb").as_posix()
    links = header_links(page)
    binder = [link for link in links if link.startswith(config_value("binderhub_url"))]
    colab = [link for link in links if link.startswith(config_value("colab_url"))]
    assert len(binder) == 1 and len(colab) == 1, links
    parsed = urlparse(binder[0])
    assert parsed.path == f"/v2/gh/{ORG_REPO}/{config_value('branch')}"
    # the interface _config.yml names, and the path test_launch_environments.py opens in JupyterLab
    assert parse_qs(parsed.query)["urlpath"] == [f"lab/tree/{notebook}"]
    assert (
        colab[0] == f"{config_value('colab_url')}/github/{ORG_REPO}/blob/{config_value('branch')}/{notebook}"
    )
    assert (ROOT / notebook).is_file()
    assert URL in links, "the repository button"


@pytest.mark.parametrize("page", chapter_pages(), ids=lambda p: p.stem)
def test_no_live_code_button_and_every_download_exists(site_url, page):
    text = (HTML / page).read_text()
    assert not re.search(r"thebe", text, flags=re.I), "a Live code (Thebe) button or script"
    assert "VGLIB_REPOSITORY" not in text, "the Colab install cell is shown on the page"
    for link in header_links(page):
        if not urlparse(link).scheme and not link.startswith(("#", "javascript:")):
            target = urlparse(urljoin((HTML / page).as_uri(), link)).path
            assert Path(unquote(target)).is_file(), f"{page}: {link} is missing"
