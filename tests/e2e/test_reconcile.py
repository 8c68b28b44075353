"""Reconciliation end to end, on SQLite and on PostgreSQL: real requests through ``serve``
(a plain one, one whose usage the provider did not report, a failover to another
credential, a failover to an alias's fallback model, and one where every attempt failed),
then ``tallyhub reconcile --json`` and ``GET /admin/v1/reconciliation`` say the same thing,
and that thing is exactly what the ledger's own receipts and the price file's rates say:
charged, provider cost, margin, the estimated charges, failed attempts and failovers."""

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import PgSchemas
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import TALLYHUB, Gateway, cli

KEY_A, KEY_B = "sk-recon-primary-a-0000aaaa", "sk-recon-primary-b-0000bbbb"
KEY_SOLO, KEY_PAIR_1, KEY_PAIR_2 = "sk-recon-solo-00000000dddd", "sk-recon-pair-1-0000eeee", "sk-recon-pair-2-0000ffff"
KEY_BACKUP = "sk-recon-backup-0000cccc"
SECRETS = (KEY_A, KEY_B, KEY_SOLO, KEY_PAIR_1, KEY_PAIR_2, KEY_BACKUP)
MESSAGES = [{"role": "user", "content": "Reconcile this."}]
# nanocredits per token: (sell input, sell output), and what the provider charges (None: no cost rates)
SELL = {
    "primary/gpt-4o": (10_000, 30_000),
    "solo/gpt-4o": (10_000, 30_000),
    "pair/gpt-4o": (10_000, 30_000),
    "backup/gpt-4o-mini": (1_000, 2_000),
}
PROVIDER_COST = {
    "primary/gpt-4o": (4_000, 12_000),
    "solo/gpt-4o": (5_000, 15_000),
    "pair/gpt-4o": (4_000, 12_000),
    "backup/gpt-4o-mini": None,
}
COUNTED = (
    "requests",
    "completed",
    "failed",
    "charged",
    "cost",
    "provider_cost",
    "provider_cost_unknown",
    "estimated",
    "estimated_charged",
    "failed_attempts",
    "failovers",
)


def price_file() -> dict[str, Any]:
    def rates(pair: tuple[int, int]) -> dict[str, str]:
        return {"input": str(pair[0] // 1_000), "output": str(pair[1] // 1_000)}  # credits per 1M tokens

    models: dict[str, Any] = {}
    for model, sell in SELL.items():
        cost = PROVIDER_COST[model]
        models[model] = {**rates(sell), **({"provider_cost": rates(cost)} if cost else {})}
    return {"models": models}


@dataclass
class History:
    gateway: Gateway
    request_ids: dict[str, str]  # scenario -> request id
    started: datetime


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas
) -> Iterator[History]:
    primary = FakeOpenAIUpstream(api_key=KEY_A, also_accept=(KEY_B,)).start()
    shared = FakeOpenAIUpstream(api_key=KEY_SOLO, also_accept=(KEY_PAIR_1, KEY_PAIR_2)).start()  # solo and pair
    backup = FakeOpenAIUpstream(api_key=KEY_BACKUP).start()
    data_dir: Path = tmp_path_factory.mktemp(f"reconcile-{request.param}")
    gateway = Gateway.initialised(data_dir, pg_schemas.new_url() if request.param == "postgres" else None)
    try:
        env = gateway.env
        for name, upstream, keys in (
            ("primary", primary, (KEY_A, KEY_B)),
            ("solo", shared, (KEY_SOLO,)),
            ("pair", shared, (KEY_PAIR_1, KEY_PAIR_2)),
            ("backup", backup, (KEY_BACKUP,)),
        ):
            cli(
                env,
                "providers",
                "add",
                name,
                "--kind",
                "openai-compatible",
                "--base-url",
                upstream.base_url,
                "--api-key-stdin",
                stdin=keys[0],
            )
            for key in keys[1:]:
                cli(env, "providers", "add-credential", name, "--api-key-stdin", stdin=key)
        prices = data_dir / "prices.json"
        prices.write_text(json.dumps(price_file()))
        cli(env, "prices", "publish", str(prices))
        cli(env, "aliases", "set", "smart", "solo/gpt-4o", "--fallback", "backup/gpt-4o-mini")
        cli(env, "accounts", "create", "acme", "--starter-credits", "100")
        key = cli(env, "keys", "issue", "acme")["key"]
        gateway.start()
        started = datetime.now(UTC)
        yield History(gateway, drive(gateway, key, primary, shared), started)
    finally:
        gateway.stop()
        for upstream in (primary, shared, backup):
            upstream.stop()


def drive(gateway: Gateway, key: str, primary: FakeOpenAIUpstream, shared: FakeOpenAIUpstream) -> dict[str, str]:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    ids: dict[str, str] = {}

    def chat(scenario: str, model: str) -> httpx.Headers:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        ids[scenario] = raw.headers["x-request-id"]
        usage, (sell_in, sell_out) = raw.parse().usage, SELL[model]
        if usage is not None:  # the provider reported it; the gateway charged exactly that
            charge = usage.prompt_tokens * sell_in + usage.completion_tokens * sell_out
            assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge
        return raw.headers

    chat("plain", "primary/gpt-4o")
    primary.script(Scripted.no_usage())
    assert chat("estimated", "primary/gpt-4o")["x-tallyhub-usage-source"] == "estimated"
    primary.script(Scripted.error(500, "boom"))
    chat("other_credential", "primary/gpt-4o")
    shared.script(Scripted.error(502, "bad gateway"))
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=MESSAGES)
    ids["fallback_model"] = raw.headers["x-request-id"]
    shared.script(Scripted.error(500, "down"), Scripted.error(500, "still down"))
    failed = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "pair/gpt-4o", "messages": MESSAGES},
        timeout=30,
    )
    assert failed.status_code == 502
    ids["every_attempt_failed"] = failed.headers["x-request-id"]
    return ids


def expected_report(receipts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The report's rows and estimated charges, built from the ledger's receipts and the price file's rates."""
    rows: dict[tuple[str, str, str, str], dict[str, int]] = {}

    def row(day: str, provider: str, credential: str | None, model: str) -> dict[str, int]:
        return rows.setdefault((day, provider, credential or "", model), dict.fromkeys(COUNTED, 0))

    estimated = []
    for r in receipts:
        day = datetime.fromisoformat(r["recorded_at"]).astimezone(UTC).date().isoformat()
        counts = row(day, r["provider"], r["credential_id"], r["model"])
        completed = r["outcome"] == "completed"
        counts["requests"] += 1
        counts["completed" if completed else "failed"] += 1
        counts["charged"] += r["charge"]
        counts["cost"] += r["cost"]
        if completed:
            rates = PROVIDER_COST[r["model"]]
            usage = r["usage"]
            if rates is None:
                counts["provider_cost_unknown"] += 1
                assert r["provider_cost"] is None
            else:
                cost = usage["input_tokens"] * rates[0] + usage["output_tokens"] * rates[1]
                assert r["provider_cost"] == cost
                counts["provider_cost"] += cost
            if usage["source"] == "estimated":
                counts["estimated"] += 1
                counts["estimated_charged"] += r["charge"]
                estimated.append({"request_id": r["id"], "charge": r["charge"], "model": r["model"]})
            counts["failovers"] += int(bool(r["attempts"]))
        for attempt in r["attempts"]:
            row(day, attempt["provider"], attempt["credential_id"], attempt["model"])["failed_attempts"] += 1
    shown = [
        {
            "day": day,
            "provider": provider,
            "credential_id": credential or None,
            "model": model,
            **counts,
            "margin": counts["charged"] - counts["provider_cost"],
        }
        for (day, provider, credential, model), counts in sorted(rows.items())
    ]
    return shown, estimated


def window(history: History) -> dict[str, str]:
    since = history.started.replace(minute=0, second=0, microsecond=0)
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return {"from": since.isoformat(), "to": until.isoformat()}


def test_the_report_is_exactly_what_the_receipts_and_the_price_file_say(history: History) -> None:
    gateway = history.gateway
    bounds = window(history)
    report = cli(gateway.env, "reconcile", "--from", bounds["from"], "--to", bounds["to"])
    assert report == gateway.admin_json("GET", "/reconciliation", params=bounds)

    receipts = [gateway.admin_json("GET", f"/requests/{request_id}") for request_id in history.request_ids.values()]
    rows, estimated = expected_report(receipts)
    assert [
        {name: r[name] for name in ("day", "provider", "credential_id", "model", *COUNTED, "margin")}
        for r in report["rows"]
    ] == rows
    totals = report["totals"]
    for name in (*COUNTED, "margin"):
        assert totals[name] == sum(r[name] for r in rows), name
    assert (totals["requests"], totals["failed"], totals["failed_attempts"], totals["failovers"]) == (5, 1, 3, 2)
    assert totals["estimated"] == 1 and totals["provider_cost_unknown"] == 1  # the backup model has no cost rates
    assert totals["margin_credits"] == f"{totals['margin'] // 10**9}.{totals['margin'] % 10**9:09d}"
    assert report["estimated"]["count"] == 1 and report["estimated"]["charged"] == estimated[0]["charge"] > 0
    [charge] = report["estimated"]["charges"]
    assert (charge["request_id"], charge["charge"], charge["model"], charge["account"]) == (
        estimated[0]["request_id"],
        estimated[0]["charge"],
        "primary/gpt-4o",
        "acme",
    )

    failover = next(r for r in receipts if r["id"] == history.request_ids["other_credential"])
    [tried] = failover["attempts"]
    assert tried["provider"] == "primary" and tried["credential_id"] != failover["credential_id"]
    fallback = next(r for r in receipts if r["id"] == history.request_ids["fallback_model"])
    assert fallback["model"] == "backup/gpt-4o-mini" and [a["model"] for a in fallback["attempts"]] == ["solo/gpt-4o"]
    assert not any(secret in json.dumps(report) for secret in SECRETS)


def test_the_window_selects_whole_hours_and_a_bad_one_is_refused(history: History) -> None:
    gateway = history.gateway
    before = history.started.replace(minute=0, second=0, microsecond=0)
    empty = cli(gateway.env, "reconcile", "--to", before.isoformat())
    assert (empty["rows"], empty["totals"]["requests"], empty["estimated"]["count"]) == ([], 0, 0)
    assert cli(gateway.env, "reconcile")["totals"]["requests"] == 5

    inverted = cli(gateway.env, "reconcile", "--from", "2030-01-02T00:00:00Z", "--to", "2030-01-01", check=False)
    assert inverted["error"]["code"] == "invalid_request" and "after its end" in inverted["error"]["message"]
    odd = cli(gateway.env, "reconcile", "--from", "2030-01-01T10:30:00Z", check=False)
    assert odd["error"]["code"] == "invalid_request" and "whole UTC hour" in odd["error"]["message"]
    refused = gateway.admin("GET", "/reconciliation", params={"from": "2030-01-01T10:30:00Z"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "from"
    assert httpx.get(gateway.url + "/admin/v1/reconciliation", timeout=10).status_code == 401


def test_the_human_report_lists_each_credential_and_the_estimated_charge(history: History) -> None:
    done = subprocess.run([*TALLYHUB, "reconcile"], env=history.gateway.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "reconciliation, the beginning to now"
    assert [line.split()[1] for line in lines[2:8]] == ["backup", "pair", "pair", "primary", "primary", "solo"]
    assert lines[8].split()[:2] == ["total", "5"]
    assert "failed attempts: 3, failovers: 2" in lines
    assert history.request_ids["estimated"] in lines[-2]
    assert lines[-1].startswith("charges on clamped usage") and lines[-1].endswith(": 0, 0.000000000 credits")
