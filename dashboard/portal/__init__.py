"""The customer portal (``/portal``): one account's own balance, usage, requests,
statement and (when the operator allows it) keys, for a customer signed in with one of
the account's API keys or a one-use sign-in link. dashboard/portal/gate.py keeps the
session; every page reads only the signed-in account's rows."""
