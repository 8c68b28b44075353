"""A plain aggregate with no meaning to the ledger, for tests of how ``Ledger.save`` stores
whatever it is given."""

from eventsourcing.domain import Aggregate, event


class Note(Aggregate):
    def __init__(self, text: str) -> None:
        self.text = text

    @event("Edited")
    def edit(self, text: str) -> None:
        self.text = text
