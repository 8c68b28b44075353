"""Admin events record who acted: the CLI, an admin key, the portal; the gateway's own
work records no one. Checked on the stored events, as the audit read model sees them."""

import asyncio

import pytest

from adapters.bootstrap import in_memory_ledger
from application.accounts import Accounts
from application.acting import acting_as, actor_of, admin_actor
from domain.account import Account


@pytest.fixture
def ledger():
    ledger = in_memory_ledger()
    ledger.initialise()
    yield ledger
    ledger.close()


def stored_actors(ledger, originator_id):
    return [(type(event).__name__, actor_of(event)) for event in ledger.events.get(originator_id)]


def test_each_event_a_command_records_names_its_actor_and_none_otherwise(ledger):
    accounts = Accounts(ledger)
    with acting_as("cli"):
        account = accounts.create_account("acme", starter_credits=5)
    with acting_as("admin:0123456789ab"):
        accounts.grant_credits("acme", 7, reason="top-up")
    accounts.grant_credits("acme", 1, reason="the gateway's own")

    assert stored_actors(ledger, account.id) == [
        ("Created", "cli"),
        ("CreditGranted", "cli"),
        ("CreditGranted", "admin:0123456789ab"),
        ("CreditGranted", None),
    ]


def test_a_change_handed_to_the_account_writer_keeps_its_actor(ledger):
    accounts = Accounts(ledger)
    account = accounts.create_account("acme")
    ledger.start_group_commit()
    try:
        with acting_as("portal:key-1"):
            accounts.grant_credits("acme", 3, reason="via the writer's thread")

        async def from_the_event_loop():
            with acting_as("payments"):
                await ledger.change_account_async(account.id, lambda acc: acc.grant_credits(2, "async", None) or [])

        asyncio.run(from_the_event_loop())
    finally:
        ledger.stop_group_commit()
    assert stored_actors(ledger, account.id)[1:] == [("CreditGranted", "portal:key-1"), ("CreditGranted", "payments")]
    assert isinstance(ledger.get_account("acme"), Account)


def test_the_admin_actor_names_the_key_without_revealing_it():
    actor = admin_actor("tha_secret-admin-key")
    assert actor.startswith("admin:") and len(actor) == len("admin:") + 12
    assert "secret" not in actor and admin_actor("tha_other") != actor
