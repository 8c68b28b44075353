"""Spend-cap counts over window boundaries (domain/account.py): any interleaving of holds
placed at moving times (across UTC midnights and month ends, by the account alone or by one
of two keys), settlements in any order, and refunds of charges, some partial, leaves each
scope's count (the account's, each key's; day and month) at its latest window with exactly
that window's charges minus the refunds of those charges. A charge of an earlier window
(a hold placed before midnight, settled after one placed since) and a refund of one leave
the latest window's count alone. The account rebuilt from its events in their stored form
has the same counts, and a refund stored before refunds named their windows moves none."""

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain import spend_caps
from domain.account import Account

START = datetime(2026, 1, 30, 21, 0, tzinfo=UTC)  # a day and a month end come soon
TTL = timedelta(days=90)  # no hold expires here: the sweep is not what is tested
KEYS = (None, UUID(int=1), UUID(int=2))
STORED_FORM: Mapper[UUID] = Application().mapper  # the same JSON transcodings as the ledger's store


def scopes_of(api_key: UUID | None) -> list[str]:
    return ["account"] if api_key is None else ["account", api_key.hex]


class SpendWindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.account = Account(name="acme")
        self.account.grant_credits(10**15, "top-up")
        self.now = START
        self.open: dict[UUID, tuple[UUID | None, datetime]] = {}  # request -> its key and start
        self.charged: dict[UUID, tuple[UUID | None, datetime, int]] = {}  # not yet refunded
        # the model: scope -> window -> window key -> charges minus their refunds
        self.net: dict[str, dict[str, dict[str, int]]] = {}
        self.counted: dict[str, dict[str, set[str]]] = {}  # scope -> window -> keys a charge counted in

    @rule(hours=st.integers(min_value=0, max_value=30), minutes=st.integers(min_value=0, max_value=59))
    def time_passes(self, hours: int, minutes: int) -> None:
        self.now += timedelta(hours=hours, minutes=minutes)

    @rule(key=st.sampled_from(KEYS), amount=st.integers(min_value=0, max_value=10**6))
    def place_a_hold(self, key: UUID | None, amount: int) -> None:
        request_id = UUID(int=1000 + self.account.version)  # drawn alike on every replay
        self.account.place_hold(request_id, amount, self.now + TTL, api_key_id=key, now=self.now)
        self.open[request_id] = (key, self.now)

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(min_value=0), cost=st.integers(min_value=0, max_value=10**6))
    def settle_any_open_hold(self, pick: int, cost: int) -> None:
        request_id = list(self.open)[pick % len(self.open)]
        key, started_at = self.open.pop(request_id)
        charged = self.account.settle_hold(request_id, cost)
        self.charged[request_id] = (key, started_at, charged)
        self._model(key, started_at, charged)

    @precondition(lambda self: any(charge for _, _, charge in self.charged.values()))
    @rule(pick=st.integers(min_value=0), part=st.integers(min_value=1, max_value=100))
    def refund_a_charge(self, pick: int, part: int) -> None:
        refundable = [request for request, (_, _, charge) in self.charged.items() if charge]
        request_id = refundable[pick % len(refundable)]
        key, started_at, charge = self.charged.pop(request_id)
        amount = max(1, charge * part // 100)  # all of it, or a part
        self.account.refund_charge(request_id, amount, "goodwill", api_key_id=key, started_at=started_at)
        self._model(key, started_at, -amount)

    def _model(self, key: UUID | None, started_at: datetime, amount: int) -> None:
        for scope in scopes_of(key):
            for window, window_key in spend_caps.windows_at(started_at).items():
                by_key = self.net.setdefault(scope, {}).setdefault(window, {})
                by_key[window_key] = by_key.get(window_key, 0) + amount
                if amount >= 0:
                    self.counted.setdefault(scope, {}).setdefault(window, set()).add(window_key)

    def expected(self) -> dict[str, dict[str, list[Any]]]:
        """Each scope's latest window that a charge counted in, with that window's net."""
        return {
            scope: {window: [max(keys), self.net[scope][window][max(keys)]] for window, keys in windows.items()}
            for scope, windows in self.counted.items()
        }

    @invariant()
    def each_scope_counts_its_latest_window_charges_minus_their_refunds(self) -> None:
        assert self.account.spent == self.expected()

    @invariant()
    def the_account_rebuilt_from_its_stored_events_counts_the_same(self) -> None:
        rebuilt: Any = None
        for event in self.account.pending_events:
            rebuilt = cast(Any, STORED_FORM.to_domain_event(STORED_FORM.to_stored_event(event))).mutate(rebuilt)
        assert rebuilt.spent == self.account.spent


SpendWindowMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestSpendWindowRules = SpendWindowMachine.TestCase
