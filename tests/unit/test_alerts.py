"""The alert process (application/alerts.py) fed by the real Ledger through the projection
runner: which notices each cause yields, their payloads, and that deriving again yields the
same ids."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.settings import Settings
from application.accounts import Accounts
from application.alerts import AlertProcess, AlertThresholds, GrantExpiryCheck, notice_id
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.webhooks import Webhooks
from domain.errors import InvalidRequest
from domain.money import parse_credits
from domain.spend_caps import SpendCapReached
from domain.usage import Usage
from projections.read_models import ReadModels, build_read_models
from tests.fakes.clock import FakeClock
from tests.fakes.notice_outbox import FakeNoticeOutbox
from tests.support.routes import first_route

C = 10**9  # nanocredits per credit


def alert_models(ledger: Ledger, outbox: FakeNoticeOutbox, clock: FakeClock) -> ReadModels:
    return build_read_models(None, ledger, alerts=lambda states: AlertProcess(states, outbox, now=clock.now))


def spend(ledger: Ledger, account: str, amount: int, *, settle: int | None = None) -> None:
    """A hold of ``amount`` settled for ``settle`` (default: all of it)."""
    account_id = ledger.get_account(account).id
    request = uuid4()
    expires = ledger.clock.now() + timedelta(minutes=15)
    ledger.change_account(account_id, lambda a: (a.place_hold(request, amount, expires), [])[1])
    cost = amount if settle is None else settle
    ledger.change_account(account_id, lambda a: (a.settle_hold(request, cost), [])[1])


@pytest.fixture
def outbox() -> FakeNoticeOutbox:
    return FakeNoticeOutbox()


def test_balance_low_fires_once_per_crossing_and_rearms_above(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox
) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 100 * C)
    AlertThresholds(ledger).set_thresholds("acme", [50 * C, 10 * C])
    models = alert_models(ledger, outbox, clock)

    spend(ledger, "acme", 45 * C)  # 55 left: nothing
    spend(ledger, "acme", 10 * C)  # 45: below 50
    spend(ledger, "acme", 1 * C)  # 44: still below 50, no second notice
    models.runner.catch_up()
    low = outbox.of_type("balance.low")
    assert [n.data["threshold_nanocredits"] for n in low] == [50 * C]
    assert low[0].data["available"] == "45.000000000" and low[0].data["available_nanocredits"] == 45 * C
    assert low[0].data["account"] == "acme" and low[0].data["threshold"] == "50.000000000"

    accounts.grant_credits("acme", 6 * C)  # 50: re-armed (at the threshold again)
    spend(ledger, "acme", 35 * C)  # 15: below 50 again
    spend(ledger, "acme", 10 * C)  # 5: below 10
    models.runner.catch_up()
    assert sorted(n.data["threshold_nanocredits"] for n in outbox.of_type("balance.low")) == [10 * C, 50 * C, 50 * C]
    assert outbox.of_type("balance.exhausted") == []

    spend(ledger, "acme", 5 * C)  # 0
    models.runner.catch_up()
    [exhausted] = outbox.of_type("balance.exhausted")
    assert exhausted.data["available_nanocredits"] == 0


def test_a_dip_from_a_hold_counts_and_a_threshold_set_below_starts_disarmed(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox
) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 20 * C)
    AlertThresholds(ledger).set_thresholds("acme", [30 * C])  # already below: no notice
    models = alert_models(ledger, outbox, clock)
    models.runner.catch_up()
    assert outbox.notices == {}

    AlertThresholds(ledger).set_thresholds("acme", [30 * C, 15 * C])
    spend(ledger, "acme", 10 * C, settle=1 * C)  # held 10 (available 10 < 15), then 19 again
    models.runner.catch_up()
    [low] = outbox.of_type("balance.low")
    assert (low.data["threshold_nanocredits"], low.data["available_nanocredits"]) == (15 * C, 10 * C)
    assert "request_id" in low.data


def test_the_same_stream_derived_twice_yields_the_same_notices(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox
) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 10 * C)
    AlertThresholds(ledger).set_thresholds("acme", [5 * C])
    for _ in range(4):
        spend(ledger, "acme", 6 * C)  # 4: below 5
        accounts.grant_credits("acme", 6 * C)  # 10: re-armed
    first = alert_models(ledger, outbox, clock)
    first.runner.catch_up()
    again = FakeNoticeOutbox()
    second = alert_models(ledger, again, clock)  # another process, from zero
    second.runner.catch_up()
    assert list(again.notices) == list(outbox.notices) and len(outbox.notices) == 4
    assert list(again.notices.values()) == list(outbox.notices.values())

    published = outbox.published
    first.runner.rebuild("alerts")  # derived again: the same ids, de-duplicated by the outbox
    assert outbox.published == 2 * published and len(outbox.notices) == 4


def test_notices_older_than_a_day_when_derived_are_not_published(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox
) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 10 * C)
    AlertThresholds(ledger).set_thresholds("acme", [5 * C])
    spend(ledger, "acme", 6 * C)
    later = FakeClock(datetime.now(UTC) + timedelta(days=2))
    models = alert_models(ledger, outbox, later)
    models.runner.catch_up()
    assert outbox.notices == {}
    accounts.grant_credits("acme", 2 * C)  # 6: re-armed (the state was kept)
    spend(ledger, "acme", 2 * C)
    later.current = datetime.now(UTC)
    models.runner.catch_up()
    assert len(outbox.of_type("balance.low")) == 1


def test_credential_disabled_and_restored(ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox) -> None:
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001")
    credential = ledger.get_provider("openai").credentials[0].credential_id
    models = alert_models(ledger, outbox, clock)
    registry.disable_credential("openai", credential, "401 from upstream", automatic=True)
    registry.enable_credential("openai", credential)
    registry.disable_credential("openai", credential, "by hand")
    models.runner.catch_up()
    disabled = outbox.of_type("credential.disabled")
    [restored] = outbox.of_type("credential.restored")
    assert [(n.data["reason"], n.data["automatic"]) for n in disabled] == [
        ("401 from upstream", True),
        ("by hand", False),
    ]
    assert {n.data["provider"] for n in (*disabled, restored)} == {"openai"}
    assert restored.data["credential_id"] == credential
    assert len({n.event_id for n in (*disabled, restored)}) == 3


def test_grant_expiring_once_per_grant(ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 7 * C, expires_at=clock.now() + timedelta(days=2), idempotency_key="soon")
    accounts.grant_credits("acme", 9 * C, expires_at=clock.now() + timedelta(days=10), idempotency_key="later")
    models = alert_models(ledger, outbox, clock)
    models.runner.catch_up()
    balances = models.balances

    def name(account_id: object) -> str:
        row = balances.get_balance(account_id)
        return row.name if row is not None else ""

    check = GrantExpiryCheck(balances.list_due_grants, name, outbox)
    assert check.run(clock.now()) == 1
    check.run(clock.now())
    [notice] = outbox.of_type("grant.expiring")
    assert (notice.data["account"], notice.data["amount"], notice.data["amount_nanocredits"]) == (
        "acme",
        "7.000000000",
        7 * C,
    )
    clock.advance(days=8)
    check.run(clock.now())
    assert [n.data["amount"] for n in outbox.of_type("grant.expiring")] == ["7.000000000", "9.000000000"]


def test_notice_ids_name_their_cause() -> None:
    assert notice_id("balance.low", "a", "5", "7") == notice_id("balance.low", "a", "5", "7")
    assert notice_id("balance.low", "a", "5", "7") != notice_id("balance.low", "a", "5", "8")
    assert notice_id("balance.low", "a").startswith("evt_")


def test_thresholds_are_validated_and_cleared(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    thresholds = AlertThresholds(ledger)
    _, shown = thresholds.set_thresholds("acme", [parse_credits("2.5"), 10 * C, 10 * C])
    assert shown == [10 * C, 2_500_000_000]
    with pytest.raises(InvalidRequest):
        thresholds.set_thresholds("acme", [0])
    with pytest.raises(InvalidRequest):
        thresholds.set_thresholds("acme", list(range(1, 13)))  # more than 10
    assert thresholds.set_thresholds("acme", [])[1] == []


def test_thirty_two_concurrent_requests_across_a_threshold_yield_one_notice(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox
) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 100 * C)
    AlertThresholds(ledger).set_thresholds("acme", [50 * C])
    models = alert_models(ledger, outbox, clock)
    other = alert_models(ledger, outbox, clock)  # a second worker deriving the same stream
    start = threading.Barrier(32)

    def request() -> None:
        start.wait()
        spend(ledger, "acme", 3 * C)
        models.runner.catch_up()

    threads = [threading.Thread(target=request) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    models.runner.catch_up()
    other.runner.catch_up()
    assert ledger.get_account("acme").available == 4 * C
    [low] = outbox.of_type("balance.low")
    assert low.data["threshold_nanocredits"] == 50 * C and low.data["available_nanocredits"] < 50 * C


def billed_setup(ledger: Ledger) -> str:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price("openai/gpt-test", price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme")
    Accounts(ledger).grant_credits("acme", 100 * C)
    return ApiKeys(ledger).issue_api_key("acme").plaintext


def test_spend_cap_reached_once_per_account_and_day(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox, credits_billing: RequestBilling
) -> None:
    key = billed_setup(ledger)
    Accounts(ledger).set_spend_caps("acme", day=1, month=None)
    models = alert_models(ledger, outbox, clock)
    shape = RequestShape(model="openai/gpt-test", prompt_bytes=200, max_output_tokens=100, choices=1, stream=False)
    for _ in range(3):
        with pytest.raises(SpendCapReached):
            credits_billing.open_request(key, shape)
    models.runner.catch_up()
    [notice] = outbox.of_type("spend_cap.reached")
    assert outbox.published == 1  # three refusals in one batch: handed over once
    assert (notice.data["account"], notice.data["day"]) == ("acme", clock.now().strftime("%Y-%m-%d"))
    assert notice.data["account_id"] == str(ledger.get_account("acme").id)
    clock.advance(days=1)
    with pytest.raises(SpendCapReached):
        credits_billing.open_request(key, shape)
    models.runner.catch_up()
    assert len(outbox.of_type("spend_cap.reached")) == 2


def test_price_missing_once_per_model_and_day(
    ledger: Ledger, clock: FakeClock, outbox: FakeNoticeOutbox, track_billing: RequestBilling
) -> None:
    key = billed_setup(ledger)
    models = alert_models(ledger, outbox, clock)
    for model in ("openai/unpriced", "openai/unpriced", "openai/gpt-test", "openai/other"):
        opened = track_billing.open_request(key, RequestShape(model, 10, 10, 1, False))
        track_billing.complete_request(opened, first_route(track_billing, opened), Usage(input_tokens=10))
    models.runner.catch_up()
    missing = outbox.of_type("price.missing")
    assert sorted(n.data["model"] for n in missing) == ["openai/other", "openai/unpriced"]
    assert all(n.data["day"] == clock.now().strftime("%Y-%m-%d") for n in missing)


def test_the_gateways_alert_process_hands_its_notices_to_the_webhook_deliveries() -> None:
    ledger = in_memory_ledger(clock=FakeClock(datetime.now(UTC)))
    ledger.initialise()
    try:
        services = build_services(Settings(), ledger=ledger)
        hook = Webhooks(ledger).add_webhook("http://127.0.0.1:9/hook", ["balance.low"]).webhook
        Accounts(ledger).create_account("acme")
        Accounts(ledger).grant_credits("acme", 10 * C)
        AlertThresholds(ledger).set_thresholds("acme", [5 * C])
        spend(ledger, "acme", 6 * C)
        services.read_models.runner.catch_up()
        services.read_models.runner.catch_up()
        [delivery] = services.deliveries.list()
        assert (delivery.webhook_id, delivery.notice_type) == (hook.webhook_id, "balance.low")
        assert '"threshold_nanocredits":5000000000' in delivery.body
    finally:
        ledger.close()
