"""``tallyhub requests`` and ``tallyhub usage``: the request log and the hourly usage from
the read models (caught up first), filtered as the admin API filters them
(``GET /admin/v1/requests``, ``GET /admin/v1/usage``): by account, and by the attribution
callers sent (``--user``, ``--tag``, ``--metadata KEY=VALUE``, exact matches). Usage
filtered by an attribution is summed from the matching requests (adapters/queries.py
``list_usage_rows``). ``register(sub, command)`` adds both to main.py's parser."""

import argparse
from collections.abc import Callable
from typing import Any

from adapters.cli.commands import iso_timestamp, open_services
from adapters.presenters import money_fields, plain
from adapters.queries import list_request_rows, list_usage_rows, metadata_pair, request_json
from domain.money import format_credits

Result = tuple[Any, str]
Command = Callable[..., argparse.ArgumentParser]
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


def register(sub: Any, command: Command) -> None:
    """Add ``requests`` and ``usage`` to main.py's parser (``command`` is main.py's builder)."""
    listing = command("requests", requests, "the request log, newest first, filtered", sub)
    listing.add_argument("--account")
    listing.add_argument("--model")
    listing.add_argument("--status", type=int)
    listing.add_argument("--limit", type=_limit, default=100, help="at most this many, 1 to 100000 (default 100)")
    _attribution_flags(listing)
    hourly = command("usage", usage, "hourly usage per account, key, provider and model, filtered", sub)
    hourly.add_argument("--account")
    hourly.add_argument("--from", dest="since", type=iso_timestamp, metavar="ISO", help="first hour included")
    hourly.add_argument("--to", dest="until", type=iso_timestamp, metavar="ISO", help="first hour excluded")
    _attribution_flags(hourly)


def _attribution_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="only requests attributed to this end user (the `user` sent)")
    parser.add_argument("--tag", help="only requests carrying this tag (x-tallyhub-tags)")
    parser.add_argument("--metadata", metavar="KEY=VALUE", help="only requests whose metadata has this pair")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError("must be from 1 to 100000")
    return value
