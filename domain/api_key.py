"""A caller's API key. Only a keyed digest of the key is ever stored; the aggregate id
is derived from that digest, so authenticating is one lookup by identity.

A key is usable while it is not revoked, not expired and, once rotated, until the end
of its grace period. A key may be limited to some models: ``provider/model`` ids,
``provider/*`` wildcards, or alias names (an allowed alias may use its fallbacks);
``allowed_models`` None means every model.

A key's ``prefix`` is what may be shown of it: its kind and last 4 characters
(``thk_…x9Qz``). Keys issued before that rule was kept recorded their first 12
characters (8 of them secret) in their ``Issued`` event; history cannot be edited, so
those are shown as their kind alone (``thk_…``) whenever such a key is loaded.
"""

import re
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest, PermissionDenied
from domain.rate_limits import RateLimits

MAX_ALLOWED_MODELS = 200
_MODEL_PATTERN = re.compile(r"[^\s/]{1,200}(/[^\s]{1,200})?")


class ApiKey(Aggregate):
    class Issued(Aggregate.Created):
        digest: str
        account_id: UUID
        name: str
        prefix: str
        expires_at: datetime | None

    class Revoked(Aggregate.Event):
        reason: str

    class Rotated(Aggregate.Event):
        replaced_by: UUID
        retires_at: datetime | None

    class AllowedModelsChanged(Aggregate.Event):
        models: list[str] | None

    class RateLimitsSet(Aggregate.Event):
        rpm: int | None
        tpm: int | None
        max_parallel: int | None

    @staticmethod
    def create_id(digest: str) -> UUID:
        return ids.api_key_id(digest)

    @event(Issued)
    def __init__(self, digest: str, account_id: UUID, name: str, prefix: str, expires_at: datetime | None) -> None:
        self.digest = digest
        self.account_id = account_id
        self.name = name
        self.prefix = shown_prefix(prefix)
        self.expires_at = expires_at
        self.revoked = False
        self.allowed_models: list[str] | None = None
        self.replaced_by: UUID | None = None
        self.retires_at: datetime | None = None
        self.rate_limits = RateLimits()

    def revoke(self, reason: str = "") -> None:
        if not self.revoked:
            self._revoked(reason=reason)

    @event(Revoked)
    def _revoked(self, reason: str) -> None:
        self.revoked = True

    def rotate(self, replaced_by: UUID, retires_at: datetime | None) -> None:
        """Replaced by another key: revoked now (``retires_at`` None) or usable until ``retires_at``."""
        if self.revoked or self.replaced_by is not None:
            raise InvalidRequest(f"key {self.id} is already revoked or rotated", param="key_id")
        self._rotated(replaced_by=replaced_by, retires_at=retires_at)
        if retires_at is None:
            self.revoke("rotated")

    @event(Rotated)
    def _rotated(self, replaced_by: UUID, retires_at: datetime | None) -> None:
        self.replaced_by = replaced_by
        self.retires_at = retires_at

    def allow_models(self, models: list[str] | None) -> None:
        """Limit the key to ``models`` (None: every model)."""
        models = None if models is None else check_model_patterns(models)
        if models != self.allowed_models:
            self._allowed_models_changed(models=models)

    @event(AllowedModelsChanged)
    def _allowed_models_changed(self, models: list[str] | None) -> None:
        self.allowed_models = models

    def set_rate_limits(self, limits: RateLimits) -> None:
        """The key's requests, tokens per minute and parallel requests (domain/rate_limits.py)."""
        if limits != self.rate_limits:
            self._rate_limits_set(rpm=limits.rpm, tpm=limits.tpm, max_parallel=limits.max_parallel)

    @event(RateLimitsSet)
    def _rate_limits_set(self, rpm: int | None, tpm: int | None, max_parallel: int | None) -> None:
        self.rate_limits = RateLimits(rpm=rpm, tpm=tpm, max_parallel=max_parallel)

    def allows(self, model: str) -> bool:
        if self.allowed_models is None:
            return True
        provider = model.partition("/")[0]
        return any(
            pattern == model or (pattern.endswith("/*") and "/" in model and pattern[:-2] == provider)
            for pattern in self.allowed_models
        )

    def ensure_allows(self, model: str) -> None:
        if not self.allows(model):
            raise PermissionDenied(f"this API key may not use the model {model!r}")

    def is_usable(self, now: datetime) -> bool:
        return (
            not self.revoked
            and (self.expires_at is None or now < self.expires_at)
            and (self.retires_at is None or now < self.retires_at)
        )


def shown_prefix(recorded: str) -> str:
    """A recorded prefix as it may be shown: a masked one (``thk_…x9Qz``) as it is; an old
    12-character one (``thk_`` and 8 characters of the key) cut to its kind, ``thk_…``."""
    if "…" in recorded:
        return recorded
    kind, separator, _ = recorded.partition("_")
    return f"{kind}{separator}…" if separator and len(kind) <= 8 else "…"


def check_model_patterns(models: list[str]) -> list[str]:
    """Cleaned, de-duplicated patterns in the order given; raises InvalidRequest."""
    cleaned = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
    if not cleaned:
        raise InvalidRequest("give at least one allowed model (or allow every model)", param="models")
    if len(cleaned) > MAX_ALLOWED_MODELS:
        raise InvalidRequest(f"at most {MAX_ALLOWED_MODELS} allowed models", param="models")
    for model in cleaned:
        if not _MODEL_PATTERN.fullmatch(model) or not model.isprintable() or ("*" in model and not _wildcard(model)):
            raise InvalidRequest(f"{model!r} is not a model id, PROVIDER/* or an alias name", param="models")
    return cleaned


def _wildcard(model: str) -> bool:
    provider, _, rest = model.partition("/")
    return rest == "*" and "*" not in provider
