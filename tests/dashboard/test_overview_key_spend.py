"""The overview's spend per API key, on SQLite and PostgreSQL: each key's name and account,
its requests, tokens and spend over the window equal to what the ledger recorded for the
seeded requests of that key, exactly; the rows add up to the Spend metric."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import pytest
from streamlit.testing.v1 import AppTest

from adapters.bootstrap import build_ledger
from application.ledger import Ledger
from dashboard.metrics import credits_text
from dashboard.windows import Window
from tests.dashboard.console_fixtures import signed_in_page
from tests.dashboard.seed import Seeded

__all__ = ["signed_in_page"]  # fixture


@pytest.fixture
def ledger_of() -> Iterator[Callable[[Seeded], Ledger]]:
    opened: list[Ledger] = []

    def open_ledger(store: Seeded) -> Ledger:
        ledger = build_ledger(store.settings)
        ledger.load_deployment()
        opened.append(ledger)
        return ledger

    yield open_ledger
    for ledger in opened:
        ledger.close()


def key_spend_table(app: AppTest) -> list[dict[str, object]]:
    for element in app.dataframe:
        if "spend (credits)" in element.value.columns:
            return element.value.to_dict("records")
    raise AssertionError("no spend-by-key table")


def test_spend_per_key_names_each_key_and_equals_the_ledgers_records(
    seeded: Seeded, signed_in_page: Callable[..., AppTest], ledger_of: Callable[[Seeded], Ledger]
) -> None:
    app = signed_in_page(seeded, "analytics/overview.py")
    window: Window = app.session_state["overview_window"]
    ledger = ledger_of(seeded)
    requests: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    charged: defaultdict[str, int] = defaultdict(int)
    owner: dict[str, tuple[str, str]] = {}
    for request in seeded.in_window(window.since, window.until):
        key_id = str(ledger.get_request_record(request.request_id).details.api_key_uuid)
        key = ledger.get_api_key(key_id)
        owner[key_id] = (key.name, request.account)
        requests[key_id] += 1
        failed[key_id] += request.outcome == "failed"
        tokens[key_id] += request.input_tokens + request.output_tokens
        charged[key_id] += request.charge
    assert len(owner) >= 2  # the window holds requests of several keys

    rows = key_spend_table(app)
    assert {str(r["key id"]): r for r in rows}.keys() == owner.keys()
    for row in rows:
        key_id = str(row["key id"])
        assert (row["key"], row["account"]) == owner[key_id]
        assert (row["requests"], row["failed"], row["tokens"]) == (requests[key_id], failed[key_id], tokens[key_id])
        assert row["spend (credits)"] == credits_text(charged[key_id])
    assert [r["spend (credits)"] for r in rows] == [credits_text(c) for c in sorted(charged.values(), reverse=True)]
    spend = next(m.value for m in app.metric if m.label == "Spend (credits)")
    assert spend == credits_text(sum(charged.values()))
