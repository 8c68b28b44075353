"""With the hot-path read cache on (the default, 1 s), a key revoked or a price changed
by another process takes effect on every ``serve`` within that second."""

import time
from pathlib import Path

import httpx

from tests.support.gateway import Gateway, cli


def test_a_key_revoked_elsewhere_is_refused_within_one_second(tmp_path: Path) -> None:
    gateway = Gateway.initialised(tmp_path, TALLYHUB_READ_CACHE_SECONDS="1")
    cli(gateway.env, "accounts", "create", "acme")
    issued = cli(gateway.env, "keys", "issue", "acme")
    gateway.start()
    try:
        headers = {"authorization": f"Bearer {issued['key']}"}
        assert httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 200
        cli(gateway.env, "keys", "revoke", issued["id"])  # another process
        revoked_at = time.monotonic()
        while httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 200:
            assert time.monotonic() - revoked_at < 1.5, "still accepted more than a second after revocation"
            time.sleep(0.05)
    finally:
        gateway.stop()
