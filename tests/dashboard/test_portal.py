"""The customer portal (``/portal``) in Streamlit's AppTest, on SQLite and PostgreSQL: sign
in with an API key or a one-use link, every page showing the signed-in account's own
figures exactly and never another account's, sessions that end when the key is revoked
or the operator revokes the account's portal access, and no admin page reachable.

Each test gets a fresh store (``portal_store``): two accounts, ``acme`` (two keys, three
billed requests) and ``globex`` (one key, one request), read models caught up."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from adapters.bootstrap import build_ledger, build_read_models, build_services
from adapters.cli.portal_commands import build_portal
from adapters.cli.statement_commands import read_statement
from adapters.http.errors import status_of
from adapters.services import Services
from adapters.settings import Settings
from application.accounts import Accounts
from application.acting import CLI, acting_as, actor_of
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from dashboard.metrics import credits_text
from domain.portal import PortalLink
from domain.usage import Usage
from tests.conftest import PgSchemas
from tests.dashboard.conftest import APP, BACKENDS, database_url
from tests.dashboard.seed import Seeded, empty_store
from tests.fakes.clock import FakeClock

NANO = 10**9
MODEL = "openai/gpt-portal"
OTHER_MODEL = "openai/gpt-portal-mini"
PortalApp = Callable[..., AppTest]
ServicesOf = Callable[..., Services]
PORTAL_TITLES = {"Balance of acme", "Usage", "Requests", "Statement of acme", "API keys"}


@dataclass
class PortalStore:
    store: Seeded
    keys: dict[str, str] = field(default_factory=dict)  # key name -> plaintext
    key_ids: dict[str, UUID] = field(default_factory=dict)
    # account -> its requests as (request id, key name, model, charge)
    requests: dict[str, list[tuple[UUID, str, str, int]]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.store.settings

    def charged(self, account: str) -> int:
        return sum(charge for *_, charge in self.requests[account])


def _bill(store: PortalStore, billing: RequestBilling, key_name: str, account: str, model: str, tokens: int) -> None:
    shape = RequestShape(model=model, prompt_bytes=400, max_output_tokens=100, choices=1, stream=False)
    opened = billing.open_request(store.keys[key_name], shape)
    route = next(billing.router.routes(opened.targets[0]))
    receipt = billing.complete_request(opened, route, Usage(input_tokens=tokens, output_tokens=tokens // 2))
    store.requests.setdefault(account, []).append((opened.request_id, key_name, model, receipt.charge))


def build_store(data_dir: Path, url: str | None) -> PortalStore:
    store = PortalStore(empty_store(data_dir, url))
    ledger = build_ledger(store.settings)
    try:
        ledger.load_deployment()
        with acting_as(CLI):
            ProviderRegistry(ledger).register_provider(
                "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-portal-seed-0001"
            )
            Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
            Prices(ledger).set_price(OTHER_MODEL, price_from_credits(input="1", output="3"))
            for name, amount in (("acme", 50 * NANO), ("globex", 7 * NANO)):
                Accounts(ledger).create_account(name)
                Accounts(ledger).grant_credits(name, amount, reason="seed")
            for account, key_name in (("acme", "prod"), ("acme", "ci"), ("globex", "main")):
                issued = ApiKeys(ledger).issue_api_key(account, name=key_name)
                store.keys[key_name], store.key_ids[key_name] = issued.plaintext, issued.key_id
        billing = RequestBilling(
            ledger,
            Router(ledger, CredentialHealth(), rng=random.Random(3)),
            mode="credits",
            hold_ttl=timedelta(minutes=15),
            status_of=status_of,
        )
        _bill(store, billing, "prod", "acme", MODEL, 1000)
        _bill(store, billing, "prod", "acme", OTHER_MODEL, 3000)
        _bill(store, billing, "ci", "acme", MODEL, 500)
        _bill(store, billing, "main", "globex", MODEL, 700)
        catch_up(store, ledger)
    finally:
        ledger.close()
    return store


def catch_up(store: PortalStore, ledger: Ledger) -> None:
    read_models = build_read_models(store.settings, ledger)
    read_models.runner.catch_up()
    read_models.close()


@pytest.fixture(autouse=True)
def _release_the_dashboards_resources() -> Iterator[None]:
    """Each test has a store of its own: let the dashboard's cached ledgers and pools go after it
    (PostgreSQL's connections are shared by everyone)."""
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(params=BACKENDS)
def portal_store(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> PortalStore:
    return build_store(tmp_path / "data", database_url(request.param, pg_schemas))


@pytest.fixture
def services_of() -> Iterator[Callable[[PortalStore], Services]]:
    """The application services on a store, as the CLI builds them (closed at the end)."""
    opened: list[Services] = []

    def open_on(store: PortalStore, clock: FakeClock | None = None) -> Services:
        opened.append(build_services(store.settings, clock=clock))
        return opened[-1]

    yield open_on
    for services in opened:
        services.close()


@pytest.fixture
def portal_app(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """``portal_app(store, token=None, env=None)``: the app on ``/portal``, run once."""

    def start(store: PortalStore, *, token: str | None = None, env: dict[str, str] | None = None) -> AppTest:
        for name in ("TALLYHUB_DATA_DIR", "TALLYHUB_DATABASE_URL", "TALLYHUB_TOPUP_URL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {**store.store.env, **(env or {})}.items():
            monkeypatch.setenv(name, value)
        app = AppTest.from_file(APP, default_timeout=60)
        if token is not None:
            app.query_params["token"] = token
        app.run()  # the admin's sign-in: the default page
        app.switch_page("portal/sign_in.py").run()  # /portal
        assert not app.exception, app.exception
        return app

    return start


def sign_in(app: AppTest, key: str) -> AppTest:
    app.text_input(key="portal_api_key").input(key)
    app.button(key="portal_sign_in_submit").click().run()
    assert not app.exception, app.exception
    return app


def titles(app: AppTest) -> list[str]:
    return [t.value for t in app.title]


def metric(app: AppTest, label: str) -> str:
    return next(str(m.value) for m in app.metric if m.label == label)


def every_text(app: AppTest) -> str:
    parts = [
        str(e.value)
        for kind in ("markdown", "caption", "title", "error", "warning", "info")
        for e in getattr(app, kind)
    ]
    parts += [m.value for m in app.metric]
    parts += [df.value.to_csv() for df in app.dataframe]
    return "\n".join(parts)


def frame_with(app: AppTest, column: str) -> pd.DataFrame:
    frame: pd.DataFrame = next(d.value for d in app.dataframe if column in d.value.columns)
    return frame


def ledger_balance(services: Services, account: str) -> tuple[int, int]:
    found = services.ledger.get_account(account)
    return found.balance, found.available


# --- signing in --------------------------------------------------------------------


def test_a_key_signs_in_to_its_own_account_and_sees_its_exact_balance(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["ci"])
    assert titles(app) == ["Balance of acme"]
    balance, available = ledger_balance(services_of(portal_store), "acme")
    assert balance == 50 * NANO - portal_store.charged("acme")
    assert metric(app, "Balance (credits)") == credits_text(balance)
    assert metric(app, "Available (credits)") == credits_text(available)
    assert metric(app, "Held by requests in flight (credits)") == "0.00"
    # every charge is within the last 7 days: available ÷ (charged ÷ 7), one decimal, rounded down
    expected_days = (available * 7 * 10) // portal_store.charged("acme")
    assert metric(app, "Days of credit left") == f"{expected_days // 10}.{expected_days % 10}"
    assert not app.get("link_button")  # no TALLYHUB_TOPUP_URL: no top-up link
    assert "globex" not in every_text(app)
    assert app.session_state["tallyhub_portal_session"]
    # the key is not kept: the form was cleared, the session is signed text naming only the key's id
    assert "portal_api_key" not in app.session_state or app.session_state["portal_api_key"] == ""
    assert portal_store.keys["ci"] not in app.session_state["tallyhub_portal_session"]


def test_a_wrong_or_revoked_key_is_refused(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    app = sign_in(portal_app(portal_store), "thk_not-a-key")
    assert [e.value for e in app.error] == ["That API key is not valid: it may be mistyped, revoked or expired."]
    with acting_as(CLI):
        services_of(portal_store).api_keys.revoke_api_key(portal_store.key_ids["prod"])
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    assert titles(app) == ["Customer portal"] and len(app.error) == 1
    assert "tallyhub_portal_session" not in app.session_state


def test_revoking_the_key_ends_its_session_at_the_next_run(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    assert titles(app) == ["Balance of acme"]
    with acting_as(CLI):
        services_of(portal_store).api_keys.revoke_api_key(portal_store.key_ids["prod"])
    app.run()
    assert titles(app) == ["Customer portal"]
    assert [w.value for w in app.warning] == [
        "Your portal session ended: the API key this session was opened with is no longer valid; sign in again"
    ]
    assert "tallyhub_portal_session" not in app.session_state


def test_a_sign_in_link_works_once(portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf) -> None:
    issued = build_portal(services_of(portal_store)).issue_link("globex", timedelta(minutes=5))
    app = portal_app(portal_store, token=issued.token)
    assert titles(app) == ["Balance of globex"]
    assert "token" not in app.query_params
    services = services_of(portal_store)
    assert metric(app, "Balance (credits)") == credits_text(services.ledger.get_account("globex").balance)
    redeemed = services.ledger.find(issued.link_id)
    assert isinstance(redeemed, PortalLink) and redeemed.redeemed_at is not None
    events = list(services.ledger.events.get(issued.link_id))
    assert [type(e).__name__ for e in events] == ["Issued", "Redeemed"]
    assert actor_of(events[1]) == f"portal-link:{issued.link_id}"

    again = portal_app(portal_store, token=issued.token)
    assert titles(again) == ["Customer portal"]
    assert [e.value for e in again.error][0].startswith("This sign-in link is invalid, expired or was already used.")
    assert "tallyhub_portal_session" not in again.session_state


def test_an_expired_or_altered_link_is_refused(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    an_hour_ago = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    expired = build_portal(services_of(portal_store, an_hour_ago)).issue_link("acme", timedelta(minutes=30))
    fresh = build_portal(services_of(portal_store)).issue_link("acme", timedelta(minutes=30))
    altered = fresh.token[:-2] + ("AA" if not fresh.token.endswith("AA") else "BB")
    for token in (expired.token, altered):
        app = portal_app(portal_store, token=token)
        assert titles(app) == ["Customer portal"], token
        assert len(app.error) == 1
    unused = services_of(portal_store).ledger.find(fresh.link_id)
    assert isinstance(unused, PortalLink) and unused.redeemed_at is None


def test_portal_revoke_ends_the_accounts_sessions_and_unused_links(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    other = sign_in(portal_app(portal_store), portal_store.keys["main"])
    portal = build_portal(services_of(portal_store))
    unused = portal.issue_link("acme", timedelta(minutes=10))
    with acting_as(CLI):
        portal.revoke_sessions("acme")
    app.run()
    assert titles(app) == ["Customer portal"]
    assert "operator ended this account's portal sessions" in app.warning[0].value
    other.run()
    assert titles(other) == ["Balance of globex"]  # another account's session goes on
    assert titles(portal_app(portal_store, token=unused.token)) == ["Customer portal"]
    assert titles(sign_in(portal_app(portal_store), portal_store.keys["prod"])) == ["Balance of acme"]


def page_hashes(app: AppTest) -> dict[str, str]:
    """url path -> the page hash a browser asks for (AppTest's record of the registered pages:
    ``switch_page`` itself refuses a page that is not registered, so the hash is set directly)."""
    return {str(info["url_pathname"]): page_hash for page_hash, info in app._registered_pages.items()}


def open_hash(app: AppTest, page_hash: str) -> AppTest:
    app._page_hash = page_hash
    app.run()
    assert not app.exception, app.exception
    return app


def test_no_admin_page_is_reachable_from_a_portal_session(portal_store: PortalStore, portal_app: PortalApp) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    admin = AppTest.from_file(APP, default_timeout=60)  # an admin's session on the same store
    admin.run()
    admin.text_input(key="admin_key").input(portal_store.store.admin_key)
    admin.button(key="sign_in_submit").click().run()
    admin_pages = page_hashes(admin)
    assert {"", "accounts", "requests", "exports"} <= set(admin_pages)  # "": the default page (overview)

    assert set(page_hashes(app)) == {"", "portal-usage", "portal-requests", "portal-statement", "portal-keys"}
    for url_path, page_hash in admin_pages.items():
        shown = titles(open_hash(app, page_hash))
        # the portal's first page (app.py's navigation), or, should a page file ever run
        # directly (Streamlit's pages-directory mode, see dashboard/ui.py page_context), a refusal
        assert shown in (["Balance of acme"], []), (url_path, shown)
        if not shown:
            assert [e.value for e in app.error] == ["Sign in with the admin key to see this page."], url_path
            assert not app.metric and not app.dataframe
        assert "globex" not in every_text(app)
        assert "tallyhub_admin_signed_in" not in app.session_state
        assert "Read models at event" not in every_text(app)  # the admin sidebar's caption


def test_portal_pages_are_not_reachable_before_a_portal_sign_in(
    portal_store: PortalStore, portal_app: PortalApp
) -> None:
    signed_in = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    portal_pages = page_hashes(signed_in)
    app = portal_app(portal_store)
    for url_path, page_hash in portal_pages.items():
        # a sign-in page (the admin's or the portal's), never the page asked for
        assert titles(open_hash(app, page_hash)) in (["Tallyhub dashboard"], ["Customer portal"]), url_path
        assert not app.metric and not app.dataframe
        assert "tallyhub_portal_session" not in app.session_state


def test_an_admin_session_reaches_no_portal_page(portal_store: PortalStore, portal_app: PortalApp) -> None:
    portal_pages = page_hashes(sign_in(portal_app(portal_store), portal_store.keys["prod"]))
    admin = AppTest.from_file(APP, default_timeout=60)
    admin.run()
    admin.text_input(key="admin_key").input(portal_store.store.admin_key)
    admin.button(key="sign_in_submit").click().run()
    for url_path, page_hash in portal_pages.items():
        shown = titles(open_hash(admin, page_hash))
        assert shown == ["Overview"], (url_path, shown)  # the admin's own first page
        assert "tallyhub_portal_session" not in admin.session_state


# --- pages -------------------------------------------------------------------------


def test_usage_page_sums_by_key_and_model_exactly(portal_store: PortalStore, portal_app: PortalApp) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    app.switch_page("portal/usage.py").run()
    assert titles(app) == ["Usage"] and not app.exception
    table = frame_with(app, "requests")
    got = {(row.key, row.model): (int(row.requests), row.charge) for row in table.itertuples()}
    expected: dict[tuple[str, str], tuple[int, int]] = {}
    for _, key_name, model, charge in portal_store.requests["acme"]:
        count, total = expected.get((key_name, model), (0, 0))
        expected[(key_name, model)] = (count + 1, total + charge)
    assert got == {k: (n, credits_text(c)) for k, (n, c) in expected.items()}
    assert "globex" not in every_text(app) and "main" not in set(table["key"])


def test_requests_page_lists_own_requests_and_search_finds_only_own(
    portal_store: PortalStore, portal_app: PortalApp
) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    app.switch_page("portal/requests.py").run()
    assert titles(app) == ["Requests"]
    listed = set(frame_with(app, "request_id")["request_id"])
    assert listed == {str(rid) for rid, *_ in portal_store.requests["acme"]}

    own_id, _, model, charge = portal_store.requests["acme"][1]
    app.text_input(key="portal_request_search").input(str(own_id)).run()
    assert app.session_state["portal_search_found"] is True
    receipt = app.session_state["portal_receipt_shown"]
    assert receipt["request id"] == str(own_id) and receipt["model"] == model
    assert receipt["charged (nanocredits)"] == str(charge) and receipt["charged (credits)"] == credits_text(charge)

    globex_id = portal_store.requests["globex"][0][0]
    for other in (str(globex_id), "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        app.text_input(key="portal_request_search").input(other).run()
        assert app.session_state["portal_search_found"] is False
        assert [w.value for w in app.warning] == [f"Request {other} not found in this account's request log."]
        assert str(globex_id) not in "\n".join(df.value.to_csv() for df in app.dataframe)


def test_statement_csv_is_the_statement_exactly(
    portal_store: PortalStore, portal_app: PortalApp, services_of: ServicesOf
) -> None:
    app = sign_in(portal_app(portal_store), portal_store.keys["prod"])
    app.switch_page("portal/statement.py").run()
    assert titles(app) == ["Statement of acme"] and not app.exception
    window = app.session_state["portal_statement_window"]
    services = services_of(portal_store)
    expected = read_statement(services, "acme", window.since, window.until)  # what `tallyhub statement` prints
    rows = list(csv.DictReader(io.StringIO(app.session_state["portal_statement_csv"])))
    assert [int(r["amount"]) for r in rows] == [e["amount"] for e in expected["entries"]]
    assert [r["kind"] for r in rows] == ["grant", "charge", "charge", "charge"]
    assert [int(r["amount"]) for r in rows] == [50 * NANO] + [-c for *_, c in portal_store.requests["acme"]]
    assert int(rows[-1]["balance"]) == services.ledger.get_account("acme").balance
    assert [r["request_id"] for r in rows[1:]] == [str(rid) for rid, *_ in portal_store.requests["acme"]]
    assert [r["amount_credits"] for r in rows] == [e["amount_credits"] for e in expected["entries"]]
    assert [r["at"] for r in rows] == [e["at"] for e in expected["entries"]]
    assert metric(app, "Closing balance (credits)") == credits_text(int(rows[-1]["balance"]))


def test_top_up_link_is_shown_beside_the_balance_when_configured(
    portal_store: PortalStore, portal_app: PortalApp
) -> None:
    env = {"TALLYHUB_TOPUP_URL": "https://pay.example/top-up?account={account}&from=portal"}
    app = sign_in(portal_app(portal_store, env=env), portal_store.keys["prod"])
    buttons = app.get("link_button")
    assert len(buttons) == 1
    account_id = build_ledger_account_id(portal_store, "acme")
    assert buttons[0].proto.url == f"https://pay.example/top-up?account={account_id}&from=portal"


def build_ledger_account_id(store: PortalStore, name: str) -> str:
    ledger = build_ledger(store.settings)
    try:
        return str(ledger.get_account(name).id)
    finally:
        ledger.close()
