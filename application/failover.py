"""Starting an upstream call with failover: the request's targets are tried in order,
each through its credentials, moving on only when an attempt fails in a way another
attempt may not (connect error, timeout, 429, 5xx, an unreadable answer, a refused
credential) and only before anything has been sent to the caller. An exception that is
neither ``UpstreamError``, ``MalformedUpstreamAnswer`` nor ``InvalidRequest`` is a bug of
ours: it propagates at once, no other attempt made and nothing learned of the credential.
Each failed attempt is kept, to be recorded with the request; what each attempt
teaches (application/failover_policy.py) goes to credential health, or disables a
refused credential through the ledger.

Before moving on, a retryable failure is retried through the same credential as often as
its provider's policy allows (``UpstreamPolicy.retries``), after the wait
``failover_policy.retry_delay`` asks for, through the injected ``sleep`` (and random
source): every retry is an attempt like the others, recorded when it fails (with its
``retry`` number), and the request is still charged once, for the attempt that served it.
A wait that would end after the request's deadline (its arrival plus the provider's total
timeout, ``Router.total_seconds``) is not taken: the next credential or target is tried
instead. Nothing has reached the caller while this runs, so a stream is never retried once
its first byte was sent. A caller gone during a wait cancels it like any attempt."""

import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio

from application.billing import Attempt, OpenedRequest
from application.failover_policy import learn, retry_delay, retryable
from application.ports import CredentialSwitch, ProviderAdapter
from application.routing import Route, Router
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, SecretError, TallyhubError, UpstreamError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
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

    def __init__(
        self,
        router: Router,
        providers: Mapping[str, ProviderAdapter],
        credentials: CredentialSwitch,
        *,
        sleep: Sleep = anyio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.providers = providers  # kind -> adapter; filled by the app's lifespan
        self.credentials = credentials
        self.sleep = sleep  # the backoff waits (tests observe them without waiting)
        self.rng = rng or random.Random()  # the backoff's jitter
        self.clock = clock  # time.monotonic, as OpenedRequest.started

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
                retry = 0
                while True:
                    started = time.monotonic()
                    try:
                        try:
                            result = await operation(provider, route, body)
                        except MalformedUpstreamAnswer:
                            raise bad_answer(route) from None
                    except UpstreamError as error:
                        latency_ms = round((time.monotonic() - started) * 1000, 3)
                        attempts.append(Attempt(route, error.status, error.code, latency_ms, retry))
                        await self._learn(route, error)
                        if not retryable(error):
                            raise FailedAttempts(error, attempts[:-1], route) from None
                        last_error = error
                        delay = self._retry_delay(opened, route, error, retry)
                        if delay is None:
                            break  # the next credential or target
                        await self.sleep(delay)
                        retry += 1
                        continue
                    except InvalidRequest as error:
                        raise FailedAttempts(error, attempts, route) from None
                    learn(self.router.health, route.credential_id, None)
                    return result, route, tuple(attempts)
        final_error = last_error or self.router.unavailable(list(opened.targets))
        final_route = attempts[-1].route if attempts else None
        raise FailedAttempts(final_error, attempts[:-1] if attempts else [], final_route)

    def _retry_delay(self, opened: OpenedRequest, route: Route, error: UpstreamError, retry: int) -> float | None:
        """The wait before retrying ``route`` after ``error`` ended its attempt ``retry``; None
        to move on (not retryable there, no retry left, or the wait would end past the deadline)."""
        delay = retry_delay(error, retry, route.policy, self.rng)
        if delay is None:
            return None
        deadline = opened.started + self.router.total_seconds(route)
        return delay if self.clock() + delay < deadline else None

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
