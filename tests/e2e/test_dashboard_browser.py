"""The dashboard in a real browser: ``streamlit run`` (the command ``tallyhub dashboard``
uses, from ``dashboard.launch``) on a free loopback port against a seeded SQLite store,
driven by headless Chromium (Debian's ``chromium``) over the DevTools protocol.

For every page it waits for the page's title and its main chart drawn (a canvas or SVG
with a size), checks that no exception box is shown, and saves a screenshot in the
test's tmp dir. Skipped only when no Chromium can be found."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.bootstrap import build_services
from adapters.exports.exporter import create_export
from tests.dashboard.browser import Browser, find_chromium, sign_in, streamlit_server
from tests.dashboard.seed import Seeded, seed_store

RECORDED = "ledger-recorded.csv"
PAGES = ["Overview", "Accounts", "Models and providers", "Requests", "Pricing", "Exports"]
CHART_DRAWN = (
    "[...document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, "
    "[data-testid=stVegaLiteChart] svg.marks')].some(e => e.getBoundingClientRect().height > 50)"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    seeded = seed_store(tmp_path_factory.mktemp("dashboard-browser") / "data")
    services = build_services(seeded.settings)  # one recorded export where the admin API writes them
    try:
        (seeded.settings.data_dir / "exports").mkdir()
        create_export(services, "ledger", None, None, "csv", seeded.settings.data_dir / "exports" / RECORDED)
    finally:
        services.read_models.close()
        services.ledger.close()
    return seeded


@pytest.fixture(scope="module")
def dashboard_url(store: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with streamlit_server(store.env, tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url:
        yield url


def test_every_page_renders_its_title_and_main_chart_in_chromium(
    store: Seeded, dashboard_url: str, tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (install Debian's package: apt-get install -y chromium)")
    shots = asyncio.run(drive(chromium, dashboard_url, store.admin_key, tmp_path))
    assert [path.name for path in shots] == [
        f"{i}-{title.lower().replace(' ', '-')}.png" for i, title in enumerate(PAGES)
    ]
    for path in shots:
        assert path.stat().st_size > 20_000, path  # a rendered page, not a blank one


async def drive(chromium: str, url: str, admin_key: str, out: Path) -> list[Path]:
    browser = Browser(chromium, out / "chromium-profile")
    try:
        await browser.connect()
        await browser.set_viewport(1400, 2400)
        await browser.navigate(url)
        await sign_in(browser, "tha_wrong-key")
        await browser.wait_for(
            "[...document.querySelectorAll('[data-testid=stAlert]')]"
            ".some(e => e.innerText.includes('That is not the admin key'))",
            what="the refusal",
        )
        assert not await browser.evaluate("!!document.querySelector('[data-testid=stSidebarNavLink]')")
        await sign_in(browser, admin_key)
        await browser.wait_for(
            f"{json.dumps(PAGES)}.every(t => [...document.querySelectorAll('[data-testid=stSidebarNavLink]')]"
            ".some(a => a.innerText.trim().endsWith(t)))",
            what="the analytics pages' links",
        )
        shots = []
        for index, title in enumerate(PAGES):
            await open_page(browser, title)
            if title == "Exports":
                await browser.wait_for(
                    f"document.body.innerText.includes('Download {RECORDED}')", what="the recorded export's download"
                )
            shot = out / f"{index}-{title.lower().replace(' ', '-')}.png"
            await browser.screenshot(shot)
            shots.append(shot)
        return shots
    finally:
        await browser.close()


async def open_page(browser: Browser, title: str) -> None:
    link = (
        "[...document.querySelectorAll('[data-testid=stSidebarNavLink]')]"
        f".find(a => a.innerText.trim().endsWith({json.dumps(title)}))"
    )
    await browser.evaluate(f"{link}.click()")
    await browser.wait_for(
        f"(document.querySelector('h1') || {{}}).innerText === {json.dumps(title)}",
        what=f"the title of {title}",
        timeout=30,
    )
    await browser.wait_for("!document.querySelector('[data-testid=stStatusWidget]')", what=f"{title} to finish running")
    await browser.wait_for(CHART_DRAWN, what=f"the main chart of {title}", timeout=30)
    await asyncio.sleep(0.5)  # let Vega finish its transition before the screenshot
    assert not await browser.evaluate("!!document.querySelector('[data-testid=stException]')"), title
