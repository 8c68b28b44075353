"""Usage estimates for when a provider reports none (or a stream ends early).

The documented method: one token per four characters of text, rounded up
(``ceil(chars / 4)``), which is OpenAI's published rule of thumb for English. Every
estimate is marked ``source="estimated"`` on the charge and in the receipt.

Invariant: an estimate's output never exceeds ``output_cap`` when one is given (the
request's ``max_tokens``, or the model's output limit, per choice: what the request
could have produced); an estimate held to it is flagged ``output_capped``. Characters
are not tokens, and a provider that sent more text than its token limit allows (or a
relay that counted tool-call JSON generously) must not make the estimate exceed what
the provider could have billed.
"""

from domain.usage import Usage

CHARS_PER_TOKEN = 4


def tokens_for_chars(chars: int) -> int:
    return -(-max(chars, 0) // CHARS_PER_TOKEN)


def estimated_usage(*, input_chars: int, output_chars: int, output_cap: int | None = None) -> Usage:
    output = tokens_for_chars(output_chars)
    capped = output_cap is not None and output > output_cap
    return Usage(
        input_tokens=tokens_for_chars(input_chars),
        output_tokens=min(output, max(output_cap, 0)) if output_cap is not None else output,
        source="estimated",
        flags=("output_capped",) if capped else (),
    )
