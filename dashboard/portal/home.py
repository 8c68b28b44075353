"""The portal's first page: the account's balance, what is available and held, how many
days of credit are left at the recent burn rate, and the top-up link (``TALLYHUB_TOPUP_URL``)."""

import streamlit as st

from application.portal import topup_link
from dashboard import queries
from dashboard.metrics import credits_text
from dashboard.portal import gate, reads

session, ctx = gate.page_context()
name = gate.account_name(session)
st.title(f"Balance of {name}")
account_id = str(session.account_id)
row = reads.balance_of(ctx.key, account_id, _source=ctx.source)
balance, available, held = (row["balance"], row["available"], row["held"]) if row else (0, 0, 0)
since, until = reads.last_days(gate.now(), reads.BURN_DAYS)
usage = queries.usage_frame(ctx.key, since, until, account_id, _source=ctx.source)
charged = int(usage["charge"].sum()) if not usage.empty else 0
days = reads.days_left(available, charged)

cols = st.columns(4)
cols[0].metric("Balance (credits)", credits_text(balance), border=True)
cols[1].metric("Available (credits)", credits_text(available), border=True)
cols[2].metric("Held by requests in flight (credits)", credits_text(held), border=True)
cols[3].metric("Days of credit left", "—" if days is None else f"{days}", border=True)
st.caption(
    f"Days left = available ÷ the average daily charge of the last {reads.BURN_DAYS} days "
    f"({credits_text(charged)} credits charged in those {reads.BURN_DAYS} days); "
    "“—” when nothing was charged. Available = balance − held."
)
template = ctx.settings.topup_url
if template:
    st.link_button("Top up credits", topup_link(template, session.account_id), type="primary")
if row is None:
    st.info("No credit movement of this account is recorded yet.")
