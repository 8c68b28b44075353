"""Prometheus metrics of the gateway (``GET /metrics``, adapters/http/metrics.py).

Two kinds of figure:
- per request, counted when its record is durably saved (``GatewayMetrics.recorded``, the
  application's ``RequestObserver``): so the request and charge counters equal what the
  request log holds, and a request is counted once however it ended;
- read at scrape (``ScrapeCollector``): credentials cooling or disabled, open holds,
  projection lag, the group-commit writer's batches. Nothing of these is kept in between.

Labels are bounded and never name an account, a key or a secret: route (the endpoint),
provider and model (operator-defined names), status, error code (Tallyhub's own codes).

Under ``serve --workers N`` the counters and histograms are kept in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``, see ``multiproc_dir``):
each worker writes its own files there, and a scrape of any worker sums them. The figures
read at scrape come from the process that answers the scrape (they are shared state:
the store, Redis-shared credential health, or the writer of that process).
"""

import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.metrics_dir import MULTIPROC_ENV
from domain.request_record import RequestDetails

if TYPE_CHECKING:
    from adapters.services import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds; from a cached answer to a long stream
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class GatewayMetrics:
    """The request counters and histograms (a ``RequestObserver``), and the scrape."""

    def __init__(self) -> None:
        self.services: Services | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry
        self.requests = Counter(
            "tallyhub_requests",
            "Requests recorded, by route, provider, model, status and error code",
            ["route", "provider", "model", "status", "code"],
            registry=r,
        )
        self.tokens = Counter(
            "tallyhub_tokens",
            "Tokens charged, by kind (input, cached, output, reasoning)",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.charged = Counter(
            "tallyhub_charged_nanocredits", "Nanocredits charged to accounts", ["provider", "model"], registry=r
        )
        self.latency = Histogram(
            "tallyhub_request_latency_seconds",
            "Request latency up to its record (upstream call included)",
            ["route", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "tallyhub_upstream_ttfb_seconds",
            "Time to the provider's first byte",
            ["route", "provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "tallyhub_failovers",
            "Upstream attempts that failed before another served the request",
            ["route"],
            registry=r,
        )
        self.refusals = Counter(
            "tallyhub_refusals",
            "Requests refused before any upstream call: insufficient_credits, spend_cap_reached (402), "
            "rate_limit_exceeded (429)",
            ["code"],
            registry=r,
        )
        self.batch_size = Histogram(
            "tallyhub_group_commit_batch_size", "Account changes per group commit", buckets=BATCH_BUCKETS, registry=r
        )
        self.commit_seconds = Histogram(
            "tallyhub_group_commit_seconds",
            "Time to apply and save one group commit",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.failed_open = Counter(
            "tallyhub_rate_limit_failed_open",
            "Requests admitted without rate limits because Redis was unreachable (limits fail open)",
            registry=r,
        )
        self._failed_open_seen = 0  # the limiter's failed_open_total already counted
        self._failed_open_lock = threading.Lock()
        self.observer_errors = Counter(
            "tallyhub_metrics_errors", "Errors while counting a request (it was billed all the same)", registry=r
        )
        self.scrape = ScrapeCollector(lambda: self.services)
        # the labelled children, looked up once per label set (``labels`` costs a lock and a tuple each time)
        self._requests: dict[tuple[str, str, str, int, str], Any] = {}
        self._series: dict[tuple[str, str, str], _Series] = {}
        if not self.multiprocess:
            r.register(self.scrape)

    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        route, provider, model = details.endpoint, details.provider, details.model
        code = details.error_code or ""
        counted = self._requests.get((route, provider, model, details.status, code))
        if counted is None:
            counted = self.requests.labels(route, provider, model, str(details.status), code)
            self._requests[(route, provider, model, details.status, code)] = counted
        counted.inc()
        series = self._series.get((route, provider, model))
        if series is None:
            series = self._series[(route, provider, model)] = _Series(self, route, provider, model)
        usage = details.usage
        if usage is None:
            if code in REFUSAL_CODES:
                self.refusals.labels(code).inc()
        else:
            if usage.input_tokens:
                series.input_tokens.inc(usage.input_tokens)
            if usage.cached_input_tokens:
                series.cached_tokens.inc(usage.cached_input_tokens)
            if usage.output_tokens:
                series.output_tokens.inc(usage.output_tokens)
            if usage.reasoning_tokens:
                series.reasoning_tokens.inc(usage.reasoning_tokens)
        if details.charge:
            series.charged.inc(details.charge)
        series.latency.observe(details.latency_ms / 1000)
        if details.ttfb_ms is not None:
            series.ttfb.observe(details.ttfb_ms / 1000)
        if failed_attempts:
            series.failovers.inc(failed_attempts)
        if self.services is not None:
            self._count_failed_open(getattr(self.services.rate_limiter, "failed_open_total", 0))

    def _count_failed_open(self, total: int) -> None:
        """The Redis limiter counts its fail-open admissions in its process; carried into the
        counter here, on the next recorded request, so multiprocess mode sums the workers."""
        if total == self._failed_open_seen:
            return
        with self._failed_open_lock:
            if total > self._failed_open_seen:
                self.failed_open.inc(total - self._failed_open_seen)
                self._failed_open_seen = total

    def watch(self, services: "Services") -> None:
        """The services whose state the gauges read at scrape."""
        self.services = services

    def batch_committed(self, size: int, seconds: float) -> None:
        """The group-commit writer's hook (application/group_commit.py ``on_batch``)."""
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text of every metric: in multiprocess mode, summed over the workers."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # its __init__ is unannotated
        registry.register(self.scrape)
        return generate_latest(registry)


def scrape_exposition(services: "Services") -> Callable[[], bytes]:
    """The Prometheus text of the figures read at scrape alone (``ScrapeCollector``), for a
    process that serves no requests: ``tallyhub worker --health-port`` (its projections)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ScrapeCollector(lambda: services))
    return lambda: generate_latest(registry)


# refused before any upstream call, nothing charged: 402 (credit, spend cap) and 429 (a rate limit)
REFUSAL_CODES = frozenset({"insufficient_credits", "spend_cap_reached", "rate_limit_exceeded"})


class _Series:
    """The children of one route, provider and model."""

    def __init__(self, metrics: GatewayMetrics, route: str, provider: str, model: str) -> None:
        self.input_tokens = metrics.tokens.labels(provider, model, "input")
        self.cached_tokens = metrics.tokens.labels(provider, model, "cached")
        self.output_tokens = metrics.tokens.labels(provider, model, "output")
        self.reasoning_tokens = metrics.tokens.labels(provider, model, "reasoning")
        self.charged = metrics.charged.labels(provider, model)
        self.latency = metrics.latency.labels(route, provider, model)
        self.ttfb = metrics.ttfb.labels(route, provider, model)
        self.failovers = metrics.failovers.labels(route)


class ScrapeCollector(Collector):
    """Gauges read when Prometheus scrapes: each read is guarded, so one failing source
    (the store down) leaves the others and the counters answering."""

    def __init__(self, services_of: Callable[[], "Services | None"]) -> None:
        self.services_of = services_of

    def collect(self) -> Iterator[Metric]:
        services = self.services_of()
        if services is None:
            return
        for read in (_credentials, _open_holds, _projection_lag, _webhook_deliveries):
            try:
                yield from read(services)
            except Exception:  # noqa: BLE001 - a source that cannot be read is left out of this scrape
                continue

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape only: nothing to check at registration


def _credentials(services: "Services") -> Iterator[Metric]:
    cooling = GaugeMetricFamily(
        "tallyhub_credentials_cooling", "Credentials cooling down after failures or a 429", labels=["provider"]
    )
    disabled = GaugeMetricFamily("tallyhub_credentials_disabled", "Credentials disabled", labels=["provider"])
    health = services.router.health
    for provider in services.ledger.list_providers():
        credentials: list[Any] = list(provider.credentials)
        cooling.add_metric(
            [provider.name], sum(1 for c in credentials if c.enabled and health.cooldown(c.credential_id) is not None)
        )
        disabled.add_metric([provider.name], sum(1 for c in credentials if not c.enabled))
    yield cooling
    yield disabled


def _open_holds(services: "Services") -> Iterator[Metric]:
    if services.read_models is None:
        return
    balances = services.read_models.balances.list_balances()
    yield GaugeMetricFamily(
        "tallyhub_open_holds_nanocredits",
        "Credit held by open holds, all accounts (the balances read model)",
        value=sum(b.held for b in balances),
    )


def _webhook_deliveries(services: "Services") -> Iterator[Metric]:
    """Webhook deliveries by status, from the delivery table every process shares (application/deliveries.py)."""
    deliveries = GaugeMetricFamily(
        "tallyhub_webhook_deliveries", "Webhook deliveries by status (pending, delivered, failed)", labels=["status"]
    )
    counts = services.deliveries.rows.counts()
    for status in ("pending", "delivered", "failed"):
        deliveries.add_metric([status], counts.get(status, 0))
    yield deliveries


def _projection_lag(services: "Services") -> Iterator[Metric]:
    if services.read_models is None:
        return
    lag = GaugeMetricFamily(
        "tallyhub_projection_lag_events",
        "Notifications after a projection's position: events it follows still to apply, and others not yet passed",
        labels=["projection"],
    )
    stopped = GaugeMetricFamily("tallyhub_projection_stopped", "1 when a projection is stopped", labels=["projection"])
    for status in services.read_models.runner.status():
        lag.add_metric([status.name], status.lag)
        stopped.add_metric([status.name], 1 if status.state == "stopped" else 0)
    yield lag
    yield stopped
