"""``tallyhub audit``: the audit log (projections/audit.py), newest first, filtered by actor,
action, target text and time, from the read model caught up first; the same rows as
``GET /admin/v1/audit`` (adapters/http/admin_audit.py), which uses ``audit_rows`` too.
Its flags are in adapters/cli/table.py."""

import argparse
from datetime import datetime
from typing import Any

from adapters.cli.arguments import MAX_AUDIT_LIMIT
from adapters.cli.commands import open_services
from adapters.queries import caught_up
from adapters.services import Services
from domain.errors import InvalidRequest
from projections.audit import ACTIONS, UNRECORDED, AuditEntry, AuditFilter

Result = tuple[Any, str]
MAX_LIMIT = MAX_AUDIT_LIMIT  # the CLI's --limit and the admin API's limit share one bound


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
