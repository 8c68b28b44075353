"""Requests: the request log with filters (an end user and a tag among them, matched
exactly), and one request's receipt; or, searched by its id (the full id, or a prefix only
it has), that one request and its receipt. Times are shown in the display zone, named.

The list and the receipt's figures come from the request-log read model; the rates come
from the price-book version the request names; the failed upstream attempts come from the
request's own record — the one ledger read this page makes (``ledger_reads.request_receipt``).
"""

import pandas as pd
import streamlit as st

from dashboard import charts, ledger_reads, queries, timezones, ui
from dashboard.metrics import credits_text
from dashboard.ui import PageContext
from domain.money import format_credits

ANY = "any"


def searched(ctx: PageContext, text: str) -> str | None:
    """The one request whose id is ``text`` or starts with it; says why when there is none."""
    found = queries.request_ids_starting(ctx.key, text, _source=ctx.source)
    if not found:
        st.error(f"Request not found: no request id in the request log is or starts with `{text}`.")
        return None
    if len(found) > 1:
        st.warning(f"More than one request id starts with `{text}`: type more of it.")
        return None
    return found[0]


def show_receipt(ctx: PageContext, names: dict[str, str], picked: str) -> None:
    row = queries.request_row(ctx.key, picked, _source=ctx.source)
    if row is None:
        st.warning("That request is no longer in the request log.")
        return
    left, right = st.columns(2)
    left.markdown("**What was served**")
    left.dataframe(
        pd.DataFrame(
            {
                "field": [
                    "request id",
                    timezones.heading("at"),
                    "account",
                    "API key",
                    "endpoint",
                    "model",
                    "provider",
                    "upstream model",
                    "stream",
                    "status",
                    "error",
                    "latency (ms)",
                    "time to first byte (ms)",
                    "end user",
                    "tags",
                    "metadata",
                ],
                "value": [
                    str(v)
                    for v in (
                        row["request_id"],
                        timezones.text(row["at"], "%Y-%m-%d %H:%M:%S.%f"),
                        names.get(str(row["account_id"]) if row["account_id"] else "", "—"),
                        row["api_key_id"],
                        row["endpoint"],
                        row["model"],
                        row["provider"],
                        row["upstream_model"],
                        row["stream"],
                        row["status"],
                        row["error_code"] or "—",
                        row["latency_ms"],
                        row["ttfb_ms"] if row["ttfb_ms"] is not None else "—",
                        row["end_user"] or "—",
                        ", ".join(row["tags"]) or "—",
                        ", ".join(f"{k}={v}" for k, v in row["metadata"]) or "—",
                    )
                ],
            }
        ),
        hide_index=True,
        width="stretch",
        height="content",
        key="receipt_served",
    )

    versions = {v.version: v for v in ledger_reads.price_book_versions(ctx.key, _settings=ctx.settings)}
    version = versions.get(row["price_book_version"])
    rates = (version.prices.get(row["model"]) if version else None) or {}

    def rate(name: str, fallback: str | None = None) -> str:
        value = rates.get(name)
        if value is None and fallback:
            value = rates.get(fallback)
        return "—" if value is None else f"{format_credits(int(value))} per 1M"

    right.markdown("**What it cost**")
    right.dataframe(
        pd.DataFrame(
            {
                "item": [
                    "input tokens",
                    "  of which cached",
                    "output tokens",
                    "  of which reasoning",
                    "usage reported by",
                    "price-book version",
                    "input rate",
                    "cached input rate",
                    "output rate",
                    "charged (credits)",
                    "priced at list (credits)",
                ],
                "value": [
                    f"{row['input_tokens']:,}",
                    f"{row['cached_input_tokens']:,}",
                    f"{row['output_tokens']:,}",
                    f"{row['reasoning_tokens']:,}",
                    row["usage_source"] or "—",
                    str(row["price_book_version"]),
                    rate("input"),
                    rate("cached_input", "input"),
                    rate("output"),
                    credits_text(row["charge"]),
                    credits_text(row["cost"]),
                ],
            }
        ),
        hide_index=True,
        width="stretch",
        height="content",
        key="receipt_cost",
    )

    receipt = ledger_reads.request_receipt(ctx.key, picked, _settings=ctx.settings)
    attempts = receipt["attempts"] if receipt else []
    st.markdown(f"**Upstream attempts that failed before this outcome** ({len(attempts)})")
    if attempts:
        st.dataframe(pd.DataFrame(attempts), hide_index=True, width="stretch", key="receipt_attempts")
    else:
        st.caption("None: the first attempt served the request (or it failed without a retry).")


ctx = ui.page_context()
st.title("Requests")
names = ui.account_names(ctx)
search = st.text_input(
    "Find a request by id",
    key="requests_search",
    placeholder="the x-request-id, or its first characters",
    help="A full request id, or a prefix only one request has. Clear it to see the log.",
).strip()
if search:
    found = searched(ctx, search)
    st.session_state["requests_found"] = found
    if found is not None:
        st.subheader(f"Receipt of request {found}")
        show_receipt(ctx, names, found)
    st.stop()

window = ui.window_picker("requests", default="Last 24 hours")
dims = queries.dimensions(ctx.key, _source=ctx.source)

cols = st.columns(4)
account = cols[0].selectbox(
    "Account",
    [ANY, *dims["account_id"]],
    key="requests_account",
    format_func=lambda a: a if a == ANY else names.get(a, ui.short_id(a)),
)
api_key = cols[1].selectbox(
    "API key",
    [ANY, *dims["api_key_id"]],
    key="requests_key",
    format_func=lambda k: k if k == ANY else f"key {ui.short_id(k)}",
)
model = cols[2].selectbox("Model", [ANY, *dims["model"]], key="requests_model")
provider = cols[3].selectbox("Provider", [ANY, *dims["provider"]], key="requests_provider")
cols = st.columns(4)
status = cols[0].selectbox("Status", [ANY, *dims["status"]], key="requests_status")
min_latency = cols[1].number_input(
    "Latency at least (ms)", min_value=0.0, value=0.0, step=100.0, key="requests_min_latency"
)
limit = cols[2].selectbox("Show", [100, 500, 2000], key="requests_limit", format_func=lambda n: f"newest {n}")
by = st.columns(4)
user = by[0].text_input("End user (exact)", key="requests_user", help="the `user` the caller sent")
tag = by[1].text_input("Tag (exact)", key="requests_tag", help="one of the tags sent in `x-tallyhub-tags`").strip()

frame = queries.requests_frame(
    ctx.key,
    window.since,
    window.until,
    account_id=None if account == ANY else account,
    api_key_id=None if api_key == ANY else api_key,
    model=None if model == ANY else model,
    provider=None if provider == ANY else provider,
    status=None if status == ANY else int(status),
    min_latency_ms=float(min_latency) or None,
    user=user or None,
    tag=tag or None,
    limit=int(limit),
    _source=ctx.source,
)
st.session_state["requests_rows"] = len(frame)
if frame.empty:
    ui.empty_window(ctx, window, what="requests matching these filters")
    st.stop()

frame = frame.assign(
    account=[names.get(a, ui.short_id(a)) for a in frame["account_id"]],
    key=[ui.short_id(k) for k in frame["api_key_id"]],
)
cols[3].metric("Matching requests shown", f"{len(frame):,}")
st.altair_chart(
    charts.latency_scatter(frame.assign(status=frame["status"].astype(str))),
    width="stretch",
    key="chart_request_latency",
)
AT = timezones.heading("at")
table = timezones.frame_columns(ui.with_credits(frame, ["charge", "cost"]), ["at"]).rename(columns={"at": AT})
st.dataframe(
    table[
        [
            AT,
            "status",
            "account",
            "key",
            "model",
            "provider",
            "latency_ms",
            "ttfb_ms",
            "input_tokens",
            "output_tokens",
            "charge",
            "price_book_version",
            "error_code",
            "end_user",
            "tags",
            "request_id",
        ]
    ],
    hide_index=True,
    width="stretch",
    key="requests_table",
)

st.subheader("Receipt")
by_id = frame.set_index("request_id")
picked = st.selectbox(  # labels without times: they would change with the zone and lose the choice
    "Request",
    list(frame["request_id"]),
    key="requests_receipt",
    format_func=lambda rid: (
        f"{rid[:8]} · {by_id.loc[rid, 'model']} · {by_id.loc[rid, 'status']} · {by_id.loc[rid, 'latency_ms']:,.0f} ms"
    ),
)
show_receipt(ctx, names, picked)
