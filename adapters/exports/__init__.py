"""Auditable exports: ledger, usage and request-log files with manifests and hash chains."""
