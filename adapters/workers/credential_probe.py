"""Re-probing credentials the gateway disabled because a provider refused them.

Every interval, each automatically disabled credential is checked with its adapter's
``probe(route)`` (a cheap authenticated call that costs no tokens). A credential the
provider accepts again is re-enabled through the ledger; one still refused stays
disabled. A credential whose adapter cannot tell (``probe`` answers None: no probe for
that provider, or no adapter for its kind) gets the circuit breaker's half-open state
instead: the credential is re-enabled for real traffic, and the next refusal disables
it again. Credentials an operator disabled are never touched.
"""

import logging

import anyio

from adapters.services import Services
from application.ports import ProviderAdapter
from application.routing import Target
from domain.provider import Credential, Provider

log = logging.getLogger("tallyhub.probe")


async def probe_disabled_credentials(services: Services) -> int:
    """One round; returns how many credentials were re-enabled."""
    providers = await anyio.to_thread.run_sync(services.ledger.list_providers)
    reenabled = 0
    for provider in providers:
        adapter = services.providers.get(provider.kind)
        for credential in provider.current_credentials(services.ledger.clock.now()):  # a retired one's secret is gone
            if credential.enabled or not credential.disabled_automatically:
                continue
            accepted = await _probe(services, adapter, provider, credential)
            if accepted is False:
                continue
            await anyio.to_thread.run_sync(
                services.provider_registry.enable_credential, provider.name, credential.credential_id
            )
            log.info(
                "credential %s of %s re-enabled (%s)",
                credential.credential_id,
                provider.name,
                "probe accepted" if accepted else "half-open",
            )
            reenabled += 1
    return reenabled


async def _probe(
    services: Services, adapter: ProviderAdapter | None, provider: Provider, credential: Credential
) -> bool | None:
    if adapter is None:
        return None
    target = Target(model=f"{provider.name}/probe", upstream_model="probe", provider=provider, price=None)
    route = services.router.route_with(target, credential)
    return await adapter.probe(route)


async def run_probes(services: Services, interval_seconds: float) -> None:
    while True:
        await anyio.sleep(interval_seconds)
        try:
            await probe_disabled_credentials(services)
        except Exception:  # a failed round must not stop the next one
            log.exception("credential probe round failed")
