"""The price every golden test charges with: a distinct rate for every class (none equal
to another, none equal to the default it would fall back to), a long-context tier above
200,000 prompt tokens, and two service tiers. Rates are nanocredits per 1M tokens."""

from domain.pricing import ContextTier, ModelPrice, ServiceTierPrice

IN, CACHED, W5M, W1H, OUT, REASON = (
    2_000_000_000,
    200_000_000,
    2_600_000_000,
    4_100_000_000,
    10_000_000_000,
    11_000_000_000,
)
LONG = ContextTier(
    above_input_tokens=200_000,
    input=4_000_000_000,
    output=15_000_000_000,
    cached_input=400_000_000,
    reasoning=16_000_000_000,
    cache_write_5m=5_300_000_000,
    cache_write_1h=8_300_000_000,
)
FLEX = ServiceTierPrice(input=1_000_000_000, output=5_000_000_000, cached_input=100_000_000, reasoning=5_500_000_000)
PRIORITY = ServiceTierPrice(
    input=3_500_000_000, output=17_000_000_000, cached_input=350_000_000, reasoning=18_000_000_000
)
PER_WEB_SEARCH = 10_000_000  # 0.01 credits a search
PER_IMAGE = 40_000_000

PRICE = ModelPrice(
    input=IN,
    output=OUT,
    cached_input=CACHED,
    reasoning=REASON,
    cache_write_5m=W5M,
    cache_write_1h=W1H,
    per_web_search=PER_WEB_SEARCH,
    per_image=PER_IMAGE,
    max_output_tokens=64_000,
    context_tiers=(LONG,),
    service_tiers=(("flex", FLEX), ("priority", PRIORITY)),
)
