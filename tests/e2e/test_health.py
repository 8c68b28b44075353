"""GET /health and GET /ready of a real ``tallyhub serve`` (SQLite and PostgreSQL) and of
``tallyhub worker --health-port``: a fresh gateway is ready; a server-mode gateway and its
worker whose PostgreSQL becomes unreachable (a TCP proxy in front of it is cut: the machine's
PostgreSQL keeps running for everyone else) answer 503 naming the store, with nothing secret,
and 200 again once it is back; a read model stopped at an event it cannot apply makes an
embedded gateway not ready."""

import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PgSchemas
from tests.e2e.conftest import Served, configure
from tests.e2e.test_projection_stopped import chat, open_ledger, plant_huge_record
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, Gateway, free_port
from tests.support.tcp_proxy import TcpProxy

REDIS_URL = "redis://127.0.0.1:6379/0"
SERVE_CHECKS = {"store", "master_key", "account_writer", "shutdown"}
WORKER_CHECKS = {"store", "projections", "sweeps", "read_models", "shutdown"}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/ready", timeout=10)


def ready_with(url: str, status: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        try:
            answer = ready(url)
        except httpx.TransportError:
            return None
        return answer.json() if answer.status_code == status else None

    return check


def test_a_fresh_gateway_is_alive_and_ready(served: Served) -> None:
    url = served.gateway.url
    health = httpx.get(f"{url}/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    answer = wait_for(ready_with(url, 200), "the gateway to be ready")
    assert answer["status"] == "ok"
    assert set(answer["checks"]) == SERVE_CHECKS | {"read_models"}  # embedded: the read models are this process's
    assert all(check["ok"] for check in answer["checks"].values())
    docs = httpx.get(f"{url}/docs", timeout=10)
    assert docs.status_code == 200 and "/openapi.json" in docs.text


@pytest.fixture
def proxied_server(
    tmp_path: Path, upstream: FakeOpenAIUpstream, pg_schemas: PgSchemas
) -> Iterator[tuple[Gateway, TcpProxy, str]]:
    """A server-mode gateway whose PostgreSQL is reached through a proxy, and a worker with
    ``--health-port`` on the same settings; yields (gateway, proxy, the worker's health URL)."""
    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = pg_schemas.new_url().replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    gateway = Gateway.initialised(
        tmp_path, url, TALLYHUB_REDIS_URL=REDIS_URL, TALLYHUB_REDIS_PREFIX=f"th-test-{secrets.token_hex(6)}"
    )
    configure(gateway, upstream, "acme", "100")
    gateway.start()
    health_port = free_port()
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [*TALLYHUB, "worker", "--health-port", str(health_port)],
            env=gateway.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield gateway, proxy, f"http://127.0.0.1:{health_port}"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        gateway.stop()
        proxy.stop()


def test_ready_turns_503_while_postgresql_is_unreachable_and_200_when_it_returns(
    proxied_server: tuple[Gateway, TcpProxy, str],
) -> None:
    gateway, proxy, worker_url = proxied_server
    serving = wait_for(ready_with(gateway.url, 200), "serve to be ready")
    assert set(serving["checks"]) == SERVE_CHECKS  # server mode: the read models are the worker's
    working = wait_for(ready_with(worker_url, 200), "the worker to be ready")
    assert set(working["checks"]) == WORKER_CHECKS
    assert httpx.get(f"{worker_url}/health", timeout=10).json() == {"status": "ok"}
    # the worker's /metrics: the lag of each projection it runs, as Prometheus text
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{worker_url}/metrics", timeout=10).text)}
    lagging = {
        sample.labels["projection"]: sample.value for sample in families["tallyhub_projection_lag_events"].samples
    }
    assert lagging and all(value >= 0 for value in lagging.values())

    proxy.cut()
    for url in (gateway.url, worker_url):
        down = wait_for(ready_with(url, 503), f"{url}/ready to answer 503")
        assert down["status"] == "unavailable"
        assert down["checks"]["store"]["ok"] is False
        assert down["checks"]["store"]["error"].startswith("the event store cannot be queried")
        text = str(down)
        assert "postgres@" not in text and str(proxy.port) not in text and "5432" not in text
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # alive all the same
    assert down["checks"]["sweeps"]["ok"] is True and down["checks"]["projections"]["ok"] is True

    proxy.restore()
    for url in (gateway.url, worker_url):
        back = wait_for(ready_with(url, 200), f"{url}/ready to answer 200 again")
        assert all(check["ok"] for check in back["checks"].values())


def test_a_read_model_stopped_at_an_event_makes_the_gateway_not_ready(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    gateway = Gateway.initialised(tmp_path)
    api_key = configure(gateway, upstream, "acme", "100")
    gateway.start()
    try:
        first = chat(gateway, api_key)
        assert first.status_code == 200
        wait_for(ready_with(gateway.url, 200), "the gateway to be ready")
        record = gateway.admin_json("GET", f"/requests/{first.headers['x-request-id']}")
        like = {k: v for k, v in record.items() if k not in ("id", "recorded_at", "attempts")}
        ledger = open_ledger(gateway)
        try:
            planted = plant_huge_record(ledger, like)
        finally:
            ledger.close()
        down = wait_for(ready_with(gateway.url, 503), "/ready to answer 503")
        check = down["checks"]["read_models"]
        assert check["ok"] is False
        assert check["error"].startswith("stopped projection(s): ")
        assert f"usage at event {planted}" in check["error"]
        assert {name for name, c in down["checks"].items() if not c["ok"]} == {"read_models"}
        assert chat(gateway, api_key).status_code == 200  # not ready for a balancer; still serving
    finally:
        gateway.stop()
