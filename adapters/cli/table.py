"""The ``tallyhub`` command table: every command, its flags and its help text, built without
importing any command's module. A command's handler is named ``module:function`` (a module
of adapters/cli/) and imported only when that command runs, so ``--help``, a usage error
or one command never pays for the imports of all the others (adapters/cli/arguments.py
keeps the argument types and the limits the help texts name).

Invariant: the table is the interface. Commands, flags, defaults, help texts and the order
of both are those the handlers' modules registered before the table moved here."""

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.cli.arguments import (
    DEFAULT_LINK_TTL_HOURS,
    EXPORT_FORMATS,
    EXPORT_KINDS,
    GENAI_PRICES,
    MAX_AUDIT_LIMIT,
    MAX_CREDENTIAL_WEIGHT,
    UNRECORDED,
    WEBHOOK_EVENT_TYPES,
    audit_limit,
    deliveries_limit,
    drift_days,
    grace_seconds,
    iso_timestamp,
    model_list,
    percent,
    positive,
    requests_limit,
    seconds_or_default,
)

Command = Callable[..., argparse.ArgumentParser]


class UsageError(Exception):
    """Bad arguments, as argparse words them (it would print usage and exit)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class Handler:
    """A command's handler, ``module:function`` in adapters/cli/, imported when it is called."""

    ref: str

    @property
    def module(self) -> str:
        return "adapters.cli." + self.ref.partition(":")[0]

    def resolve(self) -> Callable[[argparse.Namespace], Any]:
        handler: Callable[[argparse.Namespace], Any] = getattr(
            importlib.import_module(self.module), self.ref.partition(":")[2]
        )
        return handler

    def __call__(self, args: argparse.Namespace) -> Any:
        return self.resolve()(args)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--debug", action="store_true", help="on failure, also print the traceback on stderr")
    parser = _Parser(prog="tallyhub", description="Tallyhub AI gateway with an event-sourced ledger")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: str, help_: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=Handler(handler))
        return p

    command("init", "commands:init", "create the store and master key; print an admin key once")

    serve = command("serve", "commands:serve", "run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)

    worker = command(
        "worker",
        "commands:worker",
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

    dash = command("dashboard", "commands:dashboard", "run the Streamlit analytics dashboard (admin key required)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8501)

    providers = sub.add_parser("providers", help="upstream providers and credentials").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = command("add", "commands:providers_add", "register a provider", providers)
    add.add_argument("name")
    add.add_argument("--kind", required=True)
    add.add_argument("--base-url")
    add.add_argument("--region")
    add.add_argument("--api-key-stdin", action="store_true", help="read the provider's secret from stdin")
    add.add_argument("--weight", type=int, default=1, help="share of traffic for this credential")
    add_policy_arguments(add)
    command("list", "commands:providers_list", "list providers (secrets masked)", providers)
    show = command("show", "commands:providers_show", "show one provider: credentials, timeouts, retries", providers)
    show.add_argument("name")
    update = command(
        "update",
        "commands:providers_update",
        "change a provider's timeouts and retries (the others keep theirs)",
        providers,
    )
    update.add_argument("name")
    add_policy_arguments(update)
    cred = command(
        "add-credential", "commands:providers_add_credential", "add another credential (secret on stdin)", providers
    )
    cred.add_argument("name")
    cred.add_argument("--api-key-stdin", action="store_true", required=True)
    cred.add_argument("--weight", type=int, default=1)
    weight = command("weight", "commands:providers_weight", "change a credential's share of traffic", providers)
    weight.add_argument("name")
    weight.add_argument("credential_id", metavar="CREDENTIAL_ID", help="an id from `providers show`")
    weight.add_argument("weight", type=int, metavar="WEIGHT", help=f"a whole number from 1 to {MAX_CREDENTIAL_WEIGHT}")
    for action, handler, help_ in (
        ("disable", "commands:providers_disable", "stop routing to a provider"),
        ("enable", "commands:providers_enable", "route to a provider again"),
    ):
        toggle = command(action, handler, help_, providers)
        toggle.add_argument("name")
        toggle.add_argument("--credential", help="only this credential (an id from `providers list`)")

    aliases = sub.add_parser("aliases", help="model aliases with fallbacks").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    alias = command("set", "commands:aliases_set", "point an alias at a model, with fallbacks tried in order", aliases)
    alias.add_argument("name")
    alias.add_argument("model", metavar="PROVIDER/MODEL")
    alias.add_argument("--fallback", action="append", default=[], metavar="PROVIDER/MODEL")
    command("list", "commands:aliases_list", "list aliases", aliases)
    unalias = command("remove", "commands:aliases_remove", "remove an alias", aliases)
    unalias.add_argument("name")

    prices = sub.add_parser("prices", help="the price book").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    set_ = command("set", "commands:prices_set", "price a model; publishes a new price-book version", prices)
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
    publish = command(
        "publish", "commands:prices_publish", "publish a whole price-book version from a JSON file", prices
    )
    publish.add_argument("file", help="the price file (format: README, 'Price files')")
    command("show", "commands:prices_show", "show the current price-book version", prices)

    accounts = sub.add_parser("accounts", help="customer accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command("create", "commands:accounts_create", "create an account", accounts)
    create.add_argument("name")
    create.add_argument("--starter-credits", help="default: TALLYHUB_STARTER_CREDITS (0)")
    command("list", "commands:accounts_list", "list accounts with balances", accounts)
    caps = command("caps", "commands:accounts_caps", "spend caps per UTC day / month (omit to remove)", accounts)
    caps.add_argument("account")
    caps.add_argument("--day", help="credits per UTC day")
    caps.add_argument("--month", help="credits per UTC month")
    caps.add_argument("--key", help="cap one API key of the account instead (its key id)")

    credits = sub.add_parser("credits", help="credit grants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    grant = command("grant", "commands:credits_grant", "grant credits to an account", credits)
    grant.add_argument("account")
    grant.add_argument("amount", help="credits, decimal text")
    grant.add_argument("--reason", default="")
    grant.add_argument("--idempotency-key")
    grant.add_argument(
        "--expires-at",
        type=iso_timestamp,
        metavar="ISO",
        help="ISO 8601 time (UTC when it names no zone); what is unspent then expires",
    )

    adjust = command("adjust", "commands:credits_adjust", "correct a balance up or down, with a reason", credits)
    adjust.add_argument("account")
    adjust.add_argument("amount", help="credits, decimal text; negative to debit (never below zero)")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--idempotency-key")

    holds = sub.add_parser("holds", help="credit holds").add_subparsers(dest="action", required=True, metavar="ACTION")
    command(
        "sweep",
        "commands:holds_sweep",
        "release holds and expire grants past their deadline (serve, or worker in server mode, also does this)",
        holds,
    )

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True, metavar="ACTION")
    issue = command("issue", "commands:keys_issue", "issue an API key (printed once)", keys)
    issue.add_argument("account")
    issue.add_argument("--name", default="")
    issue.add_argument("--expires", type=iso_timestamp, help="ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
    revoke = command("revoke", "commands:keys_revoke", "revoke an API key", keys)
    revoke.add_argument("key_id")

    balance = command("balance", "commands:balance", "an account's balance, held and available credit")
    balance.add_argument("account")

    projections = sub.add_parser("projections", help="read models").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    command("status", "commands:projections_status", "position and lag of each read model", projections)
    rebuild = command("rebuild", "commands:projections_rebuild", "rebuild read models from the events", projections)
    rebuild.add_argument("name", nargs="?")
    _keys(sub, command, providers=providers, keys=keys)
    _statement(sub, command)
    _reconcile(sub, command)
    _replay(sub, command)
    _audit(sub, command)
    _audit_log(sub, command)
    _usage(sub, command)
    _price_import(prices, command)
    _models(sub, command)
    _webhooks(sub, command, accounts=accounts)
    _portal(sub, command, accounts=accounts)
    return parser


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """A provider's timeouts and retries (domain/provider.py ``UpstreamPolicy``; docs/providers.md,
    "Retries and timeouts"). Unset: the default (``providers add``), or unchanged (``update``)."""
    seconds = "seconds, or 'default'"
    parser.add_argument(
        "--timeout-connect", type=seconds_or_default, metavar="S", help=f"opening the connection ({seconds}: 10)"
    )
    parser.add_argument(
        "--timeout-first-byte",
        type=seconds_or_default,
        metavar="S",
        help=f"until the response's headers arrive, connecting included ({seconds}: no bound of its own)",
    )
    parser.add_argument(
        "--timeout-total",
        type=seconds_or_default,
        metavar="S",
        help=f"the whole exchange, a stream included ({seconds}: TALLYHUB_UPSTREAM_TIMEOUT_SECONDS)",
    )
    parser.add_argument(
        "--retries", type=int, metavar="N", help="retries of the same credential before failing over (default 0)"
    )
    parser.add_argument("--retry-base-ms", type=int, metavar="MS", help="backoff base delay (default 250)")


def _keys(sub: Any, command: Command, *, providers: Any, keys: Any) -> None:
    """adapters/cli/key_commands.py and limit_commands.py."""
    _limits(keys, _group(sub, "accounts"), command)

    secrets = sub.add_parser("secrets", help="master keys and sealed secrets").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    command(
        "rotate-master",
        "key_commands:secrets_rotate_master",
        "re-encrypt every stored secret under a fresh data key and the newest master key, deleting "
        "superseded ones (online, idempotent)",
        secrets,
    )
    command(
        "status",
        "key_commands:secrets_status",
        "which master keys the stored secrets still need, and what the event history still holds",
        secrets,
    )

    rotate = command(
        "rotate-credential",
        "key_commands:providers_rotate_credential",
        "replace a provider credential (new secret on stdin)",
        providers,
    )
    rotate.add_argument("name")
    rotate.add_argument("--api-key-stdin", action="store_true", required=True)
    rotate.add_argument("--credential", help="the credential to replace (needed when there are several)")
    rotate.add_argument(
        "--grace-seconds",
        type=grace_seconds,
        default=0,
        help="keep using the old credential this long beside the new one (default 0: disable it now)",
    )
    rotate.add_argument("--weight", type=int, help="the new credential's weight (default: the old one's)")
    delete = command(
        "delete-credential", "key_commands:providers_delete_credential", "delete a provider credential", providers
    )
    delete.add_argument("name")
    delete.add_argument("credential_id")

    issue = keys.choices["issue"]
    issue.add_argument(
        "--models", help="limit the key to these models: PROVIDER/MODEL, PROVIDER/* or aliases, comma-separated"
    )
    issue.set_defaults(handler=Handler("key_commands:keys_issue"))
    rotate_key = command("rotate", "key_commands:keys_rotate", "replace an API key (the new key is printed once)", keys)
    rotate_key.add_argument("key_id")
    rotate_key.add_argument(
        "--grace-seconds",
        type=grace_seconds,
        default=0,
        help="the old key keeps working this long (default 0: revoked now)",
    )
    models = command("set-models", "key_commands:keys_set_models", "limit the models an API key may use", keys)
    models.add_argument("key_id")
    which = models.add_mutually_exclusive_group(required=True)
    which.add_argument("--models", help="PROVIDER/MODEL, PROVIDER/* or aliases, comma-separated")
    which.add_argument("--all", action="store_true", help="allow every model")


def _group(sub: Any, name: str) -> Any:
    parser = sub.choices[name]
    for action in parser._actions:  # argparse keeps a parser's sub-command group only here
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError(f"no sub-commands under {name!r}")


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, metavar="N", help="requests per minute (0: no limit)")
    parser.add_argument("--tpm", type=int, metavar="N", help="tokens per minute, input + output (0: no limit)")
    parser.add_argument("--max-parallel", type=int, metavar="N", help="requests in flight at once (0: no limit)")


def _limits(keys: Any, accounts: Any, command: Command) -> None:
    """Add ``keys limits`` and ``accounts limits`` to the ``keys`` and ``accounts`` groups."""
    key = command(
        "limits",
        "limit_commands:keys_limits",
        "show or set an API key's rate limits (no flag: show; 0 clears a limit)",
        keys,
    )
    key.add_argument("key_id")
    _limit_flags(key)
    account = command(
        "limits",
        "limit_commands:accounts_limits",
        "show or set an account's rate limits (no flag: show; 0 clears a limit)",
        accounts,
    )
    account.add_argument("account")
    _limit_flags(account)


def _statement(sub: Any, command: Command) -> None:
    """Add ``statement`` to the parser ."""
    p = command(
        "statement",
        "statement_commands:statement",
        "every movement of an account's balance, with the running balance",
        sub,
    )
    p.add_argument("account")
    p.add_argument(
        "--from",
        dest="since",
        type=iso_timestamp,
        metavar="ISO",
        help="first instant included, ISO 8601 (default: the beginning)",
    )
    p.add_argument(
        "--to", dest="until", type=iso_timestamp, metavar="ISO", help="first instant excluded, ISO 8601 (default: now)"
    )


def _reconcile(sub: Any, command: Command) -> None:
    """Add ``reconcile`` to the parser ."""
    p = command(
        "reconcile",
        "reconcile_commands:reconcile",
        "provider cost against charges per credential and day (the margin report), and estimated charges",
        sub,
    )
    p.add_argument(
        "--from",
        dest="since",
        type=iso_timestamp,
        metavar="ISO",
        help="first hour included, a whole UTC hour in ISO 8601 (default: the beginning)",
    )
    p.add_argument(
        "--to",
        dest="until",
        type=iso_timestamp,
        metavar="ISO",
        help="first hour excluded, a whole UTC hour in ISO 8601 (default: now)",
    )


def _replay(sub: Any, command: Command) -> None:
    """Add ``replay`` to the parser ."""
    p = command(
        "replay",
        "replay_commands:replay",
        "re-price recorded charges under another price book (a dry run unless --apply)",
        sub,
    )
    p.add_argument("--prices", required=True, metavar="FILE", help="a price file (see README, Price files)")
    p.add_argument(
        "--from",
        dest="since",
        type=iso_timestamp,
        metavar="ISO",
        help="first instant included, ISO 8601 (default: the beginning)",
    )
    p.add_argument(
        "--to", dest="until", type=iso_timestamp, metavar="ISO", help="first instant excluded, ISO 8601 (default: now)"
    )
    p.add_argument("--account", help="only this account (a name or an id)")
    p.add_argument("--apply", action="store_true", help="post the differences as adjustment events, once")


def _audit(sub: Any, command: Command) -> None:
    """Add ``export`` and ``verify`` to the parser ."""
    p = command("export", "audit_commands:export", "write an auditable export with a manifest and a hash chain", sub)
    p.add_argument("kind", choices=EXPORT_KINDS)
    p.add_argument(
        "--from",
        dest="since",
        type=iso_timestamp,
        metavar="ISO",
        help="first instant included, ISO 8601 (default: the beginning)",
    )
    p.add_argument(
        "--to", dest="until", type=iso_timestamp, metavar="ISO", help="first instant excluded, ISO 8601 (default: now)"
    )
    p.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write; the manifest goes beside it")
    v = command(
        "verify",
        "audit_commands:verify",
        "check the ledger's invariants, its read models and exports' hash chains",
        sub,
    )
    v.add_argument(
        "--export",
        action="append",
        metavar="PATH",
        help="also check this export file (its manifest beside it); repeatable",
    )
    v.add_argument(
        "--deep", action="store_true", help="also rebuild every account aggregate from its events and compare (slower)"
    )
    v.add_argument(
        "--from",
        dest="since",
        type=iso_timestamp,
        metavar="ISO",
        help="check only the requests recorded from this instant on (included), ISO 8601; balances, holds and "
        "read models are then not checked",
    )
    v.add_argument(
        "--to",
        dest="until",
        type=iso_timestamp,
        metavar="ISO",
        help="check only the requests recorded before this instant (excluded), ISO 8601",
    )


def _audit_log(sub: Any, command: Command) -> None:
    """Add ``audit`` to the parser ."""
    log = command(
        "audit", "audit_log_commands:audit", "the audit log: who did which admin action to what, newest first", sub
    )
    log.add_argument("--actor", help=f"cli, admin:<fingerprint>, payments, … or {UNRECORDED}")
    log.add_argument("--action", help="an action (key.revoked) or a kind of them (key)")
    log.add_argument("--target", help="a part of the target (account, key id, provider…), any case")
    log.add_argument("--since", type=iso_timestamp, metavar="ISO", help="from this time (UTC unless it names a zone)")
    log.add_argument("--until", type=iso_timestamp, metavar="ISO", help="before this time")
    log.add_argument(
        "--limit", type=audit_limit, default=100, help=f"at most this many, 1 to {MAX_AUDIT_LIMIT} (default 100)"
    )


def _usage(sub: Any, command: Command) -> None:
    """Add ``requests`` and ``usage`` to the parser ."""
    listing = command("requests", "usage_commands:requests", "the request log, newest first, filtered", sub)
    listing.add_argument("--account")
    listing.add_argument("--model")
    listing.add_argument("--status", type=int)
    listing.add_argument(
        "--limit", type=requests_limit, default=100, help="at most this many, 1 to 100000 (default 100)"
    )
    _attribution_flags(listing)
    hourly = command(
        "usage", "usage_commands:usage", "hourly usage per account, key, provider and model, filtered", sub
    )
    hourly.add_argument("--account")
    hourly.add_argument("--from", dest="since", type=iso_timestamp, metavar="ISO", help="first hour included")
    hourly.add_argument("--to", dest="until", type=iso_timestamp, metavar="ISO", help="first hour excluded")
    _attribution_flags(hourly)


def _attribution_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="only requests attributed to this end user (the `user` sent)")
    parser.add_argument("--tag", help="only requests carrying this tag (x-tallyhub-tags)")
    parser.add_argument("--metadata", metavar="KEY=VALUE", help="only requests whose metadata has this pair")


def _price_import(prices: Any, command: Command) -> None:
    """Add ``import`` and ``drift`` to the ``prices`` group."""
    importing = command(
        "import",
        "price_import_commands:prices_import",
        "publish a price-book version with provider costs and margins from a price catalog",
        prices,
    )
    importing.add_argument(
        "--catalog", required=True, help=f"'{GENAI_PRICES}' (the bundled package data) or a LiteLLM-format JSON file"
    )
    importing.add_argument("--provider", help="only this provider's models (one of `providers list`)")
    importing.add_argument(
        "--models",
        type=model_list,
        metavar="M1,M2",
        help="only these PROVIDER/MODEL ids (default: priced or asked for)",
    )
    importing.add_argument("--margin", type=percent, default=Decimal(0), metavar="PCT", help="percent over cost")
    _credits_per_usd(importing)
    importing.add_argument(
        "--effective-at", type=iso_timestamp, metavar="ISO", help="when the version takes effect (default now)"
    )
    importing.add_argument("--dry-run", action="store_true", help="show the diff; publish nothing")
    drift = command(
        "drift",
        "price_import_commands:prices_drift",
        "provider costs that differ from a catalog, and models asked for without a price",
        prices,
    )
    drift.add_argument("--catalog", default=GENAI_PRICES, help=f"as for import (default {GENAI_PRICES})")
    drift.add_argument(
        "--threshold", type=percent, default=Decimal(1), metavar="PCT", help="percent difference (default 1)"
    )
    _credits_per_usd(drift)
    drift.add_argument("--days", type=drift_days, default=30, help="request log read for missing prices (default 30)")


def _credits_per_usd(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--credits-per-usd", type=positive, default=Decimal(1), metavar="X", help="credits per US dollar (default 1)"
    )


def _models(sub: Any, command: Command) -> None:
    """Add ``models discover`` to the parser ."""
    models = sub.add_parser("models", help="the models providers offer").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    found = command(
        "discover",
        "model_commands:discover",
        "list the models a provider offers, asked with its stored credential, marked priced/routable/unpriced",
        models,
    )
    found.add_argument("provider", metavar="PROVIDER", help="a registered provider's name")


def _webhooks(sub: Any, command: Command, *, accounts: Any) -> None:
    """Add the ``webhooks`` group to the parser, and ``alerts`` to its ``accounts`` group."""
    webhooks = sub.add_parser("webhooks", help="outbound webhooks for alerts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = command(
        "add",
        "webhook_commands:webhooks_add",
        "subscribe a URL to alert events (prints its signing secret once)",
        webhooks,
    )
    add.add_argument("url", help="http or https URL that receives signed POSTs")
    add.add_argument("--events", required=True, help=f"comma-separated: {','.join(WEBHOOK_EVENT_TYPES)}")
    add.add_argument("--secret-stdin", action="store_true", help="read the signing secret from stdin (else generated)")
    command("list", "webhook_commands:webhooks_list", "list webhooks (never their secrets)", webhooks)
    remove = command("remove", "webhook_commands:webhooks_remove", "remove a webhook and its secret", webhooks)
    remove.add_argument("webhook_id")
    _webhook_deliveries(webhooks, command)

    alerts = command(
        "alerts",
        "webhook_commands:accounts_alerts",
        "balance alerts: fire balance.low when the available balance falls below AMOUNT (no flag: show them)",
        accounts,
    )
    alerts.add_argument("account")
    alerts.add_argument(
        "--below", action="append", metavar="AMOUNT", help="credits, decimal text; repeat for several thresholds"
    )
    alerts.add_argument("--clear", action="store_true", help="remove every threshold")


def _webhook_deliveries(webhooks: Any, command: Command) -> None:
    """``webhooks deliveries [--failed] [--limit N]``: the delivery log (application/deliveries.py)."""
    log_help = "webhook deliveries: status, attempts, last error"
    deliveries = command("deliveries", "webhook_commands:webhooks_deliveries", log_help, webhooks)
    deliveries.add_argument("--failed", action="store_true", help="only deliveries that ended failed")
    deliveries.add_argument(
        "--limit", type=deliveries_limit, default=100, help="at most this many, newest first (default 100)"
    )


def _portal(sub: Any, command: Command, *, accounts: Any) -> None:
    portal = sub.add_parser("portal", help="the customer portal's sign-in links and sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    link = command("link", "portal_commands:portal_link", "print a one-use sign-in link to an account's portal", portal)
    link.add_argument("account")
    link.add_argument(
        "--ttl",
        default=f"{DEFAULT_LINK_TTL_HOURS}h",
        help="how long the link is valid: 30m, 1h, 2d (1 minute to 7 days; default 1h)",
    )
    revoke = command(
        "revoke", "portal_commands:portal_revoke", "end an account's portal sessions and unused sign-in links", portal
    )
    revoke.add_argument("account")
    self_service = command(
        "self-service",
        "portal_commands:accounts_self_service",
        "let an account manage its own API keys in the portal",
        accounts,
    )
    self_service.add_argument("account")
    self_service.add_argument("--keys", choices=("on", "off"), required=True)
