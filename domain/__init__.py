"""Tallyhub's domain: money, usage, pricing, the aggregates of the ledger and the error tree.

Imports only the standard library and ``eventsourcing.domain``.
"""
