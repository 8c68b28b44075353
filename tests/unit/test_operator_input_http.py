"""Operator and payment-system input over HTTP, in process (the FastAPI app over an
in-memory ledger): amounts are read by one strict grammar and bounded, so no event
carries a value the read models cannot store; a refusal is a 400 in OpenAI's shape
naming the field, never a plain-text 500; an idempotency key reused for a different
movement is a 409; a refund must name a payment of the same account and never
exceed it; caps only on the account's own keys, and never silently in track mode."""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.http.payments import sign
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.providers import ProviderRegistry
from domain.account import Account
from domain.bounds import MAX_AMOUNT, MAX_BALANCE
from tests.fakes.clock import FakeClock

SECRET = "whsec_operator_input_0123456789"
NANO = 10**9


@dataclass
class Admin:
    client: TestClient
    ledger: Ledger
    admin_key: str

    def call(self, method: str, path: str, **kwargs: object) -> Response:
        headers = {"authorization": f"Bearer {self.admin_key}", "content-type": "application/json"}
        return self.client.request(method, "/admin/v1" + path, headers=headers, **kwargs)

    def deliver(self, event: dict) -> Response:
        raw = orjson.dumps(event)
        return self.client.post(
            "/admin/v1/payments/webhook",
            content=raw,
            headers={"tallyhub-signature": sign(SECRET, raw, int(time.time())), "content-type": "application/json"},
        )

    def events(self, account: str) -> list[object]:
        return list(self.ledger.repository.event_store.get(self.ledger.get_account(account).id))


def build(settings: Settings) -> Iterator[Admin]:
    ledger = in_memory_ledger(master_key=bytes(32), clock=FakeClock())
    admin_key = ledger.initialise()
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-operator-input-0001"
    )
    Accounts(ledger).create_account("acme")
    Accounts(ledger).create_account("beta")
    services = build_services(settings, ledger=ledger)
    yield Admin(TestClient(create_app(services, run_projections=False)), ledger, admin_key)
    ledger.close()


@pytest.fixture
def admin() -> Iterator[Admin]:
    yield from build(Settings(payments_webhook_secret=SECRET))


@pytest.fixture
def track_admin() -> Iterator[Admin]:
    yield from build(Settings(payments_webhook_secret=SECRET, billing_mode="track"))


def refused(response: Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


BAD_AMOUNTS = [
    "٥",
    "1_000",
    "1e3",
    " 5 ",
    "5\n",
    "+5",
    ".5",
    "5.",
    "0.0000000001",
    "NaN",
    "Infinity",
    "0x10",
    "",
    "12345678901234567890123456789",
    "1" * 5000,
    "1000000000000000000000000000000",
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=lambda a: repr(a[:12]) + (f"..{len(a)}" if len(a) > 12 else ""))
def test_a_grant_of_anything_but_a_bounded_decimal_is_a_400_naming_the_amount(admin: Admin, amount: str) -> None:
    before = len(admin.events("beta"))
    refused(admin.call("POST", "/accounts/beta/grants", json={"amount": amount}), 400, "invalid_amount", "amount")
    assert len(admin.events("beta")) == before


@pytest.mark.parametrize("amount", [10**40, 10**7 + 1, True, 1.5])
def test_json_numbers_past_the_bound_or_not_integers_are_refused(admin: Admin, amount: object) -> None:
    response = admin.call("POST", "/accounts/beta/grants", json={"amount": amount})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "amount"
    assert admin.call("POST", "/accounts/beta/grants", json={"amount": 3}).json()["amount"] == 3 * NANO  # whole credits


def test_grants_that_would_take_the_balance_past_its_maximum_are_refused(admin: Admin) -> None:
    for _ in range(MAX_BALANCE // MAX_AMOUNT):  # the largest grant there is, a hundred times
        assert admin.call("POST", "/accounts/beta/grants", json={"amount": "10000000"}).json()["amount"] == MAX_AMOUNT
    assert admin.ledger.get_account("beta").balance == MAX_BALANCE
    refused(
        admin.call("POST", "/accounts/beta/grants", json={"amount": "0.000000001"}),
        400,
        "balance_limit_exceeded",
        "amount",
    )
    refused(
        admin.call("POST", "/accounts/beta/adjustments", json={"amount": "1", "reason": "x"}),
        400,
        "balance_limit_exceeded",
        "amount",
    )
    assert admin.ledger.get_account("beta").balance == MAX_BALANCE


@pytest.mark.parametrize("amount", ["-10000000.000000001", "10000000.000000001", "-1e3", "- 5"])
def test_adjustments_are_bounded_in_both_directions(admin: Admin, amount: str) -> None:
    refused(
        admin.call("POST", "/accounts/beta/adjustments", json={"amount": amount, "reason": "x"}),
        400,
        "invalid_amount",
        "amount",
    )


def test_starter_credits_past_the_bound_are_refused_naming_the_field(admin: Admin) -> None:
    refused(
        admin.call("POST", "/accounts", json={"name": "gamma", "starter_credits": "10000001"}),
        400,
        "invalid_amount",
        "starter_credits",
    )
    assert admin.call("GET", "/accounts/gamma/balance").status_code == 404


@pytest.mark.parametrize(
    "body", [{"amount": "2"}, {"amount": "1", "reason": "other"}, {"amount": "1", "expires_at": "2099-01-01T00:00:00Z"}]
)
def test_an_idempotency_key_reused_for_another_grant_is_a_409(admin: Admin, body: dict) -> None:
    first = admin.call("POST", "/accounts/beta/grants", json={"amount": "1", "idempotency_key": "k1"})
    again = admin.call("POST", "/accounts/beta/grants", json={"amount": "1", "idempotency_key": "k1"})
    assert (first.status_code, first.json()["credited"]) == (201, True)
    assert (again.status_code, again.json()["credited"]) == (201, False)  # a re-delivery, as before
    refused(
        admin.call("POST", "/accounts/beta/grants", json={**body, "idempotency_key": "k1"}),
        409,
        "idempotency_conflict",
        "idempotency_key",
    )
    assert admin.ledger.get_account("beta").balance == NANO


def test_an_expiry_is_the_same_grant_in_any_zone_and_another_expiry_a_409(admin: Admin) -> None:
    body = {"amount": "1", "idempotency_key": "k2", "expires_at": "2099-01-01T00:00:00Z"}
    assert admin.call("POST", "/accounts/beta/grants", json=body).json()["credited"] is True
    same = admin.call("POST", "/accounts/beta/grants", json={**body, "expires_at": "2099-01-01T02:00:00+02:00"})
    assert (same.status_code, same.json()["credited"]) == (201, False)
    refused(
        admin.call("POST", "/accounts/beta/grants", json={**body, "expires_at": "2099-01-01T00:00:01Z"}),
        409,
        "idempotency_conflict",
    )


def test_an_idempotency_key_reused_for_another_adjustment_is_a_409(admin: Admin) -> None:
    body = {"amount": "-1", "reason": "chargeback", "idempotency_key": "cb1"}
    assert admin.call("POST", "/accounts/beta/adjustments", json=body).status_code == 201
    assert admin.call("POST", "/accounts/beta/adjustments", json=body).json()["credited"] is False
    refused(
        admin.call("POST", "/accounts/beta/adjustments", json={**body, "amount": "-2"}), 409, "idempotency_conflict"
    )


def payment(payment_id: str, amount: str, account: str = "beta", **refund: str) -> dict:
    kind = "payment.refunded" if refund else "payment.succeeded"
    return {
        "id": f"evt_{payment_id}_{refund.get('refund_id', '')}",
        "type": kind,
        "data": {"account": account, "payment_id": payment_id, "amount": amount, **refund},
    }


@pytest.mark.parametrize("amount", ["1e10", "1_0", " 1", "100000000000000000000", "٣"])
def test_a_signed_payment_with_a_malformed_or_huge_amount_is_refused(admin: Admin, amount: str) -> None:
    refused(admin.deliver(payment("pay_1", amount)), 400, "invalid_amount", "data.amount")
    assert admin.ledger.get_account("beta").balance == 0


def test_a_refund_of_a_payment_never_seen_is_refused(admin: Admin) -> None:
    refused(admin.deliver(payment("pay_unknown", "1", refund_id="re_1")), 404, "payment_not_found")
    assert admin.ledger.get_account("beta").balance == 0


def test_a_refund_of_another_accounts_payment_is_refused(admin: Admin) -> None:
    assert admin.deliver(payment("pay_acme", "5", account="acme")).status_code == 200
    admin.deliver(payment("pay_beta", "5"))
    refused(admin.deliver(payment("pay_acme", "1", refund_id="re_1")), 404, "payment_not_found")
    assert (admin.ledger.get_account("acme").balance, admin.ledger.get_account("beta").balance) == (5 * NANO, 5 * NANO)


def test_refunds_of_a_payment_never_add_up_to_more_than_it(admin: Admin) -> None:
    admin.deliver(payment("pay_1", "5"))
    admin.deliver(payment("pay_2", "100"))
    assert admin.deliver(payment("pay_1", "3", refund_id="re_1")).json()["applied"] == -3 * NANO
    refused(
        admin.deliver(payment("pay_1", "2.000000001", refund_id="re_2")), 400, "refund_exceeds_payment", "data.amount"
    )
    assert admin.deliver(payment("pay_1", "2", refund_id="re_3")).json()["applied"] == -2 * NANO
    refused(admin.deliver(payment("pay_1", "0.000000001", refund_id="re_4")), 400, "refund_exceeds_payment")
    assert admin.ledger.get_account("beta").balance == 100 * NANO


def test_a_payment_or_refund_id_delivered_again_with_other_content_is_a_409(admin: Admin) -> None:
    admin.deliver(payment("pay_1", "5"))
    admin.deliver(payment("pay_2", "5"))
    assert admin.deliver(payment("pay_1", "5")).json()["duplicate"] is True
    refused(admin.deliver(payment("pay_1", "6")), 409, "idempotency_conflict", "data.payment_id")
    admin.deliver(payment("pay_1", "1", refund_id="re_1"))
    assert admin.deliver(payment("pay_1", "1", refund_id="re_1")).json()["duplicate"] is True
    refused(admin.deliver(payment("pay_2", "1", refund_id="re_1")), 409, "idempotency_conflict", "data.refund_id")
    assert admin.ledger.get_account("beta").balance == 9 * NANO


def test_caps_on_a_key_of_another_account_are_refused(admin: Admin) -> None:
    acme_key = ApiKeys(admin.ledger).issue_api_key("acme").key_id
    refused(
        admin.call("PUT", "/accounts/beta/caps", json={"day": "1", "api_key_id": str(acme_key)}),
        404,
        "api_key_not_found",
    )
    assert admin.ledger.get_account("acme").caps == {} and admin.ledger.get_account("beta").caps == {}
    beta_key = ApiKeys(admin.ledger).issue_api_key("beta").key_id
    capped = admin.call("PUT", "/accounts/beta/caps", json={"day": "1", "api_key_id": str(beta_key)})
    assert capped.status_code == 200 and capped.json()["caps"] == {str(beta_key): {"day": NANO, "month": None}}


@pytest.mark.parametrize("caps", [{"day": "10000001"}, {"month": "1e3"}, {"day": -1}])
def test_caps_are_bounded_and_strict_naming_the_window(admin: Admin, caps: dict) -> None:
    refused(admin.call("PUT", "/accounts/beta/caps", json=caps), 400, "invalid_amount", next(iter(caps)))


def test_track_mode_refuses_to_set_caps_it_would_ignore(track_admin: Admin) -> None:
    error = refused(track_admin.call("PUT", "/accounts/beta/caps", json={"day": "1"}), 400, "not_in_credits_mode")
    assert "TALLYHUB_BILLING_MODE=credits" in error["message"]
    assert track_admin.ledger.get_account("beta").caps == {}
    cleared = track_admin.call("PUT", "/accounts/beta/caps", json={"day": None, "month": None})
    assert cleared.status_code == 200  # removing caps is harmless in any mode


@pytest.mark.parametrize("path", ["/accounts/beta/keys", "/keys"])
def test_a_key_expiry_without_a_zone_is_utc(admin: Admin, path: str) -> None:
    body = {"expires_at": "2099-01-01T00:00:00", **({"account": "beta"} if path == "/keys" else {})}
    response = admin.call("POST", path, json=body)
    assert response.status_code == 201, response.text
    key = admin.ledger.get_api_key(response.json()["id"])
    assert key.expires_at.isoformat() == "2099-01-01T00:00:00+00:00"


@pytest.mark.parametrize("field", ["input", "per_request"])
def test_a_price_past_the_maximum_rate_is_refused_naming_the_field(admin: Admin, field: str) -> None:
    body = {"model": "openai/gpt-4o-mini", "input": "1", "output": "1", field: "100000.000000001"}
    refused(admin.call("POST", "/prices", json=body), 400, "invalid_request", field)
    ok = admin.call("POST", "/prices", json={**body, field: "100000"})
    assert ok.status_code == 201, ok.text


def test_a_price_output_cap_past_the_token_bound_is_refused(admin: Admin) -> None:
    body = {"model": "openai/gpt-4o-mini", "input": "1", "output": "1", "max_output_tokens": 10**9 + 1}
    refused(admin.call("POST", "/prices", json=body), 400, "invalid_request", "max_output_tokens")


def price_file(**model: object) -> bytes:
    return orjson.dumps({"models": {"openai/gpt-4o-mini": {"input": "1", "output": "1", **model}}})


@pytest.mark.parametrize(
    ("model", "param"),
    [
        ({"output": "100001"}, "models.openai/gpt-4o-mini.output"),
        ({"provider_cost": {"input": "1", "output": "1e3"}}, "models.openai/gpt-4o-mini.provider_cost.output"),
        ({"provider_cost": {"input": "100000.1", "output": "1"}}, "models.openai/gpt-4o-mini.provider_cost.input"),
        ({"max_output_tokens": 10**12}, "models.openai/gpt-4o-mini.max_output_tokens"),
    ],
)
def test_a_price_file_past_the_bounds_is_refused_naming_the_field(admin: Admin, model: dict, param: str) -> None:
    response = admin.call("POST", "/prices/versions", content=price_file(**model))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("path", ["/prices/versions", "/replays"])
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"models": ' * 5_000 + b"1" + b"}" * 5_000,
        b'{"models": {"openai/x": {"input": ' + b"1" * 5000 + b', "output": "1"}}}',
    ],
)
def test_a_deeply_nested_or_huge_price_file_is_a_json_400(admin: Admin, path: str, body: bytes) -> None:
    refused(admin.call("POST", path, content=body), 400, "invalid_request")


def test_no_stored_event_carries_a_value_past_its_bound(admin: Admin) -> None:
    """After every refusal above in one place, the events hold only bounded amounts."""
    for amount in ["10000000", "1" * 40, "99999999999999999999999", "5"]:
        admin.call("POST", "/accounts/beta/grants", json={"amount": amount})
    admin.deliver(payment("pay_1", "1e10"))
    admin.deliver(payment("pay_2", "10000000"))
    amounts = [e.amount for e in admin.events("beta") if hasattr(e, "amount")]
    assert amounts and all(abs(a) <= MAX_AMOUNT for a in amounts)
    assert 0 <= admin.ledger.get_account("beta").balance <= MAX_BALANCE
    assert isinstance(admin.ledger.get_account("beta"), Account)
