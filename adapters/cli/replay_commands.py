"""``tallyhub replay --prices FILE [--from ISO] [--to ISO] [--account A] [--apply]``:
re-price the recorded charges of a window under another price book (application/replay.py)
and print the old charge, the new charge and the difference per account and model.
A dry run unless ``--apply``; the admin API serves the same document
(adapters/http/admin_replays.py).
"""

import argparse
from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.cli.commands import open_services, read_price_file
from adapters.cli.progress import progress_bar
from adapters.presenters import id_text, money_fields, plain, signed_credits
from adapters.services import Services
from application.event_scan import Progress
from application.pricing_input import parse_price_file
from application.replay import Replayer, ReplayPlan, ReplayReport

Result = tuple[Any, str]


def run_replay(
    services: Services,
    price_text: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    account: str | None = None,
    apply: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Preview (or apply) a replay of the price file ``price_text``; the report as JSON."""
    prices, _ = parse_price_file(price_text)  # its effective_at does not matter to a replay
    account_id = services.ledger.get_account(account).id if account else None
    plan = ReplayPlan(prices, since, until, account_id)
    replayer = Replayer(services.ledger)
    report = replayer.apply(plan, progress) if apply else replayer.preview(plan, progress)
    return replay_json(services, report, dry_run=not apply)


def replay_json(services: Services, report: ReplayReport, *, dry_run: bool) -> dict[str, Any]:
    names: dict[UUID, str] = {}

    def name(account_id: UUID) -> str:
        if account_id not in names:
            names[account_id] = services.ledger.get_account(account_id).name
        return names[account_id]

    plan = report.plan
    lines = [
        money_fields(
            {
                "account_id": str(line.account_id),
                "account": name(line.account_id),
                "model": line.model,
                "charges": line.charges,
                "old": line.old,
                "new": line.new,
                "difference": line.difference,
            },
            "old",
            "new",
            "difference",
        )
        for line in report.lines
    ]
    adjustments = [
        money_fields(
            {
                "account_id": str(a.account_id),
                "account": name(a.account_id),
                "requested": a.requested,
                "applied": a.applied,
                "uncollected": a.requested - a.applied,
                "posted": a.posted,
            },
            "requested",
            "applied",
            "uncollected",
        )
        for a in report.adjustments
    ]
    return {
        "dry_run": dry_run,
        "applied": report.applied,
        "replay_id": id_text(report.replay_id),
        "sequence": report.sequence,
        "from": plan.since.isoformat() if plan.since else None,
        "to": plan.until.isoformat() if plan.until else None,
        "account": name(plan.account_id) if plan.account_id else None,
        "prices_sha256": plan.prices_sha256,
        "charges": report.charges,
        "refunded_skipped": report.refunded_skipped,
        "last_position": report.last_position,
        "totals": money_fields(
            {"old": report.old, "new": report.new, "difference": report.difference}, "old", "new", "difference"
        ),
        "lines": lines,
        "adjustments": adjustments,
    }


def applied_json(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replay log's entries with their ids as every output shows them (dashed UUIDs;
    the log keeps hex)."""
    return [
        plain(
            {
                **entry,
                "replay_id": id_text(entry["replay_id"]),
                "account_id": id_text(entry["account_id"]),
                "adjustments": {id_text(account): amount for account, amount in entry["adjustments"].items()},
            }
        )
        for entry in entries
    ]


def replay_text(data: dict[str, Any]) -> str:
    window = f"{data['from'] or 'the beginning'} to {data['to'] or 'now'}"
    who = f" for {data['account']}" if data["account"] else ""
    lines = [
        f"replay of {data['charges']:,} charges{who}, {window} (events up to position {data['last_position']})",
        f"{'account':<24} {'model':<36} {'charges':>9} {'old':>20} {'new':>20} {'difference':>20}",
    ]
    for line in data["lines"]:
        lines.append(
            f"{line['account']:<24} {line['model']:<36} {line['charges']:>9,} {line['old_credits']:>20}"
            f" {line['new_credits']:>20} {signed_credits(line['difference']):>20}"
        )
    totals = data["totals"]
    lines.append(
        f"{'total':<61} {data['charges']:>9,} {totals['old_credits']:>20} {totals['new_credits']:>20}"
        f" {signed_credits(totals['difference']):>20}"
    )
    if data["refunded_skipped"]:
        lines.append(f"{data['refunded_skipped']:,} refunded charges left out")
    if data["dry_run"]:
        lines.append("dry run: nothing was posted; --apply posts the differences as adjustments, once")
    elif data["applied"]:
        lines.append(f"applied as replay {data['replay_id']} (#{data['sequence']}):")
        for a in data["adjustments"]:
            short = f" (uncollected {a['uncollected_credits']}: not enough available)" if a["uncollected"] else ""
            lines.append(f"  {a['account']:<24} adjusted {signed_credits(a['applied'])}{short}")
    else:
        lines.append("nothing to post: every charge in the window already stands at these prices")
    return "\n".join(lines)


def replay(args: argparse.Namespace) -> Result:
    text = read_price_file(args.prices)
    with open_services() as services:
        data = run_replay(
            services,
            text,
            since=args.since,
            until=args.until,
            account=args.account,
            apply=args.apply,
            progress=progress_bar("replaying"),
        )
    return data, replay_text(data)
