"""No event carries a value the read models cannot store, whatever operators and payment
systems send: any sequence of grants (some as text, any text), adjustments of either sign,
payments and refunds of any size, including far past every bound, leaves every stored
amount within ``MAX_AMOUNT`` and the balance within ``[0, MAX_BALANCE]``; what is refused
is refused whole (the balance is what the accepted movements make it), and the refunds of
a payment never add up to more than it."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from application.accounts import Accounts
from application.ledger import Ledger
from domain import ids
from domain.account import MovementReceipt
from domain.bounds import MAX_AMOUNT, MAX_BALANCE
from domain.errors import IdempotencyConflict, InvalidRequest, PaymentNotFound
from domain.money import InvalidAmount, parse_credits
from tests.fakes.clock import FakeClock

AMOUNTS = st.one_of(
    st.integers(1, 10**7),
    st.integers(MAX_AMOUNT - 3, MAX_AMOUNT + 3),
    st.integers(MAX_AMOUNT, 10**40),
    st.just(MAX_BALANCE),
)
TEXTS = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"-?[0-9]{1,40}(\.[0-9]{1,12})?", fullmatch=True),
    st.from_regex(r"[0-9]{1,8}(\.[0-9]{1,9})?", fullmatch=True),
)
PAYMENT_IDS = st.sampled_from([f"pay_{i}" for i in range(4)])


class BoundsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(
            {"PERSISTENCE_MODULE": "eventsourcing.popo"},
            vault=AesGcmKeyVault(bytes(32)),
            key_scheme_factory=HmacApiKeyScheme,
            clock=FakeClock(),
        )
        self.ledger.initialise()
        self.account_id = Accounts(self.ledger).create_account("acme").id
        self.expected = 0  # the balance the accepted movements make
        self.payments: dict[str, int] = {}
        self.refunded: dict[str, int] = {}
        self.refunds = 0

    def accepted(self, move, *args) -> int | None:
        """The amount applied, or None when the movement was refused (it must then move nothing)."""
        before = self.ledger.get_account("acme").balance
        try:
            result = move("acme", *args)
        except (InvalidRequest, PaymentNotFound, IdempotencyConflict):
            assert self.ledger.get_account("acme").balance == before
            return None
        return result.amount if result.credited else 0

    @rule(amount=AMOUNTS)
    def grant(self, amount: int) -> None:
        applied = self.accepted(Accounts(self.ledger).grant_credits, amount, "grant")
        assert (applied is not None) == (amount <= MAX_AMOUNT and self.expected + amount <= MAX_BALANCE)
        self.expected += applied or 0

    @rule(text=TEXTS)
    def grant_as_text(self, text: str) -> None:
        try:
            amount = parse_credits(text)
        except InvalidAmount:
            return
        assert 0 <= amount <= MAX_AMOUNT
        if amount:
            self.grant(amount)

    @initialize(near_the_bound=st.booleans())
    def start(self, near_the_bound: bool) -> None:
        """Half the runs start a few of the largest grants short of the balance's bound."""
        for _ in range(MAX_BALANCE // MAX_AMOUNT - 2 if near_the_bound else 0):
            self.grant(MAX_AMOUNT)

    @rule(times=st.integers(1, 3))
    def grant_the_largest_amount(self, times: int) -> None:
        for _ in range(times):
            self.grant(MAX_AMOUNT)

    @rule(amount=AMOUNTS, debit=st.booleans())
    def adjust(self, amount: int, debit: bool) -> None:
        available = self.ledger.get_account("acme").available
        applied = self.accepted(Accounts(self.ledger).adjust_credits, -amount if debit else amount, "correction")
        if amount > MAX_AMOUNT or (not debit and self.expected + amount > MAX_BALANCE):
            assert applied is None
        else:
            assert applied == (-min(amount, available) if debit else amount)
            self.expected += applied

    @rule(payment_id=PAYMENT_IDS, amount=AMOUNTS)
    def pay(self, payment_id: str, amount: int) -> None:
        applied = self.accepted(Accounts(self.ledger).record_payment, payment_id, amount)
        if payment_id in self.payments:  # a re-delivery, or the same id for another amount
            assert applied == (0 if amount == self.payments[payment_id] else None)
            return
        assert (applied is not None) == (amount <= MAX_AMOUNT and self.expected + amount <= MAX_BALANCE)
        if applied:
            self.payments[payment_id] = amount
            self.expected += applied

    @rule(payment_id=PAYMENT_IDS, amount=AMOUNTS)
    def refund(self, payment_id: str, amount: int) -> None:
        self.refunds += 1
        applied = self.accepted(Accounts(self.ledger).reverse_payment, f"re_{self.refunds}", amount, payment_id)
        left = self.payments.get(payment_id, 0) - self.refunded.get(payment_id, 0)
        assert (applied is not None) == (payment_id in self.payments and amount <= left)
        if applied is not None:
            self.refunded[payment_id] = self.refunded.get(payment_id, 0) + amount
            self.expected += applied

    @invariant()
    def every_stored_value_is_within_its_bound(self) -> None:
        account = self.ledger.get_account("acme")
        assert 0 <= account.balance <= MAX_BALANCE and account.balance == self.expected
        for event in self.ledger.repository.event_store.get(self.account_id):
            for name in ("amount", "requested"):
                value = getattr(event, name, None)
                assert value is None or abs(value) <= MAX_AMOUNT, (type(event).__name__, name, value)
        for payment_id, amount in self.payments.items():
            receipt = self.ledger.find(ids.receipt_id(self.account_id, "payment", payment_id))
            assert isinstance(receipt, MovementReceipt) and receipt.amount == amount <= MAX_AMOUNT
            assert receipt.refunded == self.refunded.get(payment_id, 0) <= amount


BoundsMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestBoundsRules = BoundsMachine.TestCase
