"""Starting an upstream call with failover: the request's targets are tried in order,
each through its credentials, moving on only when an attempt fails in a way another
attempt may not (connect error, timeout, 429, 5xx, an unreadable answer, a refused
credential) and only before anything has been sent to the caller. An exception that is
neither ``UpstreamError``, ``MalformedUpstreamAnswer`` nor ``InvalidRequest`` is a bug of
ours: it propagates at once, no other attempt made and nothing learned of the credential.
Each failed attempt is kept, to be recorded with the request; what each attempt
teaches (application/failover_policy.py) goes to credential health, or disables a
refused credential through the ledger."""

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio

from application.billing import Attempt, OpenedRequest
from application.failover_policy import learn, retryable
from application.ports import CredentialSwitch, ProviderAdapter
from application.routing import Route, Router
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, SecretError, TallyhubError, UpstreamError

T = TypeVar("T")
# One attempt: ``operation(adapter, route, body)``, e.g. ``adapter.start_chat(route, body)``.
Operation = Callable[[ProviderAdapter, Route, dict[str, Any]], Awaitable[T]]


class FailedAttempts(TallyhubError):
    """No attempt served the request: ``error`` is what the caller gets; ``route`` the last
    one tried (None if none could start) and ``attempts`` those that failed before it.

    Part of the error tree, but it stays here (it carries ``Attempt`` records) and never
    reaches the caller: application/calls.py records it and raises ``error`` instead."""

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
                    try:
                        result = await operation(provider, route, body)
                    except MalformedUpstreamAnswer:
                        raise bad_answer(route) from None
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
        final_error = last_error or self.router.unavailable(list(opened.targets))
        final_route = attempts[-1].route if attempts else None
        raise FailedAttempts(final_error, attempts[:-1] if attempts else [], final_route)

    async def _learn(self, route: Route, error: UpstreamError) -> None:
        refused = learn(self.router.health, route.credential_id, error)
        credential_id = route.credential_id
        if refused is not None and credential_id:
            await anyio.to_thread.run_sync(
                lambda: self.credentials.disable_credential(
                    route.provider, credential_id, reason=refused, automatic=True
                )
            )


def bad_answer(route: Route) -> UpstreamError:
    """An answer the provider garbled before the call started: its 502, like a 5xx (retried,
    counted against the credential). Only this error is: any other exception from an
    attempt is a bug of ours and propagates, untried elsewhere and unlearned."""
    return UpstreamError(
        f"provider {route.provider!r} sent an unreadable response", status=502, code="upstream_bad_response"
    )


def _next_route(routes: Iterator[Route], attempts: list[Attempt]) -> Route | None:
    try:
        return next(routes)
    except StopIteration:
        return None
    except SecretError as error:  # no credential of this provider opens: an operator fault
        raise FailedAttempts(error, attempts) from None
