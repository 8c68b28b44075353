"""The read side around a stopped projection, on SQLite and on PostgreSQL, with the
services the gateway and the CLI use: reads of healthy read models answer, a read of the
stopped one says ``projection_stopped`` (never stale rows, never a hang), the hold and
grant sweeps still release and expire what is due — even while the balances read model
itself is stopped — and ``verify`` runs and names the stopped read model."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from adapters.bootstrap import build_services, initialise
from adapters.cli.audit_commands import run_verify
from adapters.http.errors import response_for
from adapters.queries import caught_up, read_balance
from adapters.services import Services
from adapters.settings import Settings
from adapters.workers.hold_sweeper import sweep
from application.accounts import Accounts
from domain.errors import ProjectionStopped
from domain.request_record import RequestRecord
from tests.conftest import PgSchemas
from tests.fakes.clock import FakeClock

NANO = 10**9


@pytest.fixture(params=["sqlite", "postgres"])
def services(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Iterator[Services]:
    url = pg_schemas.new_url() if request.param == "postgres" else None
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url, master_key=secrets.token_urlsafe(32), read_cache_seconds=0
    )
    initialise(settings)
    built = build_services(settings, clock=FakeClock())
    yield built
    built.close()


def plant(services: Services, *events: object) -> int:
    """Store events as they are, past the domain's checks; the position of the last."""
    recorder, mapper = services.ledger.recorder, services.ledger.mapper
    recorder.insert_events([mapper.to_stored_event(event) for event in events])  # type: ignore[arg-type]
    return recorder.max_notification_id()


def huge_grant(services: Services, account_id: UUID) -> int:
    account = services.ledger.get_account(account_id)
    account._credit_granted(amount=10**25, reason="planted", idempotency_key=None)
    return plant(services, *account.collect_events())


def huge_request(services: Services, account_id: UUID) -> int:
    usage = {
        "input_tokens": 1,
        "cached_input_tokens": 0,
        "output_tokens": 10**20,
        "reasoning_tokens": 0,
        "images": 0,
        "source": "provider",
    }
    record = RequestRecord._create(
        RequestRecord.Completed,
        id=uuid4(),
        details={
            "outcome": "completed",
            "account_id": account_id.hex,
            "api_key_id": None,
            "provider": "openai",
            "model": "openai/gpt-4o-mini",
            "upstream_model": "gpt-4o-mini",
            "endpoint": "chat.completions",
            "stream": False,
            "status": 200,
            "error_code": None,
            "usage": usage,
            "charge": 10**20,
            "cost": 10**20,
            "price_book_version": 1,
            "priced": False,
            "latency_ms": 1.0,
            "ttfb_ms": None,
            "credential_id": "c",
        },
    )
    return plant(services, *record.collect_events())


def place_hold(services: Services, account_id: UUID, amount: int, expires_in: timedelta) -> None:
    now = services.ledger.clock.now()
    services.ledger.change_account(
        account_id, lambda account: account.place_hold(uuid4(), amount, expires_at=now + expires_in) or []
    )


def test_with_balances_stopped_the_sweeps_still_release_and_expire_and_verify_names_it(services: Services) -> None:
    ledger = services.ledger
    alice, bob = Accounts(ledger).create_account("alice").id, Accounts(ledger).create_account("bob").id
    Accounts(ledger).grant_credits("alice", 10 * NANO)
    Accounts(ledger).grant_credits("bob", 10 * NANO)
    place_hold(services, alice, NANO, timedelta(minutes=1))  # before the stop: in the balances rows
    planted = huge_grant(services, alice)
    place_hold(services, bob, 2 * NANO, timedelta(minutes=1))  # after it: only the log names bob
    Accounts(ledger).grant_credits("bob", NANO, expires_at=ledger.clock.now() + timedelta(minutes=1))
    assert ledger.get_account("bob").held == 2 * NANO
    ledger.clock.advance(minutes=2)  # type: ignore[attr-defined]

    services.read_models.runner.catch_up()
    status = {s.name: s for s in services.read_models.runner.status()}
    assert {n for n, s in status.items() if s.state == "stopped"} == {"balances", "ledger_entries"}
    assert status["balances"].stopped_at == planted

    done = sweep(services)
    assert done == {"released": 2, "expired_grants": 1}
    assert (ledger.get_account("alice").held, ledger.get_account("bob").held) == (0, 0)
    assert ledger.get_account("bob").balance == 10 * NANO  # the expiring grant of 1 credit left it

    with pytest.raises(ProjectionStopped) as stopped:
        read_balance(services, "bob")
    response = response_for(stopped.value)
    assert response.status_code == 503
    assert b'"code":"projection_stopped"' in response.body and b'"type":"server_error"' in response.body
    assert caught_up(services, lambda: services.read_models.usage.list_usage()) == []  # healthy: answers

    report = run_verify(services, [])
    assert not report["ok"]
    assert [p for p in report["problems"] if p.startswith("read model ")] == [
        f"read model {name}: stopped at event {planted} (domain.account:Account.CreditGranted), which it could "
        f"not apply: {status[name].error}"
        for name in ("balances", "ledger_entries")
    ]


def test_with_request_read_models_stopped_balances_verify_and_sweeps_are_untouched(services: Services) -> None:
    ledger = services.ledger
    alice = Accounts(ledger).create_account("alice").id
    Accounts(ledger).grant_credits("alice", 10 * NANO)
    planted = huge_request(services, alice)
    place_hold(services, alice, NANO, timedelta(seconds=-1))

    assert sweep(services) == {"released": 1, "expired_grants": 0}
    balance = read_balance(services, "alice")
    assert (balance["balance"], balance["held"], balance["available"]) == (10 * NANO, 0, 10 * NANO)
    with pytest.raises(ProjectionStopped) as stopped:
        caught_up(services, lambda: services.read_models.requests.list_requests())
    assert (stopped.value.projection, stopped.value.position) == ("request_log", planted)
    problems = run_verify(services, [])["problems"]
    assert sorted(p.split(":")[0] for p in problems if p.startswith("read model ")) == [
        "read model provider_hourly",
        "read model request_log",
        "read model usage",
    ]
