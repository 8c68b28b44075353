"""A lean Redis client for the hot path: one connection, every command pipelined.

redis-py's asyncio client spends about 0.15–0.3 ms of the event loop's time on each command
(its connection pool, command packing and reply reading go through several coroutine layers),
which is what a rate-limited request paid in server mode, twice. Here a command is encoded
and written at once, and its reply read by a protocol callback: concurrent requests share the
connection, their commands pipelined in the order they were written (Redis answers in that
order), so the cost is a few microseconds plus the round trip.

Invariants:
- replies are matched to commands strictly in order (RESP2 over one connection);
- anything that leaves the connection in doubt — a reply not received within ``timeout``, a
  reset, a protocol error — aborts the connection: every command waiting on it fails with
  ``RedisUnavailable`` (an ``OSError``), and the next command opens a new one, so a late reply
  can never be read as another command's;
- a reply that is a Redis error (``-ERR …``) fails only its own command, as ``ReplyError``.

It speaks what the rate limiter needs: ``redis://`` and ``rediss://`` URLs (user, password,
database), ``unix://`` sockets, ``EVALSHA`` falling back to ``SCRIPT LOAD`` once per new Redis.
"""

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

Arg = str | bytes | int | float


class RedisUnavailable(ConnectionError):
    """The connection failed, was reset, or did not answer in time."""


class ReplyError(Exception):
    """Redis answered this command with an error."""


@dataclass(frozen=True)
class Script:
    source: bytes
    sha: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source).hexdigest().encode())  # noqa: S324 - Redis' script id


@dataclass(frozen=True)
class Address:
    host: str | None
    port: int
    path: str | None  # a unix socket
    tls: bool
    username: str | None
    password: str | None
    db: int

    @classmethod
    def from_url(cls, url: str) -> "Address":
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss:// or unix://")
        query = parse_qs(parts.query)
        db_text = query.get("db", [""])[0] or (parts.path.strip("/") if parts.scheme != "unix" else "") or "0"
        return cls(
            host=None if parts.scheme == "unix" else (parts.hostname or "127.0.0.1"),
            port=parts.port or 6379,
            path=unquote(parts.path) if parts.scheme == "unix" else None,
            tls=parts.scheme == "rediss",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else query.get("password", [None])[0],
            db=int(db_text),
        )


def encode(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings (a float as its ``repr``, exact)."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        data = arg if type(arg) is bytes else (repr(arg) if type(arg) is float else str(arg)).encode()
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_INCOMPLETE = object()


def parse(buffer: bytearray, start: int) -> tuple[Any, int]:
    """The reply at ``start`` and the position after it; ``(_INCOMPLETE, start)`` when the
    buffer does not hold all of it yet. Errors come back as ``ReplyError`` values."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return _INCOMPLETE, start
    kind = buffer[start]
    line = bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == 0x2B:  # +
        return line.decode(), after
    if kind == 0x2D:  # -
        return ReplyError(line.decode(errors="replace")), after
    if kind == 0x3A:  # :
        return int(line), after
    if kind == 0x24:  # $
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            return _INCOMPLETE, start
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == 0x2A:  # *
        count = int(line)
        if count < 0:
            return None, after
        items = []
        position = after
        for _ in range(count):
            item, position = parse(buffer, position)
            if item is _INCOMPLETE:
                return _INCOMPLETE, start
            items.append(item)
        return items, position
    raise RedisUnavailable(f"unreadable reply from Redis (type byte {kind!r})")


class _Connection(asyncio.Protocol):
    """``timeout``: how long the oldest command waiting may wait for its reply. Replies come in
    order, so one timer watches the oldest command only (``_watch``), not one per command."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()  # the loop time by which each waiting command must be answered
        self.watchdog: asyncio.TimerHandle | None = None
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without the subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        position = 0
        try:
            while position < len(buffer):
                reply, after = parse(buffer, position)
                if reply is _INCOMPLETE:
                    break
                position = after
                if not self.waiting:
                    raise RedisUnavailable("Redis sent a reply nothing asked for")
                waiter = self.waiting.popleft()
                self.deadlines.popleft()
                if not waiter.done():  # a waiter whose caller went away still takes its reply
                    if isinstance(reply, ReplyError):
                        waiter.set_exception(reply)
                    else:
                        waiter.set_result(reply)
        except (RedisUnavailable, ValueError) as exc:
            self.abort(exc if isinstance(exc, RedisUnavailable) else RedisUnavailable(str(exc)))
            return
        del buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(RedisUnavailable(f"the connection to Redis was lost ({exc or 'closed'})"))

    def send(self, command: bytes) -> "asyncio.Future[Any]":
        """Queue ``command``; the commands queued in one turn of the event loop go out in one
        write (one system call for all the requests that turn served, not one each)."""
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise RedisUnavailable("the connection to Redis is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(waiter)
        deadline = loop.time() + self.timeout
        self.deadlines.append(deadline)
        if self.watchdog is None:
            self.watchdog = loop.call_at(deadline, self._watch)
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(command)
        return waiter

    def _watch(self) -> None:
        """The oldest command waiting has had its time: abort; else watch the new oldest."""
        self.watchdog = None
        if not self.deadlines or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadlines[0]:
            self.abort(RedisUnavailable(f"Redis did not answer within {self.timeout:g} s"))
        else:
            self.watchdog = loop.call_at(self.deadlines[0], self._watch)

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.lost is None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(outgoing))

    def abort(self, reason: RedisUnavailable) -> None:
        self._fail_all(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, reason: RedisUnavailable) -> None:
        if self.lost is None:
            self.lost = reason
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.deadlines.clear()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(reason)


class RedisPipe:
    """Commands to one Redis over one pipelined connection (see the module's invariants).
    ``timeout``: seconds for a connection to open, and for each reply."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.address = Address.from_url(url)
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def call(self, *args: Arg) -> Any:
        """One command's reply; ``ReplyError`` for an error reply, ``RedisUnavailable`` (an
        ``OSError``) when Redis cannot be reached or does not answer within ``timeout``."""
        connection = self._connection
        if connection is None or connection.lost is not None:
            connection = await self._connected()
        return await connection.send(encode(args))

    async def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """``EVALSHA``; a Redis that does not know the script yet is given it once."""
        try:
            return await self.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        await self.call(b"SCRIPT", b"LOAD", script.source)
        return await self.call(b"EVALSHA", script.sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    async def _connected(self) -> _Connection:
        if self._connecting is None:  # one connection attempt at a time; the others wait for it
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self.address
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                if address.path is not None:
                    _, connection = await loop.create_unix_connection(lambda: _Connection(self.timeout), address.path)
                else:
                    assert address.host is not None  # a TCP address always has one
                    context = ssl.create_default_context() if address.tls else None
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self.timeout), address.host, address.port, ssl=context
                    )
                greetings = []
                if address.password is not None:
                    user: list[Arg] = [address.username] if address.username else []
                    greetings.append(connection.send(encode([b"AUTH", *user, address.password])))
                if address.db:
                    greetings.append(connection.send(encode([b"SELECT", address.db])))
                for greeting in greetings:
                    await greeting
        except (TimeoutError, ReplyError, OSError) as exc:
            reason = _refusal(exc, self.timeout)
            if connection is not None:
                connection.abort(reason)
            raise reason from None
        self._connection = connection
        return connection


def _refusal(exc: BaseException, timeout: float) -> RedisUnavailable:
    if isinstance(exc, TimeoutError) and not isinstance(exc, RedisUnavailable):
        return RedisUnavailable(f"Redis did not accept a connection within {timeout:g} s")
    if isinstance(exc, ReplyError):
        return RedisUnavailable(f"Redis refused the connection's AUTH or SELECT: {exc}")
    if isinstance(exc, RedisUnavailable):
        return exc
    return RedisUnavailable(f"cannot connect to Redis ({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})")
