"""``tallyhub``: the operator's command line. Every command takes ``--json`` and then
prints exactly one JSON document (the result, or ``{"error": {...}}``) on stdout.
Secrets are read from standard input, never from arguments.

Every failure exits non-zero with one line: ``error: <message>`` on stderr, or with
``--json`` ``{"error": {"message", "type", "code"}}`` on stdout — bad arguments (exit 2)
and unexpected exceptions (``internal_error``) included. ``--debug`` adds the traceback
on stderr."""

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from adapters.cli import (
    audit_commands,
    audit_log_commands,
    commands,
    key_commands,
    model_commands,
    portal_commands,
    price_import_commands,
    reconcile_commands,
    replay_commands,
    statement_commands,
    usage_commands,
    webhook_commands,
)
from adapters.settings import SettingsError
from application.acting import CLI, acting_as
from domain.errors import (
    AlreadyExists,
    AuthenticationFailed,
    InsufficientCredits,
    NotFound,
    NotInitialised,
    PermissionDenied,
    ProjectionStopped,
    SecretError,
    TallyhubError,
    UpstreamError,
)
from domain.money import InvalidAmount
from domain.provider import MAX_CREDENTIAL_WEIGHT

EXIT_ERROR = 1
EXIT_USAGE = 2


LONG_RUNNING = (commands.serve, commands.worker, commands.dashboard)


class UsageError(Exception):
    """Bad arguments, as argparse words them (it would print usage and exit)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--debug", action="store_true", help="on failure, also print the traceback on stderr")
    parser = _Parser(prog="tallyhub", description="Tallyhub AI gateway with an event-sourced ledger")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., Any], help_: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    command("init", commands.init, "create the store and master key; print an admin key once")

    serve = command("serve", commands.serve, "run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)

    worker = command(
        "worker",
        commands.worker,
        "server mode (PostgreSQL + Redis): keep the read models up to date and run the sweeps, until SIGTERM",
    )
    worker.add_argument(
        "--poll-seconds",
        type=float,
        default=1.0,
        help="catch up at least this often even without a wake-up from Redis (default 1)",
    )
    worker.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="answer GET /health and GET /ready on this port (default: no health server)",
    )
    worker.add_argument("--health-host", default="127.0.0.1", help="the health server's address (default 127.0.0.1)")

    dash = command("dashboard", commands.dashboard, "run the Streamlit analytics dashboard (admin key required)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8501)

    providers = sub.add_parser("providers", help="upstream providers and credentials").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = command("add", commands.providers_add, "register a provider", providers)
    add.add_argument("name")
    add.add_argument("--kind", required=True)
    add.add_argument("--base-url")
    add.add_argument("--region")
    add.add_argument("--api-key-stdin", action="store_true", help="read the provider's secret from stdin")
    add.add_argument("--weight", type=int, default=1, help="share of traffic for this credential")
    add_policy_arguments(add)
    command("list", commands.providers_list, "list providers (secrets masked)", providers)
    show = command("show", commands.providers_show, "show one provider: credentials, timeouts, retries", providers)
    show.add_argument("name")
    update = command(
        "update",
        commands.providers_update,
        "change a provider's timeouts and retries (the others keep theirs)",
        providers,
    )
    update.add_argument("name")
    add_policy_arguments(update)
    cred = command(
        "add-credential", commands.providers_add_credential, "add another credential (secret on stdin)", providers
    )
    cred.add_argument("name")
    cred.add_argument("--api-key-stdin", action="store_true", required=True)
    cred.add_argument("--weight", type=int, default=1)
    weight = command("weight", commands.providers_weight, "change a credential's share of traffic", providers)
    weight.add_argument("name")
    weight.add_argument("credential_id", metavar="CREDENTIAL_ID", help="an id from `providers show`")
    weight.add_argument("weight", type=int, metavar="WEIGHT", help=f"a whole number from 1 to {MAX_CREDENTIAL_WEIGHT}")
    for action, handler, help_ in (
        ("disable", commands.providers_disable, "stop routing to a provider"),
        ("enable", commands.providers_enable, "route to a provider again"),
    ):
        toggle = command(action, handler, help_, providers)
        toggle.add_argument("name")
        toggle.add_argument("--credential", help="only this credential (an id from `providers list`)")

    aliases = sub.add_parser("aliases", help="model aliases with fallbacks").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    alias = command("set", commands.aliases_set, "point an alias at a model, with fallbacks tried in order", aliases)
    alias.add_argument("name")
    alias.add_argument("model", metavar="PROVIDER/MODEL")
    alias.add_argument("--fallback", action="append", default=[], metavar="PROVIDER/MODEL")
    command("list", commands.aliases_list, "list aliases", aliases)
    unalias = command("remove", commands.aliases_remove, "remove an alias", aliases)
    unalias.add_argument("name")

    prices = sub.add_parser("prices", help="the price book").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    set_ = command("set", commands.prices_set, "price a model; publishes a new price-book version", prices)
    set_.add_argument("model", metavar="PROVIDER/MODEL")
    set_.add_argument("--input", required=True, help="credits per 1M input tokens")
    set_.add_argument("--output", required=True, help="credits per 1M output tokens")
    set_.add_argument("--cached-input", help="credits per 1M cached input tokens (default: the input rate)")
    set_.add_argument("--per-image", help="credits per image")
    set_.add_argument("--max-output-tokens", type=int, help="output cap used for the worst-case hold")
    set_.add_argument("--context-window", type=int, help="the model's context window in tokens (shown by /v1/models)")
    set_.add_argument("--reasoning", help="credits per 1M reasoning tokens (default: the output rate)")
    set_.add_argument("--per-request", help="credits per request")
    set_.add_argument("--per-web-search", help="credits per server-side web search call")
    set_.add_argument("--cache-write", help="credits per 1M 5-minute cache-write tokens (default: 1.25 x input)")
    set_.add_argument("--cache-write-1h", help="credits per 1M 1-hour cache-write tokens (default: 2 x input)")
    set_.add_argument(
        "--context-tier",
        action="append",
        default=[],
        metavar="TOKENS:input=RATE,output=RATE[,...]",
        help="rates for the whole request when its prompt is above TOKENS input tokens (repeatable); "
        "also cached_input, reasoning, cache_write, cache_write_1h",
    )
    set_.add_argument(
        "--service-tier",
        action="append",
        default=[],
        metavar="NAME:input=RATE,output=RATE[,...]",
        help="rates for a request whose response reports service tier NAME (repeatable)",
    )
    publish = command("publish", commands.prices_publish, "publish a whole price-book version from a JSON file", prices)
    publish.add_argument("file", help="the price file (format: README, 'Price files')")
    command("show", commands.prices_show, "show the current price-book version", prices)

    accounts = sub.add_parser("accounts", help="customer accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command("create", commands.accounts_create, "create an account", accounts)
    create.add_argument("name")
    create.add_argument("--starter-credits", help="default: TALLYHUB_STARTER_CREDITS (0)")
    command("list", commands.accounts_list, "list accounts with balances", accounts)
    caps = command("caps", commands.accounts_caps, "spend caps per UTC day / month (omit to remove)", accounts)
    caps.add_argument("account")
    caps.add_argument("--day", help="credits per UTC day")
    caps.add_argument("--month", help="credits per UTC month")
    caps.add_argument("--key", help="cap one API key of the account instead (its key id)")

    credits = sub.add_parser("credits", help="credit grants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    grant = command("grant", commands.credits_grant, "grant credits to an account", credits)
    grant.add_argument("account")
    grant.add_argument("amount", help="credits, decimal text")
    grant.add_argument("--reason", default="")
    grant.add_argument("--idempotency-key")
    grant.add_argument(
        "--expires-at",
        type=commands.iso_timestamp,
        metavar="ISO",
        help="ISO 8601 time (UTC when it names no zone); what is unspent then expires",
    )

    adjust = command("adjust", commands.credits_adjust, "correct a balance up or down, with a reason", credits)
    adjust.add_argument("account")
    adjust.add_argument("amount", help="credits, decimal text; negative to debit (never below zero)")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--idempotency-key")

    holds = sub.add_parser("holds", help="credit holds").add_subparsers(dest="action", required=True, metavar="ACTION")
    command(
        "sweep",
        commands.holds_sweep,
        "release holds and expire grants past their deadline (serve, or worker in server mode, also does this)",
        holds,
    )

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True, metavar="ACTION")
    issue = command("issue", commands.keys_issue, "issue an API key (printed once)", keys)
    issue.add_argument("account")
    issue.add_argument("--name", default="")
    issue.add_argument("--expires", type=commands.iso_timestamp, help="ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
    revoke = command("revoke", commands.keys_revoke, "revoke an API key", keys)
    revoke.add_argument("key_id")

    balance = command("balance", commands.balance, "an account's balance, held and available credit")
    balance.add_argument("account")

    projections = sub.add_parser("projections", help="read models").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    command("status", commands.projections_status, "position and lag of each read model", projections)
    rebuild = command("rebuild", commands.projections_rebuild, "rebuild read models from the events", projections)
    rebuild.add_argument("name", nargs="?")
    key_commands.register(sub, command, providers=providers, keys=keys)
    statement_commands.register(sub, command)
    reconcile_commands.register(sub, command)
    replay_commands.register(sub, command)
    audit_commands.register(sub, command)
    audit_log_commands.register(sub, command)
    usage_commands.register(sub, command)
    price_import_commands.register(prices, command)
    model_commands.register(sub, command)
    webhook_commands.register(sub, command, accounts=accounts)
    portal_commands.register(sub, command, accounts=accounts)
    return parser


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """A provider's timeouts and retries (domain/provider.py ``UpstreamPolicy``; docs/providers.md,
    "Retries and timeouts"). Unset: the default (``providers add``), or unchanged (``update``)."""
    seconds = "seconds, or 'default'"
    parser.add_argument("--timeout-connect", type=_seconds, metavar="S", help=f"opening the connection ({seconds}: 10)")
    parser.add_argument(
        "--timeout-first-byte",
        type=_seconds,
        metavar="S",
        help=f"until the response's headers arrive, connecting included ({seconds}: no bound of its own)",
    )
    parser.add_argument(
        "--timeout-total",
        type=_seconds,
        metavar="S",
        help=f"the whole exchange, a stream included ({seconds}: TALLYHUB_UPSTREAM_TIMEOUT_SECONDS)",
    )
    parser.add_argument(
        "--retries", type=int, metavar="N", help="retries of the same credential before failing over (default 0)"
    )
    parser.add_argument("--retry-base-ms", type=int, metavar="MS", help="backoff base delay (default 250)")


def _seconds(text: str) -> float | str:
    """A number of seconds, or ``default`` (the domain checks the range)."""
    if text == "default":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds or 'default', got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json, debug = "--json" in argv, "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), "invalid_request_error", "invalid_arguments", EXIT_USAGE, as_json)
    try:
        # the gateway's and workers' own work records no actor; every other command is the CLI's
        with acting_as(None if args.handler in LONG_RUNNING else CLI):
            result = args.handler(args)
    except (TallyhubError, InvalidAmount) as exc:
        return _fail(str(exc), _error_type(exc), getattr(exc, "code", "invalid_amount"), EXIT_ERROR, as_json, debug)
    except SettingsError as exc:
        return _fail(str(exc), "configuration_error", "invalid_setting", EXIT_ERROR, as_json, debug)
    except Exception as exc:  # anything else: one line, not a traceback (--debug shows it)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        message = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        return _fail(message, "server_error", "internal_error", EXIT_ERROR, as_json, debug)
    if result is None:
        return 0
    data, text, *status = result  # a command may end with its exit status (verify: 1 on a mismatch)
    print(json.dumps(data, indent=2) if args.json else text)
    return status[0] if status else 0


def _fail(message: str, type_: str, code: str, status: int, as_json: bool, debug: bool = False) -> int:
    if debug:
        traceback.print_exc(file=sys.stderr)
    if as_json:
        print(json.dumps({"error": {"message": message, "type": type_, "code": code}}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return status


def _error_type(exc: Exception) -> str:
    """The OpenAI error type the HTTP API gives the same error."""
    for cls, type_ in _TYPES:
        if isinstance(exc, cls):
            return type_
    return "invalid_request_error"


_TYPES: list[tuple[type[Exception], str]] = [
    (AuthenticationFailed, "authentication_error"),
    (PermissionDenied, "permission_error"),
    (InsufficientCredits, "insufficient_credits"),
    (NotFound, "invalid_request_error"),
    (AlreadyExists, "invalid_request_error"),
    (NotInitialised, "server_error"),
    (SecretError, "server_error"),
    (UpstreamError, "upstream_error"),
    (ProjectionStopped, "server_error"),
]


if __name__ == "__main__":
    sys.exit(main())
