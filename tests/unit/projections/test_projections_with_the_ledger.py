"""The read models fed by the real Ledger and RequestBilling (not a fake ledger)."""

from __future__ import annotations

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.usage import Usage
from projections.read_models import build_read_models
from tests.support.routes import first_route

MODEL = "openai/gpt-test"
SHAPE = RequestShape(model=MODEL, prompt_bytes=200, max_output_tokens=100, choices=1, stream=False)


def test_read_models_agree_with_the_ledger_after_billed_requests(
    ledger: Ledger, credits_billing: RequestBilling
) -> None:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    Accounts(ledger).grant_credits("acme", 10**9)
    read_models = build_read_models(None, ledger)

    completed = credits_billing.open_request(key, SHAPE)
    receipt = credits_billing.complete_request(
        completed, first_route(credits_billing, completed), Usage(input_tokens=120, output_tokens=30), ttfb_ms=4.0
    )
    failed = credits_billing.open_request(key, SHAPE)
    credits_billing.fail_request(failed, status=502, error_code="upstream_error")
    still_open = credits_billing.open_request(key, SHAPE)
    read_models.runner.catch_up()

    account = ledger.get_account("acme")
    row = read_models.balances.get_balance(account.id)
    assert row is not None
    assert (row.balance, row.held, row.available, row.charged_total) == (
        account.balance,
        account.held,
        account.available,
        receipt.charge,
    )
    assert [h.request_id for h in read_models.balances.list_open_holds(account.id)] == [still_open.request_id]

    logged = read_models.requests.get_request(completed.request_id)
    assert logged is not None
    assert (logged.account_id, logged.api_key_id, logged.model, logged.status) == (
        account.id,
        completed.api_key_id,
        MODEL,
        200,
    )
    assert (logged.input_tokens, logged.output_tokens, logged.charge, logged.price_book_version) == (
        120,
        30,
        receipt.charge,
        1,
    )
    assert [r.outcome for r in read_models.requests.list_requests()] == ["failed", "completed"]

    totals = read_models.usage.get_usage_totals(account_id=account.id)
    assert (totals.requests, totals.failed_requests, totals.input_tokens, totals.charge) == (2, 1, 120, receipt.charge)
    assert read_models.runner.rebuild() > 0
    assert read_models.balances.get_balance(account.id) == row
