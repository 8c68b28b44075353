"""The largest numbers the ledger accepts, so that no event carries a value its read
models cannot store.

Read models keep money and counts in 64-bit integer columns (SQLite's INTEGER,
PostgreSQL's BIGINT: at most 9,223,372,036,854,775,807), and sum them per account,
key, model and hour. The bounds below keep every single value, and every realistic
sum of them, far inside that range:

- ``MAX_AMOUNT``: one movement of credit (a grant, adjustment, payment, refund, a
  starter grant, a spend cap) is at most 10,000,000 credits (10^16 nanocredits);
- ``MAX_BALANCE``: an account's balance never passes 1,000,000,000 credits (10^18
  nanocredits): a grant, payment, refund or adjustment that would take it past that
  is refused, so 9 accounts at the bound still sum inside 64 bits;
- ``MAX_TOKENS``: one usage count of one request (input, cached input, output,
  reasoning tokens) is at most 10^9 tokens, a hundred times the largest context any
  model offers; ``MAX_IMAGES`` likewise for images, ``MAX_WEB_SEARCH_CALLS`` for the
  server-side web searches one request may be charged for (the hold of a model with a
  web-search fee covers that many);
- ``MAX_RATE``: a price is at most 100,000 credits per 1M tokens (or per image or
  request), so the dearest possible request costs under 10^18 nanocredits.

Operator input above a bound is refused with a 400 naming the field; usage a
provider reports above what a request could have used is charged at that bound
instead (``domain/usage_bounds.py``).
"""

from domain.money import NANOCREDITS_PER_CREDIT

MAX_AMOUNT = 10_000_000 * NANOCREDITS_PER_CREDIT
MAX_BALANCE = 1_000_000_000 * NANOCREDITS_PER_CREDIT
MAX_TOKENS = 10**9
MAX_IMAGES = 1_000
MAX_WEB_SEARCH_CALLS = 100
MAX_RATE = 100_000 * NANOCREDITS_PER_CREDIT


def within(value: int, bound: int) -> bool:
    """``value`` is a plain integer from 0 to ``bound`` (booleans are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= bound
