"""Amazon Bedrock, for kind ``bedrock`` providers: Converse / ConverseStream for chat,
InvokeModel (Titan text embeddings) for embeddings.

Every request is signed with AWS Signature Version 4 by botocore (service ``bedrock``,
the route's region) and sent with the gateway's aiohttp session, on exactly the URL
that was signed. ConverseStream's binary ``application/vnd.amazon.eventstream`` body is
decoded by botocore's ``EventStreamBuffer``. Whatever Bedrock says, the gateway sees
OpenAI's chat format (see bedrock_request.py and bedrock_response.py).

Failures before the first byte become ``UpstreamError`` with the status the caller
should see; the provider's own message is passed on only for errors in the caller's
request, and never contains any part of the credential. A stream that carries an
exception event, breaks off, or ends without ``messageStop`` and ``metadata`` raises
one of ``READ_FAILURES`` while being read and never yields ``[DONE]``.
"""

import asyncio
import base64
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError
from yarl import URL

from adapters.providers.base import (
    DONE,
    ProviderBase,
    ResponseExchange,
    UpstreamTimeouts,
    arrived_blocks,
    read_answer,
    upstream_json,
    upstream_object,
)
from adapters.providers.bedrock_models import list_foundation_models
from adapters.providers.bedrock_request import converse_request
from adapters.providers.bedrock_response import ConverseStreamTranslator, completion_document
from adapters.providers.errors import error_for_status, post, read_error_body
from application.model_discovery import ProviderModel
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError

SIGNING_SERVICE = "bedrock"
EVENT_STREAM = "application/vnd.amazon.eventstream"
EMBEDDING_CONCURRENCY = 8
# 403s that mean the credential itself is refused (AccessDenied may be one model's policy).
REFUSED_CREDENTIAL_ERRORS = (
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
)
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class BedrockStreamError(MalformedUpstreamAnswer):
    """Bedrock reported an exception inside a ConverseStream (e.g. throttlingException)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"Bedrock stream failed: {kind}: {message}")
        self.kind = kind


def default_endpoint(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


class BedrockProvider(ProviderBase):
    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float) -> None:
        self.session = session
        self.timeouts = UpstreamTimeouts(timeout_seconds)  # per provider: the route carries its policy

    async def start_chat(self, route: Route, body: dict[str, Any]) -> "BedrockExchange":
        """Send a Converse (or ConverseStream) request; return the open 2xx exchange or raise."""
        payload = orjson.dumps(converse_request(body, route.upstream_model))
        streaming = body.get("stream") is True
        operation = "converse-stream" if streaming else "converse"
        response = await self._post(route, operation, payload, accept=EVENT_STREAM if streaming else "application/json")
        return BedrockExchange(response, model=route.upstream_model)

    async def embed(self, route: Route, body: dict[str, Any]) -> bytes:
        """An OpenAI embeddings document, one Titan ``invoke`` per input."""
        inputs, dimensions, encoding = _embedding_request(body)
        limit = asyncio.Semaphore(EMBEDDING_CONCURRENCY)

        async def one(text: str) -> tuple[list[float], int]:
            request: dict[str, Any] = {"inputText": text}
            if dimensions is not None:
                request["dimensions"] = dimensions
            async with limit:
                response = await self._post(route, "invoke", orjson.dumps(request), accept="application/json")
                return await _titan_embedding(route, response)

        tasks = [asyncio.ensure_future(one(text)) for text in inputs]
        try:
            results = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, (vector, _) in enumerate(results)
        ]
        tokens = sum(count for _, count in results)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": route.upstream_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def probe(self, route: Route) -> bool | None:
        """Is the credential accepted? A Converse call with no messages is refused by validation, after
        authentication, and costs no tokens. None: could not tell (e.g. AccessDenied for this model)."""
        try:
            response = await self._post(route, "converse", b'{"messages":[]}', accept="application/json", raw=True)
        except UpstreamError as error:
            return False if error.code == "provider_misconfigured" else None
        async with response:
            kind = (response.headers.get("x-amzn-errortype") or "").split(":")[0]
            if response.status in (401, 403):
                return False if kind in REFUSED_CREDENTIAL_ERRORS else None
            return True if response.status < 300 or response.status in (400, 404) else None

    async def list_models(self, route: Route) -> list[ProviderModel]:
        """``ListFoundationModels``, SigV4-signed (adapters/providers/bedrock_models.py)."""
        credentials, region = _credentials(route)
        return await list_foundation_models(self.session, route, credentials, region)

    async def _post(
        self, route: Route, operation: str, payload: bytes, *, accept: str, raw: bool = False
    ) -> aiohttp.ClientResponse:
        credentials, region = _credentials(route)
        endpoint = (route.base_url or default_endpoint(region)).rstrip("/")
        url = f"{endpoint}/model/{quote(route.upstream_model, safe='')}/{operation}"
        headers = signed_headers(credentials, region, url, payload, accept=accept)
        response = await post(
            self.session,
            route,
            URL(url, encoded=True),
            data=payload,
            headers=headers,
            timeout=self.timeouts.for_route(route),
        )
        if response.status >= 300 and not raw:
            raise await _upstream_error(route, response)
        return response


# -------------------------------------------------------------------- credentials and signing


def _credentials(route: Route) -> tuple[Credentials, str]:
    """The route's ``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`` and region, or a 502."""
    parts = (route.secret or "").split(":", 2)
    if len(parts) < 2 or not all(parts) or any(p != p.strip() for p in parts):
        raise UpstreamError(
            f"provider {route.provider!r} is misconfigured: its credential must be "
            "ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]",
            status=502,
            code="provider_misconfigured",
        )
    if not route.region or not _REGION.match(route.region):
        raise UpstreamError(
            f"provider {route.provider!r} is misconfigured: it needs a valid AWS region",
            status=502,
            code="provider_misconfigured",
        )
    token = parts[2] if len(parts) == 3 else None
    return Credentials(parts[0], parts[1], token), route.region


def signed_headers(credentials: Credentials, region: str, url: str, payload: bytes, *, accept: str) -> dict[str, str]:
    """The headers of a SigV4-signed POST of ``payload`` to ``url`` (already percent-encoded)."""
    host = urlsplit(url).netloc.rpartition("@")[2]
    request = AWSRequest(
        method="POST",
        url=url,
        data=payload,
        headers={"host": host, "content-type": "application/json", "accept": accept},
    )
    SigV4Auth(credentials, SIGNING_SERVICE, region).add_auth(request)
    return dict(request.headers.items())


# -------------------------------------------------------------------- chat exchange


class BedrockExchange(ResponseExchange):
    """One Converse call in flight, read as OpenAI chat."""

    def __init__(self, response: aiohttp.ClientResponse, *, model: str) -> None:
        self.response = response
        self.model = model
        request_id = response.headers.get("x-amzn-requestid") or uuid.uuid4().hex
        self.completion_id = f"chatcmpl-{request_id}"
        self.created = int(time.time())

    async def read_completion(self) -> bytes:
        answer = upstream_json(await read_answer(self.response))
        return completion_document(answer, completion_id=self.completion_id, model=self.model, created=self.created)

    async def stream_data(self) -> AsyncIterator[bytes]:
        translator = ConverseStreamTranslator(completion_id=self.completion_id, model=self.model, created=self.created)
        async for event_type, event in converse_events(self.response):
            for chunk in translator.chunks(event_type, event):
                yield orjson.dumps(chunk)
        if not translator.finished:
            raise MalformedUpstreamAnswer("the Bedrock stream ended before messageStop and metadata")
        yield DONE


async def converse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event type, JSON payload)`` of each event-stream message, decoded by botocore."""
    buffer = EventStreamBuffer()
    pending = 0
    async for data in arrived_blocks(response.content):
        buffer.add_data(data)
        pending += len(data)
        try:
            messages = list(buffer)
        except ParserError as exc:
            raise MalformedUpstreamAnswer(f"undecodable Bedrock event stream ({type(exc).__name__})") from None
        for message in messages:
            pending -= message.prelude.total_length
            yield _event(message)
    if pending:
        raise MalformedUpstreamAnswer("the Bedrock event stream ended inside a message")


def _event(message: EventStreamMessage) -> tuple[str, dict[str, Any]]:
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "exception":
        raise BedrockStreamError(str(headers.get(":exception-type")), _message_of(message.payload))
    if kind == "error":
        raise BedrockStreamError(str(headers.get(":error-code")), str(headers.get(":error-message")))
    if kind != "event":
        raise MalformedUpstreamAnswer(f"unexpected Bedrock event-stream message type {kind!r}")
    event = upstream_object(upstream_json(message.payload or b"{}"), "a stream event")
    return str(headers.get(":event-type")), event


# -------------------------------------------------------------------- errors


async def _upstream_error(route: Route, response: aiohttp.ClientResponse) -> UpstreamError:
    raw = await read_error_body(response)
    kind = (response.headers.get("x-amzn-errortype") or "").split(":")[0] or _error_type_of(raw)
    return error_for_status(
        route,
        response.status,
        _message_of(raw),
        retry_after=response.headers.get("retry-after"),
        detail=f"{response.status} {kind}".strip(),
    )


def _message_of(raw: bytes) -> str:
    try:
        parsed = orjson.loads(raw)
        message = parsed.get("message") or parsed.get("Message")
        if not isinstance(message, str):
            raise TypeError
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        message = raw[:200].decode(errors="replace") or "no details"
    return message[:500]


def _error_type_of(raw: bytes) -> str:
    try:
        kind = orjson.loads(raw).get("__type")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return kind.rpartition("#")[2] if isinstance(kind, str) else ""


# -------------------------------------------------------------------- embeddings


def _embedding_request(body: dict[str, Any]) -> tuple[list[str], int | None, str]:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) and i for i in inputs):
        raise InvalidRequest(
            "Titan embeddings take 'input' as a non-empty string or array of non-empty strings (not token ids)",
            param="input",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise InvalidRequest("'dimensions' must be an integer", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    return inputs, dimensions, encoding


async def _titan_embedding(route: Route, response: aiohttp.ClientResponse) -> tuple[list[float], int]:
    try:
        answer = upstream_object(upstream_json(await read_answer(response)), "an embedding answer")
        vector, count = answer.get("embedding"), answer.get("inputTextTokenCount")
        if not isinstance(vector, list) or not all(isinstance(v, (int, float)) for v in vector):
            raise MalformedUpstreamAnswer("Bedrock sent an embedding that is not a list of numbers")
        if not isinstance(count, int) or count < 0:
            raise MalformedUpstreamAnswer("Bedrock sent no inputTextTokenCount")
    except (aiohttp.ClientError, TimeoutError, MalformedUpstreamAnswer):
        raise UpstreamError(
            f"provider {route.provider!r} sent an unreadable embedding", status=502, code="upstream_bad_response"
        ) from None
    finally:
        response.release()
    return [float(v) for v in vector], count


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
