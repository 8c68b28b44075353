"""What every page shares: the sign-in gate, the data source, the time-range picker,
empty states that say what to do, and money shown as exact credits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import streamlit as st

from adapters.settings import Settings, SettingsError
from application.acting import admin_actor
from dashboard import ledger_reads, queries, timezones
from dashboard.metrics import credits_text
from dashboard.queries import ReadModelsMissing, Source
from dashboard.windows import PRESETS, Window, last, whole_days

SIGNED_IN = "tallyhub_admin_signed_in"
ADMIN_ACTOR = "tallyhub_admin_actor"  # application.acting.admin_actor of the key signed in with
CUSTOM = "Custom days"

NOT_INITIALISED = (
    "**No Tallyhub store here yet.** Run `tallyhub init` with the same `TALLYHUB_DATA_DIR` / "
    "`TALLYHUB_DATABASE_URL` as this dashboard: it creates the event store, the read models and "
    "prints the admin key once. Then start the gateway with `tallyhub serve`."
)
NO_REQUESTS = (
    "**No requests recorded yet.** Send one through the gateway (`tallyhub serve`, then "
    "`POST /v1/chat/completions` with a key from `tallyhub keys issue ACCOUNT`). The projections "
    "add each request to these read models within a second; `tallyhub projections status` shows their lag."
)


def settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        st.error(f"The dashboard's configuration is invalid: {error}")
        st.stop()


def signed_in() -> bool:
    return bool(st.session_state.get(SIGNED_IN))


def sign_in_page() -> None:
    st.title("Tallyhub dashboard")
    st.write("Sign in with the admin key: the one `tallyhub init` printed, or `TALLYHUB_ADMIN_KEY`.")
    with st.form("sign_in", clear_on_submit=True):
        presented = st.text_input("Admin key", type="password", key="admin_key")
        submitted = st.form_submit_button("Sign in", key="sign_in_submit", type="primary")
    if not submitted:
        return
    current = settings()
    try:
        accepted = ledger_reads.is_admin_key(current, (presented or "").strip())
    except ledger_reads.StoreUnavailable as error:
        st.error(f"The Tallyhub store cannot be opened: {error}")
        st.info(NOT_INITIALISED)
        return
    if not accepted:
        st.error(
            "That is not the admin key. Use the key `tallyhub init` printed (it starts with `tha_`) "
            "or the value of `TALLYHUB_ADMIN_KEY`."
        )
        return
    st.session_state[SIGNED_IN] = True
    st.session_state[ADMIN_ACTOR] = admin_actor((presented or "").strip())
    st.rerun()


def admin_actor_of_session() -> str | None:
    """Who the console's actions are recorded as: the admin key this session signed in with."""
    return st.session_state.get(ADMIN_ACTOR) if signed_in() else None


def sign_out() -> None:
    st.session_state.pop(SIGNED_IN, None)
    st.session_state.pop(ADMIN_ACTOR, None)


@dataclass(frozen=True)
class PageContext:
    settings: Settings
    source: Source

    @property
    def key(self) -> str:
        return self.source.key


def page_context() -> PageContext:
    """The data source of this page; stops with the "run tallyhub init" state when it has no read models.

    Stops unless the admin key was accepted in this session (a portal session is not an
    admin's): app.py's navigation is the gate, and this is a second lock behind it. The
    analytics pages live in ``analytics/``, not ``pages/``, so Streamlit's "pages directory"
    mode (which runs a ``pages/`` file by its URL, without app.py, on a process's first run)
    never applies."""
    if not signed_in():
        st.error("Sign in with the admin key to see this page.")
        st.stop()
    current = settings()
    source = Source.of(current)
    try:
        positions = queries.positions(source.key, _source=source)
    except ReadModelsMissing:
        st.info(NOT_INITIALISED)
        st.stop()
    timezones.picker()
    with st.sidebar:
        st.caption("Read models at event " + ", ".join(f"{n} {p}" for n, p in sorted(positions.items())))
        if st.button("Refresh data", key="refresh_data", help=f"Query results are cached for {queries.TTL_SECONDS} s"):
            st.cache_data.clear()
        st.button("Sign out", key="sign_out", on_click=sign_out)
    return PageContext(current, source)


def window_picker(page: str, *, default: str = "Last 7 days") -> Window:
    """A time range (presets end with the current hour; custom ranges are whole UTC days).

    The window used is kept in ``st.session_state[f"{page}_window"]`` so tests can read it.
    """
    options = [*PRESETS, CUSTOM]
    left, right = st.columns([1, 2])
    choice = left.selectbox("Time range", options, index=options.index(default), key=f"{page}_range")
    now = datetime.now(UTC)
    if choice == CUSTOM:
        today = now.date()
        picked = right.date_input("Days (UTC)", value=(today - timedelta(days=6), today), key=f"{page}_days")
        days = _two_days(picked, today)
        window = whole_days(*days)
    else:
        window = last(PRESETS[choice], now)
        right.caption(" ")
    right.caption(
        f"{timezones.span_text(window.since, window.until)} · compared with "
        f"{timezones.span_text(window.previous.since, window.previous.until)}"
    )
    st.session_state[f"{page}_window"] = window
    return window


def _two_days(picked: object, today: date) -> tuple[date, date]:
    if isinstance(picked, (tuple, list)):
        chosen = [d for d in picked if d is not None]
        if len(chosen) == 2:
            return chosen[0], chosen[1]
        if len(chosen) == 1:
            return chosen[0], chosen[0]
    if isinstance(picked, date):
        return picked, picked
    return today, today


def empty_window(ctx: PageContext, window: Window, what: str = "requests") -> None:
    """Says why nothing is shown: no requests at all, or none in this window."""
    latest = queries.latest_request_at(ctx.key, _source=ctx.source)
    if latest is None:
        st.info(NO_REQUESTS)
    else:
        st.info(
            f"No {what} between {timezones.span_text(window.since, window.until)}. The latest request was at "
            f"{timezones.text(latest, '%Y-%m-%d %H:%M')} — widen the time range."
        )


def with_credits(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """A copy with nanocredit columns shown as exact credits text."""
    shown = frame.copy()
    for column in columns:
        shown[column] = [credits_text(int(v)) for v in shown[column]]
    return shown


def account_names(ctx: PageContext) -> dict[str, str]:
    balances = queries.balances_frame(ctx.key, _source=ctx.source)
    return dict(zip(balances["account_id"], balances["name"], strict=True))


def short_id(value: str) -> str:
    return value[:8] if value else "—"
