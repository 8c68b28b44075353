"""The price book's lookup rules, for any sequence of published versions (domain/price_book.py):
the version in effect at a time is the latest published whose time has come (none before
the first); its price for a model is exactly the one recorded with it, or None when the
version does not price the model; and every lookup of one model in one version returns
the same price object, however the lookups interleave with later publications."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.price_book import PriceBook
from domain.pricing import ModelPrice

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MODELS = ("a/one", "a/two", "b/three")

prices = st.builds(ModelPrice, input=st.integers(0, 10**12), output=st.integers(0, 10**12))
versions = st.lists(
    st.tuples(st.integers(0, 60), st.dictionaries(st.sampled_from(MODELS), prices, max_size=len(MODELS))),
    max_size=8,
)


@given(versions, st.lists(st.integers(-1, 61), min_size=1, max_size=10))
def test_a_lookup_finds_the_latest_version_in_effect_and_its_recorded_price_once_parsed(
    published: list[tuple[int, dict[str, ModelPrice]]], query_minutes: list[int]
) -> None:
    book = PriceBook()
    seen: dict[tuple[int, str], ModelPrice | None] = {}
    for minutes, version_prices in published:
        book.publish_version(version_prices, NOW + timedelta(minutes=minutes), now=NOW)
        for query in query_minutes:
            at = NOW + timedelta(minutes=query)
            in_effect = [data for data in book.versions if data["effective_at"] <= at]
            expected = in_effect[-1] if in_effect else None
            version = book.effective(at)
            assert version.number == (expected["version"] if expected else 0)
            for model in MODELS:
                price = version.price_for(model)
                stored = expected["prices"].get(model) if expected else None
                assert price == (None if stored is None else ModelPrice.from_dict(stored))
                key = (version.number, model)
                if price is not None and seen.setdefault(key, price) is not price:
                    raise AssertionError(f"version {version.number} parsed {model} twice")
