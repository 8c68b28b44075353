"""Who and what a request was for, as its caller said: the end user, metadata and tags.

Three sources, all optional: OpenAI's ``user`` field (Anthropic's ``metadata.user_id``
arrives as it), OpenAI's ``metadata`` object (chat completions) and the
``x-tallyhub-tags`` header (a comma-separated list). Invariants kept here:
- a value is recorded exactly as sent, except that tags are trimmed, empty ones dropped
  and repeats kept once (first-seen order); metadata keeps the caller's key order;
- every part is bounded (``MAX_*`` below; metadata as OpenAI bounds it): a request over a
  bound is refused with ``InvalidRequest`` naming the field (``param``), before anything
  is held or called, so no record ever holds more;
- nothing sent means no attribution (``parse_attribution`` gives ``None``), and a record
  without one stores no key at all (domain/request_record.py), so older records' stored
  form is unchanged.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidRequest

MAX_USER_CHARS = 256
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_TAGS = 16
MAX_TAG_CHARS = 64
TAG_PATTERN = re.compile(r"[A-Za-z0-9._:/-]+")
TAGS_HEADER = "x-tallyhub-tags"


@dataclass(frozen=True, slots=True)
class Attribution:
    """A request's attribution; at least one part is set (an empty one is ``None``)."""

    user: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # (key, value) pairs in the order sent
    tags: tuple[str, ...] = ()  # trimmed, unique, in the order first sent

    def to_dict(self) -> dict[str, Any]:
        """The stored form: only the parts that are set."""
        data: dict[str, Any] = {}
        if self.user is not None:
            data["user"] = self.user
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        if self.tags:
            data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Attribution":
        metadata = data.get("metadata") or {}
        return cls(
            user=data.get("user"),
            metadata=tuple((str(k), str(v)) for k, v in metadata.items()),
            tags=tuple(str(tag) for tag in data.get("tags") or ()),
        )


def parse_attribution(user: Any = None, metadata: Any = None, tags: str | None = None) -> Attribution | None:
    """The attribution of a request from its ``user`` and ``metadata`` body fields and its
    tags header (``None`` where absent); ``None`` when there is none. Raises ``InvalidRequest``
    (``param``: ``user``, ``metadata`` or ``x-tallyhub-tags``) when a part is malformed or over
    its bound."""
    parsed = Attribution(user=_user(user), metadata=_metadata(metadata), tags=_tags(tags))
    return parsed if parsed.user is not None or parsed.metadata or parsed.tags else None


def _user(user: Any) -> str | None:
    if user is None or user == "":
        return None
    if not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", param="user")
    if len(user) > MAX_USER_CHARS:
        raise InvalidRequest(f"'user' must be at most {MAX_USER_CHARS} characters", param="user")
    return user


def _metadata(metadata: Any) -> tuple[tuple[str, str], ...]:
    if metadata is None:
        return ()
    if not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object of string values", param="metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(f"'metadata' may hold at most {MAX_METADATA_PAIRS} pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequest(
                f"'metadata' keys must be at most {MAX_METADATA_KEY_CHARS} characters", param="metadata"
            )
        if not isinstance(value, str):
            raise InvalidRequest(f"'metadata.{key}' must be a string", param="metadata")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"'metadata' values must be at most {MAX_METADATA_VALUE_CHARS} characters", param="metadata"
            )
    return tuple(metadata.items())


def _tags(header: str | None) -> tuple[str, ...]:
    if header is None:
        return ()
    tags: dict[str, None] = {}
    for part in header.split(","):
        tag = part.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS or not TAG_PATTERN.fullmatch(tag):
            raise InvalidRequest(
                f"each tag must be 1 to {MAX_TAG_CHARS} characters of A-Z a-z 0-9 . _ : / -", param=TAGS_HEADER
            )
        tags[tag] = None
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} distinct tags", param=TAGS_HEADER)
    return tuple(tags)
