"""The CLI's commands. Each returns ``(json_data, human_text)``; main.py prints one."""

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adapters.bootstrap import build_services, initialise
from adapters.presenters import api_key_json, balance_json, plain, price_book_json, provider_json
from adapters.providers.config import check_provider_config
from adapters.queries import read_balance
from adapters.services import Services
from adapters.settings import Settings
from adapters.workers.hold_sweeper import sweep
from application.pricing_input import parse_price_file, parse_tier_flag, price_from_entry
from domain.errors import InvalidRequest, NotInCreditsMode
from domain.money import format_credits, parse_credits
from domain.provider import UpstreamPolicy

Result = tuple[Any, str] | tuple[Any, str, int]  # data, text, and the exit status when not 0


@contextmanager
def open_services() -> Iterator[Services]:
    services = build_services(Settings.from_env())
    try:
        yield services
    finally:
        services.close()


def init(args: argparse.Namespace) -> Result:
    settings = Settings.from_env()
    done = initialise(settings)
    data = {
        "initialised": True,
        "admin_key": done.admin_key,
        "master_key_created": done.master_key_created,
        "data_dir": str(settings.data_dir),
    }
    if done.admin_key is None:
        return data, "already initialised; the admin key was shown when the store was created"
    lines = [f"initialised the store in {settings.data_dir}"]
    if done.master_key_created:
        lines.append(f"master key written to {settings.master_key_path} (mode 0600) — back it up")
    lines.append(f"admin key (shown once): {done.admin_key}")
    return data, "\n".join(lines)


def serve(args: argparse.Namespace) -> None:
    """The gateway until SIGTERM or SIGINT, then a graceful stop (adapters/serving.py), exit 0."""
    from adapters.metrics_dir import prepare_multiproc_dir, single_process_metrics
    from adapters.serving import run_gateway

    settings = Settings.from_env()
    # every file serve and its workers create is the owner's alone, prometheus-client's
    # multiprocess files included (it creates them with the umask's mode)
    os.umask(0o077)
    if args.workers > 1:
        # the workers' counters summed at scrape (prometheus-client's multiprocess mode), from zero
        prepare_multiproc_dir(settings.data_dir)
    else:
        single_process_metrics(settings.data_dir)  # one process: the figures stay in its memory
    with open_services():
        pass  # fail here, once, with a clear error if the store or key is not usable
    run_gateway(settings, host=args.host, port=args.port, workers=args.workers)


def worker(args: argparse.Namespace) -> Result:
    """Server mode's projections and sweeps, until SIGTERM or SIGINT."""
    from adapters.gc_tuning import tune_for_serving
    from adapters.workers.server_worker import ServerWorker, require_server_mode

    settings = Settings.from_env()
    require_server_mode(settings)  # before touching the store: say why, and exit 1
    if not 0 < args.poll_seconds <= 3600:
        raise InvalidRequest("--poll-seconds must be more than 0 and at most 3600", param="poll_seconds")
    if args.health_port is not None and not 0 < args.health_port < 65536:
        raise InvalidRequest("--health-port must be a port number (1 to 65535)", param="health_port")
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with open_services() as services:
        server_worker = ServerWorker(services, poll_seconds=args.poll_seconds)
        health = _health_server(args, server_worker, services)
        tune_for_serving()
        try:
            report = server_worker.run(stop, grace_seconds=settings.shutdown_grace_seconds)
        finally:
            if health is not None:
                health.close()
    data = {"stopped": True, **plain(report)}
    return data, (
        f"worker stopped after {report.seconds} s: {report.wakes} wake-up(s), {report.sweeps} sweep(s), "
        f"{report.released_holds} hold(s) released, {report.expired_grants} grant(s) expired"
    )


def _health_server(args: argparse.Namespace, server_worker: Any, services: Any) -> Any:
    """``--health-port``: the worker's /health, /ready and /metrics (adapters/workers/health_server.py), listening."""
    if args.health_port is None:
        return None
    from adapters.metrics import scrape_exposition
    from adapters.workers.health_server import HealthServer

    try:
        server = HealthServer(
            args.health_host,
            args.health_port,
            server_worker.readiness(),
            metrics=scrape_exposition(services),
            metrics_token=services.settings.metrics_token,
        )
    except OSError as exc:
        raise InvalidRequest(
            f"--health-port: cannot listen on {args.health_host}:{args.health_port} ({exc.strerror or exc})",
            param="health_port",
        ) from None
    return server.start()


def dashboard(args: argparse.Namespace) -> None:
    from dashboard.launch import run

    run(args.host, args.port)  # replaces this process with `streamlit run dashboard/app.py`


def providers_add(args: argparse.Namespace) -> Result:
    check_provider_config(args.kind, args.base_url, args.region)
    changes = _policy_changes(args)
    policy = UpstreamPolicy(**changes) if changes else None  # checked before the secret is read
    secret = _read_secret() if args.api_key_stdin else None
    with open_services() as services:
        provider = services.provider_registry.register_provider(
            args.name,
            args.kind,
            base_url=args.base_url,
            region=args.region,
            secret=secret,
            weight=args.weight,
            policy=policy,
        )
        data = provider_json(provider)
    return data, f"provider {provider.name} ({provider.kind}) added with {len(provider.credentials)} credential(s)"


def providers_show(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = provider_json(services.ledger.get_provider(args.name))
    return data, _provider_text(data)


def providers_update(args: argparse.Namespace) -> Result:
    changes = _policy_changes(args)
    if not changes:
        raise InvalidRequest(
            "give at least one of --timeout-connect, --timeout-first-byte, --timeout-total, --retries, --retry-base-ms"
        )
    with open_services() as services:
        data = provider_json(services.provider_registry.set_policy(args.name, **changes))
    return data, _provider_text(data)


POLICY_FLAGS = ("timeout_connect", "timeout_first_byte", "timeout_total", "retries", "retry_base_ms")


def _policy_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The policy fields given on the command line; ``default`` puts a field back to its default."""
    defaults = UpstreamPolicy().to_dict()
    return {
        name: defaults[name] if getattr(args, name) == "default" else getattr(args, name)
        for name in POLICY_FLAGS
        if getattr(args, name) is not None
    }


def _policy_text(data: dict[str, Any]) -> str:
    """The timeouts and retries that differ from the defaults, for ``providers list``."""
    defaults = UpstreamPolicy().to_dict()
    changed = [f"{name}={data[name]:g}" for name in POLICY_FLAGS if data[name] != defaults[name]]
    return f"  {' '.join(changed)}" if changed else ""


def _provider_text(data: dict[str, Any]) -> str:
    credentials = ", ".join(f"{c['id']} {c['hint']} (weight {c['weight']})" for c in data["credentials"]) or "-"
    total = f"{data['timeout_total']:g} s" if data["timeout_total"] is not None else "the gateway's default"
    first_byte = f"{data['timeout_first_byte']:g} s" if data["timeout_first_byte"] is not None else "none"
    return "\n".join(
        [
            f"{data['name']} ({data['kind']}, {'enabled' if data['enabled'] else 'disabled'}) "
            f"{data['base_url'] or '(default URL)'}",
            f"  credentials: {credentials}",
            f"  timeouts: connect {data['timeout_connect']:g} s, first byte {first_byte}, total {total}",
            f"  retries: {data['retries']} (backoff base {data['retry_base_ms']} ms)",
        ]
    )


def providers_list(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = [provider_json(p) for p in services.ledger.list_providers()]
    lines = [
        f"{p['name']:<20} {p['kind']:<18} {'enabled' if p['enabled'] else 'disabled':<9} "
        f"{p['base_url'] or '(default)'}  credentials: {', '.join(c['hint'] for c in p['credentials']) or '-'}"
        f"{_policy_text(p)}"
        for p in data
    ]
    return {"data": data}, "\n".join(lines) or "no providers"


def providers_add_credential(args: argparse.Namespace) -> Result:
    secret = _read_secret()
    with open_services() as services:
        data = provider_json(services.provider_registry.add_credential(args.name, secret, args.weight))
    return data, f"credential {data['credentials'][-1]['id']} added to {args.name}"


def providers_weight(args: argparse.Namespace) -> Result:
    with open_services() as services:
        provider = services.provider_registry.set_credential_weight(args.name, args.credential_id, args.weight)
        data = provider_json(provider)
    return data, f"credential {args.credential_id} of {args.name}: weight {args.weight}\n{_provider_text(data)}"


def providers_disable(args: argparse.Namespace) -> Result:
    with open_services() as services:
        if args.credential:
            provider = services.provider_registry.disable_credential(
                args.name, args.credential, reason="disabled by the operator"
            )
        else:
            provider = services.provider_registry.disable_provider(args.name)
        data = provider_json(provider)
    return data, f"{args.credential or args.name} disabled"


def providers_enable(args: argparse.Namespace) -> Result:
    with open_services() as services:
        if args.credential:
            provider = services.provider_registry.enable_credential(args.name, args.credential)
        else:
            provider = services.provider_registry.enable_provider(args.name)
        data = provider_json(provider)
    return data, f"{args.credential or args.name} enabled"


def aliases_set(args: argparse.Namespace) -> Result:
    models = [args.model, *args.fallback]
    with open_services() as services:
        services.prices.set_alias(args.name, models)
    return {"name": args.name, "models": models}, f"{args.name} → {' → '.join(models)}"


def aliases_list(args: argparse.Namespace) -> Result:
    with open_services() as services:
        aliases = services.prices.aliases()
    data = [{"name": name, "models": models} for name, models in sorted(aliases.items())]
    return {"data": data}, "\n".join(f"{a['name']} → {' → '.join(a['models'])}" for a in data) or "no aliases"


def aliases_remove(args: argparse.Namespace) -> Result:
    with open_services() as services:
        services.prices.remove_alias(args.name)
    return {"name": args.name, "removed": True}, f"alias {args.name} removed"


def prices_set(args: argparse.Namespace) -> Result:
    entry: dict[str, Any] = {"input": args.input, "output": args.output}
    for name in PRICE_FLAGS:
        if getattr(args, name) is not None:
            entry[name] = getattr(args, name)
    if args.context_tier:
        entry["context_tiers"] = [
            parse_tier_flag(text, "--context-tier", threshold=True)[1] for text in args.context_tier
        ]
    if args.service_tier:
        service_tiers: dict[str, Any] = {}
        for text in args.service_tier:
            name, rates = parse_tier_flag(text, "--service-tier", threshold=False)
            if name in service_tiers:
                raise InvalidRequest(f"--service-tier {name} is given twice", param="--service-tier")
            service_tiers[name] = rates
        entry["service_tiers"] = service_tiers
    price = price_from_entry(entry)
    with open_services() as services:
        version = services.prices.set_price(args.model, price)
    return {"model": args.model, "version": version}, f"{args.model} priced; price book is now version {version}"


PRICE_FLAGS = (
    "cached_input",
    "reasoning",
    "per_image",
    "per_request",
    "per_web_search",
    "cache_write",
    "cache_write_1h",
    "max_output_tokens",
    "context_window",
)


def read_price_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the price file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"the price file {path} is not UTF-8 text") from None


def prices_publish(args: argparse.Namespace) -> Result:
    prices, effective_at = parse_price_file(read_price_file(args.file))
    with open_services() as services:
        version = services.prices.publish_prices(prices, effective_at)
    when = effective_at.isoformat() if effective_at else "now"
    return (
        {
            "version": version,
            "models": sorted(prices),
            "effective_at": effective_at.isoformat() if effective_at else None,
        },
        f"published price-book version {version} ({len(prices)} models), effective {when}",
    )


def prices_show(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = price_book_json(services.ledger.price_book(), services.ledger.clock.now())
    lines = [f"price book version {data['version']} (credits per 1M tokens)"]
    for model, price in data["models"].items():
        lines.append(f"  {model:<40} input {price['input']}  output {price['output']}{_price_extras(price)}")
        for tier in price.get("context_tiers", []):
            lines.append(f"  {'':<40}   above {tier['above_input_tokens']} input tokens:{_rates_text(tier)}")
        for name, tier in price.get("service_tiers", {}).items():
            lines.append(f"  {'':<40}   service tier {name}:{_rates_text(tier)}")
    return data, "\n".join(lines)


def _price_extras(price: dict[str, Any]) -> str:
    """The rates a price sets beyond input and output, for ``prices show``."""
    shown = [
        f"{name} {price[name]}"
        for name in (
            "cached_input",
            "reasoning",
            "cache_write_5m",
            "cache_write_1h",
            "per_image",
            "per_web_search",
            "per_request",
            "context_window",
            "source",  # where an imported price came from (prices import)
        )
        if price.get(name) is not None
        and (name not in ("per_image", "per_request", "per_web_search") or price[name] != "0")
    ]
    return "  " + "  ".join(shown) if shown else ""


def _rates_text(tier: dict[str, Any]) -> str:
    names = ("input", "output", "cached_input", "reasoning", "cache_write_5m", "cache_write_1h")
    return "".join(f" {name} {tier[name]}" for name in names if tier.get(name) is not None)


def accounts_create(args: argparse.Namespace) -> Result:
    settings = Settings.from_env()
    starter = parse_credits(
        args.starter_credits if args.starter_credits is not None else settings.starter_credits, param="starter_credits"
    )
    with open_services() as services:
        account = services.accounts.create_account(args.name, starter)
    data = {
        "id": str(account.id),
        "name": account.name,
        "balance": account.balance,
        "balance_credits": format_credits(account.balance),
    }
    return data, f"account {account.name} created ({account.id}), balance {format_credits(account.balance)}"


def accounts_caps(args: argparse.Namespace) -> Result:
    day = parse_credits(args.day, param="day") if args.day is not None else None
    month = parse_credits(args.month, param="month") if args.month is not None else None
    if Settings.from_env().billing_mode != "credits" and (day is not None or month is not None):
        raise NotInCreditsMode("spend caps")
    with open_services() as services:
        account = services.accounts.set_spend_caps(args.account, day=day, month=month, api_key_id=args.key)
        key_id = None if args.key is None else services.ledger.get_api_key(args.key).id
    scope = "account" if key_id is None else key_id.hex  # the aggregate keys its caps by hex
    data = {
        "account_id": str(account.id),
        "scope": "account" if key_id is None else str(key_id),
        "day": account.caps[scope]["day"],
        "month": account.caps[scope]["month"],
    }
    shown = ", ".join(f"{w} {format_credits(v)}" for w, v in (("day", day), ("month", month)) if v is not None)
    return data, f"spend caps for {data['scope']}: {shown or 'none'}"


def accounts_list(args: argparse.Namespace) -> Result:
    with open_services() as services:
        services.read_models.runner.catch_up()
        rows = [balance_json(row) for row in services.read_models.balances.list_balances()]
    lines = [
        f"{r['name']:<24} balance {r['balance_credits']:>22}  available {r['available_credits']:>22}" for r in rows
    ]
    return {"data": rows}, "\n".join(lines) or "no accounts"


def credits_grant(args: argparse.Namespace) -> Result:
    amount = parse_credits(args.amount)
    with open_services() as services:
        result = services.accounts.grant_credits(
            args.account, amount, args.reason, args.idempotency_key, args.expires_at
        )
    data = {
        "account_id": str(result.account_id),
        "amount": result.amount,
        "amount_credits": format_credits(result.amount),
        "credited": result.credited,
        "expires_at": args.expires_at.isoformat() if args.expires_at else None,
    }
    text = (
        f"granted {format_credits(amount)} credits"
        if result.credited
        else "not credited again: this idempotency key was used before"
    )
    if result.credited and args.expires_at:
        text += f", expiring at {args.expires_at.isoformat()}"
    return data, text


def credits_adjust(args: argparse.Namespace) -> Result:
    amount = parse_credits(args.amount, allow_negative=True)
    with open_services() as services:
        result = services.accounts.adjust_credits(args.account, amount, args.reason, args.idempotency_key)
    data = {
        "account_id": str(result.account_id),
        "requested": amount,
        "applied": result.amount,
        "applied_credits": format_credits(result.amount),
        "credited": result.credited,
    }
    if not result.credited:
        return data, "not applied again: this idempotency key was used before"
    return data, f"adjusted by {format_credits(result.amount)} credits" + (
        f" (asked {format_credits(amount)}; a debit never goes below zero)" if result.amount != amount else ""
    )


def holds_sweep(args: argparse.Namespace) -> Result:
    with open_services() as services:
        swept = sweep(services)
    return swept, f"released {swept['released']} expired hold(s), expired {swept['expired_grants']} grant(s)"


def keys_issue(args: argparse.Namespace) -> Result:
    with open_services() as services:
        issued = services.api_keys.issue_api_key(args.account, args.name, args.expires)
        data = {**api_key_json(services.ledger.get_api_key(issued.key_id)), "key": issued.plaintext}
    return data, f"key id {issued.key_id}\nAPI key (shown once): {issued.plaintext}"


def keys_revoke(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = api_key_json(services.api_keys.revoke_api_key(args.key_id))
    return data, f"key {data['id']} revoked"


def balance(args: argparse.Namespace) -> Result:
    with open_services() as services:
        data = read_balance(services, args.account)
    text = (
        f"{data['name']}: balance {data['balance_credits']}, held {data['held_credits']}, "
        f"available {data['available_credits']} credits"
    )
    if data.get("expiring"):
        text += f"; {data['expiring_credits']} expiring, the next at {data['next_expiry']}"
    return data, text


def projections_status(args: argparse.Namespace) -> Result:
    """Each read model's position, lag and state as committed (by any process); applies nothing."""
    with open_services() as services:
        data = plain(services.read_models.runner.status())
    return {"data": data}, "\n".join(_projection_line(row) for row in data)


def projections_rebuild(args: argparse.Namespace) -> Result:
    """Replay the read model(s) from zero; exit status 1 if one stops again (it still cannot
    apply an event)."""
    with open_services() as services:
        services.read_models.runner.rebuild(args.name)
        data = plain(services.read_models.runner.status())
    rebuilt = [row for row in data if args.name in (None, row["name"])]
    failed = any(row["state"] == "stopped" for row in rebuilt)
    return {"data": data}, "rebuilt:\n" + "\n".join(_projection_line(row) for row in rebuilt), 1 if failed else 0


def _projection_line(row: dict[str, Any]) -> str:
    line = f"{row['name']:<16} position {row['position']} of {row['max_notification_id']}, lag {row['lag']}"
    if row["state"] != "stopped":
        return f"{line}, running"
    return (
        f"{line}, STOPPED at event {row['stopped_at']} ({row['stopped_event']}) since {row['stopped_on']}: "
        f"{row['error']}\n{'':<16} fix the cause, then `tallyhub projections rebuild {row['name']}` "
        "or restart serve/worker to try it again"
    )


def _read_secret() -> str:
    secret = sys.stdin.readline().strip()
    if not secret:
        raise InvalidRequest("--api-key-stdin was given but standard input held no secret", param="api_key")
    return secret
