"""The display timezone on the seeded read models (SQLite and PostgreSQL): picked in the
sidebar of every page, it moves every shown time (tables, the receipt, the window's text and
the charts' axes) and names the zone in the headings, while the data and the window's UTC
bounds stay as they are."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
from streamlit.testing.v1 import AppTest

from tests.dashboard.seed import Seeded

OpenPage = Callable[[Seeded, str], AppTest]
TOKYO = "Asia/Tokyo"
NINE_HOURS = timedelta(hours=9)  # Tokyo keeps no daylight saving time


def table(app: AppTest, *columns: str) -> pd.DataFrame:
    for element in app.dataframe:
        if set(columns) <= set(element.value.columns):
            return element.value
    raise AssertionError(f"no table with columns {columns}")


def chart(app: AppTest, title: str) -> tuple[dict[str, Any], pd.DataFrame]:
    for element in app.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        if spec.get("title") == title:
            return spec, pa.ipc.open_stream(element.proto.datasets[0].data.data).read_all().to_pandas()
    raise AssertionError(f"no chart titled {title!r}")


def in_tokyo(app: AppTest) -> AppTest:
    app.selectbox(key="timezone_picker").select(TOKYO).run()
    assert not app.exception, app.exception
    return app


def test_a_request_is_shown_nine_hours_later_in_tokyo_with_the_zone_named(seeded: Seeded, on_page: OpenPage) -> None:
    known = max(seeded.requests, key=lambda r: r.at)
    app = on_page(seeded, "request_log")
    utc_rows = table(app, "at (UTC)", "request_id").set_index("request_id")
    assert utc_rows.loc[str(known.request_id), "at (UTC)"] == pd.Timestamp(known.at)

    in_tokyo(app)

    rows = table(app, f"at ({TOKYO})", "request_id").set_index("request_id")
    shown = rows.loc[str(known.request_id), f"at ({TOKYO})"]
    assert str(shown.tz) == TOKYO
    assert shown.tz_localize(None) == pd.Timestamp(known.at + NINE_HOURS).tz_localize(None)
    window = app.session_state["requests_window"]
    assert window.since.utcoffset() == timedelta(0)  # the query's bounds stay UTC
    local_since = (window.since + NINE_HOURS).strftime("%Y-%m-%d %H:%M")
    assert any(c.value.startswith(f"{local_since} → ") and TOKYO in c.value for c in app.caption)

    app.text_input(key="requests_search").input(str(known.request_id)).run()
    served = table(app, "field", "value").set_index("field")["value"]
    expected = (known.at + NINE_HOURS).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert served[f"at ({TOKYO})"] == f"{expected} {TOKYO}"
    assert "at (UTC)" not in served.index


def test_the_charts_axes_read_the_zones_clock(seeded: Seeded, on_page: OpenPage) -> None:
    app = in_tokyo(on_page(seeded, "request_log"))
    known = max(seeded.requests, key=lambda r: r.at)

    spec, data = chart(app, "Latency of each request (ms)")

    assert spec["encoding"]["x"]["title"] == TOKYO
    at = data.set_index("request_id").loc[str(known.request_id), "at"]
    assert pd.Timestamp(at).tz_localize(None) == pd.Timestamp(known.at + NINE_HOURS).tz_localize(None)


def test_the_zone_chosen_holds_on_every_page(seeded: Seeded, on_page: OpenPage) -> None:
    app = in_tokyo(on_page(seeded, "overview"))
    spec, _ = chart(app, "Requests")
    assert spec["encoding"]["x"]["title"] == TOKYO

    app.switch_page("analytics/accounts.py").run()
    assert app.selectbox(key="timezone_picker").value == TOKYO
    updated = table(app, "account", f"updated_at ({TOKYO})")[f"updated_at ({TOKYO})"]
    assert {str(v.tz) for v in updated} == {TOKYO}

    app.switch_page("analytics/pricing.py").run()
    versions = table(app, "version", f"effective at ({TOKYO})")
    assert {str(v.tz) for v in versions[f"effective at ({TOKYO})"]} == {TOKYO}

    for page in ("models_and_providers", "exports"):
        app.switch_page(f"analytics/{page}.py").run()
        assert not app.exception, app.exception
        assert app.selectbox(key="timezone_picker").value == TOKYO


def test_the_default_zone_comes_from_the_environment(seeded: Seeded, dashboard: Callable[..., AppTest]) -> None:
    app = dashboard(seeded, extra_env={"TALLYHUB_DASHBOARD_TIMEZONE": TOKYO})
    assert app.selectbox(key="timezone_picker").value == TOKYO
    spec, _ = chart(app, "Requests")
    assert spec["encoding"]["x"]["title"] == TOKYO
