"""Loading the master key: from TALLYHUB_MASTER_KEY, else from the data dir's key file
(created by ``tallyhub init`` with mode 0600). A missing or malformed key is an
error at start; there is no plaintext fallback."""

import os
from pathlib import Path

from adapters.crypto.aes_gcm import decode_master_key, generate_master_key
from adapters.settings import Settings
from domain.errors import NotInitialised, SecretError


def load_master_key(settings: Settings) -> bytes:
    if settings.master_key:
        return decode_master_key(settings.master_key)
    path = settings.master_key_path
    if not path.exists():
        raise NotInitialised(f"no master key: set TALLYHUB_MASTER_KEY or run `tallyhub init` (looked for {path})")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SecretError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return decode_master_key(path.read_text())


def create_master_key_file(path: Path) -> None:
    """Write a new random master key, readable by the owner only. Never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_master_key() + "\n")
