"""From a model name to the ordered upstream attempts that may serve it.

A model is ``PROVIDER/MODEL`` or an operator alias (a primary model and fallbacks).
Each target model is tried through its provider's usable credentials in weighted
random order; credentials cooling down (application/health.py: after a 429, or after a
failure rate, never after a single failure) are left out. The first attempt that the
provider accepts serves the request; the gateway moves on only on retryable failures
and only before the first byte reaches the caller (application/failover.py).

A target is built once per model, price-book version and provider read, and a route once
per model, credential and provider read (``KEPT_ROUTES`` of each): the hot path's
providers and price book come from the ledger's read cache, whose objects are never
mutated (a change is a newer object), so what is kept for the same objects is what would
be built again. Which credentials are usable, cooling or retired is still asked on every
request.
"""

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from application.health import RATE_LIMITED, CredentialHealth
from application.ledger import Ledger
from domain.errors import ModelNotFound, SecretError, UpstreamError
from domain.price_book import PriceBookVersion
from domain.pricing import ModelPrice
from domain.provider import Credential, Provider, UpstreamPolicy

log = logging.getLogger("tallyhub.routing")
DEFAULT_TOTAL_SECONDS = 300.0  # TALLYHUB_UPSTREAM_TIMEOUT_SECONDS's default (adapters/settings.py)
KEPT_ROUTES = 1024  # targets (by model) and routes (model, credential) kept; all forgotten when full


@dataclass(frozen=True)
class Route:
    """One upstream attempt: a model at a provider, through one credential."""

    model: str  # PROVIDER/MODEL, as priced
    provider: str
    kind: str
    base_url: str | None
    region: str | None
    upstream_model: str
    credential_id: str | None
    secret: str | None = field(repr=False)
    policy: UpstreamPolicy = UpstreamPolicy()  # the provider's timeouts and retries


@dataclass(frozen=True)
class Target:
    """A model that may serve the request, with its price (None: unpriced)."""

    model: str
    upstream_model: str
    provider: Provider = field(repr=False, compare=False)
    price: ModelPrice | None


class Router:
    """``default_total_seconds``: the whole exchange's bound for a provider that sets none
    (``TALLYHUB_UPSTREAM_TIMEOUT_SECONDS``); with the provider's own it makes a request's
    deadline, past which failover waits for no retry (application/failover.py)."""

    def __init__(
        self,
        ledger: Ledger,
        health: CredentialHealth,
        rng: random.Random | None = None,
        *,
        default_total_seconds: float = DEFAULT_TOTAL_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.health = health
        self.rng = rng or random.Random()
        self.default_total_seconds = default_total_seconds
        # (model, credential id) -> the provider and credential objects it was built from, and the route
        self._built: dict[tuple[str, str], tuple[Provider, Credential, Route]] = {}
        self._targets: dict[str, tuple[PriceBookVersion, Target]] = {}  # model -> the book it was priced by

    def total_seconds(self, route: Route) -> float:
        """The bound of ``route``'s whole upstream exchange."""
        return route.policy.timeout_total or self.default_total_seconds

    def targets(self, model: str, book: PriceBookVersion) -> list[Target]:
        """The primary target and the fallbacks, in order; raises ModelNotFound."""
        models = self.ledger.recent_aliases().get(model) if "/" not in model else None
        found = [self._target(name, book) for name in (models or [model])]
        targets = [target for target in found if target is not None]
        if not targets:
            raise ModelNotFound(f"the model {model!r} does not exist or you do not have access to it")
        return targets

    def routes(self, target: Target) -> Iterator[Route]:
        """Usable credentials of the target's provider, weighted random, cooling ones left out."""
        provider = target.provider
        credentials = provider.usable_credentials()
        if not credentials and not provider.credentials:
            yield self.route_with(target, None)  # a provider that needs no secret (Ollama)
            return
        unopened: SecretError | None = None
        yielded = False
        for credential in self._weighted_order(credentials):
            if self.health.cooldown(credential.credential_id) is not None:
                continue
            try:
                route = self._route(target, credential)
            except SecretError as exc:
                # Never send garbage upstream: leave a credential that will not open out.
                log.error(
                    "credential %s of provider %s cannot be opened with the configured master keys",
                    credential.credential_id,
                    provider.name,
                )
                unopened = exc
                continue
            yielded = True
            yield route
        if unopened is not None and not yielded:
            raise unopened

    def unavailable(self, targets: list[Target]) -> UpstreamError:
        """The error when no attempt could even start. While credentials cool down: 429
        ``upstream_rate_limited`` when every one of them cools because its provider said
        429, else 503 ``upstream_unavailable``; either way ``Retry-After`` is the soonest
        end of a cooldown. With no usable credential at all: 503 ``no_usable_credential``."""
        cooldowns = [self.health.cooldown(c.credential_id) for t in targets for c in t.provider.usable_credentials()]
        cooling = [cooldown for cooldown in cooldowns if cooldown is not None]
        if not cooling:
            return UpstreamError("no usable credential for this model", status=503, code="no_usable_credential")
        retry_after = str(max(1, math.ceil(min(cooldown.seconds for cooldown in cooling))))
        if all(cooldown.reason == RATE_LIMITED for cooldown in cooling):
            return UpstreamError(
                "every credential for this model is cooling down: the provider is rate limiting this gateway",
                status=429,
                code="upstream_rate_limited",
                retry_after=retry_after,
            )
        return UpstreamError(
            "every credential for this model is cooling down after repeated upstream failures",
            status=503,
            code="upstream_unavailable",
            retry_after=retry_after,
        )

    def _target(self, model: str, book: PriceBookVersion) -> Target | None:
        provider_name, _, upstream_model = model.partition("/")
        if not provider_name or not upstream_model:
            return None
        provider = self.ledger.recent_provider(provider_name)
        if provider is None or not provider.enabled:
            return None
        kept = self._targets.get(model)
        if kept is not None and kept[0] is book and kept[1].provider is provider:
            return kept[1]  # the same book and provider objects: the target built last time
        target = Target(model=model, upstream_model=upstream_model, provider=provider, price=book.price_for(model))
        if len(self._targets) >= KEPT_ROUTES:
            self._targets.clear()
        self._targets[model] = (book, target)
        return target

    def _route(self, target: Target, credential: Credential) -> Route:
        """``route_with``, kept while the target's provider and the credential are the same
        objects (the module docstring)."""
        key = (target.model, credential.credential_id)
        built = self._built.get(key)
        if built is not None and built[0] is target.provider and built[1] is credential:
            return built[2]
        route = self.route_with(target, credential)
        if len(self._built) >= KEPT_ROUTES:  # a model name is the caller's text: never an unbounded map
            self._built.clear()
        self._built[key] = (target.provider, credential, route)
        return route

    def route_with(self, target: Target, credential: Credential | None) -> Route:
        provider = target.provider
        return Route(
            model=target.model,
            provider=provider.name,
            kind=provider.kind,
            base_url=provider.base_url,
            region=provider.region,
            upstream_model=target.upstream_model,
            credential_id=credential.credential_id if credential else None,
            secret=self.ledger.credential_secret(provider, credential) if credential else None,
            policy=provider.policy,
        )

    def _weighted_order(self, credentials: list[Credential]) -> list[Credential]:
        """A weighted random permutation (Efraimidis–Spirakis keys u^(1/w))."""
        if len(credentials) < 2:
            return credentials  # one order only
        return sorted(credentials, key=lambda c: self.rng.random() ** (1.0 / c.weight), reverse=True)
