"""Background jobs (application/jobs.py) on each row store (memory, SQLite, PostgreSQL):
queued → running → succeeded with the handler's document, or failed with the error in the
API's terms; bad input refused at submission with nothing recorded; two runners run a job
once; a job whose runner died is claimed again when its lease ends, and failed after the
last attempt; it runs as the admin who submitted it; and a replay applied by a job that is
retried after a crash posts its adjustments once (with in-memory services)."""

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.persistence.job_store import InMemoryJobRows, job_rows_for
from adapters.services import Services
from adapters.settings import Settings
from adapters.workers.jobs import REPLAY, build_jobs, replay_params
from application.acting import acting_as, actor_of, current_actor
from application.billing import RequestShape
from application.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, JobHandler, JobRows, Jobs
from application.pricing_input import price_from_credits
from domain.account import Account
from domain.errors import AccountNotFound, EmptyWindow, InvalidRequest, NotFound
from domain.usage import Usage
from tests.conftest import PgSchemas
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route

ACTOR = "admin:0123456789ab"


class Now:
    """Seconds that move only when told."""

    def __init__(self) -> None:
        self.current = 1_800_000_000.0

    def __call__(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


class _Recorder:
    def __init__(self, datastore: object) -> None:
        self.datastore = datastore


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def rows(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobRows]:
    if request.param == "memory":
        yield InMemoryJobRows()
    elif request.param == "sqlite":
        datastore = SQLiteDatastore(str(tmp_path / "store.sqlite"))
        yield job_rows_for(_Recorder(datastore))
        datastore.close()
    else:
        schemas: PgSchemas = request.getfixturevalue("pg_schemas")
        pg = PostgresDatastore("test", "127.0.0.1", 5432, "postgres", "", schema=schemas.new(), pool_size=4)
        yield job_rows_for(_Recorder(pg))
        pg.close()


def refuse_negative(params: dict[str, Any]) -> None:
    if params["n"] < 0:
        raise InvalidRequest("n must not be negative", param="n")


def doubling(calls: list[dict[str, Any]]) -> JobHandler:
    def run(params: dict[str, Any]) -> dict[str, Any]:
        calls.append({**params, "actor": current_actor()})
        if params["n"] == 13:
            raise EmptyWindow("nothing to do for 13")
        if params["n"] == 99:
            raise RuntimeError("disk on fire at /secret/path")
        return {"doubled": params["n"] * 2}

    return JobHandler(check=refuse_negative, run=run)


def jobs_of(rows: JobRows, calls: list[dict[str, Any]], now: Callable[[], float], **kwargs: Any) -> Jobs:
    return Jobs(rows, {"double": doubling(calls)}, now=now, **kwargs)


def test_a_job_goes_from_queued_to_succeeded_with_its_result_as_its_submitter(rows: JobRows) -> None:
    calls: list[dict[str, Any]] = []
    now = Now()
    jobs = jobs_of(rows, calls, now)
    with acting_as(ACTOR):
        job = jobs.submit("double", {"n": 21})
    assert (job.status, job.attempts, job.actor, job.result) == (QUEUED, 0, ACTOR, None)
    assert jobs.get_job(job.job_id) == job and calls == []
    assert jobs.claimable() == [job.job_id]

    now.advance(2)
    done = jobs.run(job.job_id)
    assert done is not None
    assert (done.status, done.attempts, done.result, done.error) == (SUCCEEDED, 1, {"doubled": 42}, None)
    assert (done.created_at, done.started_at, done.finished_at) == (now() - 2, now(), now())
    assert calls == [{"n": 21, "actor": ACTOR}]  # ran as the admin who submitted it, not as this thread's nobody
    assert jobs.run(job.job_id) is None and jobs.claimable() == [] and len(calls) == 1  # done: never again


def test_a_failing_job_shows_failed_with_the_error_and_an_unexpected_one_says_nothing_of_it(rows: JobRows) -> None:
    calls: list[dict[str, Any]] = []
    jobs = jobs_of(rows, calls, Now())
    refused = jobs.submit("double", {"n": 13})
    broken = jobs.submit("double", {"n": 99})
    assert jobs.run_due() == 2

    failed = jobs.get_job(refused.job_id)
    assert (failed.status, failed.result) == (FAILED, None)
    assert failed.error == {"message": "nothing to do for 13", "code": "empty_window", "param": None}
    crashed = jobs.get_job(broken.job_id)
    assert crashed.status == FAILED and crashed.error is not None
    assert crashed.error["code"] == "internal_error" and "secret" not in json.dumps(crashed.error)


def test_bad_input_is_refused_at_submission_and_records_nothing(rows: JobRows) -> None:
    jobs = jobs_of(rows, [], Now())
    with pytest.raises(InvalidRequest, match="must not be negative"):
        jobs.submit("double", {"n": -1})
    with pytest.raises(InvalidRequest, match="no job kind 'triple'"):
        jobs.submit("triple", {"n": 1})
    assert jobs.list_jobs() == []


def test_jobs_are_listed_newest_first_and_by_status_and_unknown_ids_are_not_found(rows: JobRows) -> None:
    now = Now()
    jobs = jobs_of(rows, [], now)
    first = jobs.submit("double", {"n": 1})
    now.advance(1)
    second = jobs.submit("double", {"n": 2})
    jobs.run(first.job_id)
    assert [job.job_id for job in jobs.list_jobs()] == [second.job_id, first.job_id]
    assert [job.job_id for job in jobs.list_jobs(status=SUCCEEDED)] == [first.job_id]
    assert [job.job_id for job in jobs.list_jobs(status=QUEUED, limit=1)] == [second.job_id]
    with pytest.raises(InvalidRequest, match="no job status 'done'"):
        jobs.list_jobs(status="done")
    with pytest.raises(InvalidRequest, match="limit"):
        jobs.list_jobs(limit=0)
    for unknown in ("0b8f5c1e-2a47-4d1e-9a55-3c1b0e7d9a21", "nope", ""):
        with pytest.raises(NotFound):
            jobs.get_job(unknown)
    assert jobs.get_job(first.job_id.replace("-", "")).job_id == first.job_id  # the hex form names it too


def test_two_runners_run_a_job_once(rows: JobRows) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow(params: dict[str, Any]) -> dict[str, Any]:
        calls.append("ran")
        started.set()
        assert release.wait(30)
        return {}

    jobs = Jobs(rows, {"slow": JobHandler(check=lambda params: None, run=slow)})
    job = jobs.submit("slow", {})
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(jobs.run(job.job_id)))
    first.start()
    assert started.wait(30)
    assert jobs.run(job.job_id) is None  # the second runner finds it claimed
    assert jobs.get_job(job.job_id).status == RUNNING and jobs.claimable() == []
    release.set()
    first.join(30)
    assert calls == ["ran"] and results[0].status == SUCCEEDED and results[0].attempts == 1


def test_racing_runners_on_many_jobs_run_each_once(rows: JobRows) -> None:
    calls: list[dict[str, Any]] = []
    jobs = jobs_of(rows, calls, time.time)
    submitted = [jobs.submit("double", {"n": n}) for n in range(8)]
    runners = [threading.Thread(target=jobs.run_due) for _ in range(4)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    assert sorted(call["n"] for call in calls) == list(range(8))
    assert {jobs.get_job(job.job_id).status for job in submitted} == {SUCCEEDED}
    assert {jobs.get_job(job.job_id).attempts for job in submitted} == {1}


def test_a_job_whose_runner_died_is_run_again_when_its_lease_ends_then_failed(rows: JobRows) -> None:
    calls: list[dict[str, Any]] = []
    now = Now()
    jobs = jobs_of(rows, calls, now, lease_seconds=60, max_attempts=2)
    job = jobs.submit("double", {"n": 5})
    assert rows.claim(job.job_id, now=now(), token="dead-runner", lease_until=now() + 60, max_attempts=2)
    now.advance(59)
    assert jobs.claimable() == [] and jobs.run(job.job_id) is None  # the lease still holds
    now.advance(2)
    assert jobs.claimable() == [job.job_id]
    again = jobs.run(job.job_id)
    assert again is not None and (again.status, again.attempts, again.result) == (SUCCEEDED, 2, {"doubled": 10})
    late = rows.finish(job.job_id, "dead-runner", status=FAILED, finished_at=now(), result=None, error={})
    assert not late and jobs.get_job(job.job_id).status == SUCCEEDED  # the dead runner's word counts no more

    doomed = jobs.submit("double", {"n": 6})
    for _ in range(2):
        assert rows.claim(doomed.job_id, now=now(), token="dying", lease_until=now() + 60, max_attempts=2)
        now.advance(61)
    assert jobs.run(doomed.job_id) is None
    ended = jobs.get_job(doomed.job_id)
    assert (ended.status, ended.attempts) == (FAILED, 2) and ended.error is not None
    assert ended.error["code"] == "job_abandoned" and [call["n"] for call in calls] == [5]


def test_a_running_job_keeps_its_claim_while_it_runs() -> None:
    rows = InMemoryJobRows()
    renewed: list[float] = []
    renew = rows.renew

    def counting(job_id: str, token: str, lease_until: float) -> bool:
        renewed.append(lease_until)
        return renew(job_id, token, lease_until)

    rows.renew = counting  # type: ignore[method-assign]

    def long(params: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while len(renewed) < 3:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.01)
        return {"renewals": len(renewed)}

    jobs = Jobs(rows, {"long": JobHandler(check=lambda params: None, run=long)}, lease_seconds=0.06)
    job = jobs.submit("long", {})
    done = jobs.run(job.job_id)
    assert done is not None and done.status == SUCCEEDED and done.attempts == 1


# A replay applied by a job, with in-memory services: the ledger's own idempotency keeps it once.

MODEL = "openai/gpt-test"
ORIGINAL = {"input": "2", "output": "8"}
DOUBLED = {"input": "4", "output": "16"}


@pytest.fixture
def services() -> Iterator[Services]:
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    built = build_services(Settings(), ledger=ledger)
    built.provider_registry.register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    built.prices.publish_prices({MODEL: price_from_credits(input=ORIGINAL["input"], output=ORIGINAL["output"])})
    built.accounts.create_account("acme")
    built.accounts.grant_credits("acme", 10**12)
    key = built.api_keys.issue_api_key("acme").plaintext
    billing = built.billing
    for usage in (Usage(input_tokens=1200, output_tokens=300), Usage(input_tokens=7, output_tokens=3)):
        opened = billing.open_request(
            key, RequestShape(model=MODEL, prompt_bytes=4000, max_output_tokens=2000, choices=1, stream=False)
        )
        billing.complete_request(opened, first_route(billing, opened), usage)
    yield built
    ledger.close()


def prices(rates: dict[str, str]) -> str:
    return json.dumps({"models": {MODEL: rates}})


def balance(services: Services) -> int:
    account = services.ledger.get_account("acme")
    assert isinstance(account, Account)
    return int(account.balance)


def test_a_replay_job_retried_after_a_crash_applies_once_and_records_its_submitter(services: Services) -> None:
    now = Now()
    jobs = build_jobs(services, now=now)
    before = balance(services)
    with acting_as(ACTOR):
        job = jobs.submit(REPLAY, replay_params(prices(DOUBLED), None, None, "acme"))
    # a runner claims it, applies the replay, and dies before it records the outcome
    claimed = jobs.rows.claim(job.job_id, now=now(), token="died", lease_until=now() + 60, max_attempts=3)
    assert claimed is not None
    with acting_as(claimed.actor):
        first = jobs.handlers[REPLAY].run(claimed.params)
    assert first["applied"] and first["totals"]["difference"] > 0
    moved = balance(services) - before
    assert moved == -first["totals"]["difference"]

    now.advance(61)  # its lease ends: the next runner claims it again and runs it to its end
    done = jobs.run(job.job_id)
    assert done is not None and (done.status, done.attempts) == (SUCCEEDED, 2)
    assert done.result is not None and not done.result["applied"] and done.result["adjustments"] == []
    assert balance(services) - before == moved  # posted once

    events = services.ledger.events.get(services.ledger.get_account("acme").id)
    adjustments = [event for event in events if isinstance(event, Account.Adjusted)]
    assert [actor_of(event) for event in adjustments] == [ACTOR]  # one adjustment, naming who asked


def test_a_replay_job_checks_its_input_at_submission(services: Services) -> None:
    jobs = build_jobs(services)
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        jobs.submit(REPLAY, replay_params('{"models": {', None, None, None))
    with pytest.raises(AccountNotFound):
        jobs.submit(REPLAY, replay_params(prices(DOUBLED), None, None, "nobody"))
    with pytest.raises(InvalidRequest, match="no provider 'mystery'"):
        jobs.submit(REPLAY, replay_params(json.dumps({"models": {"mystery/m": DOUBLED}}), None, None, None))
    with pytest.raises(InvalidRequest, match="start must be before its end"):
        jobs.submit(REPLAY, replay_params(prices(DOUBLED), "2030-01-02", "2030-01-01", None))
    assert jobs.list_jobs() == []


def test_a_replay_job_that_finds_a_charged_model_unpriced_fails_with_that_error(services: Services) -> None:
    jobs = build_jobs(services)
    job = jobs.submit(REPLAY, replay_params(json.dumps({"models": {"openai/other": DOUBLED}}), None, None, None))
    done = jobs.run(job.job_id)
    assert done is not None and done.status == FAILED and done.error is not None
    assert done.error["code"] == "invalid_request" and done.error["param"] == "prices"
    assert f"no price for models charged in the window: {MODEL}" in done.error["message"]
