"""Console: API keys of an account. List them (status, created, last use, allowed models,
limits), issue one, and for the key picked revoke or rotate it (each confirmed first), limit
its models, set its rate limits and spend caps. Each form runs the application command its
CLI twin runs (``keys issue``, ``keys revoke``, ``keys rotate``, ``keys set-models``,
``keys limits``, ``accounts caps --key``), as the signed-in admin.

Invariant: a new key's secret exists only in the run that issued it: shown once in a code
block, never put in ``st.session_state``, never logged; the next run shows it no more, and
the ledger keeps only its digest.
"""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pandas as pd
import streamlit as st

from adapters.services import Services
from adapters.time_window import parse_instant
from application.api_keys import IssuedKey, parse_models
from dashboard import queries, timezones, ui
from dashboard.console import actions
from dashboard.console.accounts_parts import (
    accounts,
    attempt,
    credits_field,
    credits_or_none,
    done,
    limit_field,
    pick_account,
    prefill,
    show_done,
    whole_or_clear,
)
from dashboard.console.keys_directory import issued_keys
from dashboard.metrics import credits_text
from domain.api_key import ApiKey
from domain.errors import InvalidRequest, NotInCreditsMode

ctx = ui.page_context()
st.title("API keys")
st.caption("Each action here is the CLI's command, recorded as done by the admin key you signed in with.")
show_done()
services = actions.services()


def show_secret(issued: IssuedKey, what: str) -> None:
    """The one time a key's secret is shown."""
    st.success(f"{what} {issued.key_id} ({issued.prefix}).")
    st.warning("Copy the key now: it is shown this once and cannot be retrieved again.", icon=":material/key:")
    st.code(issued.plaintext, language=None)


def status_of(key: ApiKey, now: datetime) -> str:
    if key.revoked:
        return "rotated (revoked)" if key.replaced_by else "revoked"
    if key.expires_at is not None and now >= key.expires_at:
        return "expired"
    if key.retires_at is not None:
        return f"rotated, works until {timezones.text(key.retires_at)}" if now < key.retires_at else "rotated (retired)"
    return "active"


def cap_text(cap: int | None) -> str:
    return "—" if cap is None else credits_text(cap)


def keys_of(account_id: UUID) -> list[ApiKey]:
    """The account's keys, newest first, each as its aggregate has it now."""
    found = [services.ledger.get_api_key(entry.key_id) for entry in issued_keys(ctx.key, services.ledger, account_id)]
    return found[::-1]


def keys_table(keys: list[ApiKey], account_id: UUID) -> None:
    if not keys:
        st.info("**No keys yet.** Issue one above; the secret is shown once.")
        return
    now = datetime.now(UTC)
    last_used = queries.keys_last_used(ctx.key, str(account_id), _source=ctx.source)
    caps = services.ledger.get_account(account_id).caps
    zone = timezones.label()
    rows = []
    for key in keys:
        cap = caps.get(key.id.hex, {})
        rows.append(
            {
                "name": key.name or "—",
                "key": key.prefix,
                "id": str(key.id),
                "status": status_of(key, now),
                f"created ({zone})": timezones.text(key.created_on),
                f"last used ({zone})": timezones.text(last_used.get(str(key.id))),
                "allowed models": ", ".join(key.allowed_models) if key.allowed_models is not None else "every model",
                "rpm": limit_field(key.rate_limits.rpm) or "—",
                "tpm": limit_field(key.rate_limits.tpm) or "—",
                "parallel": limit_field(key.rate_limits.max_parallel) or "—",
                "day cap": cap_text(cap.get("day")),
                "month cap": cap_text(cap.get("month")),
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="keys_table")
    st.caption(f"Last use from the request log (refreshed every {queries.TTL_SECONDS} s).")


account = pick_account(accounts(services), "keys_account")
if account is None:
    st.stop()
account_id = account.account_id

with st.expander("Issue a key", icon=":material/add_circle:"), st.form("issue", clear_on_submit=True):
    name = st.text_input("Name", key="issue_name", placeholder="e.g. prod")
    models = st.text_input(
        "Allowed models (optional)", key="issue_models", placeholder="PROVIDER/MODEL, PROVIDER/* or aliases; blank: all"
    )
    expires = st.text_input("Expires at (optional)", key="issue_expires", placeholder="ISO 8601, UTC when no zone")
    if st.form_submit_button("Issue key", key="issue_submit", type="primary"):

        def issue(s: Services) -> Any:
            expires_at = parse_instant(expires, "expires") if expires.strip() else None
            return s.api_keys.issue_api_key(account_id, name.strip(), expires_at, parse_models(models))

        issued = attempt(issue)
        if issued is not None:
            show_secret(issued, f"Key {issued.name or '(no name)'} issued for {account.name}:")

table = st.container()
keys = keys_of(account_id)
if not keys:
    with table:
        keys_table(keys, account_id)
    st.stop()

labels = {str(k.id): f"{k.name or '(no name)'} · {k.prefix} · {k.id}" for k in keys}
chosen = st.selectbox("Key", list(labels), format_func=labels.__getitem__, key="keys_pick")
key = next((k for k in keys if str(k.id) == chosen), keys[0])
revoke_tab, rotate_tab, models_tab, limits_tab, caps_tab = st.tabs(
    ["Revoke", "Rotate", "Allowed models", "Rate limits", "Spend caps"]
)

with revoke_tab, st.form("revoke", clear_on_submit=True):
    st.caption("Requests with a revoked key fail with 401 at once. This cannot be undone.")
    why = st.text_input("Reason (optional)", key="revoke_reason")
    revoke_confirmed = st.checkbox("I understand: this key stops working now", key="revoke_confirm")
    if st.form_submit_button("Revoke key", key="revoke_submit"):

        def revoke(s: Services) -> Any:
            if not revoke_confirmed:
                raise InvalidRequest("tick the box to confirm revoking the key; nothing was changed", param="confirm")
            return s.api_keys.revoke_api_key(key.id, why.strip())

        if attempt(revoke) is not None:
            done(f"Key {key.name or key.id} revoked.")

with rotate_tab, st.form("rotate", clear_on_submit=True):
    st.caption("A new key with the same account, name, expiry, models and limits; the old one stops working.")
    grace = st.text_input("Grace period (seconds, up to 30 days)", key="rotate_grace_seconds", placeholder="0")
    rotate_confirmed = st.checkbox(
        "I understand: the old key stops working after the grace period", key="rotate_confirm"
    )
    if st.form_submit_button("Rotate key", key="rotate_submit"):

        def rotate(s: Services) -> Any:
            seconds = whole_or_clear(grace, "grace_seconds")
            if not rotate_confirmed:
                raise InvalidRequest("tick the box to confirm rotating the key; nothing was changed", param="confirm")
            return s.api_keys.rotate_api_key(key.id, grace=timedelta(seconds=seconds))

        rotation = attempt(rotate)
        if rotation is not None:
            until = timezones.text(rotation.old_retires_at) if rotation.old_retires_at else "no longer (revoked now)"
            show_secret(rotation.issued, f"Key {rotation.old_key_id} rotated; the old key works {until}. New key")

prefill("models_shown", str(key.id), {"models_allowed": ", ".join(key.allowed_models or [])})
with models_tab, st.form("models"):
    allowed = st.text_input(
        "Allowed models",
        key="models_allowed",
        help="PROVIDER/MODEL, PROVIDER/* or aliases, comma-separated; blank: all",
    )
    if st.form_submit_button("Save allowed models", key="models_submit"):

        def set_models(s: Services) -> Any:
            return s.api_keys.set_allowed_models(key.id, parse_models(allowed))

        if attempt(set_models) is not None:
            done(f"Allowed models of key {key.name or key.id} saved.")

prefill(
    "key_limits_shown",
    str(key.id),
    {
        "key_limits_rpm": limit_field(key.rate_limits.rpm),
        "key_limits_tpm": limit_field(key.rate_limits.tpm),
        "key_limits_max_parallel": limit_field(key.rate_limits.max_parallel),
    },
)
with limits_tab, st.form("key_limits"):
    st.caption("This key's own limits, besides its account's. Blank or 0: no limit.")
    rpm = st.text_input("Requests per minute", key="key_limits_rpm")
    tpm = st.text_input("Tokens per minute (input + output)", key="key_limits_tpm")
    parallel = st.text_input("Requests in flight at once", key="key_limits_max_parallel")
    if st.form_submit_button("Save rate limits", key="key_limits_submit"):

        def set_limits(s: Services) -> Any:
            return s.api_keys.set_key_limits(
                key.id,
                rpm=whole_or_clear(rpm, "rpm"),
                tpm=whole_or_clear(tpm, "tpm"),
                max_parallel=whole_or_clear(parallel, "max_parallel"),
            )

        if attempt(set_limits) is not None:
            done(f"Rate limits of key {key.name or key.id} saved.")

key_caps = services.ledger.get_account(account_id).caps.get(key.id.hex, {})
prefill(
    "key_caps_shown",
    str(key.id),
    {"key_caps_day": credits_field(key_caps.get("day")), "key_caps_month": credits_field(key_caps.get("month"))},
)
with caps_tab, st.form("key_caps"):
    st.caption("Credits per UTC day and month this key may spend (credits mode). Blank: no cap.")
    day = st.text_input("Day cap (credits)", key="key_caps_day")
    month = st.text_input("Month cap (credits)", key="key_caps_month")
    if st.form_submit_button("Save spend caps", key="key_caps_submit"):

        def set_caps(s: Services) -> Any:
            day_cap, month_cap = credits_or_none(day, "day"), credits_or_none(month, "month")
            if ctx.settings.billing_mode != "credits" and (day_cap is not None or month_cap is not None):
                raise NotInCreditsMode("spend caps")
            return s.accounts.set_spend_caps(account_id, day=day_cap, month=month_cap, api_key_id=key.id)

        if attempt(set_caps) is not None:
            done(f"Spend caps of key {key.name or key.id} saved.")

with table:
    keys_table(keys_of(account_id), account_id)
