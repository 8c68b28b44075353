"""``tallyhub webhooks add | list | remove | deliveries`` and ``tallyhub accounts alerts``.
``register(sub, command, accounts=...)`` adds them to main.py's parser.

Each handler returns ``(json_data, human_text)``; the JSON is the admin API's
(``/admin/v1/webhooks``, ``/admin/v1/accounts/{account}/alerts``). A webhook's signing
secret is printed by ``add`` only, once; ``list`` never shows it."""

import argparse
import sys
from collections.abc import Callable
from typing import Any

from adapters.cli.commands import open_services
from domain.account import Account
from domain.errors import InvalidRequest
from domain.money import format_credits, parse_credits
from domain.webhook import EVENT_TYPES, Webhook

Result = tuple[Any, str]
Command = Callable[..., argparse.ArgumentParser]


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


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"--limit must be a whole number from 1 to 1000, not {text!r}")
    return int(text)


def register_deliveries(webhooks: Any, command: Command) -> None:
    """``webhooks deliveries [--failed] [--limit N]``: the delivery log (application/deliveries.py)."""
    log_help = "webhook deliveries: status, attempts, last error"
    deliveries = command("deliveries", webhooks_deliveries, log_help, webhooks)
    deliveries.add_argument("--failed", action="store_true", help="only deliveries that ended failed")
    deliveries.add_argument("--limit", type=_limit, default=100, help="at most this many, newest first (default 100)")


def register(sub: Any, command: Command, *, accounts: Any) -> None:
    """Add the ``webhooks`` group to main.py's parser, and ``alerts`` to its ``accounts`` group."""
    webhooks = sub.add_parser("webhooks", help="outbound webhooks for alerts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = command("add", webhooks_add, "subscribe a URL to alert events (prints its signing secret once)", webhooks)
    add.add_argument("url", help="http or https URL that receives signed POSTs")
    add.add_argument("--events", required=True, help=f"comma-separated: {','.join(EVENT_TYPES)}")
    add.add_argument("--secret-stdin", action="store_true", help="read the signing secret from stdin (else generated)")
    command("list", webhooks_list, "list webhooks (never their secrets)", webhooks)
    remove = command("remove", webhooks_remove, "remove a webhook and its secret", webhooks)
    remove.add_argument("webhook_id")
    register_deliveries(webhooks, command)

    alerts = command(
        "alerts",
        accounts_alerts,
        "balance alerts: fire balance.low when the available balance falls below AMOUNT (no flag: show them)",
        accounts,
    )
    alerts.add_argument("account")
    alerts.add_argument(
        "--below", action="append", metavar="AMOUNT", help="credits, decimal text; repeat for several thresholds"
    )
    alerts.add_argument("--clear", action="store_true", help="remove every threshold")
