"""Request-id search in the admin request log, on the seeded read models (SQLite and
PostgreSQL): the full id or a prefix only one request has shows that request and its
receipt; a prefix several ids share asks for more; an unknown id says it is not found."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from uuid import uuid4

import pandas as pd
from streamlit.testing.v1 import AppTest

from dashboard.metrics import credits_text
from tests.dashboard.seed import Seeded, SeededRequest

OpenPage = Callable[[Seeded, str], AppTest]


def table(app: AppTest, *columns: str) -> pd.DataFrame:
    for element in app.dataframe:
        if set(columns) <= set(element.value.columns):
            return element.value
    raise AssertionError(f"no table with columns {columns}")


def search(app: AppTest, text: str) -> AppTest:
    app.text_input(key="requests_search").input(text).run()
    assert not app.exception, app.exception
    return app


def shortest_unique_prefix(request: SeededRequest, seeded: Seeded) -> str:
    others = [str(r.request_id) for r in seeded.requests if r.request_id != request.request_id]
    full = str(request.request_id)
    return next(full[:n] for n in range(1, len(full) + 1) if not any(o.startswith(full[:n]) for o in others))


def receipt_of(app: AppTest) -> tuple[pd.Series, pd.Series]:
    served = table(app, "field", "value").set_index("field")["value"]
    cost = table(app, "item", "value").set_index("item")["value"]
    return served, cost


def test_the_full_id_shows_that_request_and_its_receipt(seeded: Seeded, on_page: OpenPage) -> None:
    known = next(r for r in seeded.requests if r.charge > 0)
    app = search(on_page(seeded, "request_log"), str(known.request_id))

    served, cost = receipt_of(app)
    assert served["request id"] == str(known.request_id)
    assert served["model"] == known.model and served["status"] == str(known.status)
    assert cost["charged (credits)"] == credits_text(known.charge)
    assert app.session_state["requests_found"] == str(known.request_id)
    assert not app.error


def test_a_unique_prefix_finds_the_request_in_either_spelling(seeded: Seeded, on_page: OpenPage) -> None:
    known = seeded.failover_request
    assert known is not None
    request = next(r for r in seeded.requests if r.request_id == known)
    prefix = shortest_unique_prefix(request, seeded)
    app = on_page(seeded, "request_log")

    for text in (prefix, prefix.upper(), str(known)[:13], f"  {known.hex[:12]}  "):
        search(app, text)
        served, _ = receipt_of(app)
        assert served["request id"] == str(known), text
    attempts = table(app, "status", "error_code", "credential_id")
    assert list(attempts["status"]) == [503]


def test_a_shared_prefix_asks_for_more_and_an_unknown_id_is_not_found(seeded: Seeded, on_page: OpenPage) -> None:
    first, count = Counter(str(r.request_id)[0] for r in seeded.requests).most_common(1)[0]
    assert count > 1
    app = search(on_page(seeded, "request_log"), first)
    assert app.session_state["requests_found"] is None
    assert [w.value for w in app.warning] == [f"More than one request id starts with `{first}`: type more of it."]
    assert not [t for t in app.dataframe if "field" in t.value.columns]

    unknown = str(uuid4())
    search(app, unknown)
    assert [e.value for e in app.error] == [
        f"Request not found: no request id in the request log is or starts with `{unknown}`."
    ]
    assert app.session_state["requests_found"] is None
    search(app, "not-an-id")
    assert len(app.error) == 1 and "Request not found" in app.error[0].value

    search(app, "")  # cleared: the log again
    assert app.session_state["requests_rows"] > 0
