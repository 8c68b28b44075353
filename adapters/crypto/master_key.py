"""Loading the master key ring, from exactly one source:

1. ``TALLYHUB_MASTER_KEYS`` — ``kid:base64key`` entries separated by commas;
2. ``TALLYHUB_MASTER_KEYS_FILE`` — a file (mode 0600) with one entry per line;
3. ``TALLYHUB_MASTER_KEY`` — one bare key (a one-key ring; its kid is its fingerprint);
4. otherwise the data dir's ``master.key`` (created by ``tallyhub init``, mode 0600),
   which may also hold several entries, one per line.

In every form **the first key is the newest** and seals new secrets. Setting more
than one of the variables, a malformed entry, a key file others can read, or no key
at all is an error at start; there is no plaintext fallback.
"""

import os
from pathlib import Path

from adapters.crypto.aes_gcm import generate_master_key
from adapters.crypto.key_ring import KeyRing, decode_master_key
from adapters.settings import Settings
from domain.errors import NotInitialised, SecretError


def load_key_ring(settings: Settings) -> KeyRing:
    given = [
        name
        for name, value in (
            ("TALLYHUB_MASTER_KEYS", settings.master_keys),
            ("TALLYHUB_MASTER_KEYS_FILE", settings.master_keys_file),
            ("TALLYHUB_MASTER_KEY", settings.master_key),
        )
        if value
    ]
    if len(given) > 1:
        raise SecretError(f"set only one of {', '.join(given)}")
    if settings.master_keys:
        return KeyRing.parse(settings.master_keys, source="TALLYHUB_MASTER_KEYS")
    if settings.master_keys_file:
        return _read_key_file(settings.master_keys_file, "TALLYHUB_MASTER_KEYS_FILE")
    if settings.master_key:
        try:
            return KeyRing.single(decode_master_key(settings.master_key))
        except SecretError as error:
            raise SecretError(f"TALLYHUB_MASTER_KEY: {error}") from None
    path = settings.master_key_path
    if not path.exists():
        raise NotInitialised(
            f"no master key: set TALLYHUB_MASTER_KEYS or TALLYHUB_MASTER_KEY, "
            f"or run `tallyhub init` (looked for {path})"
        )
    return _read_key_file(path, str(path))


def load_master_key(settings: Settings) -> KeyRing:
    """The configured ring (kept under its old name for adapters/bootstrap.py)."""
    return load_key_ring(settings)


def master_keys_configured(settings: Settings) -> bool:
    """True when a key is given by the environment, so ``init`` must not create a key file."""
    return bool(settings.master_keys or settings.master_keys_file or settings.master_key)


def ensure_master_key_file(settings: Settings) -> bool:
    """Create the data dir's key file unless a key is configured or the file exists; True if created."""
    if master_keys_configured(settings) or settings.master_key_path.exists():
        return False
    create_master_key_file(settings.master_key_path)
    return True


def create_master_key_file(path: Path) -> None:
    """Write a new random master key, readable by the owner only. Never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_master_key() + "\n")


def _read_key_file(path: Path, source: str) -> KeyRing:
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise SecretError(f"{source}: no such file {path}") from None
    if mode & 0o077:
        raise SecretError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return KeyRing.parse(path.read_text(), source=source)
