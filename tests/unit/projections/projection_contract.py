"""One set of read-model tests, run against every store (in memory, SQLite, PostgreSQL).

A backend subclasses ``ProjectionContract`` and provides two fixtures: ``ledger`` (a
``FakeLedger`` on its event store) and ``make_read_models`` (builds a fresh
``ReadModels`` on the *same* read-model database each time it is called, so a second
call behaves like a restarted or a second process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from domain.account import Account
from domain.errors import NotFound, ProjectionStopped
from domain.request_record import RequestRecord, record_facts
from projections.read_models import ReadModels, unguarded
from projections.request_log import hours_window, usage_of
from projections.usage import UsageCounts, counts_of, hour_of

T0 = datetime(2030, 1, 2, 10, 0, tzinfo=UTC)
NANO = 10**9


class FakeLedger(Application):
    """Saves the aggregates the projections read, the way the real Ledger does."""

    name = "Ledger"

    def open_account(self, name: str) -> UUID:
        account = Account(name=name)
        self.save(account)
        return account.id

    def grant(self, account_id: UUID, amount: int) -> None:
        account = self.repository.get(account_id)
        account.grant_credits(amount, reason="test")
        self.save(account)

    def hold(self, account_id: UUID, request_id: UUID, amount: int) -> None:
        account = self.repository.get(account_id)
        account.place_hold(request_id, amount, expires_at=T0 + timedelta(minutes=15))
        self.save(account)

    def settle(self, account_id: UUID, request_id: UUID, cost: int) -> int:
        account = self.repository.get(account_id)
        charged = account.settle_hold(request_id, cost)
        self.save(account)
        return charged

    def charge_late(self, account_id: UUID, request_id: UUID, cost: int) -> int:
        """Charge a request whose hold expired and was released first."""
        account = self.repository.get(account_id)
        charged = account.charge_without_hold(request_id, cost)
        self.save(account)
        return charged

    def release(self, account_id: UUID, request_id: UUID) -> None:
        account = self.repository.get(account_id)
        account.release_hold(request_id, reason="upstream failed")
        self.save(account)

    def account(self, account_id: UUID) -> Account:
        return self.repository.get(account_id)

    def record(self, at: datetime, **overrides: Any) -> dict[str, Any]:
        """Save one RequestRecord at ``at``; returns its details (with ``request_id``)."""
        details = request_details(**overrides)
        request_id = uuid4()
        event_class = RequestRecord.Completed if details["outcome"] == "completed" else RequestRecord.Failed
        self.save(RequestRecord._create(event_class, id=request_id, details=details, timestamp=at))
        return {"request_id": request_id, "at": at, **details}


def request_details(
    *,
    account_id: UUID | None = None,
    api_key_id: UUID | None = None,
    model: str = "openai/gpt-4o-mini",
    failed: bool = False,
    tokens: tuple[int, int] = (100, 20),
    source: str = "provider",
    charge: int = 0,
    status: int | None = None,
    attribution: dict[str, Any] | None = None,
) -> dict[str, Any]:
    usage = None
    if not failed:
        usage = {
            "input_tokens": tokens[0],
            "cached_input_tokens": tokens[0] // 4,
            "output_tokens": tokens[1],
            "reasoning_tokens": tokens[1] // 5,
            "images": 1 if model.startswith("openai/dall") else 0,
            "source": source,
        }
    return {
        "outcome": "failed" if failed else "completed",
        "account_id": account_id.hex if account_id else None,
        "api_key_id": api_key_id.hex if api_key_id else None,
        "provider": model.split("/")[0],
        "model": model,
        "upstream_model": model.split("/")[1],
        "endpoint": "chat.completions",
        "stream": not failed,
        "status": status or (502 if failed else 200),
        "error_code": "upstream_error" if failed else None,
        "usage": usage,
        "charge": 0 if failed else charge,
        "cost": 0 if failed else charge + 7,
        "price_book_version": None if failed else 3,
        "priced": not failed,
        "latency_ms": 12.5,
        "ttfb_ms": None if failed else 3.25,
        "credential_id": "cred-1",
        **({"attribution": attribution} if attribution else {}),
    }


def snapshot(rm: ReadModels) -> dict[str, Any]:
    balances = rm.balances.list_balances()
    return {
        "balances": [asdict(b) for b in balances],
        "holds": [asdict(h) for b in balances for h in rm.balances.list_open_holds(b.account_id)],
        "usage": [asdict(u) for u in rm.usage.list_usage()],
        "requests": [asdict(r) for r in rm.requests.list_requests(limit=10_000)],
        "providers": [asdict(r) for r in rm.providers.list_hours()] if rm.providers is not None else None,
    }


def busy_history(ledger: FakeLedger) -> dict[str, UUID]:
    """Two accounts with every kind of account event, and requests over two hours."""
    alice, bob = ledger.open_account("alice"), ledger.open_account("bob")
    key_a, key_b = uuid4(), uuid4()
    ledger.grant(alice, 5 * NANO)
    ledger.grant(bob, 1 * NANO)
    for i in range(6):
        request_id = uuid4()
        ledger.hold(alice, request_id, 100_000 + i)
        if i % 3 == 0:
            ledger.release(alice, request_id)
        elif i % 3 == 1:
            ledger.settle(alice, request_id, 40_000 + i)
    expired = uuid4()
    ledger.hold(alice, expired, 70_000)
    ledger.release(alice, expired)
    ledger.charge_late(alice, expired, 65_000)
    short = uuid4()
    ledger.hold(bob, short, NANO)
    ledger.settle(bob, short, 3 * NANO)  # charges only what bob can pay
    for i in range(8):
        ledger.record(
            T0 + timedelta(minutes=17 * i),
            account_id=alice if i % 2 else bob,
            api_key_id=key_a if i % 2 else key_b,
            model="openai/gpt-4o-mini" if i % 3 else "anthropic/claude-sonnet-4",
            failed=i == 5,
            source="estimated" if i == 6 else "provider",
            charge=1_000 * i,
            attribution=ATTRIBUTIONS[i % len(ATTRIBUTIONS)],
        )
    return {"alice": alice, "bob": bob, "key_a": key_a, "key_b": key_b}


# what busy_history's requests were attributed to, in turn (None: nothing sent)
ATTRIBUTIONS: list[dict[str, Any] | None] = [
    {"user": "u-1", "tags": ["team:ml", "run/7"], "metadata": {"job": "nightly", "z": "1"}},
    {"user": "u-2", "tags": ["team:ml"]},
    None,
    {"tags": ["run/7"], "metadata": {"job": "adhoc"}},
]


class Refusals(list[int]):
    """Amounts a projection was given; ``refuse``: the one it raises on."""

    refuse: int | None = None


def refuse_amount(read_models: ReadModels, name: str, amount: int) -> Refusals:
    """Make projection ``name`` raise on any event of ``amount`` (a bug, or data its view cannot hold)."""
    projection = read_models.runner.projections[name]
    real_process, calls = projection.process, Refusals()
    calls.refuse = amount

    def process(tx: Any, events: list[Any]) -> None:
        calls.extend(getattr(event, "amount", 0) for event in events)
        if calls.refuse is not None and any(getattr(event, "amount", None) == calls.refuse for event in events):
            raise ValueError(f"cannot apply {calls.refuse}")
        real_process(tx, events)

    projection.process = process  # type: ignore[method-assign]
    return calls


def _position_of_grant(ledger: FakeLedger, account_id: UUID, amount: int) -> int:
    topic = get_topic(Account.CreditGranted)
    for notification in ledger.recorder.select_notifications(1, 10_000, topics=[topic]):
        event = ledger.mapper.to_domain_event(notification)
        assert isinstance(event, Account.CreditGranted)
        if event.originator_id == account_id and event.amount == amount:
            return notification.id
    raise AssertionError(f"no grant of {amount}")


class ProjectionContract:
    ledger: FakeLedger

    @pytest.fixture
    def read_models(self, make_read_models: Callable[[], ReadModels]) -> ReadModels:
        return make_read_models()

    def test_balances_equal_what_the_account_aggregate_says(self, ledger: FakeLedger, read_models: ReadModels) -> None:
        ids = busy_history(ledger)
        read_models.runner.catch_up()

        for name in ("alice", "bob"):
            account = ledger.account(ids[name])
            row = read_models.balances.get_balance(account.id)
            assert row is not None
            assert (row.name, row.balance, row.held, row.available) == (
                name,
                account.balance,
                account.held,
                account.available,
            )
            assert row.balance == row.granted_total - row.charged_total
            holds = read_models.balances.list_open_holds(account.id)
            assert {h.request_id.hex: h.amount for h in holds} == {k: h.amount for k, h in account.holds.items()}
            assert all(h.expires_at == T0 + timedelta(minutes=15) for h in holds)
        bob = read_models.balances.get_balance(ids["bob"])
        assert bob is not None and (bob.balance, bob.charged_total, bob.uncollected_total) == (0, NANO, 2 * NANO)
        assert [b.name for b in read_models.balances.list_balances()] == ["alice", "bob"]
        assert read_models.balances.get_balance(uuid4()) is None

    def test_a_hold_opened_and_closed_in_one_batch_leaves_no_row_and_a_later_close_removes_it(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        alice = ledger.open_account("alice")
        ledger.grant(alice, NANO)
        first, second = uuid4(), uuid4()
        ledger.hold(alice, first, 10)
        ledger.settle(alice, first, 4)
        ledger.hold(alice, second, 20)
        read_models.runner.catch_up()
        assert [h.request_id for h in read_models.balances.list_open_holds(alice)] == [second]

        ledger.release(alice, second)
        read_models.runner.catch_up()
        row = read_models.balances.get_balance(alice)
        assert read_models.balances.list_open_holds(alice) == []
        assert row is not None and (row.balance, row.held, row.available) == (NANO - 4, 0, NANO - 4)

    def test_usage_rollups_sum_exactly_per_account_key_model_and_hour(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        alice, key = uuid4(), uuid4()
        records = [
            ledger.record(
                T0 + timedelta(minutes=m), account_id=alice, api_key_id=key, tokens=(10 + m, 3 + m), charge=m * 1_000
            )
            for m in (0, 5, 59)
        ]
        records.append(
            ledger.record(T0 + timedelta(minutes=60), account_id=alice, api_key_id=key, source="estimated", charge=9)
        )
        records.append(ledger.record(T0 + timedelta(minutes=61), account_id=alice, api_key_id=key, failed=True))
        records.append(
            ledger.record(
                T0 + timedelta(minutes=2), account_id=alice, api_key_id=key, model="anthropic/claude-sonnet-4"
            )
        )
        records.append(ledger.record(T0 + timedelta(minutes=3)))  # no account, no key
        read_models.runner.catch_up()

        expected: dict[tuple[Any, ...], UsageCounts] = {}
        for r in records:
            bucket = (r["account_id"], r["api_key_id"], r["model"], hour_of(r["at"]))
            expected.setdefault(bucket, UsageCounts()).add(counts_of(record_facts(r)))
        rows = read_models.usage.list_usage()
        got = {
            (
                u.account_id.hex if u.account_id else None,
                u.api_key_id.hex if u.api_key_id else None,
                u.model,
                u.hour,
            ): u.counts
            for u in rows
        }
        assert got == expected
        first_hour = got[(alice.hex, key.hex, "openai/gpt-4o-mini", T0)]
        assert (first_hour.requests, first_hour.input_tokens, first_hour.output_tokens, first_hour.charge) == (
            3,
            94,
            73,
            64_000,
        )
        second_hour = got[(alice.hex, key.hex, "openai/gpt-4o-mini", T0 + timedelta(hours=1))]
        assert (second_hour.requests, second_hour.failed_requests, second_hour.estimated_requests) == (2, 1, 1)
        assert all(u.provider == u.model.split("/")[0] for u in rows)

        totals = read_models.usage.get_usage_totals(account_id=alice)
        assert totals.requests == 6 and totals.charge == 64_009
        assert read_models.usage.get_usage_totals(account_id=alice, since=T0 + timedelta(hours=1)).requests == 2
        assert [u.hour for u in read_models.usage.list_usage(until=T0 + timedelta(hours=1))] == [T0, T0, T0]
        assert read_models.usage.get_usage_totals().requests == len(records)

    def test_request_log_has_one_row_per_request_newest_first(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        alice, key = uuid4(), uuid4()
        ok = ledger.record(T0, account_id=alice, api_key_id=key, charge=1_234, tokens=(500, 40))
        failed = ledger.record(
            T0 + timedelta(seconds=1), account_id=alice, api_key_id=key, failed=True, model="anthropic/claude-sonnet-4"
        )
        other = ledger.record(T0 + timedelta(seconds=2), status=429)
        read_models.runner.catch_up()

        row = read_models.requests.get_request(ok["request_id"])
        assert row is not None
        assert (row.at, row.account_id, row.api_key_id, row.provider, row.model, row.upstream_model) == (
            T0,
            alice,
            key,
            "openai",
            "openai/gpt-4o-mini",
            "gpt-4o-mini",
        )
        assert (row.outcome, row.status, row.error_code, row.stream, row.latency_ms, row.ttfb_ms) == (
            "completed",
            200,
            None,
            True,
            12.5,
            3.25,
        )
        assert (row.input_tokens, row.cached_input_tokens, row.output_tokens, row.reasoning_tokens) == (500, 125, 40, 8)
        assert (row.usage_source, row.charge, row.cost, row.price_book_version) == ("provider", 1_234, 1_241, 3)
        bad = read_models.requests.get_request(failed["request_id"])
        assert bad is not None
        assert (bad.outcome, bad.status, bad.error_code, bad.usage_source, bad.ttfb_ms, bad.charge, bad.stream) == (
            "failed",
            502,
            "upstream_error",
            None,
            None,
            0,
            False,
        )

        def ids(rows: list[Any]) -> list[UUID]:
            return [r.request_id for r in rows]

        newest_first = [other["request_id"], failed["request_id"], ok["request_id"]]
        assert ids(read_models.requests.list_requests()) == newest_first
        assert ids(read_models.requests.list_requests(limit=2)) == newest_first[:2]
        assert ids(read_models.requests.list_requests(account_id=alice)) == newest_first[1:]
        assert ids(read_models.requests.list_requests(model="anthropic/claude-sonnet-4")) == [failed["request_id"]]
        assert ids(read_models.requests.list_requests(status=429)) == [other["request_id"]]
        assert ids(
            read_models.requests.list_requests(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=2))
        ) == [failed["request_id"]]
        assert read_models.requests.get_request(uuid4()) is None

    def test_request_log_filters_by_user_tag_and_metadata_exactly_and_sums_usage_from_them(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        ids = busy_history(ledger)
        old_style = ledger.record(T0 + timedelta(hours=3), account_id=ids["alice"])  # no attribution key at all
        read_models.runner.catch_up()
        everything = read_models.requests.list_requests(limit=1000)

        def matching(**given: Any) -> list[UUID]:
            return [r.request_id for r in read_models.requests.list_requests(limit=1000, **given)]

        def expected(keep: Callable[[dict[str, Any]], bool]) -> list[UUID]:
            sent = {i: ATTRIBUTIONS[i % len(ATTRIBUTIONS)] or {} for i in range(8)}
            by_time = {T0 + timedelta(minutes=17 * i): sent[i] for i in sent}
            return [r.request_id for r in everything if r.at in by_time and keep(by_time[r.at])]

        assert matching(user="u-1") == expected(lambda a: a.get("user") == "u-1") != []
        assert matching(tag="team:ml") == expected(lambda a: "team:ml" in a.get("tags", [])) != []
        assert matching(tag="run/7") == expected(lambda a: "run/7" in a.get("tags", [])) != []
        assert matching(metadata=("job", "adhoc")) == expected(lambda a: a.get("metadata", {}).get("job") == "adhoc")
        assert matching(user="u-1", tag="run/7", metadata=("z", "1")) == matching(user="u-1") != []
        assert matching(user="u-2", tag="run/7") == []
        assert matching(tag="team") == [] and matching(tag="team:ml%") == [] and matching(user="u") == []
        assert matching(tag="team:ml", account_id=ids["alice"]) == [
            r for r in matching(tag="team:ml") if read_models.requests.get_request(r).account_id == ids["alice"]
        ]

        row = read_models.requests.get_request(matching(user="u-1")[0])
        assert row is not None
        assert (row.end_user, row.tags, row.metadata) == ("u-1", ("team:ml", "run/7"), (("job", "nightly"), ("z", "1")))
        plain = read_models.requests.get_request(old_style["request_id"])
        assert plain is not None and (plain.end_user, plain.tags, plain.metadata) == (None, (), ())

        # usage summed from the matching requests is the usage rollup of exactly those records
        tagged = list(read_models.requests.iter_requests(None, None, tag="team:ml"))
        summed = usage_of(tagged)
        assert [r.request_id for r in tagged] == sorted(
            matching(tag="team:ml"), key=lambda r: (read_models.requests.get_request(r).at, r.hex)
        )
        assert sum(u.requests for u in summed) == len(tagged)
        assert sum(u.charge for u in summed) == sum(r.charge for r in tagged)
        assert sum(u.images for u in summed) == sum(r.images for r in tagged)
        unfiltered = usage_of(read_models.requests.iter_requests(None, None))
        assert [asdict(u) for u in unfiltered] == [asdict(u) for u in read_models.usage.list_usage()]
        window = (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
        assert usage_of(read_models.requests.iter_requests(*hours_window(*window)), *window) == (
            read_models.usage.list_usage(since=window[0], until=window[1])
        )

    def test_rebuild_from_zero_gives_identical_tables_to_the_live_ones(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        read_models = make_read_models()
        read_models.runner.batch_size = 3  # the live tables are built in many small batches
        ledger.grant(ledger.open_account("carol"), NANO)
        applied = read_models.runner.catch_up()
        busy_history(ledger)
        applied += read_models.runner.catch_up()
        live = snapshot(read_models)
        assert live["balances"] and live["holds"] and live["usage"] and live["requests"] and live["providers"]

        read_models.runner.batch_size = 1000  # the rebuild replays everything in one batch
        assert read_models.runner.rebuild() == applied
        assert snapshot(read_models) == live
        assert read_models.runner.rebuild("usage") > 0
        assert snapshot(read_models) == live

    def test_rebuild_counts_every_replayed_event_and_rejects_an_unknown_name(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        alice = ledger.open_account("alice")
        ledger.grant(alice, 7)
        ledger.record(T0, account_id=alice)
        assert (
            read_models.runner.catch_up() == 8
        )  # 2 account events to balances and to the audit log; 1 grant to the ledger entries; 1 record × (usage,
        # request log, providers)
        assert read_models.runner.rebuild() == 8
        assert read_models.runner.rebuild("balances") == 2
        with pytest.raises(NotFound, match="no projection named 'nope'"):
            read_models.runner.rebuild("nope")

    def test_the_same_batch_delivered_twice_changes_nothing(self, ledger: FakeLedger, read_models: ReadModels) -> None:
        busy_history(ledger)
        batch = ledger.recorder.select_notifications(None, 1000)
        projections = read_models.runner.projections
        names = list(projections)
        applied = sum(read_models.runner.apply(name, batch[:10]) for name in names)  # a partial batch first
        applied += sum(read_models.runner.apply(name, batch) for name in names)  # then one overlapping it
        once = snapshot(read_models)

        assert sum(read_models.runner.apply(name, batch) for name in names) == 0
        assert sum(read_models.runner.apply(name, batch[3:7]) for name in names) == 0
        assert read_models.runner.catch_up() == 0
        assert snapshot(read_models) == once
        assert applied == sum(n.topic in p.topics for n in batch for p in projections.values())
        assert len(once["requests"]) == 8 and sum(u["requests"] for u in once["usage"]) == 8

    def test_a_batch_that_fails_midway_leaves_rows_and_position_untouched(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        alice = ledger.open_account("alice")
        ledger.grant(alice, NANO)
        read_models.runner.catch_up()
        before = snapshot(read_models)
        positions = read_models.store.positions()
        ledger.grant(alice, 5)
        ledger.record(T0, account_id=alice)

        balances = read_models.runner.projections["balances"]
        real_process = balances.process

        def crash_after_writing(tx: Any, events: list[Any]) -> None:
            real_process(tx, events)
            raise RuntimeError("crash mid-batch")

        balances.process = crash_after_writing  # type: ignore[method-assign]
        read_models.runner.catch_up()  # balances stops at the grant; the others go on
        assert [asdict(b) for b in unguarded(read_models.balances).list_balances()] == before["balances"]
        assert read_models.store.positions()["balances"] == positions["balances"]
        assert len(read_models.requests.list_requests()) == 1

        balances.process = real_process  # type: ignore[method-assign]
        read_models.runner.catch_up(retry_stopped=True)
        row = read_models.balances.get_balance(alice)
        assert row is not None and row.balance == NANO + 5
        assert read_models.store.stops() == {}

    def test_a_projection_that_cannot_apply_an_event_stops_there_alone_and_says_why(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        read_models = make_read_models()
        read_models.runner.batch_size = 4  # the bad event in the middle of a batch, more batches after it
        alice = ledger.open_account("alice")
        for amount in (1, 2, 13, 4, 5):
            ledger.grant(alice, amount)
        ledger.record(T0, account_id=alice)
        bad = _position_of_grant(ledger, alice, 13)
        calls = refuse_amount(read_models, "balances", 13)

        read_models.runner.catch_up()

        head = ledger.recorder.max_notification_id()
        assert read_models.store.positions() == {
            "balances": bad - 1,
            "usage": head,
            "request_log": head,
            "ledger_entries": head,
            "provider_hourly": head,
            "audit": head,
        }
        stop = read_models.store.stops()["balances"]
        assert (stop.position, stop.topic, stop.error) == (
            bad,
            get_topic(Account.CreditGranted),
            "ValueError: cannot apply 13",
        )
        row = unguarded(read_models.balances).get_balance(alice)
        assert row is not None and row.balance == 1 + 2  # the good events before it are applied, exactly once
        with pytest.raises(ProjectionStopped) as stopped:
            read_models.balances.get_balance(alice)
        assert (stopped.value.code, stopped.value.projection, stopped.value.position) == (
            "projection_stopped",
            "balances",
            bad,
        )
        assert [e.amount for e in read_models.ledger.list_entries(alice)] == [1, 2, 13, 4, 5]
        assert len(read_models.requests.list_requests()) == 1
        status = {s.name: s for s in read_models.runner.status()}
        assert (
            status["balances"].state,
            status["balances"].stopped_at,
            status["balances"].error,
            status["balances"].position,
            status["balances"].lag,
        ) == ("stopped", bad, "ValueError: cannot apply 13", bad - 1, head - bad + 1)
        assert status["balances"].stopped_event == get_topic(Account.CreditGranted)
        assert status["balances"].stopped_on is not None
        assert {s.state for n, s in status.items() if n != "balances"} == {"running"}

        # a stopped projection is skipped: no retry, and the others keep going
        tries = len(calls)
        ledger.grant(alice, 6)
        read_models.runner.catch_up()
        assert len(calls) == tries
        assert read_models.store.positions()["balances"] == bad - 1
        assert read_models.store.positions()["ledger_entries"] == head + 1

        # another process sees the stop, skips it and refuses reads of its view too
        other = make_read_models()
        assert other.runner.catch_up() == 0
        assert other.store.stops()["balances"].position == bad
        with pytest.raises(ProjectionStopped):
            other.balances.list_balances()

        # a rebuild tries again from zero and stops at the same event while the cause stays
        read_models.runner.rebuild("balances")
        assert read_models.store.stops()["balances"].position == bad
        assert read_models.store.positions()["balances"] == bad - 1

        # fixed: the first pass of a started runner (a restart) tries it again and it runs
        calls.refuse = None
        read_models.runner.poll_interval = 0.01
        read_models.runner.start()
        try:
            assert wait_until(lambda: read_models.store.stops() == {})
        finally:
            read_models.runner.stop()
        read_models.runner.catch_up()
        row = read_models.balances.get_balance(alice)
        assert row is not None and row.balance == 1 + 2 + 13 + 4 + 5 + 6
        assert {s.state for s in read_models.runner.status()} == {"running"}

    def test_a_database_that_fails_for_a_moment_is_retried_not_a_stop(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        alice = ledger.open_account("alice")
        ledger.grant(alice, 7)
        balances = read_models.runner.projections["balances"]
        real_process = balances.process

        def unavailable(tx: Any, events: list[Any]) -> None:
            raise ConnectionError("the database went away")

        balances.process = unavailable  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            read_models.runner.catch_up()
        assert read_models.store.stops() == {}
        balances.process = real_process  # type: ignore[method-assign]
        read_models.runner.catch_up()
        row = read_models.balances.get_balance(alice)
        assert row is not None and row.balance == 7

    def test_status_reports_position_head_and_lag(self, ledger: FakeLedger, read_models: ReadModels) -> None:
        alice = ledger.open_account("alice")
        ledger.grant(alice, 1)
        assert {(s.name, s.position, s.max_notification_id, s.lag) for s in read_models.runner.status()} == {
            ("balances", 0, 2, 2),
            ("usage", 0, 2, 2),
            ("request_log", 0, 2, 2),
            ("ledger_entries", 0, 2, 2),
            ("provider_hourly", 0, 2, 2),
            ("audit", 0, 2, 2),
        }
        read_models.runner.catch_up()
        ledger.grant(alice, 1)
        read_models.runner.catch_up()
        # usage and request log skip account events by topic, yet their position moves on
        assert {(s.position, s.lag) for s in read_models.runner.status()} == {(3, 0)}

    def test_a_restarted_runner_resumes_from_its_tracked_position(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        first = make_read_models()
        alice = ledger.open_account("alice")
        ledger.grant(alice, 10)
        assert first.runner.catch_up() == 5  # balances 2, ledger entries 1, audit log 2
        ledger.grant(alice, 5)

        restarted = make_read_models()
        assert restarted.runner.catch_up() == 3
        row = restarted.balances.get_balance(alice)
        assert row is not None and (row.balance, row.granted_total) == (15, 15)

    def test_background_runner_projects_new_events_when_woken(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        read_models.runner.poll_interval = 30.0  # only wake() can make it look again in time
        read_models.runner.start()
        try:
            alice = ledger.open_account("alice")
            ledger.grant(alice, 42)
            assert read_models.runner.running
            read_models.runner.wake()
            assert wait_until(
                lambda: (row := read_models.balances.get_balance(alice)) is not None and row.balance == 42
            )
        finally:
            read_models.runner.stop()
        assert not read_models.runner.running

    def test_an_idle_background_runner_only_reads_the_head_until_something_is_new(
        self, ledger: FakeLedger, read_models: ReadModels, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        passes: list[int] = []
        catch_up = read_models.runner.catch_up
        monkeypatch.setattr(read_models.runner, "catch_up", lambda **kw: passes.append(1) or catch_up(**kw))
        read_models.runner.poll_interval = 0.01
        read_models.runner.start()
        try:
            time.sleep(0.5)  # ~50 polls of an idle store
            assert 1 <= len(passes) <= 2  # the first pass, at most one whole pass a second after it
            alice = ledger.open_account("alice")
            ledger.grant(alice, 7)
            assert wait_until(lambda: (row := read_models.balances.get_balance(alice)) is not None and row.balance == 7)
        finally:
            read_models.runner.stop()

    def test_a_runner_that_waited_for_the_lock_applies_only_what_the_holder_left(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        first, second = make_read_models(), make_read_models()
        alice = ledger.open_account("alice")
        first.runner.catch_up()  # the tracking rows exist: only the lock can make the waiter wait
        ledger.grant(alice, 5)
        balances = first.runner.projections["balances"]
        real_process, inside, release = balances.process, threading.Event(), threading.Event()

        def slow_process(tx: Any, events: list[Any]) -> None:
            inside.set()
            release.wait(10)
            real_process(tx, events)

        balances.process = slow_process  # type: ignore[method-assign]
        applied: list[int] = []
        holder = threading.Thread(target=lambda: applied.append(first.runner.catch_up()))
        holder.start()
        assert inside.wait(5)
        waiter = threading.Thread(target=lambda: applied.append(second.runner.catch_up()))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # blocked behind the holder's lock on "balances"
        release.set()
        holder.join(10)
        waiter.join(10)
        assert sum(applied) == 3  # the grant once to balances (by the holder), the ledger entries and the audit log
        row = second.balances.get_balance(alice)
        assert row is not None and row.balance == 5

    def test_two_runners_catching_up_concurrently_apply_every_event_exactly_once(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        runners = [make_read_models(), make_read_models()]
        for rm in runners:
            rm.runner.batch_size = 3  # many small batches, each contended by both runners
        alice, bob = ledger.open_account("alice"), ledger.open_account("bob")
        started, done = threading.Barrier(2), threading.Event()
        applied = [0, 0]
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                started.wait()
                while not done.is_set():
                    applied[i] += runners[i].runner.catch_up(wait=i == 0)  # the poller's way, and the blocking way
                applied[i] += runners[i].runner.catch_up()
            except BaseException as error:  # reported below
                errors.append(error)

        def write(i: int) -> None:
            ledger.grant(alice if i % 2 else bob, 1_000 + i)
            ledger.record(T0 + timedelta(minutes=i), account_id=alice, charge=i)

        for i in range(30):  # a backlog both runners start on at once
            write(i)
        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for i in range(30, 60):  # and events arriving while they run
            write(i)
        done.set()
        for t in threads:
            t.join(30)
        assert not errors
        # 2 creations + 60 grants to balances and to the audit log; 60 grants to the ledger entries; 60 records each
        # to usage, the request log and the provider rollups
        assert sum(applied) == 62 + 62 + 60 + 60 + 60 + 60
        view = runners[0]
        for account_id in (alice, bob):
            row = view.balances.get_balance(account_id)
            assert row is not None and row.balance == ledger.account(account_id).balance
        assert view.usage.get_usage_totals().requests == 60
        assert view.usage.get_usage_totals().charge == sum(range(60))
        assert len(view.requests.list_requests(limit=1000)) == 60
        assert snapshot(runners[1]) == snapshot(view)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = datetime.now() + timedelta(seconds=timeout)
    while datetime.now() < deadline:
        if condition():
            return True
        threading.Event().wait(0.01)
    return condition()
