"""``tallyhub reconcile [--from ISO] [--to ISO]``: the margin report — per UTC day,
provider, credential and model, what was charged, what the provider charges for it and
the margin between them; plus every charge in the window whose usage was estimated.
Its flags are in adapters/cli/table.py; the admin API serves the same
document (adapters/http/admin_reconcile.py).

Invariants kept here:
- the window ``[from, to)`` is made of whole UTC hours, because the provider rollups
  (projections/provider_hourly.py) bucket by hour; any other bound is refused, so the
  rollups and the request log select exactly the same requests (both by the timestamp of
  the request's record);
- money is integer nanocredits throughout: ``margin = charged - provider_cost`` per row,
  and every total is the sum of its rows; ``margin_pct`` is decimal text (two places,
  half even), ``None`` when nothing was charged. ``provider_cost_unknown`` counts the
  completed requests priced without provider-cost rates: where it is not zero the
  margin leaves their cost out;
- the estimated list is every completed request of the window whose usage was estimated
  rather than reported, oldest first; its count and sum match the rollups' ``estimated``
  and ``estimated_charged`` totals once both read models are caught up;
- the clamped list is every completed request of the window charged at its bounds
  because its provider reported more usage than it could have used
  (domain/usage_bounds.py), oldest first, each with the report as it came.
Credential ids name a credential, never its secret.
"""

import argparse
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from uuid import UUID

from adapters.cli.commands import open_services
from adapters.presenters import money_fields, signed_credits
from adapters.queries import caught_up
from adapters.services import Services
from domain.errors import InvalidRequest
from domain.request_record import RequestRecord
from domain.usage_bounds import reported
from projections.provider_hourly import COUNTERS, ProviderCounts, ProviderDayRow, sum_by_day
from projections.request_log import RequestRow

Result = tuple[Any, str]
MONEY = ("charged", "cost", "provider_cost", "estimated_charged", "margin")
NO_LIMIT = 2**62


def read_reconciliation(
    services: Services, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """The margin report and the estimated charges over ``[since, until)``, as JSON."""
    since, until = _bound(since, "from"), _bound(until, "to")
    if since is not None and until is not None and since > until:
        raise InvalidRequest("the reconciliation's start must not be after its end", param="from")
    read_models = services.read_models
    if read_models.providers is None:
        raise InvalidRequest("this deployment has no provider rollups; run `tallyhub init` to create them")

    def completed(usage_source: str) -> list[RequestRow]:
        rows = read_models.requests.list_requests(since=since, until=until, usage_source=usage_source, limit=NO_LIMIT)
        return [row for row in reversed(rows) if row.outcome == "completed"]

    def query() -> tuple[list[ProviderDayRow], list[RequestRow], list[RequestRow]]:
        return sum_by_day(read_models.providers.list_hours(since, until)), completed("estimated"), completed("clamped")

    days, estimated, clamped = caught_up(services, query)
    data = reconciliation_json(since, until, days, estimated, _account_names(services, estimated + clamped))
    data["clamped"] = clamped_json(clamped, _account_names(services, clamped), _reported_usage(services, clamped))
    return data


def clamped_json(
    rows: list[RequestRow], accounts: dict[UUID, str], reported: dict[UUID, dict[str, str]]
) -> dict[str, Any]:
    """The charges whose provider reported more usage than the request could have used:
    what was charged (at the request's bounds) beside the report as it came, oldest first."""
    charges = [
        money_fields(
            {
                "request_id": str(r.request_id),
                "at": r.at.isoformat(),
                "account_id": str(r.account_id) if r.account_id else None,
                "account": accounts.get(r.account_id) if r.account_id else None,
                "provider": r.provider,
                "model": r.model,
                "charge": r.charge,
                "charged_usage": {
                    "input_tokens": r.input_tokens,
                    "cached_input_tokens": r.cached_input_tokens,
                    "output_tokens": r.output_tokens,
                    "reasoning_tokens": r.reasoning_tokens,
                },
                "reported_usage": reported.get(r.request_id),
            },
            "charge",
        )
        for r in rows
    ]
    return money_fields({"count": len(charges), "charged": sum(r.charge for r in rows), "charges": charges}, "charged")


def reconciliation_json(
    since: datetime | None,
    until: datetime | None,
    days: list[ProviderDayRow],
    estimated: list[RequestRow],
    accounts: dict[UUID, str],
) -> dict[str, Any]:
    totals = ProviderCounts()
    for day in days:
        totals.add(day.counts)
    charges = [
        money_fields(
            {
                "request_id": str(r.request_id),
                "at": r.at.isoformat(),
                "account_id": str(r.account_id) if r.account_id else None,
                "account": accounts.get(r.account_id) if r.account_id else None,
                "provider": r.provider,
                "model": r.model,
                "charge": r.charge,
            },
            "charge",
        )
        for r in estimated
    ]
    return {
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "rows": [
            {
                "day": d.day.isoformat(),
                "provider": d.provider,
                "credential_id": d.credential_id,
                "model": d.model,
                **_figures(d.counts),
            }
            for d in days
        ],
        "totals": _figures(totals),
        "estimated": money_fields(
            {"count": len(charges), "charged": sum(r.charge for r in estimated), "charges": charges}, "charged"
        ),
    }


def reconciliation_text(data: dict[str, Any]) -> str:
    window = f"{data['from'] or 'the beginning'} to {data['to'] or 'now'}"
    header = (
        f"{'day':<10} {'provider':<12} {'credential':<34} {'model':<28} {'requests':>8} {'charged':>20}"
        f" {'provider cost':>20}  {'margin':>21} {'margin %':>8}"
    )
    lines = [f"reconciliation, {window}", header]
    for r in [*data["rows"], {"day": "total", "provider": "", "credential_id": "", "model": "", **data["totals"]}]:
        unknown = "*" if r["provider_cost_unknown"] else ""
        credential = "-" if r["credential_id"] is None else r["credential_id"]  # "-": no upstream call was made
        lines.append(
            f"{r['day']:<10} {r['provider']:<12} {credential:<34} {r['model']:<28}"
            f" {r['requests']:>8} {r['charged_credits']:>20} {r['provider_cost_credits']:>20}{unknown:<1}"
            f" {signed_credits(r['margin']):>21} {r['margin_pct'] or '-':>8}"
        )
    totals = data["totals"]
    if totals["provider_cost_unknown"]:
        lines.append(
            f"* {totals['provider_cost_unknown']} completed request(s) had no provider-cost rates; "
            "their provider cost is not in these figures"
        )
    lines.append(f"failed attempts: {totals['failed_attempts']}, failovers: {totals['failovers']}")
    estimated = data["estimated"]
    lines.append(f"charges on estimated usage: {estimated['count']}, {estimated['charged_credits']} credits")
    for c in estimated["charges"]:
        lines.append(
            f"  {c['at']:<32} {c['request_id']:<36} {c['account'] or c['account_id'] or '-':<20}"
            f" {c['model']:<28} {c['charge_credits']:>20}"
        )
    clamped = data["clamped"]
    lines.append(
        f"charges on clamped usage (the provider reported more than the request allowed): "
        f"{clamped['count']}, {clamped['charged_credits']} credits"
    )
    for c in clamped["charges"]:
        said = c["reported_usage"] or {}
        lines.append(
            f"  {c['at']:<32} {c['request_id']:<36} {c['account'] or c['account_id'] or '-':<20}"
            f" {c['model']:<28} {c['charge_credits']:>20}  reported input {said.get('input_tokens', '?')},"
            f" output {said.get('output_tokens', '?')}"
        )
    return "\n".join(lines)


def reconcile(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = read_reconciliation(services, args.since, args.until)
    return data, reconciliation_text(data)


def _figures(counts: ProviderCounts) -> dict[str, Any]:
    figures: dict[str, Any] = {name: getattr(counts, name) for name in COUNTERS}
    figures.update(margin=counts.margin, margin_pct=margin_pct(counts.margin, counts.charged))
    return money_fields(figures, *MONEY)


def margin_pct(margin: int, charged: int) -> str | None:
    """``100 × margin / charged`` as decimal text with two places; None when nothing was charged."""
    if not charged:
        return None
    hundredths = round(Fraction(100 * 100 * margin, charged))  # exact, then half even
    sign = "-" if hundredths < 0 else ""
    return f"{sign}{abs(hundredths) // 100}.{abs(hundredths) % 100:02d}"


def _bound(value: datetime | None, param: str) -> datetime | None:
    if value is None:
        return None
    at = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if (at.minute, at.second, at.microsecond) != (0, 0, 0):
        raise InvalidRequest(
            f"'{param}' must be a whole UTC hour (the provider rollups are hourly), got {at.isoformat()}", param=param
        )
    return at


def _reported_usage(services: Services, rows: list[RequestRow]) -> dict[UUID, dict[str, str]]:
    """The provider's own usage reports of clamped requests, as their records keep them
    (counts as decimal text)."""
    reports: dict[UUID, dict[str, str]] = {}
    for row in rows:
        record = services.ledger.find(row.request_id)
        if isinstance(record, RequestRecord) and record.details.reported_usage is not None:
            reports[row.request_id] = reported(record.details.reported_usage)
    return reports


def _account_names(services: Services, rows: list[RequestRow]) -> dict[UUID, str]:
    names: dict[UUID, str] = {}
    for account_id in {r.account_id for r in rows if r.account_id}:
        balance = services.read_models.balances.get_balance(account_id)
        if balance is not None:
            names[account_id] = balance.name
    return names
