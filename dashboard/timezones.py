"""The display timezone: data stays UTC everywhere (read models, exports, the API); a page
converts only what it shows, to the zone picked in the sidebar (kept per browser session,
``TALLYHUB_DASHBOARD_TIMEZONE`` or UTC by default), and names the zone wherever it shows a
time (``heading``, ``text``). Queries and windows keep UTC bounds; only their text and the
charts' axes (``wall_clock``) are in the display zone."""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import pandas as pd
import streamlit as st

CHOSEN = "tallyhub_timezone"
DEFAULT_VARIABLE = "TALLYHUB_DASHBOARD_TIMEZONE"


def default_zone() -> str:
    name = os.environ.get(DEFAULT_VARIABLE, "").strip() or "UTC"
    return name if _known(name) else "UTC"


def zone_name() -> str:
    """The zone this session shows times in (an IANA name such as ``Europe/Berlin``)."""
    name = st.session_state.get(CHOSEN)
    return name if isinstance(name, str) and _known(name) else default_zone()


def zone() -> tzinfo:
    name = zone_name()
    return UTC if name == "UTC" else ZoneInfo(name)


def picker() -> str:
    """The sidebar's timezone select box; returns the zone chosen."""
    names = ["UTC", *sorted(available_timezones() - {"UTC"})]
    current = zone_name()
    with st.sidebar:
        chosen = st.selectbox("Timezone", names, index=names.index(current), key="timezone_picker")
    st.session_state[CHOSEN] = chosen
    return str(chosen)


def shown(moment: datetime | None) -> datetime | None:
    """``moment`` (aware, or naive meaning UTC) in the display zone."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(zone())


def text(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """``moment`` as text in the display zone, with the zone's abbreviation; "—" for None."""
    local = shown(moment)
    return "—" if local is None else f"{local.strftime(fmt)} {label()}"


def heading(name: str) -> str:
    """A column or field heading that names the zone: ``at (Asia/Tokyo)``."""
    return f"{name} ({label()})"


def span_text(since: datetime, until: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``[since, until)`` as text in the display zone, the zone named once."""
    start, end = shown(since), shown(until)
    assert start is not None and end is not None
    return f"{start.strftime(fmt)} → {end.strftime(fmt)} {label()}"


def wall_clock(values: Any) -> pd.Series:
    """Moments for a chart whose time scale shows UTC (Vega-Lite knows no other zone): each
    one moved so that its UTC clock reads what the display zone's clock read then. For
    axes and tooltips only; never for anything that is computed or stored."""
    moments = pd.to_datetime(pd.Series(values), utc=True)
    return moments.dt.tz_convert(zone_name()).dt.tz_localize(None).dt.tz_localize("UTC")


def label() -> str:
    """A column heading's zone part: ``UTC``, ``Europe/Berlin``."""
    return zone_name()


def frame_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A copy whose datetime ``columns`` are shown in the display zone (naive values are UTC)."""
    shown_frame = frame.copy()
    target = zone_name()
    for column in columns:
        if column in shown_frame.columns:
            values = pd.to_datetime(shown_frame[column], utc=True)
            shown_frame[column] = values.dt.tz_convert(target)
    return shown_frame


def _known(name: str) -> bool:
    if name == "UTC":
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
