"""``GET /metrics`` and the access log of a real ``serve --workers 2`` (PostgreSQL): after a
load of plain and streamed requests, some refused for credit (402), every worker's scrape
shows the same totals, summed over both workers (prometheus-client's multiprocess mode),
and they equal the request log; the metrics token guards the page; the access log has one
JSON line per recorded request, with ids and figures and no key or account name."""

import json
import stat
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, Served, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, Gateway, _wait_until_listening, cli, free_port

METRICS_TOKEN = "metrics-token-for-e2e-0123456789"
PLAIN, STREAMED, REFUSED = 14, 8, 5


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas) -> Iterator[tuple[Gateway, Path, str]]:
    """A two-worker gateway after the load; (gateway, log text, the refused account's key)."""
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    data_dir: Path = tmp_path_factory.mktemp("metrics")
    gateway = Gateway.initialised(data_dir, pg_schemas.new_url(), TALLYHUB_METRICS_TOKEN=METRICS_TOKEN)
    key = configure(gateway, upstream, "acme", "100")
    cli(gateway.env, "accounts", "create", "pauper")
    pauper_key: str = cli(gateway.env, "keys", "issue", "pauper", "--name", "e2e")["key"]
    port = free_port()
    log_path = data_dir / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*TALLYHUB, "serve", "--port", str(port), "--workers", "2"],
            env=gateway.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway.processes.append(process)
    gateway.port = port
    try:
        _wait_until_listening(port, process, log_path)
        calls = [(key, False)] * PLAIN + [(key, True)] * STREAMED + [(pauper_key, False)] * REFUSED
        with ThreadPoolExecutor(8) as pool:  # concurrent, so both workers take some
            statuses = list(pool.map(lambda call: chat(gateway.url, *call), calls))
        assert Counter(statuses) == {200: PLAIN + STREAMED, 402: REFUSED}
        assert chat(gateway.url, "sk-not-a-key", False) == 401  # answered at the edge, never recorded
        unreadable = httpx.post(
            f"{gateway.url}/v1/chat/completions", content=b"{", headers={"authorization": f"Bearer {key}"}, timeout=30
        )
        assert unreadable.status_code == 400
        yield gateway, log_path, pauper_key
    finally:
        gateway.stop()
        upstream.stop()


def chat(url: str, key: str, stream: bool) -> int:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as response:
        response.read()
        return response.status_code


def scrape(gateway: Gateway) -> dict[str, list[Any]]:
    response = httpx.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def total(samples: list[Any], suffix: str = "_total", **labels: str) -> float:
    return float(
        sum(
            s.value for s in samples if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items())
        )
    )


def request_log(gateway: Gateway) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = gateway.admin_json("GET", "/requests?limit=1000")["data"]
    return rows


def test_the_metrics_page_needs_its_token_when_one_is_set(loaded: tuple[Gateway, Path, str]) -> None:
    gateway, _, pauper_key = loaded
    assert httpx.get(f"{gateway.url}/metrics", timeout=30).status_code == 401
    wrong = {"authorization": f"Bearer {pauper_key}"}  # an API key is not the metrics token
    assert httpx.get(f"{gateway.url}/metrics", headers=wrong, timeout=30).status_code == 401


def test_every_workers_scrape_sums_both_workers_and_equals_the_request_log(loaded: tuple[Gateway, Path, str]) -> None:
    gateway, _, _ = loaded
    rows = request_log(gateway)
    assert len(rows) == PLAIN + STREAMED + REFUSED
    charged = sum(row["charge"] for row in rows)
    output_tokens = sum(row["output_tokens"] for row in rows)
    assert charged > 0
    metrics_root = Path(gateway.env["TALLYHUB_DATA_DIR"]) / "prometheus"
    counter_files = list(metrics_root.glob("*/counter_*.db"))
    assert counter_files  # multiprocess mode: each worker counts in files of its own, summed at scrape
    # serve's umask 077: the directories and files are the owner's alone (prometheus-client
    # creates its files with the umask's mode)
    assert {stat.S_IMODE(path.stat().st_mode) for path in [metrics_root, *metrics_root.iterdir()]} == {0o700}
    assert {stat.S_IMODE(path.stat().st_mode) for path in counter_files} == {0o600}
    for _ in range(6):  # a scrape is answered by either worker: each answers the sum of both
        families = scrape(gateway)
        requests = families["tallyhub_requests"]
        assert total(requests, status="200", route="chat.completions", model=MODEL) == PLAIN + STREAMED
        assert total(requests, status="402", code="insufficient_credits") == REFUSED
        assert total(families["tallyhub_refusals"], code="insufficient_credits") == REFUSED
        assert total(families["tallyhub_charged_nanocredits"], provider="openai", model=MODEL) == charged
        assert total(families["tallyhub_tokens"], kind="output") == output_tokens
        latency = families["tallyhub_request_latency_seconds"]
        assert total(latency, "_count") == PLAIN + STREAMED + REFUSED
        assert total(families["tallyhub_upstream_ttfb_seconds"], "_count") == PLAIN + STREAMED
        # a stream's hold and settlement; a plain request's hold rides with its settlement (application/billing.py)
        assert total(families["tallyhub_group_commit_batch_size"], "_sum") >= PLAIN + 2 * STREAMED
        lags = {s.labels["projection"] for s in families["tallyhub_projection_lag_events"]}
        assert lags >= {"balances", "request_log", "usage"}  # one sample per projection
        assert [s.value for s in families["tallyhub_credentials_disabled"]] == [0]


def test_no_label_names_an_account_or_a_key(loaded: tuple[Gateway, Path, str]) -> None:
    gateway, _, pauper_key = loaded
    response = httpx.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    for secret in ("acme", "pauper", pauper_key, UPSTREAM_KEY, METRICS_TOKEN):
        assert secret not in response.text


def test_the_access_log_has_one_json_line_per_recorded_request(loaded: tuple[Gateway, Path, str]) -> None:
    gateway, log_path, pauper_key = loaded
    rows = {row["request_id"]: row for row in request_log(gateway)}
    text = log_path.read_text()
    every = [json.loads(line) for line in text.splitlines() if line.startswith('{"time"')]
    lines = [line for line in every if line.get("recorded", True)]
    edge = [line for line in every if not line.get("recorded", True)]  # also the start-up probes of /v1/models
    chats = [line for line in edge if line["route"] == "chat.completions"]
    assert sorted(line["status"] for line in chats) == [400, 401]  # the requests answered without a record
    assert not set(rows) & {e["request_id"] for e in edge}
    assert all(e["key_id"] is None and e["account_id"] is None for e in edge)
    assert sorted(line["request_id"] for line in lines) == sorted(rows)  # one each, no more
    for line in lines:
        row = rows[line["request_id"]]
        assert (line["status"], line["charge_nanocredits"], line["output_tokens"]) == (
            row["status"],
            row["charge"],
            row["output_tokens"],
        )
        assert line["key_id"] == row["api_key_id"] and line["account_id"] == row["account_id"]
        assert line["route"] == "chat.completions" and line["model"] == MODEL and line["provider"] == "openai"
    refused = [line for line in lines if line["status"] == 402]
    assert len(refused) == REFUSED and {line["error_code"] for line in refused} == {"insufficient_credits"}
    for secret in ("acme", "pauper", pauper_key, UPSTREAM_KEY, METRICS_TOKEN, '"content"'):
        assert secret not in "\n".join(line for line in text.splitlines() if line.startswith('{"time"'))


def requests_counted(gateway: Gateway) -> float:
    page = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "tallyhub_requests_total"
    )


def test_a_single_worker_serve_counts_its_requests_on_the_metrics_page(served: Served) -> None:
    # with one worker the app runs in the process that ran ``serve``: prometheus-client must
    # not have been imported there before serve set its multiprocess directory, or the
    # counters stay in memory while /metrics reads the (empty) files
    before = requests_counted(served.gateway)
    answer = httpx.post(
        f"{served.gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {served.api_key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "count me"}]},
        timeout=30,
    )
    assert answer.status_code == 200
    assert requests_counted(served.gateway) == before + 1
