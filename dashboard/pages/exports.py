"""Exports: CSV or JSONL downloads of the hourly usage and request-log read models for a
window, each with a manifest (row count, totals, SHA-256). Built in ``dashboard.export_files``."""

import json

import pandas as pd
import streamlit as st

from dashboard import charts, export_files, queries, ui

ctx = ui.page_context()
st.title("Exports")
st.caption(export_files.NOTE)
window = ui.window_picker("exports", default="Last 30 days")
left, right = st.columns(2)
dataset = left.radio("Data", ["usage", "requests"], horizontal=True, key="exports_dataset",
                     format_func={"usage": "Usage, hourly rollups", "requests": "Request log"}.get)
fmt = right.radio("Format", ["csv", "jsonl"], horizontal=True, key="exports_format", format_func=str.upper)

if dataset == "usage":
    frame = queries.usage_frame(ctx.key, window.since, window.until, _source=ctx.source)
    day_of = frame["hour"] if not frame.empty else pd.Series([], dtype=object)
else:
    count = queries.request_count(ctx.key, window.since, window.until, _source=ctx.source)
    if count > export_files.MAX_ROWS:
        st.warning(f"{count:,} requests in this window — more than the {export_files.MAX_ROWS:,} rows the dashboard "
                   "exports. Narrow the window, or use the command-line export.")
        st.stop()
    frame = queries.requests_frame(ctx.key, window.since, window.until, limit=export_files.MAX_ROWS,
                                   _source=ctx.source).iloc[::-1]
    day_of = frame["at"] if not frame.empty else pd.Series([], dtype=object)
if frame.empty:
    ui.empty_window(ctx, window, what="rows to export")
    st.stop()

per_day = (pd.DataFrame({"day": [d.replace(hour=0, minute=0, second=0, microsecond=0) for d in day_of],
                         "rows": 1}).groupby("day").sum().reset_index())
per_day["day_end"] = per_day["day"] + pd.Timedelta(days=1)
st.altair_chart(charts.rows_per_day(per_day, "Rows per day in this export"), width="stretch", key="chart_export_rows")

positions = queries.positions(ctx.key, _source=ctx.source)
data, manifest = export_files.build(dataset, frame, window, fmt, positions)
st.session_state["exports_manifest"] = manifest
cols = st.columns(2)
cols[0].download_button(f"Download {manifest['file_name']}", data, file_name=manifest["file_name"],
                        mime="text/csv" if fmt == "csv" else "application/jsonl", key="exports_file",
                        type="primary", on_click="ignore")
cols[1].download_button("Download the manifest", json.dumps(manifest, indent=2).encode(),
                        file_name=manifest["file_name"] + ".manifest.json", mime="application/json",
                        key="exports_manifest_file", on_click="ignore")
st.markdown("**Manifest**")
st.json(manifest, expanded=True)
