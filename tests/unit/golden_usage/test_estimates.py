"""Case 8, the rule itself: an estimate (one token per four characters) never exceeds the
output cap it is given, and says so when it was held to it."""

from hypothesis import given
from hypothesis import strategies as st

from domain.estimation import estimated_usage
from domain.usage import Usage


def test_2kb_of_text_held_to_max_tokens_is_estimated_and_flagged() -> None:
    assert estimated_usage(input_chars=0, output_chars=2048, output_cap=100) == Usage(
        output_tokens=100, source="estimated", flags=("output_capped",)
    )


def test_an_estimate_within_its_cap_is_not_flagged() -> None:
    assert estimated_usage(input_chars=40, output_chars=400, output_cap=100) == Usage(
        input_tokens=10, output_tokens=100, source="estimated"
    )


@given(chars=st.integers(min_value=0, max_value=10**9), cap=st.integers(min_value=1, max_value=10**9))
def test_an_estimate_never_exceeds_its_cap(chars: int, cap: int) -> None:
    usage = estimated_usage(input_chars=chars, output_chars=chars, output_cap=cap)
    assert usage.output_tokens <= cap and usage.source == "estimated"
    assert ("output_capped" in usage.flags) == (-(-chars // 4) > cap)
