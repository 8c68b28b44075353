"""``tallyhub models discover PROVIDER``: the models a provider itself lists, asked with the
operator's stored credential, each marked ``priced`` / ``routable`` / ``unpriced``
(application/model_discovery.py). ``discovery_json`` is also the answer of the admin API's
``GET /admin/v1/providers/{name}/models`` (adapters/http/admin_models.py). Read-only:
nothing is recorded. Its flags are in adapters/cli/table.py."""

import argparse
import asyncio
from typing import Any

from adapters.cli.commands import open_services
from adapters.services import Services
from application.model_discovery import DiscoveredModel, Discovery, DiscoveryPlan, ModelDiscovery

Result = tuple[Any, str]


def model_discovery(services: Services) -> ModelDiscovery:
    return ModelDiscovery(services.ledger, services.router, mode=services.settings.billing_mode)


def discovery_json(discovery: Discovery) -> dict[str, Any]:
    models = discovery.models
    return {
        "provider": discovery.provider,
        "kind": discovery.kind,
        "enabled": discovery.enabled,
        "billing_mode": discovery.mode,
        "price_book_version": discovery.price_book_version,
        "counts": {
            "listed": len(models),
            "priced": sum(1 for model in models if model.priced),
            "routable": sum(1 for model in models if model.routable),
            "unpriced": sum(1 for model in models if not model.priced),
        },
        "data": [model_json(model) for model in models],
    }


def model_json(model: DiscoveredModel) -> dict[str, Any]:
    listed = model.listed
    shown: dict[str, Any] = {
        "model": model.model,
        "upstream_model": listed.id,
        "mark": model.mark,
        "priced": model.priced,
        "routable": model.routable,
        "aliases": list(model.aliases),
    }
    if listed.display_name is not None:
        shown["display_name"] = listed.display_name
    if listed.context_window is not None:
        shown["context_window"] = listed.context_window
    if listed.max_output_tokens is not None:
        shown["max_output_tokens"] = listed.max_output_tokens
    if listed.details:
        shown["provider_details"] = dict(listed.details)
    return shown


def discovery_text(document: dict[str, Any]) -> str:
    counts = document["counts"]
    lines = [
        f"provider {document['provider']} ({document['kind']}{'' if document['enabled'] else ', disabled'}): "
        f"{counts['listed']} models listed, {counts['priced']} priced, {counts['routable']} routable, "
        f"{counts['unpriced']} unpriced (price book version {document['price_book_version']}, "
        f"{document['billing_mode']} mode)"
    ]
    for row in document["data"]:
        limits = f"context {row.get('context_window', '-')}  output {row.get('max_output_tokens', '-')}"
        aliases = f"  aliases {','.join(row['aliases'])}" if row["aliases"] else ""
        lines.append(f"{row['mark']:<9} {row['model']}  {limits}{aliases}")
    return "\n".join(lines)


async def listed_by_provider(services: Services, discovery: ModelDiscovery, plan: DiscoveryPlan) -> Discovery:
    """Ask the provider with adapters of the command's own (the gateway's are its lifespan's)."""
    import aiohttp

    from adapters.providers.registry import build_providers

    async with aiohttp.ClientSession() as session:
        return await discovery.discover(plan, build_providers(session, services.settings))


def discover(args: argparse.Namespace) -> Result:
    with open_services() as services:
        discovery = model_discovery(services)
        plan = discovery.plan(args.provider)
        document = discovery_json(asyncio.run(listed_by_provider(services, discovery, plan)))
    return document, discovery_text(document)
