"""What a request consumed, as reported by a provider or estimated by Tallyhub."""

from dataclasses import dataclass, fields
from typing import Any, Literal

UsageSource = Literal["provider", "estimated", "clamped"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token and image counts of one request.

    ``input_tokens`` includes ``cached_input_tokens`` and ``output_tokens`` includes
    ``reasoning_tokens``, as OpenAI reports them; pricing never counts a token twice.
    ``source``: ``provider`` reported it, Tallyhub ``estimated`` it, or it was
    ``clamped`` to what the request could have used (domain/usage_bounds.py).
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    source: UsageSource = "provider"

    def __post_init__(self) -> None:
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "images"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"usage.{name} must be a non-negative integer, got {value!r}")
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens cannot exceed input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens cannot exceed output_tokens")
        if self.source not in ("provider", "estimated", "clamped"):
            raise ValueError(f"unknown usage source {self.source!r}")

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in _FIELDS}  # asdict's deep copy is not needed here

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Usage":
        return cls(**data)


_FIELDS = tuple(field.name for field in fields(Usage))
