"""How the providers, prices and aliases pages run an action: from the submit button's
callback, before the page is drawn, so the widgets holding a secret are blanked in the same
step that reads them, and the page then shows what happened.

Invariants: a provider secret lives only in its password widget until the callback reads
it; the callback blanks that widget's state before the action runs, so the secret is not
left in ``st.session_state`` whatever the action's outcome (a refused secret is typed
again). An action that the application refuses (``TallyhubError``, ``InvalidAmount``)
changes nothing and its message is shown with ``st.error``; the outcome is the only thing
kept between the callback and the page, and it never holds a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import streamlit as st

from adapters.services import Services
from dashboard.console.actions import act
from domain.errors import TallyhubError
from domain.money import InvalidAmount

Action = Callable[[Services], str]  # returns the success text to show


def field(key: str) -> Any:
    """A widget's value as the callback sees it (None when the widget has none yet)."""
    return st.session_state.get(key)


def text(key: str) -> str:
    value = st.session_state.get(key)
    return value.strip() if isinstance(value, str) else ""


def take_secret(key: str) -> str:
    """Read a password widget's value and blank it at once (the callback may write it)."""
    secret = text(key)
    st.session_state[key] = ""
    return secret


def blank(keys: Iterable[str]) -> None:
    for key in keys:
        st.session_state[key] = ""


def run(section: str, prepare: Callable[[], Action]) -> None:
    """Build the action from the widgets (``prepare`` parses and validates them) and run it
    as the signed-in admin; keeps the outcome for ``show(section)``."""
    try:
        message = act(prepare())
    except (TallyhubError, InvalidAmount) as error:
        st.session_state[_key(section)] = ("error", str(error))
    else:
        st.session_state[_key(section)] = ("success", message)


def attempt(section: str, step: Callable[[], None]) -> None:
    """Run a step that records nothing (a review, a plan); a refusal becomes its outcome."""
    try:
        step()
    except (TallyhubError, InvalidAmount) as error:
        st.session_state[_key(section)] = ("error", str(error))


def refuse(section: str, message: str) -> None:
    st.session_state[_key(section)] = ("error", message)


def succeed(section: str, message: str) -> None:
    st.session_state[_key(section)] = ("success", message)


def show(section: str) -> None:
    """The last action's outcome in ``section``, once."""
    outcome = st.session_state.pop(_key(section), None)
    if outcome is None:
        return
    kind, message = outcome
    (st.success if kind == "success" else st.error)(message)


def _key(section: str) -> str:
    return f"console_outcome_{section}"
