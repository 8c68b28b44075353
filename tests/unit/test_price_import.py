"""``prices import``: a complete price-book version from a catalog (the ``genai-prices``
package's bundled data, or a LiteLLM-format file), provider costs as the catalog charges,
sell rates with a margin rounded once (half up) to the nanocredit, a dry run that publishes
nothing, the provider and model filters, and the source recorded on each imported price.

How provider costs are compared with the package: ``genai_prices.calc_price`` returns the
exact ``Decimal`` dollars of a usage; the imported ``provider_cost`` (1 credit = 1 USD)
prices the same usage with the price book's one rule (exact sum, rounded once half up to
a nanocredit). Every catalog rate used here has at most nine decimals per 1M tokens, so
the imported rates are exact and the two must agree to the nanocredit: the package's
dollars × 10**9, rounded half up, equal our nanocredits exactly."""

import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.catalogs import open_catalog
from adapters.catalogs.genai_prices import GenaiPricesCatalog
from adapters.catalogs.litellm_file import LiteLLMFileCatalog
from application.ledger import Ledger
from application.price_import import Markup, PriceImport, nanocredits
from application.prices import Prices
from application.providers import ProviderRegistry
from domain.errors import InvalidRequest
from domain.pricing import ModelPrice, price_usage
from domain.usage import Usage
from tests.fakes.clock import FakeClock

CATALOG = GenaiPricesCatalog()
WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# (catalog provider, model, a service tier the catalog lists or None): flat, context-tiered
# (Anthropic, Gemini: whole request above 200k prompt tokens), cache writes 5m/1h, service tiers
MODELS = [
    ("openai", "gpt-4o", None),
    ("openai", "gpt-5", "flex"),
    ("openai", "gpt-5", "priority"),
    ("anthropic", "claude-sonnet-4-5", None),
    ("google", "gemini-2.5-pro", None),
    ("aws", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", None),
    ("deepseek", "deepseek-chat", None),
]


def package_nanocredits(usage: Usage, provider: str, model: str) -> int:
    """What ``genai_prices.calc_price`` says the usage costs, in nanocredits (1 credit = 1 USD)."""
    theirs = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
        web_searches=usage.web_search_calls,
    )
    context = {"service_tier": usage.service_tier} if usage.service_tier else None
    price = genai_prices.calc_price(
        theirs, model, provider_id=provider, genai_request_timestamp=WHEN, price_context=context
    )
    return int((price.total_price * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@st.composite
def usages(draw: st.DrawFn, service_tier: str | None) -> Usage:
    cached = draw(st.integers(0, 50_000))
    write_5m = draw(st.integers(0, 50_000))
    write_1h = draw(st.integers(0, 50_000))
    plain = draw(st.sampled_from([0, 1, 199_999 - cached - write_5m - write_1h, 200_000])) + draw(
        st.integers(0, 300_000)
    )
    output = draw(st.integers(0, 100_000))
    return Usage(
        input_tokens=max(plain, 0) + cached + write_5m + write_1h,
        cached_input_tokens=cached,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        web_search_calls=draw(st.integers(0, 5)),
        service_tier=service_tier,
        source="provider",
    )


@pytest.mark.parametrize(("provider", "model", "service_tier"), MODELS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_imported_provider_cost_is_the_packages_own_calc_price(
    provider: str, model: str, service_tier: str | None, data: st.DataObject
) -> None:
    entry = CATALOG.lookup(provider, model, WHEN)
    assert entry is not None
    if service_tier is not None:
        assert service_tier in [tier.name for tier in entry.service_tiers]
    price = imported(entry)
    assert price.provider_cost is not None
    usage = data.draw(usages(service_tier))
    assert price_usage(price.provider_cost, usage) == package_nanocredits(usage, provider, model)


def imported(entry: object, margin: str = "0") -> ModelPrice:
    from application.price_import import imported_price

    return imported_price(entry, Markup(Decimal(margin)), "test", None, "p/m")  # type: ignore[arg-type]


def test_a_25_percent_margin_is_exact_to_the_nanocredit() -> None:
    entry = CATALOG.lookup("openai", "gpt-4o", WHEN)
    assert entry is not None
    price = imported(entry, "25")
    assert price.provider_cost is not None
    assert (price.provider_cost.input, price.provider_cost.output, price.provider_cost.cached_input) == (
        2_500_000_000,
        10_000_000_000,
        1_250_000_000,
    )
    assert (price.input, price.output, price.cached_input) == (3_125_000_000, 12_500_000_000, 1_562_500_000)
    assert (price.provider_cost.per_web_search, price.per_web_search) == (10_000_000, 12_500_000)  # $10 per 1,000
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, source="provider")
    assert price_usage(price, usage) * 4 == price_usage(price.provider_cost, usage) * 5


@pytest.mark.parametrize(
    ("usd", "margin", "credits_per_usd", "expected"),
    [
        ("0.000000002", "25", "1", 3),  # 2.5 nanocredits: half up
        ("0.000000001", "25", "1", 1),  # 1.25: down
        ("0.000000003", "50", "1", 5),  # 4.5: half up
        ("0.00000000123", "25", "1", 2),  # 1.5375 from the exact product, not from a rounded cost
        ("2.5", "25", "100", 312_500_000_000),  # 100 credits per dollar
        ("0.123456789", "33.3", "1", 164_567_900),  # 164567899.737
    ],
)
def test_the_sell_rate_is_the_exact_product_rounded_once_half_up(
    usd: str, margin: str, credits_per_usd: str, expected: int
) -> None:
    markup = Markup(Decimal(margin), Decimal(credits_per_usd))
    assert nanocredits(Decimal(usd), markup.sell_factor) == expected


def test_a_margin_or_exchange_rate_out_of_range_is_refused() -> None:
    for margin, per_usd in (("-1", "1"), ("10001", "1"), ("NaN", "1"), ("0", "0"), ("0", "-2")):
        with pytest.raises(InvalidRequest):
            Markup(Decimal(margin), Decimal(per_usd))


# --- the use case on a ledger -------------------------------------------------------------


@pytest.fixture
def book(ledger: Ledger) -> Ledger:
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-test")
    registry.register_provider("claude", "anthropic", base_url=None, region=None, secret="sk-ant")
    registry.register_provider("local", "ollama", base_url="http://127.0.0.1:11434", region=None, secret=None)
    Prices(ledger).publish_prices(
        {
            "openai/gpt-4o": ModelPrice(input=1, output=2, per_image=7, max_output_tokens=1000),
            "openai/my-finetune": ModelPrice(input=5, output=6),
            "claude/claude-sonnet-4-5": ModelPrice(input=3_000_000_000, output=15_000_000_000),
            "local/llama3": ModelPrice(input=0, output=0),
        }
    )
    return ledger


def use_case(ledger: Ledger) -> PriceImport:
    def current() -> tuple[int, dict[str, ModelPrice]]:
        latest = ledger.price_book().latest
        return latest.number, {model: ModelPrice.from_dict(data) for model, data in latest.prices.items()}

    return PriceImport(ledger.list_providers, current, Prices(ledger).publish_prices, ledger.clock.now)


def test_a_dry_run_publishes_nothing(book: Ledger) -> None:
    before = book.price_book().latest
    plan = use_case(book).plan(CATALOG, Markup(Decimal(25)))
    assert plan.has_changes and plan.base_version == before.number == 1
    assert book.price_book().latest == before and plan.published_version is None
    assert [change.model for change in plan.changed] == ["claude/claude-sonnet-4-5", "openai/gpt-4o"]
    assert plan.not_in_catalog == ["openai/my-finetune"]  # ollama has no catalog: local/ is not chosen


def test_an_import_publishes_a_complete_version_with_sources(book: Ledger) -> None:
    importer = use_case(book)
    plan = importer.apply(importer.plan(CATALOG, Markup(Decimal(25)), asked=["openai/gpt-5", "openai/unknown-x"]))
    assert plan.published_version == 2
    latest = book.price_book().latest
    assert latest.number == 2 and set(latest.prices) == {
        "openai/gpt-4o",
        "openai/gpt-5",
        "openai/my-finetune",
        "claude/claude-sonnet-4-5",
        "local/llama3",
    }
    gpt4o = latest.price_for("openai/gpt-4o")
    assert gpt4o is not None and gpt4o.input == 3_125_000_000 and gpt4o.source == "genai-prices 0.2.5 openai/gpt-4o"
    assert gpt4o.per_image == 7 and gpt4o.max_output_tokens == 1000  # kept: the catalog has neither
    assert gpt4o.context_window == 128_000  # from the catalog
    assert [name for name, _ in gpt4o.service_tiers] == ["priority", "fast"]
    sonnet = latest.price_for("claude/claude-sonnet-4-5")
    assert sonnet is not None and [tier.above_input_tokens for tier in sonnet.context_tiers] == [200_000]
    assert sonnet.cache_write_1h == 7_500_000_000  # $6 + 25 %
    # not in the catalog: exactly as it was, no source
    assert latest.prices["openai/my-finetune"] == ModelPrice(input=5, output=6).to_dict()
    assert latest.prices["local/llama3"] == ModelPrice(input=0, output=0).to_dict()
    assert "openai/unknown-x" in plan.not_in_catalog and "openai/unknown-x" not in latest.prices


def test_an_import_with_nothing_new_publishes_nothing(book: Ledger) -> None:
    importer = use_case(book)
    importer.apply(importer.plan(CATALOG, Markup(Decimal(10))))
    again = importer.apply(importer.plan(CATALOG, Markup(Decimal(10))))
    assert again.published_version is None and not again.has_changes
    assert sorted(again.unchanged) == ["claude/claude-sonnet-4-5", "openai/gpt-4o"]
    assert book.price_book().latest.number == 2


def test_provider_and_models_filters(book: Ledger) -> None:
    importer = use_case(book)
    only_claude = importer.plan(CATALOG, Markup(), provider="claude")
    assert [c.model for c in only_claude.changed + only_claude.added] == ["claude/claude-sonnet-4-5"]
    chosen = importer.plan(CATALOG, Markup(), models=["openai/gpt-4o-mini", "openai/gpt-4o"])
    assert [c.model for c in chosen.added] == ["openai/gpt-4o-mini"]
    assert [c.model for c in chosen.changed] == ["openai/gpt-4o"]
    assert chosen.not_in_catalog == []  # openai/my-finetune was not named: neither imported nor reported
    with pytest.raises(InvalidRequest, match="no price for openai/not-a-model"):
        importer.plan(CATALOG, Markup(), models=["openai/not-a-model"])
    with pytest.raises(InvalidRequest, match="has no prices for provider 'local'"):
        importer.plan(CATALOG, Markup(), provider="local")
    with pytest.raises(InvalidRequest, match="no provider 'nope'"):
        importer.plan(CATALOG, Markup(), provider="nope")
    with pytest.raises(InvalidRequest, match="not registered"):
        importer.plan(CATALOG, Markup(), provider="claude", models=["openai/gpt-4o"])


def test_a_scheduled_import_takes_effect_later(book: Ledger, clock: FakeClock) -> None:
    importer = use_case(book)
    later = clock.now() + timedelta(days=7)
    plan = importer.apply(importer.plan(CATALOG, Markup(), provider="openai", at=later), later)
    assert plan.published_version == 2
    assert book.price_book().effective(clock.now()).number == 1
    assert book.price_book().effective(later).number == 2


def test_a_price_without_a_source_still_loads_and_a_bad_source_is_refused() -> None:
    stored = ModelPrice(input=1, output=2).to_dict()
    assert "source" not in stored and ModelPrice.from_dict(stored).source is None
    sourced = ModelPrice(input=1, output=2, source="litellm-file sha256:abc m")
    assert ModelPrice.from_dict(sourced.to_dict()) == sourced
    for bad in ("", "x" * 201, "tab\there"):
        with pytest.raises(InvalidRequest):
            ModelPrice(input=1, output=2, source=bad)


# --- a LiteLLM-format file ---------------------------------------------------------------

LITELLM = {
    "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of …"},
    "gpt-4o": {
        "litellm_provider": "openai",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_token_priority": 4.25e-06,
        "output_cost_per_token_priority": 1.7e-05,
        "output_cost_per_image": 0.04,
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
    },
    "claude-sonnet-4-5": {
        "litellm_provider": "anthropic",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "max_tokens": 64000,
        "max_input_tokens": 200000,
    },
    "claude-tiny": {"litellm_provider": "anthropic", "input_cost_per_token": 2e-15, "output_cost_per_token": 1e-15},
    "deepseek/deepseek-chat": {
        "litellm_provider": "deepseek",
        "input_cost_per_token": 2.8e-07,
        "output_cost_per_token": 4.2e-07,
        "input_cost_per_request": 0.0001,
    },
}


@pytest.fixture
def litellm_file(tmp_path: Path) -> str:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(LITELLM))
    return str(path)


def test_a_litellm_file_imports_with_exact_decimals(book: Ledger, litellm_file: str) -> None:
    ProviderRegistry(book).register_provider(
        "ds", "openai-compatible", base_url="https://api.deepseek.com/v1", region=None, secret="sk"
    )
    catalog = open_catalog(litellm_file)
    assert isinstance(catalog, LiteLLMFileCatalog) and catalog.version.startswith("sha256:")
    importer = use_case(book)
    plan = importer.apply(importer.plan(catalog, Markup(Decimal(25)), asked=["claude/claude-tiny", "ds/deepseek-chat"]))
    latest = book.price_book().latest
    gpt4o = latest.price_for("openai/gpt-4o")
    assert gpt4o is not None and gpt4o.provider_cost is not None
    assert (gpt4o.provider_cost.input, gpt4o.input) == (2_500_000_000, 3_125_000_000)
    assert (gpt4o.output, gpt4o.cached_input) == (12_500_000_000, 1_562_500_000)
    assert dict(gpt4o.service_tiers)["priority"].input == 5_312_500_000  # $4.25 + 25 %
    assert (gpt4o.context_window, gpt4o.max_output_tokens) == (128_000, 16_384)
    assert gpt4o.source == f"litellm-file {catalog.version} openai/gpt-4o"
    assert plan.skipped_keys["openai/gpt-4o"] == ["output_cost_per_image"]
    sonnet = latest.price_for("claude/claude-sonnet-4-5")
    assert sonnet is not None and sonnet.provider_cost is not None
    assert (sonnet.cache_write_5m, sonnet.cache_write_1h) == (4_687_500_000, 7_500_000_000)
    tier = sonnet.context_tiers[0]
    assert (tier.above_input_tokens, tier.input, tier.output, tier.cached_input) == (
        200_000,
        7_500_000_000,
        28_125_000_000,
        375_000_000,  # a rate the tier does not list is the base's
    )
    tiny = latest.price_for("claude/claude-tiny")  # 2e-15 $/token = 2 nanocredits per 1M tokens
    assert tiny is not None and tiny.provider_cost is not None
    assert (tiny.provider_cost.input, tiny.input, tiny.provider_cost.output, tiny.output) == (2, 3, 1, 1)
    deepseek = latest.price_for("ds/deepseek-chat")  # matched by base URL, keyed deepseek/…
    assert deepseek is not None and deepseek.provider_cost is not None
    assert (deepseek.provider_cost.per_request, deepseek.per_request) == (100_000, 125_000)


def test_a_litellm_file_that_is_not_a_price_file_is_refused(tmp_path: Path) -> None:
    for name, text in (("list.json", "[1, 2]"), ("bad.json", "{"), ("missing.json", None)):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(InvalidRequest):
            LiteLLMFileCatalog(str(path))
    negative = tmp_path / "negative.json"
    negative.write_text('{"m": {"litellm_provider": "openai", "input_cost_per_token": -1, "output_cost_per_token": 0}}')
    with pytest.raises(InvalidRequest, match="not negative"):
        LiteLLMFileCatalog(str(negative)).lookup("openai", "m", WHEN)


def test_the_catalog_is_the_bundled_data_and_never_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from genai_prices import data_snapshot

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the catalog opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fetched = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)  # as an auto-update would install
    data_snapshot.set_custom_snapshot(fetched)
    try:
        catalog = GenaiPricesCatalog()
        entry = catalog.lookup("openai", "gpt-4o", WHEN)
        assert entry is not None and entry.rates.input == Decimal("2.5")
        assert catalog.version == genai_prices.__version__ == "0.2.5"
    finally:
        data_snapshot.set_custom_snapshot(None)
