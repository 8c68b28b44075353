"""Fixtures for the console tests, which CHANGE the store: a fresh store per test on SQLite
and on PostgreSQL, the console signed in on one of its pages, and the application the CLI
runs (``build_services``) to check each action's effect and who it names.

Use them by importing into a test module (``from tests.dashboard.console_fixtures import
console, console_store, application``): pytest finds fixtures imported there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import pytest
from streamlit.testing.v1 import AppTest

from adapters.bootstrap import build_services
from adapters.services import Services
from application.acting import actor_of, admin_actor
from dashboard import ui
from tests.conftest import PgSchemas
from tests.dashboard.conftest import APP, BACKENDS, ENV, database_url
from tests.dashboard.seed import Seeded, empty_store

CONSOLE_ENV = {"TALLYHUB_BILLING_MODE": "credits"}
DASHBOARD = Path(APP).parent


@pytest.fixture(params=BACKENDS)
def console_store(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Seeded:
    """``tallyhub init`` and nothing else, a new one for each test (console actions change it)."""
    return empty_store(tmp_path / "data", database_url(request.param, pg_schemas))


class SignedInPages:
    """Opens pages of ``dashboard/`` on a store, each run once by itself in a session signed
    in with the store's admin key (the session state the sign-in form leaves; the form and
    the gate are tested in tests/dashboard/test_gate_and_overview.py), so a page's test does
    not depend on the other pages being there."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.opened = 0

    def open(self, store: Seeded, page: str, extra_env: dict[str, str] | None = None) -> AppTest:
        for name in ENV:
            self.monkeypatch.delenv(name, raising=False)
        for name, value in {**store.env, **CONSOLE_ENV, **(extra_env or {})}.items():
            self.monkeypatch.setenv(name, value)
        app = AppTest.from_file(str(DASHBOARD / page), default_timeout=60)
        app.session_state[ui.SIGNED_IN] = True
        app.session_state[ui.ADMIN_ACTOR] = admin_actor(store.admin_key)
        app.run()
        assert not app.exception, app.exception
        self.opened += 1
        return app

    def close(self) -> None:
        if self.opened:
            _close_console_services()


@pytest.fixture
def signed_in_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AppTest]]:
    """``signed_in_page(store, "analytics/overview.py")``: that page, signed in (``SignedInPages``);
    what it cached is closed at the end of the test."""
    pages = SignedInPages(monkeypatch)

    def open_page(store: Seeded, page: str, *, extra_env: dict[str, str] | None = None) -> AppTest:
        return pages.open(store, page, extra_env)

    yield open_page
    pages.close()


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AppTest]]:
    """``console(store, "accounts")``: ``dashboard/console/pages/accounts.py``, signed in
    (``SignedInPages``); the console's services and caches are closed at the end of the test."""
    pages = SignedInPages(monkeypatch)

    def open_page(store: Seeded, page: str, *, extra_env: dict[str, str] | None = None) -> AppTest:
        return pages.open(store, f"console/pages/{page}.py", extra_env)

    yield open_page
    pages.close()


def _close_console_services() -> None:
    """The dashboard process keeps one Services per store (``st.cache_resource``, with no
    release hook): close each, then clear every cached resource (the read-model pools and
    ledgers close on release), so no PostgreSQL connection outlives its test's store (the
    server's connections are shared by every test run on this machine)."""
    import streamlit as st
    from streamlit.runtime.caching.cache_resource_api import _resource_caches as caches

    from dashboard.console import actions

    with caches._caches_lock:
        every = [cache for per_session in caches._function_caches.values() for cache in per_session.values()]
    for cache in every:
        with cache._mem_cache_lock:
            results = list(cache._mem_cache.values())
        for result in results:
            if isinstance(result.value, Services):
                result.value.close()
    actions._services.clear()
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def application() -> Iterator[Callable[[Seeded], Services]]:
    """``application(store)``: the application services the CLI builds on ``store``, to check
    what an action did (closed at the end of the test)."""
    built: list[Services] = []

    def open_services(store: Seeded) -> Services:
        services = build_services(store.settings)
        built.append(services)
        return services

    yield open_services
    for services in built:
        services.close()


def actors(services: Services, aggregate_id: UUID) -> list[str | None]:
    """The actor each stored event of ``aggregate_id`` names, oldest first."""
    return [actor_of(event) for event in services.ledger.events.get(aggregate_id)]


def last_actor(services: Services, aggregate_id: UUID) -> str | None:
    return actors(services, aggregate_id)[-1]
