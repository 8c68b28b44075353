"""The dashboard in a real browser: ``streamlit run`` (the command ``tallyhub dashboard``
uses, from ``dashboard.launch``) on a free loopback port against a seeded SQLite store,
driven by headless Chromium (Debian's ``chromium``) over the DevTools protocol.

For every page it waits for the page's title and its main chart drawn (a canvas or SVG
with a size), checks that no exception box is shown, and saves a screenshot in the
test's tmp dir. Skipped only when no Chromium can be found."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.bootstrap import build_services
from adapters.exports.exporter import create_export
from dashboard.launch import streamlit_command
from tests.dashboard.browser import Browser, find_chromium
from tests.dashboard.seed import Seeded, seed_store

REPO = Path(__file__).resolve().parents[2]
RECORDED = "ledger-recorded.csv"
PAGES = ["Overview", "Accounts", "Models and providers", "Requests", "Pricing", "Exports"]
CHART_DRAWN = (
    "[...document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, "
    "[data-testid=stVegaLiteChart] svg.marks')].some(e => e.getBoundingClientRect().height > 50)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYHUB_")}
    env.update(store.env, PYTHONPATH=str(REPO))
    with log.open("w") as out:
        server = subprocess.Popen(
            streamlit_command("127.0.0.1", port),
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server, log)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_until_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"streamlit did not become healthy:\n{log.read_text()}")


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
            "document.querySelectorAll('[data-testid=stSidebarNavLink]').length === 6", what="the navigation"
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


async def sign_in(browser: Browser, key: str) -> None:
    await browser.wait_for("!!document.querySelector('input[type=password]')", what="the admin-key field")
    await browser.type_text("input[type=password]", key)
    await browser.evaluate(
        "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Sign in').click()"
    )


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
