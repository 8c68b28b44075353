"""adapters/metrics.py, adapters/access_log.py, adapters/observers.py and GET /metrics in
process: the settings that drive them, the page open without a token and closed with one,
the access log switched off, one failing observer or gauge source leaving the others."""

import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from adapters.access_log import LOGGER, JsonAccessLog, access_line
from adapters.bootstrap import build_observers, build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.metrics import GatewayMetrics
from adapters.metrics_dir import MULTIPROC_ENV, multiproc_dir, prepare_multiproc_dir
from adapters.observers import FanOutObserver
from adapters.settings import Settings, SettingsError
from application.accounts import Accounts
from application.group_commit import AccountWriter
from application.ledger import Ledger
from application.providers import ProviderRegistry
from domain.provider import Provider
from domain.request_record import RequestDetails
from domain.usage import Usage
from tests.fakes.clock import FakeClock

TOKEN = "a-metrics-token-of-32-characters"


def details(**changes: object) -> RequestDetails:
    base = RequestDetails(
        outcome="completed",
        account_id=uuid4().hex,
        api_key_id=uuid4().hex,
        requested_model="fast",
        model="openai/gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini",
        credential_id="c1",
        endpoint="chat.completions",
        stream=True,
        status=200,
        error_code=None,
        usage=Usage(input_tokens=120, cached_input_tokens=20, output_tokens=30, reasoning_tokens=10),
        charge=480_000,
        cost=480_000,
        uncollected=0,
        hold=10**6,
        price_book_version=1,
        priced=True,
        latency_ms=12.5,
        ttfb_ms=10.0,
        started_at="2026-12-06T00:00:00+00:00",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return float(
        sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TALLYHUB_ACCESS_LOG": "text"}, "TALLYHUB_ACCESS_LOG must be 'json' or 'off'"),
        ({"TALLYHUB_METRICS_TOKEN": "short"}, "TALLYHUB_METRICS_TOKEN must be at least 16"),
        ({"TALLYHUB_METRICS_TOKEN": "a token with spaces in it"}, "TALLYHUB_METRICS_TOKEN"),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_default_to_a_json_access_log_and_an_open_metrics_page() -> None:
    settings = Settings.from_env({})
    assert (settings.access_log, settings.metrics_token) == ("json", None)
    assert Settings.from_env({"TALLYHUB_ACCESS_LOG": "OFF"}).access_log == "off"
    assert TOKEN not in repr(Settings.from_env({"TALLYHUB_METRICS_TOKEN": TOKEN}))


def test_a_recorded_request_is_counted_by_its_labels_and_kinds() -> None:
    metrics = GatewayMetrics()
    metrics.recorded(uuid4(), details(), 2)
    metrics.recorded(uuid4(), details(), 0)
    refused = details(
        outcome="failed", status=402, error_code="insufficient_credits", usage=None, charge=0, ttfb_ms=None
    )
    metrics.recorded(uuid4(), refused, 0)
    found = families(metrics.exposition().decode())
    requests = found["tallyhub_requests"]
    assert value(requests, "tallyhub_requests_total", status="200", code="", route="chat.completions") == 2
    assert value(requests, "tallyhub_requests_total", status="402", code="insufficient_credits") == 1
    tokens = found["tallyhub_tokens"]
    assert [value(tokens, "tallyhub_tokens_total", kind=k) for k in ("input", "cached", "output", "reasoning")] == [
        240,
        40,
        60,
        20,
    ]
    assert value(found["tallyhub_charged_nanocredits"], "tallyhub_charged_nanocredits_total") == 960_000
    assert value(found["tallyhub_failovers"], "tallyhub_failovers_total", route="chat.completions") == 2
    assert value(found["tallyhub_refusals"], "tallyhub_refusals_total", code="insufficient_credits") == 1
    assert value(found["tallyhub_upstream_ttfb_seconds"], "tallyhub_upstream_ttfb_seconds_count") == 2
    assert value(found["tallyhub_request_latency_seconds"], "tallyhub_request_latency_seconds_count") == 3


def test_an_access_line_holds_ids_and_figures_only() -> None:
    request_id = uuid4()
    d = details()
    line = json.loads(access_line(request_id, d, 1))
    assert line["request_id"] == str(request_id)
    assert line["key_id"] == str(UUID(hex=d.api_key_id)) and line["account_id"] == str(UUID(hex=d.account_id))
    assert (line["charge_nanocredits"], line["charge_credits"]) == (480_000, "0.000480000")
    assert (line["input_tokens"], line["cached_input_tokens"], line["output_tokens"], line["reasoning_tokens"]) == (
        120,
        20,
        30,
        10,
    )
    assert (line["route"], line["model"], line["provider"], line["status"], line["failed_attempts"]) == (
        "chat.completions",
        "openai/gpt-4o-mini",
        "openai",
        200,
        1,
    )


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def test_the_access_log_is_off_when_the_setting_says_so(captured: io.StringIO) -> None:
    _, log, on = build_observers(Settings(access_log="json"))
    assert log is not None
    on.recorded(uuid4(), details(), 0)
    assert captured.getvalue().count('"request_id"') == 1
    _, none, off = build_observers(Settings(access_log="off"))
    assert none is None
    off.recorded(uuid4(), details(), 0)
    assert captured.getvalue().count('"request_id"') == 1


class Broken:
    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        raise RuntimeError("broken")


def test_one_failing_observer_leaves_the_others_told(captured: io.StringIO) -> None:
    metrics = GatewayMetrics()
    fan = FanOutObserver([Broken(), metrics, JsonAccessLog(logging.getLogger(LOGGER))])
    fan.recorded(uuid4(), details(), 0)
    assert fan.errors == 1
    assert value(families(metrics.exposition().decode())["tallyhub_requests"], "tallyhub_requests_total") == 1
    assert '"request_id"' in captured.getvalue()


def test_a_failing_batch_hook_is_dropped_and_the_writer_goes_on() -> None:
    writer = AccountWriter(lambda _: None, lambda *_: None, lambda *_: True)
    seen: list[int] = []

    def hook(size: int, seconds: float) -> None:
        seen.append(size)
        raise RuntimeError("broken")

    writer.on_batch = hook
    writer._tell(3, 0.001)  # raises inside: logged, not raised into the writer's loop
    assert seen == [3] and writer.on_batch is None  # the loop calls it no more


@pytest.fixture
def ledger_with_provider() -> Iterator[Ledger]:
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-metrics-0001")
    Accounts(ledger).create_account("acme", starter_credits=10**9)
    yield ledger
    ledger.close()


def test_the_metrics_page_is_open_without_a_token_and_reads_gauges_at_scrape(ledger_with_provider: Ledger) -> None:
    services = build_services(Settings(), ledger=ledger_with_provider)
    client = TestClient(create_app(services, run_projections=False))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    assert value(found["tallyhub_credentials_disabled"], "tallyhub_credentials_disabled", provider="openai") == 0
    assert value(found["tallyhub_credentials_cooling"], "tallyhub_credentials_cooling", provider="openai") == 0
    assert "tallyhub_open_holds_nanocredits" in found and "tallyhub_projection_lag_events" in found
    assert "acme" not in response.text


def test_a_failing_gauge_source_leaves_the_rest_of_the_page(ledger_with_provider: Ledger) -> None:
    services = build_services(Settings(), ledger=ledger_with_provider)

    def broken() -> list[Provider]:
        raise RuntimeError("the store is down")

    services.ledger.list_providers = broken  # type: ignore[method-assign]  # a store that fails
    response = TestClient(create_app(services, run_projections=False)).get("/metrics")
    assert response.status_code == 200
    found = families(response.text)
    assert "tallyhub_credentials_cooling" not in found and "tallyhub_projection_lag_events" in found


def test_the_metrics_page_wants_its_token_when_one_is_set(ledger_with_provider: Ledger) -> None:
    services = build_services(Settings(metrics_token=TOKEN), ledger=ledger_with_provider)
    client = TestClient(create_app(services, run_projections=False))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer not-the-token"}).status_code == 401
    assert client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_edge_writes_a_line_only_for_a_request_answered_without_a_record(captured: io.StringIO) -> None:
    log = JsonAccessLog(logging.getLogger(LOGGER))
    recorded, refused, served = uuid4(), uuid4(), uuid4()
    log.recorded(recorded, details(status=402, error_code="insufficient_credits", usage=None), 0)
    log.answered(recorded, "/v1/chat/completions", 402, 3.0)  # its record wrote its line
    log.answered(refused, "/v1/chat/completions", 401, 1.5)  # no record: the edge writes it
    log.answered(served, "/v1/chat/completions", 200, 9.0)  # recorded later (a stream whose caller left)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [str(recorded), str(refused)]
    assert lines[1] == {
        **lines[1],
        "route": "chat.completions",
        "status": 401,
        "recorded": False,
        "key_id": None,
        "account_id": None,
    }


def test_each_serve_gets_an_empty_multiprocess_dir_and_a_dead_ones_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")  # so the test leaves it as it found it
    root = tmp_path / "prometheus"
    mine, alive, dead = multiproc_dir(tmp_path), root / str(os.getppid()), root / "999999999"
    for directory in (mine, alive, dead):
        directory.mkdir(parents=True)
        (directory / "counter_1.db").write_bytes(b"old")
    assert prepare_multiproc_dir(tmp_path) == mine
    assert os.environ[MULTIPROC_ENV] == str(mine) and list(mine.iterdir()) == []
    assert (alive / "counter_1.db").exists()  # another serve's, still running
    assert not dead.exists()


def test_rate_limit_refusals_and_fail_open_admissions_are_counted() -> None:
    class Limiter:
        failed_open_total = 0

    class Watched:
        rate_limiter = Limiter()

    metrics = GatewayMetrics()
    metrics.watch(Watched())  # type: ignore[arg-type]  # only its rate_limiter is read here
    refused = details(outcome="failed", status=429, error_code="rate_limit_exceeded", usage=None, charge=0)
    metrics.recorded(uuid4(), refused, 0)
    Watched.rate_limiter.failed_open_total = 3  # Redis went away: three requests admitted without limits
    metrics.recorded(uuid4(), details(), 0)
    metrics.recorded(uuid4(), details(), 0)
    found = families(metrics.exposition().decode())
    assert value(found["tallyhub_refusals"], "tallyhub_refusals_total", code="rate_limit_exceeded") == 1
    assert value(found["tallyhub_rate_limit_failed_open"], "tallyhub_rate_limit_failed_open_total") == 3
