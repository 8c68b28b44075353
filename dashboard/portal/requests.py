"""The account's request log, a request's receipt, and search by request id.

Every row is this account's: the list is filtered by its id in SQL, and a request found
by id is shown only when its row names this account — another account's request id is
"not found", exactly like one that does not exist (as ``GET /v1/me/requests/{id}``). The
operator's upstream cost and provider are not shown (``adapters/http/me.py``'s fields)."""

from typing import Any
from uuid import UUID

import pandas as pd
import streamlit as st

from dashboard import queries, timezones, ui
from dashboard.metrics import credits_text
from dashboard.portal import gate, reads

SHOWN = [
    "at",
    "status",
    "key",
    "model",
    "endpoint",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "charge",
    "price_book_version",
    "latency_ms",
    "error_code",
    "request_id",
]

session, ctx = gate.page_context()
account_id = str(session.account_id)
names = reads.key_names(ctx.key, str(session.account_id), _portal=gate.portal())


def receipt(row: dict[str, Any]) -> None:
    at_text = timezones.text(row["at"])
    fields = {
        "request id": str(row["request_id"]),
        f"at ({timezones.label()})": at_text,
        "API key": names.get(str(row["api_key_id"]), str(row["api_key_id"] or "—")),
        "endpoint": row["endpoint"],
        "model": row["model"],
        "stream": str(row["stream"]),
        "status": str(row["status"]),
        "error": row["error_code"] or "—",
        "input tokens": str(row["input_tokens"]),
        "  of which cached": str(row["cached_input_tokens"]),
        "output tokens": str(row["output_tokens"]),
        "  of which reasoning": str(row["reasoning_tokens"]),
        "images": str(row["images"]),
        "usage reported by": row["usage_source"] or "—",
        "price-book version": "—" if row["price_book_version"] is None else str(row["price_book_version"]),
        "charged (credits)": credits_text(int(row["charge"])),
        "charged (nanocredits)": str(int(row["charge"])),
    }
    st.dataframe(
        pd.DataFrame({"field": list(fields), "value": list(fields.values())}),
        hide_index=True,
        width="stretch",
        key="portal_receipt",
    )
    st.session_state["portal_receipt_shown"] = fields


def own_row(request_id: str) -> dict[str, Any] | None:
    """The request's row if it is this account's, else None (never says which)."""
    try:
        parsed = UUID(request_id.strip())
    except ValueError:
        return None
    row = queries.request_row(ctx.key, str(parsed), _source=ctx.source)
    if row is None or str(row["account_id"]) != account_id:
        return None
    return row


st.title("Requests")
searched = st.text_input("Find a request by its id (the x-request-id header)", key="portal_request_search")
if searched.strip():
    found = own_row(searched)
    st.session_state["portal_search_found"] = found is not None
    if found is None:
        st.warning(f"Request {searched.strip()} not found in this account's request log.")
    else:
        st.subheader("Receipt")
        receipt(found)
    st.stop()

window = ui.window_picker("portal_requests", default="Last 24 hours")
frame = queries.requests_frame(
    ctx.key, window.since, window.until, account_id=account_id, limit=500, _source=ctx.source
)
frame = frame[frame["account_id"] == account_id]  # the query filtered by it already; checked again
st.session_state["portal_requests_rows"] = len(frame)
if frame.empty:
    st.info(f"No requests between {window.label()}. Widen the time range.")
    st.stop()
shown = timezones.frame_columns(
    ui.with_credits(frame.assign(key=[names.get(k, ui.short_id(k)) for k in frame["api_key_id"]]), ["charge"]),
    ["at"],
)
st.dataframe(shown[SHOWN], hide_index=True, width="stretch", key="portal_requests_table")
st.caption(f"Newest {len(frame):,} requests of {window.label()}; charges in credits, exact.")

st.subheader("Receipt")
picked = st.selectbox(
    "Request",
    list(frame["request_id"]),
    key="portal_receipt_pick",
    format_func=lambda rid: f"{rid[:8]} · {frame.set_index('request_id').loc[rid, 'model']}",
)
row = own_row(picked)
if row is None:
    st.warning("That request is no longer in the request log.")
else:
    receipt(row)
