"""Every output names an id in one form, the dashed UUID the API shows, wherever the
ledger keeps it as hex: replay reports and the applied replays' log, the adjustments a
replay posts, and ``id_text`` itself."""

from types import SimpleNamespace
from uuid import UUID

from adapters.cli.replay_commands import applied_json, replay_json
from adapters.presenters import id_text
from application.billing import Receipt
from application.ledger import Ledger
from application.replay import Replayer, ReplayPlan
from domain import ids
from domain.replay_log import adjustment_key
from tests.unit.test_replay import MODEL, ORIGINAL, OTHER, OTHER_PRICE, doubled, history, keys  # noqa: F401

DASHED = "93233d39-0a92-51b4-a40c-2faf7f5d8191"


def test_id_text_gives_the_dashed_form_of_any_id() -> None:
    assert id_text(UUID(DASHED)) == id_text(DASHED.replace("-", "")) == id_text(DASHED.upper()) == DASHED
    assert id_text(None) is None and id_text("") == ""


def test_a_replay_names_itself_and_its_accounts_by_dashed_ids(ledger: Ledger, history: list[Receipt]) -> None:
    plan = ReplayPlan({MODEL: doubled(ORIGINAL), OTHER: doubled(OTHER_PRICE)})
    report = Replayer(ledger).apply(plan)
    accounts = {str(ledger.get_account(name).id) for name in ("acme", "globex")}
    shown = replay_json(SimpleNamespace(ledger=ledger), report, dry_run=False)
    assert shown["replay_id"] == str(UUID(report.replay_id))
    assert {line["account_id"] for line in shown["lines"]} == accounts
    assert {a["account_id"] for a in shown["adjustments"]} == accounts
    [entry] = applied_json(Replayer(ledger).list_applied())
    assert entry["replay_id"] == shown["replay_id"] and set(entry["adjustments"]) == accounts
    assert entry["account_id"] is None
    [raw] = Replayer(ledger).list_applied()
    receipt = ledger.find(ids.receipt_id(ledger.get_account("acme").id, "replay", adjustment_key(raw)))
    assert receipt.terms["reason"].startswith(f"replay {shown['replay_id']} (#1)")  # the ledger row's reason
