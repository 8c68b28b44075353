"""Counting a request's input tokens without running it (``POST /v1/messages/count_tokens``,
Anthropic's token-counting endpoint).

Invariants:
- the caller is authenticated, allowed and routed exactly as for chat
  (``RequestBilling.prepare_request``): the same 401, 403 and 404, aliases included;
- nothing is held, charged or recorded in the ledger (Anthropic does not charge for it);
- the request counts against its key's and account's rate limits as a request of 0 tokens:
  one request of the requests-per-minute limit and a parallel slot while it runs, settled
  once however it ends; a refusal is a 429 like chat's (not recorded: there is no request);
- a model whose first target's provider counts tokens (its adapter has ``count_tokens``:
  Anthropic) is answered with the provider's count, through the failover of the targets
  that count (credentials, retries, cooldowns as for chat); any other model with the
  gateway's estimate, marked ``estimated``: domain/estimation.py's rule over the request's
  prompt bound, the figure an estimated charge of the same request would use.
"""

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from application.billing import OpenedRequest, RequestBilling, RequestShape
from application.failover import FailedAttempts, Failover
from application.ports import ProviderAdapter
from application.rate_limits import RequestLimits
from application.routing import Route, Target
from domain.errors import InvalidRequest, TallyhubError
from domain.estimation import estimated_usage


@runtime_checkable
class TokenCountingProvider(Protocol):
    """An adapter whose provider counts a Messages body's input tokens itself."""

    async def count_tokens(self, route: Route, body: dict[str, Any]) -> int: ...


@dataclass(frozen=True)
class TokenCount:
    input_tokens: int
    source: str  # "provider" (its own count) or "estimated"
    opened: OpenedRequest  # its rate-limit admission, for the answer's headers


class TokenCounts:
    """``billing`` authenticates and routes; ``failover`` reaches the counting providers;
    ``limits`` (None: no rate limits) admits and settles each count."""

    def __init__(self, billing: RequestBilling, failover: Failover, limits: RequestLimits | None) -> None:
        self.billing = billing
        self.failover = failover
        self.limits = limits

    async def count(self, api_key: str, shape: RequestShape, body: dict[str, Any], request_id: UUID) -> TokenCount:
        """The input tokens of ``body`` (the caller's Messages request, ``shape`` its chat
        shape) for the model it names. Raises what chat raises before its upstream call,
        RateLimitExceeded, and the provider's UpstreamError."""
        opened = self.billing.prepare_request(api_key, shape, request_id)
        if self.limits is None:
            return await self._count(opened, body)
        admitted = await self.limits.admit(opened.api_key_id, opened.account_id, lambda: 0)
        if admitted is None:
            return await self._count(opened, body)
        opened = opened.with_rate_limit(admitted)
        try:
            return await self._count(opened, body)
        except TallyhubError as error:
            if error.admission is None:
                error.admission = admitted.admission  # its answer's rate-limit headers
            raise
        finally:
            await self.limits.settle(admitted, 0)

    async def _count(self, opened: OpenedRequest, body: dict[str, Any]) -> TokenCount:
        counting = [target for target in opened.targets if self._counts(target)]
        if not counting or counting[0] is not opened.targets[0]:
            estimate = estimated_usage(input_chars=opened.shape.prompt_bytes, output_chars=0)
            return TokenCount(estimate.input_tokens, "estimated", opened)
        try:
            tokens, _, _ = await self.failover.start(replace(opened, targets=tuple(counting)), _provider_count, body)
        except FailedAttempts as failed:
            raise failed.error from None
        return TokenCount(tokens, "provider", opened)

    def _counts(self, target: Target) -> bool:
        return isinstance(self.failover.providers.get(target.provider.kind), TokenCountingProvider)


async def _provider_count(adapter: ProviderAdapter, route: Route, body: dict[str, Any]) -> int:
    if not isinstance(adapter, TokenCountingProvider):  # only the targets that count are tried
        raise InvalidRequest(f"provider {route.provider!r} ({route.kind}) does not count tokens", param="model")
    return await adapter.count_tokens(route, body)
