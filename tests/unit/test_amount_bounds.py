"""Amounts and prices are read exactly by one grammar and bounded in the domain itself
(domain/money.py, domain/account.py, domain/pricing.py), so every edge gets the same
rule; receipts recorded before their terms existed still load; two refunds of one
payment that race through the group-commit writer never add up to more than it."""

import threading
from dataclasses import replace
from datetime import UTC
from uuid import uuid4

import pytest

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import parse_price_file, price_from_credits
from application.providers import ProviderRegistry
from domain.account import Account, MovementReceipt
from domain.bounds import MAX_AMOUNT, MAX_BALANCE, MAX_RATE, MAX_TOKENS
from domain.errors import BalanceLimitExceeded, IdempotencyConflict, InvalidRequest, RefundExceedsPayment
from domain.money import InvalidAmount, parse_credits
from domain.pricing import ModelPrice
from domain.usage import Usage

NANO = 10**9


@pytest.mark.parametrize(
    "text",
    [
        "٥",
        "۱۲",
        "５",
        "1_000",
        "1e3",
        "1E3",
        " 5",
        "5 ",
        "\t5",
        "5\n",
        "+5",
        ".5",
        "5.",
        "1.",
        "0x10",
        "1,5",
        "½",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "",
        "-",
        "--1",
        "1.2.3",
        "0.0000000001",
        "1.1234567890",
    ],
)
def test_anything_but_ascii_digits_with_at_most_nine_decimals_is_refused(text: str) -> None:
    with pytest.raises(InvalidAmount) as refused:
        parse_credits(text, allow_negative=True)
    assert refused.value.param == "amount" and refused.value.code == "invalid_amount"


def test_a_29_digit_amount_is_refused_not_rounded() -> None:
    """Decimal's 28-digit context rounded 12345678901234567890123456789 to ...890 silently."""
    with pytest.raises(InvalidAmount, match="above the maximum"):
        parse_credits("12345678901234567890123456789")
    assert parse_credits("9999999.999999999") == MAX_AMOUNT - 1  # 16 significant digits, exact
    assert parse_credits("0000000000000000000000000000000000001.5") == 1_500_000_000


def test_a_5000_digit_amount_is_refused_as_an_amount_not_a_crash() -> None:
    for text in ("9" * 5000, "0." + "1" * 5000, "-" + "9" * 5000):
        with pytest.raises(InvalidAmount):
            parse_credits(text, allow_negative=True)


def test_a_minus_sign_only_where_negatives_are_allowed() -> None:
    for text in ("-1", "-0", "-0.000000001"):
        with pytest.raises(InvalidAmount, match="negative"):
            parse_credits(text)
    assert parse_credits("-0.000000001", allow_negative=True) == -1


def test_integers_are_whole_credits_bounded_and_never_booleans() -> None:
    assert parse_credits(10_000_000) == MAX_AMOUNT
    for value in (10_000_001, 10**4000, -(10**30)):
        with pytest.raises(InvalidAmount, match="above the maximum"):
            parse_credits(value, allow_negative=True)
    with pytest.raises(InvalidAmount):
        parse_credits(True)  # type: ignore[arg-type]


def test_a_refusal_names_the_field_it_came_from() -> None:
    with pytest.raises(InvalidAmount) as refused:
        parse_credits("1e3", param="data.amount")
    assert refused.value.param == "data.amount" and "data.amount" in str(refused.value)


def test_rates_have_their_own_bound() -> None:
    assert parse_credits("100000", maximum=MAX_RATE) == MAX_RATE
    with pytest.raises(InvalidAmount):
        parse_credits("100000.000000001", maximum=MAX_RATE)


def test_the_account_refuses_movements_past_the_bounds_before_any_event() -> None:
    account = Account(name="acme")
    account.grant_credits(MAX_AMOUNT, "max")
    for move in (
        lambda: account.grant_credits(MAX_AMOUNT + 1, "x"),
        lambda: account.adjust(MAX_AMOUNT + 1, "x"),
        lambda: account.adjust(-(MAX_AMOUNT + 1), "x"),
        lambda: account.refund_charge(uuid4(), MAX_AMOUNT + 1, "x"),
        lambda: account.set_spend_caps("account", MAX_AMOUNT + 1, None),
        lambda: account.set_spend_caps("account", None, MAX_AMOUNT + 1),
    ):
        pending = len(account.pending_events)
        with pytest.raises(InvalidAmount):
            move()
        assert len(account.pending_events) == pending
    account.set_spend_caps("account", MAX_AMOUNT, MAX_AMOUNT)  # the bound itself is a cap


def test_the_account_refuses_credit_that_would_pass_the_balance_bound() -> None:
    account = Account(name="acme")
    for _ in range(MAX_BALANCE // MAX_AMOUNT):
        account.grant_credits(MAX_AMOUNT, "max")
    assert account.balance == MAX_BALANCE
    for move in (
        lambda: account.grant_credits(1, "x"),
        lambda: account.adjust(1, "x"),
        lambda: account.refund_charge(uuid4(), 1, "x"),
    ):
        with pytest.raises(BalanceLimitExceeded) as refused:
            move()
        assert refused.value.param == "amount"
    assert account.adjust(-MAX_AMOUNT, "x") == -MAX_AMOUNT and account.adjust(1, "x") == 1


@pytest.mark.parametrize("field", ["input", "output", "cached_input", "reasoning", "per_image", "per_request"])
def test_a_price_refuses_a_rate_past_the_bound(field: str) -> None:
    ModelPrice(**{"input": 0, "output": 0, field: MAX_RATE})
    with pytest.raises(InvalidRequest) as refused:
        ModelPrice(**{"input": 0, "output": 0, field: MAX_RATE + 1})
    assert refused.value.param == field
    with pytest.raises(InvalidRequest):
        ModelPrice.from_dict({"input": 0, "output": 0, "provider_cost": {"input": 0, "output": 0, field: MAX_RATE + 1}})


def test_a_price_refuses_an_output_cap_past_the_token_bound() -> None:
    ModelPrice(input=0, output=0, max_output_tokens=MAX_TOKENS)
    for cap in (MAX_TOKENS + 1, 0, True, "100"):
        with pytest.raises(InvalidRequest) as refused:
            ModelPrice(input=0, output=0, max_output_tokens=cap)  # type: ignore[arg-type]
        assert refused.value.param == "max_output_tokens"


def test_price_input_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as refused:
        price_from_credits(input="1", output="1e3")
    assert refused.value.param == "output" and refused.value.code == "invalid_request"
    with pytest.raises(InvalidRequest) as in_file:
        parse_price_file(
            '{"models": {"a/b": {"input": "1", "output": "1", "provider_cost": {"input": "100000.5", "output": "1"}}}}'
        )
    assert in_file.value.param == "models.a/b.provider_cost.input" and "a/b" in str(in_file.value)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 50_000,
        '{"models": ' * 3_000 + "1" + "}" * 3_000,
        '{"models": {"a/b": {"input": 1' + "0" * 5000 + ', "output": "1"}}}',
    ],
)
def test_a_hostile_price_file_is_refused_not_crashed_on(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_price_file(text)


def test_a_receipt_recorded_before_terms_existed_loads_and_is_compared_by_amount(ledger: Ledger) -> None:
    receipt = MovementReceipt(
        account_id=uuid4(), kind="grant", idempotency_key="k1", amount=5, terms={"reason": "then", "expires_at": None}
    )
    stored = ledger.mapper.to_stored_event(receipt.collect_events()[0])
    state = ledger.mapper.transcoder.decode(stored.state)
    del state["terms"]  # as the Recorded event was stored before it had terms
    old = ledger.mapper.to_domain_event(replace(stored, state=ledger.mapper.transcoder.encode(state)))
    loaded = old.mutate(None)
    assert loaded.terms is None and loaded.refunded == 0
    assert loaded.matches(5, {"reason": "now", "expires_at": None}) and not loaded.matches(6, {})


def test_two_refunds_of_one_payment_in_one_batch_never_exceed_it(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    Accounts(ledger).record_payment("acme", "pay_1", 5 * NANO)
    ledger.start_group_commit()
    try:
        go, busy = threading.Event(), threading.Event()

        def block(_: Account) -> list[object]:
            busy.set()
            go.wait(10)
            return []

        account_id = ledger.get_account("acme").id
        blocker = threading.Thread(target=ledger.change_account, args=(account_id, block))
        blocker.start()
        assert busy.wait(10)  # the writer is inside a batch of its own: the refunds queue up together
        outcomes: list[object] = []

        def refund(refund_id: str) -> None:
            try:
                outcomes.append(Accounts(ledger).reverse_payment("acme", refund_id, 3 * NANO, "pay_1"))
            except RefundExceedsPayment as refused:
                outcomes.append(refused)

        refunds = [threading.Thread(target=refund, args=(f"re_{i}",)) for i in range(2)]
        for thread in refunds:
            thread.start()
        assert ledger.writer is not None
        queued = threading.Event()
        for _ in range(10_000):  # until both refunds are queued behind the blocker
            if ledger.writer._queue.qsize() >= 2:
                break
            queued.wait(0.001)
        assert ledger.writer._queue.qsize() == 2
        go.set()
        for thread in [blocker, *refunds]:
            thread.join(10)
    finally:
        ledger.stop_group_commit()
    assert sorted(type(o).__name__ for o in outcomes) == ["GrantResult", "RefundExceedsPayment"]
    assert ledger.get_account("acme").balance == 2 * NANO


def test_a_grant_key_reused_for_another_amount_is_refused_and_moves_nothing(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme", starter_credits=NANO)
    with pytest.raises(IdempotencyConflict):
        Accounts(ledger).grant_credits("acme", 2 * NANO, "starter credits", idempotency_key="starter")
    assert Accounts(ledger).grant_credits("acme", NANO, "starter credits", idempotency_key="starter").credited is False
    assert ledger.get_account("acme").balance == NANO


def test_the_dashboards_what_if_prices_past_the_bound_are_a_cell_error_not_a_crash() -> None:
    from dashboard import whatif

    book = {"openai/m": ModelPrice(input=NANO, output=NANO).to_dict()}
    rows = whatif.editable_rows(book)
    for scale in ("1000000", "1e999999999"):  # past MAX_RATE once scaled; a scale no price survives
        with pytest.raises(whatif.PriceEditError):
            whatif.parse_edited(rows, book, scale=scale)
    assert whatif.parse_edited(rows, book, scale="2")["openai/m"].output == 2 * NANO


def test_a_replay_that_would_adjust_an_account_past_the_bound_is_refused_before_it_is_recorded(
    ledger: Ledger, track_billing: RequestBilling
) -> None:
    from application.replay import Replayer, ReplayPlan
    from tests.support.routes import first_route

    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price("openai/free", ModelPrice(input=0, output=0))
    Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    opened = track_billing.open_request(key, RequestShape("openai/free", MAX_TOKENS, 1, 1, False))
    track_billing.complete_request(opened, first_route(track_billing, opened), Usage(input_tokens=MAX_TOKENS))
    dearest = ReplayPlan({"openai/free": ModelPrice(input=MAX_RATE, output=0)}, None, None, None)
    assert Replayer(ledger).preview(dearest).difference == MAX_TOKENS * MAX_RATE // 10**6  # 10^8 credits
    with pytest.raises(InvalidRequest, match="largest single movement"):
        Replayer(ledger).apply(dearest)
    assert Replayer(ledger).list_applied() == [] and ledger.get_account("acme").balance == 0


def test_a_price_book_version_holds_only_bounded_prices_at_a_time_with_a_zone() -> None:
    from datetime import datetime

    from domain.price_book import PriceBook

    book, now = PriceBook(), datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequest) as naive:
        book.publish_version({"a/b": ModelPrice(input=1, output=1)}, datetime(2026, 12, 2), now=now)
    assert naive.value.param == "effective_at"
    with pytest.raises(InvalidRequest):
        book.publish_version({"a/b": {"input": MAX_RATE + 1, "output": 0}}, now, now=now)  # type: ignore[dict-item]
    assert book.publish_version({"a/b": ModelPrice(input=MAX_RATE, output=0)}, now, now=now) == 1
