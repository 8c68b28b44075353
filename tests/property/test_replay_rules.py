"""Replay rules over any history and any price books: replaying the prices a charge
stands at differs by exactly 0; a replay applied moves each account by exactly minus its
difference and, applied again, posts nothing; replays compose (applying P1 then P2 leaves
every account where applying P2 alone would); verify passes after all of it."""

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.providers import ProviderRegistry
from application.replay import Replayer, ReplayPlan
from application.routing import Router
from application.verify import LedgerVerifier
from domain.pricing import ModelPrice, price_usage
from domain.usage import Usage
from projections.read_models import build_read_models
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route

MODELS = ("openai/a", "openai/b")
rates = st.integers(min_value=0, max_value=50_000_000)  # up to 50 credits per 1M tokens, any nanocredit
prices = st.builds(
    ModelPrice,
    input=rates,
    output=rates,
    cached_input=st.none() | rates,
    reasoning=st.none() | rates,
    per_request=st.integers(0, 10**6),
)
books = st.fixed_dictionaries({model: prices for model in MODELS})


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    inputs = draw(st.integers(0, 5000))
    outputs = draw(st.integers(0, 3000))
    return Usage(
        input_tokens=inputs,
        cached_input_tokens=draw(st.integers(0, inputs)),
        output_tokens=outputs,
        reasoning_tokens=draw(st.integers(0, outputs)),
    )


history = st.lists(
    st.tuples(st.sampled_from(MODELS), st.sampled_from(("acme", "globex")), usages()), min_size=1, max_size=8
)


def build(original: dict[str, ModelPrice], requests: list[tuple[str, str, Usage]]) -> Ledger:
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        vault=AesGcmKeyVault(bytes(32)),
        key_scheme_factory=HmacApiKeyScheme,
        clock=FakeClock(),
    )
    ledger.initialise()
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).publish_prices(original)
    keys = {}
    for name in ("acme", "globex"):
        Accounts(ledger).create_account(name)
        Accounts(ledger).grant_credits(name, 10**15)
        keys[name] = ApiKeys(ledger).issue_api_key(name).plaintext
    billing = RequestBilling(
        ledger, Router(ledger, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    for model, account, usage in requests:
        opened = billing.open_request(
            keys[account], RequestShape(model=model, prompt_bytes=6000, max_output_tokens=3000, choices=1, stream=False)
        )
        billing.complete_request(opened, first_route(billing, opened), usage)
    return ledger


def balances(ledger: Ledger) -> dict[str, int]:
    return {name: ledger.get_account(name).balance for name in ("acme", "globex")}


def verified(ledger: Ledger) -> list[str]:
    read_models = build_read_models(None, ledger)
    try:
        return LedgerVerifier(ledger, read_models).verify().problems
    finally:
        read_models.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=books, first=books, second=books, requests=history)
def test_replays_are_exact_and_compose(
    original: dict[str, ModelPrice],
    first: dict[str, ModelPrice],
    second: dict[str, ModelPrice],
    requests: list[tuple[str, str, Usage]],
) -> None:
    ledger = build(original, requests)
    replayer = Replayer(ledger)
    start = balances(ledger)
    assert replayer.preview(ReplayPlan(original)).difference == 0

    report = replayer.apply(ReplayPlan(first))
    expected = {
        name: sum(price_usage(first[m], u) - price_usage(original[m], u) for m, a, u in requests if a == name)
        for name in start
    }
    assert report.difference == sum(expected.values())
    assert balances(ledger) == {name: start[name] - expected[name] for name in start}
    assert replayer.preview(ReplayPlan(first)).difference == 0
    assert replayer.apply(ReplayPlan(first)).adjustments == []
    assert balances(ledger) == {name: start[name] - expected[name] for name in start}

    replayer.apply(ReplayPlan(second))
    direct = {
        name: sum(price_usage(second[m], u) - price_usage(original[m], u) for m, a, u in requests if a == name)
        for name in start
    }
    assert balances(ledger) == {name: start[name] - direct[name] for name in start}
    assert verified(ledger) == []
