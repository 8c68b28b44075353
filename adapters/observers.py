"""Several ``RequestObserver``s as one (the metrics and the access log, adapters/bootstrap.py).

Each is told in turn; one that fails is counted in ``errors`` and logged once, and the
others are told all the same. Billing guards the whole call too (application/billing.py)."""

import logging
from collections.abc import Sequence
from uuid import UUID

from application.ports import RequestObserver
from domain.request_record import RequestDetails

log = logging.getLogger("tallyhub.observers")


class FanOutObserver:
    def __init__(self, observers: Sequence[RequestObserver]) -> None:
        self.observers = tuple(observers)
        self.errors = 0

    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        for observer in self.observers:
            try:
                observer.recorded(request_id, details, failed_attempts)
            except Exception:
                self.errors += 1
                if self.errors == 1:
                    log.exception("%s failed on a request (counted; the others are told)", type(observer).__name__)
