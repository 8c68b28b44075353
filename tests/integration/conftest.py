"""Fixtures shared by the integration tests."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import parse_database_url
from application.ledger import Ledger


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one SQLite store, as two gateway processes would open it."""
    env = parse_database_url(None, tmp_path).eventsourcing_env(create_tables=True)
    master = os.urandom(32)
    first = Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    first.initialise()
    second = Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    second.load_deployment()
    yield first, second
    first.close()
    second.close()
