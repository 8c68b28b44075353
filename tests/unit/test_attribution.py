"""Attribution (domain/attribution.py): each bound passes at its limit and is refused one
over it, naming the field; tags are trimmed and de-duplicated; a record keeps exactly what
was sent, stores nothing when nothing was sent, and an older record reads as none."""

from typing import Any

import pytest

from domain.attribution import (
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_USER_CHARS,
    Attribution,
    parse_attribution,
)
from domain.errors import InvalidRequest
from domain.request_record import RequestDetails
from domain.usage import Usage

TAGS = "x-tallyhub-tags"


def pairs(count: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(count)}


def tags(count: int) -> str:
    return ",".join(f"t{i}" for i in range(count))


AT_THE_LIMIT: list[tuple[str, dict[str, Any]]] = [
    ("user", {"user": "u" * MAX_USER_CHARS}),
    ("metadata pairs", {"metadata": pairs(MAX_METADATA_PAIRS)}),
    ("metadata key", {"metadata": {"k" * MAX_METADATA_KEY_CHARS: "v"}}),
    ("metadata value", {"metadata": {"k": "v" * MAX_METADATA_VALUE_CHARS}}),
    ("tag count", {"tags": tags(MAX_TAGS)}),
    ("tag length", {"tags": "t" * MAX_TAG_CHARS}),
    ("tag alphabet", {"tags": "Az09._:/-"}),
]
ONE_OVER: list[tuple[str, dict[str, Any], str]] = [
    ("user", {"user": "u" * (MAX_USER_CHARS + 1)}, "user"),
    ("user not text", {"user": 42}, "user"),
    ("metadata pairs", {"metadata": pairs(MAX_METADATA_PAIRS + 1)}, "metadata"),
    ("metadata key", {"metadata": {"k" * (MAX_METADATA_KEY_CHARS + 1): "v"}}, "metadata"),
    ("metadata value", {"metadata": {"k": "v" * (MAX_METADATA_VALUE_CHARS + 1)}}, "metadata"),
    ("metadata value not text", {"metadata": {"k": 1}}, "metadata"),
    ("metadata not an object", {"metadata": ["k", "v"]}, "metadata"),
    ("tag count", {"tags": tags(MAX_TAGS + 1)}, TAGS),
    ("tag length", {"tags": "t" * (MAX_TAG_CHARS + 1)}, TAGS),
    ("tag alphabet", {"tags": "ok,not ok"}, TAGS),
    ("tag alphabet (comma-free but odd)", {"tags": "semi;colon"}, TAGS),
]


@pytest.mark.parametrize("given", [g for _, g in AT_THE_LIMIT], ids=[n for n, _ in AT_THE_LIMIT])
def test_each_bound_is_accepted_at_its_limit(given: dict[str, Any]) -> None:
    assert parse_attribution(**given) is not None


@pytest.mark.parametrize(("given", "param"), [(g, p) for _, g, p in ONE_OVER], ids=[n for n, _, _ in ONE_OVER])
def test_one_over_a_bound_is_refused_naming_the_field(given: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_attribution(**given)
    assert refused.value.param == param


def test_nothing_sent_is_no_attribution() -> None:
    assert parse_attribution() is None
    assert parse_attribution(user="", metadata={}, tags=" , ,") is None


def test_tags_are_trimmed_and_kept_once_in_first_seen_order() -> None:
    parsed = parse_attribution(tags=" beta , alpha,beta,,gamma ,alpha")
    assert parsed == Attribution(tags=("beta", "alpha", "gamma"))


def test_repeats_do_not_count_toward_the_tag_bound() -> None:
    parsed = parse_attribution(tags=",".join([tags(MAX_TAGS)] * 3))
    assert parsed is not None and len(parsed.tags) == MAX_TAGS


def details(attribution: Attribution | None) -> RequestDetails:
    return RequestDetails(
        outcome="completed",
        account_id="a" * 32,
        api_key_id="b" * 32,
        requested_model="gpt",
        model="openai/gpt",
        provider="openai",
        upstream_model="gpt",
        credential_id=None,
        endpoint="chat.completions",
        stream=False,
        status=200,
        error_code=None,
        usage=Usage(input_tokens=3, output_tokens=2),
        charge=5,
        cost=0,
        uncollected=0,
        hold=9,
        price_book_version=1,
        priced=True,
        latency_ms=1.0,
        ttfb_ms=None,
        started_at=None,
        provider_cost=None,
        attribution=attribution,
    )


def test_the_record_keeps_exactly_what_was_sent() -> None:
    sent = parse_attribution(user="end-user-7", metadata={"z": "1", "a": "2"}, tags="team:ml, run/42")
    stored = details(sent).to_dict()
    assert stored["attribution"] == {
        "user": "end-user-7",
        "metadata": {"z": "1", "a": "2"},
        "tags": ["team:ml", "run/42"],
    }
    assert list(stored["attribution"]["metadata"]) == ["z", "a"]
    assert RequestDetails.from_dict(stored).attribution == sent


def test_only_the_parts_sent_are_stored() -> None:
    assert details(parse_attribution(tags="a")).to_dict()["attribution"] == {"tags": ["a"]}
    assert details(parse_attribution(user="u")).to_dict()["attribution"] == {"user": "u"}


def test_a_record_without_attribution_stores_no_key_and_an_old_record_reads_as_none() -> None:
    stored = details(None).to_dict()
    assert "attribution" not in stored
    assert list(stored)[-1] == "provider_cost", "the stored form of a record without attribution is unchanged"
    assert RequestDetails.from_dict(stored).attribution is None
