"""The account's API keys, and — when the operator allows it (``tallyhub accounts
self-service ACCOUNT --keys on``) — creating one (shown once) and revoking one (after an
explicit confirmation). Both act through application/portal.py, which checks the
permission again at the moment of the action and records the session as the actor."""

import pandas as pd
import streamlit as st

from dashboard import timezones
from dashboard.portal import gate, reads
from domain.errors import TallyhubError

session, ctx = gate.page_context()
portal = gate.portal()
st.title("API keys")
keys = portal.list_keys(session.account_id)
if keys:
    st.dataframe(
        pd.DataFrame(
            {
                "name": [k.name or "(unnamed)" for k in keys],
                "key": [k.prefix for k in keys],
                "state": ["revoked" if k.revoked else "active" if k.usable else "expired or retired" for k in keys],
                f"expires ({timezones.label()})": [timezones.text(k.expires_at) for k in keys],
                "key id": [str(k.key_id) for k in keys],
            }
        ),
        hide_index=True,
        width="stretch",
        key="portal_keys_table",
    )
else:
    st.info("This account has no API keys.")

if not portal.self_service_keys(session):
    st.caption("Your operator manages this account's keys; ask them for a new key or to revoke one.")
    st.stop()

st.subheader("Create a key")
with st.form("portal_new_key", clear_on_submit=True):
    new_name = st.text_input("Name (optional)", key="portal_new_key_name", max_chars=200)
    create = st.form_submit_button("Create key", key="portal_new_key_submit", type="primary")
if create:
    try:
        issued = portal.issue_key(session, new_name)
    except TallyhubError as error:
        st.error(str(error))
    else:
        reads.key_names.clear()  # the usage and requests pages name it at once
        st.success("Key created. Copy it now: it is shown this once and cannot be shown again.")
        st.code(issued.plaintext, language=None)

usable = [k for k in keys if k.usable]
if usable:
    st.subheader("Revoke a key")
    labels = {str(k.key_id): f"{k.name or '(unnamed)'} · {k.prefix}" for k in usable}
    picked = st.selectbox("Key", list(labels), format_func=labels.__getitem__, key="portal_revoke_pick")
    sure = st.checkbox("I understand that requests with this key will be refused from now on", key="portal_revoke_sure")
    if st.button("Revoke key", key="portal_revoke_submit", disabled=not sure):
        if not sure:
            st.error("Tick the confirmation first.")
        else:
            try:
                portal.revoke_key(session, picked)
            except TallyhubError as error:
                st.error(str(error))
            else:
                st.success(f"Revoked {labels[picked]}.")
                st.rerun()
