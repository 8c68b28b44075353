"""Fixtures for the dashboard tests: seeded stores on SQLite and on PostgreSQL (one each
per test session; PostgreSQL schemas come from ``tests/conftest.py``'s ``PgSchemas`` and
are dropped at the end), an empty store, and a signed-in ``AppTest``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PgSchemas
from tests.dashboard.seed import Seeded, empty_store, seed_store

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
BACKENDS = ["sqlite", "postgres"]
ENV = ("TALLYHUB_DATA_DIR", "TALLYHUB_DATABASE_URL", "TALLYHUB_ADMIN_KEY", "TALLYHUB_MASTER_KEY")


def database_url(backend: str, pg_schemas: PgSchemas) -> str | None:
    if backend == "sqlite":
        return None
    import psycopg

    try:
        return pg_schemas.new_url()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not available on 127.0.0.1:5432: {error}")


@pytest.fixture(scope="session", params=BACKENDS)
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: PgSchemas) -> Seeded:
    """A store with three weeks of billed requests, read models caught up (read-only for the tests)."""
    url = database_url(request.param, pg_schemas)
    return seed_store(tmp_path_factory.mktemp(f"dashboard-{request.param}") / "data", url)


@pytest.fixture(params=BACKENDS)
def empty(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Seeded:
    """``tallyhub init`` and nothing else."""
    return empty_store(tmp_path / "data", database_url(request.param, pg_schemas))


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """``dashboard(store, sign_in=True)``: the app pointed at ``store``, run once (and signed in)."""

    def start(store: Seeded, *, sign_in: bool = True, extra_env: dict[str, str] | None = None) -> AppTest:
        for name in ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**store.env, **(extra_env or {})}.items():
            monkeypatch.setenv(name, value)
        app = AppTest.from_file(APP, default_timeout=60)
        app.run()
        if sign_in:
            enter_key(app, store.admin_key)
            assert not app.exception, app.exception
            assert [t.value for t in app.title] == ["Overview"], [e.value for e in app.error]
        return app

    return start


def enter_key(app: AppTest, key: str) -> AppTest:
    app.text_input(key="admin_key").input(key)
    app.button(key="sign_in_submit").click()
    return app.run()


@pytest.fixture
def on_page(dashboard: Callable[..., AppTest]) -> Callable[[Seeded, str], AppTest]:
    def open_page(store: Seeded, page: str) -> AppTest:
        app = dashboard(store)
        app.switch_page(f"analytics/{page}.py").run()
        assert not app.exception, app.exception
        return app

    return open_page


@pytest.fixture(scope="session", autouse=True)
def _clear_streamlit_caches(pg_schemas: PgSchemas) -> Iterator[None]:
    """Close the dashboard's cached pools and ledgers before the PostgreSQL schemas are dropped."""
    yield
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()  # closes the read-model pools and ledgers (on_release)
