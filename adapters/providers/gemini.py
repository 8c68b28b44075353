"""The Google Gemini API, for kind ``gemini`` providers: chat through
``models/{model}:generateContent`` / ``:streamGenerateContent?alt=sse`` and embeddings
through ``:batchEmbedContents``, translated to and from OpenAI's format
(gemini_request.py, gemini_response.py).

Invariants:
- the credential travels only in the ``x-goog-api-key`` header, never in a URL, and
  never appears in an error message;
- every failure Gemini reports before the first chunk — an error status, a prompt
  blocked by safety (``promptFeedback.blockReason``), an error object as the first
  stream event — is an ``UpstreamError`` raised by ``start_chat``, so the gateway can
  fail over or refuse without charging. A plain answer is read whole inside
  ``start_chat`` for the same reason;
- the caller is blamed (4xx with Gemini's message) only for errors in its request;
  a key Google rejects — even as a 400 ``API_KEY_INVALID`` — is the gateway's 502;
- a stream ends with ``[DONE]`` only when Gemini finished it; otherwise reading it
  raises one of ``READ_FAILURES``.
"""

import base64
import math
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from adapters.providers.base import DONE, ProviderBase, ResponseExchange, UpstreamTimeouts, read_answer, upstream_json
from adapters.providers.errors import error_for_status, post, read_error_body, redact, timed_out, unreachable
from adapters.providers.gemini_models import list_gemini_models
from adapters.providers.gemini_request import candidate_count, gemini_request
from adapters.providers.gemini_response import ChunkTranslator, block_reason, completion_document
from adapters.providers.openai_compatible import sse_events
from application.model_discovery import ProviderModel
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError
from domain.estimation import tokens_for_chars

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
EMBED_BATCH_LIMIT = 100  # requests per batchEmbedContents call


class GeminiProvider(ProviderBase):
    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float) -> None:
        self.session = session
        self.timeouts = UpstreamTimeouts(timeout_seconds)  # per provider: the route carries its policy

    async def start_chat(self, route: Route, body: dict[str, Any]) -> "GeminiCompletion | GeminiStream":
        """Translate and send; return an exchange that has a result, or raise UpstreamError/InvalidRequest."""
        request = gemini_request(body)
        if body.get("stream") is True:
            response = await self._post(route, "streamGenerateContent?alt=sse", request)
            return await _open_stream(route, response, candidate_count(body))
        response = await self._post(route, "generateContent", request)
        document = await _read_json(route, response)
        reason = block_reason(document)
        if reason:
            raise _blocked(route, reason)
        try:
            completion = completion_document(document, route.upstream_model)
        except MalformedUpstreamAnswer:
            raise _bad_response(route) from None
        return GeminiCompletion(orjson.dumps(completion))

    async def embed(self, route: Route, body: dict[str, Any]) -> bytes:
        """An OpenAI embeddings request → an OpenAI embeddings document (usage estimated)."""
        texts = _embedding_inputs(body.get("input"))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
            raise InvalidRequest("dimensions must be a positive integer", param="dimensions")
        model = f"models/{_model_name(route.upstream_model)}"
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH_LIMIT):
            batch = texts[start : start + EMBED_BATCH_LIMIT]
            requests = [
                {
                    "model": model,
                    "content": {"parts": [{"text": text}]},
                    **({"outputDimensionality": dimensions} if dimensions else {}),
                }
                for text in batch
            ]
            document = await _read_json(route, await self._post(route, "batchEmbedContents", {"requests": requests}))
            vectors.extend(_vectors(route, document, len(batch)))
        tokens = sum(tokens_for_chars(len(text)) for text in texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, vector in enumerate(vectors)
        ]
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": route.upstream_model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "usage_source": "estimated"},
            }
        )

    async def probe(self, route: Route) -> bool | None:
        """Is the credential accepted? ``GET /models`` costs no tokens. None: could not tell."""
        try:
            async with self.session.get(
                f"{_base_url(route)}/models",
                params={"pageSize": "1"},
                headers=_headers(route),
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                if response.status < 300:
                    return True
                error = await _http_error(route, response)
        except (aiohttp.ClientError, TimeoutError):
            return None
        return False if error.code == "upstream_auth_failed" else None

    async def list_models(self, route: Route) -> list[ProviderModel]:
        """``GET /v1beta/models``, every page (adapters/providers/gemini_models.py)."""
        return await list_gemini_models(self.session, route, f"{_base_url(route)}/models", _headers(route))

    async def _post(self, route: Route, method: str, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        url = f"{_base_url(route)}/models/{quote(_model_name(route.upstream_model), safe='-._~')}:{method}"
        response = await post(
            self.session,
            route,
            url,
            data=orjson.dumps(payload),
            headers=_headers(route),
            timeout=self.timeouts.for_route(route),
        )
        if response.status >= 300:
            raise await _http_error(route, response)
        return response


class GeminiCompletion:
    """A plain answer, already read and translated."""

    def __init__(self, document: bytes) -> None:
        self.document = document

    async def read_completion(self) -> bytes:
        return self.document

    def stream_data(self) -> AsyncIterator[bytes]:
        raise TypeError("this Gemini exchange was not streamed")

    def stream_batches(self) -> AsyncIterator[list[bytes]]:
        raise TypeError("this Gemini exchange was not streamed")

    def abort(self) -> None:
        pass

    def release(self) -> None:
        pass


class GeminiStream(ResponseExchange):
    """A stream whose first event has arrived and was not an error."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        events: AsyncIterator[bytes],
        first: dict[str, Any],
        translator: ChunkTranslator,
    ) -> None:
        self.response = response
        self.events = events
        self.first = first
        self.translator = translator

    async def read_completion(self) -> bytes:
        raise TypeError("this Gemini exchange is a stream")

    async def stream_data(self) -> AsyncIterator[bytes]:
        for chunk in self.translator.opening():
            yield orjson.dumps(chunk)
        fragment: Any = self.first
        while True:
            for chunk in self.translator.take(fragment):  # MalformedUpstreamAnswer (StreamBroken among them)
                yield orjson.dumps(chunk)
            try:
                fragment = upstream_json(await anext(self.events))
            except StopAsyncIteration:
                break
        for chunk in self.translator.closing():
            yield orjson.dumps(chunk)
        yield DONE


async def _open_stream(route: Route, response: aiohttp.ClientResponse, choices: int) -> GeminiStream:
    """Wait for the first event, so errors and safety blocks are refused before any byte is relayed."""
    events = sse_events(response)
    try:
        try:
            first = orjson.loads(await anext(events))
        except StopAsyncIteration:
            raise _bad_response(route) from None
        except TimeoutError:
            raise timed_out(route) from None
        except aiohttp.ClientError as exc:
            raise unreachable(route, exc) from None
        except orjson.JSONDecodeError:
            raise _bad_response(route) from None
        if not isinstance(first, dict):
            raise _bad_response(route)
        if isinstance(first.get("error"), dict):
            error = first["error"]
            status = error.get("code") if isinstance(error.get("code"), int) else 500
            raise _mapped_error(route, status, error, retry_after=None)
        reason = block_reason(first)
        if reason:
            raise _blocked(route, reason)
        return GeminiStream(response, events, first, ChunkTranslator(first, route.upstream_model, choices))
    except BaseException:
        response.close()
        raise


async def _read_json(route: Route, response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        raw = await read_answer(response)
    except TimeoutError:
        raise timed_out(route) from None
    except aiohttp.ClientError as exc:
        raise unreachable(route, exc) from None
    finally:
        response.release()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad_response(route) from None
    if not isinstance(document, dict):
        raise _bad_response(route)
    return document


# ---------------------------------------------------------------------- embeddings


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    raise InvalidRequest(
        "input must be a string or a non-empty list of strings for Gemini (token arrays are not supported)",
        param="input",
    )


def _vectors(route: Route, document: dict[str, Any], expected: int) -> list[list[float]]:
    embeddings = document.get("embeddings")
    if not isinstance(embeddings, list):
        raise _bad_response(route)
    vectors = []
    for item in embeddings:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise _bad_response(route)
        try:
            vectors.append([float(x) for x in values])
        except (TypeError, ValueError):  # a value that is not a number
            raise _bad_response(route) from None
    if len(vectors) != expected:
        raise _bad_response(route)
    return vectors


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# ---------------------------------------------------------------------- errors


def _base_url(route: Route) -> str:
    return (route.base_url or DEFAULT_BASE_URL).rstrip("/")


def _headers(route: Route) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if route.secret:
        headers["x-goog-api-key"] = route.secret
    return headers


def _model_name(model: str) -> str:
    return model.removeprefix("models/")


async def _http_error(route: Route, response: aiohttp.ClientResponse) -> UpstreamError:
    raw = await read_error_body(response)
    try:
        error = orjson.loads(raw)["error"]
        if not isinstance(error, dict):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error = {"message": raw[:200].decode(errors="replace") or "no details"}
    return _mapped_error(route, response.status, error, retry_after=response.headers.get("retry-after"))


def _mapped_error(route: Route, status: int, error: dict[str, Any], *, retry_after: str | None) -> UpstreamError:
    """Gemini's ``{"code", "message", "status", "details"}`` → the error the caller should see."""
    provider = route.provider
    message = redact(str(error.get("message") or "no details"), route.secret)
    details = [d for d in error.get("details") or () if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    if (
        status in (401, 403)
        or any(r.startswith("API_KEY_") for r in reasons)
        or (status == 400 and not reasons and "api key" in message.lower())
    ):
        return UpstreamError(
            f"provider {provider!r} refused the gateway's credential", status=502, code="upstream_auth_failed"
        )
    if status == 429:
        return UpstreamError(
            f"provider {provider!r} is rate limiting this gateway",
            status=429,
            code="upstream_rate_limited",
            retry_after=retry_after or _retry_delay(details) or "1",
        )
    if error.get("status") == "FAILED_PRECONDITION":  # billing or region of the gateway's account
        return UpstreamError(
            f"provider {provider!r} cannot serve this gateway's account: {message}", status=502, code="upstream_error"
        )
    return error_for_status(route, status, message, retry_after=retry_after)


def _retry_delay(details: list[dict[str, Any]]) -> str | None:
    """``google.rpc.RetryInfo.retryDelay`` ("37s", "0.5s") as whole seconds; Google sends no Retry-After."""
    for detail in details:
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(1, math.ceil(float(delay[:-1]))))
            except ValueError:
                return None
    return None


def _blocked(route: Route, reason: str) -> UpstreamError:
    return UpstreamError(
        f"provider {route.provider!r} blocked the prompt ({reason})", status=400, code="content_filtered"
    )


def _bad_response(route: Route) -> UpstreamError:
    return UpstreamError(
        f"provider {route.provider!r} sent an unreadable response", status=502, code="upstream_bad_response"
    )
