"""What a request consumed, as reported by a provider or estimated by Tallyhub."""

from dataclasses import dataclass, fields
from typing import Any, Literal

from domain.slots_init import slots_init

UsageSource = Literal["provider", "estimated", "clamped"]

COUNT_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "images",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "web_search_calls",
)
MAX_SERVICE_TIER_LENGTH = 64

FLAGS = {
    "cache_write_ttl_assumed": "only a total cache-write count came; priced as 5-minute writes",
    "total_derived": "total_tokens was missing or inconsistent with the parts; the parts were used",
    "field_invalid": "a usage field was null, non-integer or negative; read as 0 or derived",
    "output_capped": "an estimate was capped at max_tokens or the model's output limit",
}
"""The vocabulary of ``Usage.flags``: how counts were obtained where not plainly reported.
A new flag is added here, with its line, before any code sets it."""


@slots_init  # several are built per request: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class Usage:
    """Token, image and call counts of one request.

    ``input_tokens`` is every prompt token, whatever it was priced at (OpenAI's
    convention): it includes ``cached_input_tokens`` (cache reads) and the cache writes
    ``cache_write_5m_tokens`` and ``cache_write_1h_tokens`` (Anthropic's 5-minute and
    1-hour TTLs), so ``cached + writes <= input``. ``output_tokens`` includes
    ``reasoning_tokens``. Pricing never counts a token twice. ``web_search_calls``: the
    server-side web searches the provider billed. ``service_tier``: the tier the
    provider's *response* reports (``default``, ``flex``, ``priority``, …; None: not
    reported). ``flags``: how counts were obtained where not plainly reported (sorted,
    unique; vocabulary in ``FLAGS``). ``source``: ``provider`` reported it, Tallyhub
    ``estimated`` it, or it was ``clamped`` to what the request could have used
    (domain/usage_bounds.py).
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    source: UsageSource = "provider"
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_calls: int = 0
    service_tier: str | None = None
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Several usages are built per request (the hold's worst case, the provider's report,
        # the record and each projection reading it back): plain ints, no flags, is checked
        # in a few C calls; anything else goes through the checks that name the field.
        counts = (
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.images,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.web_search_calls,
        )
        if set(map(type, counts)) != _INT_ONLY or min(counts) < 0:
            _check_counts(self)
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens cannot exceed input_tokens")
        if self.cached_input_tokens + self.cache_write_5m_tokens + self.cache_write_1h_tokens > self.input_tokens:
            raise ValueError("cached input and cache writes together cannot exceed input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens cannot exceed output_tokens")
        if self.source not in ("provider", "estimated", "clamped"):
            raise ValueError(f"unknown usage source {self.source!r}")
        tier = self.service_tier
        if tier is not None and (not isinstance(tier, str) or not tier or len(tier) > MAX_SERVICE_TIER_LENGTH):
            raise ValueError(f"usage.service_tier must be a name of 1 to {MAX_SERVICE_TIER_LENGTH} characters")
        flags = self.flags
        if flags == () and type(flags) is tuple:
            return  # already sorted and unique
        if isinstance(flags, str) or not all(isinstance(flag, str) and flag for flag in flags):
            raise ValueError("usage.flags must be a sequence of names")
        object.__setattr__(self, "flags", tuple(sorted(set(flags))))

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens priced at the plain input rate: neither cache reads nor writes."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_5m_tokens - self.cache_write_1h_tokens

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the original six keys always, each newer one only when it is
        not its default (a usage without them is stored byte for byte as before)."""
        data = {name: getattr(self, name) for name in _BASE_FIELDS}
        for name in _NEWER_FIELDS:
            value = getattr(self, name)
            if value != _DEFAULTS[name]:
                data[name] = list(value) if name == "flags" else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Usage":
        if "flags" in data and data["flags"] is not None:
            data = {**data, "flags": tuple(data["flags"])}
        return cls(**data)


def _check_counts(usage: Usage) -> None:
    for name in COUNT_FIELDS:
        value = getattr(usage, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"usage.{name} must be a non-negative integer, got {value!r}")


_INT_ONLY = {int}
_BASE_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "images", "source")
_NEWER_FIELDS = tuple(field.name for field in fields(Usage) if field.name not in _BASE_FIELDS)
_DEFAULTS = {field.name: field.default for field in fields(Usage)}
