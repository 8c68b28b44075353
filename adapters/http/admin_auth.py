"""The admin key check, shared by the edge layer (adapters/http/edge.py: before any admin
body is read) and the admin routes' dependency (adapters/http/admin.py).

A presented key is the admin key when it equals ``TALLYHUB_ADMIN_KEY`` (compared in
constant time) or matches the digest of the key ``tallyhub init`` printed."""

import hmac

from adapters.services import Services
from application.acting import admin_actor
from domain.errors import AuthenticationFailed


def check_admin_key(services: Services, token: str) -> str:
    """The actor the admin key names (``application.acting.admin_actor``) when ``token`` is
    the admin key; raises AuthenticationFailed otherwise. May read the store once (the
    deployment's key scheme): call it off the event loop."""
    configured = services.settings.admin_key
    if configured and hmac.compare_digest(token.encode(), configured.encode()):
        return admin_actor(token)
    if token and services.ledger.is_admin_key(token):
        return admin_actor(token)
    raise AuthenticationFailed("invalid admin key")
