"""Pricing: price-book versions, two side by side, and a read-only what-if that re-prices
the usage rollups of a window under an edited copy of the latest version.

Versions come from the price book's own events (``ledger_reads.price_book_versions``);
the what-if is arithmetic in ``dashboard.whatif`` and posts nothing.
"""

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, ledger_reads, queries, timezones, ui, whatif
from dashboard.metrics import credits_axis, credits_text
from domain.money import format_credits

ctx = ui.page_context()
st.title("Pricing")
versions = ledger_reads.price_book_versions(ctx.key, _settings=ctx.settings)
if not versions:
    st.info(
        "**No price-book version yet.** Publish one with `tallyhub prices set PROVIDER/MODEL --input X "
        "--output Y` (credits per 1M tokens); every charge names the version it was priced under."
    )
    st.stop()

RATES = ("input", "cached_input", "output")
points = pd.DataFrame(
    [
        {"version": v.version, "model": model, "kind": kind, "rate": credits_axis(int(price[kind]))}
        for v in versions
        for model, price in v.prices.items()
        for kind in RATES
        if price.get(kind) is not None
    ],
    columns=["version", "model", "kind", "rate"],
)
st.altair_chart(charts.rates_by_version(points), width="stretch", key="chart_rates")
st.dataframe(
    pd.DataFrame(
        [
            {
                "version": v.version,
                timezones.heading("effective at"): timezones.shown(v.effective_at),
                "models": len(v.prices),
            }
            for v in reversed(versions)
        ]
    ),
    hide_index=True,
    width="stretch",
    key="versions_table",
)

st.subheader("Two versions side by side")
numbers = [v.version for v in versions]
by_number = {v.version: v for v in versions}
left, right = st.columns(2)
a = left.selectbox("Version", numbers, index=max(len(numbers) - 2, 0), key="pricing_a")
b = right.selectbox("against version", numbers, index=len(numbers) - 1, key="pricing_b")


def rate_text(price: dict[str, Any] | None, kind: str) -> str:
    if price is None:
        return "not priced"
    value = price.get(kind)
    return "—" if value is None else format_credits(int(value))


rows = []
for model in sorted(set(by_number[a].prices) | set(by_number[b].prices)):
    pa, pb = by_number[a].prices.get(model), by_number[b].prices.get(model)
    row = {"model": model}
    for kind in (*RATES, "per_image", "per_request"):
        row[f"{kind} v{a}"], row[f"{kind} v{b}"] = rate_text(pa, kind), rate_text(pb, kind)
    row["changed"] = "yes" if pa != pb else ""
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="versions_side_by_side")
st.caption("Credits per 1M tokens (per image / per request for those columns), exact.")

st.subheader("What-if: re-price a window under edited prices")
st.warning(
    "Read-only and approximate to the nanocredit: the hourly usage rollups are re-priced with the one "
    "rounding rule applied per rollup bucket, and nothing is posted. The exact per-request replay that can "
    "post adjustments is `tallyhub replay` (replay issue).",
    icon=":material/science:",
)
window = ui.window_picker("pricing", default="Last 30 days")
latest = versions[-1]
scale = st.text_input(
    "Multiply every rate by",
    value="1",
    key="pricing_scale",
    help="Exact decimal, e.g. 1.1 for +10%. Scaled rates are rounded half up to a whole nanocredit per 1M tokens.",
)
edited = st.data_editor(
    whatif.editable_rows(latest.prices), hide_index=True, width="stretch", disabled=["model"], key="pricing_editor"
)
st.caption(f"An editable copy of version {latest.version}, in credits per 1M tokens; edits stay in this page.")
try:
    prices = whatif.parse_edited(edited, latest.prices, scale)
except whatif.PriceEditError as error:
    st.error(f"Cannot re-price: {error}")
    st.stop()

usage = queries.usage_frame(ctx.key, window.since, window.until, _source=ctx.source)
if usage.empty:
    ui.empty_window(ctx, window)
    st.stop()
repriced = whatif.reprice(usage, prices)
by_model = whatif.summarise(repriced, ["model"])
recorded, new = int(by_model["cost"].sum()), int(by_model["new_cost"].sum())
cols = st.columns(3)
cols[0].metric("Recorded, priced at list (credits)", credits_text(recorded), border=True)
cols[1].metric("What-if (credits)", credits_text(new), border=True)
cols[2].metric(
    "Difference (credits)",
    ("+" if new >= recorded else "-") + credits_text(abs(new - recorded)),
    border=True,
    delta_color="off",
)
st.session_state["pricing_whatif"] = {"recorded": recorded, "whatif": new}
missing = whatif.unpriced_models(repriced, prices)
if missing:
    st.warning("Not priced in the edited book, left out of both totals: " + ", ".join(missing))
tiered = whatif.tiered_models(repriced, prices)
if tiered:
    st.info(
        "Priced per request by context or service tier, left out of both totals "
        "(`tallyhub replay` prices them exactly): " + ", ".join(tiered)
    )
chart = by_model.assign(difference_credits=[credits_axis(d) for d in by_model["difference"]])
st.altair_chart(
    charts.horizontal_bars(chart, "model", "difference_credits", "What-if difference by model", "credits"),
    width="stretch",
    key="chart_whatif",
)
names = ui.account_names(ctx)
by_account = whatif.summarise(repriced, ["account_id", "model"])
by_account.insert(0, "account", [names.get(a, ui.short_id(a)) for a in by_account["account_id"]])
st.dataframe(
    ui.with_credits(by_account.drop(columns=["account_id"]), ["cost", "new_cost", "difference"]),
    hide_index=True,
    width="stretch",
    key="whatif_by_account",
)
