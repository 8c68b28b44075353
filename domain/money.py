"""Money is an integer number of nanocredits (1 credit = 10**9 nanocredits).

Invariants kept here:
- no float ever enters or leaves the money path: amounts are ``int``;
- an amount written by an operator or a payment system is read by one grammar and
  nothing else: an optional ``-`` (only where a negative amount is allowed), ASCII
  digits, and optionally ``.`` followed by 1 to 9 ASCII digits (``"12"``, ``"2.5"``,
  ``"-0.000000001"``). Spaces, ``+``, exponents (``1e3``), ``_`` separators, other
  scripts' digits (``"٥"``), ``NaN`` and ``Infinity`` are refused, as is a JSON
  integer that is a float or a boolean;
- the conversion is exact integer arithmetic on the text, never ``Decimal`` with its
  28-digit context (which rounds a 29-digit amount silently): exact or refused;
- an amount is at most ``maximum`` nanocredits in magnitude (``domain/bounds.py``'s
  ``MAX_AMOUNT`` unless the caller names another bound, e.g. ``MAX_RATE`` for a
  price); text too long to be within it is refused before it is converted;
- a refusal is ``InvalidAmount``, which names the field (``param``) it came from;
- formatting back to credits is exact (nine decimal places).
"""

import re
from decimal import Decimal
from typing import NewType

from domain.errors import InvalidRequest

Nanocredits = NewType("Nanocredits", int)

NANOCREDITS_PER_CREDIT = 10**9

from domain import bounds  # noqa: E402 - bounds reads NANOCREDITS_PER_CREDIT from this module

_AMOUNT = re.compile(r"(-?)([0-9]+)(?:\.([0-9]{1,9}))?")  # [0-9] is ASCII only, unlike \d
_MAX_TEXT = 64  # characters: far more than any amount within a bound needs


class InvalidAmount(InvalidRequest, ValueError):
    """Text that is not an exact amount of credits within its bound."""

    code = "invalid_amount"

    def __init__(self, message: str, *, param: str | None = "amount") -> None:
        super().__init__(message, param=param)


def parse_credits(
    text: str | int | Decimal, *, allow_negative: bool = False, maximum: int | None = None, param: str | None = "amount"
) -> Nanocredits:
    """Convert credits written as decimal text (or a whole number of credits given as an
    ``int``) to nanocredits, exactly or not at all (``InvalidAmount`` naming ``param``).
    ``maximum`` (nanocredits; default ``bounds.MAX_AMOUNT``) bounds the magnitude."""
    bound = bounds.MAX_AMOUNT if maximum is None else maximum
    if isinstance(text, bool) or not isinstance(text, (str, int, Decimal)):
        raise InvalidAmount(
            f"{_name(param)} must be decimal text or an integer, not {type(text).__name__}", param=param
        )
    if isinstance(text, int):
        value = _whole_credits(text, bound, param)
        negative = value < 0
    else:
        text = format(text, "f") if isinstance(text, Decimal) else text
        negative = text.startswith("-")  # "-0" too: no sign where none is allowed
        value = _from_text(text, bound, param)
    if negative and not allow_negative:
        raise InvalidAmount(f"{_name(param)} must not be negative", param=param)
    return Nanocredits(value)


def _whole_credits(credits: int, bound: int, param: str | None) -> int:
    if abs(credits) > bound // NANOCREDITS_PER_CREDIT + 1:  # refused before a huge multiplication
        raise _too_large(bound, param)
    return _within(credits * NANOCREDITS_PER_CREDIT, bound, param)


def _from_text(text: str, bound: int, param: str | None) -> int:
    match = _AMOUNT.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        if len(text) > _MAX_TEXT and _AMOUNT.fullmatch(text):
            raise _too_large(bound, param)
        shown = text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"
        raise InvalidAmount(
            f"{_name(param)} must be credits as decimal text: ASCII digits, optionally '.' and "
            f'at most 9 decimal places, a nanocredit (e.g. "12.5"), not {shown!r}',
            param=param,
        )
    sign, whole, fraction = match.groups()
    value = int(whole) * NANOCREDITS_PER_CREDIT + int((fraction or "").ljust(9, "0"))
    return _within(-value if sign else value, bound, param)


def _within(value: int, bound: int, param: str | None) -> int:
    if abs(value) > bound:
        raise _too_large(bound, param)
    return value


def _too_large(bound: int, param: str | None) -> InvalidAmount:
    return InvalidAmount(f"{_name(param)} is above the maximum of {format_credits(bound)} credits", param=param)


def _name(param: str | None) -> str:
    return param or "amount"


def format_credits(amount: int) -> str:
    """Exact decimal text of an amount in credits, always nine decimal places."""
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), NANOCREDITS_PER_CREDIT)
    return f"{sign}{whole}.{fraction:09d}"
