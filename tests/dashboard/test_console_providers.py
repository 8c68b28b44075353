"""Console: the providers page (dashboard/console/pages/providers.py) on SQLite and
PostgreSQL. Each action goes through the widgets; its effect is read back through the
application the CLI runs, and its events name the admin who acted. A provider secret is
never left anywhere the page or the session keeps after the submit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from adapters.services import Services
from application.acting import admin_actor
from domain.provider import UpstreamPolicy
from tests.dashboard.console_fixtures import actors, application, console, console_store, last_actor  # noqa: F401
from tests.dashboard.seed import Seeded

Console = Callable[..., AppTest]
Application = Callable[[Seeded], Services]
SECRET = "sk-console-provider-secret-7c41"
OTHER = "sk-console-provider-secret-9d02"


def secret_left_in(app: AppTest, secret: str, *, incoming: bool = False) -> list[str]:
    """Where ``secret`` still is: any element the page shows (its proto, values included)
    or any value of the session's state (``st.session_state``: user keys and widget values).
    ``incoming``: Streamlit's buffer of the widget values the last interaction sent, too,
    which it keeps as received until the next run (the page blanks the value itself)."""
    found = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None and secret in str(proto):
            found.append(f"element {type(node).__name__} {getattr(node, 'key', None)}")
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(app._tree)
    state = app._session_state._state
    places: dict[str, Any] = {
        "session state": state.filtered_state,
        "kept": state._old_state,
        "set": state._new_session_state,
    }
    if incoming:
        places["incoming"] = state._new_widget_state
    found += [where for where, value in places.items() if secret in repr(value)]
    return found


def no_secret_left(app: AppTest, secret: str) -> None:
    """Nothing holds ``secret`` after its submit, nor, after one more run, anywhere at all."""
    assert secret_left_in(app, secret) == []
    app.run()
    assert secret_left_in(app, secret, incoming=True) == []


def frame_with(app: AppTest, column: str) -> Any:
    """The first table shown that has ``column`` (AppTest does not expose a table's key)."""
    return next(d.value for d in app.dataframe if column in d.value.columns)


def errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def add_provider(app: AppTest, name: str, kind: str, secret: str, *, base_url: str = "", weight: int = 1) -> AppTest:
    app.text_input(key="provider_add_name").input(name)
    app.selectbox(key="provider_add_kind").select(kind)
    app.text_input(key="provider_add_base_url").input(base_url)
    app.number_input(key="provider_add_weight").set_value(weight)
    app.text_input(key="provider_add_secret").input(secret)
    app.button(key="provider_add_submit").click()
    app.run()
    assert not app.exception, app.exception
    return app


def test_adding_a_provider_seals_the_secret_names_the_admin_and_keeps_no_copy(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(
        console(console_store, "providers"), "openai", "openai", SECRET, base_url="http://127.0.0.1:9/v1", weight=3
    )
    assert [s.value for s in app.success] == ["Provider openai (openai) added with 1 credential(s)."]
    no_secret_left(app, SECRET)
    assert "…7c41" in frame_with(app, "credential")["secret"].tolist()

    services = application(console_store)
    provider = services.ledger.get_provider("openai")
    [credential] = provider.credentials
    assert (provider.kind, provider.base_url, provider.enabled) == ("openai", "http://127.0.0.1:9/v1", True)
    assert (credential.hint, credential.weight, credential.enabled) == ("…7c41", 3, True)
    assert services.ledger.open_credential(provider, credential) == SECRET  # stored sealed, exactly as typed
    assert set(actors(services, provider.id)) == {admin_actor(console_store.admin_key)}


def test_a_provider_the_cli_would_refuse_shows_its_message_and_changes_nothing(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(console(console_store, "providers"), "compat", "openai-compatible", SECRET)
    assert errors(app) == ["a provider of kind 'openai-compatible' needs --base-url"]
    app = add_provider(app, "bad/name", "openai", SECRET)
    assert errors(app) == ["a provider name must not contain '/'"]
    app = add_provider(app, "nokey", "anthropic", "")
    assert errors(app) == ["a provider of kind 'anthropic' needs an API key (--api-key-stdin)"]
    no_secret_left(app, SECRET)
    assert application(console_store).ledger.list_providers() == []


def test_credentials_are_added_rotated_with_grace_disabled_enabled_and_deleted_as_the_admin(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(console(console_store, "providers"), "openai", "openai", SECRET)
    services = application(console_store)
    admin = admin_actor(console_store.admin_key)
    first = services.ledger.get_provider("openai").credentials[0].credential_id

    app.text_input(key="credential_add_secret").input(OTHER)
    app.number_input(key="credential_add_weight").set_value(5)
    app.button(key="credential_add_submit").click().run()
    provider = services.ledger.get_provider("openai")
    second = provider.credentials[1]
    assert [s.value for s in app.success] == [f"Credential {second.credential_id} added to openai."]
    assert (second.hint, second.weight) == ("…9d02", 5)
    no_secret_left(app, OTHER)

    replacement = "sk-console-rotated-secret-0e55"
    app.selectbox(key="credential_rotate_id").set_value(first)
    app.text_input(key="credential_rotate_secret").input(replacement)
    app.number_input(key="credential_rotate_grace").set_value(3600)
    app.button(key="credential_rotate_submit").click().run()
    assert not errors(app), errors(app)
    provider = services.ledger.get_provider("openai")
    old, new = provider.credential(first), provider.credentials[-1]
    assert (old.replaced_by, old.enabled, new.hint, new.weight) == (new.credential_id, True, "…0e55", 1)
    assert old.retires_at is not None and 3599 <= (old.retires_at - services.ledger.clock.now()).total_seconds()
    assert services.ledger.open_credential(provider, new) == replacement
    no_secret_left(app, replacement)

    # disabling and deleting need "I understand"; without it nothing changes
    app.selectbox(key="credential_manage_id").set_value(second.credential_id)
    for command in ("disable", "delete"):
        app.button(key=f"credential_{command}_submit").click().run()
        assert errors(app) == [
            f"Tick “I understand” to {command} credential {second.credential_id}: nothing was changed."
        ]
    assert services.ledger.get_provider("openai").credential(second.credential_id).enabled
    app.checkbox(key="credential_manage_confirm").check()
    app.button(key="credential_disable_submit").click().run()
    disabled = services.ledger.get_provider("openai").credential(second.credential_id)
    assert (disabled.enabled, disabled.disabled_reason) == (False, "disabled by the operator")
    assert app.checkbox(key="credential_manage_confirm").value is False  # asked again next time
    app.button(key="credential_enable_submit").click().run()  # enabling needs no confirmation
    assert services.ledger.get_provider("openai").credential(second.credential_id).enabled
    app.checkbox(key="credential_manage_confirm").check()
    app.button(key="credential_delete_submit").click().run()
    assert second.credential_id not in [c.credential_id for c in services.ledger.get_provider("openai").credentials]
    assert [s.value for s in app.success] == [f"Credential {second.credential_id} of openai deleted."]
    provider_actors = actors(services, provider.id)
    assert len(provider_actors) >= 7 and set(provider_actors) == {admin}


def test_a_provider_is_disabled_only_when_confirmed_and_enabled_again(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(console(console_store, "providers"), "local", "ollama", "", base_url="http://127.0.0.1:9")
    services = application(console_store)
    app.button(key="provider_disable_submit").click().run()
    assert errors(app) == ["Tick “I understand” to disable provider local: nothing was changed."]
    assert services.ledger.get_provider("local").enabled
    app.checkbox(key="provider_state_confirm").check()
    app.button(key="provider_disable_submit").click().run()
    provider = services.ledger.get_provider("local")
    assert not provider.enabled and last_actor(services, provider.id) == admin_actor(console_store.admin_key)
    assert "disabled" in frame_with(app, "kind")["status"].tolist()
    app.button(key="provider_enable_submit").click().run()
    assert services.ledger.get_provider("local").enabled


def test_timeouts_and_retries_change_as_providers_update_does(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(console(console_store, "providers"), "local", "ollama", "", base_url="http://127.0.0.1:9")
    services = application(console_store)
    app.text_input(key="policy_retries").input("11")
    app.button(key="policy_submit").click().run()
    assert errors(app) == ["retries must be a whole number from 0 to 10, got 11"]
    app.text_input(key="policy_retries").input("2")
    app.text_input(key="policy_timeout_total").input("abc")
    app.button(key="policy_submit").click().run()
    assert errors(app) == ["timeout_total must be a number of seconds or 'default', got 'abc'"]
    assert services.ledger.get_provider("local").policy == UpstreamPolicy()

    app.text_input(key="policy_retries").input("2")
    app.text_input(key="policy_timeout_total").input("30")
    app.button(key="policy_submit").click().run()
    assert not errors(app), errors(app)
    provider = services.ledger.get_provider("local")
    assert provider.policy == UpstreamPolicy(retries=2, timeout_total=30.0)
    assert last_actor(services, provider.id) == admin_actor(console_store.admin_key)
    app.text_input(key="policy_timeout_total").input("default")
    app.button(key="policy_submit").click().run()
    assert services.ledger.get_provider("local").policy == UpstreamPolicy(retries=2)


def test_the_forms_act_on_the_provider_picked(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(console(console_store, "providers"), "openai", "openai", SECRET)
    app = add_provider(app, "anthropic", "anthropic", OTHER)
    services = application(console_store)
    for name in ("anthropic", "openai"):
        app.selectbox(key="provider_pick").select(name).run()
        [credential] = services.ledger.get_provider(name).credentials
        assert app.selectbox(key="credential_manage_id").value == credential.credential_id
        app.checkbox(key="credential_manage_confirm").check()
        app.button(key="credential_disable_submit").click().run()
        assert not errors(app), errors(app)
        assert not services.ledger.get_provider(name).credential(credential.credential_id).enabled
    assert [s.value for s in app.success] == [f"Credential {credential.credential_id} of openai disabled."]


def test_a_credentials_weight_is_changed_as_providers_weight_does_by_the_admin(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = add_provider(console(console_store, "providers"), "openai", "openai", SECRET)
    app.text_input(key="credential_add_secret").input(OTHER)
    app.button(key="credential_add_submit").click().run()
    services = application(console_store)
    first, second = (c.credential_id for c in services.ledger.get_provider("openai").credentials)

    app.selectbox(key="credential_weight_id").set_value(second)
    app.number_input(key="credential_weight_value").set_value(1000)
    app.button(key="credential_weight_submit").click().run()
    assert not errors(app), errors(app)
    assert [s.value for s in app.success] == [f"Credential {second} of openai now has weight 1000."]
    provider = services.ledger.get_provider("openai")
    assert [(c.credential_id, c.weight) for c in provider.credentials] == [(first, 1), (second, 1000)]
    assert last_actor(services, provider.id) == admin_actor(console_store.admin_key)
    table = frame_with(app, "credential")
    assert table.loc[table["credential"] == second, "weight"].tolist() == [1000]

    # a credential deleted elsewhere since the page was drawn: the application's message, nothing saved
    services.provider_registry.delete_credential("openai", first)
    version = services.ledger.get_provider("openai").version
    app.selectbox(key="credential_weight_id").set_value(first)
    app.number_input(key="credential_weight_value").set_value(5)
    app.button(key="credential_weight_submit").click().run()
    assert errors(app) == [f"provider 'openai' has no credential '{first}'"]
    assert services.ledger.get_provider("openai").version == version
