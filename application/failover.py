"""Starting an upstream call with failover: the request's targets are tried in order,
each through its credentials, moving on only when an attempt fails in a way another
attempt may not (connect error, timeout, 429, 5xx, a refused credential) and only
before anything has been sent to the caller. Each failed attempt is kept, to be
recorded with the request; what each attempt teaches (application/failover_policy.py)
goes to credential health, or disables a refused credential through the ledger."""

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio

from application.billing import Attempt, OpenedRequest
from application.failover_policy import learn, retryable
from application.ports import CredentialSwitch, ProviderAdapter
from application.routing import Route, Router
from domain.errors import InvalidRequest, SecretError, UpstreamError

T = TypeVar("T")
# One attempt: ``operation(adapter, route, body)``, e.g. ``adapter.start_chat(route, body)``.
Operation = Callable[[ProviderAdapter, Route, dict[str, Any]], Awaitable[T]]


class FailedAttempts(Exception):
    """No attempt served the request: ``error`` is what the caller gets; ``route`` the last
    one tried (None if none could start) and ``attempts`` those that failed before it."""

    def __init__(self, error: Exception, attempts: list[Attempt], route: Route | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = tuple(attempts)
        self.route = route


class Failover:
    """Learns into the health the router routes by (``router.health``): one source of truth."""

    def __init__(self, router: Router, providers: Mapping[str, ProviderAdapter], credentials: CredentialSwitch) -> None:
        self.router = router
        self.providers = providers  # kind -> adapter; filled by the app's lifespan
        self.credentials = credentials

    async def start(
        self, opened: OpenedRequest, operation: Operation[T], body: dict[str, Any]
    ) -> tuple[T, Route, tuple[Attempt, ...]]:
        """The result of the first attempt a provider accepted; raises FailedAttempts otherwise."""
        attempts: list[Attempt] = []
        last_error: UpstreamError | None = None
        for target in opened.targets:
            routes = self.router.routes(target)  # lazy: a credential is opened only when it is tried
            while (route := _next_route(routes, attempts)) is not None:
                provider = self.providers.get(route.kind)
                if provider is None:
                    raise FailedAttempts(
                        InvalidRequest(f"providers of kind {route.kind!r} are not supported by this version"), attempts
                    )
                started = time.monotonic()
                try:
                    result = await operation(provider, route, body)
                except UpstreamError as error:
                    attempts.append(
                        Attempt(route, error.status, error.code, round((time.monotonic() - started) * 1000, 3))
                    )
                    await self._learn(route, error)
                    if not retryable(error):
                        raise FailedAttempts(error, attempts[:-1], route) from None
                    last_error = error
                    continue
                except InvalidRequest as error:
                    raise FailedAttempts(error, attempts, route) from None
                learn(self.router.health, route.credential_id, None)
                return result, route, tuple(attempts)
        error = last_error or self.router.unavailable(list(opened.targets))
        final_route = attempts[-1].route if attempts else None
        raise FailedAttempts(error, attempts[:-1] if attempts else [], final_route)

    async def _learn(self, route: Route, error: UpstreamError) -> None:
        refused = learn(self.router.health, route.credential_id, error)
        if refused is not None and route.credential_id:
            await anyio.to_thread.run_sync(
                lambda: self.credentials.disable_credential(
                    route.provider, route.credential_id, reason=refused, automatic=True
                )
            )


def _next_route(routes: Iterator[Route], attempts: list[Attempt]) -> Route | None:
    try:
        return next(routes)
    except StopIteration:
        return None
    except SecretError as error:  # no credential of this provider opens: an operator fault
        raise FailedAttempts(error, attempts) from None
