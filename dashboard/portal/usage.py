"""The account's usage over time: spend by model (chart) and by key and model (table),
from the hourly usage rollups of this account only."""

import streamlit as st

from dashboard import charts, queries, ui
from dashboard.metrics import credits_text
from dashboard.portal import gate, reads

session, ctx = gate.page_context()
st.title("Usage")
window = ui.window_picker("portal_usage", default="Last 7 days")
account_id = str(session.account_id)
usage = queries.usage_frame(ctx.key, window.since, window.until, account_id, _source=ctx.source)
st.session_state["portal_usage_rows"] = len(usage)
if usage.empty:
    st.info(f"No requests between {window.label()}. Widen the time range.")
    st.stop()

names = reads.key_names(ctx.key, str(session.account_id), _portal=gate.portal())
by_time = charts.spend_by_bucket(usage, window)
st.altair_chart(
    charts.stacked_bars_over_time(by_time, "spend_credits", "model", "Spend by model", "credits", hourly=window.hourly),
    width="stretch",
    key="portal_chart_spend",
)
counters = ["requests", "input_tokens", "cached_input_tokens", "output_tokens", "charge"]
table = usage.groupby(["api_key_id", "model"], as_index=False)[counters].sum()
table.insert(0, "key", [names.get(k, ui.short_id(k)) for k in table["api_key_id"]])
st.dataframe(
    ui.with_credits(table, ["charge"])[["key", "model", *counters, "api_key_id"]],
    hide_index=True,
    width="stretch",
    key="portal_usage_table",
)
st.caption(
    f"{int(usage['requests'].sum()):,} requests and {credits_text(int(usage['charge'].sum()))} credits charged "
    f"in {window.label()} (charges in credits, exact)."
)
