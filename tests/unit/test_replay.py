"""Replay: re-pricing recorded charges under another price book, exactly and once."""

from dataclasses import replace
from uuid import UUID

import pytest

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Receipt, RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import parse_price_file, price_from_credits
from application.providers import ProviderRegistry
from application.replay import Replayer, ReplayPlan
from domain.errors import EmptyWindow, InvalidRequest
from domain.pricing import ModelPrice
from domain.usage import Usage
from tests.support.routes import first_route

MODEL = "openai/gpt-test"
OTHER = "openai/gpt-other"
ORIGINAL = price_from_credits(input="2", output="8", cached_input="1", reasoning="10", per_request="0.001")
OTHER_PRICE = price_from_credits(input="0.15", output="0.6")


def doubled(price: ModelPrice) -> ModelPrice:
    return replace(
        price,
        input=price.input * 2,
        output=price.output * 2,
        cached_input=None if price.cached_input is None else price.cached_input * 2,
        reasoning=None if price.reasoning is None else price.reasoning * 2,
        per_image=price.per_image * 2,
        per_request=price.per_request * 2,
    )


@pytest.fixture
def keys(ledger: Ledger) -> dict[str, str]:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).publish_prices({MODEL: ORIGINAL, OTHER: OTHER_PRICE})
    found = {}
    for name in ("acme", "globex"):
        Accounts(ledger).create_account(name)
        Accounts(ledger).grant_credits(name, 10**12)
        found[name] = ApiKeys(ledger).issue_api_key(name).plaintext
    return found


def charge(billing: RequestBilling, key: str, usage: Usage, model: str = MODEL) -> Receipt:
    opened = billing.open_request(
        key, RequestShape(model=model, prompt_bytes=4000, max_output_tokens=2000, choices=1, stream=False)
    )
    return billing.complete_request(opened, first_route(billing, opened), usage)


USAGES = [
    Usage(input_tokens=1200, cached_input_tokens=200, output_tokens=300, reasoning_tokens=100),
    Usage(input_tokens=7, output_tokens=3),
    Usage(input_tokens=999, output_tokens=1, source="estimated"),
]


@pytest.fixture
def history(credits_billing: RequestBilling, keys: dict[str, str]) -> list[Receipt]:
    receipts = [charge(credits_billing, keys["acme"], usage) for usage in USAGES]
    receipts.append(charge(credits_billing, keys["globex"], USAGES[0]))
    receipts.append(charge(credits_billing, keys["globex"], USAGES[1], model=OTHER))
    return receipts


def test_replaying_the_original_prices_differs_by_exactly_zero(ledger: Ledger, history: list[Receipt]) -> None:
    report = Replayer(ledger).preview(ReplayPlan({MODEL: ORIGINAL, OTHER: OTHER_PRICE}))
    assert report.charges == len(history)
    assert report.old == sum(r.cost for r in history)
    assert [line.difference for line in report.lines] == [0, 0, 0]
    assert report.difference == 0


def test_doubling_every_rate_doubles_every_charge(ledger: Ledger, history: list[Receipt]) -> None:
    report = Replayer(ledger).preview(ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: doubled(OTHER_PRICE)}))
    assert all(line.new == 2 * line.old for line in report.lines)
    acme = ledger.get_account("acme").id
    by_line = {(line.account_id, line.model): (line.charges, line.old) for line in report.lines}
    assert by_line[(acme, MODEL)] == (3, sum(r.cost for r in history[:3]))


def test_a_preview_writes_nothing(ledger: Ledger, history: list[Receipt]) -> None:
    before = ledger.recorder.max_notification_id()
    Replayer(ledger).preview(ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE}))
    assert ledger.recorder.max_notification_id() == before


def test_apply_posts_each_difference_once(ledger: Ledger, history: list[Receipt]) -> None:
    replayer = Replayer(ledger)
    balances = {name: ledger.get_account(name).balance for name in ("acme", "globex")}
    plan = ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE})
    applied = replayer.apply(plan)
    assert applied.applied and applied.difference == sum(r.cost for r in history[:4])
    assert sorted((a.requested, a.applied, a.posted) for a in applied.adjustments) == sorted(
        [(-sum(r.cost for r in history[:3]),) * 2 + (True,), (-history[3].cost,) * 2 + (True,)]
    )
    assert ledger.get_account("acme").balance == balances["acme"] - sum(r.cost for r in history[:3])
    assert ledger.get_account("globex").balance == balances["globex"] - history[3].cost

    again = replayer.apply(plan)
    assert not again.applied and again.difference == 0 and again.adjustments == []
    assert ledger.get_account("acme").balance == balances["acme"] - sum(r.cost for r in history[:3])
    assert replayer.preview(plan).difference == 0


def test_a_later_replay_is_computed_against_the_earlier_one(ledger: Ledger, history: list[Receipt]) -> None:
    replayer = Replayer(ledger)
    start = ledger.get_account("acme").balance
    replayer.apply(ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE}))
    back = replayer.apply(ReplayPlan({MODEL: ORIGINAL, OTHER: OTHER_PRICE}))
    assert back.applied and back.difference == -sum(r.cost for r in history[:4])
    assert ledger.get_account("acme").balance == start
    assert [entry["sequence"] for entry in replayer.list_applied()] == [1, 2]


def test_charges_made_after_an_open_ended_replay_stand_at_their_own_price(
    ledger: Ledger, credits_billing: RequestBilling, keys: dict[str, str], history: list[Receipt]
) -> None:
    replayer = Replayer(ledger)
    replayer.apply(ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE}))
    later = charge(credits_billing, keys["acme"], USAGES[1])
    report = replayer.preview(ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE}))
    assert report.difference == later.cost  # only the new charge is not doubled yet


def test_one_account_and_a_window(ledger: Ledger, history: list[Receipt]) -> None:
    acme = ledger.get_account("acme").id
    times = [ledger.get_request_record(r.request_id).created_on for r in history]
    plan = ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE}, since=times[1], until=times[3], account_id=acme)
    report = Replayer(ledger).preview(plan)
    assert report.charges == 2
    assert report.difference == history[1].cost + history[2].cost


def test_refunded_charges_are_left_out(ledger: Ledger, history: list[Receipt]) -> None:
    acme = ledger.get_account("acme").id

    def refund(account):  # type: ignore[no-untyped-def]
        account.refund_charge(history[0].request_id, history[0].charge, "goodwill")
        return []

    ledger.change_account(acme, refund)
    report = Replayer(ledger).preview(ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: OTHER_PRICE}, account_id=acme))
    assert (report.charges, report.refunded_skipped) == (2, 1)


def test_a_model_charged_in_the_window_must_be_priced(ledger: Ledger, history: list[Receipt]) -> None:
    with pytest.raises(
        InvalidRequest, match=r"no price for models charged in the window: openai/gpt-other \(1 charges\)"
    ):
        Replayer(ledger).apply(ReplayPlan({MODEL: ORIGINAL}))
    assert Replayer(ledger).list_applied() == []


def test_a_model_of_no_registered_provider_is_refused(ledger: Ledger, history: list[Receipt]) -> None:
    with pytest.raises(InvalidRequest, match="no provider 'mystery' is registered"):
        Replayer(ledger).preview(ReplayPlan({MODEL: ORIGINAL, OTHER: OTHER_PRICE, "mystery/x": ORIGINAL}))


def test_an_empty_window_is_an_error(ledger: Ledger, history: list[Receipt]) -> None:
    last = ledger.get_request_record(history[-1].request_id).created_on
    with pytest.raises(EmptyWindow, match="no charges to replay"):
        Replayer(ledger).apply(ReplayPlan({MODEL: ORIGINAL, OTHER: OTHER_PRICE}, since=last.replace(year=2099)))
    with pytest.raises(InvalidRequest, match="start must be before its end"):
        ReplayPlan({MODEL: ORIGINAL}, since=last, until=last)


def test_bad_price_files_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match="must not be negative"):
        parse_price_file('{"models": {"openai/gpt-test": {"input": "-1", "output": "2"}}}')
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_price_file('{"models": ')


def test_track_mode_charges_are_replayed_at_their_list_price(
    ledger: Ledger, track_billing: RequestBilling, keys: dict[str, str]
) -> None:
    receipt = charge(track_billing, keys["acme"], USAGES[1])
    assert receipt.charge == receipt.cost  # track mode records the list price
    report = Replayer(ledger).preview(ReplayPlan({MODEL: ORIGINAL, OTHER: OTHER_PRICE}))
    assert report.difference == 0 and report.charges == 1
    assert isinstance(report.lines[0].account_id, UUID)
