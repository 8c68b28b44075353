"""A real ``tallyhub`` on loopback for end-to-end tests: ``init`` through the CLI, then
``serve`` as a subprocess, driven over HTTP. Every gateway gets its own data dir (and,
on PostgreSQL, its own schema)."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True) -> dict[str, Any]:
    """Run ``tallyhub <args> --json`` and return its one JSON document."""
    done = subprocess.run(
        [*TALLYHUB, *args, "--json"], input=stdin, capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    if check and done.returncode != 0:
        raise AssertionError(f"tallyhub {' '.join(args)} failed ({done.returncode}): {done.stdout} {done.stderr}")
    return json.loads(done.stdout)


def gateway_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYHUB_")}
    # Tests change prices and keys from other processes and use them at once: no read cache,
    # unless a test is about the cache itself.
    env.update(
        TALLYHUB_DATA_DIR=str(data_dir),
        TALLYHUB_BILLING_MODE="credits",
        PYTHONPATH=str(REPO),
        TALLYHUB_READ_CACHE_SECONDS="0",
    )
    if database_url:
        env["TALLYHUB_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class Gateway:
    env: dict[str, str]
    admin_key: str
    port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_paths: list[Path] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def initialised(cls, data_dir: Path, database_url: str | None = None, **extra: str) -> "Gateway":
        env = gateway_env(data_dir, database_url, **extra)
        result = cli(env, "init")
        return cls(env=env, admin_key=result["admin_key"])

    def start(self, port: int | None = None) -> "Gateway":
        port = port or free_port()
        log_path = Path(self.env["TALLYHUB_DATA_DIR"]) / f"serve-{port}.log"
        log = open(log_path, "wb")
        process = subprocess.Popen(
            [*TALLYHUB, "serve", "--port", str(port)], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        self.log_paths.append(log_path)
        self.ports.append(port)
        if not self.port:
            self.port = port
        _wait_until_listening(port, process, log_path)
        return self

    def url_of(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        self.ports.clear()
        self.port = 0

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.admin_key}"}
        return httpx.request(method, f"{self.url}/admin/v1{path}", headers=headers, timeout=30, **kwargs)

    def admin_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.admin(method, path, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def balance(self, account: str) -> dict[str, Any]:
        return self.admin_json("GET", f"/accounts/{account}/balance")


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tallyhub serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"tallyhub serve did not listen on {port}:\n{log_path.read_text()}")
