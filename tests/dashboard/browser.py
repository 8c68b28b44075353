"""Drives headless Chromium over the DevTools protocol (aiohttp's websocket client; no
Selenium, no Playwright download): open a page, type, click, wait for a condition, take
a screenshot. Chromium is Debian's ``chromium`` package.

Also what the browser tests share around it: a free loopback port and the dashboard's
Streamlit server started exactly as ``tallyhub dashboard`` starts it
(``dashboard.launch.streamlit_command``), waited for until healthy and always stopped."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from dashboard.launch import streamlit_command

REPO = Path(__file__).resolve().parents[2]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamlit_server(store_env: Mapping[str, str], log: Path) -> Iterator[str]:
    """The dashboard as ``tallyhub dashboard`` runs it, on a free loopback port, with the
    ``TALLYHUB_*`` environment of ``store_env`` only; yields its URL once healthy, and stops
    it (its whole process group) when the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYHUB_")}
    env.update(store_env, PYTHONPATH=str(REPO))
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


class Browser:
    """One headless Chromium process and one page (tab) driven through CDP."""

    def __init__(self, executable: str, profile: Path, *, width: int = 1400, height: int = 1000) -> None:
        self.profile = profile
        self.process = subprocess.Popen(
            [
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, timeout: float = 20.0) -> None:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        message_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive()).data)
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what or expression}")
            await asyncio.sleep(0.2)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def type_text(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def type_into(self, selector: str, text: str) -> None:
        """Type ``text`` into the one element ``selector`` names (after waiting for it)."""
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})", what=selector)
        await self.type_text(selector, text)

    async def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13, text="\r"
            )

    async def click(self, selector: str) -> None:
        """Click the element ``selector`` names, once it is there and enabled."""
        element = f"document.querySelector({json.dumps(selector)})"
        await self.wait_for(f"!!{element} && !{element}.disabled", what=f"{selector} to click")
        await self.evaluate(f"{element}.click()")

    async def page_text(self) -> str:
        return str(await self.evaluate("document.body.innerText"))

    async def wait_for_text(self, text: str, timeout: float = 30.0) -> None:
        await self.wait_for(f"!!document.body?.innerText.includes({json.dumps(text)})", timeout, what=repr(text))

    async def data_grids(self) -> list[dict[str, Any]]:
        """Every ``st.dataframe`` on the page as ``{"columns": [...], "rows": [[...], ...]}``: the
        text of the accessible table its data grid keeps inside the canvas (the columns and
        rows in view only; ``innerText`` does not reach it)."""
        grids = await self.evaluate(
            "[...document.querySelectorAll('[data-testid=stDataFrame] table')].map(t => ({"
            "columns: [...t.querySelectorAll('thead th')].map(c => c.textContent.trim()),"
            "rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')]"
            ".map(c => c.textContent.trim()))}))"
        )
        return list(grids or [])

    async def scroll_grids(self, fraction: float) -> None:
        """Scroll every data grid to ``fraction`` (0 top, 1 bottom) of its rows: a grid keeps
        only the rows in view in its accessible table."""
        await self.evaluate(
            "document.querySelectorAll('[data-testid=stDataFrame] .dvn-scroller')"
            f".forEach(e => e.scrollTop = {float(fraction)} * (e.scrollHeight - e.clientHeight))"
        )

    async def set_viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def sign_in(browser: Browser, key: str) -> None:
    """Type ``key`` into the sign-in form's password field (the admin's, or the portal's) and submit it."""
    await browser.wait_for("!!document.querySelector('input[type=password]')", what="the key field")
    await browser.type_text("input[type=password]", key)
    await browser.evaluate(
        "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Sign in').click()"
    )
