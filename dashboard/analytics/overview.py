"""Overview: requests, tokens, spend, error rate, latency and TTFB percentiles, provider
cost and margin over time, each against the previous period of the same length.

The figures are the usage rollups' own sums over the window (``UsageView.get_usage_totals``),
percentiles over the request-log rows of the same window, and provider cost and margin from
the provider rollups' sums (``ProviderHourlyView.get_totals``): all three read models bucket
a request by the same event timestamp, and windows are whole hours, so they agree.
In credits mode Spend is also minus the sum of the ``charge`` rows of ``tallyhub export
ledger`` for the same window (``ledger_note``; docs/operations.md, Dashboard, states the rule).
Spend by API key is the same usage rollups summed per key (its rows add up to Spend), each
key named as it was issued (``ApiKey.Issued``, read once for all keys, never per key).
"""

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, ledger_reads, queries, ui
from dashboard.console.keys_directory import key_names
from dashboard.metrics import (
    ProviderTotals,
    Totals,
    against_previous,
    change_text,
    credits_change_text,
    credits_text,
    latency_of,
    latency_series,
    margin_series,
    usage_series,
)

TIMINGS_LIMIT = 100_000
PERCENTILES = {"p50_latency_ms": "p50", "p95_latency_ms": "p95", "p50_ttfb_ms": "p50", "p95_ttfb_ms": "p95"}
MONEY_LINES = {"provider_cost_credits": "provider cost", "margin_credits": "margin"}

ctx = ui.page_context()
st.title("Overview")
window = ui.window_picker("overview")

current = Totals.of(queries.usage_totals(ctx.key, window.since, window.until, _source=ctx.source))
previous = Totals.of(queries.usage_totals(ctx.key, window.previous.since, window.previous.until, _source=ctx.source))
if current.requests == 0 and previous.requests == 0:
    ui.empty_window(ctx, window)
    st.stop()

timings = queries.timings_frame(ctx.key, window.since, window.until, TIMINGS_LIMIT, _source=ctx.source)
previous_timings = queries.timings_frame(
    ctx.key, window.previous.since, window.previous.until, TIMINGS_LIMIT, _source=ctx.source
)
truncated = len(timings) > TIMINGS_LIMIT or len(previous_timings) > TIMINGS_LIMIT
timings, previous_timings = timings.head(TIMINGS_LIMIT), previous_timings.head(TIMINGS_LIMIT)
latency, previous_latency = latency_of(timings), latency_of(previous_timings)


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.2f}%"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


def margin_note(margins: ProviderTotals | None) -> str:
    if margins is None:
        return "Provider cost and margin need the provider rollups: run `tallyhub init` to create them."
    if margins.provider_cost_unknown:
        return (
            f"{margins.provider_cost_unknown:,} completed requests were priced without provider-cost rates "
            "(a price file's `provider_cost`): the margin leaves their cost out."
        )
    return "Every completed request of the window had provider-cost rates."


def spend_help(mode: str, totals: Totals) -> str:
    if mode == "track":
        return "Track mode: the requests' list price, exact. Nothing was charged to the accounts."
    return (
        f"Charged to accounts, exact, in the hour each request was recorded. Priced at list: "
        f"{credits_text(totals.cost)}; {credits_text(totals.cost - totals.charge)} of it was uncollected "
        "(the `uncollected` of the ledger's charge rows)."
    )


def ledger_note(mode: str) -> str:
    """How Spend relates to ``tallyhub export ledger`` for the same window (docs/operations.md: Dashboard)."""
    if mode == "track":
        return (
            "Track mode: Spend is the requests' list price; nothing is charged to the ledger, so a ledger "
            "export has no charge rows."
        )
    return (
        "Spend is minus the sum of the `charge` rows of `tallyhub export ledger` for the same window, and the "
        "completed requests are their count; refunds and adjustments are rows of their own, not netted here."
    )


row = st.columns(4)
row[0].metric(
    "Requests",
    f"{current.requests:,}",
    change_text(current.requests, previous.requests),
    border=True,
    help=f"{current.requests - current.failed:,} completed + {current.failed:,} failed (never charged)",
)
row[1].metric(
    "Tokens",
    f"{current.tokens:,}",
    change_text(current.tokens, previous.tokens),
    border=True,
    help=f"{current.input_tokens:,} input (cached included) + {current.output_tokens:,} output (reasoning included)",
)
row[2].metric(
    "Spend (credits)",
    credits_text(current.charge),
    credits_change_text(current.charge, previous.charge),
    border=True,
    delta_color="off",
    help=spend_help(ctx.settings.billing_mode, current),
)
row[3].metric(
    "Error rate",
    pct(current.error_rate),
    change_text(
        None if current.error_rate is None else 100 * current.error_rate,
        None if previous.error_rate is None else 100 * previous.error_rate,
        unit=" pp",
        digits=2,
    ),
    delta_color="inverse",
    border=True,
    help=f"{current.failed:,} failed of {current.requests:,} requests",
)
row = st.columns(4)
for column, label, now_value, before in (
    (row[0], "p50 latency", latency.p50_latency, previous_latency.p50_latency),
    (row[1], "p95 latency", latency.p95_latency, previous_latency.p95_latency),
    (row[2], "p50 time to first byte", latency.p50_ttfb, previous_latency.p50_ttfb),
    (row[3], "p95 time to first byte", latency.p95_ttfb, previous_latency.p95_ttfb),
):
    column.metric(
        label, ms(now_value), change_text(now_value, before, unit=" ms", digits=1), delta_color="inverse", border=True
    )
provider_now = queries.provider_totals(ctx.key, window.since, window.until, _source=ctx.source)
provider_before = queries.provider_totals(ctx.key, window.previous.since, window.previous.until, _source=ctx.source)
margins = ProviderTotals.of(provider_now) if provider_now is not None else None
if margins is not None and provider_before is not None:
    earlier = ProviderTotals.of(provider_before)
    row = st.columns(4)
    row[0].metric(
        "Provider cost (credits)",
        credits_text(margins.provider_cost),
        credits_change_text(margins.provider_cost, earlier.provider_cost),
        border=True,
        delta_color="off",
        help="What the providers charge for the window's usage, at the price book's provider-cost rates.",
    )
    row[1].metric(
        "Margin (credits)",
        credits_text(margins.margin),
        credits_change_text(margins.margin, earlier.margin),
        border=True,
        help=f"Charged ({credits_text(margins.charged)}) minus provider cost, exact.",
    )
    row[2].metric(
        "Margin rate",
        pct(margins.margin_rate),
        change_text(
            None if margins.margin_rate is None else 100 * margins.margin_rate,
            None if earlier.margin_rate is None else 100 * earlier.margin_rate,
            unit=" pp",
            digits=2,
        ),
        border=True,
        help="Margin as a share of what was charged.",
    )
    row[3].metric(
        "Failovers",
        f"{margins.failovers:,}",
        change_text(margins.failovers, earlier.failovers),
        delta_color="inverse",
        border=True,
        help=f"Requests served after {margins.failed_attempts:,} failed upstream attempts in all.",
    )

st.caption(
    "Changes are against the previous period. "
    f"Percentiles over the {latency.completed:,} completed requests of the window"
    + (f" (newest {TIMINGS_LIMIT:,} only)" if truncated else "")
    + ". "
    + margin_note(margins)
    + " "
    + ledger_note(ctx.settings.billing_mode)
)

usage_now = usage_series(queries.usage_frame(ctx.key, window.since, window.until, _source=ctx.source), window)
usage_before = usage_series(
    queries.usage_frame(ctx.key, window.previous.since, window.previous.until, _source=ctx.source), window.previous
)
timing_now, timing_before = latency_series(timings, window), latency_series(previous_timings, window.previous)


def compare(
    place: Any,
    now: pd.DataFrame,
    before: pd.DataFrame,
    columns: list[str],
    title: str,
    unit: str,
    key: str,
    labels: dict[str, str] | None = None,
) -> None:
    """One chart of ``columns`` in this window against the previous one; with ``labels``, a line
    per column."""
    place.altair_chart(
        charts.period_lines(
            against_previous(now, before, window, columns, labels),
            title,
            unit,
            by_metric=labels is not None,
            hourly=window.hourly,
        ),
        width="stretch",
        key=key,
    )


compare(st, usage_now, usage_before, ["requests"], "Requests", "requests", "chart_requests")
left, right = st.columns(2)
compare(left, usage_now, usage_before, ["spend_credits"], "Spend", "credits", "chart_spend")
compare(right, usage_now, usage_before, ["tokens"], "Tokens", "tokens", "chart_tokens")
left, right = st.columns(2)
compare(left, usage_now, usage_before, ["error_rate_pct"], "Error rate", "% of requests", "chart_errors")
compare(
    right,
    timing_now,
    timing_before,
    ["p50_latency_ms", "p95_latency_ms"],
    "Latency of completed requests",
    "ms",
    "chart_latency",
    PERCENTILES,
)
compare(
    st, timing_now, timing_before, ["p50_ttfb_ms", "p95_ttfb_ms"], "Time to first byte", "ms", "chart_ttfb", PERCENTILES
)
if margins is not None:
    margin_now = margin_series(queries.provider_frame(ctx.key, window.since, window.until, _source=ctx.source), window)
    margin_before = margin_series(
        queries.provider_frame(ctx.key, window.previous.since, window.previous.until, _source=ctx.source),
        window.previous,
    )
    compare(
        st,
        margin_now,
        margin_before,
        ["provider_cost_credits", "margin_credits"],
        "Provider cost and margin",
        "credits",
        "chart_margin",
        MONEY_LINES,
    )


def key_spend_frame() -> pd.DataFrame:
    """The window's usage per API key, with the key's name and account, the most charged first."""
    spend = queries.key_spend_frame(ctx.key, window.since, window.until, _source=ctx.source)
    try:
        names = key_names(ctx.key, _settings=ctx.settings)
    except ledger_reads.StoreUnavailable:
        names = {}
    accounts = ui.account_names(ctx)

    def key_name(key_id: str) -> str:
        if not key_id:
            return "(no key)"
        return names.get(key_id, ("", ""))[0] or "(no name)"

    return pd.DataFrame(
        {
            "key": [key_name(k) for k in spend["api_key_id"]],
            "key id": spend["api_key_id"],
            "account": [accounts.get(a, a or "—") for a in spend["account_id"]],
            "requests": spend["requests"],
            "failed": spend["failed_requests"],
            "tokens": spend["tokens"],
            "spend (credits)": [credits_text(int(v)) for v in spend["charge"]],
        }
    )


st.subheader("Spend by API key")
st.dataframe(key_spend_frame(), hide_index=True, width="stretch")
st.caption(
    "Each key's requests, tokens and spend in the window, exact (the usage rollups summed per key: the rows add up "
    "to Spend above). Manage keys on the console's API keys page."
)
