"""The provider adapters of this build, one per callable kind, built on the gateway's
shared upstream HTTP session."""

from typing import Any

import aiohttp

from adapters.providers.base import ChatProvider
from adapters.providers.openai_compatible import OpenAICompatibleProvider
from adapters.settings import Settings


def build_providers(session: aiohttp.ClientSession, settings: Settings) -> dict[str, ChatProvider]:
    """One adapter per callable kind, sharing the gateway's upstream HTTP session."""
    openai = OpenAICompatibleProvider(session, timeout_seconds=settings.upstream_timeout_seconds)
    adapters: dict[str, Any] = {"openai": openai, "openai-compatible": openai}
    return adapters
