"""The console's API keys page, on SQLite and PostgreSQL: issue (the secret shown once, then
never again, and it authenticates), revoke and rotate (each only once confirmed), allowed
models, rate limits and spend caps of a key; effects read back through the application,
each event naming the signed-in admin key's actor; bad input changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from adapters.services import Services
from application.acting import admin_actor
from domain.errors import AuthenticationFailed
from domain.rate_limits import RateLimits
from tests.dashboard.console_fixtures import actors, application, console, console_store, last_actor
from tests.dashboard.seed import NANO, Seeded

Console = Callable[..., AppTest]
Application = Callable[[Seeded], Services]

__all__ = ["application", "console", "console_store"]  # fixtures


def errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def secrets_shown(app: AppTest) -> list[str]:
    return [c.value for c in app.code]


def key_rows(app: AppTest) -> list[dict[str, str]]:
    return app.dataframe[0].value.to_dict("records") if app.dataframe else []


def acme(store: Seeded, application: Application) -> Services:
    services = application(store)
    services.accounts.create_account("acme", 5 * NANO)
    return services


def test_an_issued_key_is_shown_once_authenticates_and_is_kept_nowhere(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = acme(console_store, application)
    app = console(console_store, "keys")
    assert "No keys yet" in app.info[0].value
    app.text_input(key="issue_name").input("prod")
    app.text_input(key="issue_models").input("openai/*, anthropic/claude-test")
    app.button(key="issue_submit").click().run()

    assert not app.exception and not errors(app)
    [secret] = secrets_shown(app)
    assert "Copy the key now" in app.warning[0].value
    key = services.ledger.authenticate(secret)
    assert (key.name, key.account_id) == ("prod", services.ledger.get_account("acme").id)
    assert key.allowed_models == ["openai/*", "anthropic/claude-test"]
    assert actors(services, key.id) == [admin_actor(console_store.admin_key)] * 2  # issued, models limited
    assert secret not in repr(app.session_state.to_dict())
    [row] = key_rows(app)
    assert (row["name"], row["id"], row["status"], row["key"]) == ("prod", str(key.id), "active", key.prefix)
    assert secret not in repr(row) and key.prefix.endswith(secret[-4:])

    app.run()  # the next run: the secret is gone from the page, the key stays listed
    assert secrets_shown(app) == [] and not app.warning
    assert [r["id"] for r in key_rows(app)] == [str(key.id)]
    assert secret not in repr(list(services.ledger.events.get(key.id)))


def test_a_key_is_revoked_only_once_confirmed(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = acme(console_store, application)
    secret = services.api_keys.issue_api_key("acme", name="ci").plaintext
    app = console(console_store, "keys")
    app.button(key="revoke_submit").click().run()
    assert errors(app) == ["tick the box to confirm revoking the key; nothing was changed"]
    key = services.ledger.authenticate(secret)  # still works
    assert not key.revoked

    app.text_input(key="revoke_reason").input("leaked in a log")
    app.checkbox(key="revoke_confirm").check()
    app.button(key="revoke_submit").click().run()
    assert not app.exception and not errors(app)
    assert services.ledger.get_api_key(key.id).revoked
    with pytest.raises(AuthenticationFailed):  # a fresh ledger: the first one's read cache still has the key
        application(console_store).ledger.authenticate(secret)
    assert last_actor(services, key.id) == admin_actor(console_store.admin_key)
    assert [r["status"] for r in key_rows(app)] == ["revoked"]


def test_a_key_rotated_with_grace_gives_a_new_secret_once_and_the_old_key_works_until_then(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = acme(console_store, application)
    old_secret = services.api_keys.issue_api_key("acme", name="prod").plaintext
    old_id = services.ledger.authenticate(old_secret).id
    app = console(console_store, "keys")
    app.text_input(key="rotate_grace_seconds").input("3600")
    app.button(key="rotate_submit").click().run()
    assert errors(app) == ["tick the box to confirm rotating the key; nothing was changed"]
    assert services.ledger.get_api_key(old_id).replaced_by is None

    before = datetime.now(UTC)
    app.text_input(key="rotate_grace_seconds").input("3600")
    app.checkbox(key="rotate_confirm").check()
    app.button(key="rotate_submit").click().run()
    after = datetime.now(UTC)
    assert not app.exception and not errors(app)
    [new_secret] = secrets_shown(app)
    new = services.ledger.authenticate(new_secret)
    assert application(console_store).ledger.authenticate(old_secret).id == old_id  # within its grace period
    old = services.ledger.get_api_key(old_id)
    assert (new.name, old.replaced_by) == ("prod", new.id)
    assert old.retires_at is not None
    assert before + timedelta(seconds=3600) <= old.retires_at <= after + timedelta(seconds=3600)
    admin = admin_actor(console_store.admin_key)
    assert (last_actor(services, old.id), actors(services, new.id)) == (admin, [admin])
    app.run()
    assert secrets_shown(app) == []
    assert sorted(r["status"].split(",")[0] for r in key_rows(app)) == ["active", "rotated"]


def test_allowed_models_rate_limits_and_spend_caps_of_a_key(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = acme(console_store, application)
    key_id = services.api_keys.issue_api_key("acme", name="prod").key_id
    app = console(console_store, "keys")
    app.text_input(key="models_allowed").input("openai/gpt-4o-mini, anthropic/*")
    app.button(key="models_submit").click().run()
    app.text_input(key="key_limits_rpm").input("10")
    app.text_input(key="key_limits_tpm").input("20000")
    app.button(key="key_limits_submit").click().run()
    app.text_input(key="key_caps_day").input("0.5")
    app.button(key="key_caps_submit").click().run()
    assert not app.exception and not errors(app)

    key = services.ledger.get_api_key(key_id)
    assert key.allowed_models == ["openai/gpt-4o-mini", "anthropic/*"]
    assert key.rate_limits == RateLimits(rpm=10, tpm=20000)
    account = services.ledger.get_account("acme")
    assert account.caps[key_id.hex] == {"day": 500_000_000, "month": None}
    admin = admin_actor(console_store.admin_key)
    assert actors(services, key_id)[1:] == [admin, admin]
    assert last_actor(services, account.id) == admin
    [row] = key_rows(app)
    assert (row["allowed models"], row["rpm"], row["tpm"], row["day cap"]) == (
        "openai/gpt-4o-mini, anthropic/*",
        "10",
        "20000",
        "0.50",
    )
    assert app.text_input(key="key_caps_day").value == "0.5"


def test_bad_models_limits_or_grace_show_errors_and_change_nothing(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = acme(console_store, application)
    key_id = services.api_keys.issue_api_key("acme", name="prod").key_id
    app = console(console_store, "keys")
    app.text_input(key="models_allowed").input("openai/gpt 4o")
    app.button(key="models_submit").click().run()
    app.text_input(key="key_limits_max_parallel").input("-3")
    app.button(key="key_limits_submit").click().run()
    app.text_input(key="rotate_grace_seconds").input("9999999")
    app.checkbox(key="rotate_confirm").check()
    app.button(key="rotate_submit").click().run()
    app.text_input(key="issue_expires").input("2001-01-01T00:00:00Z")
    app.button(key="issue_submit").click().run()
    assert not app.exception
    assert len(errors(app)) == 1  # each run shows its own error only
    assert errors(app) == ["a key's expiry must be in the future"]
    assert len(list(services.ledger.events.get(key_id))) == 1
    assert len(key_rows(app)) == 1


def test_each_of_the_bad_inputs_above_names_what_is_wrong(
    console_store: Seeded, console: Console, application: Application
) -> None:
    acme(console_store, application).api_keys.issue_api_key("acme", name="prod")
    app = console(console_store, "keys")
    app.text_input(key="models_allowed").input("openai/gpt 4o")
    app.button(key="models_submit").click().run()
    assert len(errors(app)) == 1 and "gpt 4o" in errors(app)[0]
    app.text_input(key="key_limits_max_parallel").input("-3")
    app.button(key="key_limits_submit").click().run()
    assert errors(app) == ["max_parallel must be a whole number (blank or 0: no limit), not '-3'"]
    app.text_input(key="rotate_grace_seconds").input("9999999")
    app.checkbox(key="rotate_confirm").check()
    app.button(key="rotate_submit").click().run()
    assert errors(app) == ["a grace period is 0 to 30 days"]


def test_the_key_list_shows_each_keys_last_use(seeded: Seeded, console: Console) -> None:
    app = console(seeded, "keys")
    assert app.selectbox(key="keys_account").value == "acme"
    rows = {r["name"]: r for r in key_rows(app)}
    assert set(rows) == {"prod", "ci"}
    for row in rows.values():
        assert row["status"] == "active"
        used = row["last used (UTC)"]
        assert used != "—" and used.endswith(" UTC")
        assert datetime.strptime(used[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) <= seeded.now


def test_the_console_pages_open_from_the_signed_in_app(empty: Seeded, dashboard: Callable[..., AppTest]) -> None:
    app = dashboard(empty)
    for page, title in (("accounts", "Accounts"), ("keys", "API keys")):
        app.switch_page(f"console/pages/{page}.py").run()
        assert not app.exception, app.exception
        assert [t.value for t in app.title] == [title]
        assert "No accounts yet" in app.info[-1].value
