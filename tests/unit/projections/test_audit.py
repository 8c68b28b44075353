"""The audit read model in memory: one row per admin event with who acted, a stable action
name, the target by name and a summary with exact credits and no secret; the hot path makes
no row; an event it cannot describe still gets a generic row; a rebuild gives the same rows.
(tests/dashboard/test_audit.py runs it on SQLite and PostgreSQL through the CLI, the admin
API and the console.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.utils import get_topic

from adapters.bootstrap import in_memory_ledger
from application.accounts import Accounts
from application.acting import CLI, acting_as
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.account import Account
from domain.api_key import ApiKey
from projections import audit
from projections.audit import AuditEntry, AuditFilter, AuditProjection, safe_url
from projections.read_models import ReadModels, build_read_models

NANO = 10**9
SECRET = "sk-very-secret-upstream-key-Zq9W"
ADMIN = "admin:0123456789ab"


@pytest.fixture
def ledger() -> Ledger:
    ledger = in_memory_ledger()
    ledger.initialise()
    return ledger


@pytest.fixture
def read_models(ledger: Ledger) -> Iterator[ReadModels]:
    read_models = build_read_models(None, ledger)
    yield read_models
    read_models.close()


def rows(read_models: ReadModels, **where: Any) -> list[AuditEntry]:
    assert read_models.audit is not None
    read_models.runner.catch_up()
    return read_models.audit.list_entries(AuditFilter(**where), limit=1000)


def admin_history(ledger: Ledger) -> str:
    """A little of everything an operator does; returns the issued key's id."""
    with acting_as(CLI):
        ProviderRegistry(ledger).register_provider(
            "openai", "openai", base_url="https://user:pw@api.example.com/v1?token=x", region=None, secret=SECRET
        )
        Prices(ledger).set_price("openai/gpt-x", price_from_credits(input="2", output="8"))
        Accounts(ledger).create_account("acme", starter_credits=3 * NANO)
    with acting_as(ADMIN):
        Accounts(ledger).grant_credits("acme", 1_500_000_001, "top-up")
        key = ApiKeys(ledger).issue_api_key("acme", name="ci")
        ApiKeys(ledger).revoke_api_key(key.key_id, reason="leaked")
        Prices(ledger).set_alias("fast", ["openai/gpt-x"])
    return str(key.key_id)


def test_each_admin_event_is_one_row_naming_its_actor_action_and_target(
    ledger: Ledger, read_models: ReadModels
) -> None:
    key_id = admin_history(ledger)

    found = [(e.actor, e.action, e.target) for e in reversed(rows(read_models))]

    assert found == [
        (None, "deployment.initialised", "deployment"),
        (CLI, "provider.registered", "openai"),
        (CLI, "provider.credential_added", "openai"),
        (CLI, "prices.published", "price book v1"),
        (CLI, "account.created", "acme"),
        (CLI, "account.credit_granted", "acme"),
        (ADMIN, "account.credit_granted", "acme"),
        (ADMIN, "key.issued", f"acme / key {key_id}"),
        (ADMIN, "key.revoked", f"acme / key {key_id}"),
        (ADMIN, "alias.set", "fast"),
    ]


def test_summaries_show_exact_credits_and_never_a_secret(ledger: Ledger, read_models: ReadModels) -> None:
    admin_history(ledger)

    entries = rows(read_models)
    by_action = {(e.action, e.actor): e.summary for e in entries}

    assert by_action["account.credit_granted", ADMIN] == "granted 1.500000001 credits; top-up"
    assert by_action["account.credit_granted", CLI].startswith("granted 3.000000000 credits")
    assert "base URL https://api.example.com/v1" in by_action["provider.registered", CLI]
    assert by_action["key.revoked", ADMIN] == "revoked; leaked"
    text = repr([asdict(e) for e in entries])
    for secret in (SECRET, "Zq9W", "pw@", "token=x", "user:"):
        assert secret not in text


def test_newest_first_and_every_filter(ledger: Ledger, read_models: ReadModels) -> None:
    admin_history(ledger)
    everything = rows(read_models)

    assert [e.position for e in everything] == sorted((e.position for e in everything), reverse=True)
    assert {e.actor for e in rows(read_models, actor=ADMIN)} == {ADMIN}
    assert [e.action for e in rows(read_models, actor=audit.UNRECORDED)] == ["deployment.initialised"]
    assert {e.action for e in rows(read_models, action="key")} == {"key.issued", "key.revoked"}
    assert [e.action for e in rows(read_models, action="key.revoked")] == ["key.revoked"]
    assert {e.target for e in rows(read_models, target="ACME")} >= {"acme"}
    newest = everything[0]
    assert rows(read_models, since=newest.at) == [e for e in everything if e.at >= newest.at]
    assert rows(read_models, until=datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert rows(read_models, before=newest.position) == everything[1:]


def test_hot_path_events_are_not_followed() -> None:
    for event in (
        Account.HoldPlaced,
        Account.HoldSettled,
        Account.HoldReleased,
        Account.GrantExpired,
    ):
        assert get_topic(event) not in AuditProjection.topics


def test_an_event_it_cannot_describe_gets_a_generic_row_and_the_rest_go_on(
    ledger: Ledger, read_models: ReadModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event: Any, names: Any) -> tuple[str, str]:
        raise KeyError("no such field")

    topic = get_topic(ApiKey.Revoked)
    monkeypatch.setitem(audit._BY_TOPIC, topic, audit.Audited("key.revoked", broken))
    key_id = admin_history(ledger)

    revoked = rows(read_models, action="key.revoked")
    assert [(e.actor, e.target, e.summary) for e in revoked] == [
        (ADMIN, key_id, "ApiKey.Revoked (reason)"),
    ]
    assert rows(read_models, action="alias.set")  # the later events are there too
    assert read_models.store.stops() == {}


def test_a_rebuild_gives_the_same_rows(ledger: Ledger, read_models: ReadModels) -> None:
    admin_history(ledger)
    live = rows(read_models)

    read_models.runner.rebuild("audit")

    assert rows(read_models) == live
    assert {s.name for s in read_models.runner.status()} >= {"audit"}


def test_safe_url_drops_user_info_query_and_fragment() -> None:
    assert safe_url("https://u:p@host.example:8443/a/b?key=s#f") == "https://host.example:8443/a/b"
    assert safe_url(None) == "default"
