"""The portal's session, kept apart from the admin's.

Invariants:
- the browser session's state holds only the session sealed by application/portal.py
  (signed text naming the account, how it was opened and its expiry): never an API key,
  never a link token;
- ``check`` runs at the top of every run (dashboard/app.py) and ends the session there
  when application/portal.py says it is no longer valid (expired, revoked by the operator,
  its API key revoked or expired); pages read only the session ``check`` confirmed in this run;
- no admin page is registered in a portal session (app.py), and the admin's sign-in flag
  is never set by the portal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from adapters.bootstrap import build_ledger
from adapters.settings import Settings
from application.api_keys import ApiKeys
from application.portal import Portal, PortalSession, SessionEnded
from dashboard import ledger_reads, queries, timezones, ui
from dashboard.queries import ReadModelsMissing, Source

SESSION = "tallyhub_portal_session"  # the sealed session (signed; nothing secret)
CHECKED = "tallyhub_portal_checked"  # the PortalSession confirmed valid in this run
ENDED = "tallyhub_portal_ended"  # why the last session ended, said once on the sign-in page


def _close(portal: Portal) -> None:
    portal.ledger.close()


@st.cache_resource(show_spinner=False, on_release=_close)
def _portal(key: str, _settings: Settings) -> Portal:
    """One per store and process: its own ledger (every read fresh: no read cache), closed
    when the cache lets it go."""
    ledger = build_ledger(_settings)
    try:
        ledger.load_deployment()
    except BaseException:
        ledger.close()
        raise
    return Portal(ledger, ApiKeys(ledger), session_ttl=timedelta(seconds=_settings.portal_session_ttl_seconds))


def portal() -> Portal:
    settings = ui.settings()
    return _portal(ledger_reads.ledger_key(settings), settings)


def check() -> PortalSession | None:
    """The portal session of this browser session if it is still valid (checked now)."""
    st.session_state.pop(CHECKED, None)
    sealed = st.session_state.get(SESSION)
    if not sealed:
        return None
    try:
        session = portal().open_session(sealed)
    except SessionEnded as ended:
        st.session_state.pop(SESSION, None)
        st.session_state[ENDED] = str(ended)
        return None
    st.session_state[CHECKED] = session
    return session


def start(session: PortalSession) -> None:
    st.session_state[SESSION] = portal().seal(session)
    st.session_state.pop(ENDED, None)


def sign_out() -> None:
    st.session_state.pop(SESSION, None)
    st.session_state.pop(CHECKED, None)


def session() -> PortalSession:
    """The session ``check`` confirmed in this run; a page without one stops."""
    confirmed = st.session_state.get(CHECKED)
    if not isinstance(confirmed, PortalSession):
        st.error("Sign in to the portal first.")
        st.stop()
    return confirmed


def page_context() -> tuple[PortalSession, ui.PageContext]:
    """The signed-in account and the read models' source; the sidebar (account, timezone, sign out)."""
    current = session()
    settings = ui.settings()
    source = Source.of(settings)
    try:
        queries.positions(source.key, _source=source)
    except ReadModelsMissing:
        st.info(ui.NOT_INITIALISED)
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in to the account **{account_name(current)}**")
        st.caption(f"Session ends at {timezones.text(current.expires_at, '%Y-%m-%d %H:%M')}")
        timezones.picker()
        if st.button("Refresh data", key="portal_refresh", help=f"Figures are cached for {queries.TTL_SECONDS} s"):
            st.cache_data.clear()
        st.button("Sign out", key="portal_sign_out", on_click=sign_out)
    return current, ui.PageContext(settings, source)


def account_name(current: PortalSession) -> str:
    return portal().ledger.get_account(current.account_id).name


def now() -> datetime:
    return datetime.now(UTC)
