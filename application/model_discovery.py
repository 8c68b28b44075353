"""Model discovery (``tallyhub models discover PROVIDER``, ``GET /admin/v1/providers/{name}/models``):
the models a provider itself lists, asked with the operator's stored credential, each
marked against the price book and the aliases.

Marks, for ``PROVIDER/MODEL`` (PROVIDER the registered name, MODEL the provider's id):
- ``priced``: the price-book version in effect has a price for it;
- ``routable``: callers reach it today: its provider is enabled and has a usable
  credential (or needs none), and it is priced or an alias routes to it (in credits mode
  an unpriced model is never sold, so there it must be priced);
- ``mark``: one word for the operator: ``priced``, else ``routable`` (reached through an
  alias without a price of its own: track mode), else ``unpriced``.

Invariants:
- discovery is read-only: nothing is saved, no credential's health or state changes;
- credentials are tried in their recorded order; the next one only after the provider
  refused the one before (``upstream_auth_failed``); any other failure, or the last
  refusal, is raised as the provider's ``UpstreamError`` (it names the provider and the
  status and never contains the secret: adapters/providers/errors.py ``redact``);
- a model listed twice is shown once (the first listing wins).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from application.ledger import Ledger
from application.routing import Route, Router, Target
from domain.errors import InvalidRequest, SecretError, UpstreamError
from domain.price_book import PriceBookVersion
from domain.provider import KINDS_WITHOUT_SECRET, Provider

MARKS = ("priced", "routable", "unpriced")


@dataclass(frozen=True)
class ProviderModel:
    """One model as its provider lists it. ``details``: what else the provider says of it
    (creation time, modalities, its own prices...), JSON-ready, for display only."""

    id: str
    display_name: str | None = None
    context_window: int | None = None  # tokens of input the provider says it takes
    max_output_tokens: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelLister(Protocol):
    """An adapter whose provider lists its models."""

    async def list_models(self, route: Route) -> list[ProviderModel]: ...


@dataclass(frozen=True)
class DiscoveredModel:
    model: str  # PROVIDER/MODEL
    listed: ProviderModel
    priced: bool
    routable: bool
    aliases: tuple[str, ...]  # the aliases that route to it

    @property
    def mark(self) -> str:
        return "priced" if self.priced else "routable" if self.routable else "unpriced"


@dataclass(frozen=True)
class DiscoveryPlan:
    """What discovery read from the store before asking the provider."""

    provider: Provider = field(repr=False)
    routes: tuple[Route, ...] = field(repr=False)  # one per usable credential, in recorded order
    book: PriceBookVersion = field(repr=False)
    aliases: Mapping[str, list[str]] = field(repr=False)
    mode: str  # billing mode: "credits" or "track"

    @property
    def reachable(self) -> bool:
        """Could a request be routed to this provider at all?"""
        return self.provider.enabled and bool(self.routes)


@dataclass(frozen=True)
class Discovery:
    provider: str
    kind: str
    enabled: bool
    price_book_version: int
    mode: str
    models: tuple[DiscoveredModel, ...]

    def count(self, mark: str) -> int:
        return sum(1 for model in self.models if model.mark == mark)


class ModelDiscovery:
    """``plan`` reads the store (synchronous: call it off the event loop in a server);
    ``discover`` asks the provider through the adapter for its kind."""

    def __init__(self, ledger: Ledger, router: Router, *, mode: str) -> None:
        self.ledger = ledger
        self.router = router
        self.mode = mode

    def plan(self, provider_name: str) -> DiscoveryPlan:
        """The provider (ProviderNotFound), its usable credentials opened as routes, the
        price-book version in effect and the aliases. Raises UpstreamError 503
        ``no_usable_credential`` when it has credentials but none usable, and SecretError
        when none of them opens with the configured master keys."""
        provider = self.ledger.get_provider(provider_name)
        book = self.ledger.price_book().effective(self.ledger.clock.now())
        aliases = self.ledger.catalog().aliases
        return DiscoveryPlan(provider, self._routes(provider), book, aliases, self.mode)

    async def discover(self, plan: DiscoveryPlan, adapters: Mapping[str, Any]) -> Discovery:
        """Ask the provider for its models and mark each; raises the provider's UpstreamError."""
        provider = plan.provider
        lister = adapters.get(provider.kind)
        if not isinstance(lister, ModelLister):
            raise InvalidRequest(f"provider {provider.name!r} ({provider.kind}) cannot list its models", param="name")
        if not plan.routes:
            raise UpstreamError(
                f"provider {provider.name!r} has no usable credential to list its models with",
                status=503,
                code="no_usable_credential",
            )
        listed = await _first_accepted(lister, plan.routes)
        return Discovery(
            provider=provider.name,
            kind=provider.kind,
            enabled=provider.enabled,
            price_book_version=plan.book.number,
            mode=plan.mode,
            models=tuple(marked(plan, listed)),
        )

    def _routes(self, provider: Provider) -> tuple[Route, ...]:
        target = Target(model=f"{provider.name}/*", upstream_model="", provider=provider, price=None)
        credentials = provider.usable_credentials(self.ledger.clock.now())
        if not credentials:
            needs_none = provider.kind in KINDS_WITHOUT_SECRET and not provider.credentials
            return (self.router.route_with(target, None),) if needs_none else ()
        routes: list[Route] = []
        unopened: SecretError | None = None
        for credential in credentials:
            try:
                routes.append(self.router.route_with(target, credential))
            except SecretError as exc:
                unopened = exc
        if not routes and unopened is not None:
            raise unopened
        return tuple(routes)


async def _first_accepted(lister: ModelLister, routes: tuple[Route, ...]) -> list[ProviderModel]:
    refused: UpstreamError | None = None
    for route in routes:
        try:
            return await lister.list_models(route)
        except UpstreamError as error:
            if error.code != "upstream_auth_failed":
                raise
            refused = error
    assert refused is not None  # routes is never empty here
    raise refused


def marked(plan: DiscoveryPlan, listed: list[ProviderModel]) -> list[DiscoveredModel]:
    """Each listed model with its marks, sorted by id, duplicates dropped."""
    name = plan.provider.name
    reached_by: dict[str, list[str]] = {}
    for alias, targets in sorted(plan.aliases.items()):
        for target in dict.fromkeys(targets):
            reached_by.setdefault(target, []).append(alias)
    models: dict[str, DiscoveredModel] = {}
    for item in listed:
        model = f"{name}/{item.id}"
        if model in models:
            continue
        priced = model in plan.book.prices
        aliases = tuple(reached_by.get(model, ()))
        sold = priced or (bool(aliases) and plan.mode != "credits")
        models[model] = DiscoveredModel(model, item, priced, plan.reachable and sold, aliases)
    return [models[model] for model in sorted(models)]
