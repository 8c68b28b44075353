"""How an export row becomes bytes, and back, with its link of the hash chain.

Invariants kept here:
- a row's *content* is its values encoded without the ``chain`` column; its link is
  ``sha256(bytes.fromhex(previous link) + content)``, hex; the first row's previous
  link is the export's seed (the previous export's last link);
- reading a file gives back, for each row, exactly the content bytes its link was
  computed over: JSONL keeps them verbatim in the line (the link is the line's last
  member); CSV re-encodes the parsed fields with the same writer, which is
  deterministic for text cells, and the file's SHA-256 in the manifest covers the rest
  (quoting, line ends);
- cells: integers stay integers, times are UTC ISO 8601, ids are dashed UUIDs (the form
  the API and the CLI show), absent is empty (CSV) or null (JSONL), booleans are
  ``true``/``false``;
- CSV text cells (the dataset's free-text columns only: reasons, names, models, error
  codes; never amounts, ids or times) that start with ``=``, ``+``, ``-``, ``@``, a tab,
  a carriage return or ``'`` are written with a ``'`` before them, so a spreadsheet
  shows them as text instead of evaluating a formula; a reader drops the first ``'`` of
  such a cell to get the value back. The chain links cover the cells as written;
- reading JSONL gives integers exactly (Python ints), however large: never floats.

Layouts: a manifest's ``layout`` says how its rows were written. 1 (manifests without
the field, written before it existed): ids as 32 hex digits, no ``account`` column, CSV
text cells as they are. 2 (written now): dashed ids, an ``account`` column (the account's
name) beside each ``account_id``, CSV text cells escaped. ``verify`` recomputes links from the bytes as
written, whatever the layout, and compares ledger rows with the ledger in the layout of
their manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, BinaryIO
from uuid import UUID

import orjson

CHAIN = "chain"
_LINK = re.compile(rb',"chain":"([0-9a-f]{64})"\}\n?$')
LAYOUT = 2  # the layout this code writes (see above)
LAYOUTS = (1, 2)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
# 19 digits and more may be beyond a 64-bit integer, which orjson reads as a float
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def link(previous: str, content: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + content).hexdigest()


def cell(value: Any) -> Any:
    """A value as the export writes it (JSON types only)."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class ChainedRows:
    """Encodes rows into their lines one at a time, each line carrying its link of the
    chain: the first row is linked to ``seed``, every later row to the row before."""

    def __init__(self, fmt: CsvFormat | JsonlFormat, seed: str) -> None:
        self.fmt, self.head, self.rows = fmt, seed, 0

    def line(self, row: dict[str, Any]) -> bytes:
        content = self.fmt.content(row)
        self.head = link(self.head, content)
        self.rows += 1
        return self.fmt.line(content, self.head)


class ParsedRow:
    __slots__ = ("number", "values", "content", "chain")

    def __init__(self, number: int, values: dict[str, Any], content: bytes, chain: str) -> None:
        self.number, self.values, self.content, self.chain = number, values, content, chain


class FormatError(ValueError):
    """A file that is not an export of this format (names the row)."""


def escaped(text: str) -> str:
    """A CSV text cell as written: a ``'`` before one a spreadsheet could take for a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def unescaped(text: str) -> str:
    """A CSV text cell's value back from what ``escaped`` wrote."""
    return text[1:] if text.startswith("'") else text


class CsvFormat:
    """``text_columns``: the free-text columns whose cells are escaped (none: layout 1)."""

    name = "csv"
    media_type = "text/csv; charset=utf-8"

    def __init__(self, text_columns: Sequence[str] = ()) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")
        self._text_columns = frozenset(text_columns)

    def header(self, columns: Sequence[str]) -> bytes:
        return self._encode([*columns, CHAIN]) + b"\n"

    def content(self, row: dict[str, Any]) -> bytes:
        cells = [_text(value) for value in row.values()]
        if self._text_columns:
            cells = [
                escaped(cell) if name in self._text_columns else cell for name, cell in zip(row, cells, strict=True)
            ]
        return self._encode(cells)

    def line(self, content: bytes, chain: str) -> bytes:
        return content + b"," + chain.encode() + b"\n"

    def read(self, stream: BinaryIO, columns: Sequence[str]) -> Iterator[ParsedRow]:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader, None)
            if header != [*columns, CHAIN]:
                raise FormatError(f"the header is {header}, not the manifest's columns")
            for number, fields in enumerate(reader, start=1):
                if len(fields) != len(columns) + 1:
                    raise FormatError(f"row {number} has {len(fields)} cells, not {len(columns) + 1}")
                values = dict(zip(columns, fields[:-1], strict=True))  # the last cell is the chain link
                yield ParsedRow(number, values, self._encode(fields[:-1]), fields[-1])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise FormatError(f"not a readable CSV export: {exc}") from None

    def _encode(self, fields: list[str]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(fields)
        return self._buffer.getvalue()[:-1].encode()


class JsonlFormat:
    name = "jsonl"
    media_type = "application/jsonl"

    def __init__(self, text_columns: Sequence[str] = ()) -> None:
        pass  # JSON strings are typed: nothing to escape

    def header(self, columns: Sequence[str]) -> bytes:
        return b""

    def content(self, row: dict[str, Any]) -> bytes:
        return orjson.dumps(row)

    def line(self, content: bytes, chain: str) -> bytes:
        return content[:-1] + b',"chain":"' + chain.encode() + b'"}\n'

    def read(self, stream: BinaryIO, columns: Sequence[str]) -> Iterator[ParsedRow]:
        for number, line in enumerate(stream, start=1):
            found = _LINK.search(line)
            if found is None:
                raise FormatError(f"row {number} does not end with its chain link")
            content = line[: found.start()] + b"}"
            try:
                values = exact_json(content)
            except (ValueError, RecursionError):
                raise FormatError(f"row {number} is not a JSON object") from None
            if not isinstance(values, dict) or list(values) != list(columns):
                raise FormatError(f"row {number} does not have the manifest's columns")
            yield ParsedRow(number, values, content, found.group(1).decode())


FORMATS: dict[str, type[CsvFormat] | type[JsonlFormat]] = {"csv": CsvFormat, "jsonl": JsonlFormat}


def exact_json(data: bytes) -> Any:
    """JSON with every integer exact: orjson, or the standard parser when a number may be
    beyond 64 bits (orjson gives those as floats). NaN and Infinity are refused."""
    if _LONG_NUMBER.search(data) is None:
        return orjson.loads(data)
    return json.loads(data, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _text(value: Any) -> str:
    value = cell(value)
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)
