"""Models and providers: usage, spend and errors by model and by provider (usage rollups),
and the HTTP statuses each provider's requests ended with (request log).

Credential health and failover counts need the provider-health read model (PRODUCT.md's
"provider and credential health" projection), which does not exist yet: the page says so.
"""

import pandas as pd
import streamlit as st

from dashboard import charts, queries, ui
from dashboard.metrics import credits_axis

ctx = ui.page_context()
st.title("Models and providers")
window = ui.window_picker("models")
usage = queries.usage_frame(ctx.key, window.since, window.until, _source=ctx.source)
if usage.empty:
    ui.empty_window(ctx, window)
    st.stop()

data = usage.assign(bucket=[window.bucket_of(h) for h in usage["hour"]],
                    bucket_end=[window.bucket_of(h) + window.bucket for h in usage["hour"]],
                    spend_credits=[credits_axis(c) for c in usage["charge"]])
st.altair_chart(charts.stacked_bars_over_time(data, "spend_credits", "model", "Spend by model", "credits", hourly=window.hourly),
                width="stretch", key="chart_model_spend")

SUMMED = ["requests", "failed_requests", "estimated_requests", "input_tokens", "cached_input_tokens", "output_tokens",
          "reasoning_tokens", "images", "charge", "cost"]


def summary(by: list[str]) -> pd.DataFrame:
    frame = usage.groupby(by)[SUMMED].sum().reset_index().sort_values("charge", ascending=False)
    frame.insert(len(by) + 2, "error_rate", [f"{100 * f / r:.2f}%" if r else "—"
                                             for f, r in zip(frame["failed_requests"], frame["requests"])])
    return ui.with_credits(frame, ["charge", "cost"])


st.subheader("By model")
st.dataframe(summary(["provider", "model"]), hide_index=True, width="stretch", key="models_table")
st.subheader("By provider")
left, right = st.columns([3, 2])
left.dataframe(summary(["provider"]), hide_index=True, width="stretch", key="providers_table")
statuses = queries.status_counts(ctx.key, window.since, window.until, _source=ctx.source)
statuses["status"] = statuses["status"].astype(str)
right.altair_chart(charts.horizontal_bars(statuses, "provider", "requests", "Requests by provider and status",
                                          "requests", color="status"), width="stretch", key="chart_statuses")
st.caption("charge = credits charged to accounts; cost = the same usage priced at list (they differ when an "
           "account could not pay in full). estimated_requests = usage Tallyhub estimated because the provider "
           "reported none.")
st.info("Credential health (cool-downs, disabled credentials) and failover counts need the provider-health "
        "read model, which is not built yet. `tallyhub providers list` shows each credential's state now; "
        "a request's failed attempts are on its receipt (Requests page).", icon=":material/info:")
