"""Exports: the recorded, auditable exports in ``$TALLYHUB_DATA_DIR/exports/`` (each file
with its manifest), and for a window a snapshot of the ledger, usage or request log built
from the read models with ``tallyhub export``'s own columns and row encoding — plainly
marked as not recorded in the export chain. Built in ``dashboard.export_files``."""

import json
from datetime import datetime

import pandas as pd
import streamlit as st

from dashboard import charts, export_files, queries, timezones, ui


def created_text(value: object) -> str:
    """A manifest's ``created_at`` (ISO 8601 UTC) in the display zone; as written if unreadable."""
    try:
        return timezones.text(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value or "—")


ctx = ui.page_context()
st.title("Exports")
st.caption(
    "Recorded exports are the auditable files: each was recorded in the ledger's export log when it was "
    "written, its rows carry a hash chain linked to the previous export of its kind, and `tallyhub verify` "
    "checks it. The dashboard only reads them; it never writes an export."
)

st.subheader("Recorded exports")
folder = export_files.exports_folder(ctx.settings)
recorded, unreadable = export_files.recorded_exports(folder)
for problem in unreadable:
    st.warning(f"Skipped {problem}.")
if not recorded:
    st.info(
        f"**No recorded exports in `{folder}` yet.** Write one with the admin API "
        "(`POST /admin/v1/exports?kind=ledger&from=…&to=…`, which writes into this folder) or with "
        f"`tallyhub export ledger --from … --to … --out {folder}/ledger.csv`."
    )
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "file": export.path.name,
                    "kind": export.manifest.get("kind"),
                    "format": export.manifest.get("format"),
                    "from": export.manifest.get("from"),
                    "to": export.manifest.get("to"),
                    "rows": export.manifest.get("rows"),
                    timezones.heading("created at"): created_text(export.manifest.get("created_at")),
                    "recorded": "yes" if export.recorded else "no (snapshot)",
                    "export_id": export.export_id,
                    "chain head": (export.manifest.get("chain") or {}).get("head"),
                }
                for export in recorded
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    chosen = st.selectbox(
        "Export",
        range(len(recorded)),
        key="exports_recorded",
        format_func=lambda i: f"{recorded[i].path.name} · {recorded[i].manifest.get('rows')} rows",
    )
    export = recorded[chosen]
    st.session_state["exports_recorded_path"] = str(export.path)
    try:
        digest = export_files.file_sha256(str(export.path), export.size, export.modified_ns)
    except OSError as error:
        st.error(f"Cannot read {export.path}: {error.strerror}. Refresh the page.")
        st.stop()
    if digest == export.manifest.get("sha256"):
        st.success(
            f"The file's SHA-256 matches its manifest ({digest[:16]}…). "
            "`tallyhub verify` also checks its rows against the ledger and the export log."
        )
    else:
        st.error(
            "The file's SHA-256 is **not** its manifest's: the file was changed after it was written. "
            "Run `tallyhub verify` to find the rows."
        )
    cols = st.columns(2)
    if export.size <= export_files.MAX_DOWNLOAD_BYTES:
        cols[0].download_button(
            f"Download {export.path.name}",
            export.path.read_bytes,
            file_name=export.path.name,
            mime=export_files.media_type(export.manifest.get("format")),
            key="exports_recorded_file",
            type="primary",
            on_click="ignore",
        )
    else:
        cols[0].info(
            f"{export.size / 2**20:,.0f} MB — too large for the browser: fetch it with "
            f"`GET /admin/v1/exports/{export.export_id}` or copy `{export.path}`."
        )
    cols[1].download_button(
        "Download its manifest",
        export.manifest_path.read_bytes(),
        file_name=export.manifest_path.name,
        mime="application/json",
        key="exports_recorded_manifest",
        on_click="ignore",
    )

st.subheader("Snapshot of a window, from the read models")
window = ui.window_picker("exports", default="Last 30 days")
left, right = st.columns(2)
kind = left.radio(
    "Data", list(export_files.KINDS), horizontal=True, key="exports_kind", format_func=export_files.KINDS.get
)
fmt = right.radio("Format", ["csv", "jsonl"], horizontal=True, key="exports_format", format_func=str.upper)
command = export_files.record_command(kind, window, fmt)
st.warning(export_files.NOT_RECORDED + f" For a recorded, chained export of this window run:\n\n`{command}`")

try:
    snapshot = queries.export_snapshot(ctx.key, kind, window.since, window.until, fmt, _source=ctx.source)
except queries.ReadModelsMissing:
    st.info(f"The {kind} read model does not exist here yet: run `tallyhub init` to create it.")
    st.stop()
if snapshot is None:
    st.warning(
        f"More than {export_files.MAX_ROWS:,} rows in this window — more than the dashboard builds in memory. "
        "Narrow the window, or use the command above."
    )
    st.stop()
if not snapshot.manifest["rows"]:
    ui.empty_window(ctx, window, what="rows to export")
    st.stop()

per_day = pd.DataFrame(
    {
        "day": [pd.Timestamp(day, tz="UTC") for day in snapshot.rows_per_day],
        "rows": list(snapshot.rows_per_day.values()),
    }
)
per_day["day_end"] = per_day["day"] + pd.Timedelta(days=1)
st.altair_chart(charts.rows_per_day(per_day, "Rows per day in this snapshot"), width="stretch", key="chart_export_rows")

st.session_state["exports_manifest"] = snapshot.manifest
cols = st.columns(2)
cols[0].download_button(
    f"Download {snapshot.file_name}",
    snapshot.data,
    file_name=snapshot.file_name,
    mime=export_files.media_type(fmt),
    key="exports_file",
    type="primary",
    on_click="ignore",
)
cols[1].download_button(
    "Download the manifest",
    json.dumps(snapshot.manifest, indent=2).encode(),
    file_name=snapshot.file_name + ".manifest.json",
    mime="application/json",
    key="exports_manifest_file",
    on_click="ignore",
)
st.markdown("**Manifest** (not recorded: `export_id` is null, `recorded` is false)")
st.json(snapshot.manifest, expanded=1)
