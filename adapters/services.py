"""What the gateway's handlers and commands use, built by adapters/bootstrap.py."""

from dataclasses import dataclass, field
from typing import Any

from adapters.settings import Settings
from application.accounts import Accounts
from application.alerts import AlertThresholds
from application.api_keys import ApiKeys
from application.billing import RequestBilling
from application.calls import BilledCalls
from application.deliveries import DeliveryOutbox
from application.jobs import Jobs
from application.ledger import Ledger
from application.pending_settlements import PendingSettlements
from application.ports import ProviderAdapter, RateLimiter
from application.prices import Prices
from application.providers import ProviderRegistry
from application.rate_limits import RateLimitScopes, RequestLimits
from application.routing import Router
from application.shutdown import Shutdown
from application.stored_responses import StoredResponses
from application.token_count import TokenCounts
from application.webhooks import Webhooks


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    billing: RequestBilling
    router: Router  # credential health: router.health (one object, one way to reach it)
    read_models: Any  # projections.ReadModels
    providers: dict[str, ProviderAdapter] = field(default_factory=dict)  # kind -> adapter, filled by the lifespan
    wake: Any = None  # server mode: the RedisCommitPublisher the ledger notifies after each commit
    health_sync: Any = None  # server mode: the RedisHealthSync sharing credential health (started by serve)
    metrics: Any = None  # adapters/metrics.py GatewayMetrics: GET /metrics, told of each request by billing
    access_log: Any = None  # adapters/access_log.py JsonAccessLog, None when TALLYHUB_ACCESS_LOG=off
    rate_limiter: RateLimiter | None = None  # None: no rate limits (bootstrap.build_rate_limiter gives one)
    calls: BilledCalls = field(init=False)  # the billed call every API endpoint runs
    accounts: Accounts = field(init=False)  # accounts and credit
    prices: Prices = field(init=False)  # price-book versions and aliases
    provider_registry: ProviderRegistry = field(init=False)  # providers and their credentials
    api_keys: ApiKeys = field(init=False)  # issuing, revoking and rotating API keys
    shutdown: Shutdown = field(init=False)  # serve's graceful shutdown (the drain SIGTERM starts)
    pending_settlements: PendingSettlements = field(init=False)  # served calls' settlements waiting for the store
    token_counts: TokenCounts = field(init=False)  # POST /v1/messages/count_tokens
    responses: StoredResponses = field(init=False)  # stored /v1/responses (off unless TALLYHUB_RESPONSES_STORE=on)
    webhooks: Webhooks = field(init=False)  # webhook subscriptions (application/webhooks.py)
    alert_thresholds: AlertThresholds = field(init=False)  # accounts' balance.low thresholds
    deliveries: DeliveryOutbox = field(init=False)  # the NoticeOutbox: signed, retried webhook deliveries
    jobs: Jobs = field(init=False)  # background exports and replays (application/jobs.py)

    def __post_init__(self) -> None:
        scopes = RateLimitScopes(self.ledger)
        limits = RequestLimits(self.rate_limiter, scopes) if self.rate_limiter is not None else None
        self.accounts = Accounts(self.ledger, limits_changed=scopes.forget)
        self.prices = Prices(self.ledger)
        self.provider_registry = ProviderRegistry(self.ledger)
        self.api_keys = ApiKeys(self.ledger)
        self.webhooks = Webhooks(self.ledger)
        self.alert_thresholds = AlertThresholds(self.ledger)
        self.shutdown = Shutdown(self.settings.shutdown_grace_seconds)
        self.pending_settlements = PendingSettlements()
        self.shutdown.pending = self.pending_settlements  # they get the grace period too
        self.calls = BilledCalls(
            self.billing,
            self.router,
            self.providers,
            self.provider_registry,
            limits,
            shutdown=self.shutdown,
            pending=self.pending_settlements,
        )
        self.token_counts = TokenCounts(self.billing, self.calls.failover, limits)
        # imported here: the module loads the PostgreSQL driver, which a bare CLI start does not need
        from adapters.persistence.response_store import build_stored_responses

        self.responses = build_stored_responses(self.settings, self.ledger)
        from adapters.persistence.delivery_store import build_delivery_outbox

        self.deliveries = build_delivery_outbox(self.ledger)
        from adapters.workers.jobs import build_jobs

        self.jobs = build_jobs(self)

    def close(self) -> None:
        if self.wake is not None:
            self.wake.close()  # announces this process's last commits before it goes
        if self.health_sync is not None:
            self.health_sync.close()
        if self.read_models is not None:
            self.read_models.close()
        self.ledger.close()
