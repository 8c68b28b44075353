"""What a price-book version about to be published changes, against the latest version:
models added, models whose rates change (each field old → new), models removed (a price
file is a complete version: a model it leaves out is no longer priced), and how many stay
as they are. Rates are shown as ``tallyhub prices show`` gives them (``price_json``: exact
decimal credits per 1M tokens), never through a float.

An import's diff is the import's own dry run (application/price_import.py ``ImportPlan``:
its added / changed / unchanged lists), shown the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.presenters import price_json
from application.price_import import ImportPlan
from domain.pricing import ModelPrice

COLUMNS = ["model", "change", "field", "old", "new"]


@dataclass(frozen=True)
class VersionDiff:
    base_version: int
    added: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> its shown fields
    changed: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # model -> field -> (old, new)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return (
            f"against version {self.base_version}: {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.removed)} removed, {len(self.unchanged)} unchanged"
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per field added or changed, one per model removed (``COLUMNS``)."""
        rows = [
            {"model": model, "change": "added", "field": name, "old": "—", "new": _text(value)}
            for model, fields in sorted(self.added.items())
            for name, value in fields.items()
            if value is not None
        ]
        rows += [
            {"model": model, "change": "changed", "field": name, "old": _text(old), "new": _text(new)}
            for model, fields in sorted(self.changed.items())
            for name, (old, new) in fields.items()
        ]
        rows += [
            {"model": model, "change": "removed", "field": "", "old": "priced", "new": "—"} for model in self.removed
        ]
        return rows


@dataclass(frozen=True)
class Proposal:
    """A version reviewed on the prices page, waiting for "Publish" (kept in the session;
    defined here, not in the page, so that it is one class across the page's runs)."""

    origin: str  # form | file | import
    what: str
    base_version: int
    prices: dict[str, ModelPrice]
    effective_at: datetime | None
    diff: VersionDiff
    model: str | None = None  # the form's model: published as ``prices set`` does when effective now
    notes: list[str] = field(default_factory=list)


def shown_fields(price: ModelPrice) -> dict[str, Any]:
    """A price's fields as ``prices show`` shows them, flat (``provider_cost.input``, ``context_tiers.0.input``)."""
    return dict(_flat(price_json(price.to_dict())))


def diff_versions(
    base_version: int, current: Mapping[str, ModelPrice], proposed: Mapping[str, ModelPrice]
) -> VersionDiff:
    """``proposed`` (a complete version) against ``current`` (the latest's prices)."""
    diff = VersionDiff(base_version)
    for model in sorted(proposed):
        old, new = current.get(model), proposed[model]
        if old is None:
            diff.added[model] = shown_fields(new)
        elif old.to_dict() == new.to_dict():
            diff.unchanged.append(model)
        else:
            diff.changed[model] = _changes(old, new)
    diff.removed.extend(sorted(set(current) - set(proposed)))
    return diff


def diff_of_import(plan: ImportPlan) -> VersionDiff:
    """The import's dry run, as a ``VersionDiff`` (an import never removes a model)."""
    diff = VersionDiff(plan.base_version, unchanged=list(plan.unchanged))
    for change in plan.added:
        diff.added[change.model] = shown_fields(change.new)
    for change in plan.changed:
        assert change.old is not None
        diff.changed[change.model] = _changes(change.old, change.new)
    return diff


def _changes(old: ModelPrice, new: ModelPrice) -> dict[str, tuple[Any, Any]]:
    before, after = shown_fields(old), shown_fields(new)
    return {
        name: (before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def _flat(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _flat(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _flat(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), data


def _text(value: Any) -> str:
    return "unset" if value is None else str(value)
