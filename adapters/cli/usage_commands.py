"""``tallyhub requests`` and ``tallyhub usage``: the request log and the hourly usage from
the read models (caught up first), filtered as the admin API filters them
(``GET /admin/v1/requests``, ``GET /admin/v1/usage``): by account, and by the attribution
callers sent (``--user``, ``--tag``, ``--metadata KEY=VALUE``, exact matches). Usage
filtered by an attribution is summed from the matching requests (adapters/queries.py
``list_usage_rows``). Their flags are in adapters/cli/table.py."""

import argparse
from typing import Any

from adapters.cli.commands import open_services
from adapters.presenters import money_fields, plain
from adapters.queries import list_request_rows, list_usage_rows, metadata_pair, request_json
from domain.money import format_credits

Result = tuple[Any, str]
TOTALLED = ("requests", "failed_requests", "input_tokens", "output_tokens", "images", "charge")


def requests(args: argparse.Namespace) -> Result:
    pair = metadata_pair(args.metadata)
    with open_services() as services:
        account_id = services.ledger.get_account(args.account).id if args.account else None
        rows = list_request_rows(
            services,
            account_id=account_id,
            model=args.model,
            status=args.status,
            limit=args.limit,
            user=args.user,
            tag=args.tag,
            metadata=pair,
        )
        data = [money_fields(request_json(row), "charge") for row in rows]
    lines = [
        f"{r['at']}  {r['status']}  {r['model']}  {r['charge_credits']} credits  "
        f"user {r['end_user'] or '-'}  tags {','.join(r['tags']) or '-'}  {r['request_id']}"
        for r in data
    ]
    return {"data": data}, "\n".join(lines) if lines else "no request matches"


def usage(args: argparse.Namespace) -> Result:
    pair = metadata_pair(args.metadata)
    with open_services() as services:
        account_id = services.ledger.get_account(args.account).id if args.account else None
        rows = list_usage_rows(
            services,
            account_id=account_id,
            since=args.since,
            until=args.until,
            user=args.user,
            tag=args.tag,
            metadata=pair,
        )
    data = [money_fields(plain(row), "charge") for row in rows]
    totals = money_fields({name: sum(row[name] for row in data) for name in TOTALLED}, "charge")
    text = (
        f"{totals['requests']} requests ({totals['failed_requests']} failed), {totals['input_tokens']} input and "
        f"{totals['output_tokens']} output tokens, {totals['images']} images, {format_credits(totals['charge'])} "
        f"credits charged, in {len(data)} hourly rows"
    )
    return {"data": data, "totals": totals}, text
