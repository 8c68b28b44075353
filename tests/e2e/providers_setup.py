"""One fake upstream per provider kind, each speaking its provider's own wire format,
and a gateway configured the way an operator would (every step through the ``tallyhub``
CLI, secrets on stdin) with one priced model per provider.

``Upstream`` hides only what differs between the fakes: how to script an error or a
broken stream, what the fake answers, how it counts prompt tokens and how a request it
received asks for a stream. The tests read the fakes' own recorded requests to prove
what each provider received.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from tests.fakes.anthropic_upstream import AnthropicScript, FakeAnthropicUpstream
from tests.fakes.anthropic_upstream import count_input_tokens as anthropic_input_tokens
from tests.fakes.bedrock_upstream import BedrockScript, FakeBedrockUpstream
from tests.fakes.bedrock_upstream import count_input_tokens as bedrock_input_tokens
from tests.fakes.gemini_upstream import FakeGeminiUpstream, GeminiScript
from tests.fakes.gemini_upstream import prompt_tokens as gemini_prompt_tokens
from tests.fakes.ollama_upstream import FakeOllamaUpstream, OllamaScripted
from tests.fakes.openai_scripts import Scripted
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.openai_wire import count_prompt_tokens
from tests.support.gateway import Gateway, cli

INPUT_RATE = 2_000  # nanocredits per input token: 2 credits per 1M
OUTPUT_RATE = 8_000  # nanocredits per output token: 8 credits per 1M
ACCOUNT = "acme"
BEDROCK_REGION = "eu-west-3"

OPENAI_KEY = "sk-upstream-openai-4f1c2a9d"
DEEPSEEK_KEY = "sk-upstream-deepseek-8b3e7d10"
ANTHROPIC_KEY = "sk-ant-upstream-0c9e5b21"
GEMINI_KEY = "AIzaSy-upstream-gemini-61d2"

# A 1×1 transparent PNG: real bytes, so a fake that checks the image's magic accepts it.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
PNG_DATA_URL = f"data:image/png;base64,{PNG_BASE64}"


@dataclass
class Upstream:
    """A provider as the tests see it: its name, its fake and the fake's scripts."""

    name: str  # the Tallyhub provider name
    kind: str
    model: str  # the upstream model id; callers ask for f"{name}/{model}"
    fake: Any
    reply_text: str
    server_error: Callable[[], Any]  # a 500 from the provider
    rate_limited: Callable[[], Any]  # a 429 from the provider (with Retry-After where it can send one)
    retry_after: str | None  # the wait (seconds) rate_limited() asks for, when the wire format can say so
    broken_stream: Callable[[], Any]  # a stream cut after the first content chunks
    delivered_before_break: str  # the text a client receives before that cut
    prompt_tokens: Callable[[Any], int]  # the fake's documented prompt count for a request body it received
    streamed: Callable[[Any], bool]  # whether a request the fake received asked for a stream

    @property
    def gateway_model(self) -> str:
        return f"{self.name}/{self.model}"

    def script(self, *behaviours: Any) -> None:
        self.fake.script(*behaviours)

    @property
    def last_body(self) -> Any:
        """The JSON body of the last request the fake received, in the provider's own format."""
        return self.fake.requests[-1].json


def start_upstreams() -> list[Upstream]:
    """Start one fake per provider; every reply is seven word tokens, so a stream has chunks to break."""
    openai_fake = FakeOpenAIUpstream(api_key=OPENAI_KEY, reply_text="Hello from fake OpenAI, one two three").start()
    deepseek_fake = FakeOpenAIUpstream(
        api_key=DEEPSEEK_KEY, models=("deepseek-chat",), reply_text="Hello from fake DeepSeek, one two three"
    ).start()
    anthropic_fake = FakeAnthropicUpstream(
        api_key=ANTHROPIC_KEY, reply_text="Hello from fake Claude, one two three"
    ).start()
    gemini_fake = FakeGeminiUpstream(api_key=GEMINI_KEY, reply_text="Hello from fake Gemini, one two three").start()
    bedrock_fake = FakeBedrockUpstream(
        region=BEDROCK_REGION, reply_text="Hello from fake Bedrock, one two three"
    ).start()
    ollama_fake = FakeOllamaUpstream(reply_text="Hello from fake Ollama, one two three").start()
    return [
        Upstream(
            "openai",
            "openai",
            "gpt-4o-mini",
            openai_fake,
            openai_fake.reply_text,
            server_error=lambda: Scripted.error(500, "boom"),
            rate_limited=lambda: Scripted.error(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=2),
            retry_after="2",
            broken_stream=lambda: Scripted.break_stream_after(2),
            delivered_before_break="Hello from",
            prompt_tokens=_openai_prompt,
            streamed=_openai_streamed,
        ),
        Upstream(
            "deepseek",
            "openai-compatible",
            "deepseek-chat",
            deepseek_fake,
            deepseek_fake.reply_text,
            server_error=lambda: Scripted.error(500, "boom"),
            rate_limited=lambda: Scripted.error(429, "Rate limit reached", retry_after=2),
            retry_after="2",
            broken_stream=lambda: Scripted.break_stream_after(2),
            delivered_before_break="Hello from",
            prompt_tokens=_openai_prompt,
            streamed=_openai_streamed,
        ),
        # Anthropic events: message_start, content_block_start, ping, then one delta per token.
        Upstream(
            "anthropic",
            "anthropic",
            "claude-sonnet-4-6",
            anthropic_fake,
            anthropic_fake.reply_text,
            server_error=lambda: AnthropicScript.error(500, "Internal server error"),
            rate_limited=lambda: AnthropicScript.error(
                429, "Number of requests has exceeded your rate limit", retry_after=2
            ),
            retry_after="2",
            broken_stream=lambda: AnthropicScript.break_after_events(5),
            delivered_before_break="Hello from",
            prompt_tokens=anthropic_input_tokens,
            streamed=lambda record: record.json.get("stream") is True,
        ),
        # Gemini: one fragment per token.
        Upstream(
            "gemini",
            "gemini",
            "gemini-2.5-flash",
            gemini_fake,
            gemini_fake.reply_text,
            server_error=lambda: GeminiScript.error(500),
            rate_limited=lambda: GeminiScript.error(429, retry_delay="2s"),  # Google's RetryInfo, no header
            retry_after="2",
            broken_stream=lambda: GeminiScript.break_stream_after(2),
            delivered_before_break="Hello from",
            prompt_tokens=gemini_prompt_tokens,
            streamed=lambda record: record.path.endswith(":streamGenerateContent"),
        ),
        # Bedrock events: messageStart, then one contentBlockDelta per token.
        Upstream(
            "bedrock",
            "bedrock",
            "amazon.nova-lite-v1:0",
            bedrock_fake,
            bedrock_fake.reply_text,
            server_error=lambda: BedrockScript.error(500, "InternalServerException", "internal failure"),
            rate_limited=lambda: BedrockScript.error(429, "ThrottlingException", "Too many requests"),
            retry_after=None,
            broken_stream=lambda: BedrockScript.break_stream_after(3),
            delivered_before_break="Hello from",
            prompt_tokens=bedrock_input_tokens,
            streamed=lambda record: record.operation == "converse-stream",
        ),
        # Ollama: one NDJSON line per token.
        Upstream(
            "ollama",
            "ollama",
            "llama3.2",
            ollama_fake,
            ollama_fake.reply_text,
            server_error=lambda: OllamaScripted.error(500, "llama runner process has terminated"),
            rate_limited=lambda: OllamaScripted.error(429, "server busy, please try again"),
            retry_after=None,
            broken_stream=lambda: OllamaScripted.break_stream_after(2),
            delivered_before_break="Hello from",
            prompt_tokens=_openai_prompt,
            streamed=lambda record: record.json.get("stream", True) is not False,
        ),
    ]


def _openai_prompt(body: Any) -> int:
    return count_prompt_tokens(body["messages"])  # Ollama's fake counts the same way


def _openai_streamed(record: Any) -> bool:
    return record.json.get("stream") is True


def secret_of(upstream: Upstream) -> str | None:
    if upstream.kind == "ollama":
        return None
    if upstream.kind == "bedrock":
        return upstream.fake.secret
    return upstream.fake.api_key


def configure(gateway: Gateway, upstreams: list[Upstream]) -> str:
    """Every provider with its priced model, one account with plenty of credit; returns its API key."""
    env = gateway.env
    for upstream in upstreams:
        args = ["providers", "add", upstream.name, "--kind", upstream.kind, "--base-url", upstream.fake.base_url]
        if upstream.kind == "bedrock":
            args += ["--region", BEDROCK_REGION]
        secret = secret_of(upstream)
        if secret is None:
            cli(env, *args)
        else:
            cli(env, *args, "--api-key-stdin", stdin=secret + "\n")
        cli(env, "prices", "set", upstream.gateway_model, "--input", "2", "--output", "8")
    cli(env, "accounts", "create", ACCOUNT)
    cli(env, "credits", "grant", ACCOUNT, "1000", "--reason", "e2e providers")
    return cli(env, "keys", "issue", ACCOUNT, "--name", "providers")["key"]


def client_for(gateway: Gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
