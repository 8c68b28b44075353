"""adapters/access_log.py writes a line straight to stderr while its own bare handler is
all that listens, and through ``logging`` otherwise: either way each recorded request
and each edge answer without a record is one line, the same line, where it was before."""

import io
import json
import logging
from collections.abc import Iterator
from uuid import uuid4

import pytest

from adapters.access_log import JsonAccessLog, access_line, access_logger
from domain.request_record import RequestDetails
from domain.usage import Usage


def details() -> RequestDetails:
    return RequestDetails(
        outcome="completed",
        account_id=uuid4().hex,
        api_key_id=uuid4().hex,
        requested_model="openai/gpt-4o-mini",
        model="openai/gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini",
        credential_id="c1",
        endpoint="chat.completions",
        stream=False,
        status=200,
        error_code=None,
        usage=Usage(input_tokens=120, output_tokens=30),
        charge=480_000,
        cost=480_000,
        uncollected=0,
        hold=1_000_000,
        price_book_version=1,
        priced=True,
        latency_ms=12.5,
        ttfb_ms=4.0,
        started_at="2026-12-07T12:00:00+00:00",
    )


def _without_time(line: str) -> dict[str, object]:
    fields = json.loads(line)
    del fields["time"]
    return fields  # type: ignore[no-any-return]


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """The access logger as ``serve`` sets it up, put back as it was afterwards."""
    logger = access_logger()
    handlers, level, filters = list(logger.handlers), logger.level, list(logger.filters)
    yield logger
    logger.handlers[:] = handlers
    logger.filters[:] = filters
    logger.setLevel(level)


def test_a_recorded_request_is_one_line_on_stderr_as_access_line_writes_it(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id, d = uuid4(), details()
    JsonAccessLog(logger).recorded(request_id, d, 1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert _without_time(lines[0]) == _without_time(access_line(request_id, d, 1))


def test_an_edge_answer_without_a_record_is_one_line_on_stderr(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = uuid4()
    JsonAccessLog(logger).answered(request_id, "/v1/chat/completions", 401, 1.25)
    [line] = capsys.readouterr().err.splitlines()
    assert _without_time(line) == {
        "request_id": str(request_id),
        "key_id": None,
        "account_id": None,
        "route": "chat.completions",
        "recorded": False,
        "status": 401,
        "latency_ms": 1.25,
    }


def test_a_handler_added_to_the_logger_gets_every_line_and_stderr_still_does(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    request_id = uuid4()
    JsonAccessLog(logger).recorded(request_id, details(), 0)
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [str(request_id)]
    assert [json.loads(line)["request_id"] for line in capsys.readouterr().err.splitlines()] == [str(request_id)]


def test_a_filter_on_the_logger_still_decides_what_is_written(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logger.addFilter(lambda record: False)
    JsonAccessLog(logger).recorded(uuid4(), details(), 0)
    assert capsys.readouterr().err == ""


def test_nothing_is_written_when_the_logger_is_set_above_info(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logger.setLevel(logging.WARNING)
    JsonAccessLog(logger).recorded(uuid4(), details(), 0)
    assert capsys.readouterr().err == ""
