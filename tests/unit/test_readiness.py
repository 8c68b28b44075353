"""application/readiness.py: each check over fakes of its ports, the report's JSON shape, no
secret in an answer, and a check that hangs fails on time and is not started again while it
still runs (a hung database holds one thread, however often the load balancer asks)."""

import asyncio
import threading
from dataclasses import dataclass, field

import orjson
import pytest

from application.readiness import (
    Check,
    CheckResult,
    Readiness,
    account_writer_check,
    describe,
    master_key_check,
    read_models_check,
    running_check,
    store_check,
)

SECRET_DSN = "postgresql://tallyhub:hunter2-secret@db.internal:5432/ledger"


class FakeStore:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def max_notification_id(self) -> int | None:
        if self.error is not None:
            raise self.error
        return 42


@dataclass
class FakeDeployment:
    deployment_loaded: bool


@dataclass
class FakeRunning:
    running: bool


@dataclass
class FakeLedger:
    writer: FakeRunning | None


@dataclass(frozen=True)
class Status:
    name: str
    lag: int
    state: str = "running"
    stopped_at: int | None = None


@dataclass
class FakeProjections:
    statuses: list[Status] = field(default_factory=list)
    running: bool = True

    def status(self) -> list[Status]:
        return self.statuses


def evaluate(*checks: Check) -> dict[str, object]:
    return asyncio.run(Readiness(checks).evaluate()).to_dict()


def test_every_check_passing_is_ready_in_the_documented_shape() -> None:
    projections = FakeProjections([Status("balances", 0), Status("usage", 3)])
    answer = evaluate(
        store_check(FakeStore()),
        master_key_check(FakeDeployment(True)),
        account_writer_check(FakeLedger(FakeRunning(True))),
        read_models_check(projections, max_lag_events=10),
    )
    assert answer == {
        "status": "ok",
        "checks": {
            "store": {"ok": True},
            "master_key": {"ok": True},
            "account_writer": {"ok": True},
            "read_models": {"ok": True, "max_lag_events": 10, "lag": {"balances": 0, "usage": 3}},
        },
    }


def test_an_unreachable_store_fails_with_the_exception_class_and_nothing_of_its_message() -> None:
    error = ConnectionRefusedError(f"connection to {SECRET_DSN} failed: password=hunter2-secret")
    answer = evaluate(store_check(FakeStore(error)), master_key_check(FakeDeployment(True)))
    assert answer["status"] == "unavailable"
    assert answer["checks"] == {
        "store": {"ok": False, "error": "the event store cannot be queried (ConnectionRefusedError)"},
        "master_key": {"ok": True},
    }
    assert b"hunter2" not in orjson.dumps(answer) and b"db.internal" not in orjson.dumps(answer)


def test_the_master_key_and_the_account_writer_fail_when_not_opened_or_not_running() -> None:
    answer = evaluate(
        master_key_check(FakeDeployment(False)),
        account_writer_check(FakeLedger(None)),
    )
    assert answer == {
        "status": "unavailable",
        "checks": {
            "master_key": {"ok": False, "error": "the deployment is not opened with the master key"},
            "account_writer": {"ok": False, "error": "the account writer (group commit) is not running"},
        },
    }
    stopped_writer = evaluate(account_writer_check(FakeLedger(FakeRunning(False))))
    assert stopped_writer["status"] == "unavailable"


def test_a_stopped_projection_is_not_ready_even_with_no_lag() -> None:
    projections = FakeProjections([Status("balances", 0), Status("usage", 0, "stopped", stopped_at=17)])
    check = evaluate(read_models_check(projections, max_lag_events=10))["checks"]["read_models"]  # type: ignore[index]
    assert check["ok"] is False and check["error"] == "stopped projection(s): usage at event 17"


def test_a_projection_further_behind_than_the_bound_is_not_ready_and_at_the_bound_is() -> None:
    at_bound = FakeProjections([Status("balances", 10), Status("usage", 0)])
    assert evaluate(read_models_check(at_bound, max_lag_events=10))["status"] == "ok"
    behind = FakeProjections([Status("balances", 11), Status("usage", 0)])
    check = evaluate(read_models_check(behind, max_lag_events=10))["checks"]["read_models"]  # type: ignore[index]
    assert check == {
        "ok": False,
        "error": "lagging more than 10 events: balances",
        "max_lag_events": 10,
        "lag": {"balances": 11, "usage": 0},
    }


def test_a_runner_that_does_not_poll_is_not_ready() -> None:
    projections = FakeProjections([Status("balances", 0)], running=False)
    check = evaluate(read_models_check(projections, max_lag_events=10))["checks"]["read_models"]  # type: ignore[index]
    assert check["error"] == "the projection runner is not running"


def test_running_check_names_the_part() -> None:
    assert evaluate(running_check("sweeps", FakeRunning(False), "the sweeps thread"))["checks"] == {
        "sweeps": {"ok": False, "error": "the sweeps thread is not running"}
    }


@pytest.mark.parametrize("blocking", [True, False])
def test_a_check_that_raises_anything_is_a_failure_not_an_error(blocking: bool) -> None:
    def broken() -> CheckResult:
        raise RuntimeError("boom with password=s3cret")

    answer = evaluate(Check("thing", broken, "the thing cannot be read", blocking=blocking))
    assert answer["checks"] == {"thing": {"ok": False, "error": "the thing cannot be read (RuntimeError)"}}


class HangingStore:
    """A store whose query waits until released; counts the queries started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def max_notification_id(self) -> int | None:
        self.started += 1
        self.release.wait()
        return 1


@pytest.mark.parametrize("mode", ["async", "blocking"])
def test_a_hung_check_fails_on_time_is_not_started_twice_and_passes_once_it_answers(mode: str) -> None:
    store = HangingStore()
    readiness = Readiness([store_check(store), master_key_check(FakeDeployment(True))], timeout_seconds=0.05)

    def run() -> dict[str, object]:
        report = asyncio.run(readiness.evaluate()) if mode == "async" else readiness.evaluate_blocking()
        return report.to_dict()

    for _ in range(3):
        answer = run()
        assert answer["checks"] == {
            "store": {"ok": False, "error": "the event store cannot be queried: no answer within 0.05 s"},
            "master_key": {"ok": True},
        }
    assert store.started == 1
    store.release.set()
    readiness.timeout_seconds = 30  # the released query answers; nothing here waits for a clock
    assert run()["status"] == "ok"


def test_describe_keeps_the_class_and_first_line_without_passwords() -> None:
    text = describe(RuntimeError(f"cannot reach {SECRET_DSN} (password=hunter2-secret)\nsecond line"))
    assert text.startswith("RuntimeError: cannot reach postgresql://tallyhub:***@db.internal")
    assert "hunter2" not in text and "second line" not in text


def test_the_worker_health_server_answers_health_ready_head_and_404() -> None:
    import httpx

    from adapters.workers.health_server import HealthServer

    server = HealthServer("127.0.0.1", 0, Readiness([account_writer_check(FakeLedger(None))])).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503 and ready.headers["cache-control"] == "no-store"
        assert ready.json()["checks"]["account_writer"]["ok"] is False
        head = httpx.head(f"{base}/ready")
        assert head.status_code == 503 and head.content == b""
        assert httpx.get(f"{base}/metrics").status_code == 404  # no metrics given: no such route
    finally:
        server.close()


def test_the_worker_health_server_serves_metrics_behind_the_metrics_token() -> None:
    import httpx

    from adapters.workers.health_server import HealthServer

    page = b"# HELP tallyhub_projection_lag_events lag\n"
    readiness = Readiness([account_writer_check(FakeLedger(None))])
    server = HealthServer("127.0.0.1", 0, readiness, metrics=lambda: page, metrics_token="s3cret-token").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret-token"}):
            refused = httpx.get(f"{base}/metrics", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
            assert "s3cret" not in refused.text
        allowed = httpx.get(f"{base}/metrics", headers={"authorization": "Bearer s3cret-token"})
        assert allowed.status_code == 200 and allowed.content == page
        assert allowed.headers["content-type"].startswith("text/plain; version=0.0.4")
    finally:
        server.close()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_worker_refuses_a_health_port_that_is_not_a_port_before_touching_the_store(
    port: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.cli.main import main

    monkeypatch.setenv("TALLYHUB_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TALLYHUB_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["worker", "--health-port", port, "--json"]) == 1
    error = orjson.loads(capsys.readouterr().out)["error"]
    assert error["message"] == "--health-port must be a port number (1 to 65535)"
