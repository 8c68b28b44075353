"""The dashboard's Overview against ``tallyhub export ledger`` on a real gateway, on SQLite
and on PostgreSQL: requests charged through ``serve`` (plain and streamed, with the real
clock, so each charge and its request record carry their own timestamps), an adjustment
posted with the CLI, then a ledger export of the Overview's window of whole hours. Spend is
minus the sum of the export's ``charge`` rows, the completed requests are their count, and
both equal the receipts the gateway returned; the adjustment is a row of its own."""

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.metrics import credits_text
from tests.dashboard.conftest import APP, ENV, enter_key
from tests.e2e.conftest import MODEL, Served
from tests.support.gateway import cli

NANO = 10**9


@pytest.fixture
def overview(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in served.gateway.env.items():
        if name.startswith("TALLYHUB_"):
            monkeypatch.setenv(name, value)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    yield app
    st.cache_data.clear()
    st.cache_resource.clear()  # close the dashboard's pools before the PostgreSQL schema is dropped


def charge_through_the_gateway(served: Served) -> list[int]:
    client = openai.OpenAI(base_url=served.gateway.url + "/v1", api_key=served.api_key, max_retries=0)
    charges = []
    for words in ("one", "two more", "three more words"):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say {words} for the dashboard."}]
        )
        charges.append(int(raw.headers["x-tallyhub-charge-nanocredits"]))
    stream = client.chat.completions.create(
        model=MODEL,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream four more words."}],
    )
    charges += [int(chunk.usage.model_extra["cost_nanocredits"]) for chunk in stream if chunk.usage]
    return charges


def test_overview_spend_equals_the_charge_rows_of_tallyhub_export_ledger_for_its_window(
    served: Served, overview: AppTest, tmp_path: Path
) -> None:
    env = served.gateway.env
    charges = charge_through_the_gateway(served)
    cli(env, "credits", "adjust", served.account, "-0.5", "--reason", "e2e correction")
    assert len(charges) == 4 and all(charge > 0 for charge in charges)

    out = tmp_path / "ledger.jsonl"
    enter_key(overview, served.gateway.admin_key)
    overview.selectbox(key="overview_range").select("Last 24 hours").run()
    assert not overview.exception, overview.exception
    window = overview.session_state["overview_window"]
    manifest = cli(
        env,
        "export",
        "ledger",
        "--from",
        window.since.isoformat(),
        "--to",
        window.until.isoformat(),
        "--format",
        "jsonl",
        "--out",
        str(out),
    )
    st.cache_data.clear()  # the export caught the read models up: read them again, not from the cache
    overview.run()
    rows: list[dict[str, Any]] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == manifest["rows"]
    charge_rows = [row for row in rows if row["kind"] == "charge"]
    spent = -sum(row["amount_nanocredits"] for row in charge_rows)
    assert all(window.since <= datetime.fromisoformat(row["at"]) < window.until for row in rows)

    shown = {m.label: (m.value, m.proto.help) for m in overview.metric}
    spend, spend_help = shown["Spend (credits)"]
    assert Decimal(spend) * NANO == spent == sum(charges) and spend == credits_text(spent)
    assert f"Priced at list: {credits_text(spent)};" in spend_help  # everything was collected
    requests, requests_help = shown["Requests"]
    assert requests == str(len(charge_rows)) == "4" and requests_help.startswith("4 completed + 0 failed")
    assert [row["amount_nanocredits"] for row in rows if row["kind"] == "adjustment"] == [-NANO // 2]
    assert [row["kind"] for row in rows if row["kind"] == "grant"] == ["grant"]  # configure's grant, not spend
