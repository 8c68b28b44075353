"""What the accounts and keys console pages share: running an action with the application's
own errors shown, the message of an action that succeeded (kept over one rerun, so the
page redraws from the state the action left), form fields filled with what is set now,
the account picker, and the balance panel.

Invariant: every change goes through ``dashboard.console.actions.act`` (the same
application services the CLI calls, as the signed-in admin); reads go to the same
services (the ledger, and the read models caught up first), never to a table directly.
Nothing secret passes through here: the issued-key secret stays on the keys page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import streamlit as st

from adapters.queries import caught_up, read_balance
from adapters.services import Services
from dashboard import timezones
from dashboard.console import actions
from dashboard.metrics import credits_text
from domain.errors import InvalidRequest, TallyhubError
from domain.money import InvalidAmount, format_credits, parse_credits
from projections.balances import Balance

T = TypeVar("T")
DONE = "console_done"  # the message of the action the last run did
NO_ACCOUNTS = (
    "**No accounts yet.** Create one above (or `tallyhub accounts create NAME`); its keys, credit and limits "
    "are managed here."
)


def attempt(action: Callable[[Services], T]) -> T | None:
    """``act(action)``; a refused action (the application's ``TallyhubError``, a bad amount)
    shows its own message with ``st.error`` and returns None, having changed nothing."""
    try:
        return actions.act(action)
    except (TallyhubError, InvalidAmount) as error:
        st.error(str(error))
        return None


def done(message: str) -> None:
    """Report an action that succeeded and redraw the page from the state it left."""
    st.session_state[DONE] = message
    st.rerun()


def show_done() -> None:
    message = st.session_state.pop(DONE, None)
    if message:
        st.success(message)


def prefill(marker: str, owner: str, values: Mapping[str, str]) -> None:
    """Put ``values`` (widget key → text) into their fields whenever what they show changed
    under them (another account or key, ``owner``, picked, or an action applied); what the
    admin typed stays while they are the same. Call before the fields are drawn."""
    shown = (owner, tuple(sorted(values.items())))
    if st.session_state.get(marker) != shown:
        for widget, text in values.items():
            st.session_state[widget] = text
        st.session_state[marker] = shown


def accounts(services: Services) -> list[Balance]:
    """Every account, by name, from the balances read model caught up to this moment."""
    return sorted(caught_up(services, services.read_models.balances.list_balances), key=lambda b: b.name)


def pick_account(found: list[Balance], key: str) -> Balance | None:
    """The account select box over ``found`` (``accounts``); None (with what to do) when empty."""
    if not found:
        st.info(NO_ACCOUNTS)
        return None
    names = [b.name for b in found]
    chosen = st.selectbox("Account", names, key=key)
    return found[names.index(chosen)] if chosen in names else found[0]


def balance_panel(services: Services, account_id: UUID) -> None:
    """Balance, available and held of the account, as the ledger has them now."""
    data = read_balance(services, str(account_id))
    row = st.columns(3)
    row[0].metric("Balance (credits)", credits_text(int(data["balance"])), border=True)
    row[1].metric("Available (credits)", credits_text(int(data["available"])), border=True)
    row[2].metric("Held (credits)", credits_text(int(data["held"])), border=True)
    if data.get("expiring"):
        deadline = datetime.fromisoformat(data["next_expiry"]) if data.get("next_expiry") else None
        st.caption(
            f"{credits_text(int(data['expiring']))} credits of it expire, the next at {timezones.text(deadline)}"
        )


def credits_or_none(text: str, param: str) -> int | None:
    """Credits text → nanocredits; blank → None."""
    text = (text or "").strip()
    return parse_credits(text, param=param) if text else None


def credits_field(amount: int | None) -> str:
    """An amount as the exact credits text a field shows ("" for none)."""
    return "" if amount is None else format_credits(amount).rstrip("0").rstrip(".")


def whole_or_clear(text: str, param: str) -> int:
    """A rate limit typed in a field: a whole number; blank is 0, which clears the limit."""
    text = (text or "").strip()
    if not text:
        return 0
    if not (text.isascii() and text.isdigit() and len(text) < 12):
        raise InvalidRequest(f"{param} must be a whole number (blank or 0: no limit), not {text[:20]!r}", param=param)
    return int(text)


def limit_field(value: int | None) -> str:
    return "" if value is None else str(value)
