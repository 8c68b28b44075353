"""Readiness: whether this process can do its work now, as named checks over ports.

``serve`` answers ``GET /ready`` with it (adapters/http/health.py) and ``tallyhub worker
--health-port`` with its own checks (adapters/workers/health_server.py). A load balancer
polls them, so every check is one cheap read, or none.

Invariants:

- an answer never holds a secret: a failing check says what failed and the exception's
  class, never the exception's message (a driver's message may name a host, a user or a
  path); the message is logged, scrubbed of credentials, once when the check starts failing;
- a check that does I/O runs in a thread of its own and fails when it has not answered within
  the timeout; it is not started again while it still runs (the next poll waits for the same
  run), so a hung database holds at most one thread per check however often it is asked.
"""

import asyncio
import concurrent.futures
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("tallyhub.readiness")

DEFAULT_TIMEOUT_SECONDS = 2.0


# --- ports -------------------------------------------------------------------------------


class EventStore(Protocol):
    """The event store's recorder: its head is one indexed read."""

    def max_notification_id(self) -> int | None: ...


class Deployment(Protocol):
    """The Ledger: was the deployment opened with the master key?"""

    @property
    def deployment_loaded(self) -> bool: ...


class Running(Protocol):
    @property
    def running(self) -> bool: ...


class GroupCommit(Protocol):
    """The Ledger: its account writer, once ``start_group_commit`` made one."""

    @property
    def writer(self) -> Running | None: ...


class ProjectionState(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def lag(self) -> int: ...

    @property
    def state(self) -> str: ...

    @property
    def stopped_at(self) -> int | None: ...


class Projections(Protocol):
    """The projection runner: its thread, and every projection's position against the head."""

    @property
    def running(self) -> bool: ...

    def status(self) -> Sequence[ProjectionState]: ...


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    error: str | None = None  # what failed; never an exception's message
    details: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        answer: dict[str, object] = {"ok": self.ok}
        if self.error is not None:
            answer["error"] = self.error
        answer.update(self.details)
        return answer


@dataclass(frozen=True)
class ReadinessReport:
    checks: Mapping[str, CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.checks.values())

    def to_dict(self) -> dict[str, object]:
        """``{"status": "ok" | "unavailable", "checks": {name: {"ok": ..., "error"?: ..., ...}}}``"""
        return {
            "status": "ok" if self.ok else "unavailable",
            "checks": {name: result.to_dict() for name, result in self.checks.items()},
        }


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], CheckResult]
    failure: str  # what an exception from ``run`` means, e.g. "the event store cannot be queried"
    blocking: bool = False  # does I/O: run in a thread of its own, under the timeout


# --- the checks --------------------------------------------------------------------------


def store_check(store: EventStore) -> Check:
    def run() -> CheckResult:
        store.max_notification_id()
        return CheckResult(True)

    return Check("store", run, "the event store cannot be queried", blocking=True)


def master_key_check(deployment: Deployment) -> Check:
    def run() -> CheckResult:
        if deployment.deployment_loaded:
            return CheckResult(True)
        return CheckResult(False, "the deployment is not opened with the master key")

    return Check("master_key", run, "the deployment cannot be checked")


def account_writer_check(ledger: GroupCommit) -> Check:
    def run() -> CheckResult:
        writer = ledger.writer
        if writer is not None and writer.running:
            return CheckResult(True)
        return CheckResult(False, "the account writer (group commit) is not running")

    return Check("account_writer", run, "the account writer cannot be checked")


def read_models_check(projections: Projections, max_lag_events: int) -> Check:
    """Every projection runs (none stopped at an event), this process's runner polls, and
    none is more than ``max_lag_events`` notifications behind the event store's head."""

    def run() -> CheckResult:
        statuses = projections.status()
        lags = {status.name: status.lag for status in statuses}
        details = {"max_lag_events": max_lag_events, "lag": lags}
        stopped = [s for s in statuses if s.state != "running"]
        if stopped:
            where = ", ".join(f"{s.name} at event {s.stopped_at}" for s in stopped)
            return CheckResult(False, f"stopped projection(s): {where}", details)
        if not projections.running:
            return CheckResult(False, "the projection runner is not running", details)
        behind = sorted(name for name, lag in lags.items() if lag > max_lag_events)
        if behind:
            return CheckResult(False, f"lagging more than {max_lag_events} events: {', '.join(behind)}", details)
        return CheckResult(True, None, details)

    return Check("read_models", run, "the read models cannot be queried", blocking=True)


def running_check(name: str, part: Running, what: str) -> Check:
    """``part.running``, e.g. the worker's sweeps thread."""

    def run() -> CheckResult:
        return CheckResult(True) if part.running else CheckResult(False, f"{what} is not running")

    return Check(name, run, f"{what} cannot be checked")


# --- the service -------------------------------------------------------------------------


class Readiness:
    """Runs its checks (the blocking ones at once, each in its thread) and reports them."""

    def __init__(self, checks: Sequence[Check], *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.checks = list(checks)
        self.timeout_seconds = timeout_seconds
        self._running: dict[str, concurrent.futures.Future[CheckResult]] = {}
        self._guard = threading.Lock()
        self._failing: set[str] = set()

    async def evaluate(self) -> ReadinessReport:
        """From the event loop: never blocks it longer than a cheap check."""
        pending = {check.name: self._started(check) for check in self.checks if check.blocking}
        # wrapped, not shielded: asyncio.wait never cancels what it waits for, and a check
        # still running when the time is up is left to finish (its thread sets its result)
        waited = {name: asyncio.wrap_future(future) for name, future in pending.items()}
        if waited:
            await asyncio.wait(waited.values(), timeout=self.timeout_seconds)
        results = {}
        for check in self.checks:
            if not check.blocking:
                results[check.name] = self._run(check)
            elif waited[check.name].done():
                results[check.name] = waited[check.name].result()
            else:
                results[check.name] = self._timed_out(check)
        return self._report(results)

    def evaluate_blocking(self) -> ReadinessReport:
        """From a thread (the worker's health server)."""
        pending = {check.name: self._started(check) for check in self.checks if check.blocking}
        concurrent.futures.wait(pending.values(), timeout=self.timeout_seconds)
        results = {}
        for check in self.checks:
            if not check.blocking:
                results[check.name] = self._run(check)
            elif pending[check.name].done():
                results[check.name] = pending[check.name].result()
            else:
                results[check.name] = self._timed_out(check)
        return self._report(results)

    def _started(self, check: Check) -> "concurrent.futures.Future[CheckResult]":
        with self._guard:
            future = self._running.get(check.name)
            if future is not None and not future.done():
                return future  # still running from an earlier poll: wait for that run
            future = concurrent.futures.Future()
            self._running[check.name] = future

        def run() -> None:
            future.set_result(self._run(check))

        threading.Thread(target=run, name=f"tallyhub-ready-{check.name}", daemon=True).start()
        return future

    def _run(self, check: Check) -> CheckResult:
        try:
            return check.run()
        except Exception as exc:  # the check's answer: failed, with the class only
            if check.name not in self._failing:
                log.warning("readiness check %s failed: %s", check.name, describe(exc))
            return CheckResult(False, f"{check.failure} ({type(exc).__name__})")

    def _timed_out(self, check: Check) -> CheckResult:
        return CheckResult(False, f"{check.failure}: no answer within {self.timeout_seconds:g} s")

    def _report(self, results: dict[str, CheckResult]) -> ReadinessReport:
        with self._guard:
            for name, result in results.items():
                if result.ok and name in self._failing:
                    log.info("readiness check %s passes again", name)
                    self._failing.discard(name)
                elif not result.ok and name not in self._failing:
                    log.warning("readiness check %s fails: %s", name, result.error)
                    self._failing.add(name)
        return ReadinessReport(results)


_CREDENTIALS = re.compile(r"(password\s*=\s*)\S+|(://[^/@\s:]*:)[^@\s]*@", re.IGNORECASE)


def describe(exc: BaseException) -> str:
    """The exception's class and the first line of its message, any password in it replaced."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return _CREDENTIALS.sub(lambda m: (m.group(1) or m.group(2)) + "***" + ("@" if m.group(2) else ""), text)
