"""A redis-server of a test's own, for the tests that stop Redis: the machine's shared Redis on
6379 is never stopped."""

import subprocess
import time

import redis

from tests.support.gateway import free_port


class OwnRedis:
    """A redis-server of the test's own on a free port (never the shared one), started and
    killed by the test; every server it started is killed at the end."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.servers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        server = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.servers.append(server)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                server.kill()
            server.wait(10)
