"""Models and providers: usage, spend and errors by model and by provider (usage rollups),
the HTTP statuses each provider's requests ended with (request log), and — from the
provider rollups — the margin by provider and model and each credential's health: its
failed upstream attempts and the failovers it served, over time. An end-user or tag
filter (the requests' attribution) narrows the usage parts, then summed from the request log.

A deployment whose provider rollups do not exist yet (``tallyhub init`` creates them)
gets the usage parts and a note that says so.
"""

import pandas as pd
import streamlit as st

from dashboard import charts, queries, ui
from dashboard.metrics import credits_axis
from dashboard.windows import Window

MARGIN_SUMMED = ["requests", "charged", "provider_cost", "provider_cost_unknown", "cost"]
HEALTH_SUMMED = ["completed", "failed", "failed_attempts", "failovers"]
HEALTH_LINES = {"failed_attempts": "failed attempts", "failovers": "failovers"}

ctx = ui.page_context()
st.title("Models and providers")
window = ui.window_picker("models")
by = st.columns(4)
user = by[0].text_input("End user (exact)", key="models_user", help="the `user` the caller sent")
tag = by[1].text_input("Tag (exact)", key="models_tag", help="one of the tags sent in `x-tallyhub-tags`").strip()
if user or tag:
    st.caption(
        "Usage of the requests with this end user and tag, summed from the request log; the provider "
        "statuses, margins and credential health below are of every request."
    )
usage = queries.usage_frame(ctx.key, window.since, window.until, user=user or None, tag=tag or None, _source=ctx.source)
if usage.empty:
    ui.empty_window(ctx, window)
    st.stop()

data = charts.spend_by_bucket(usage, window)
st.altair_chart(
    charts.stacked_bars_over_time(data, "spend_credits", "model", "Spend by model", "credits", hourly=window.hourly),
    width="stretch",
    key="chart_model_spend",
)

SUMMED = [
    "requests",
    "failed_requests",
    "estimated_requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "images",
    "charge",
    "cost",
]


def summary(by: list[str]) -> pd.DataFrame:
    frame = usage.groupby(by)[SUMMED].sum().reset_index().sort_values("charge", ascending=False)
    frame.insert(
        len(by) + 2,
        "error_rate",
        [f"{100 * f / r:.2f}%" if r else "—" for f, r in zip(frame["failed_requests"], frame["requests"], strict=True)],
    )
    return ui.with_credits(frame, ["charge", "cost"])


st.subheader("By model")
st.dataframe(summary(["provider", "model"]), hide_index=True, width="stretch", key="models_table")
st.subheader("By provider")
left, right = st.columns([3, 2])
left.dataframe(summary(["provider"]), hide_index=True, width="stretch", key="providers_table")
statuses = queries.status_counts(ctx.key, window.since, window.until, _source=ctx.source)
statuses["status"] = statuses["status"].astype(str)
right.altair_chart(
    charts.horizontal_bars(
        statuses, "provider", "requests", "Requests by provider and status", "requests", color="status"
    ),
    width="stretch",
    key="chart_statuses",
)
st.caption(
    "charge = credits charged to accounts; cost = the same usage priced at list (they differ when an "
    "account could not pay in full). estimated_requests = usage Tallyhub estimated because the provider "
    "reported none."
)


def margins(providers: pd.DataFrame) -> pd.DataFrame:
    """Charged, provider cost and margin per provider and model, exact nanocredits (then shown as credits)."""
    frame = providers.groupby(["provider", "model"])[MARGIN_SUMMED].sum().reset_index()
    frame.insert(5, "margin", frame["charged"] - frame["provider_cost"])
    frame.insert(
        6,
        "margin_rate",
        [f"{100 * m / c:.2f}%" if c else "—" for m, c in zip(frame["margin"], frame["charged"], strict=True)],
    )
    return frame.sort_values("margin", ascending=False)


def credential_health(providers: pd.DataFrame) -> pd.DataFrame:
    """Per credential tried: served, failed, failed attempts, failovers, and the share of attempts that failed."""
    tried = providers[providers["credential_id"] != ""]
    frame = tried.groupby(["provider", "credential_id"])[HEALTH_SUMMED].sum().reset_index()
    attempts = frame["completed"] + frame["failed"] + frame["failed_attempts"]
    frame["attempt_error_rate"] = [
        f"{100 * (f + a) / n:.2f}%" if n else "—"
        for f, a, n in zip(frame["failed"], frame["failed_attempts"], attempts, strict=True)
    ]
    return frame.sort_values(["provider", "credential_id"])


def health_series(providers: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Long form (bucket, credential, metric, value): every bucket of the window for every credential tried."""
    tried = providers[providers["credential_id"] != ""].assign(
        credential=lambda f: f["provider"] + " · " + f["credential_id"],
        bucket=lambda f: [window.bucket_of(h) for h in f["hour"]],
    )
    grid = pd.MultiIndex.from_product(
        [window.bucket_starts(), sorted(set(tried["credential"]))], names=["bucket", "credential"]
    )
    sums = tried.groupby(["bucket", "credential"])[list(HEALTH_LINES)].sum().reindex(grid, fill_value=0).reset_index()
    long = sums.melt(id_vars=["bucket", "credential"], var_name="metric", value_name="value")
    return long.assign(metric=long["metric"].map(HEALTH_LINES))


providers = queries.provider_frame(ctx.key, window.since, window.until, _source=ctx.source)
if providers is None:
    st.info(
        "Margins and credential health need the provider rollups (`th_rm_provider_hourly`), which this "
        "deployment does not have yet: run `tallyhub init` (it creates them; the projections then fill them "
        "from the events).",
        icon=":material/info:",
    )
    st.stop()

st.subheader("Margin by provider and model")
left, right = st.columns([3, 2])
margin = margins(providers)
left.dataframe(
    ui.with_credits(margin, ["charged", "cost", "provider_cost", "margin"]),
    hide_index=True,
    width="stretch",
    key="margins_table",
)
costed = margin[margin["provider_cost_unknown"] == 0]  # a margin without the provider's cost would mislead
right.altair_chart(
    charts.horizontal_bars(
        costed.assign(margin_credits=[credits_axis(m) for m in costed["margin"]]),
        "model",
        "margin_credits",
        "Margin by model",
        "credits",
        color="provider",
    ),
    width="stretch",
    key="chart_margins",
)
st.caption(
    "margin = charged − provider cost (the price book's provider-cost rates for the same usage). "
    "provider_cost_unknown = completed requests of models priced without provider-cost rates: their cost is "
    "not in the margin, and the chart leaves those models out. cost = the usage priced at list."
)

st.subheader("Credential health")
health = credential_health(providers)
if health.empty:
    st.info("No request of this window reached an upstream credential.", icon=":material/info:")
else:
    st.altair_chart(
        charts.credential_lines(
            health_series(providers, window), "Failed attempts and failovers per credential", hourly=window.hourly
        ),
        width="stretch",
        key="chart_credential_health",
    )
    st.dataframe(health, hide_index=True, width="stretch", key="credentials_table")
    st.caption(
        "failed_attempts = upstream attempts through the credential that failed (retried on another one, or "
        "the request failed); failovers = requests the credential served after at least one failed attempt; "
        "attempt_error_rate = (failed + failed_attempts) / every attempt through it. "
        "`tallyhub providers list` shows which credentials are disabled now."
    )
