"""Files and folders Tallyhub writes are its owner's alone: folders 0700, files 0600.

The data dir holds the event store, the read models, the master key and the exports:
the whole ledger, the sealed secrets and the key that opens them. Invariants kept here:
- a folder Tallyhub creates (the data dir, ``exports/``) is created 0700, and an existing
  data dir that others may read or enter is tightened to 0700 on start, with a log line;
- a file Tallyhub creates (SQLite databases, exports, manifests) is created 0600 — never
  created with the umask's mode and narrowed afterwards — and an existing one others may
  read is tightened on start. SQLite gives a database's ``-wal`` and ``-shm`` files the
  mode of the database, so creating the database 0600 first covers them too;
- nothing here loosens a mode, and a path Tallyhub cannot change (another owner's) is
  logged and left as it is: the command still runs.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

log = logging.getLogger("tallyhub.files")


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner may enter: created 0700 (with its missing
    parents), or tightened to 0700 when it exists."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            pass
    tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and only its owner may read it: created empty 0600 (never
    truncated when it exists), or tightened to 0600. Returns ``path``."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        tighten(path, PRIVATE_FILE)
    return path


def open_private(path: Path, buffering: int = -1) -> BinaryIO:
    """``path`` opened for writing from empty, 0600 from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        _fchmod(fd, path)
        return os.fdopen(fd, "wb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (replacing what it held), 0600."""
    with open_private(path) as file:
        file.write(data)


def private_sqlite(database: Path) -> None:
    """A SQLite database and its companions 0600: the database created empty 0600 when
    it does not exist yet (SQLite then gives ``-wal``/``-shm`` the same mode). A database
    whose folder is missing is left to SQLite, which says so."""
    if not database.parent.is_dir():
        return
    try:
        private_file(database)
    except OSError as error:  # not ours to open: SQLite will say what it makes of it
        log.warning("%s: could not make sure only its owner reads it: %s", database, error.strerror)
        return
    for suffix in SQLITE_COMPANIONS:
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            tighten(companion, PRIVATE_FILE)


def tighten(path: Path, mode: int) -> None:
    """Take away every permission of ``path`` beyond ``mode`` (logged); never adds any."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & ~mode == 0:
        return
    try:
        os.chmod(path, current & mode)
    except OSError as error:
        log.warning(
            "%s is mode %04o and could not be tightened to %04o: %s", path, current, current & mode, error.strerror
        )
        return
    log.warning("%s was mode %04o (others could read it); tightened to %04o", path, current, current & mode)


def _fchmod(fd: int, path: Path) -> None:
    current = stat.S_IMODE(os.fstat(fd).st_mode)
    if current & ~PRIVATE_FILE:
        os.fchmod(fd, current & PRIVATE_FILE)
