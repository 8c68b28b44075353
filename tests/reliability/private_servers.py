"""A PostgreSQL and a Redis of a test's own, on free loopback ports, that the test may stop,
kill and start again: the store-fault runs take these down, never the machine's shared
servers (127.0.0.1:5432 and :6379 stay untouched).

``PrivatePostgres`` runs ``initdb`` into a temporary directory (as the ``postgres`` user when
this process is root, which initdb refuses) and ``pg_ctl`` on a free port with its socket in
that directory; ``PrivateRedis`` runs ``redis-server`` without persistence. Both keep their
data across a stop and a start, and ``close()`` stops them and removes their files. The
pytest fixtures ``private_postgres`` and ``private_redis`` (tests/reliability/conftest.py)
skip, with the reason, on a machine without the binaries."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.gateway import free_port

PG_BIN = Path(os.environ.get("TALLYHUB_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def postgres_available() -> str | None:
    """None when a private PostgreSQL can be run here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"no initdb in {PG_BIN} (set TALLYHUB_TEST_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run initdb as"
    return None


def redis_available() -> str | None:
    return None if Path(REDIS_SERVER).exists() else "no redis-server on this machine"


class PrivatePostgres:
    """``start()``, ``stop(mode)`` (``fast``: a clean shutdown; ``immediate``: like a crash),
    ``close()``. ``url(schema)`` is what TALLYHUB_DATABASE_URL takes; ``conninfo`` for psycopg."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="tallyhub-private-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, schema: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema={schema}"

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(
            PG_BIN / "pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-o", options, "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        done = subprocess.run(
            [*self._as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True
        )
        return done.returncode == 0

    def close(self) -> None:
        if self.data.exists() and self.running:
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, *args: object) -> None:
        done = subprocess.run([*self._as_user, *map(str, args)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed: {done.stdout}{done.stderr}")


class PrivateRedis:
    """``start()``, ``stop()`` (SIGTERM, no save), ``close()``; ``url`` for TALLYHUB_REDIS_URL."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="tallyhub-private-redis-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.base / "server.log", "ab") as log:
            self._process = subprocess.Popen([*args, "--dir", str(self.base)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.base / 'server.log').read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
