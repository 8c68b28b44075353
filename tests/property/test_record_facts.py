"""A request record's stored form and its readers: ``record_facts`` (what the read models
show, read straight from the stored ``details``) gives exactly what ``RequestDetails.from_dict``
gives for any stored form it accepts, keys missing included (records made by hand or by older
code); any details billing records read back from their stored form equal to themselves, so a
record just made may keep the details it was made from (domain/request_record.py)."""

from typing import Any
from uuid import uuid4

from hypothesis import assume, given
from hypothesis import strategies as st

from domain.attribution import Attribution
from domain.request_record import RecordFacts, RequestDetails, RequestRecord, record_facts
from domain.usage import FLAGS, Usage

ids = st.none() | st.uuids().map(lambda u: u.hex)
names = st.text(max_size=12)
amounts = st.integers(0, 10**18)
millis = st.floats(0, 10**7, allow_nan=False)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    inputs = draw(st.integers(0, 10**9))
    cached = draw(st.integers(0, inputs))
    write_5m = draw(st.integers(0, inputs - cached))
    outputs = draw(st.integers(0, 10**9))
    return Usage(
        input_tokens=inputs,
        cached_input_tokens=cached,
        output_tokens=outputs,
        reasoning_tokens=draw(st.integers(0, outputs)),
        images=draw(st.integers(0, 10)),
        source=draw(st.sampled_from(("provider", "estimated", "clamped"))),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=draw(st.integers(0, inputs - cached - write_5m)),
        web_search_calls=draw(st.integers(0, 5)),
        service_tier=draw(st.none() | st.sampled_from(("default", "flex", "priority"))),
        flags=tuple(draw(st.sets(st.sampled_from(sorted(FLAGS))))),
    )


@st.composite
def attributions(draw: st.DrawFn) -> Attribution | None:
    user = draw(st.none() | st.text(min_size=1, max_size=8))
    metadata = tuple(draw(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3)).items())
    tags = tuple(draw(st.lists(st.text(min_size=1, max_size=5), max_size=3, unique=True)))
    if user is None and not metadata and not tags:
        return None  # a request without any (domain/attribution.py ``parse_attribution``)
    return Attribution(user=user, metadata=metadata, tags=tags)


@st.composite
def billed_details(draw: st.DrawFn) -> RequestDetails:
    """Details as billing records them (application/billing.py ``_details``)."""
    completed = draw(st.booleans())
    return RequestDetails(
        outcome="completed" if completed else "failed",
        account_id=draw(ids),
        api_key_id=draw(ids),
        requested_model=draw(names),
        model=draw(names),
        provider=draw(names),
        upstream_model=draw(names),
        credential_id=draw(ids | st.text(min_size=1, max_size=8)),
        endpoint=draw(st.sampled_from(("chat.completions", "messages", "embeddings", "images.generations"))),
        stream=draw(st.booleans()),
        status=draw(st.integers(100, 599)),
        error_code=draw(st.none() | names),
        usage=draw(usages()) if completed else None,
        charge=draw(amounts),
        cost=draw(amounts),
        uncollected=draw(amounts),
        hold=draw(amounts),
        price_book_version=draw(st.none() | st.integers(1, 10**6)),
        priced=draw(st.booleans()),
        latency_ms=draw(millis),
        ttfb_ms=draw(st.none() | millis),
        started_at=draw(st.none() | st.datetimes().map(lambda at: at.isoformat())),
        provider_cost=draw(st.none() | amounts) if completed else None,
        reported_usage=draw(st.none() | usages()) if completed else None,
        attribution=draw(attributions()),
    )


@st.composite
def stored_forms(draw: st.DrawFn) -> dict[str, Any]:
    """A stored ``details`` object, some keys (its usage's too) missing, null or empty: hand-made or older."""
    stored = draw(billed_details()).to_dict()
    for key in sorted(stored):
        change = draw(st.sampled_from(("kept", "kept", "missing", "null", "empty")))
        if change == "kept":
            continue
        if change == "missing":
            del stored[key]
        elif change == "null" or not isinstance(stored[key], str | int | float):
            stored[key] = None
        else:
            stored[key] = type(stored[key])()  # '', 0, 0.0 or False
    if stored.get("usage") is not None:
        usage = dict(stored["usage"])
        for key in sorted(usage):
            if draw(st.booleans()):
                del usage[key]
        stored["usage"] = usage
    return stored


def read_by_from_dict(details: RequestDetails) -> RecordFacts:
    usage = details.usage
    return RecordFacts(
        outcome=details.outcome,
        account_id=details.account_id,
        api_key_id=details.api_key_id,
        provider=details.provider,
        model=details.model,
        upstream_model=details.upstream_model,
        credential_id=details.credential_id,
        endpoint=details.endpoint,
        stream=details.stream,
        status=details.status,
        error_code=details.error_code,
        counts=None
        if usage is None
        else (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.images),
        source=None if usage is None else usage.source,
        charge=details.charge,
        cost=details.cost,
        price_book_version=details.price_book_version,
        provider_cost=details.provider_cost,
        latency_ms=details.latency_ms,
        ttfb_ms=details.ttfb_ms,
        attribution=details.attribution,
    )


def typed(facts: RecordFacts) -> list[tuple[Any, type]]:
    return [(value, type(value)) for value in facts]


@given(stored_forms())
def test_the_read_models_read_every_field_of_any_stored_form_as_from_dict_does(stored: dict[str, Any]) -> None:
    try:
        details = RequestDetails.from_dict(stored)
    except ValueError:  # a usage its missing counts made inconsistent: no record holds one
        assume(False)
    assert typed(record_facts(stored)) == typed(read_by_from_dict(details))


@given(billed_details())
def test_billed_details_read_back_from_their_stored_form_equal_to_themselves(details: RequestDetails) -> None:
    assert RequestDetails.from_dict(details.to_dict()) == details


@given(billed_details())
def test_a_record_just_made_says_what_the_same_record_loaded_from_its_event_says(details: RequestDetails) -> None:
    made = (RequestRecord.completed if details.succeeded else RequestRecord.failed)(uuid4(), details)
    (created,) = made.collect_events()
    assert isinstance(created, RequestRecord.Completed | RequestRecord.Failed)
    assert created.details == details.to_dict()  # the stored form: what it always was
    loaded = created.mutate(None)
    assert isinstance(loaded, RequestRecord) and loaded.details == made.details == details
