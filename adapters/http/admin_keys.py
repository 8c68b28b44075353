"""Admin routes for secrets and keys under ``/admin/v1``, behind the admin key:
master-key status and rotation, provider credential rotation and deletion, API keys
issued with model limits, rotated, and limited. Provider secrets arrive only in
request bodies and never leave; a new API key is returned once, by the call that
made it."""

from datetime import timedelta
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from adapters.cli.key_commands import key_json, rotation_json, rotation_result_json, status_json
from adapters.cli.limit_commands import limits_json
from adapters.http.admin import UtcDateTime, require_admin
from adapters.http.admin_limits import LimitsIn
from adapters.presenters import provider_json
from adapters.services import Services
from application import key_management as km
from application.api_keys import MAX_GRACE

# Larger values would overflow timedelta (a 500) before key_management could refuse them.
MAX_GRACE_SECONDS = int(MAX_GRACE.total_seconds())

router = APIRouter(prefix="/admin/v1", tags=["admin: secrets and keys"])
Admin = Annotated[Services, Depends(require_admin)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RotateCredentialIn(_Body):
    api_key: str = Field(
        description="the new provider secret; stored encrypted, never returned", json_schema_extra={"minLength": 1}
    )
    credential: str | None = Field(
        default=None, description="the credential to replace (needed when there are several)"
    )
    grace_seconds: int = Field(
        default=0, ge=0, le=MAX_GRACE_SECONDS, description="keep using the old credential this long beside the new one"
    )
    weight: int | None = Field(default=None, ge=1)


class IssueKeyIn(_Body):
    account: str
    name: str = ""
    expires_at: UtcDateTime | None = Field(default=None, description="ISO 8601 (UTC when it names no zone)")
    models: list[str] | None = Field(
        default=None, description="PROVIDER/MODEL, PROVIDER/* or aliases; null: every model"
    )


class RotateKeyIn(_Body):
    grace_seconds: int = Field(
        default=0, ge=0, le=MAX_GRACE_SECONDS, description="the old key keeps working this long (0: revoked now)"
    )


class ModelsIn(_Body):
    models: list[str] | None = Field(description="PROVIDER/MODEL, PROVIDER/* or aliases; null: every model")


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@router.get("/secrets")
async def secrets_status(services: Admin) -> dict[str, Any]:
    return status_json(await _run(km.secrets_status, services.ledger, services.responses))


@router.post("/secrets/rotate-master")
async def rotate_master(services: Admin) -> dict[str, Any]:
    return rotation_result_json(await _run(km.rotate_master, services.ledger, services.responses))


@router.post("/providers/{name}/credentials/rotate")
async def rotate_credential(name: str, body: RotateCredentialIn, services: Admin) -> dict[str, Any]:
    rotation = await _run(
        services.provider_registry.rotate_credential,
        name,
        body.api_key,
        credential_id=body.credential,
        grace=timedelta(seconds=body.grace_seconds),
        weight=body.weight,
    )
    return {**provider_json(rotation.provider), "rotated": rotation_json(rotation)}


@router.delete("/providers/{name}/credentials/{credential_id}")
async def delete_credential(name: str, credential_id: str, services: Admin) -> dict[str, Any]:
    return provider_json(await _run(services.provider_registry.delete_credential, name, credential_id))


@router.post("/keys", status_code=201)
async def issue_key(body: IssueKeyIn, services: Admin) -> dict[str, Any]:
    issued = await _run(services.api_keys.issue_api_key, body.account, body.name, body.expires_at, body.models)
    return {**key_json(await _run(services.ledger.get_api_key, issued.key_id)), "key": issued.plaintext}


@router.get("/keys/{key_id}")
async def get_key(key_id: str, services: Admin) -> dict[str, Any]:
    return key_json(await _run(services.ledger.get_api_key, key_id))


@router.post("/keys/{key_id}/rotate", status_code=201)
async def rotate_key(key_id: str, body: RotateKeyIn, services: Admin) -> dict[str, Any]:
    rotation = await _run(services.api_keys.rotate_api_key, key_id, timedelta(seconds=body.grace_seconds))
    new = await _run(services.ledger.get_api_key, rotation.issued.key_id)
    old = await _run(services.ledger.get_api_key, rotation.old_key_id)
    return {**key_json(new), "key": rotation.issued.plaintext, "replaces": key_json(old)}


@router.put("/keys/{key_id}/models")
async def set_models(key_id: str, body: ModelsIn, services: Admin) -> dict[str, Any]:
    return key_json(await _run(services.api_keys.set_allowed_models, key_id, body.models))


@router.get("/keys/{key_id}/limits")
async def get_key_limits(key_id: str, services: Admin) -> dict[str, Any]:
    key = await _run(services.ledger.get_api_key, key_id)
    return limits_json("key", key.id, key.rate_limits)


@router.put("/keys/{key_id}/limits")
async def set_key_limits(key_id: str, body: LimitsIn, services: Admin) -> dict[str, Any]:
    key = await _run(lambda: services.api_keys.set_key_limits(key_id, **body.changes()))
    return limits_json("key", key.id, key.rate_limits)
