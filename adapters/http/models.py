"""``GET /v1/models`` and ``GET /v1/models/{id}`` (the SDKs' ``models.list`` and
``models.retrieve``): the models the caller may use, with its prices (application/model_list.py).
A model id holds a slash (``openai/gpt-4o-mini``), so the id is the rest of the path."""

import anyio
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.services import bearer_token, services_of
from application.model_list import ModelList

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    models = await anyio.to_thread.run_sync(ModelList(services.ledger).visible, api_key)
    body = {"object": "list", "data": [model.to_dict() for model in models]}
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    model = await anyio.to_thread.run_sync(ModelList(services.ledger).one, api_key, model_id)
    return Response(orjson.dumps(model.to_dict()), media_type="application/json")
