"""Usage estimates for when a provider reports none (or a stream ends early).

The documented method: one token per four characters of text, rounded up
(``ceil(chars / 4)``), which is OpenAI's published rule of thumb for English. Every
estimate is marked ``source="estimated"`` on the charge and in the receipt.
"""

from domain.usage import Usage

CHARS_PER_TOKEN = 4


def tokens_for_chars(chars: int) -> int:
    return -(-max(chars, 0) // CHARS_PER_TOKEN)


def estimated_usage(*, input_chars: int, output_chars: int) -> Usage:
    return Usage(
        input_tokens=tokens_for_chars(input_chars), output_tokens=tokens_for_chars(output_chars), source="estimated"
    )
