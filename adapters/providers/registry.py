"""The provider adapters of this build, one per callable kind, built on the gateway's
shared upstream HTTP session."""

import aiohttp

from adapters.providers.anthropic import AnthropicProvider
from adapters.providers.base import ProviderAdapter
from adapters.providers.bedrock import BedrockProvider
from adapters.providers.gemini import GeminiProvider
from adapters.providers.ollama import OllamaProvider
from adapters.providers.openai_compatible import OpenAICompatibleProvider
from adapters.settings import Settings


def build_providers(session: aiohttp.ClientSession, settings: Settings) -> dict[str, ProviderAdapter]:
    """One adapter per callable kind, sharing the gateway's upstream HTTP session."""
    timeout = settings.upstream_timeout_seconds
    openai = OpenAICompatibleProvider(session, timeout_seconds=timeout)
    return {
        "openai": openai,
        "openai-compatible": openai,
        "anthropic": AnthropicProvider(session, timeout_seconds=timeout),
        "gemini": GeminiProvider(session, timeout_seconds=timeout),
        "bedrock": BedrockProvider(session, timeout_seconds=timeout),
        "ollama": OllamaProvider(session, timeout_seconds=timeout),
    }
