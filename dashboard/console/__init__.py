"""The admin console: pages that change the gateway (providers, prices, aliases, accounts,
keys) and the audit page, beside the read-only analytics.

Invariant: a console page changes nothing by writing a table. Every action calls the
application services the CLI and the admin API call (``dashboard.console.actions``), as the
signed-in admin (``application.acting``), so it is an event naming that admin's key."""
