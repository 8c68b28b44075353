"""The crossing rule of ``balance.low`` and ``balance.exhausted`` (application/alerts.py), for
any sequence of available balances and any thresholds: a threshold ``T`` fires at step ``i``
exactly when the available balance went from at or above ``T`` (step ``i−1``) to below it —
one notice per downward crossing, none without one, and so none again until the balance
was back at or above ``T``; ``balance.exhausted`` likewise at ``0`` (from above 0 to 0 or
less). Checked on the rule alone, and through the ledger and the projection runner with
any batch size (the notices do not depend on how the stream is cut into batches)."""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import in_memory_ledger
from application.accounts import Accounts
from application.alerts import AlertProcess, AlertThresholds, Watch
from application.ledger import Ledger
from projections.read_models import build_read_models
from tests.fakes.notice_outbox import FakeNoticeOutbox

thresholds_st = st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=4, unique=True)
balances_st = st.lists(st.integers(min_value=-5, max_value=120), min_size=1, max_size=40)


def expected_low(values: list[int], threshold: int) -> list[int]:
    """The steps (indexes into ``values[1:]``) at which ``threshold`` is crossed downwards."""
    return [i for i in range(1, len(values)) if values[i - 1] >= threshold > values[i]]


def expected_exhausted(values: list[int]) -> list[int]:
    return [i for i in range(1, len(values)) if values[i - 1] > 0 >= values[i]]


@given(start=st.integers(min_value=0, max_value=120), thresholds=thresholds_st, values=balances_st)
def test_each_threshold_fires_once_per_downward_crossing(start: int, thresholds: list[int], values: list[int]) -> None:
    watch = Watch()
    watch.move_to(start)
    watch.set_thresholds(thresholds)
    fired: dict[int, list[int]] = {t: [] for t in thresholds}
    exhausted: list[int] = []
    for step, value in enumerate(values, start=1):
        crossed, emptied = watch.move_to(value)
        assert crossed == sorted(crossed, reverse=True) and len(set(crossed)) == len(crossed)
        for threshold in crossed:
            fired[threshold].append(step)
        if emptied:
            exhausted.append(step)
    series = [start, *values]
    assert fired == {t: expected_low(series, t) for t in thresholds}
    assert exhausted == expected_exhausted(series)


C = 10**9
operations = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(min_value=1, max_value=40)),
        st.tuples(st.just("hold"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("settle"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("debit"), st.integers(min_value=1, max_value=40)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    thresholds=thresholds_st,
    ops=operations,
    batch_size=st.integers(min_value=1, max_value=7),
    catch_up_every=st.integers(min_value=1, max_value=10),
)
def test_the_process_fires_exactly_at_the_crossings_of_the_ledgers_available_balance(
    thresholds: list[int], ops: list[tuple[str, int]], batch_size: int, catch_up_every: int
) -> None:
    ledger = in_memory_ledger()
    ledger.initialise()
    try:
        accounts = Accounts(ledger)
        account_id = accounts.create_account("acme").id
        AlertThresholds(ledger).set_thresholds("acme", [t * C for t in thresholds])
        outbox = FakeNoticeOutbox()
        models = build_read_models(
            None,
            ledger,
            batch_size=batch_size,
            alerts=lambda states: AlertProcess(states, outbox, now=lambda: datetime.now(UTC)),
        )
        series = [0]
        open_holds: list[UUID] = []
        for index, (op, amount) in enumerate(ops):
            if _apply(ledger, accounts, account_id, open_holds, op, amount * C):
                series.append(ledger.get_account(account_id).available)
            if index % catch_up_every == 0:
                models.runner.catch_up()
        models.runner.catch_up()
        low = outbox.of_type("balance.low")
        for threshold in thresholds:
            fired = [n for n in low if n.data["threshold_nanocredits"] == threshold * C]
            assert len(fired) == len(expected_low(series, threshold * C)), (threshold, series)
            assert [n.data["available_nanocredits"] for n in fired] == [
                series[i] for i in expected_low(series, threshold * C)
            ]
        assert len(outbox.of_type("balance.exhausted")) == len(expected_exhausted(series))
        assert outbox.published == len(outbox.notices)  # each derived once: no duplicate ids
    finally:
        ledger.close()


def _apply(ledger: Ledger, accounts: Accounts, account_id: UUID, open_holds: list[UUID], op: str, amount: int) -> bool:
    """One event on the account (True), or nothing when the operation does not apply now."""
    account = ledger.get_account(account_id)
    if op == "grant":
        accounts.grant_credits("acme", amount)
        return True
    if op == "debit":
        if account.available <= 0:
            return False
        accounts.adjust_credits("acme", -min(amount, account.available), reason="test")
        return True
    if op == "hold":
        if amount > account.available:
            return False
        request = uuid4()
        expires = datetime.now(UTC) + timedelta(hours=1)
        ledger.change_account(account_id, lambda a: (a.place_hold(request, amount, expires), [])[1])
        open_holds.append(request)
        return True
    if not open_holds:
        return False
    request = open_holds.pop(0)
    if op == "settle":
        ledger.change_account(account_id, lambda a: (a.settle_hold(request, amount), [])[1])
    else:
        ledger.change_account(account_id, lambda a: (a.release_hold(request, "test"), [])[1])
    return True
