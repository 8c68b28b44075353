"""Tallyhub's dashboard: ``streamlit run dashboard/app.py`` (``tallyhub dashboard``): the
analytics and the admin console, behind the admin key.

Invariant: no admin page is registered, and so none runs, before the admin key was accepted
in this browser session; until then the only pages are the two sign-in forms (the admin's
and the customer portal's). Every analytics page
reads the read models through ``dashboard.queries`` (the ledger reads it needs are listed
in ``dashboard.ledger_reads``); every console page acts through ``dashboard.console.actions``.

The customer portal (``/portal``, dashboard/portal/) is the one other way in: before any
sign-in its sign-in page is registered beside the admin's; a portal session (checked again
on every run by ``gate.check``) registers the portal's pages and nothing else, and never
sets the admin's flag.
"""

import streamlit as st

from dashboard import ui
from dashboard.portal import gate

st.set_page_config(page_title="Tallyhub", page_icon=":material/account_balance:", layout="wide")

ANALYTICS = [
    st.Page("analytics/overview.py", title="Overview", icon=":material/monitoring:", url_path="overview", default=True),
    st.Page("analytics/accounts.py", title="Accounts", icon=":material/account_balance_wallet:", url_path="accounts"),
    st.Page(
        "analytics/models_and_providers.py", title="Models and providers", icon=":material/hub:", url_path="models"
    ),
    st.Page("analytics/request_log.py", title="Requests", icon=":material/receipt_long:", url_path="requests"),
    st.Page("analytics/pricing.py", title="Pricing", icon=":material/sell:", url_path="pricing"),
    st.Page("analytics/exports.py", title="Exports", icon=":material/download:", url_path="exports"),
]
PORTAL = [  # a customer's own account (dashboard/portal/), the only pages of a portal session
    st.Page(
        "portal/home.py", title="Balance", icon=":material/account_balance_wallet:", url_path="portal", default=True
    ),
    st.Page("portal/usage.py", title="Usage", icon=":material/monitoring:", url_path="portal-usage"),
    st.Page("portal/requests.py", title="Requests", icon=":material/receipt_long:", url_path="portal-requests"),
    st.Page("portal/statement.py", title="Statement", icon=":material/description:", url_path="portal-statement"),
    st.Page("portal/keys.py", title="API keys", icon=":material/key:", url_path="portal-keys"),
]
CONSOLE = [  # the pages that act (dashboard/console/), each action an application command
    st.Page("console/pages/providers.py", title="Providers", icon=":material/dns:", url_path="providers"),
    st.Page("console/pages/prices.py", title="Prices", icon=":material/price_change:", url_path="prices"),
    st.Page("console/pages/aliases.py", title="Aliases", icon=":material/alt_route:", url_path="aliases"),
    st.Page("console/pages/accounts.py", title="Accounts", icon=":material/group:", url_path="credit"),
    st.Page("console/pages/keys.py", title="API keys", icon=":material/key:", url_path="keys"),
    st.Page("console/pages/audit.py", title="Audit log", icon=":material/history:", url_path="audit"),
]

if not ui.signed_in() and gate.check() is not None:  # a customer's portal session: its pages only
    st.navigation(PORTAL).run()
elif not ui.signed_in():
    st.navigation(
        [
            st.Page(ui.sign_in_page, title="Sign in", url_path="sign-in", default=True),
            st.Page("portal/sign_in.py", title="Customer portal", url_path="portal"),
        ],
        position="hidden",
    ).run()
else:
    st.navigation({"Analytics": ANALYTICS, "Console": CONSOLE}).run()
