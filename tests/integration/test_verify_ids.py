"""``verify`` names the requests and replays it finds a problem with by the dashed ids the
API shows (the events keep hex), so a problem joins x-request-id and the admin API."""

import sqlite3
from uuid import UUID

from adapters.settings import DatabaseConfig
from application.ledger import Ledger
from application.verify import LedgerVerifier
from projections.read_models import ReadModels
from tests.integration.test_verify import database, ledger, read_models  # noqa: F401


def test_a_charge_that_differs_from_its_record_is_named_by_the_dashed_request_id(
    ledger: Ledger, read_models: ReadModels, database: DatabaseConfig
) -> None:
    with sqlite3.connect(database.sqlite_path) as conn:
        rowid, state = conn.execute(
            "SELECT rowid, state FROM stored_events WHERE topic LIKE '%Account.HoldSettled' ORDER BY rowid LIMIT 1"
        ).fetchone()
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE rowid = ?", (state.replace(b'"amount":', b'"amount":1', 1), rowid)
        )
        request_hex = state.split(b'"request_id":{"_type_":"uuid_hex","_data_":"')[1][:32].decode()
    problems = LedgerVerifier(ledger, read_models).verify().problems
    request = str(UUID(request_hex))
    assert any(problem.startswith(f"request {request}: charged 1") for problem in problems), problems
    assert not any(request_hex in problem for problem in problems)
