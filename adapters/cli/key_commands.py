"""CLI commands for secrets and keys: ``secrets rotate-master|status``,
``providers rotate-credential|delete-credential``, ``keys rotate|set-models`` and
``keys issue --models``, and (adapters/cli/limit_commands.py) ``keys limits`` and
``accounts limits``. Their flags are in adapters/cli/table.py.

Each handler returns ``(json_data, human_text)``. Secrets are read from stdin; a new
API key is printed once; no master key or provider secret is ever printed.
"""

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from adapters.bootstrap import build_ledger
from adapters.presenters import api_key_json, provider_json
from adapters.settings import Settings
from application import key_management as km
from application.api_keys import ApiKeys, parse_models
from application.ledger import Ledger
from application.providers import CredentialRotation, ProviderRegistry
from application.stored_responses import StoredResponses
from domain.api_key import ApiKey
from domain.errors import InvalidRequest

Result = tuple[Any, str]


@contextmanager
def _ledger(*, check_ring: bool = False) -> Iterator[Ledger]:
    ledger = build_ledger(Settings.from_env())
    try:
        ledger.load_deployment()
        if check_ring:
            km.check_key_ring(ledger)
        yield ledger
    finally:
        ledger.close()


# --- secrets ------------------------------------------------------------------------


def _stored_responses(ledger: Ledger) -> StoredResponses:
    """The stored responses beside ``ledger`` (on or off: rows kept while it was on count)."""
    from adapters.persistence.response_store import build_stored_responses  # psycopg only when needed

    return build_stored_responses(Settings.from_env(), ledger)


def secrets_rotate_master(args: argparse.Namespace) -> Result:
    with _ledger() as ledger:
        result = km.rotate_master(ledger, _stored_responses(ledger))
    assert result.status is not None
    data = rotation_result_json(result)
    lines = (
        [f"moved {len(result.moved)} secret(s) out of the event history into the secret store"] if result.moved else []
    )
    lines += [
        f"re-encrypted {len(result.rewrapped)} secret(s) under fresh data keys, wrapped by master key "
        f"{result.newest_kid}"
    ]
    lines += [f"  {label}" for label in result.rewrapped]
    if result.deleted:
        lines.append(f"deleted {result.deleted} superseded secret(s)")
    if result.responses_resealed or result.responses_unreadable:
        lines.append(f"re-encrypted {result.responses_resealed} stored response(s)")
    if result.responses_unreadable:
        lines.append(f"{result.responses_unreadable} stored response(s) no configured key opens: left as they are")
    return data, "\n".join(lines + [status_text(result.status)])


def rotation_result_json(result: km.RotationResult) -> dict[str, Any]:
    assert result.status is not None
    return {
        "newest_kid": result.newest_kid,
        "rewrapped": result.rewrapped,
        "moved": result.moved,
        "deleted": result.deleted,
        "responses_resealed": result.responses_resealed,
        "responses_unreadable": result.responses_unreadable,
        "status": status_json(result.status),
    }


def secrets_status(args: argparse.Namespace) -> Result:
    with _ledger() as ledger:
        status = km.secrets_status(ledger, _stored_responses(ledger))
    return status_json(status), status_text(status)


def status_json(status: km.SecretsStatus) -> dict[str, Any]:
    return {
        "newest_kid": status.newest_kid,
        "configured_kids": status.configured_kids,
        "in_use": {kid: {"count": len(labels), "secrets": labels} for kid, labels in status.in_use.items()},
        "missing_kids": status.missing_kids,
        "retirable_kids": status.retirable_kids,
        "rotation_needed": status.rotation_needed,
        "not_moved": status.not_moved,
        "in_history": {"envelopes": sum(status.in_history.values()), "kids": status.in_history},
    }


def status_text(status: km.SecretsStatus) -> str:
    lines = [f"newest master key: {status.newest_kid} (configured: {', '.join(status.configured_kids)})"]
    lines += [f"  {kid}: {len(labels)} secret(s)" for kid, labels in status.in_use.items()]
    if status.missing_kids:
        lines.append(f"MISSING keys (those secrets cannot be opened): {', '.join(status.missing_kids)}")
    if status.rotation_needed:
        lines.append("run `tallyhub secrets rotate-master` to re-encrypt everything under the newest key")
    if status.not_moved:
        lines.append(
            f"{len(status.not_moved)} secret(s) still only in the event history: "
            "`tallyhub secrets rotate-master` moves them to the secret store"
        )
    if status.retirable_kids:
        lines.append(
            f"no current secret uses {', '.join(status.retirable_kids)}: safe to remove from the configuration"
        )
    if status.in_history:
        kids = ", ".join(f"{kid} ({count})" for kid, count in status.in_history.items())
        lines.append(
            f"the event history still holds {sum(status.in_history.values())} envelope(s) from before the "
            f"secret store, sealed under {kids}: whoever has one of those keys and a copy of the store can "
            "open the secrets as they were then; rotate those provider credentials at the provider"
        )
    return "\n".join(lines)


# --- provider credentials -----------------------------------------------------------


def providers_rotate_credential(args: argparse.Namespace) -> Result:
    secret = read_secret()
    with _ledger() as ledger:
        rotation = ProviderRegistry(ledger).rotate_credential(
            args.name,
            secret,
            credential_id=args.credential,
            grace=timedelta(seconds=args.grace_seconds),
            weight=args.weight,
        )
        data = {**provider_json(rotation.provider), "rotated": rotation_json(rotation)}
    when = f"until {rotation.retires_at.isoformat()}" if rotation.retires_at else "no longer (disabled now)"
    return data, (
        f"credential {rotation.new_credential_id} replaces {rotation.old_credential_id} of {args.name}; "
        f"the old one is used {when}"
    )


def providers_delete_credential(args: argparse.Namespace) -> Result:
    with _ledger() as ledger:
        data = provider_json(ProviderRegistry(ledger).delete_credential(args.name, args.credential_id))
    return data, f"credential {args.credential_id} of {args.name} deleted"


def rotation_json(rotation: CredentialRotation) -> dict[str, Any]:
    return {
        "old_credential_id": rotation.old_credential_id,
        "new_credential_id": rotation.new_credential_id,
        "old_retires_at": rotation.retires_at.isoformat() if rotation.retires_at else None,
    }


# --- API keys -----------------------------------------------------------------------


def keys_issue(args: argparse.Namespace) -> Result:
    models = parse_models(args.models)
    with _ledger() as ledger:
        issued = ApiKeys(ledger).issue_api_key(args.account, args.name, args.expires, models)
        data = {**key_json(ledger.get_api_key(issued.key_id)), "key": issued.plaintext}
    return data, f"key id {issued.key_id}\nAPI key (shown once): {issued.plaintext}"


def keys_rotate(args: argparse.Namespace) -> Result:
    with _ledger() as ledger:
        rotation = ApiKeys(ledger).rotate_api_key(args.key_id, grace=timedelta(seconds=args.grace_seconds))
        data = {
            **key_json(ledger.get_api_key(rotation.issued.key_id)),
            "key": rotation.issued.plaintext,
            "replaces": key_json(ledger.get_api_key(rotation.old_key_id)),
        }
    when = f"until {rotation.old_retires_at.isoformat()}" if rotation.old_retires_at else "no longer (revoked)"
    return data, (
        f"key id {rotation.issued.key_id} replaces {rotation.old_key_id}; the old key works {when}\n"
        f"API key (shown once): {rotation.issued.plaintext}"
    )


def keys_set_models(args: argparse.Namespace) -> Result:
    models = None if args.all else parse_models(args.models)
    if models is None and not args.all:
        raise InvalidRequest("give --models PROVIDER/MODEL,... or --all", param="models")
    with _ledger() as ledger:
        data = key_json(ApiKeys(ledger).set_allowed_models(args.key_id, models))
    return data, f"key {data['id']} may use {', '.join(models) if models else 'every model'}"


def key_json(key: ApiKey) -> dict[str, Any]:
    """``api_key_json`` plus model limits and rotation (never the key or its digest)."""
    return {
        **api_key_json(key),
        "allowed_models": key.allowed_models,
        "replaced_by": str(key.replaced_by) if key.replaced_by else None,
        "retires_at": key.retires_at.isoformat() if key.retires_at else None,
    }


def read_secret() -> str:
    secret = sys.stdin.readline().strip()
    if not secret:
        raise InvalidRequest("--api-key-stdin was given but standard input held no secret", param="api_key")
    return secret


# --- the parser ---------------------------------------------------------------------
