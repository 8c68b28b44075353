"""``tallyhub audit``: the audit log (projections/audit.py), newest first, filtered by actor,
action, target text and time, from the read model caught up first; the same rows as
``GET /admin/v1/audit`` (adapters/http/admin_audit.py), which uses ``audit_rows`` too.
``register(sub, command)`` adds it to main.py's parser."""

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from adapters.cli.commands import iso_timestamp, open_services
from adapters.queries import caught_up
from adapters.services import Services
from domain.errors import InvalidRequest
from projections.audit import ACTIONS, UNRECORDED, AuditEntry, AuditFilter

Result = tuple[Any, str]
Command = Callable[..., argparse.ArgumentParser]
MAX_LIMIT = 10_000


def check_action(action: str | None) -> str | None:
    """``action`` when it names an action (``key.revoked``) or a kind of them (``key``)."""
    if action is None or action in ACTIONS or any(a.startswith(action + ".") for a in ACTIONS):
        return action
    kinds = sorted({a.split(".", 1)[0] for a in ACTIONS})
    raise InvalidRequest(
        f"unknown action {action!r}: use one of {', '.join(ACTIONS)}, or a kind ({', '.join(kinds)})", param="action"
    )


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "position": entry.position,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "summary": entry.summary,
        "aggregate_id": str(entry.aggregate_id),
    }


def audit_rows(
    services: Services,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The matching rows, newest first (``actor`` ``unrecorded``: rows without one)."""
    where = AuditFilter(actor=actor, action=check_action(action), target=target, since=since, until=until)
    view = services.read_models.audit
    return [audit_json(e) for e in caught_up(services, lambda: view.list_entries(where, limit=limit))]


def audit(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = audit_rows(
            services,
            actor=args.actor,
            action=args.action,
            target=args.target,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
    lines = [f"{r['at']}  {r['actor'] or UNRECORDED}  {r['action']}  {r['target']}  {r['summary']}" for r in data]
    return {"data": data}, "\n".join(lines) if lines else "no admin action matches"


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_LIMIT}, got {value}")
    return value


def register(sub: Any, command: Command) -> None:
    """Add ``audit`` to main.py's parser (``command`` is main.py's builder)."""
    log = command("audit", audit, "the audit log: who did which admin action to what, newest first", sub)
    log.add_argument("--actor", help=f"cli, admin:<fingerprint>, payments, … or {UNRECORDED}")
    log.add_argument("--action", help="an action (key.revoked) or a kind of them (key)")
    log.add_argument("--target", help="a part of the target (account, key id, provider…), any case")
    log.add_argument("--since", type=iso_timestamp, metavar="ISO", help="from this time (UTC unless it names a zone)")
    log.add_argument("--until", type=iso_timestamp, metavar="ISO", help="before this time")
    log.add_argument("--limit", type=_limit, default=100, help=f"at most this many, 1 to {MAX_LIMIT} (default 100)")
