"""A real Tallyhub store for the dashboard tests, billed the way the gateway bills.

``seed_store`` runs ``tallyhub init``'s ``initialise``, then a real ``Ledger`` and
``RequestBilling`` (credits mode) serve a fixed, seeded history spread over the last
three weeks, and the projections are caught up — so the dashboard reads the very tables
the gateway would leave. Event timestamps follow a ``FakeClock``: eventsourcing stamps
events with ``CanCreateTimestamp.create_timestamp``, which is pointed at the clock only
while seeding. Rates are whole nanocredits per token, so every charge is exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from adapters.bootstrap import build_ledger, build_read_models, initialise
from adapters.http.errors import status_of
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Attempt, RequestBilling, RequestShape
from application.health import CredentialHealth
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.attribution import Attribution
from domain.errors import InsufficientCredits
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.support.event_times import events_stamped_by

GPT = "openai/gpt-test"
CLAUDE = "anthropic/claude-test"
NANO = 10**9
GPT_COST = price_from_credits(input="1", output="4", cached_input="0.5")  # what the provider charges; Claude: unknown


@dataclass(frozen=True)
class SeededRequest:
    request_id: UUID
    at: datetime
    account: str
    model: str
    outcome: str  # completed | failed
    status: int
    charge: int
    cost: int
    input_tokens: int
    output_tokens: int
    provider_cost: int | None = None  # what the billed record says the provider charges (None: no cost rates)
    user: str | None = None  # the attribution it was sent with (attribution_of)
    tags: tuple[str, ...] = ()


@dataclass
class Seeded:
    settings: Settings
    admin_key: str
    now: datetime
    requests: list[SeededRequest] = field(default_factory=list)
    account_ids: dict[str, UUID] = field(default_factory=dict)
    failover_request: UUID | None = None
    open_hold_request: UUID | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {"TALLYHUB_DATA_DIR": str(self.settings.data_dir)}
        if self.settings.database_url:
            env["TALLYHUB_DATABASE_URL"] = self.settings.database_url
        return env

    def in_window(self, since: datetime, until: datetime) -> list[SeededRequest]:
        return [r for r in self.requests if since <= r.at < until]


def empty_store(data_dir: Path, database_url: str | None = None) -> Seeded:
    """``tallyhub init`` only: tables exist, nothing recorded."""
    settings = Settings(data_dir=data_dir, database_url=database_url)
    done = initialise(settings)
    assert done.admin_key
    return Seeded(settings, done.admin_key, datetime.now(UTC))


def seed_store(data_dir: Path, database_url: str | None = None, *, now: datetime | None = None) -> Seeded:
    seeded = empty_store(data_dir, database_url)
    now = (now or seeded.now).astimezone(UTC)
    seeded.now = now
    clock = FakeClock(now - timedelta(days=21))
    with events_stamped_by(clock.now):
        ledger = build_ledger(seeded.settings, clock=clock)
        try:
            ledger.load_deployment()
            _history(seeded, ledger, clock)
            read_models = build_read_models(seeded.settings, ledger)
            read_models.runner.catch_up()
            read_models.close()
        finally:
            ledger.close()
    return seeded


def _history(seeded: Seeded, ledger, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20261101)
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-dashboard-seed-0001"
    )
    ProviderRegistry(ledger).add_credential("openai", "sk-dashboard-seed-0002")
    ProviderRegistry(ledger).register_provider(
        "anthropic", "anthropic", base_url="http://127.0.0.1:9", region=None, secret="sk-ant-dashboard-seed-0003"
    )
    Prices(ledger).set_price(
        GPT, replace(price_from_credits(input="2", output="8", cached_input="1"), provider_cost=GPT_COST)
    )
    Prices(ledger).set_price(CLAUDE, price_from_credits(input="3", output="15"))
    for name, amount in (("acme", 500 * NANO), ("globex", NANO // 25)):
        seeded.account_ids[name] = Accounts(ledger).create_account(name).id
        Accounts(ledger).grant_credits(name, amount, reason="seed")
    keys = {
        ("acme", "prod"): ApiKeys(ledger).issue_api_key("acme", name="prod").plaintext,
        ("acme", "ci"): ApiKeys(ledger).issue_api_key("acme", name="ci").plaintext,
        ("globex", "main"): ApiKeys(ledger).issue_api_key("globex", name="main").plaintext,
    }
    billing = RequestBilling(
        ledger,
        Router(ledger, CredentialHealth(), rng=random.Random(7)),
        mode="credits",
        hold_ttl=timedelta(minutes=15),
        status_of=status_of,
    )

    start = clock.current
    times = sorted(start + timedelta(hours=rng.uniform(1, 20 * 24)) for _ in range(60))
    times += sorted(seeded.now - timedelta(minutes=rng.uniform(5, 23 * 60)) for _ in range(16))
    repriced = False
    for index, at in enumerate(sorted(times)):
        if not repriced and at > seeded.now - timedelta(days=5):
            clock.current = at - timedelta(minutes=1)
            Prices(ledger).set_price(
                GPT, replace(price_from_credits(input="2", output="10", cached_input="1"), provider_cost=GPT_COST)
            )  # version 3
            repriced = True
        clock.current = at
        account, key_name = (
            ("globex", "main") if index % 9 == 4 else ("acme", "ci") if index % 4 == 1 else ("acme", "prod")
        )
        model = CLAUDE if index % 3 == 2 else GPT
        _one_request(seeded, billing, clock, rng, keys[(account, key_name)], account, model, index)

    clock.current = seeded.now - timedelta(minutes=1)
    still_open = billing.open_request(keys[("acme", "prod")], _shape(GPT, stream=True))
    seeded.open_hold_request = still_open.request_id


def _shape(model: str, *, stream: bool, attribution: Attribution | None = None) -> RequestShape:
    return RequestShape(
        model=model, prompt_bytes=4000, max_output_tokens=1000, choices=1, stream=stream, attribution=attribution
    )


def attribution_of(index: int) -> Attribution | None:
    """What seeded request ``index`` was attributed to: every third nothing, the others an end
    user of three and one tag of two (the even ones a second tag too)."""
    if index % 3 == 0:
        return None
    tags = ("team:ml", "batch") if index % 2 == 0 else ("team:web",)
    return Attribution(user=f"user-{index % 4}", tags=tags)


def _one_request(
    seeded: Seeded,
    billing: RequestBilling,
    clock: FakeClock,
    rng: random.Random,
    key: str,
    account: str,
    model: str,
    index: int,
) -> None:
    stream = index % 2 == 0
    at = clock.current
    request_id = uuid4()
    sent = attribution_of(index)
    who: dict[str, Any] = {"user": sent.user, "tags": sent.tags} if sent else {}
    try:
        opened = billing.open_request(key, _shape(model, stream=stream, attribution=sent), request_id=request_id)
    except InsufficientCredits:  # recorded as a failed request (402) by open_request
        seeded.requests.append(SeededRequest(request_id, at, account, model, "failed", 402, 0, 0, 0, 0, **who))
        return
    # what the gateway measures; the request took this long (latency is measured from ``started``)
    latency_s = rng.uniform(0.25, 2.5)
    opened = replace(opened, started=opened.started - latency_s)
    route = next(billing.router.routes(opened.targets[0]))
    ttfb_ms = round(rng.uniform(80, 400), 1) if stream else None
    if index % 11 == 7:
        billing.fail_request(opened, status=502, error_code="upstream_error", route=route)
        seeded.requests.append(SeededRequest(opened.request_id, at, account, model, "failed", 502, 0, 0, 0, 0, **who))
        return
    attempts: tuple[Attempt, ...] = ()
    if index % 13 == 5 and seeded.failover_request is None:
        attempts = (Attempt(route=route, status=503, error_code="upstream_unavailable", latency_ms=41.5),)
        seeded.failover_request = opened.request_id
    input_tokens = rng.randrange(200, 3000)
    usage = Usage(
        input_tokens=input_tokens,
        cached_input_tokens=rng.randrange(0, input_tokens // 4),
        output_tokens=rng.randrange(50, 900),
    )
    receipt = billing.complete_request(opened, route, usage, ttfb_ms=ttfb_ms, attempts=attempts)
    provider_cost = billing.ledger.get_request_record(opened.request_id).details.provider_cost
    seeded.requests.append(
        SeededRequest(
            opened.request_id,
            at,
            account,
            model,
            "completed",
            200,
            receipt.charge,
            receipt.cost,
            usage.input_tokens,
            usage.output_tokens,
            provider_cost,
            **who,
        )
    )
