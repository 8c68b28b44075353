"""The alert process follows only what something listens for (application/alerts.py, "What is
followed"): accounts with thresholds, and every account while a webhook subscribes to
``balance.exhausted``. Each test runs the gateway's process (``account_at`` from the ledger)
beside one that follows everything from the first event, on the same ledger, and checks that
the first derives exactly the second's notices for what is listened to, from the moment it is
listened to: thresholds and webhooks added mid-history, removed, and added again."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import uuid4

from eventsourcing.domain import Aggregate

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.settings import Settings
from application.accounts import Accounts
from application.alerts import AlertProcess, AlertThresholds, account_history
from application.ledger import Ledger
from application.webhooks import Webhooks
from domain.account import Account
from domain.webhook import WEBHOOK_REGISTRY_ID, WebhookRegistry
from projections.read_models import ReadModels, build_read_models
from tests.fakes.clock import FakeClock
from tests.fakes.notice_outbox import FakeNoticeOutbox

C = 10**9  # nanocredits per credit
URL = "http://127.0.0.1:9/hook"


class Pair:
    """The gateway's process (``cheap``) and one that follows everything (``full``), on one ledger."""

    def __init__(self, ledger: Ledger, clock: FakeClock) -> None:
        self.cheap_out, self.full_out = FakeNoticeOutbox(), FakeNoticeOutbox()
        at = account_history(ledger)
        self.cheap: ReadModels = build_read_models(
            None, ledger, alerts=lambda s: AlertProcess(s, self.cheap_out, now=clock.now, account_at=at)
        )
        self.full: ReadModels = build_read_models(
            None, ledger, alerts=lambda s: AlertProcess(s, self.full_out, now=clock.now)
        )

    def catch_up(self) -> None:
        self.cheap.runner.catch_up()
        self.full.runner.catch_up()

    def state(self, ledger: Ledger, account: str) -> dict[str, object]:
        key = f"account:{ledger.get_account(account).id.hex}"
        state: dict[str, object] = self.cheap.alerts.view.load(None, {key}).get(key, {})
        return state


def spend(ledger: Ledger, account: str, amount: int) -> None:
    """A hold of ``amount``, settled for all of it."""
    account_id = ledger.get_account(account).id
    request = uuid4()
    expires = ledger.clock.now() + timedelta(minutes=15)

    def hold(account: Account) -> list[Aggregate]:
        account.place_hold(request, amount, expires)
        return []

    def settle(account: Account) -> list[Aggregate]:
        account.settle_hold(request, amount)
        return []

    ledger.change_account(account_id, hold)
    ledger.change_account(account_id, settle)


def subscribed_at(ledger: Ledger) -> datetime:
    """When the last webhook change was recorded (a notice's time is its cause's event's)."""
    registry: object = ledger.repository.get(WEBHOOK_REGISTRY_ID)
    assert isinstance(registry, WebhookRegistry)
    return registry.modified_on


def ids(outbox: FakeNoticeOutbox, notice_type: str, *, after: datetime | None = None) -> list[str]:
    return sorted(n.event_id for n in outbox.of_type(notice_type) if after is None or n.occurred_at > after)


def test_an_account_nothing_listens_for_keeps_no_state_and_yields_no_notice(ledger: Ledger, clock: FakeClock) -> None:
    pair = Pair(ledger, clock)
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 10 * C)
    spend(ledger, "acme", 4 * C)
    spend(ledger, "acme", 6 * C)  # 0: exhausted, and no webhook listens
    pair.catch_up()
    assert pair.state(ledger, "acme") == {}
    assert pair.cheap_out.notices == {}
    assert len(ids(pair.full_out, "balance.exhausted")) == 1  # what following everything derives


def test_thresholds_set_mid_history_start_from_the_ledgers_balance(ledger: Ledger, clock: FakeClock) -> None:
    pair = Pair(ledger, clock)
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 100 * C)
    spend(ledger, "acme", 45 * C)  # 55, not followed
    pair.catch_up()
    AlertThresholds(ledger).set_thresholds("acme", [50 * C, 10 * C])
    spend(ledger, "acme", 10 * C)  # 45: below 50
    spend(ledger, "acme", 1 * C)  # 44: no second notice
    pair.catch_up()
    [low] = pair.cheap_out.of_type("balance.low")
    assert (low.data["threshold_nanocredits"], low.data["available_nanocredits"]) == (50 * C, 45 * C)
    assert low.data["account"] == "acme"
    assert ids(pair.cheap_out, "balance.low") == ids(pair.full_out, "balance.low")
    state = pair.state(ledger, "acme")
    assert (state["available"], state["version"]) == (44 * C, ledger.get_account("acme").version)


def test_thresholds_cleared_and_set_again_read_the_balance_again(ledger: Ledger, clock: FakeClock) -> None:
    pair = Pair(ledger, clock)
    accounts, thresholds = Accounts(ledger), AlertThresholds(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 60 * C)
    thresholds.set_thresholds("acme", [50 * C])
    pair.catch_up()
    thresholds.set_thresholds("acme", [])
    spend(ledger, "acme", 30 * C)  # 30 while nothing listens
    pair.catch_up()
    stale = pair.state(ledger, "acme")
    assert stale["available"] == 60 * C  # not followed: the state missed these events
    thresholds.set_thresholds("acme", [50 * C])  # already below: disarmed, no notice
    pair.catch_up()
    assert pair.cheap_out.notices == {}
    accounts.grant_credits("acme", 30 * C)  # 60: re-armed
    spend(ledger, "acme", 20 * C)  # 40: one crossing
    pair.catch_up()
    [low] = pair.cheap_out.of_type("balance.low")
    assert low.data["available_nanocredits"] == 40 * C
    assert ids(pair.cheap_out, "balance.low") == ids(pair.full_out, "balance.low")


def test_a_webhook_for_balance_exhausted_added_later_fires_from_then_on(ledger: Ledger, clock: FakeClock) -> None:
    pair = Pair(ledger, clock)
    accounts = Accounts(ledger)
    for name in ("drained", "dry", "fresh"):
        accounts.create_account(name)
    accounts.grant_credits("drained", 10 * C)
    spend(ledger, "drained", 10 * C)  # 0 before anyone listens: no notice
    accounts.grant_credits("drained", 5 * C)
    accounts.grant_credits("fresh", 3 * C)
    pair.catch_up()
    assert pair.cheap_out.notices == {}

    hook = Webhooks(ledger).add_webhook(URL, ["balance.exhausted"]).webhook
    added = subscribed_at(ledger)
    spend(ledger, "drained", 5 * C)  # 0 again: fires
    accounts.grant_credits("dry", 2 * C)  # never had credit: armed now
    spend(ledger, "dry", 2 * C)  # fires
    spend(ledger, "fresh", 1 * C)  # 2: nothing
    pair.catch_up()
    exhausted = ids(pair.cheap_out, "balance.exhausted")
    assert len(exhausted) == 2
    assert exhausted == ids(pair.full_out, "balance.exhausted", after=added)

    Webhooks(ledger).remove_webhook(hook.webhook_id)  # nobody listens: the states go stale
    accounts.grant_credits("fresh", 8 * C)  # 10, missed
    pair.catch_up()
    Webhooks(ledger).add_webhook(URL, ["balance.low", "balance.exhausted"])
    again = subscribed_at(ledger)
    spend(ledger, "fresh", 10 * C)  # 0: fires, from the balance read again
    pair.catch_up()
    [last] = [n for n in pair.cheap_out.of_type("balance.exhausted") if n.occurred_at > again]
    assert (last.data["account"], last.data["available_nanocredits"]) == ("fresh", 0)
    assert ids(pair.cheap_out, "balance.exhausted", after=again) == ids(pair.full_out, "balance.exhausted", after=again)


def test_a_webhook_from_the_start_derives_what_following_everything_derives(ledger: Ledger, clock: FakeClock) -> None:
    Webhooks(ledger).add_webhook(URL, ["balance.exhausted"])
    pair = Pair(ledger, clock)
    accounts, thresholds = Accounts(ledger), AlertThresholds(ledger)
    accounts.create_account("acme")
    for round_ in range(3):
        accounts.grant_credits("acme", 20 * C)
        thresholds.set_thresholds("acme", [15 * C - round_ * C, 5 * C])
        spend(ledger, "acme", 12 * C)
        spend(ledger, "acme", 8 * C)  # 0
        pair.catch_up()
    for notice_type in ("balance.low", "balance.exhausted"):
        assert ids(pair.cheap_out, notice_type) == ids(pair.full_out, notice_type)
    assert len(ids(pair.cheap_out, "balance.exhausted")) == 3 and len(ids(pair.cheap_out, "balance.low")) == 6

    published = pair.cheap_out.published
    pair.cheap.runner.rebuild("alerts")  # derived again from zero: the same ids
    assert pair.cheap_out.published == 2 * published and len(pair.cheap_out.notices) == 9


def test_the_gateway_follows_no_account_nothing_listens_for() -> None:
    clock = FakeClock()
    ledger = in_memory_ledger(clock=clock)
    ledger.initialise()
    try:
        services = build_services(Settings(), ledger=ledger)
        Accounts(ledger).create_account("acme")
        Accounts(ledger).grant_credits("acme", 10 * C)
        spend(ledger, "acme", 10 * C)
        services.read_models.runner.catch_up()
        key = f"account:{ledger.get_account('acme').id.hex}"
        assert services.read_models.alerts.view.load(None, {key}) == {}
        AlertThresholds(ledger).set_thresholds("acme", [5 * C])
        services.read_models.runner.catch_up()
        assert services.read_models.alerts.view.load(None, {key})[key]["thresholds"] == [5 * C]
    finally:
        ledger.close()
