"""The wallet through the application, with re-deliveries: any sequence of payment
webhooks (each id delivered any number of times), payment refunds, expiring grants
(each key delivered any number of times), requests opened, completed, failed or
abandoned, time passing and expiry sweeps keeps: each payment and grant credited at
most once, each refund debited at most once, each request charged at most once, each
grant's deadline applied at most once, available ≥ 0, and
balance = payments + grants − refunds − charges − expired. A key delivered again with
other content is refused (idempotency_conflict); a refund of a payment the account never
received, or past what is left of its payment, is refused and moves nothing."""

from datetime import datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import OpenedRequest, RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.account import Account
from domain.errors import IdempotencyConflict, InsufficientCredits, PaymentNotFound, RefundExceedsPayment
from domain.usage import Usage
from tests.fakes.clock import FakeClock

MODEL = "openai/gpt-test"
PAYMENT_IDS = st.sampled_from([f"pay_{i}" for i in range(5)])
REFUND_IDS = st.sampled_from([f"re_{i}" for i in range(4)])
GRANT_KEYS = st.sampled_from([f"promo_{i}" for i in range(4)])


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.ledger = Ledger(
            {"PERSISTENCE_MODULE": "eventsourcing.popo"},
            vault=AesGcmKeyVault(bytes(32)),
            key_scheme_factory=HmacApiKeyScheme,
            clock=self.clock,
        )
        self.ledger.initialise()
        ProviderRegistry(self.ledger).register_provider(
            "openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001"
        )
        Prices(self.ledger).set_price(MODEL, price_from_credits(input="1", output="2"))
        Accounts(self.ledger).create_account("acme")
        self.key = ApiKeys(self.ledger).issue_api_key("acme").plaintext
        self.billing = RequestBilling(
            self.ledger,
            Router(self.ledger, CredentialHealth()),
            mode="credits",
            hold_ttl=timedelta(minutes=5),
            status_of=status_of,
        )
        self.payments: dict[str, int] = {}
        self.refunds: dict[str, int] = {}
        self.charges: dict[UUID, int] = {}
        self.grants: dict[str, int] = {}
        self.grant_terms: dict[str, tuple[int, datetime]] = {}
        self.refund_terms: dict[str, tuple[str, int]] = {}
        self.refunded_of: dict[str, int] = {}  # payment id -> the sum of its refunds asked
        self.open: list[OpenedRequest] = []

    @rule(payment_id=PAYMENT_IDS, amount=st.integers(1, 10**7), again=st.booleans())
    def deliver_payment(self, payment_id: str, amount: int, again: bool) -> None:
        if payment_id in self.payments and again:
            amount = self.payments[payment_id]  # a re-delivery
        if payment_id in self.payments and amount != self.payments[payment_id]:
            with pytest.raises(IdempotencyConflict):
                Accounts(self.ledger).record_payment("acme", payment_id, amount)
            return
        result = Accounts(self.ledger).record_payment("acme", payment_id, amount)
        assert result.credited == (payment_id not in self.payments)
        self.payments.setdefault(payment_id, amount)

    @rule(refund_id=REFUND_IDS, payment_id=PAYMENT_IDS, amount=st.integers(1, 10**7), again=st.booleans())
    def deliver_refund(self, refund_id: str, payment_id: str, amount: int, again: bool) -> None:
        if refund_id in self.refund_terms and again:
            payment_id, amount = self.refund_terms[refund_id]  # a re-delivery
        available = self.ledger.get_account("acme").available
        left = self.payments.get(payment_id, 0) - self.refunded_of.get(payment_id, 0)
        if refund_id in self.refund_terms:
            if self.refund_terms[refund_id] != (payment_id, amount):
                with pytest.raises(IdempotencyConflict):
                    Accounts(self.ledger).reverse_payment("acme", refund_id, amount, payment_id)
            else:
                assert Accounts(self.ledger).reverse_payment("acme", refund_id, amount, payment_id).credited is False
            return
        if payment_id not in self.payments or amount > left:
            with pytest.raises(PaymentNotFound if payment_id not in self.payments else RefundExceedsPayment):
                Accounts(self.ledger).reverse_payment("acme", refund_id, amount, payment_id)
            return
        result = Accounts(self.ledger).reverse_payment("acme", refund_id, amount, payment_id)
        assert result.credited and -result.amount == min(amount, available)
        self.refunds[refund_id] = -result.amount
        self.refund_terms[refund_id] = (payment_id, amount)
        self.refunded_of[payment_id] = self.refunded_of.get(payment_id, 0) + amount

    @rule(key=GRANT_KEYS, amount=st.integers(1, 10**7), minutes=st.integers(1, 20), again=st.booleans())
    def grant_expiring_credit(self, key: str, amount: int, minutes: int, again: bool) -> None:
        if key in self.grant_terms and again:
            amount, expires_at = self.grant_terms[key]  # a re-delivery
        else:
            expires_at = self.clock.now() + timedelta(minutes=minutes)
        if key in self.grant_terms and self.grant_terms[key] != (amount, expires_at):
            with pytest.raises(IdempotencyConflict):
                Accounts(self.ledger).grant_credits("acme", amount, "promo", key, expires_at=expires_at)
            return
        result = Accounts(self.ledger).grant_credits("acme", amount, "promo", key, expires_at=expires_at)
        assert result.credited == (key not in self.grants)
        self.grants.setdefault(key, amount)
        self.grant_terms.setdefault(key, (amount, expires_at))

    @rule(minutes=st.integers(1, 15))
    def time_passes_and_the_sweep_runs(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)
        Accounts(self.ledger).expire_grants("acme")
        assert Accounts(self.ledger).expire_grants("acme") == []  # a deadline is applied once
        assert all(lot.expires_at > self.clock.now() for lot in self.ledger.get_account("acme").lots.values())

    @rule(prompt=st.integers(1, 3000), max_tokens=st.integers(1, 2000))
    def open_request(self, prompt: int, max_tokens: int) -> None:
        shape = RequestShape(MODEL, prompt_bytes=prompt, max_output_tokens=max_tokens, choices=1, stream=False)
        try:
            self.open.append(self.billing.open_request(self.key, shape))
        except InsufficientCredits:
            pass

    @precondition(lambda self: self.open)
    @rule(data=st.data(), twice=st.booleans())
    def complete(self, data: st.DataObject, twice: bool) -> None:
        opened = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        usage = Usage(
            input_tokens=data.draw(st.integers(0, opened.shape.prompt_bytes)),
            output_tokens=data.draw(st.integers(0, opened.shape.max_output_tokens)),
        )
        route = next(self.billing.router.routes(opened.targets[0]))
        receipt = self.billing.complete_request(opened, route, usage)
        if twice:
            assert self.billing.complete_request(opened, route, usage).charge == receipt.charge
        assert opened.request_id not in self.charges
        self.charges[opened.request_id] = receipt.charge

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        opened = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        self.billing.fail_request(opened, status=502, error_code="upstream_error")

    @rule()
    def crash_and_sweep(self) -> None:
        """Every open request's process died: after the deadline the sweep frees the holds."""
        self.clock.advance(minutes=6)
        released = set(Accounts(self.ledger).release_expired_holds("acme"))
        assert released == {o.request_id for o in self.open}
        self.open.clear()

    @invariant()
    def the_wallet_adds_up(self) -> None:
        account = self.ledger.get_account("acme")
        events = self.ledger.repository.event_store.get(account.id)
        expiries = [e for e in events if isinstance(e, Account.GrantExpired)]
        deadlines = [e.grant for e in expiries if e.request_id is None]
        assert len(deadlines) == len(set(deadlines))
        assert account.balance == (
            sum(self.payments.values())
            + sum(self.grants.values())
            - sum(self.refunds.values())
            - sum(self.charges.values())
            - sum(e.amount for e in expiries)
        )
        assert account.available >= 0
        assert account.held == sum(o.hold for o in self.open)


WalletMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestWalletRules = WalletMachine.TestCase
