"""``tallyhub webhooks add | list | remove | deliveries`` and ``tallyhub accounts alerts``.
Their flags are in adapters/cli/table.py.

Each handler returns ``(json_data, human_text)``; the JSON is the admin API's
(``/admin/v1/webhooks``, ``/admin/v1/accounts/{account}/alerts``). A webhook's signing
secret is printed by ``add`` only, once; ``list`` never shows it."""

import argparse
import sys
from typing import Any

from adapters.cli.commands import open_services
from domain.account import Account
from domain.errors import InvalidRequest
from domain.money import format_credits, parse_credits
from domain.webhook import Webhook

Result = tuple[Any, str]


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return webhook.plain()


def thresholds_json(account: Account, thresholds: list[int]) -> dict[str, Any]:
    """``{"account_id", "account", "below": [{"amount": "5.000000000", "amount_nanocredits": N}, …]}``."""
    return {
        "account_id": str(account.id),
        "account": account.name,
        "below": [{"amount": format_credits(t), "amount_nanocredits": t} for t in thresholds],
    }


def _events(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _read_secret() -> str:
    secret = sys.stdin.readline().strip()
    if not secret:
        raise InvalidRequest("--secret-stdin was given but standard input held no secret", param="secret")
    return secret


def webhooks_add(args: argparse.Namespace) -> Result:
    secret = _read_secret() if args.secret_stdin else None
    with open_services() as services:
        added = services.webhooks.add_webhook(args.url, _events(args.events), secret)
    data = {**webhook_json(added.webhook), "secret": added.secret}
    text = (
        f"added webhook {added.webhook.webhook_id} -> {added.webhook.url} ({', '.join(added.webhook.events)})\n"
        f"signing secret (shown once, store it now): {added.secret}"
    )
    return data, text


def webhooks_list(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = [webhook_json(w) for w in services.webhooks.list_webhooks()]
    lines = [f"{w['id']}  {w['url']}  {','.join(w['events'])}" for w in data]
    return {"data": data}, "\n".join(lines) if lines else "no webhooks"


def webhooks_remove(args: argparse.Namespace) -> Result:
    with open_services() as services:
        removed = services.webhooks.remove_webhook(args.webhook_id)
    return {**webhook_json(removed), "removed": True}, f"removed webhook {removed.webhook_id} ({removed.url})"


def accounts_alerts(args: argparse.Namespace) -> Result:
    if args.clear and args.below:
        raise InvalidRequest("give --below or --clear, not both", param="below")
    with open_services() as services:
        alerts = services.alert_thresholds
        if args.clear or args.below:
            amounts = [parse_credits(text, param="below") for text in args.below or []]
            account, thresholds = alerts.set_thresholds(args.account, amounts)
        else:
            account, thresholds = alerts.get_thresholds(args.account)
    shown = ", ".join(format_credits(t) for t in thresholds)
    return thresholds_json(account, thresholds), f"balance alerts of {account.name}: below {shown or 'none'}"


def webhooks_deliveries(args: argparse.Namespace) -> Result:
    """The delivery log (GET /admin/v1/webhooks/deliveries), newest first."""
    with open_services() as services:
        found = services.deliveries.list(failed=args.failed, limit=args.limit)
    data = [delivery.plain() for delivery in found]
    lines = [
        f"{d['id']}  {d['type']}  {d['event_id']}  {d['webhook_id']}  {d['status']}  attempts={d['attempts']}"
        + (f"  last_status={d['last_status']}" if d["last_status"] is not None else "")
        + (f"  next={d['next_attempt_at']}" if d["next_attempt_at"] else "")
        + (f"  error={d['last_error']}" if d["last_error"] else "")
        for d in data
    ]
    return {"data": data}, "\n".join(lines) if lines else ("no failed deliveries" if args.failed else "no deliveries")
