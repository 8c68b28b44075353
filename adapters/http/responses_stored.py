"""``GET /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and ``DELETE
/v1/responses/{id}``: the responses ``POST /v1/responses`` stored (``store: true`` with
``TALLYHUB_RESPONSES_STORE=on``; application/stored_responses.py), as the official ``openai``
SDK's ``responses.retrieve``, ``responses.input_items.list`` and ``responses.delete`` read them.

Invariant: every read and delete is scoped by the account of the API key that authenticated
the request; another account's response is a 404 ``response_not_found``, exactly like one
that does not exist, was deleted or is past the retention. With storage off every one of
them is a 404 ``responses_store_off`` that says so.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from adapters.http.me import Caller, Me
from application.stored_responses import ResponseNotFound, ResponsesStoreOff, StoredResponses
from domain.errors import InvalidRequest

router = APIRouter(prefix="/v1/responses", tags=["responses"])

MAX_PAGE = 100


@router.get("/{response_id}")
async def retrieve_response(
    response_id: str,
    me: Me,
    stream: Annotated[bool, Query(description="not supported: a stored response is answered whole")] = False,
) -> dict[str, Any]:
    if stream:
        raise InvalidRequest("a stored response cannot be streamed again; retrieve it without stream", param="stream")
    store = _store(me)
    response = await store.get(me.account_id, response_id)
    if response is None:
        raise _not_found(response_id)
    return response


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    me: Me,
    after: Annotated[str | None, Query(description="the id of the item to list after")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    store = _store(me)
    items = await store.input_items(me.account_id, response_id)
    if items is None:
        raise _not_found(response_id)
    shown = [_listed(item, response_id, index) for index, item in enumerate(items)]
    if order == "desc":
        shown.reverse()
    start = 0
    if after is not None:
        found = next((n for n, item in enumerate(shown) if item["id"] == after), None)
        if found is None:
            raise InvalidRequest(f"no input item {after!r} in response {response_id!r}", param="after")
        start = found + 1
    page = shown[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(shown),
    }


@router.delete("/{response_id}")
async def delete_response(response_id: str, me: Me) -> dict[str, Any]:
    store = _store(me)
    if not await store.delete(me.account_id, response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


def _store(me: Caller) -> StoredResponses:
    store: StoredResponses = me.services.responses
    if not store.enabled:
        raise ResponsesStoreOff()
    return store


def _not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"no response {response_id[:200]!r}: it does not exist, was deleted or has expired")


def _listed(item: dict[str, Any], response_id: str, index: int) -> dict[str, Any]:
    """An input item as OpenAI lists one: with an id (the stored one, else one made from the
    response id and its place), and a message as ``type: message`` with a list of content parts."""
    shown = dict(item) if isinstance(item, dict) else {"type": "unknown"}
    if "role" in shown and shown.get("type", "message") == "message":
        shown["type"] = "message"
        if isinstance(shown.get("content"), str):
            kind = "output_text" if shown["role"] == "assistant" else "input_text"
            shown["content"] = [{"type": kind, "text": shown["content"]}]
        shown.setdefault("status", "completed")
    if not isinstance(shown.get("id"), str) or not shown["id"]:
        shown["id"] = f"{'msg' if shown.get('type') == 'message' else 'item'}_{index:04d}_{response_id[:120]}"
    return shown
