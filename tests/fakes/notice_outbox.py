"""An in-memory ``NoticeOutbox`` (application/notices.py): keeps each notice once by its id,
as the real outbox must, and counts every publish (to show re-derivations were de-duplicated)."""

import threading
from collections.abc import Sequence

from application.notices import Notice


class FakeNoticeOutbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.notices: dict[str, Notice] = {}  # event_id -> the first notice published with it
        self.published = 0  # every notice handed over, duplicates included

    def publish(self, notices: Sequence[Notice]) -> None:
        with self._lock:
            for notice in notices:
                self.published += 1
                self.notices.setdefault(notice.event_id, notice)

    def of_type(self, notice_type: str) -> list[Notice]:
        with self._lock:
            return [n for n in self.notices.values() if n.type == notice_type]
