"""application/portal.py on an in-memory ledger with a fake clock: sign-in links (signed,
expiring, one use even across two processes, revocable), sessions (signed, expiring,
ended by a revoked or expired key and by ``portal revoke``), and self-service keys
(refused when off, only the session's own account, recorded as the portal's actor)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from adapters.bootstrap import build_ledger, in_memory_ledger, initialise
from adapters.cli import main as cli
from adapters.settings import Settings
from application.accounts import Accounts
from application.acting import actor_of
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.portal import KEY, LINK, Portal, SessionEnded, parse_ttl, token_digest, topup_link
from domain.errors import ApiKeyNotFound, AuthenticationFailed, InvalidRequest, PermissionDenied
from domain.portal import LinkRefused, PortalLink
from tests.fakes.clock import FakeClock


@pytest.fixture
def portal(ledger: Ledger) -> Portal:
    for name in ("acme", "globex"):
        Accounts(ledger).create_account(name)
    return Portal(ledger, ApiKeys(ledger), session_ttl=timedelta(hours=8))


def key_of(portal: Portal, account: str, name: str = "k"):  # type: ignore[no-untyped-def]
    return portal.api_keys.issue_api_key(account, name=name)


# --- links ------------------------------------------------------------------------


def test_a_link_opens_one_session_for_its_account_and_stores_only_a_digest(portal: Portal) -> None:
    issued = portal.issue_link("acme", timedelta(hours=1))
    stored = [vars(event) for event in portal.ledger.events.get(issued.link_id)]
    assert issued.token not in json.dumps(stored, default=str)
    assert stored[0]["digest"] == token_digest(issued.token)
    session = portal.redeem_link(issued.token)
    assert (session.account_id, session.via, session.ref) == (issued.account_id, LINK, issued.link_id)
    assert session.actor == f"portal-link:{issued.link_id}"
    with pytest.raises(LinkRefused):
        portal.redeem_link(issued.token)


def test_a_link_is_refused_after_its_expiry(portal: Portal, clock: FakeClock) -> None:
    issued = portal.issue_link("acme", timedelta(minutes=10))
    clock.advance(minutes=10)
    with pytest.raises(LinkRefused):
        portal.redeem_link(issued.token)


@pytest.mark.parametrize("change", ["signature", "expiry", "nonce", "empty", "long"])
def test_an_altered_or_forged_link_is_refused(portal: Portal, change: str) -> None:
    issued = portal.issue_link("acme", timedelta(minutes=10))
    nonce, expiry, signature = issued.token.split(".")
    altered = {
        "signature": f"{nonce}.{expiry}.{signature[::-1]}",
        "expiry": f"{nonce}.{int(expiry) + 3600}.{signature}",
        "nonce": f"{nonce[::-1]}.{expiry}.{signature}",
        "empty": "",
        "long": issued.token * 10,
    }[change]
    with pytest.raises(LinkRefused):
        portal.redeem_link(altered)
    assert portal.redeem_link(issued.token).account_id == issued.account_id  # the real one still works, once


def test_a_link_lives_one_minute_to_seven_days(portal: Portal) -> None:
    for ttl in (timedelta(seconds=59), timedelta(days=7, seconds=1)):
        with pytest.raises(InvalidRequest):
            portal.issue_link("acme", ttl)
    assert [parse_ttl(t) for t in ("90s", "30m", "1h", "2d", "600")] == [
        timedelta(seconds=90),
        timedelta(minutes=30),
        timedelta(hours=1),
        timedelta(days=2),
        timedelta(minutes=10),
    ]
    with pytest.raises(InvalidRequest):
        parse_ttl("an hour")


def test_a_link_is_used_once_across_two_processes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    initialise(settings)
    ledgers = [build_ledger(settings), build_ledger(settings)]
    try:
        for ledger in ledgers:
            ledger.load_deployment()
        Accounts(ledgers[0]).create_account("acme")
        first, second = (Portal(ledger, ApiKeys(ledger)) for ledger in ledgers)
        issued = first.issue_link("acme", timedelta(minutes=5))
        # the second process read the link before the first redeemed it, and goes on with that read
        stale = second.ledger.find(issued.link_id)
        assert isinstance(stale, PortalLink) and stale.redeemed_at is None
        fresh_find = second.ledger.find
        second.ledger.find = lambda aggregate_id: stale if aggregate_id == issued.link_id else fresh_find(aggregate_id)  # type: ignore[method-assign]
        assert first.redeem_link(issued.token).ref == issued.link_id
        with pytest.raises(LinkRefused):  # its Redeemed is version 2 too: the store refuses it
            second.redeem_link(issued.token)
        events = list(first.ledger.events.get(issued.link_id))
        assert [type(e).__name__ for e in events] == ["Issued", "Redeemed"]
    finally:
        for ledger in ledgers:
            ledger.close()


# --- sessions -----------------------------------------------------------------------


def test_a_key_session_is_signed_and_ends_when_the_key_is_revoked(portal: Portal) -> None:
    issued = key_of(portal, "acme")
    session = portal.sign_in_with_key(issued.plaintext)
    assert (session.via, session.ref, session.actor) == (KEY, issued.key_id, f"portal:{issued.key_id}")
    sealed = portal.seal(session)
    assert issued.plaintext not in sealed
    assert portal.open_session(sealed) == session
    body, signature = sealed.split(".")
    with pytest.raises(SessionEnded):
        portal.open_session(f"{body}x.{signature}")
    portal.api_keys.revoke_api_key(issued.key_id)
    with pytest.raises(SessionEnded, match="no longer valid"):
        portal.open_session(sealed)
    with pytest.raises(AuthenticationFailed):
        portal.sign_in_with_key(issued.plaintext)


def test_a_session_ends_at_its_ttl_and_when_its_key_expires(ledger: Ledger, clock: FakeClock) -> None:
    Accounts(ledger).create_account("acme")
    portal = Portal(ledger, ApiKeys(ledger), session_ttl=timedelta(hours=2))
    long_lived = portal.api_keys.issue_api_key("acme")
    short_lived = portal.api_keys.issue_api_key("acme", expires_at=clock.now() + timedelta(hours=1))
    sealed = [portal.seal(portal.sign_in_with_key(k.plaintext)) for k in (long_lived, short_lived)]
    clock.advance(hours=1)
    assert portal.open_session(sealed[0]).ref == long_lived.key_id
    with pytest.raises(SessionEnded):
        portal.open_session(sealed[1])
    clock.advance(hours=1)
    with pytest.raises(SessionEnded, match="expired"):
        portal.open_session(sealed[0])


def test_portal_revoke_ends_sessions_and_unused_links_of_that_account_only(portal: Portal) -> None:
    acme = portal.seal(portal.sign_in_with_key(key_of(portal, "acme").plaintext))
    globex = portal.seal(portal.sign_in_with_key(key_of(portal, "globex").plaintext))
    unused = portal.issue_link("acme", timedelta(minutes=30))
    linked = portal.seal(portal.redeem_link(portal.issue_link("acme", timedelta(minutes=30)).token))
    assert portal.revoke_sessions("acme") == 1
    for sealed in (acme, linked):
        with pytest.raises(SessionEnded, match="operator ended"):
            portal.open_session(sealed)
    with pytest.raises(LinkRefused):
        portal.redeem_link(unused.token)
    assert portal.open_session(globex).account_id == portal.ledger.get_account("globex").id
    fresh = portal.sign_in_with_key(key_of(portal, "acme", "new").plaintext)
    assert fresh.generation == 1 and portal.open_session(portal.seal(fresh)) == fresh


# --- self-service keys --------------------------------------------------------------


def test_self_service_keys_are_refused_when_off_and_recorded_as_the_portal_when_on(portal: Portal) -> None:
    own = key_of(portal, "acme", "own")
    other = key_of(portal, "globex", "other")
    session = portal.sign_in_with_key(own.plaintext)
    with pytest.raises(PermissionDenied):
        portal.issue_key(session, "new")
    with pytest.raises(PermissionDenied):
        portal.revoke_key(session, own.key_id)
    Accounts(portal.ledger).set_self_service("acme", keys=True)
    created = portal.issue_key(session, "laptop")
    assert portal.ledger.authenticate(created.plaintext).account_id == session.account_id
    assert actor_of(next(iter(portal.ledger.events.get(created.key_id)))) == f"portal:{own.key_id}"
    with pytest.raises(ApiKeyNotFound):
        portal.revoke_key(session, other.key_id)  # another account's key: as if it did not exist
    assert portal.ledger.get_api_key(other.key_id).revoked is False
    revoked = portal.revoke_key(session, created.key_id)
    assert revoked.revoked and actor_of(list(portal.ledger.events.get(created.key_id))[-1]) == f"portal:{own.key_id}"
    listed = [(k.name, k.usable) for k in portal.list_keys(session.account_id)]
    assert listed == [("laptop", False), ("own", True)]
    Accounts(portal.ledger).set_self_service("acme", keys=False)
    with pytest.raises(PermissionDenied):
        portal.issue_key(session, "again")


def test_self_service_is_an_account_event_only_on_a_change() -> None:
    ledger = in_memory_ledger()
    ledger.initialise()
    try:
        account = Accounts(ledger).create_account("acme")
        assert ledger.get_account("acme").self_service_keys is False
        for on in (True, True, False):
            Accounts(ledger).set_self_service("acme", keys=on)
        kinds = [type(e).__name__ for e in ledger.events.get(account.id)]
        assert kinds == ["Created", "SelfServiceSet", "SelfServiceSet"]
    finally:
        ledger.close()


def test_topup_link_fills_in_the_account_id_url_encoded() -> None:
    account = UUID("12345678-1234-5678-1234-567812345678")
    assert topup_link("https://pay.example/t?a={account}", account) == f"https://pay.example/t?a={account}"
    assert topup_link("https://pay.example/{account}/pay", account) == f"https://pay.example/{account}/pay"


# --- the CLI ----------------------------------------------------------------------------


def test_cli_portal_link_revoke_and_self_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("TALLYHUB_DATABASE_URL", "TALLYHUB_ADMIN_KEY", "TALLYHUB_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TALLYHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TALLYHUB_DASHBOARD_URL", "https://portal.example:8443/")

    def run(*args: str) -> dict[str, Any]:
        assert cli.main([*args, "--json"]) == 0
        document: dict[str, Any] = json.loads(capsys.readouterr().out)
        return document

    run("init")
    run("accounts", "create", "acme")
    link = run("portal", "link", "acme", "--ttl", "30m")
    assert link["url"].startswith("https://portal.example:8443/portal?token=")
    assert run("accounts", "self-service", "acme", "--keys", "on")["self_service"] == {"keys": True}
    assert run("portal", "revoke", "acme")["generation"] == 1
    assert cli.main(["portal", "link", "nobody", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "account_not_found"
    assert cli.main(["portal", "link", "acme", "--ttl", "8d", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["message"] == "a sign-in link lives from 1 minute to 7 days"
    assert cli.main(["accounts", "self-service", "acme", "--keys", "maybe", "--json"]) == 2


# --- the admin API ----------------------------------------------------------------------


def test_admin_api_creates_a_portal_link_behind_the_admin_key(clock: FakeClock) -> None:
    from fastapi.testclient import TestClient

    from adapters.bootstrap import build_services
    from adapters.http.app import create_app

    ledger = in_memory_ledger(clock=clock)
    admin_key = ledger.initialise()
    try:
        services = build_services(Settings(dashboard_url="https://portal.example"), ledger=ledger)
        Accounts(ledger).create_account("acme")
        client = TestClient(create_app(services, run_projections=False))
        headers = {"authorization": f"Bearer {admin_key}"}
        made = client.post("/admin/v1/accounts/acme/portal-links", headers=headers, json={"ttl_seconds": 600})
        assert made.status_code == 201, made.text
        link = made.json()
        assert link["url"].startswith("https://portal.example/portal?token=")
        assert link["expires_at"] == (clock.now() + timedelta(seconds=600)).isoformat()
        token = link["url"].split("token=", 1)[1]
        portal = Portal(ledger, ApiKeys(ledger))
        assert portal.redeem_link(token).account_id == ledger.get_account("acme").id
        assert str(actor_of(next(iter(ledger.events.get(UUID(link["id"])))))).startswith("admin:")
        assert client.post("/admin/v1/accounts/acme/portal-links", headers=headers).status_code == 201  # 1 h
        for body, status in (({"ttl_seconds": 59}, 400), ({"ttl_seconds": 10**20}, 400), ({"x": 1}, 400)):
            refused = client.post("/admin/v1/accounts/acme/portal-links", headers=headers, json=body)
            assert refused.status_code == status and set(refused.json()["error"]) == {
                "message",
                "type",
                "param",
                "code",
            }
        assert client.post("/admin/v1/accounts/nobody/portal-links", headers=headers).status_code == 404
        assert client.post("/admin/v1/accounts/acme/portal-links").status_code == 401
    finally:
        ledger.close()


def test_the_portal_settings_are_checked_at_start() -> None:
    from adapters.settings import SettingsError

    defaults = Settings.from_env({})
    assert (defaults.dashboard_url, defaults.portal_session_ttl_seconds, defaults.topup_url) == (
        "http://127.0.0.1:8501",
        8 * 3600,
        None,
    )
    set_ = Settings.from_env(
        {
            "TALLYHUB_DASHBOARD_URL": "https://portal.example/app/",
            "TALLYHUB_PORTAL_SESSION_TTL_SECONDS": "600",
            "TALLYHUB_TOPUP_URL": "https://pay.example/top-up/{account}",
        }
    )
    assert (set_.dashboard_url, set_.portal_session_ttl_seconds, set_.topup_url) == (
        "https://portal.example/app",
        600,
        "https://pay.example/top-up/{account}",
    )
    for name, value in (
        ("TALLYHUB_DASHBOARD_URL", "portal.example"),
        ("TALLYHUB_DASHBOARD_URL", "https://portal.example/?x=1"),
        ("TALLYHUB_PORTAL_SESSION_TTL_SECONDS", "0"),
        ("TALLYHUB_TOPUP_URL", "https://pay.example/top-up"),  # no {account}
        ("TALLYHUB_TOPUP_URL", "ftp://pay.example/{account}"),
        ("TALLYHUB_TOPUP_URL", "https://pay.example/{account}/{other}"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
