"""The ledger's repository: eventsourcing's, with a cached aggregate copied under the same
lock that fast-forwards it.

eventsourcing 9.5's ``Repository.get`` keeps one object per aggregate in its cache, brings it
up to date in place (the "fast-forward", under a lock of that aggregate) and then hands out a
deep copy, taken after the lock is released. Two threads reading one account at once (two
payment webhooks, or a payment beside a settlement's re-run) could thus copy the cached object
while the other one fast-forwarded it: the copy failed (``RuntimeError: dictionary changed
size during iteration``, a 500, found by the 30-second soak) or, worse, came out torn — one
version's number with a later event's holds or balance in it.

Invariant kept here: a copy handed out is taken while no fast-forward of that aggregate runs,
so it is the cached object as of one version. Everything else (the cache, its size, the
fast-forward itself, reads of a given version) is eventsourcing's, unchanged.
"""

from copy import deepcopy
from typing import Any
from uuid import UUID

from eventsourcing.application import ProjectorFunction, Repository, project_aggregate


class CopiedUnderLockRepository(Repository[UUID]):
    def get(
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: ProjectorFunction[Any, Any] = project_aggregate,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        aggregate = super().get(
            aggregate_id,
            version=version,
            projector_func=projector_func,
            fastforward_skipping=fastforward_skipping,
            deepcopy_from_cache=False,  # copied below, under the lock
        )
        if not (self.cache and version is None and deepcopy_from_cache and self.deepcopy_from_cache):
            return aggregate  # not the cached object (or the caller asked for it as it is)
        # eventsourcing's own per-aggregate lock, the one its fast-forward holds (9.5.*, pinned)
        lock = self._use_fastforward_lock(aggregate_id)
        try:
            with lock:
                return deepcopy(aggregate)
        finally:
            self._disuse_fastforward_lock(aggregate_id)
