"""``tallyhub statement ACCOUNT [--from ISO] [--to ISO]``: every movement of an
account's balance in a window, with the running balance after each, the opening and
closing balances and the totals per kind. Its flags are in
adapters/cli/table.py; the admin API serves the same document (adapters/http/admin_statements.py).

Invariant kept here: ``opening + sum(amounts) == closing``, exactly, because both ends
are read off the listed rows themselves (the running balance before the first row and
after the last); with no ``--to`` the closing balance is the account's balance now.
The window is ``[from, to)`` and follows the ledger's order: see projections/ledger_entries.py.
"""

import argparse
from datetime import UTC, datetime
from typing import Any

from adapters.cli.commands import open_services
from adapters.presenters import money_fields, plain, signed_credits
from adapters.queries import caught_up
from adapters.services import Services
from domain.errors import InvalidRequest
from projections.ledger_entries import KINDS, LedgerEntry

Result = tuple[Any, str]


def read_statement(
    services: Services, account: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """The statement of ``account`` (a name or an id) over ``[since, until)``, as JSON."""
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since > until:
        raise InvalidRequest("the statement's start must not be after its end", param="from")
    found = services.ledger.get_account(account)
    view = services.read_models.ledger

    def query() -> tuple[list[LedgerEntry], int]:
        entries = view.list_entries(found.id, since, until)
        if entries:
            return entries, entries[0].balance - entries[0].amount
        return entries, view.opening_balance(found.id, since)

    entries, opening = caught_up(services, query)
    closing = entries[-1].balance if entries else opening
    return statement_json(found.name, found.id, since, until, opening, closing, entries)


def statement_json(
    name: str,
    account_id: Any,
    since: datetime | None,
    until: datetime | None,
    opening: int,
    closing: int,
    entries: list[LedgerEntry],
) -> dict[str, Any]:
    totals = {kind: {"count": 0, "amount": 0} for kind in KINDS}
    for entry in entries:
        totals[entry.kind]["count"] += 1
        totals[entry.kind]["amount"] += entry.amount
    data = {
        "account": name,
        "account_id": str(account_id),
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "opening_balance": opening,
        "closing_balance": closing,
        "net": closing - opening,
        "uncollected_total": sum(entry.uncollected for entry in entries),
        "totals": {kind: money_fields(total, "amount") for kind, total in totals.items()},
        "first_position": entries[0].position if entries else None,
        "last_position": entries[-1].position if entries else None,
        "entries": [money_fields(plain(entry), "amount", "balance", "uncollected", "held") for entry in entries],
    }
    return money_fields(data, "opening_balance", "closing_balance", "net", "uncollected_total")


def statement_text(data: dict[str, Any]) -> str:
    window = f"{data['from'] or 'the beginning'} to {data['to'] or 'now'}"
    lines = [
        f"statement of {data['account']} ({data['account_id']}), {window}",
        f"{'opening balance':<69}{data['opening_balance_credits']:>24}",
    ]
    for e in data["entries"]:
        detail = " ".join(
            part
            for part in (
                e["reason"] or "",
                f"request {e['request_id']}" if e["request_id"] else "",
                f"key {e['idempotency_key']}" if e["idempotency_key"] else "",
                f"uncollected {e['uncollected_credits']}" if e["uncollected"] else "",
            )
            if part
        )
        lines.append(
            f"{e['position']:>10} {e['at']:<32} {e['kind']:<10} {signed_credits(e['amount']):>24}"
            f" {e['balance_credits']:>24}  {detail}".rstrip()
        )
    lines.append(f"{'closing balance':<69}{data['closing_balance_credits']:>24}")
    lines.append(
        "totals: "
        + ", ".join(f"{kind} {signed_credits(t['amount'])} ({t['count']})" for kind, t in data["totals"].items())
    )
    if data["uncollected_total"]:
        lines.append(f"uncollected: {data['uncollected_total_credits']}")
    return "\n".join(lines)


def statement(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = read_statement(services, args.account, args.since, args.until)
    return data, statement_text(data)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
