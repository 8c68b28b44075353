"""The console's accounts page, on SQLite and PostgreSQL: each action done through its form,
its effect read back through the application the CLI runs (exact nanocredits), and each
event it recorded naming the signed-in admin key's actor; bad input and an unconfirmed
debit shown as errors that change nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from streamlit.testing.v1 import AppTest

from adapters.queries import read_balance
from adapters.services import Services
from application.acting import admin_actor
from domain.rate_limits import RateLimits, account_limits_id
from tests.dashboard.console_fixtures import actors, application, console, console_store, last_actor
from tests.dashboard.seed import NANO, Seeded

Console = Callable[..., AppTest]
Application = Callable[[Seeded], Services]

__all__ = ["application", "console", "console_store"]  # fixtures


def errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def balance_metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def fill(app: AppTest, **fields: str) -> AppTest:
    for key, value in fields.items():
        app.text_input(key=key).input(value)
    return app


def with_account(store: Seeded, application: Application, credits: int = 0) -> Services:
    """An account ``acme`` made beforehand (by the application, as no one), with ``credits``."""
    services = application(store)
    services.accounts.create_account("acme", credits * NANO)
    return services


def balance_of(services: Services) -> dict[str, int]:
    data = read_balance(services, "acme")
    return {name: data[name] for name in ("balance", "held", "available")}


def event_count(services: Services) -> int:
    return len(list(services.ledger.events.get(services.ledger.get_account("acme").id)))


def test_an_account_created_in_the_console_has_its_starter_credits_and_names_the_admin(
    console_store: Seeded, console: Console, application: Application
) -> None:
    app = console(console_store, "accounts")
    assert "No accounts yet" in app.info[0].value
    fill(app, account_create_name="acme", account_create_starter="12.000000005")
    app.button(key="account_create_submit").click().run()

    assert not app.exception and not errors(app)
    assert app.selectbox(key="credit_account").value == "acme"
    assert balance_metrics(app) == {
        "Balance (credits)": "12.000000005",
        "Available (credits)": "12.000000005",
        "Held (credits)": "0.00",
    }
    services = application(console_store)
    assert balance_of(services) == {"balance": 12_000_000_005, "held": 0, "available": 12_000_000_005}
    assert set(actors(services, services.ledger.get_account("acme").id)) == {admin_actor(console_store.admin_key)}


def test_a_grant_with_an_idempotency_key_and_an_expiry_is_credited_once(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = with_account(console_store, application, credits=1)
    deadline = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    app = console(console_store, "accounts")
    for _ in range(2):
        fill(
            app,
            grant_amount="7.25",
            grant_reason="trial",
            grant_idempotency_key="order-41",
            grant_expires_at=deadline.isoformat(),
        )
        app.button(key="grant_submit").click().run()
        assert not app.exception and not errors(app)

    assert [s.value for s in app.success] == ["Not credited again: this idempotency key was used before."]
    assert balance_of(services) == {"balance": 8_250_000_000, "held": 0, "available": 8_250_000_000}
    account = services.ledger.get_account("acme")
    assert (account.expiring, account.next_expiry) == (7_250_000_000, deadline)
    assert last_actor(services, account.id) == admin_actor(console_store.admin_key)
    assert balance_metrics(app)["Balance (credits)"] == "8.25"


def test_a_bad_amount_or_expiry_shows_the_applications_error_and_changes_nothing(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = with_account(console_store, application, credits=1)
    before = event_count(services)
    app = console(console_store, "accounts")
    fill(app, grant_amount="1.0000000001")
    app.button(key="grant_submit").click().run()
    assert len(errors(app)) == 1 and "amount" in errors(app)[0]
    fill(app, grant_amount="2", grant_expires_at="next tuesday")
    app.button(key="grant_submit").click().run()
    assert errors(app) == ["'expires_at' is not an ISO 8601 time: 'next tuesday'"]
    fill(app, account_create_name="acme")
    app.button(key="account_create_submit").click().run()
    assert errors(app) == ["account 'acme' already exists"]
    assert not app.exception
    assert (event_count(services), balance_of(services)["balance"]) == (before, NANO)


def test_a_debit_is_made_only_once_confirmed(console_store: Seeded, console: Console, application: Application) -> None:
    services = with_account(console_store, application, credits=10)
    before = event_count(services)
    app = console(console_store, "accounts")
    fill(app, adjust_amount="-2.5", adjust_reason="double top-up")
    app.button(key="adjust_submit").click().run()
    assert errors(app) == ["tick the box to confirm the debit; nothing was changed"]
    assert (event_count(services), balance_of(services)["balance"]) == (before, 10 * NANO)

    fill(app, adjust_amount="-2.5", adjust_reason="double top-up")
    app.checkbox(key="adjust_confirm").check()
    app.button(key="adjust_submit").click().run()
    assert not app.exception and not errors(app)
    assert balance_of(services) == {"balance": 7_500_000_000, "held": 0, "available": 7_500_000_000}
    assert last_actor(services, services.ledger.get_account("acme").id) == admin_actor(console_store.admin_key)
    assert balance_metrics(app)["Available (credits)"] == "7.50"


def test_spend_caps_rate_limits_and_alerts_are_saved_and_shown_again(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = with_account(console_store, application)
    account_id = services.ledger.get_account("acme").id
    admin = admin_actor(console_store.admin_key)
    app = console(console_store, "accounts")
    fill(app, caps_day="3", caps_month="50.000000001")
    app.button(key="caps_submit").click().run()
    fill(app, limits_rpm="60", limits_max_parallel="2")
    app.button(key="limits_submit").click().run()
    fill(app, alerts_below="1.5, 5")
    app.button(key="alerts_submit").click().run()
    assert not app.exception and not errors(app)

    account = services.ledger.get_account(account_id)
    assert account.caps["account"] == {"day": 3 * NANO, "month": 50_000_000_001}
    assert services.accounts.get_account_limits(account_id) == (account_id, RateLimits(rpm=60, max_parallel=2))
    assert list(account.alert_thresholds) == [5 * NANO, 1_500_000_000]
    assert actors(services, account_id)[-2:] == [admin, admin]  # caps, then alerts
    assert last_actor(services, account_limits_id(account_id)) == admin

    shown = console(console_store, "accounts")  # a new session fills the fields with what is set
    assert [shown.text_input(key=k).value for k in ("caps_day", "caps_month", "limits_rpm", "limits_tpm")] == [
        "3",
        "50.000000001",
        "60",
        "",
    ]
    assert shown.text_input(key="alerts_below").value == "5, 1.5"


def test_bad_caps_and_limits_show_errors_and_change_nothing(
    console_store: Seeded, console: Console, application: Application
) -> None:
    services = with_account(console_store, application)
    before = event_count(services)
    app = console(console_store, "accounts")
    fill(app, caps_day="-1")
    app.button(key="caps_submit").click().run()
    assert errors(app) == ["day must not be negative"]
    fill(app, limits_rpm="ten")
    app.button(key="limits_submit").click().run()
    assert errors(app) == ["rpm must be a whole number (blank or 0: no limit), not 'ten'"]
    fill(app, alerts_below="0")
    app.button(key="alerts_submit").click().run()
    assert errors(app) == ["an alert threshold is a positive amount"]
    assert not app.exception
    track = console(console_store, "accounts", extra_env={"TALLYHUB_BILLING_MODE": "track"})
    fill(track, caps_month="100")
    track.button(key="caps_submit").click().run()
    assert len(errors(track)) == 1 and "spend caps" in errors(track)[0] and "credits" in errors(track)[0]
    account_id = services.ledger.get_account("acme").id
    assert event_count(services) == before
    assert services.accounts.get_account_limits(account_id) == (account_id, RateLimits())
