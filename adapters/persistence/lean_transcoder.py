"""The event store's JSON encoder, on orjson where that provably gives eventsourcing's bytes.

Invariant: ``LeanJSONTranscoder`` is eventsourcing's ``JSONTranscoder`` as far as anyone can
observe. For every object ``x``, ``encode(x)`` is byte for byte ``JSONTranscoder.encode(x)``
(or both raise), with the same registered transcodings; ``decode`` is ``JSONTranscoder.decode``.
Stored bytes are what exports, verify, replay and every earlier version's data depend on, so
they never change.

How, without guessing:
- encode: one pass over the state keeps only what orjson writes exactly as ``json`` writes it
  (exact ``str``, ``bool``, ``None``, ``int`` within orjson's 64-bit range, ``dict`` with exact
  ``str`` keys, ``list``, ``tuple``) and replaces the rest with what ``json`` would have written:
  a ``float`` or a wider ``int`` by an ``orjson.Fragment`` of ``float.__repr__``/``int.__repr__``
  (the very text ``json``'s C encoder writes), a registered type by its ``{"_type_", "_data_"}``
  dict (what the ``default`` hook returns), whose ``_data_`` for a naive or UTC datetime is the
  datetime itself (orjson writes those exactly as ``isoformat()``, at a fraction of its cost; other
  zones differ, e.g. offsets with seconds). Anything else (subclasses, non-str keys, unknown
  types, nesting deeper than ``_MAX_DEPTH``, e.g. a cycle) and any orjson refusal (e.g. a lone
  surrogate) sends the whole state to the standard encoder, which then succeeds or raises as before.
- decode is the standard one, unchanged: orjson plus a pass applying the object hook saved
  under 10 % on hold events and cost more on request records (whose floats orjson may not read as
  ``float()`` does, so they needed a proof by re-encoding); measured for issue 21.
"""

from __future__ import annotations

from datetime import UTC, datetime
from math import isfinite
from typing import Any

import orjson
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder

_MAX_DEPTH = 200  # below orjson's own nesting limit (254); deeper states take the standard path
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1
# ``json`` writes an instance of these (or of their subclasses) itself and never asks ``default``.
_JSON_NATIVE = (str, int, float, list, tuple, dict)
_float_text = float.__repr__
_int_text = int.__repr__
_Fragment = orjson.Fragment
_UTC = UTC  # orjson writes naive and UTC datetimes as isoformat() does (tests/property)


class _NotExact(Exception):
    """The state holds something the fast path cannot write exactly as ``json`` does."""


class LeanJSONTranscoder(JSONTranscoder):
    """``JSONTranscoder`` writing the same bytes on orjson (module docstring). Being a subclass, the
    application registers its transcodings on it as on the standard one."""

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(self._exact(obj, 0))
        except (_NotExact, orjson.JSONEncodeError):
            return super().encode(obj)

    # --- encode -----------------------------------------------------------------

    def _exact(self, value: Any, depth: int) -> Any:
        """``value`` with everything replaced that orjson would not write as ``json`` writes it."""
        kind = type(value)
        if kind is str or kind is bool or value is None:
            return value
        if kind is int:
            return value if _I64_MIN <= value <= _U64_MAX else _Fragment(_int_text(value))
        if kind is dict:
            return self._exact_dict(value, depth)
        if kind is list or kind is tuple:
            return self._exact_items(value, depth)
        return self._exact_other(value, depth)

    def _exact_dict(self, mapping: dict[Any, Any], depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise _NotExact
        copy: dict[str, Any] | None = None  # made on the first replaced value only
        for key, value in mapping.items():
            if type(key) is not str:
                raise _NotExact
            kind = type(value)
            if kind is str or kind is bool or value is None:
                continue
            if kind is int and _I64_MIN <= value <= _U64_MAX:
                continue
            replaced = self._exact(value, depth + 1)
            if replaced is not value:
                if copy is None:
                    copy = dict(mapping)
                copy[key] = replaced
        return mapping if copy is None else copy

    def _exact_items(self, items: list[Any] | tuple[Any, ...], depth: int) -> list[Any] | tuple[Any, ...]:
        if depth > _MAX_DEPTH:
            raise _NotExact
        copy: list[Any] | None = None
        for index, value in enumerate(items):
            replaced = self._exact(value, depth + 1)
            if replaced is not value:
                if copy is None:
                    copy = list(items)
                copy[index] = replaced
        return items if copy is None else copy

    def _exact_other(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is float:
            # json writes float.__repr__ (and NaN/Infinity/-Infinity, which it allows).
            if isfinite(value):
                return _Fragment(_float_text(value))
            return _Fragment("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
        if issubclass(kind, _JSON_NATIVE):
            raise _NotExact  # a subclass: json writes it natively, orjson may not
        transcoding = self.types.get(kind)
        if transcoding is None:
            raise _NotExact  # the standard encoder raises its TranscodingNotRegisteredError
        if kind is datetime and type(transcoding) is DatetimeAsISO and (value.tzinfo is None or value.tzinfo is _UTC):
            # orjson writes a naive or UTC datetime as exactly isoformat()'s text, in a tenth of its instructions.
            return {"_type_": transcoding.name, "_data_": value}
        # What json does with the default hook's dict: writes it, its "_data_" included.
        return self._exact_dict({"_type_": transcoding.name, "_data_": transcoding.encode(value)}, depth + 1)
