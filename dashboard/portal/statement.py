"""The account's statement: every movement of its balance in a window with the running
balance, as ``tallyhub statement`` gives it, and the same rows as a CSV download."""

import pandas as pd
import streamlit as st

from dashboard import timezones, ui
from dashboard.metrics import credits_text
from dashboard.portal import gate, reads

session, ctx = gate.page_context()
name = gate.account_name(session)
st.title(f"Statement of {name}")
window = ui.window_picker("portal_statement", default="Last 30 days")
document = reads.statement_document(
    ctx.key, str(session.account_id), name, window.since, window.until, _source=ctx.source
)
if document is None:
    st.info("Statements need the ledger-entries read model, which this deployment does not have yet.")
    st.stop()

cols = st.columns(3)
cols[0].metric("Opening balance (credits)", credits_text(document["opening_balance"]), border=True)
cols[1].metric("Movements", f"{len(document['entries']):,}", border=True)
cols[2].metric("Closing balance (credits)", credits_text(document["closing_balance"]), border=True)
csv_text = reads.statement_csv(document)
st.session_state["portal_statement_csv"] = csv_text
st.download_button(
    "Download CSV",
    csv_text,
    file_name=f"statement-{name}-{window.since:%Y%m%d}-{window.until:%Y%m%d}.csv",
    mime="text/csv",
    key="portal_statement_download",
)
if not document["entries"]:
    st.caption("No movement in this window.")
    st.stop()
entries = pd.DataFrame.from_records(document["entries"])
entries["at"] = pd.to_datetime(entries["at"], utc=True)
shown = timezones.frame_columns(ui.with_credits(entries, ["amount", "balance"]), ["at"])
st.dataframe(
    shown[["at", "kind", "amount", "balance", "reason", "request_id"]].iloc[::-1],
    hide_index=True,
    width="stretch",
    key="portal_statement_table",
)
st.caption(
    "Amounts in credits, exact; a charge is negative, and each row's balance is the balance after it. "
    "The CSV has every row with times in UTC and amounts in nanocredits and in credits."
)
