"""Console: accounts. Create one; for the account picked, grant credit, adjust its balance
(a debit asks for confirmation), set its spend caps, rate limits and balance alerts. Each
form runs the application command its CLI twin runs (``accounts create``, ``credits grant``,
``credits adjust``, ``accounts caps``, ``accounts limits``, ``accounts alerts``), parsed
by the same helpers, as the signed-in admin; its balance, available and held credit are
shown as the ledger has them after each action.
"""

from typing import Any

import streamlit as st

from adapters.services import Services
from adapters.time_window import parse_instant
from dashboard import ui
from dashboard.console import actions
from dashboard.console.accounts_parts import (
    accounts,
    attempt,
    balance_panel,
    credits_field,
    credits_or_none,
    done,
    limit_field,
    pick_account,
    prefill,
    show_done,
    whole_or_clear,
)
from dashboard.metrics import credits_text
from domain.errors import InvalidRequest, NotInCreditsMode
from domain.money import parse_credits

ctx = ui.page_context()
st.title("Accounts")
st.caption("Each action here is the CLI's command, recorded as done by the admin key you signed in with.")
show_done()
services = actions.services()


def create_account(name: str, starter: str) -> None:
    text = starter.strip() or ctx.settings.starter_credits

    def create(s: Services) -> Any:
        return s.accounts.create_account(name, parse_credits(text, param="starter_credits"))

    created = attempt(create)
    if created is not None:
        st.session_state["credit_account"] = created.name
        done(f"Account {created.name} created ({created.id}), balance {credits_text(created.balance)} credits.")


known = accounts(services)
with st.expander("Create an account", icon=":material/person_add:", expanded=not known):
    with st.form("account_create", clear_on_submit=True):
        name = st.text_input("Name", key="account_create_name")
        starter = st.text_input(
            "Starter credits",
            key="account_create_starter",
            placeholder=f"{ctx.settings.starter_credits} (TALLYHUB_STARTER_CREDITS)",
        )
        if st.form_submit_button("Create account", key="account_create_submit", type="primary"):
            create_account(name, starter)

account = pick_account(known, "credit_account")
if account is None:
    st.stop()
account_id = account.account_id
balance_panel(services, account_id)
grant_tab, adjust_tab, caps_tab, limits_tab, alerts_tab = st.tabs(
    ["Grant credit", "Adjust balance", "Spend caps", "Rate limits", "Balance alerts"]
)

with grant_tab, st.form("grant", clear_on_submit=True):
    amount = st.text_input("Amount (credits)", key="grant_amount", placeholder="e.g. 25 or 0.5")
    reason = st.text_input("Reason", key="grant_reason")
    grant_key = st.text_input(
        "Idempotency key (optional)", key="grant_idempotency_key", help="A grant with a key is credited at most once"
    )
    expires = st.text_input(
        "Expires at (optional)",
        key="grant_expires_at",
        placeholder="ISO 8601, e.g. 2027-01-31T00:00:00Z (UTC when no zone is given)",
        help="What is unspent of this grant then expires.",
    )
    if st.form_submit_button("Grant credit", key="grant_submit", type="primary"):

        def grant(s: Services) -> Any:
            expires_at = parse_instant(expires, "expires_at") if expires.strip() else None
            return s.accounts.grant_credits(
                account_id, parse_credits(amount), reason.strip(), grant_key.strip() or None, expires_at
            )

        granted = attempt(grant)
        if granted is not None:
            done(
                f"Granted {credits_text(granted.amount)} credits to {account.name}."
                if granted.credited
                else "Not credited again: this idempotency key was used before."
            )

with adjust_tab, st.form("adjust", clear_on_submit=True):
    st.caption("A correction up or down, with a reason. A debit never takes the balance below zero.")
    signed = st.text_input("Amount (credits, negative to debit)", key="adjust_amount", placeholder="e.g. -2.5")
    why = st.text_input("Reason", key="adjust_reason")
    adjust_key = st.text_input("Idempotency key (optional)", key="adjust_idempotency_key")
    debit_confirmed = st.checkbox("I understand a negative amount debits this account", key="adjust_confirm")
    if st.form_submit_button("Adjust balance", key="adjust_submit"):

        def adjust(s: Services) -> Any:
            change = parse_credits(signed, allow_negative=True)
            if not why.strip():
                raise InvalidRequest("give a reason for the adjustment", param="reason")
            if change < 0 and not debit_confirmed:
                raise InvalidRequest("tick the box to confirm the debit; nothing was changed", param="confirm")
            return s.accounts.adjust_credits(account_id, change, why.strip(), adjust_key.strip() or None)

        adjusted = attempt(adjust)
        if adjusted is not None:
            done(
                f"Adjusted {account.name} by {credits_text(adjusted.amount)} credits."
                if adjusted.credited
                else "Not applied again: this idempotency key was used before."
            )

caps = services.ledger.get_account(account_id).caps.get("account", {})
prefill(
    "caps_shown",
    str(account_id),
    {"caps_day": credits_field(caps.get("day")), "caps_month": credits_field(caps.get("month"))},
)
with caps_tab, st.form("caps"):
    st.caption("Credits per UTC day and month the account may spend (credits mode). Blank: no cap.")
    day = st.text_input("Day cap (credits)", key="caps_day")
    month = st.text_input("Month cap (credits)", key="caps_month")
    if st.form_submit_button("Save spend caps", key="caps_submit"):

        def set_caps(s: Services) -> Any:
            day_cap, month_cap = credits_or_none(day, "day"), credits_or_none(month, "month")
            if ctx.settings.billing_mode != "credits" and (day_cap is not None or month_cap is not None):
                raise NotInCreditsMode("spend caps")
            return s.accounts.set_spend_caps(account_id, day=day_cap, month=month_cap)

        if attempt(set_caps) is not None:
            done(f"Spend caps of {account.name} saved.")

limits = services.accounts.get_account_limits(account_id)[1]
prefill(
    "limits_shown",
    str(account_id),
    {
        "limits_rpm": limit_field(limits.rpm),
        "limits_tpm": limit_field(limits.tpm),
        "limits_max_parallel": limit_field(limits.max_parallel),
    },
)
with limits_tab, st.form("limits"):
    st.caption("Every request of the account's keys counts. Blank or 0: no limit.")
    rpm = st.text_input("Requests per minute", key="limits_rpm")
    tpm = st.text_input("Tokens per minute (input + output)", key="limits_tpm")
    parallel = st.text_input("Requests in flight at once", key="limits_max_parallel")
    if st.form_submit_button("Save rate limits", key="limits_submit"):

        def set_limits(s: Services) -> Any:
            return s.accounts.set_account_limits(
                account_id,
                rpm=whole_or_clear(rpm, "rpm"),
                tpm=whole_or_clear(tpm, "tpm"),
                max_parallel=whole_or_clear(parallel, "max_parallel"),
            )

        if attempt(set_limits) is not None:
            done(f"Rate limits of {account.name} saved.")

thresholds = services.alert_thresholds.get_thresholds(account_id)[1]
prefill("alerts_shown", str(account_id), {"alerts_below": ", ".join(credits_field(t) for t in thresholds)})
with alerts_tab, st.form("alerts"):
    st.caption("A `balance.low` webhook notice fires when available credit falls below each amount. Blank: none.")
    below = st.text_input("Below (credits, comma-separated)", key="alerts_below")
    if st.form_submit_button("Save balance alerts", key="alerts_submit"):

        def set_alerts(s: Services) -> Any:
            amounts = [parse_credits(text.strip(), param="below") for text in below.split(",") if text.strip()]
            return s.alert_thresholds.set_thresholds(account_id, amounts)

        if attempt(set_alerts) is not None:
            done(f"Balance alerts of {account.name} saved.")
