"""Which provider kinds this build can call, and what each needs to be configured.
Kept free of HTTP imports: the CLI checks input with it before anything starts."""

from urllib.parse import urlsplit

from domain.errors import InvalidRequest
from domain.provider import PROVIDER_KINDS

CALLABLE_KINDS = ("openai", "openai-compatible", "anthropic", "gemini", "bedrock", "ollama")


def check_provider_config(kind: str, base_url: str | None, region: str | None) -> None:
    """Refuse a provider that could never serve a request, before anything is stored."""
    if kind not in PROVIDER_KINDS:
        raise InvalidRequest(f"unknown provider kind {kind!r}; use one of: {', '.join(PROVIDER_KINDS)}", param="kind")
    if kind not in CALLABLE_KINDS:
        raise InvalidRequest(
            f"provider kind {kind!r} is not supported by this version yet; supported: {', '.join(CALLABLE_KINDS)}",
            param="kind",
        )
    if kind == "openai-compatible" and not base_url:
        raise InvalidRequest("a provider of kind 'openai-compatible' needs --base-url", param="base_url")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequest(f"--base-url must be an http(s) URL, got {base_url!r}", param="base_url")
    if kind == "bedrock" and not region:
        raise InvalidRequest("a provider of kind 'bedrock' needs --region", param="region")
