"""One event the read models cannot store — a request record with usage and a charge of
10^20, planted in the event store past the domain's bounds while the gateway serves —
stops the read models that store it, and only those, on SQLite and on PostgreSQL (embedded,
and server mode, where ``tallyhub worker`` runs the projections and the sweeps): the
CLI's ``projections status --json`` and ``GET /admin/v1/projections`` say where and why,
the other read models go on past it, requests are still served and charged, the sweep
still releases an expired hold, ``tallyhub balance`` answers, a read of a stopped read
model answers 503 ``projection_stopped``, and ``verify`` runs and names them."""

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from adapters.bootstrap import build_ledger
from adapters.settings import Settings
from application.ledger import Ledger
from domain.request_record import RequestRecord
from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, Gateway, cli

HUGE = 10**20
STOPPED = {"usage", "request_log", "provider_hourly"}  # the read models of request records
RUNNING = {"balances", "ledger_entries"}
REDIS_URL = "redis://127.0.0.1:6379/0"
NANO_PER_TOKEN = {"input_tokens": 2_000, "output_tokens": 8_000}  # configure(): 2 and 8 credits per 1M


@pytest.fixture(params=["sqlite", "postgres", pytest.param("server", marks=[pytest.mark.postgres, pytest.mark.redis])])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Iterator[tuple[Gateway, str]]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    url = pg_schemas.new_url() if request.param != "sqlite" else None
    extra = {"TALLYHUB_SWEEP_INTERVAL_SECONDS": "1"}
    if request.param == "server":
        extra.update(TALLYHUB_REDIS_URL=REDIS_URL, TALLYHUB_REDIS_PREFIX=f"th-test-{secrets.token_hex(6)}")
    served = Gateway.initialised(tmp_path, url, **extra)
    api_key = configure(served, upstream, "acme", "100")
    served.start()
    worker = None
    if request.param == "server":
        log_path = tmp_path / "worker.log"
        served.log_paths.append(log_path)  # its log is read with the serve's
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [*TALLYHUB, "worker", "--poll-seconds", "1"],
                env=served.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    try:
        yield served, api_key
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=20)
        served.stop()
        upstream.stop()


def chat(gateway: Gateway, api_key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {api_key}"},
        json={"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def open_ledger(gateway: Gateway) -> Ledger:
    return build_ledger(Settings.from_env(gateway.env))


def plant_huge_record(ledger: Ledger, like: dict[str, Any]) -> int:
    """A copy of a real request's record with usage and charge of 10^20, stored as it is."""
    details = {**like, "usage": {**like["usage"], "output_tokens": HUGE}, "charge": HUGE, "cost": HUGE}
    record = RequestRecord._create(RequestRecord.Completed, id=uuid4(), details=details)
    ledger.recorder.insert_events([ledger.mapper.to_stored_event(e) for e in record.collect_events()])
    return ledger.recorder.max_notification_id()


def plant_expired_hold(ledger: Ledger, account: str, amount: int) -> None:
    account_id: UUID = ledger.get_account(account).id
    past = ledger.clock.now() - timedelta(minutes=1)
    ledger.change_account(account_id, lambda a: a.place_hold(uuid4(), amount, expires_at=past) or [])


def status_of(gateway: Gateway) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in cli(gateway.env, "projections", "status")["data"]}


def test_an_event_the_read_models_cannot_store_stops_them_alone_and_the_gateway_goes_on(
    gateway: tuple[Gateway, str],
) -> None:
    served, api_key = gateway
    first = chat(served, api_key)
    assert first.status_code == 200
    record = served.admin_json("GET", f"/requests/{first.headers['x-request-id']}")
    like = {k: v for k, v in record.items() if k not in ("id", "recorded_at", "attempts")}
    ledger = open_ledger(served)
    try:
        planted = plant_huge_record(ledger, like)
        plant_expired_hold(ledger, "acme", 10**9)
    finally:
        ledger.close()

    # the serve's projector stops the request read models at the planted event
    def all_stopped() -> dict[str, dict[str, Any]] | None:
        status = status_of(served)
        return status if all(status[n]["state"] == "stopped" for n in STOPPED) else None

    status = wait_until(all_stopped, "the request read models to stop")
    overflow = (
        "OverflowError: Python int too large"
        if "TALLYHUB_DATABASE_URL" not in served.env
        else "NumericValueOutOfRange: bigint out of range"
    )
    for name in STOPPED:
        row = status[name]
        assert (row["stopped_at"], row["position"]) == (planted, planted - 1)
        assert row["stopped_event"] == "domain.request_record:RequestRecord.Completed"
        assert row["error"].startswith(overflow) and row["stopped_on"]
    admin = {row["name"]: row for row in served.admin_json("GET", "/projections")["data"]}
    assert {n: (admin[n]["state"], admin[n]["stopped_at"], admin[n]["error"]) for n in STOPPED} == {
        n: ("stopped", planted, status[n]["error"]) for n in STOPPED
    }

    # the sweep releases the expired hold; balances and ledger entries went past the planted event
    wait_until(lambda: served.balance("acme")["held"] == 0, "the sweep to release the expired hold")
    before = cli(served.env, "balance", "acme")
    assert before["held"] == 0 and before["available"] == before["balance"]

    # a new request is served and charged exactly its usage
    second = chat(served, api_key)
    assert second.status_code == 200
    charged = served.admin_json("GET", f"/requests/{second.headers['x-request-id']}")
    usage = charged["usage"]
    assert charged["charge"] == sum(usage[field] * rate for field, rate in NANO_PER_TOKEN.items()) > 0
    after = cli(served.env, "balance", "acme")
    assert after["balance"] == before["balance"] - charged["charge"]
    status = status_of(served)
    head = status["balances"]["max_notification_id"]
    assert {n: (status[n]["state"], status[n]["position"]) for n in RUNNING} == {n: ("running", head) for n in RUNNING}
    assert {n: status[n]["position"] for n in STOPPED} == {n: planted - 1 for n in STOPPED}

    # reads: the account answers; the stopped read models say so in OpenAI's shape
    headers = {"authorization": f"Bearer {api_key}"}
    me = httpx.get(f"{served.url}/v1/me", headers=headers, timeout=30)
    assert me.status_code == 200 and me.json()["balance"]["balance"] == after["balance"]
    for path in ("/v1/me/usage", "/v1/me/requests"):
        refused = httpx.get(f"{served.url}{path}", headers=headers, timeout=30)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("server_error", "projection_stopped", None)
        assert f"stopped at event {planted}" in error["message"]
    assert served.admin("GET", "/usage").status_code == 503
    out = Path(served.env["TALLYHUB_DATA_DIR"]) / "usage.csv"
    export = subprocess.run(
        [*TALLYHUB, "export", "usage", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=served.env,
        cwd=REPO,
        timeout=120,
    )
    assert export.returncode == 1 and not out.exists()
    assert json.loads(export.stdout)["error"]["code"] == "projection_stopped"
    assert json.loads(export.stdout)["error"]["type"] == "server_error"

    # verify runs and names them; a rebuild that still cannot apply the event says so
    verify = subprocess.run(
        [*TALLYHUB, "verify", "--json"], capture_output=True, text=True, env=served.env, cwd=REPO, timeout=120
    )
    assert verify.returncode == 1, verify.stderr
    named = [p for p in json.loads(verify.stdout)["problems"] if p.startswith("read model ")]
    assert sorted(p.split(":")[0] for p in named) == sorted(f"read model {n}" for n in STOPPED)
    rebuild = subprocess.run(
        [*TALLYHUB, "projections", "rebuild", "usage", "--json"],
        capture_output=True,
        text=True,
        env=served.env,
        cwd=REPO,
        timeout=120,
    )
    assert rebuild.returncode == 1
    assert status_of(served)["usage"]["stopped_at"] == planted
    # the rebuild says it itself; the serve's projector leaves the stopped read model to it meanwhile
    assert f"projection usage tried event {planted} again and still cannot apply it" in rebuild.stderr
    assert served.logs().count(f"stopped at event {planted}") == len(STOPPED)  # said once each, then quiet
    assert "tried event" not in served.logs()
