"""The portal's sign-in (``/portal``): with one of the account's API keys, or with the
one-use link ``tallyhub portal link ACCOUNT`` printed (``/portal?token=…``). The key is
typed into a password field of a form cleared on submit, so it never stays in the
session's state; the token is taken out of the address once read."""

import streamlit as st

from dashboard.portal import gate
from domain.errors import AuthenticationFailed, NotInitialised
from domain.portal import LinkRefused

st.title("Customer portal")
ended = st.session_state.pop(gate.ENDED, None)
if ended:
    st.warning(f"Your portal session ended: {ended}")

token = st.query_params.get("token")
if token:
    del st.query_params["token"]  # used or refused: either way it is not kept in the address
    try:
        gate.start(gate.portal().redeem_link(token))
    except LinkRefused:
        st.error(
            "This sign-in link is invalid, expired or was already used. Ask your operator for a new one, "
            "or sign in with one of your API keys below."
        )
    except NotInitialised as error:
        st.error(str(error))
    else:
        st.rerun()

st.write("Sign in with one of your account's API keys (it starts with `thk_`), or open the sign-in link you were sent.")
with st.form("portal_sign_in", clear_on_submit=True):
    presented = st.text_input("API key", type="password", key="portal_api_key")
    submitted = st.form_submit_button("Sign in", key="portal_sign_in_submit", type="primary")
if submitted:
    try:
        opened = gate.portal().sign_in_with_key(presented or "")
    except AuthenticationFailed:
        st.error("That API key is not valid: it may be mistyped, revoked or expired.")
    except NotInitialised as error:
        st.error(str(error))
    else:
        gate.start(opened)
        st.rerun()
