"""Pricing is pure arithmetic on integers.

The one rounding rule: a charge is computed exactly as a sum of ``tokens × rate``
terms (rates are nanocredits per 1,000,000 tokens), divided by 1,000,000 once and
rounded half up to a whole nanocredit; per-image, per-web-search-call and per-request
fees are whole nanocredits and are added after that single rounding. A cache-write
rate left unset is 1.25 × (5-minute) or 2 × (1-hour) the input rate; those defaults
enter the sum exactly (the sum is kept in quarter-nanocredits and divided once by
4,000,000), never as a rounded rate. Nothing else in Tallyhub rounds money. The same
rule prices what the provider charges the operator (``provider_cost``), so margins
are exact too.

Which rates price a request (``price_usage``, the one entry point):

- the *service tier* the provider's response reports (``usage.service_tier``): when
  the price lists that tier (``service_tiers``), its rates replace the base rates;
  ``None``, ``"default"`` or a tier the price does not list are the base rates;
- then a *context tier*: when ``input_tokens`` (every prompt token: plain, cache reads
  and cache writes) is strictly above a tier's ``above_input_tokens``, the whole
  request — every token class — is priced at that tier's rates (the highest such
  tier); exactly at the threshold stays below;
- each token class at its rate: plain input, cache reads (``cached_input``, default
  input), 5-minute and 1-hour cache writes, output, reasoning (default output).

A price is bounded (``domain/bounds.py``): every rate, its own, its tiers' and its
``provider_cost``'s, is a whole number of nanocredits from 0 to ``MAX_RATE``; a
threshold is from 0 to ``MAX_TOKENS``; ``max_output_tokens`` is from 1 to
``MAX_TOKENS``; anything else is refused with ``InvalidPrice`` naming the field, so
no price book holds a rate that could price a request past what the read models store.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from domain.bounds import MAX_RATE, MAX_TOKENS, MAX_WEB_SEARCH_CALLS, within
from domain.errors import InvalidRequest
from domain.money import Nanocredits, format_credits
from domain.usage import Usage

TOKENS_PER_RATE_UNIT = 1_000_000
QUARTERS = 4  # the sum is kept in quarter-nanocredits, so 1.25 × input is exact
DEFAULT_OUTPUT_CAP = 4096
MAX_TIERS = 16
MAX_TIER_NAME_LENGTH = 64
MAX_SOURCE_LENGTH = 200
BASE_SERVICE_TIER = "default"
RATE_FIELDS = ("input", "output", "cached_input", "reasoning", "per_image", "per_request")
CACHE_WRITE_FIELDS = ("cache_write_5m", "cache_write_1h")
TIER_RATE_FIELDS = ("input", "output", "cached_input", "reasoning", *CACHE_WRITE_FIELDS)
OPTIONAL_RATES = ("cached_input", "reasoning", *CACHE_WRITE_FIELDS)


class InvalidPrice(InvalidRequest, ValueError):
    """A rate, threshold or output cap outside what a price may be; ``param`` names the field."""


class TokenRates(Protocol):
    """The per-token rates of a price, a context tier or a service tier."""

    @property
    def input(self) -> int: ...
    @property
    def output(self) -> int: ...
    @property
    def cached_input(self) -> int | None: ...
    @property
    def reasoning(self) -> int | None: ...
    @property
    def cache_write_5m(self) -> int | None: ...
    @property
    def cache_write_1h(self) -> int | None: ...


def _check_rate(owner: object, name: str, prefix: str = "") -> None:
    value = getattr(owner, name)
    if value is None and name in OPTIONAL_RATES:
        return
    if not within(value, MAX_RATE):
        raise InvalidPrice(
            f"price {prefix}{name} must be a whole number of nanocredits from 0 to {MAX_RATE} "
            f"({format_credits(MAX_RATE)} credits)",
            param=prefix + name,
        )


def _rates_dict(rates: TokenRates) -> dict[str, Any]:
    data: dict[str, Any] = {"input": rates.input, "output": rates.output}
    for name in OPTIONAL_RATES:
        if getattr(rates, name) is not None:
            data[name] = getattr(rates, name)
    return data


@dataclass(frozen=True, slots=True)
class ContextTier:
    """Rates for a request whose ``input_tokens`` is strictly above ``above_input_tokens``;
    an unset rate defaults as on a price (cached input = input, reasoning = output, cache
    writes 1.25 × / 2 × input), from this tier's own rates."""

    above_input_tokens: int
    input: int
    output: int
    cached_input: int | None = None
    reasoning: int | None = None
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None

    def __post_init__(self) -> None:
        if not within(self.above_input_tokens, MAX_TOKENS):
            raise InvalidPrice(
                f"a context tier's above_input_tokens must be an integer from 0 to {MAX_TOKENS}",
                param="above_input_tokens",
            )
        for name in TIER_RATE_FIELDS:
            _check_rate(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {"above_input_tokens": self.above_input_tokens, **_rates_dict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ContextTier":
        return cls(**data)


def _check_context_tiers(tiers: tuple[ContextTier, ...], prefix: str) -> tuple[ContextTier, ...]:
    """The tiers sorted by threshold; refuses a non-tier, too many, or two at one threshold."""
    tiers = tuple(tiers)
    if len(tiers) > MAX_TIERS or not all(isinstance(tier, ContextTier) for tier in tiers):
        raise InvalidPrice(f"{prefix}context_tiers must be at most {MAX_TIERS} tiers", param=prefix + "context_tiers")
    ordered = tuple(sorted(tiers, key=lambda tier: tier.above_input_tokens))
    thresholds = [tier.above_input_tokens for tier in ordered]
    if len(set(thresholds)) != len(thresholds):
        raise InvalidPrice("two context tiers share one above_input_tokens", param=prefix + "context_tiers")
    return ordered


@dataclass(frozen=True, slots=True)
class ServiceTierPrice:
    """Rates for a request whose response reports this service tier; they replace the base
    rates (and the base context tiers: a service tier has its own, if any). Fees
    (per image, per web search, per request) stay the price's own."""

    input: int
    output: int
    cached_input: int | None = None
    reasoning: int | None = None
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    context_tiers: tuple[ContextTier, ...] = ()

    def __post_init__(self) -> None:
        for name in TIER_RATE_FIELDS:
            _check_rate(self, name)
        object.__setattr__(self, "context_tiers", _check_context_tiers(self.context_tiers, ""))

    def to_dict(self) -> dict[str, Any]:
        data = _rates_dict(self)
        if self.context_tiers:
            data["context_tiers"] = [tier.to_dict() for tier in self.context_tiers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServiceTierPrice":
        tiers = tuple(ContextTier.from_dict(tier) for tier in data.get("context_tiers") or ())
        return cls(**{**data, "context_tiers": tiers})


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Sell rates for one model, in nanocredits per 1M tokens (or per image / web search
    call / request).

    ``cached_input`` (cache reads) defaults to the input rate, ``reasoning`` to the
    output rate, ``cache_write_5m`` to 1.25 × and ``cache_write_1h`` to 2 × the input
    rate; ``context_tiers`` price long prompts, ``service_tiers`` (name, rates) the tiers
    a response may report (see the module docstring); ``max_output_tokens`` is the
    output cap used for the worst-case hold when a request does not set ``max_tokens``;
    ``provider_cost`` is what the provider charges the operator for the same usage
    (same fields, no cap), for margins; ``context_window`` (tokens, None: not known) is
    the model's context window, shown on the model list only: it prices nothing;
    ``source`` (None: set by hand) names where an imported price came from (catalog,
    its version, the catalog's model: application/price_import.py); it prices nothing.
    """

    input: int
    output: int
    cached_input: int | None = None
    reasoning: int | None = None
    per_image: int = 0
    per_request: int = 0
    max_output_tokens: int = DEFAULT_OUTPUT_CAP
    provider_cost: "ModelPrice | None" = None
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    per_web_search: int = 0
    context_tiers: tuple[ContextTier, ...] = ()
    service_tiers: tuple[tuple[str, ServiceTierPrice], ...] = ()
    context_window: int | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        for name in (*RATE_FIELDS, *CACHE_WRITE_FIELDS, "per_web_search"):
            _check_rate(self, name)
        if self.context_window is not None and (not within(self.context_window, MAX_TOKENS) or not self.context_window):
            raise InvalidPrice(f"context_window must be an integer from 1 to {MAX_TOKENS}", param="context_window")
        if self.source is not None and not _valid_source(self.source):
            raise InvalidPrice(f"source must be 1 to {MAX_SOURCE_LENGTH} printable characters", param="source")
        if not within(self.max_output_tokens, MAX_TOKENS) or self.max_output_tokens == 0:
            raise InvalidPrice(
                f"max_output_tokens must be an integer from 1 to {MAX_TOKENS}", param="max_output_tokens"
            )
        if self.provider_cost is not None and not isinstance(self.provider_cost, ModelPrice):
            raise InvalidPrice("provider_cost must be a price", param="provider_cost")
        object.__setattr__(self, "context_tiers", _check_context_tiers(self.context_tiers, ""))
        object.__setattr__(self, "service_tiers", _check_service_tiers(self.service_tiers))

    @property
    def cached_input_rate(self) -> int:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def reasoning_rate(self) -> int:
        return self.output if self.reasoning is None else self.reasoning

    def service_tier(self, name: str | None) -> ServiceTierPrice | None:
        """The rates of service tier ``name``; None: the base rates price it."""
        for tier_name, tier in self.service_tiers:
            if tier_name == name:
                return tier
        return None

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the original eight keys always (as they were always written),
        each newer one only when it is not its default."""
        data: dict[str, Any] = {
            "input": self.input,
            "output": self.output,
            "cached_input": self.cached_input,
            "reasoning": self.reasoning,
            "per_image": self.per_image,
            "per_request": self.per_request,
            "max_output_tokens": self.max_output_tokens,
            "provider_cost": self.provider_cost.to_dict() if self.provider_cost is not None else None,
        }
        for name in (*CACHE_WRITE_FIELDS, "per_web_search"):
            if getattr(self, name) != _PRICE_DEFAULTS[name]:
                data[name] = getattr(self, name)
        if self.context_tiers:
            data["context_tiers"] = [tier.to_dict() for tier in self.context_tiers]
        if self.service_tiers:
            data["service_tiers"] = {name: tier.to_dict() for name, tier in self.service_tiers}
        if self.context_window is not None:
            data["context_window"] = self.context_window
        if self.source is not None:
            data["source"] = self.source
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelPrice":
        cost = data.get("provider_cost")
        tiers = tuple(ContextTier.from_dict(tier) for tier in data.get("context_tiers") or ())
        services = tuple(
            (name, ServiceTierPrice.from_dict(tier)) for name, tier in (data.get("service_tiers") or {}).items()
        )
        return cls(
            **{
                **data,
                "provider_cost": cls.from_dict(cost) if isinstance(cost, dict) else None,
                "context_tiers": tiers,
                "service_tiers": services,
            }
        )


def _valid_source(source: object) -> bool:
    return isinstance(source, str) and 0 < len(source) <= MAX_SOURCE_LENGTH and source.isprintable()


_PRICE_DEFAULTS = {"cache_write_5m": None, "cache_write_1h": None, "per_web_search": 0}


def _check_service_tiers(
    tiers: tuple[tuple[str, ServiceTierPrice], ...],
) -> tuple[tuple[str, ServiceTierPrice], ...]:
    tiers = tuple(tiers)
    if len(tiers) > MAX_TIERS:
        raise InvalidPrice(f"service_tiers must be at most {MAX_TIERS} tiers", param="service_tiers")
    names: set[str] = set()
    for entry in tiers:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], ServiceTierPrice)):
            raise InvalidPrice("service_tiers must be (name, rates) pairs", param="service_tiers")
        name = entry[0]
        if not isinstance(name, str) or not name or len(name) > MAX_TIER_NAME_LENGTH or not name.isprintable():
            raise InvalidPrice(
                f"a service tier's name must be 1 to {MAX_TIER_NAME_LENGTH} printable characters",
                param="service_tiers",
            )
        if name == BASE_SERVICE_TIER:
            raise InvalidPrice(
                f"service tier {BASE_SERVICE_TIER!r} is the base rates; it cannot be listed", param="service_tiers"
            )
        if name in names:
            raise InvalidPrice(f"service tier {name!r} is listed twice", param="service_tiers")
        names.add(name)
    return tiers


class QuarterRates(NamedTuple):
    """The rates that price one request, in quarter-nanocredits per 1M tokens (exact).

    A named tuple, not a frozen dataclass: it is built two to three times per request
    priced (the hold, the charge), and a frozen dataclass's ``__init__`` cost seven times
    as much."""

    input: int
    cached_input: int
    cache_write_5m: int
    cache_write_1h: int
    output: int
    reasoning: int

    @property
    def dearest_input(self) -> int:
        return max(self.input, self.cached_input, self.cache_write_5m, self.cache_write_1h)


def _quarter_rates(rates: TokenRates) -> QuarterRates:
    input_, output = rates.input * QUARTERS, rates.output * QUARTERS
    return QuarterRates(
        input=input_,
        cached_input=input_ if rates.cached_input is None else rates.cached_input * QUARTERS,
        cache_write_5m=rates.input * 5 if rates.cache_write_5m is None else rates.cache_write_5m * QUARTERS,  # 1.25×
        cache_write_1h=rates.input * 8 if rates.cache_write_1h is None else rates.cache_write_1h * QUARTERS,  # 2×
        output=output,
        reasoning=output if rates.reasoning is None else rates.reasoning * QUARTERS,
    )


def _rate_set(price: ModelPrice, service_tier: str | None) -> TokenRates:
    tier = price.service_tier(service_tier)
    return price if tier is None else tier


def _context_tiers(rates: TokenRates) -> tuple[ContextTier, ...]:
    return rates.context_tiers if isinstance(rates, ModelPrice | ServiceTierPrice) else ()


def rates_for(price: ModelPrice, service_tier: str | None, input_tokens: int) -> QuarterRates:
    """The rates that price a request of ``input_tokens`` prompt tokens whose response
    reported ``service_tier`` (the module docstring's rule)."""
    base = _rate_set(price, service_tier)
    chosen: TokenRates = base
    for tier in _context_tiers(base):  # sorted by threshold
        if input_tokens > tier.above_input_tokens:
            chosen = tier
    return _quarter_rates(chosen)


def price_usage(price: ModelPrice, usage: Usage) -> Nanocredits:
    """The charge for ``usage`` at ``price``, rounded once (half up)."""
    return price_counts(
        price,
        usage.input_tokens,
        usage.cached_input_tokens,
        usage.output_tokens,
        usage.reasoning_tokens,
        usage.images,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.web_search_calls,
        usage.service_tier,
    )


def price_counts(
    price: ModelPrice,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
    images: int,
    cache_write_5m_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    web_search_calls: int = 0,
    service_tier: str | None = None,
) -> Nanocredits:
    """``price_usage`` of usage counts already validated (read back from the ledger by replay)."""
    rates = rates_for(price, service_tier, input_tokens)
    plain_input = input_tokens - cached_input_tokens - cache_write_5m_tokens - cache_write_1h_tokens
    quarters = (
        plain_input * rates.input
        + cached_input_tokens * rates.cached_input
        + cache_write_5m_tokens * rates.cache_write_5m
        + cache_write_1h_tokens * rates.cache_write_1h
        + (output_tokens - reasoning_tokens) * rates.output
        + reasoning_tokens * rates.reasoning
    )
    unit = TOKENS_PER_RATE_UNIT * QUARTERS
    tokens_part = (quarters + unit // 2) // unit
    fees = images * price.per_image + web_search_calls * price.per_web_search + price.per_request
    return Nanocredits(tokens_part + fees)


def provider_cost_of(price: ModelPrice | None, usage: Usage) -> int | None:
    """What the provider charges for ``usage`` at the recorded cost rates; None if unknown."""
    if price is None or price.provider_cost is None:
        return None
    return price_usage(price.provider_cost, usage)


def worst_case_usage(
    prompt_bytes: int,
    max_output_tokens: int | None,
    choices: int,
    price: ModelPrice,
    images: int = 0,
    web_search_calls: int | None = None,
) -> Usage:
    """A usage that ``price_usage`` prices at least as high as any usage within the
    request's bounds, for the hold placed before the call.

    Bounds: input — no tokenizer emits more tokens than the UTF-8 bytes it reads, so the
    byte length of the prompt bounds its tokens; output — the request's ``max_tokens``
    (or the model's cap) for each of its ``n`` choices; images — as asked; web search
    calls — as given, or (None) ``MAX_WEB_SEARCH_CALLS`` when the model has a web-search
    fee. Within them, the charge is dearest when every prompt token is in the dearest
    input class and every output token in the dearer of output and reasoning, at some
    (service tier, context tier) pair; a context tier below the top one holds at most
    its next tier's threshold in input. Every reachable pair is priced so and the
    dearest is returned (its ``service_tier`` set to the tier that priced it).
    """
    cap = max_output_tokens if max_output_tokens is not None else price.max_output_tokens
    output = cap * max(choices, 1)
    input_bound = max(prompt_bytes, 0)
    if web_search_calls is None:
        web_search_calls = MAX_WEB_SEARCH_CALLS if price.per_web_search else 0
    if not price.service_tiers and not price.context_tiers:  # one pair only: nothing to compare
        return _dearest_usage(_quarter_rates(price), input_bound, output, images, web_search_calls, None)
    best: Usage | None = None
    best_charge = -1
    for service_tier in (None, *(name for name, _ in price.service_tiers)):
        for input_tokens, rates in _reachable_rates(price, service_tier, input_bound):
            usage = _dearest_usage(rates, input_tokens, output, images, web_search_calls, service_tier)
            charge = price_usage(price, usage)
            if charge > best_charge:
                best, best_charge = usage, charge
    assert best is not None
    return best


def _reachable_rates(price: ModelPrice, service_tier: str | None, input_bound: int) -> list[tuple[int, QuarterRates]]:
    """Each context tier a request of at most ``input_bound`` prompt tokens can be priced
    at, with the most input tokens that tier can hold."""
    base = _rate_set(price, service_tier)
    tiers = _context_tiers(base)
    thresholds = [tier.above_input_tokens for tier in tiers]
    reachable = []
    for index, rates in enumerate((base, *tiers)):
        if index > 0 and input_bound <= thresholds[index - 1]:
            break
        ceiling = thresholds[index] if index < len(tiers) else input_bound
        reachable.append((min(input_bound, ceiling), _quarter_rates(rates)))
    return reachable


def _dearest_usage(
    rates: QuarterRates, input_tokens: int, output: int, images: int, web_search_calls: int, service_tier: str | None
) -> Usage:
    dearest = rates.dearest_input
    write_1h = input_tokens if dearest == rates.cache_write_1h > rates.input else 0
    write_5m = input_tokens if not write_1h and dearest == rates.cache_write_5m > rates.input else 0
    cached = input_tokens if not (write_1h or write_5m) and dearest == rates.cached_input > rates.input else 0
    return Usage(  # one class holds every prompt token: input_tokens counts each once
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=output if rates.reasoning > rates.output else 0,
        images=images,
        web_search_calls=web_search_calls,
        service_tier=service_tier,
        source="estimated",
    )
