"""Bedrock's ``ListFoundationModels`` (``GET /foundation-models`` on the control-plane
endpoint ``bedrock.{region}.amazonaws.com``, not ``bedrock-runtime``), signed with AWS
Signature Version 4 by botocore exactly as adapters/providers/bedrock.py signs its calls.
A provider's ``--base-url`` is used as it is, except that a ``bedrock-runtime.`` host is
turned into its ``bedrock.`` twin. The answer is ``{"modelSummaries": [...]}``, one page:
``modelId``, ``modelName``, ``providerName``, modalities, ``inferenceTypesSupported`` and
``modelLifecycle``; Bedrock lists no token limits here."""

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from adapters.providers.listed_models import get_json, items_of, text
from application.model_discovery import ProviderModel
from application.routing import Route

SIGNING_SERVICE = "bedrock"
LISTS = {
    "providerName": "provider_name",
    "inputModalities": "input_modalities",
    "outputModalities": "output_modalities",
    "inferenceTypesSupported": "inference_types",
}


def control_endpoint(base_url: str | None, region: str) -> str:
    if not base_url:
        return f"https://bedrock.{region}.amazonaws.com"
    parts = urlsplit(base_url.rstrip("/"))
    if parts.netloc.startswith("bedrock-runtime."):
        parts = parts._replace(netloc="bedrock." + parts.netloc.removeprefix("bedrock-runtime."))
    return urlunsplit(parts)


async def list_foundation_models(
    session: aiohttp.ClientSession, route: Route, credentials: Credentials, region: str
) -> list[ProviderModel]:
    url = control_endpoint(route.base_url, region) + "/foundation-models"
    document = await get_json(session, route, URL(url, encoded=True), headers=signed_get(credentials, region, url))
    return [_model(item) for item in items_of(route, document, "modelSummaries") if text(item.get("modelId"))]


def signed_get(credentials: Credentials, region: str, url: str) -> dict[str, str]:
    """The headers of a SigV4-signed GET of ``url`` (already percent-encoded, no query)."""
    host = urlsplit(url).netloc.rpartition("@")[2]
    request = AWSRequest(method="GET", url=url, data=b"", headers={"host": host, "accept": "application/json"})
    SigV4Auth(credentials, SIGNING_SERVICE, region).add_auth(request)
    return dict(request.headers.items())


def _model(item: dict[str, Any]) -> ProviderModel:
    details: dict[str, Any] = {}
    for name, shown in LISTS.items():
        value = item.get(name)
        if isinstance(value, str | list):
            details[shown] = value
    if isinstance(item.get("responseStreamingSupported"), bool):
        details["streaming"] = item["responseStreamingSupported"]
    lifecycle = item.get("modelLifecycle")
    if isinstance(lifecycle, dict) and text(lifecycle.get("status")):
        details["lifecycle"] = lifecycle["status"]
    return ProviderModel(id=item["modelId"], display_name=text(item.get("modelName")), details=details)
