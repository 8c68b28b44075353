"""``POST /admin/v1/prices/import`` and ``GET /admin/v1/prices/drift``, behind the admin
key: ``tallyhub prices import`` / ``prices drift`` over HTTP, answering the documents
their ``--json`` prints (adapters/cli/price_import_commands.py). Over HTTP the catalog is
the bundled ``genai-prices`` data only: a LiteLLM file is read by the command line from
the operator's disk, never named by a path in a request. Amounts (margin, credits per
dollar, threshold) are decimal text or integers, never JSON fractions (a float is not
exact)."""

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adapters.catalogs import GENAI_PRICES, open_catalog
from adapters.cli.price_import_commands import MAX_DAYS, drift_json, drift_report, import_json, run_import
from adapters.http.admin import Admin
from adapters.time_window import optional_instant
from application.price_import import Markup
from domain.errors import InvalidRequest

router = APIRouter(prefix="/admin/v1", tags=["admin: price import"])
DECIMAL_TEXT = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"
DecimalText = Annotated[str, StringConstraints(pattern=DECIMAL_TEXT)]


def _decimal(value: str | int, param: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise InvalidRequest(f"{param} must be a decimal number", param=param) from None


class ImportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    catalog: Literal["genai-prices"] = "genai-prices"
    provider: str | None = Field(default=None, max_length=200, description="only this provider's models")
    models: list[str] | None = Field(default=None, max_length=1000, description="only these PROVIDER/MODEL ids")
    margin_percent: DecimalText | int = Field(default="0", description="percent over cost, e.g. '25'")
    credits_per_usd: DecimalText | int = Field(default="1", description="credits per US dollar")
    effective_at: str | None = Field(default=None, description="ISO 8601; default now")
    dry_run: bool = Field(default=False, description="the diff only: publish nothing")


@router.post("/prices/import")
async def import_prices(body: ImportIn, services: Admin) -> dict[str, Any]:
    """A new price-book version from the catalog (or, with ``dry_run``, its diff)."""
    markup = Markup(_decimal(body.margin_percent, "margin_percent"), _decimal(body.credits_per_usd, "credits_per_usd"))
    effective_at = optional_instant(body.effective_at, "effective_at")
    catalog = await anyio.to_thread.run_sync(open_catalog, body.catalog)
    plan = await anyio.to_thread.run_sync(
        lambda: run_import(
            services,
            catalog,
            markup,
            provider=body.provider,
            models=body.models or None,
            effective_at=effective_at,
            dry_run=body.dry_run,
        )
    )
    return import_json(plan, markup, body.dry_run, effective_at)


@router.get("/prices/drift")
async def price_drift(
    services: Admin,
    threshold_percent: str = Query(default="1", pattern=DECIMAL_TEXT),
    credits_per_usd: str = Query(default="1", pattern=DECIMAL_TEXT),
    days: int = Query(default=30, ge=1, le=MAX_DAYS),
) -> dict[str, Any]:
    """Provider costs that differ from the catalog by more than the threshold, and the
    models callers asked for (in the last ``days``) that have no price."""
    threshold, per_usd = _decimal(threshold_percent, "threshold_percent"), _decimal(credits_per_usd, "credits_per_usd")
    catalog = await anyio.to_thread.run_sync(open_catalog, GENAI_PRICES)
    report, since = await anyio.to_thread.run_sync(lambda: drift_report(services, catalog, threshold, per_usd, days))
    return drift_json(report, since)
