"""Which worker of ``tallyhub serve --workers N`` holds a connection, read from outside
(Linux /proc), so tests and benchmarks need nothing from the gateway to tell its workers apart.

uvicorn's workers accept on one shared listening socket, and the kernel gives a new
connection to whichever worker wakes first: a burst of connections opened at once often all
land on one worker. What a caller sends over a connection is served by the worker that
accepted it, so a connection's worker, once known, says who serves its requests."""

import socket
import time
from pathlib import Path


def worker_pids(serve_pid: int) -> set[int]:
    """The worker processes ``serve`` spawned (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    found = set()
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
        except OSError:
            continue  # it exited meanwhile
    return found


def accepted_by(pids: set[int], server_port: int, client_port: int) -> int | None:
    """The process among ``pids`` holding the server side of the open loopback (IPv4)
    connection from ``client_port``: its socket's inode in /proc/net/tcp, then the process
    with a descriptor on that inode; None when none holds it."""
    wanted = (f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}")
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    inodes = {f"socket:[{fields[9]}]" for fields in map(str.split, lines) if (fields[1], fields[2]) == wanted}
    for pid in pids:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if str(descriptor.readlink()) in inodes:
                    return pid
            except OSError:
                continue  # closed meanwhile
    return None


def wait_until_each_accepts(port: int, pids: set[int], timeout: float = 60) -> None:
    """Open short connections (``GET /health``) until every worker in ``pids`` has accepted one:
    a worker still starting accepts none. AssertionError after ``timeout`` seconds."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while seen != pids:
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout} s only {sorted(seen)} of {sorted(pids)} accepted a connection")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            conn.recv(65536)  # answered, so accepted; the connection is still open
            owner = accepted_by(pids, port, conn.getsockname()[1])
        if owner is not None:
            seen.add(owner)
