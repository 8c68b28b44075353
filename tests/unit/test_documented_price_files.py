"""The price files the README and docs/billing.md show are price files: each publishes as
written (an operator copies them), with the rates the text says."""

import re
from pathlib import Path

import pytest

from application.pricing_input import parse_price_file
from domain.pricing import price_usage
from domain.usage import Usage

ROOT = Path(__file__).resolve().parents[2]


def json_blocks(path: Path, heading: str) -> list[str]:
    text = path.read_text()
    section = text[text.index(heading) :]
    section = section[: section.index("\n## ", len(heading))]
    return re.findall(r"```json\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize(
    ("document", "heading"), [("README.md", "## Price files"), ("docs/billing.md", "## The price book")]
)
def test_the_documented_price_file_publishes_as_written(document: str, heading: str) -> None:
    (block,) = json_blocks(ROOT / document, heading)
    prices, effective_at = parse_price_file(block)
    assert effective_at is not None and effective_at.isoformat() == "2026-12-01T00:00:00+00:00"
    sonnet = prices["anthropic/claude-sonnet-4"]
    # 1,000 prompt tokens written to the 5-minute cache at 3.75 and 100 output at 15, below the tier
    usage = Usage(input_tokens=1_000, cache_write_5m_tokens=1_000, output_tokens=100)
    assert price_usage(sonnet, usage) == 1_000 * 3_750 + 100 * 15_000
    gemini = prices["gemini/gemini-2.5-pro"]
    assert price_usage(gemini, Usage(input_tokens=200_001, output_tokens=0)) == 200_001 * 2_500
