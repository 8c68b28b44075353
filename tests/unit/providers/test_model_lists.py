"""Each adapter's ``list_models`` against a fake of its provider's own model list on
loopback (real HTTP, the provider's wire format, paging included): what is listed, the
token limits and details the provider gives, and every failure as an UpstreamError that
names the provider and the status and never carries the credential."""

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from adapters.providers.registry import build_providers
from adapters.settings import Settings
from application.model_discovery import ProviderModel
from application.routing import Route
from domain.errors import UpstreamError
from domain.provider import UpstreamPolicy
from tests.fakes.bedrock_upstream import BedrockScript
from tests.fakes.model_catalogs import (
    FakeAnthropicModelList,
    FakeBedrockControlPlane,
    FakeGeminiModelList,
    FakeOllamaTags,
    FakeOpenAIModelList,
    ListingScript,
    anthropic_model,
    bedrock_summary,
    gemini_model,
    ollama_tag,
    openai_model,
)

OPENAI_KEY = "sk-proj-discovery-secret-0001"
ANTHROPIC_KEY = "sk-ant-discovery-secret-0002"
GEMINI_KEY = "AIza-discovery-secret-0003"


def route(kind: str, base_url: str | None, secret: str | None, **extra: Any) -> Route:
    return Route(
        model="p/*",
        provider="p",
        kind=kind,
        base_url=base_url,
        region=extra.pop("region", None),
        upstream_model="",
        credential_id="c1",
        secret=secret,
        **extra,
    )


def listed(target: Route) -> list[ProviderModel]:
    async def main() -> list[ProviderModel]:
        async with aiohttp.ClientSession() as session:
            adapter: Any = build_providers(session, Settings())[target.kind]
            return await adapter.list_models(target)

    return asyncio.run(main())


def failure(target: Route) -> UpstreamError:
    with pytest.raises(UpstreamError) as failed:
        listed(target)
    assert target.secret is None or all(part not in str(failed.value) for part in target.secret.split(":"))
    return failed.value


def by_id(models: list[ProviderModel]) -> dict[str, ProviderModel]:
    return {model.id: model for model in models}


# ---------------------------------------------------------------------- OpenAI family


def test_openai_lists_its_models_with_the_bearer_key() -> None:
    models = [openai_model("gpt-4o-mini"), openai_model("text-embedding-3-small", owned_by="openai-internal")]
    with FakeOpenAIModelList(models, api_key=OPENAI_KEY) as fake:
        found = by_id(listed(route("openai", fake.base_url, OPENAI_KEY)))
    assert list(found) == ["gpt-4o-mini", "text-embedding-3-small"]
    assert found["text-embedding-3-small"].details == {"created": 1_700_000_000, "owned_by": "openai-internal"}
    assert found["gpt-4o-mini"].context_window is None
    assert fake.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_openrouter_gives_context_length_output_limit_and_its_own_prices() -> None:
    pricing = {"prompt": "0.0000003", "completion": "0.0000025", "request": "0", "image": "0.001238"}
    model = openai_model(
        "google/gemini-2.5-flash",
        name="Google: Gemini 2.5 Flash",
        context_length=1_048_576,
        architecture={"modality": "text+image->text", "tokenizer": "Gemini"},
        pricing=pricing,
        top_provider={"context_length": 1_048_576, "max_completion_tokens": 65_535, "is_moderated": False},
    )
    with FakeOpenAIModelList([model], api_key=OPENAI_KEY) as fake:
        (found,) = listed(route("openai-compatible", fake.base_url, OPENAI_KEY))
    assert (found.id, found.display_name) == ("google/gemini-2.5-flash", "Google: Gemini 2.5 Flash")
    assert (found.context_window, found.max_output_tokens) == (1_048_576, 65_535)
    assert found.details["pricing"] == pricing and found.details["modality"] == "text+image->text"


def test_a_refused_openai_key_is_a_502_naming_the_provider_and_status_without_the_key() -> None:
    with FakeOpenAIModelList([openai_model("gpt-4o-mini")], api_key=OPENAI_KEY) as fake:
        error = failure(route("openai", fake.base_url, "sk-proj-revoked-credential-9999"))
    assert (error.status, error.code) == (502, "upstream_auth_failed")
    assert str(error) == "provider 'p' refused the gateway's credential (HTTP 401)"
    assert "9999" not in str(error)  # OpenAI echoes the key's last 4 characters: not passed on


def test_a_provider_error_names_the_status_and_a_429_keeps_retry_after() -> None:
    with FakeOpenAIModelList([openai_model("gpt-4o-mini")], api_key=OPENAI_KEY) as fake:
        fake.script(ListingScript(status=500, message="boom"), ListingScript(status=429, retry_after="7"))
        error = failure(route("openai", fake.base_url, OPENAI_KEY))
        assert (error.status, error.code) == (502, "upstream_error")
        assert str(error) == "provider 'p' failed to list its models (HTTP 500): boom"
        limited = failure(route("openai", fake.base_url, OPENAI_KEY))
    assert (limited.status, limited.code, limited.retry_after) == (429, "upstream_rate_limited", "7")


def test_an_unreachable_provider_and_a_slow_one_are_502_and_504() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    error = failure(route("openai", closed, OPENAI_KEY))
    assert (error.status, error.code) == (502, "upstream_unavailable") and "'p'" in str(error)
    with FakeOpenAIModelList([openai_model("gpt-4o-mini")], api_key=OPENAI_KEY) as fake:
        fake.script(ListingScript(delay_seconds=5))
        slow = failure(route("openai", fake.base_url, OPENAI_KEY, policy=UpstreamPolicy(timeout_total=0.2)))
    assert (slow.status, slow.code) == (504, "upstream_timeout")


# ---------------------------------------------------------------------- Anthropic


def test_anthropic_pages_through_has_more_with_after_id_and_gives_token_limits() -> None:
    models = [anthropic_model(f"claude-test-{i}", max_input_tokens=200_000, max_tokens=64_000) for i in range(5)]
    models.append(anthropic_model("claude-old"))  # an older answer: no limits listed
    with FakeAnthropicModelList(models, api_key=ANTHROPIC_KEY, page_size=2) as fake:
        found = listed(route("anthropic", fake.base_url, ANTHROPIC_KEY))
    assert [model.id for model in found] == [model["id"] for model in models]
    assert [request.query for request in fake.requests] == [
        {"limit": "1000"},
        {"limit": "1000", "after_id": "claude-test-1"},
        {"limit": "1000", "after_id": "claude-test-3"},
    ]
    first = found[0]
    assert (first.display_name, first.context_window, first.max_output_tokens) == ("Claude Test 0", 200_000, 64_000)
    assert first.details == {"created_at": "2025-05-14T00:00:00Z", "lifecycle": "active"}
    assert (found[-1].context_window, found[-1].max_output_tokens) == (None, None)
    assert fake.requests[0].headers["x-api-key"] == ANTHROPIC_KEY


def test_a_refused_anthropic_key_is_upstream_auth_failed() -> None:
    with FakeAnthropicModelList([anthropic_model("claude-x")], api_key=ANTHROPIC_KEY) as fake:
        error = failure(route("anthropic", fake.base_url, "sk-ant-wrong-key-0000"))
    assert (error.status, error.code) == (502, "upstream_auth_failed") and "HTTP 401" in str(error)


# ---------------------------------------------------------------------- Gemini


def test_gemini_pages_with_next_page_token_and_keeps_only_models_that_serve() -> None:
    models = [
        gemini_model(
            "gemini-2.5-flash", ("generateContent", "countTokens"), input_limit=1_048_576, output_limit=65_536
        ),
        gemini_model("aqa", ("generateAnswer",), input_limit=7168, output_limit=1024),
        gemini_model("gemini-embedding-001", ("embedContent",), input_limit=2048, output_limit=1),
        gemini_model("imagen-4.0-generate-001", ("predict",), input_limit=480, output_limit=8192),
        gemini_model("gemini-2.5-pro", ("generateContent",), input_limit=1_048_576, output_limit=65_536),
    ]
    with FakeGeminiModelList(models, api_key=GEMINI_KEY, page_size=2) as fake:
        found = by_id(listed(route("gemini", fake.base_url, GEMINI_KEY)))
    assert list(found) == ["gemini-2.5-flash", "gemini-embedding-001", "gemini-2.5-pro"]
    assert len(fake.requests) == 3 and "pageToken" not in fake.requests[0].query
    assert all(request.query["pageToken"] for request in fake.requests[1:])
    flash = found["gemini-2.5-flash"]
    assert (flash.display_name, flash.context_window, flash.max_output_tokens) == (
        "Gemini 2.5 Flash",
        1_048_576,
        65_536,
    )
    assert flash.details == {"methods": ["generateContent", "countTokens"], "version": "001"}
    assert all(
        request.headers["x-goog-api-key"] == GEMINI_KEY and "key" not in request.query for request in fake.requests
    )


def test_googles_400_api_key_invalid_is_a_refused_credential() -> None:
    model = gemini_model("gemini-2.5-flash", ("generateContent",), input_limit=1, output_limit=1)
    with FakeGeminiModelList([model], api_key=GEMINI_KEY) as fake:
        error = failure(route("gemini", fake.base_url, "AIza-wrong-key-0000"))
    assert (error.status, error.code) == (502, "upstream_auth_failed") and "HTTP 400" in str(error)


# ---------------------------------------------------------------------- Ollama


def test_ollama_lists_pulled_models_by_the_name_callers_use() -> None:
    with FakeOllamaTags([ollama_tag("llama3.2:latest"), ollama_tag("qwen3:8b")]) as fake:
        found = by_id(listed(route("ollama", f"http://127.0.0.1:{fake.port}", None)))
    assert list(found) == ["llama3.2", "qwen3:8b"]
    assert found["llama3.2"].details == {
        "size": 2_019_393_189,
        "modified_at": "2025-05-01T12:00:00.000000000Z",
        "family": "llama",
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


def test_an_ollama_failure_names_its_status() -> None:
    with FakeOllamaTags([]) as fake:
        fake.script(ListingScript(status=500, message="model store unreadable"))
        error = failure(route("ollama", f"http://127.0.0.1:{fake.port}", None))
    assert str(error) == "provider 'p' failed to list its models (HTTP 500): model store unreadable"


# ---------------------------------------------------------------------- Bedrock


def test_bedrock_lists_foundation_models_with_a_valid_sigv4_signature() -> None:
    summaries = [
        bedrock_summary("anthropic.claude-sonnet-4-20250514-v1:0", "Anthropic", inference=("INFERENCE_PROFILE",)),
        bedrock_summary("amazon.titan-embed-text-v2:0", "Amazon"),
    ]
    with FakeBedrockControlPlane(summaries) as fake:
        found = by_id(listed(route("bedrock", f"http://127.0.0.1:{fake.port}", fake.secret, region=fake.region)))
    assert list(found) == ["anthropic.claude-sonnet-4-20250514-v1:0", "amazon.titan-embed-text-v2:0"]
    titan = found["amazon.titan-embed-text-v2:0"]
    assert titan.display_name == "titan-embed-text-v2:0"
    assert titan.details == {
        "provider_name": "Amazon",
        "input_modalities": ["TEXT"],
        "output_modalities": ["TEXT"],
        "inference_types": ["ON_DEMAND"],
        "streaming": True,
        "lifecycle": "ACTIVE",
    }
    (request,) = fake.requests
    assert (request.method, request.raw_path, request.signature_valid) == ("GET", "/foundation-models", True)


def test_bedrock_refusals_name_the_error_type_and_never_the_secret() -> None:
    with FakeBedrockControlPlane([]) as fake:
        wrong = f"{fake.access_key_id}:not-the-secret-access-key-0000"
        error = failure(route("bedrock", f"http://127.0.0.1:{fake.port}", wrong, region=fake.region))
        assert (error.status, error.code) == (502, "upstream_auth_failed")
        assert str(error) == "provider 'p' refused the gateway's credential (HTTP 403 InvalidSignatureException)"
        fake.script(BedrockScript.error(403, "AccessDeniedException", "not authorized: bedrock:ListFoundationModels"))
        denied = failure(route("bedrock", f"http://127.0.0.1:{fake.port}", fake.secret, region=fake.region))
    assert "HTTP 403 AccessDeniedException" in str(denied)


def test_a_bedrock_runtime_base_url_lists_on_its_control_plane_twin() -> None:
    from adapters.providers.bedrock_models import control_endpoint

    assert control_endpoint(None, "eu-west-1") == "https://bedrock.eu-west-1.amazonaws.com"
    runtime = "https://bedrock-runtime.us-east-1.amazonaws.com/"
    assert control_endpoint(runtime, "us-east-1") == "https://bedrock.us-east-1.amazonaws.com"
    assert control_endpoint("http://127.0.0.1:9000", "us-east-1") == "http://127.0.0.1:9000"


def test_a_listing_that_is_not_the_documented_shape_is_a_bad_response() -> None:
    with FakeOpenAIModelList([], api_key=OPENAI_KEY) as fake:
        fake.models = "not a list"  # type: ignore[assignment]
        error = failure(route("openai", fake.base_url, OPENAI_KEY))
    assert (error.status, error.code) == (502, "upstream_bad_response")
