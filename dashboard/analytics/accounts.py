"""Accounts: balances and open holds (the balances read model), and each account's spend
over time and recent charges (usage rollups and request log).

The statement (every movement with its running balance: grants, top-ups, refunds,
adjustments, charges) comes from the ledger-entries read model where the deployment has
it; where it does not, the page says so rather than rebuilding one from events.
"""

import pandas as pd
import streamlit as st

from dashboard import charts, queries, timezones, ui
from dashboard.metrics import credits_axis, credits_text


def in_zone(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``at`` column in the display zone, the heading naming the zone."""
    return timezones.frame_columns(frame, ["at"]).rename(columns={"at": timezones.heading("at")})


ctx = ui.page_context()
st.title("Accounts")
balances = queries.balances_frame(ctx.key, _source=ctx.source)
if balances.empty:
    st.info(
        "**No accounts yet.** Create one with `tallyhub accounts create NAME [--starter-credits N]` and "
        "grant credit with `tallyhub credits grant NAME AMOUNT`; it appears here within a second."
    )
    st.stop()

AMOUNTS = [c for c in queries.BALANCE_AMOUNTS if c in balances.columns]
totals = st.columns(4)
totals[0].metric("Accounts", f"{len(balances):,}", border=True)
totals[1].metric("Total balance (credits)", credits_text(int(balances["balance"].sum())), border=True)
totals[2].metric("Held by open requests (credits)", credits_text(int(balances["held"].sum())), border=True)
totals[3].metric("Charged to date (credits)", credits_text(int(balances["charged_total"].sum())), border=True)

chart_data = balances.melt(
    id_vars=["name"], value_vars=["available", "held"], var_name="part", value_name="nanocredits"
)
chart_data["credits"] = [credits_axis(v) for v in chart_data["nanocredits"]]
st.altair_chart(
    charts.horizontal_bars(
        chart_data, "name", "credits", "Balance of each account: available + held", "credits", color="part"
    ),
    width="stretch",
    key="chart_balances",
)

UPDATED = timezones.heading("updated_at")
shown = timezones.frame_columns(ui.with_credits(balances, AMOUNTS), ["updated_at"])
shown = shown.rename(columns={"name": "account", "updated_at": UPDATED})
st.dataframe(
    shown[["account", *AMOUNTS, UPDATED, "account_id"]], hide_index=True, width="stretch", key="balances_table"
)
st.caption(
    "Amounts in credits, exact. balance = granted − charged (+ refunds ± adjustments where recorded); "
    "available = balance − held."
)

st.subheader("One account")
names = dict(zip(balances["account_id"], balances["name"], strict=True))
account_id = st.selectbox("Account", list(names), format_func=lambda a: names[a], key="accounts_account")
row = balances.set_index("account_id").loc[account_id]
cols = st.columns(4)
cols[0].metric("Balance", credits_text(int(row["balance"])), border=True)
cols[1].metric("Available", credits_text(int(row["available"])), border=True)
cols[2].metric("Held", credits_text(int(row["held"])), border=True)
cols[3].metric("Granted to date", credits_text(int(row["granted_total"])), border=True)

holds = queries.open_holds_frame(ctx.key, account_id, _source=ctx.source)
st.markdown(f"**Open holds** ({len(holds)})")
if holds.empty:
    st.caption("No open holds: no request of this account is in flight.")
else:
    held = timezones.frame_columns(ui.with_credits(holds, ["amount"]), ["expires_at"])
    held = held.rename(columns={"expires_at": timezones.heading("expires_at")})
    st.dataframe(held, hide_index=True, width="stretch", key="holds_table")

window = ui.window_picker("accounts", default="Last 30 days")
usage = queries.usage_frame(ctx.key, window.since, window.until, account_id, _source=ctx.source)
if usage.empty:
    ui.empty_window(ctx, window, what=f"requests of {names[account_id]}")
else:
    by_model = charts.spend_by_bucket(usage, window)
    st.altair_chart(
        charts.stacked_bars_over_time(
            by_model,
            "spend_credits",
            "model",
            f"Spend of {names[account_id]} by model",
            "credits",
            hourly=window.hourly,
        ),
        width="stretch",
        key="chart_account_spend",
    )
    st.caption(
        f"{int(usage['requests'].sum()):,} requests, {credits_text(int(usage['charge'].sum()))} credits "
        f"charged in {timezones.span_text(window.since, window.until)}."
    )

STATEMENT_ROWS = 500
statement = queries.statement(ctx.key, account_id, window.since, window.until, _source=ctx.source)
if statement is None:
    st.info(
        "Statements with a running balance, grants and top-ups need the ledger-entries read model, which this "
        "deployment does not have yet; below are the account's charges from the request log.",
        icon=":material/info:",
    )
    charges = queries.requests_frame(
        ctx.key, window.since, window.until, account_id=account_id, limit=200, _source=ctx.source
    )
    charges = charges[charges["charge"] > 0]
    st.markdown("**Recent charges** (newest 200 of the window, from the request log)")
    st.dataframe(
        in_zone(
            ui.with_credits(
                charges[["at", "model", "input_tokens", "output_tokens", "charge", "price_book_version", "request_id"]],
                ["charge"],
            )
        ),
        hide_index=True,
        width="stretch",
    )
    st.stop()

st.subheader(f"Statement of {names[account_id]}")
entries = statement.entries
closing = int(entries["balance"].iloc[-1]) if not entries.empty else statement.opening_balance
opening, movements, closing_col = st.columns(3)
opening.metric("Opening balance", credits_text(statement.opening_balance), border=True)
movements.metric("Movements", f"{len(entries):,}", border=True)
closing_col.metric("Closing balance", credits_text(closing), border=True)
if entries.empty:
    st.caption("No movement in this window.")
    st.stop()
line = entries.assign(balance_credits=[credits_axis(b) for b in entries["balance"]])
st.altair_chart(
    charts.running_balance(line, f"Running balance of {names[account_id]}"),
    width="stretch",
    key="chart_running_balance",
)
credit = entries[entries["kind"] != "charge"]
st.markdown(f"**Grants, top-ups, refunds and adjustments** ({len(credit)})")
st.dataframe(in_zone(ui.with_credits(credit, ["amount", "balance"])), hide_index=True, width="stretch")
st.markdown(f"**Every movement** (newest {min(len(entries), STATEMENT_ROWS):,} of {len(entries):,})")
st.dataframe(
    in_zone(ui.with_credits(entries.iloc[::-1].head(STATEMENT_ROWS), ["amount", "balance"])),
    hide_index=True,
    width="stretch",
)
st.caption("Amounts in credits, exact; a charge is negative. Each row's balance is the account's balance after it.")
