"""How ``tallyhub dashboard`` starts the app: ``streamlit run dashboard/app.py`` with the
server options an operator wants (loopback by default, headless, no usage statistics, no
developer toolbar, no file watcher). The dashboard reads the same ``TALLYHUB_*``
environment as every other command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def streamlit_command(host: str = "127.0.0.1", port: int = 8501, *, python: str = sys.executable) -> list[str]:
    return [
        python,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--global.developmentMode",
        "false",
    ]


def run(host: str = "127.0.0.1", port: int = 8501) -> None:
    """Replace this process with the Streamlit server (so Ctrl-C and signals reach it directly)."""
    command = streamlit_command(host, port)
    os.execv(command[0], command)
