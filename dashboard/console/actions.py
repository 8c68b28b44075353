"""How a console page acts: the application services built once per dashboard process
(the CLI's ``build_services``, on the same ``TALLYHUB_*`` settings), and each action run as
the admin signed in to this browser session."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from adapters.bootstrap import build_services
from adapters.services import Services
from application.acting import acting_as
from dashboard import ui
from dashboard.queries import Source

T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def _services(key: str) -> Services:
    """One Services per data source (``key``: the settings' store), shared by every session
    of this dashboard process, as one gateway process shares its own."""
    return build_services(ui.settings())


def services() -> Services:
    return _services(Source.of(ui.settings()).key)


def act(action: Callable[[Services], T]) -> T:
    """Runs ``action`` with the application services as the signed-in admin: the events it
    records name the admin key's actor (``admin:<fingerprint>``)."""
    actor = ui.admin_actor_of_session()
    if actor is None:  # the gate keeps unsigned sessions out; never act as nobody
        st.error("Sign in with the admin key to do this.")
        st.stop()
    with acting_as(actor):
        return action(services())
