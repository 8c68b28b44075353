"""adapters/redis_pipe.py against real Redis servers: replies matched to their commands under
pipelining, an error reply failing only its command, scripts loaded once, AUTH and SELECT over
a unix socket, and a server that never answers aborting the connection (the next command opens
a new one). The reply reader is also fed every way a byte stream can be split."""

import asyncio
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.redis_pipe import Address, RedisPipe, RedisUnavailable, ReplyError, Script, _Connection

SHARED = "redis://127.0.0.1:6379/0"


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture(params=["asyncio", "uvloop"])
def runner(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    """Each test on both event loops: ``serve`` runs uvloop, whose transports differ."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


def test_concurrent_commands_each_get_their_own_reply_and_an_error_fails_only_its_own(
    runner: Callable[[Any], Any],
) -> None:
    prefix = f"th-test-pipe-{secrets.token_hex(4)}"

    async def scenario() -> tuple[list[Any], Any, Any]:
        pipe = RedisPipe(SHARED, timeout=5)
        try:
            replies = await asyncio.gather(*(pipe.call("INCRBY", f"{prefix}:n{i % 7}", i) for i in range(300)))
            await pipe.call("SET", f"{prefix}:text", "not a number")
            failed, after = await asyncio.gather(
                pipe.call("INCR", f"{prefix}:text"), pipe.call("ECHO", "still here"), return_exceptions=True
            )
            return replies, failed, after
        finally:
            await pipe.aclose()

    try:
        replies, failed, after = runner(scenario())
    finally:
        client = redis.Redis.from_url(SHARED)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
    totals: dict[int, int] = {}
    for i, reply in enumerate(replies):  # INCRBY answers the running total of its own key
        totals[i % 7] = totals.get(i % 7, 0) + i
        assert reply == totals[i % 7]
    assert isinstance(failed, ReplyError) and "not an integer" in str(failed)
    assert after == b"still here"


def test_a_script_is_loaded_once_into_a_redis_that_does_not_know_it(runner: Callable[[Any], Any]) -> None:
    script = Script(f"-- {secrets.token_hex(8)}\nreturn {{KEYS[1], ARGV[1]}}".encode())

    async def scenario() -> tuple[Any, Any, Any]:
        pipe = RedisPipe(SHARED, timeout=5)
        try:
            known_before = await pipe.call("SCRIPT", "EXISTS", script.sha)
            first = await pipe.run_script(script, ["k"], [42])
            second = await pipe.run_script(script, ["k2"], ["x"])
            return known_before, first, second
        finally:
            await pipe.aclose()

    known_before, first, second = runner(scenario())
    assert known_before == [0]
    assert (first, second) == ([b"k", b"42"], [b"k2", b"x"])


def test_auth_and_select_over_a_unix_socket(tmp_path: Path, runner: Callable[[Any], Any]) -> None:
    socket = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(socket), "--requirepass", "pa ss/wd", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

        async def scenario(url: str) -> Any:
            pipe = RedisPipe(url, timeout=5)
            try:
                await pipe.call("SET", "where", "db3")
                return await pipe.call("GET", "where")
            finally:
                await pipe.aclose()

        assert runner(scenario(f"unix://{socket}?db=3&password=pa%20ss%2Fwd")) == b"db3"
        check = redis.Redis(unix_socket_path=str(socket), password="pa ss/wd", db=3)
        assert (
            check.get("where") == b"db3"
            and redis.Redis(unix_socket_path=str(socket), password="pa ss/wd", db=0).get("where") is None
        )
        check.close()
        with pytest.raises(RedisUnavailable, match="AUTH or SELECT"):
            runner(scenario(f"unix://{socket}?password=wrong"))
    finally:
        server.kill()
        server.wait(10)


def test_a_server_that_never_answers_aborts_the_connection_and_the_next_call_reconnects(
    runner: Callable[[Any], Any],
) -> None:
    async def scenario() -> tuple[int, BaseException, BaseException]:
        connections = 0

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.read()  # reads until the client goes away; never answers
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pipe = RedisPipe(f"redis://127.0.0.1:{port}/0", timeout=0.2)
        try:
            first = await asyncio.gather(pipe.call("PING"), pipe.call("PING"), return_exceptions=True)
            second = await asyncio.gather(pipe.call("PING"), return_exceptions=True)
        finally:
            await pipe.aclose()
            server.close()
            await server.wait_closed()
        assert all(isinstance(outcome, RedisUnavailable) for outcome in first)
        return connections, first[0], second[0]

    connections, first, second = runner(scenario())
    assert connections == 2  # the aborted connection was not reused
    assert "did not answer within 0.2 s" in str(first) and isinstance(second, RedisUnavailable)
    assert isinstance(first, OSError)  # the limiter's "Redis unreachable": fail open


def test_a_refused_connection_is_redis_unavailable(runner: Callable[[Any], Any]) -> None:
    async def scenario() -> None:
        pipe = RedisPipe("redis://127.0.0.1:1/0", timeout=1)
        await pipe.call("PING")

    with pytest.raises(RedisUnavailable, match="cannot connect to Redis"):
        runner(scenario())


def test_urls() -> None:
    assert Address.from_url("redis://u:p%40ss@cache.internal:6380/2") == Address(
        "cache.internal", 6380, None, False, "u", "p@ss", 2
    )
    assert Address.from_url("rediss://cache").tls and Address.from_url("rediss://cache").port == 6379
    assert Address.from_url("redis://127.0.0.1").db == 0
    with pytest.raises(ValueError, match="redis://, rediss:// or unix://"):
        Address.from_url("http://127.0.0.1:6379")


def _resp(reply: Any) -> bytes:
    """A reply as Redis would send it (the test's own encoder, independent of the reader)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, ReplyError):
        return b"-%s\r\n" % str(reply).encode()
    if isinstance(reply, str):
        return b"+%s\r\n" % reply.encode()
    return b"*%d\r\n" % len(reply) + b"".join(_resp(item) for item in reply)


_leaf = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=40),
    st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=10),
)
_replies = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


class _Transport(asyncio.Transport):
    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        raise AssertionError("a well-formed stream never aborts")


@settings(max_examples=150, deadline=None)
@given(replies=st.lists(_replies, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_replies_split_anywhere_are_read_whole_and_in_order(replies: list[Any], cuts: list[int]) -> None:
    stream = b"".join(_resp(reply) for reply in replies)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})

    async def scenario() -> list[Any]:
        connection = _Connection(timeout=60)
        connection.connection_made(_Transport())
        waiters = [connection.send(b"") for _ in replies]
        for start, end in zip(points, points[1:], strict=False):
            connection.data_received(stream[start:end])
        return [waiter.result() for waiter in waiters]

    assert run(scenario()) == replies
