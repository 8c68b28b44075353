"""CLI commands for rate limits: ``keys limits KEY_ID`` and ``accounts limits ACCOUNT``,
each with ``--rpm N``, ``--tpm N`` and ``--max-parallel N`` (``0`` clears a limit; a flag
not given leaves its limit as it is; no flag shows them). Their flags are in
adapters/cli/table.py.

Each handler returns ``(json_data, human_text)``; the JSON is the admin API's
(``/admin/v1/keys/{key_id}/limits``, ``/admin/v1/accounts/{account}/limits``)."""

import argparse
from typing import Any
from uuid import UUID

from adapters.cli.commands import open_services
from domain.rate_limits import RateLimits

Result = tuple[Any, str]


def limits_json(scope: str, scope_id: UUID, limits: RateLimits) -> dict[str, Any]:
    """``{"<scope>_id": ..., "rpm": N|null, "tpm": N|null, "max_parallel": N|null}``."""
    return {f"{scope}_id": str(scope_id), **limits.plain()}


def limits_text(what: str, limits: RateLimits) -> str:
    shown = [
        f"{name} {value}"
        for name, value in (("rpm", limits.rpm), ("tpm", limits.tpm), ("max-parallel", limits.max_parallel))
        if value is not None
    ]
    return f"rate limits of {what}: {', '.join(shown) or 'none'}"


def _given(args: argparse.Namespace) -> bool:
    return any(value is not None for value in (args.rpm, args.tpm, args.max_parallel))


def keys_limits(args: argparse.Namespace) -> Result:
    with open_services() as services:
        if _given(args):
            key = services.api_keys.set_key_limits(
                args.key_id, rpm=args.rpm, tpm=args.tpm, max_parallel=args.max_parallel
            )
        else:
            key = services.ledger.get_api_key(args.key_id)
        return limits_json("key", key.id, key.rate_limits), limits_text(f"key {key.id}", key.rate_limits)


def accounts_limits(args: argparse.Namespace) -> Result:
    with open_services() as services:
        if _given(args):
            account_id, limits = services.accounts.set_account_limits(
                args.account, rpm=args.rpm, tpm=args.tpm, max_parallel=args.max_parallel
            )
        else:
            account_id, limits = services.accounts.get_account_limits(args.account)
    return limits_json("account", account_id, limits), limits_text(f"account {account_id}", limits)
