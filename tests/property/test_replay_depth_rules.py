"""Replay rules with the deeper rates: for any price books with cache-write rates, web-search
fees, context tiers and service tiers, and any history of usage with cache reads and writes,
web searches and reported service tiers, replaying the prices in force differs by exactly 0,
a replay applied moves each account by exactly its recomputation (``price_usage`` of each
recorded usage), applied again posts nothing, and verify passes."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.replay import Replayer, ReplayPlan
from domain.pricing import ModelPrice, price_usage
from domain.usage import Usage
from tests.property.test_replay_rules import MODELS, balances, build, verified
from tests.unit.test_pricing_depth import prices, usages

books = st.fixed_dictionaries({model: prices for model in MODELS})
history = st.lists(
    st.tuples(
        st.sampled_from(MODELS),
        st.sampled_from(("acme", "globex")),
        usages(max_input=6000, max_output=3000, max_images=0),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=books, changed=books, requests=history)
def test_deeper_replays_are_exact(
    original: dict[str, ModelPrice], changed: dict[str, ModelPrice], requests: list[tuple[str, str, Usage]]
) -> None:
    ledger = build(original, requests)
    replayer = Replayer(ledger)
    start = balances(ledger)
    assert replayer.preview(ReplayPlan(original)).difference == 0

    report = replayer.apply(ReplayPlan(changed))
    expected = {
        name: sum(price_usage(changed[m], u) - price_usage(original[m], u) for m, a, u in requests if a == name)
        for name in start
    }
    assert report.difference == sum(expected.values())
    assert balances(ledger) == {name: start[name] - expected[name] for name in start}
    assert replayer.apply(ReplayPlan(changed)).adjustments == []
    assert verified(ledger) == []
