"""Console: the aliases page (dashboard/console/pages/aliases.py) on SQLite and PostgreSQL:
set, replace and remove through the widgets, checked through the application the CLI runs,
each event naming the admin; the CLI's refusals shown as they are; no removal unconfirmed."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from adapters.services import Services
from application.acting import admin_actor
from domain import ids
from domain.catalog import MAX_FALLBACKS
from tests.dashboard.console_fixtures import actors, application, console, console_store  # noqa: F401
from tests.dashboard.seed import Seeded

Console = Callable[..., AppTest]
Application = Callable[[Seeded], Services]


def set_alias(app: AppTest, name: str, models: str) -> AppTest:
    app.text_input(key="alias_set_name").input(name)
    app.text_area(key="alias_set_models").input(models)
    app.button(key="alias_set_submit").click().run()
    assert not app.exception, app.exception
    return app


def test_aliases_are_set_replaced_and_listed_as_the_admin(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = console(console_store, "aliases")
    assert any("No aliases yet" in i.value for i in app.info)
    set_alias(app, "fast", "openai/gpt-4o-mini\nanthropic/claude-haiku, gemini/flash")
    assert [s.value for s in app.success] == ["fast → openai/gpt-4o-mini → anthropic/claude-haiku → gemini/flash"]
    services = application(console_store)
    assert services.prices.aliases() == {"fast": ["openai/gpt-4o-mini", "anthropic/claude-haiku", "gemini/flash"]}
    set_alias(app, "fast", "openai/gpt-4o")
    assert services.prices.aliases() == {"fast": ["openai/gpt-4o"]}
    table = next(d.value for d in app.dataframe if "alias" in d.value.columns)
    assert table.to_dict("records") == [{"alias": "fast", "serves": "openai/gpt-4o", "fallbacks": "—"}]
    admin = admin_actor(console_store.admin_key)
    assert actors(services, ids.CATALOG_ID)[-2:] == [admin, admin]


def test_an_alias_the_cli_would_refuse_shows_its_message_and_changes_nothing(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = console(console_store, "aliases")
    for name, models, message in (
        ("fa st", "openai/gpt-4o", "an alias is a name without '/' or spaces"),
        ("fast", "gpt-4o", "alias targets are PROVIDER/MODEL, got 'gpt-4o'"),
        ("fast", "openai/gpt-4o\nopenai/gpt-4o", "an alias lists each model once"),
        ("fast", "", f"an alias needs a target and at most {MAX_FALLBACKS} fallbacks"),
    ):
        set_alias(app, name, models)
        assert [e.value for e in app.error] == [message]
    assert application(console_store).prices.aliases() == {}


def test_an_alias_is_removed_only_when_confirmed(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = set_alias(console(console_store, "aliases"), "fast", "openai/gpt-4o")
    set_alias(app, "smart", "anthropic/claude-opus")
    services = application(console_store)
    app.selectbox(key="alias_remove_name").select("fast")
    app.button(key="alias_remove_submit").click().run()
    assert [e.value for e in app.error] == ["Tick “I understand” to remove the alias fast: nothing was changed."]
    assert sorted(services.prices.aliases()) == ["fast", "smart"]
    app.checkbox(key="alias_remove_confirm").check()
    app.button(key="alias_remove_submit").click().run()
    assert [s.value for s in app.success] == ["Alias fast removed."]
    assert services.prices.aliases() == {"smart": ["anthropic/claude-opus"]}
    assert actors(services, ids.CATALOG_ID)[-1] == admin_actor(console_store.admin_key)
