"""Exports and replay applications as background jobs on the admin API, end to end:

- embedded mode (SQLite, ``serve`` alone): ``POST /exports?background=true`` answers 202 with
  the queued job and its ``Location``; polled to ``succeeded``, its result is the export's
  manifest, the file is there and ``tallyhub verify`` passes; a replay applied as a job moves
  an account exactly as the synchronous apply moves an identically charged one, to the
  nanocredit; a replay job against a price book that misses a charged model ends ``failed``
  with the error, posting nothing; bad input is refused at once, nothing queued;
- server mode (PostgreSQL, Redis): ``serve`` only records the jobs; two ``tallyhub worker``
  processes run each of them once through their dramatiq actors.
"""

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from application.acting import admin_actor
from tests.conftest import PgSchemas
from tests.e2e.conftest import MODEL, UPSTREAM_KEY, configure
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import REPO, TALLYHUB, Gateway, cli

ORIGINAL = {MODEL: {"input": "2", "output": "8"}}
DOUBLED = {MODEL: {"input": "4", "output": "16"}}
JOB_KEYS = {"id", "kind", "status", "params", "submitted_by", "attempts", "created_at", "started_at", "finished_at"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # a poll interval, not a wait for the condition


def prices(models: dict[str, dict[str, str]]) -> bytes:
    return json.dumps({"models": models}).encode()


def ended(gateway: Gateway, location: str) -> dict[str, Any]:
    """Poll the job at ``location`` until it ends; the job."""
    path = location.removeprefix("/admin/v1")
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(gateway.admin_json("GET", path)["job"])
        return found["status"] in ("succeeded", "failed")

    wait_for(done, f"the job at {location} to end")
    return found


def submitted(response: Any, kind: str) -> tuple[dict[str, Any], str]:
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert set(job) >= JOB_KEYS and job["kind"] == kind and job["status"] == "queued" and job["attempts"] == 0
    assert response.headers["location"] == f"/admin/v1/jobs/{job['id']}"
    return job, response.headers["location"]


def charge(gateway: Gateway, api_key: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
    for words in ("one", "two more", "three more words"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Say {words}."}])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """acme and beta, charged the same three requests."""
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("jobs"))
    acme = configure(gateway, upstream, "acme", "100")
    cli(gateway.env, "accounts", "create", "beta")
    cli(gateway.env, "credits", "grant", "beta", "100", "--reason", "e2e")
    beta = cli(gateway.env, "keys", "issue", "beta", "--name", "e2e")["key"]
    gateway.start()
    charge(gateway, acme)
    charge(gateway, beta)
    yield gateway
    gateway.stop()
    upstream.stop()


def test_an_export_job_succeeds_with_its_manifest_and_the_file_verifies(embedded: Gateway) -> None:
    response = embedded.admin("POST", "/exports", params={"kind": "ledger", "format": "jsonl", "background": "true"})
    job, location = submitted(response, "export")
    assert job["params"] == {"kind": "ledger", "from": None, "to": None, "format": "jsonl"}
    assert job["submitted_by"] == admin_actor(embedded.admin_key) and embedded.admin_key not in response.text

    done = ended(embedded, location)
    assert (done["status"], done["attempts"], done["error"]) == ("succeeded", 1, None)
    manifest = done["result"]
    assert embedded.admin_json("GET", f"/exports/{manifest['export_id']}/manifest") == manifest
    path = Path(embedded.env["TALLYHUB_DATA_DIR"]) / "exports" / manifest["file"]
    assert path.exists() and len(path.read_text().splitlines()) == manifest["rows"] > 0
    verified = cli(embedded.env, "verify")
    assert verified["ok"], verified["problems"]
    assert str(path) in verified["checked"]["exports"]


def test_a_replay_applied_as_a_job_equals_the_synchronous_apply_to_the_nanocredit(embedded: Gateway) -> None:
    before = {name: embedded.balance(name)["balance"] for name in ("acme", "beta")}
    assert before["acme"] == before["beta"]
    synchronous = embedded.admin_json(
        "POST", "/replays", params={"account": "acme", "apply": "true"}, content=prices(DOUBLED)
    )
    response = embedded.admin(
        "POST", "/replays", params={"account": "beta", "apply": "true", "background": "true"}, content=prices(DOUBLED)
    )
    job, location = submitted(response, "replay")
    assert job["params"] == {"from": None, "to": None, "account": "beta"}  # the price file is not repeated
    done = ended(embedded, location)
    assert (done["status"], done["attempts"]) == ("succeeded", 1)
    background = done["result"]

    def money(doc: dict[str, Any]) -> Any:
        return (
            doc["applied"],
            doc["dry_run"],
            doc["charges"],
            doc["prices_sha256"],
            doc["totals"],
            [(line["model"], line["charges"], line["old"], line["new"], line["difference"]) for line in doc["lines"]],
            [(a["requested"], a["applied"], a["uncollected"], a["posted"]) for a in doc["adjustments"]],
        )

    assert money(background) == money(synchronous)
    assert background["applied"] and background["totals"]["difference"] > 0 and background["account"] == "beta"
    after = {name: embedded.balance(name)["balance"] for name in ("acme", "beta")}
    assert after["beta"] - before["beta"] == after["acme"] - before["acme"] == -background["totals"]["difference"]

    undo = embedded.admin("POST", "/replays", params={"apply": "true", "background": "true"}, content=prices(ORIGINAL))
    assert ended(embedded, submitted(undo, "replay")[1])["status"] == "succeeded"
    assert {name: embedded.balance(name)["balance"] for name in ("acme", "beta")} == before


def test_a_replay_job_missing_a_charged_model_fails_with_the_error_and_posts_nothing(embedded: Gateway) -> None:
    before = embedded.balance("acme")["balance"]
    response = embedded.admin(
        "POST",
        "/replays",
        params={"apply": "true", "background": "true"},
        content=prices({"openai/other": {"input": "4", "output": "16"}}),
    )
    done = ended(embedded, submitted(response, "replay")[1])
    assert (done["status"], done["result"]) == ("failed", None)
    error = done["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_request", "prices")
    assert f"no price for models charged in the window: {MODEL}" in error["message"]
    assert embedded.balance("acme")["balance"] == before
    failed = embedded.admin_json("GET", "/jobs", params={"status": "failed"})["data"]
    assert done["id"] in [found["id"] for found in failed] and {found["status"] for found in failed} == {"failed"}


def test_bad_requests_are_refused_at_once_and_queue_nothing(embedded: Gateway) -> None:
    listed = embedded.admin_json("GET", "/jobs")["data"]
    cases = [
        (embedded.admin("POST", "/replays", params={"background": "true"}, content=prices(DOUBLED)), 400, "background"),
        (
            embedded.admin("POST", "/replays", params={"apply": "true", "background": "true"}, content=b'{"models": {'),
            400,
            None,
        ),
        (
            embedded.admin(
                "POST",
                "/replays",
                params={"apply": "true", "background": "true", "account": "nobody"},
                content=prices(DOUBLED),
            ),
            404,
            None,
        ),
        (
            embedded.admin("POST", "/exports", params={"kind": "ledger", "from": "yesterday", "background": "true"}),
            400,
            "from",
        ),
        (embedded.admin("GET", "/jobs", params={"status": "done"}), 400, "status"),
        (embedded.admin("GET", "/jobs/0b8f5c1e-2a47-4d1e-9a55-3c1b0e7d9a21"), 404, None),
        (embedded.admin("GET", "/jobs/not-an-id"), 404, None),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert embedded.admin_json("GET", "/jobs")["data"] == listed
    assert httpx.get(embedded.url + "/admin/v1/jobs", headers={"authorization": "Bearer nope"}).status_code == 401


def test_jobs_are_listed_newest_first(embedded: Gateway) -> None:
    for kind in ("usage", "requests"):
        response = embedded.admin("POST", "/exports", params={"kind": kind, "background": "true"})
        ended(embedded, submitted(response, "export")[1])
    listed = embedded.admin_json("GET", "/jobs")["data"]
    assert [job["params"]["kind"] for job in listed[:2]] == ["requests", "usage"]
    assert [job["created_at"] for job in listed] == sorted((job["created_at"] for job in listed), reverse=True)
    assert embedded.admin_json("GET", "/jobs", params={"limit": "1"})["data"] == listed[:1]


@pytest.mark.postgres
@pytest.mark.redis
def test_server_mode_workers_run_each_job_once(tmp_path: Path, pg_schemas: PgSchemas) -> None:
    prefix = f"th-test-{secrets.token_hex(6)}"
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    gateway = Gateway.initialised(
        tmp_path, pg_schemas.new_url(), TALLYHUB_REDIS_URL="redis://127.0.0.1:6379/0", TALLYHUB_REDIS_PREFIX=prefix
    )
    key = configure(gateway, upstream, "acme", "100")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        gateway.start()
        charge(gateway, key)
        before = gateway.balance("acme")["balance"]
        # recorded by serve before any worker runs: the workers find them in the table
        first = gateway.admin("POST", "/exports", params={"kind": "ledger", "background": "true"})
        locations = [submitted(first, "export")[1]]
        workers = [
            subprocess.Popen(
                [*TALLYHUB, "worker", "--poll-seconds", "0.2"],
                env=gateway.env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"worker-{n}.log", "wb"),
            )
            for n in range(2)
        ]
        for kind in ("ledger", "usage", "requests"):
            response = gateway.admin("POST", "/exports", params={"kind": kind, "background": "true"})
            locations.append(submitted(response, "export")[1])
        replay = gateway.admin(
            "POST", "/replays", params={"apply": "true", "background": "true"}, content=prices(DOUBLED)
        )
        locations.append(submitted(replay, "replay")[1])
        jobs = [ended(gateway, location) for location in locations]
        exports = gateway.admin_json("GET", "/exports")["exports"]
        replays = gateway.admin_json("GET", "/replays")["replays"]
        after = gateway.balance("acme")["balance"]
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        gateway.stop()
        upstream.stop()
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for found in client.scan_iter(f"{prefix}*"):
            client.delete(found)
        client.close()

    assert [(job["status"], job["attempts"]) for job in jobs] == [("succeeded", 1)] * 5, jobs
    assert sorted(entry["export_id"] for entry in exports) == sorted(job["result"]["export_id"] for job in jobs[:4])
    assert [entry["sequence"] for entry in replays] == [1]
    assert jobs[4]["result"]["applied"] and after - before == -jobs[4]["result"]["totals"]["difference"]
