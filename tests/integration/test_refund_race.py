"""Two gateway processes refunding the same payment at the same moment: the refunds are
decided by the store, not by what each process read, so together they never exceed the
payment (the payment's receipt, saved with each refund's debit, is the point of conflict)."""

import pytest

from application.accounts import Accounts
from domain.account import MovementReceipt
from domain.errors import RefundExceedsPayment

NANO = 10**9


def test_a_refund_checked_against_a_payment_another_process_refunded_meanwhile_is_refused(
    two_processes, monkeypatch
) -> None:
    first, second = two_processes
    Accounts(first).create_account("acme")
    Accounts(first).record_payment("acme", "pay_1", 5 * NANO)
    find = first.find
    interfered = []

    def another_process_refunds_after_this_one_read_the_payment(aggregate_id):
        found = find(aggregate_id)
        if isinstance(found, MovementReceipt) and found.kind == "payment" and not interfered:
            interfered.append(True)
            Accounts(second).reverse_payment("acme", "re_2", 3 * NANO, "pay_1")  # saved before the first process saves
        return found

    monkeypatch.setattr(first, "find", another_process_refunds_after_this_one_read_the_payment)
    with pytest.raises(RefundExceedsPayment):
        Accounts(first).reverse_payment("acme", "re_1", 3 * NANO, "pay_1")
    assert interfered
    assert first.get_account("acme").balance == 2 * NANO
    assert find(MovementReceipt.create_id(first.get_account("acme").id, "payment", "pay_1")).refunded == 3 * NANO
