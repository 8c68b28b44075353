"""CLI commands for the customer portal: ``portal link ACCOUNT [--ttl 1h]`` (a one-use
sign-in link, printed once), ``portal revoke ACCOUNT`` (ends the account's portal sessions
and unused links) and ``accounts self-service ACCOUNT --keys on|off``. Their flags are in
adapters/cli/table.py. Each handler returns
``(json_data, human_text)``; the commands are application/portal.py's and accounts.py's."""

import argparse
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from adapters.cli.commands import open_services
from adapters.services import Services
from application.portal import IssuedLink, Portal, parse_ttl

Result = tuple[Any, str]


def build_portal(services: Services) -> Portal:
    return Portal(
        services.ledger,
        services.api_keys,
        session_ttl=timedelta(seconds=services.settings.portal_session_ttl_seconds),
    )


def link_url(dashboard_url: str, token: str) -> str:
    """The portal's sign-in URL for a link token (``TALLYHUB_DASHBOARD_URL``/portal?token=…)."""
    return f"{dashboard_url.rstrip('/')}/portal?token={quote(token, safe='')}"


def link_json(issued: IssuedLink, dashboard_url: str) -> dict[str, Any]:
    """A new sign-in link as the CLI and ``POST /admin/v1/accounts/{account}/portal-links`` show it (once)."""
    return {
        "object": "portal_link",
        "id": str(issued.link_id),
        "account_id": str(issued.account_id),
        "url": link_url(dashboard_url, issued.token),
        "expires_at": issued.expires_at.isoformat(),
    }


def portal_link(args: argparse.Namespace) -> Result:
    ttl = parse_ttl(args.ttl)
    with open_services() as services:
        data = link_json(build_portal(services).issue_link(args.account, ttl), services.settings.dashboard_url)
    return data, f"{data['url']}\n(one use, valid until {data['expires_at']}; shown once)"


def portal_revoke(args: argparse.Namespace) -> Result:
    with open_services() as services:
        account = services.ledger.get_account(args.account)
        generation = build_portal(services).revoke_sessions(account.id)
    data = {"object": "portal_access", "account_id": str(account.id), "generation": generation}
    return data, f"ended every portal session and unused sign-in link of {account.name}"


def accounts_self_service(args: argparse.Namespace) -> Result:
    with open_services() as services:
        account = services.accounts.set_self_service(args.account, keys=args.keys == "on")
    data = {"object": "account", "id": str(account.id), "self_service": {"keys": account.self_service_keys}}
    state = "may" if account.self_service_keys else "may not"
    return data, f"{account.name} {state} create and revoke its own API keys in the portal"
