"""Webhooks and balance alerts under ``/admin/v1``, behind the admin key, answering what
the CLI's ``--json`` prints (adapters/cli/webhook_commands.py):

- ``POST /admin/v1/webhooks`` ``{"url", "events": [...], "secret"?}`` → 201, the webhook
  with its signing secret (the only time it is shown; generated when not given);
- ``GET /admin/v1/webhooks`` → ``{"data": [webhook, …]}`` (never a secret);
- ``DELETE /admin/v1/webhooks/{id}`` → the removed webhook, ``"removed": true``;
- ``GET|PUT /admin/v1/accounts/{account}/alerts`` ``{"below": [credits, …]}`` → the
  account's balance.low thresholds (``[]`` clears them)."""

from typing import Any

import anyio
from fastapi import APIRouter
from pydantic import Field

from adapters.cli.webhook_commands import thresholds_json, webhook_json
from adapters.http.admin import Admin, Credits, _Body
from domain.account import MAX_ALERT_THRESHOLDS
from domain.money import parse_credits
from domain.webhook import EVENT_TYPES

router = APIRouter(prefix="/admin/v1", tags=["admin: webhooks"])


class WebhookIn(_Body):
    url: str = Field(description="http or https URL, without credentials, that receives signed POSTs")
    events: list[str] = Field(description=f"notice types: {', '.join(EVENT_TYPES)}")
    secret: str | None = Field(default=None, description="signing secret; generated (and returned once) when absent")


class AlertsIn(_Body):
    below: list[Credits] = Field(
        max_length=MAX_ALERT_THRESHOLDS, description="available-balance thresholds in credits; [] clears them"
    )


@router.post("/webhooks", status_code=201)
async def add_webhook(body: WebhookIn, services: Admin) -> dict[str, Any]:
    added = await anyio.to_thread.run_sync(lambda: services.webhooks.add_webhook(body.url, body.events, body.secret))
    return {**webhook_json(added.webhook), "secret": added.secret}


@router.get("/webhooks")
async def list_webhooks(services: Admin) -> dict[str, Any]:
    webhooks = await anyio.to_thread.run_sync(services.webhooks.list_webhooks)
    return {"data": [webhook_json(w) for w in webhooks]}


@router.delete("/webhooks/{webhook_id}")
async def remove_webhook(webhook_id: str, services: Admin) -> dict[str, Any]:
    removed = await anyio.to_thread.run_sync(lambda: services.webhooks.remove_webhook(webhook_id))
    return {**webhook_json(removed), "removed": True}


@router.get("/accounts/{account}/alerts")
async def get_alerts(account: str, services: Admin) -> dict[str, Any]:
    found, thresholds = await anyio.to_thread.run_sync(lambda: services.alert_thresholds.get_thresholds(account))
    return thresholds_json(found, thresholds)


@router.put("/accounts/{account}/alerts")
async def set_alerts(account: str, body: AlertsIn, services: Admin) -> dict[str, Any]:
    amounts = [parse_credits(value, param="below") for value in body.below]
    found, thresholds = await anyio.to_thread.run_sync(
        lambda: services.alert_thresholds.set_thresholds(account, amounts)
    )
    return thresholds_json(found, thresholds)
