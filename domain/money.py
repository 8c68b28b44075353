"""Money is an integer number of nanocredits (1 credit = 10**9 nanocredits).

Invariants kept here:
- no float ever enters or leaves the money path: amounts are ``int``;
- decimal text ("2.5", "0.000000001") is converted exactly or refused, never rounded;
- formatting back to credits is exact (nine decimal places).
"""

from decimal import Decimal, InvalidOperation
from typing import NewType

Nanocredits = NewType("Nanocredits", int)

NANOCREDITS_PER_CREDIT = 10**9


class InvalidAmount(ValueError):
    """Text that is not an exact, finite amount of credits."""


def parse_credits(text: str | int | Decimal, *, allow_negative: bool = False) -> Nanocredits:
    """Convert credits written as decimal text to nanocredits, exactly or not at all."""
    if isinstance(text, bool) or isinstance(text, float):
        raise InvalidAmount(f"amount must be decimal text or an integer, not {type(text).__name__}")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidAmount(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise InvalidAmount(f"not a finite number: {text!r}")
    scaled = value * NANOCREDITS_PER_CREDIT
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(f"{text!r} is finer than one nanocredit (at most 9 decimal places)")
    if scaled < 0 and not allow_negative:
        raise InvalidAmount(f"amount must not be negative: {text!r}")
    return Nanocredits(int(scaled))


def format_credits(amount: int) -> str:
    """Exact decimal text of an amount in credits, always nine decimal places."""
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), NANOCREDITS_PER_CREDIT)
    return f"{sign}{whole}.{fraction:09d}"
