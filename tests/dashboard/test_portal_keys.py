"""The portal's API keys page, on SQLite and PostgreSQL: the account's own keys listed; with
self-service keys off no control at all, with them on a key created (shown once) and one
revoked (only after the confirmation), each recorded as the portal session's actor; and
the permission checked again when the action runs, not only when the page was drawn."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from streamlit.testing.v1 import AppTest

from adapters.cli.portal_commands import build_portal
from adapters.services import Services
from application.acting import CLI, acting_as, actor_of
from application.portal import PortalKey
from domain.api_key import ApiKey
from tests.dashboard.test_portal import (  # noqa: F401 - fixtures
    PortalApp,
    PortalStore,
    ServicesOf,
    _release_the_dashboards_resources,
    portal_app,
    portal_store,
    services_of,
    sign_in,
    titles,
)


def keys_page(portal_store: PortalStore, portal_app: PortalApp, key_name: str = "prod") -> AppTest:
    app = sign_in(portal_app(portal_store), portal_store.keys[key_name])
    app.switch_page("portal/keys.py").run()
    assert titles(app) == ["API keys"] and not app.exception, app.exception
    return app


def self_service(services: Services, account: str, on: bool) -> None:
    with acting_as(CLI):
        services.accounts.set_self_service(account, keys=on)


def listed(app: AppTest) -> dict[str, str]:
    table = next(d.value for d in app.dataframe if "key id" in d.value.columns)
    return dict(zip(table["name"], table["state"], strict=True))


def controls(app: AppTest) -> list[str]:
    """The page's own buttons (the sidebar has Refresh and Sign out)."""
    return [str(b.key) for b in app.button if str(b.key).startswith(("portal_new_key", "portal_revoke"))]


def events_of(services: Services, aggregate_id: UUID) -> list[Any]:
    return list(services.ledger.events.get(aggregate_id))


def test_with_self_service_off_the_keys_are_listed_without_any_control(
    portal_store: PortalStore, portal_app: PortalApp
) -> None:
    app = keys_page(portal_store, portal_app)
    assert listed(app) == {"prod": "active", "ci": "active"}  # acme's keys only, never globex's "main"
    shown = "\n".join(d.value.to_csv() for d in app.dataframe)
    assert all(plaintext not in shown for plaintext in portal_store.keys.values())
    assert not controls(app) and not app.checkbox and not app.text_input
    assert any(c.value.startswith("Your operator manages this account's keys") for c in app.caption)


def test_with_self_service_on_a_key_is_created_once_and_recorded_as_the_portal(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    services = services_of(portal_store)
    self_service(services, "acme", True)
    account = services.ledger.get_account("acme")
    assert account.self_service_keys is True
    assert actor_of(events_of(services, account.id)[-1]) == CLI
    app = keys_page(portal_store, portal_app)
    app.text_input(key="portal_new_key_name").input("laptop")
    app.button(key="portal_new_key_submit").click().run()
    assert not app.exception and not app.error
    (shown,) = [c.value for c in app.code]
    created = services.ledger.authenticate(shown)  # the key works, and is acme's
    assert created.account_id == account.id and created.name == "laptop"
    assert actor_of(events_of(services, created.id)[0]) == f"portal:{portal_store.key_ids['prod']}"
    assert all(shown not in str(value) for value in (app.session_state[k] for k in ("tallyhub_portal_session",)))
    app.run()  # shown once: the next run no longer shows it
    assert not app.code
    assert listed(app)["laptop"] == "active"


def test_a_key_is_revoked_only_after_the_confirmation(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    services = services_of(portal_store)
    self_service(services, "acme", True)
    app = keys_page(portal_store, portal_app)
    ci = str(portal_store.key_ids["ci"])
    app.selectbox(key="portal_revoke_pick").set_value(ci).run()
    assert app.button(key="portal_revoke_submit").disabled  # no confirmation ticked: it cannot be pressed
    assert services.ledger.get_api_key(ci).revoked is False
    app.checkbox(key="portal_revoke_sure").check().run()
    app.button(key="portal_revoke_submit").click().run()
    assert not app.exception and not app.error
    revoked = services.ledger.get_api_key(ci)
    assert revoked.revoked is True
    last = events_of(services, revoked.id)[-1]
    assert isinstance(last, ApiKey.Revoked) and actor_of(last) == f"portal:{portal_store.key_ids['prod']}"
    assert listed(app)["ci"] == "revoked"
    assert services.ledger.get_api_key(portal_store.key_ids["main"]).revoked is False


def test_turning_self_service_off_refuses_an_action_of_a_page_drawn_before(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    services = services_of(portal_store)
    self_service(services, "acme", True)
    app = keys_page(portal_store, portal_app)
    app.text_input(key="portal_new_key_name").input("late")
    self_service(services, "acme", False)  # meanwhile, by the operator
    app.button(key="portal_new_key_submit").click().run()
    assert not app.code and not controls(app)  # the run re-checked the permission before acting
    assert set(listed(app)) == {"prod", "ci"}
    names = {key.name for key in portal_keys(services, "acme")}
    assert names == {"prod", "ci"}


def portal_keys(services: Services, account: str) -> list[PortalKey]:
    return build_portal(services).list_keys(services.ledger.get_account(account).id)
