"""``tallyhub requests`` and ``tallyhub usage`` filter by the attribution callers sent, exactly
as the admin API does: requests recorded into a store (SQLite) by the ledger, read back by
the command line with ``--user``, ``--tag`` and ``--metadata``."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from adapters.bootstrap import build_ledger
from adapters.settings import Settings
from domain.attribution import Attribution
from domain.request_record import RequestRecord
from domain.usage import Usage
from tests.support.gateway import REPO, gateway_env
from tests.unit.test_attribution import details

TALLYHUB = [sys.executable, "-m", "adapters.cli.main"]
SENT = {
    "ml": Attribution(user="alice", metadata=(("job", "nightly"),), tags=("team:ml", "run/1")),
    "web": Attribution(user="alice", tags=("web",)),
    "bob": Attribution(user="bob", tags=("team:ml",)),
    "none": None,
}


def run(env: dict[str, str], *args: str) -> tuple[int, Any]:
    done = subprocess.run([*TALLYHUB, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """The command line's env, the recorded request ids by name, and their charges."""
    data_dir: Path = tmp_path_factory.mktemp("cli-attribution") / "data"
    env = gateway_env(data_dir, None)
    assert run(env, "init")[0] == 0 and run(env, "accounts", "create", "acme")[0] == 0
    ledger = build_ledger(Settings(data_dir=data_dir))
    try:
        account = ledger.get_account("acme").id.hex
        ids, charges = {}, {}
        for index, (name, attribution) in enumerate(SENT.items()):
            request_id = uuid4()
            recorded = replace(
                details(attribution), account_id=account, charge=1000 * (index + 1), usage=Usage(input_tokens=index + 1)
            )
            ledger.save(RequestRecord.completed(request_id, recorded))
            ids[name], charges[name] = str(request_id), recorded.charge
    finally:
        ledger.close()
    return env, ids, charges


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--user", "alice"), {"ml", "web"}),
        (("--tag", "team:ml"), {"ml", "bob"}),
        (("--tag", "team:ml", "--user", "bob"), {"bob"}),
        (("--metadata", "job=nightly"), {"ml"}),
        (("--tag", "team"), set()),
        ((), set(SENT)),
    ],
)
def test_requests_filter_by_attribution(store: Any, flags: tuple[str, ...], expected: set[str]) -> None:
    env, ids, _ = store
    status, document = run(env, "requests", *flags)
    assert status == 0, document
    assert {row["request_id"] for row in document["data"]} == {ids[name] for name in expected}


def test_a_listed_request_shows_what_was_sent(store: Any) -> None:
    env, ids, _ = store
    _, document = run(env, "requests", "--metadata", "job=nightly")
    (row,) = document["data"]
    assert (row["end_user"], row["tags"], row["metadata"]) == ("alice", ["team:ml", "run/1"], {"job": "nightly"})


@pytest.mark.parametrize(
    ("flags", "expected"), [(("--tag", "team:ml"), {"ml", "bob"}), (("--user", "alice"), {"ml", "web"})]
)
def test_usage_filtered_by_attribution_sums_exactly_those_requests(
    store: Any, flags: tuple[str, ...], expected: set[str]
) -> None:
    env, _, charges = store
    status, document = run(env, "usage", *flags)
    assert status == 0, document
    totals = document["totals"]
    assert (totals["requests"], totals["charge"]) == (len(expected), sum(charges[name] for name in expected))
    assert run(env, "usage")[1]["totals"]["requests"] == len(SENT)


def test_a_metadata_flag_without_a_pair_is_an_error_naming_it(store: Any) -> None:
    env, _, _ = store
    status, document = run(env, "requests", "--metadata", "job")
    assert status == 1 and "key=value" in document["error"]["message"]
