"""application/history_reads.py: the rows replay and verify read, whichever store, every
amount exact however large."""

import json
import random
from pathlib import Path

from adapters.settings import parse_database_url
from application.history_reads import HistoryStore, record_facts, rows
from application.ledger import Ledger
from application.replay import COMPLETED
from tests.benchmarks.audit_scale import build, prepare, write_history

BEYOND_64_BITS = 2**64 + 1


def test_an_amount_beyond_64_bits_is_read_exactly() -> None:
    usage = {"input_tokens": BEYOND_64_BITS, "cached_input_tokens": 0, "output_tokens": 1}
    usage |= {"reasoning_tokens": 0, "images": 0}
    details = {"account_id": "a" * 32, "model": "m/x", "usage": usage, "charge": 5, "cost": BEYOND_64_BITS + 2}
    data, facts = record_facts(json.dumps({"details": details}).encode())
    assert facts.cost == BEYOND_64_BITS + 2 and type(facts.cost) is int
    assert facts.counts is not None and facts.counts[0] == BEYOND_64_BITS
    assert data["details"]["cost"] == BEYOND_64_BITS + 2


def test_the_sqlite_store_and_the_in_memory_store_give_the_same_rows(tmp_path: Path, ledger: Ledger) -> None:
    sqlite = build(parse_database_url(None, tmp_path))
    try:
        assert isinstance(sqlite.recorder, HistoryStore)
        assert not isinstance(ledger.recorder, HistoryStore)  # read through select_notifications
        for store in (sqlite, prepare(ledger)):
            write_history(store, 25, random.Random(3))
        read = [list(rows(store.recorder, (COMPLETED,))) for store in (sqlite, ledger)]
        assert [len(found) for found in read] == [25, 25]
        for found in read:
            assert [row[0] for row in found] == sorted(row[0] for row in found)
            assert all(len(row[1]) == 32 and row[3] == COMPLETED for row in found)
        costs = [[record_facts(row[4])[1].cost for row in found] for found in read]
        assert costs[0] == costs[1]  # same seed, same charges, in the same order
    finally:
        sqlite.close()
