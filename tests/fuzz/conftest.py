"""A whole gateway in process for the fuzz tests: SQLite store and read models in a
temporary data dir, the real ``create_app`` (lifespan, hot-route middleware, group
commit, embedded projector), one OpenAI provider whose upstream is a fake OpenAI
server on loopback, priced models, an account with credit and an API key.

``FUZZ_EXAMPLES`` scales every fuzz test (examples per operation / per body
strategy; default small, so ``make test`` stays quick); ``FUZZ_SEED`` picks the seed
(default fixed, so a failure replays).
"""

import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, initialise
from adapters.crypto.aes_gcm import generate_master_key
from adapters.http.app import create_app
from adapters.services import Services
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.health import CredentialHealth
from application.prices import Prices
from application.providers import ProviderRegistry
from domain.money import NANOCREDITS_PER_CREDIT
from domain.pricing import ModelPrice
from tests.fakes.openai_upstream import FakeOpenAIUpstream

UPSTREAM_SECRET = "sk-upstream-fuzz-secret-3b9f07c2d1"
WEBHOOK_SECRET = "whsec_fuzz_webhook_secret_a81c44f0"
CHAT_MODEL = "openai/gpt-4o-mini"
EMBEDDING_MODEL = "openai/text-embedding-3-small"
ACCOUNT = "acme"
CREDITS = 1_000  # granted to the account: enough that ordinary fuzz requests are admitted


def fuzz_examples(default: int) -> int:
    """Examples per test unit: ``FUZZ_EXAMPLES`` when set (``make fuzz``), else ``default``."""
    return int(os.environ.get("FUZZ_EXAMPLES") or default)


def fuzz_seed() -> int:
    return int(os.environ.get("FUZZ_SEED") or 20261206)


@dataclass
class FuzzGateway:
    client: TestClient
    services: Services
    upstream: FakeOpenAIUpstream
    admin_key: str
    api_key: str
    account_id: str
    secrets: list[str] = field(default_factory=list)  # nothing an answer may ever contain
    known: dict[str, list[str]] = field(default_factory=dict)  # path parameter -> values that exist
    health_clock: list[float] = field(default_factory=lambda: [0.0])
    raised: list[str] = field(default_factory=list)  # tracebacks of exceptions the app let out (a 500)

    def forget_upstream_failures(self) -> None:
        """Move the credential-health clock past any cooldown a scripted provider failure started,
        so one failure does not turn every later request into a 429/503."""
        self.health_clock[0] += 24 * 3600

    def auth(self, who: str) -> dict[str, str]:
        key = {"admin": self.admin_key, "user": self.api_key}.get(who)
        return {"authorization": f"Bearer {key}"} if key else {}


def build_gateway(data_dir: Path, health: CredentialHealth) -> tuple[Services, str, list[str]]:
    master_key = generate_master_key()
    settings = Settings(
        data_dir=data_dir,
        master_keys=f"fuzz1:{master_key}",
        read_cache_seconds=0,
        payments_webhook_secret=WEBHOOK_SECRET,
        probe_interval_seconds=3600,
        auth_failure_limit=0,
    )  # the anonymous fuzzing would otherwise lock every caller out
    admin_key = initialise(settings).admin_key
    assert admin_key is not None
    return build_services(settings, health=health), admin_key, [master_key, admin_key]


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzGateway]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_SECRET).start()
    health_clock = [0.0]
    health = CredentialHealth(clock=lambda: health_clock[0])
    services, admin_key, secrets = build_gateway(tmp_path_factory.mktemp("fuzz-data"), health)
    ledger = services.ledger
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=upstream.base_url, region=None, secret=UPSTREAM_SECRET
    )
    per_million = NANOCREDITS_PER_CREDIT
    Prices(ledger).set_price(
        CHAT_MODEL, ModelPrice(input=2 * per_million, output=8 * per_million, max_output_tokens=4096)
    )
    Prices(ledger).set_price(EMBEDDING_MODEL, ModelPrice(input=per_million // 50, output=0))
    account = Accounts(ledger).create_account(ACCOUNT, starter_credits=CREDITS * NANOCREDITS_PER_CREDIT)
    api_key = ApiKeys(ledger).issue_api_key(ACCOUNT, name="fuzz").plaintext
    victim = ApiKeys(ledger).issue_api_key(ACCOUNT, name="victim")  # the admin fuzzing may revoke or rotate this one
    Prices(ledger).set_alias("fast", [CHAT_MODEL])
    known = {"account": [ACCOUNT, str(account.id)], "name": ["openai", "fast"], "key_id": [str(victim.key_id)]}
    app = RaisedExceptions(create_app(services))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield FuzzGateway(
                client=client,
                services=services,
                upstream=upstream,
                admin_key=admin_key,
                api_key=api_key,
                account_id=str(account.id),
                secrets=[*secrets, api_key, victim.plaintext, UPSTREAM_SECRET, WEBHOOK_SECRET],
                known=known,
                health_clock=health_clock,
                raised=app.raised,
            )
    finally:
        services.close()
        upstream.stop()


class RaisedExceptions:
    """The app, keeping the traceback of every exception it lets out (Starlette answers those with
    a 500, then re-raises them for the server's log): the fuzz tests show them with the request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.raised: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            self.raised.append(traceback.format_exc())
            raise


def leaked_secret(text: str, secrets: list[str]) -> str | None:
    """The first secret (or a long enough piece of one) that ``text`` contains."""
    for secret in secrets:
        if secret in text or secret[-16:] in text:
            return secret[:6] + "…"
    return None


def error_shape_problem(status: int, body: Any, anthropic: bool = False) -> str | None:
    """Why an error answer is not in OpenAI's shape (Anthropic's for /v1/messages), or None."""
    if anthropic:
        ok = (
            isinstance(body, dict)
            and body.get("type") == "error"
            and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("type"), str)
            and isinstance(body["error"].get("message"), str)
        )
        return None if ok else f"{status}: not Anthropic's error shape: {str(body)[:300]}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"{status}: not OpenAI's error shape: {str(body)[:300]}"
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return f"{status}: message/type not strings: {str(body)[:300]}"
    if not all(error[name] is None or isinstance(error[name], str) for name in ("param", "code")):
        return f"{status}: param/code neither string nor null: {str(body)[:300]}"
    return None
