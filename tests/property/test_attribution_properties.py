"""Attribution, for any input within the bounds: tags come out trimmed, unique and in the
order first sent; what is recorded reads back exactly (stored form and back); anything
outside the tag alphabet is refused, never silently changed."""

from hypothesis import given
from hypothesis import strategies as st

from domain.attribution import MAX_TAG_CHARS, MAX_TAGS, TAGS_HEADER, Attribution, parse_attribution
from domain.errors import InvalidRequest

TAG = st.text(alphabet="abcXYZ019._:/-", min_size=1, max_size=MAX_TAG_CHARS)
SPACE = st.sampled_from(["", " ", "  ", "\t"])
USER = st.text(max_size=256)
METADATA = st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16)


@given(st.lists(st.tuples(SPACE, TAG, SPACE), max_size=40), st.booleans())
def test_tags_are_trimmed_unique_and_in_first_seen_order(parts: list[tuple[str, str, str]], trailing: bool) -> None:
    header = ",".join(f"{a}{tag}{b}" for a, tag, b in parts) + ("," if trailing else "")
    unique = list(dict.fromkeys(tag for _, tag, _ in parts))
    if len(unique) > MAX_TAGS:
        try:
            parse_attribution(tags=header)
        except InvalidRequest as refused:
            assert refused.param == TAGS_HEADER
            return
        raise AssertionError("more than MAX_TAGS distinct tags were accepted")
    parsed = parse_attribution(tags=header)
    assert (parsed.tags if parsed else ()) == tuple(unique)


@given(USER, METADATA, st.lists(TAG, max_size=MAX_TAGS, unique=True))
def test_what_is_recorded_reads_back_exactly(user: str, metadata: dict[str, str], tags: list[str]) -> None:
    parsed = parse_attribution(user, metadata, ",".join(tags))
    if parsed is None:
        assert not user and not metadata and not tags
        return
    assert parsed == Attribution(user or None, tuple(metadata.items()), tuple(tags))
    assert Attribution.from_dict(parsed.to_dict()) == parsed


ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-")


def _has_foreign(text: str) -> bool:
    return any(c not in ALPHABET and c != "," and not c.isspace() for c in text)


@given(st.text(min_size=1, max_size=20).filter(_has_foreign))
def test_a_tag_outside_the_alphabet_is_refused(text: str) -> None:
    try:
        parse_attribution(tags=text)
    except InvalidRequest as refused:
        assert refused.param == TAGS_HEADER
    else:
        raise AssertionError(f"{text!r} was accepted")
