"""Tallyhub's dashboard: ``streamlit run dashboard/app.py`` (``tallyhub dashboard``): the
analytics and the admin console, behind the admin key.

Invariant: no page is registered, and so none runs, before the admin key was accepted in
this browser session; until then the only page is the sign-in form. Every analytics page
reads the read models through ``dashboard.queries`` (the ledger reads it needs are listed
in ``dashboard.ledger_reads``); every console page acts through ``dashboard.console.actions``.
"""

import streamlit as st

from dashboard import ui

st.set_page_config(page_title="Tallyhub", page_icon=":material/account_balance:", layout="wide")

ANALYTICS = [
    st.Page("pages/overview.py", title="Overview", icon=":material/monitoring:", url_path="overview", default=True),
    st.Page("pages/accounts.py", title="Accounts", icon=":material/account_balance_wallet:", url_path="accounts"),
    st.Page("pages/models_and_providers.py", title="Models and providers", icon=":material/hub:", url_path="models"),
    st.Page("pages/request_log.py", title="Requests", icon=":material/receipt_long:", url_path="requests"),
    st.Page("pages/pricing.py", title="Pricing", icon=":material/sell:", url_path="pricing"),
    st.Page("pages/exports.py", title="Exports", icon=":material/download:", url_path="exports"),
]
CONSOLE: list[st.Page] = []  # the pages that act (dashboard/console/)

if not ui.signed_in():
    st.navigation(
        [st.Page(ui.sign_in_page, title="Sign in", url_path="sign-in", default=True)], position="hidden"
    ).run()
else:
    st.navigation({"Analytics": ANALYTICS, "Console": CONSOLE} if CONSOLE else ANALYTICS).run()
