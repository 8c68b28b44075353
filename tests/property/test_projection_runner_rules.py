"""Any interleaving of several runners on one read-model store — deferring and settling
passes, a runner restarted between passes (its notes lost), a connection lost before a
commit, a rebuild, and another runner's whole pass between any two transactions — applies
every event to each projection exactly once, in order, with the position committed
alongside; a position only goes back by a rebuild; after a completed pass no
projection has an event it follows left, nor a batch or more of notifications behind;
and a settling pass brings every ``lag`` to 0 (projections/runner.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.projections.test_runner_deferred import Recording, Setup

RUNNERS = 3
STEPS = st.lists(
    st.one_of(
        st.sampled_from(["grant", "record", "open"]),
        st.tuples(st.sampled_from(["pass", "settle", "restart", "crash", "rebuild"]), st.integers(0, RUNNERS - 1)),
    ),
    max_size=40,
)


class World:
    def __init__(self, batch_size: int, interleave: st.DataObject) -> None:
        self.setup = Setup(batch_size=batch_size)
        self.runners = [self.setup.runner() for _ in range(RUNNERS)]
        self.projections = [self.setup.accounts, self.setup.requests]
        self.seen = {p.name: 0 for p in self.projections}
        self.data = interleave
        self.nested = False
        self.setup.store.between = self.between

    def between(self) -> None:
        """After any transaction ends: maybe another runner's whole pass, deferring or not."""
        if self.nested or not self.data.draw(st.booleans(), label="interleave"):
            return
        self.nested = True
        try:
            other = self.data.draw(st.integers(0, RUNNERS - 1), label="other runner")
            self.runners[other].catch_up(defer=self.data.draw(st.booleans(), label="other defers"))
        finally:
            self.nested = False
        self.check()

    def check(self) -> None:
        """Exactly once and in order, with the position: the applied events are the
        followed ones up to the committed position; positions only grow."""
        for projection in self.projections:
            position = self.setup.position(projection.name)
            assert projection.applied == self.setup.followed(projection, position), projection.name
            assert position >= self.seen[projection.name], f"{projection.name} went back"
            self.seen[projection.name] = position

    def completed(self, *projections: Recording) -> None:
        head = self.setup.head()
        for projection in projections or self.projections:
            position = self.setup.position(projection.name)
            assert self.setup.followed(projection) == self.setup.followed(projection, position)
            assert head - position < self.setup.batch_size

    def rebuilt(self, projection: Recording) -> None:
        self.seen[projection.name] = 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, batch_size=st.integers(1, 6), interleave=st.data())
def test_every_event_is_applied_once_whatever_runners_interleave(
    steps: list[str | tuple[str, int]], batch_size: int, interleave: st.DataObject
) -> None:
    world = World(batch_size, interleave)
    setup = world.setup
    for step in steps:
        if isinstance(step, str):
            if step == "grant":
                setup.grant()
            elif step == "record":
                setup.record()
            else:
                setup.ledger.open_account(f"bob-{setup.head()}")  # its id is its name's
        else:
            action, which = step
            runner = world.runners[which]
            if action == "restart":
                world.runners[which] = setup.runner()
            elif action == "rebuild":
                projection = world.projections[which % len(world.projections)]
                world.rebuilt(projection)
                runner.rebuild(projection.name)
                world.completed(projection)
            elif action == "crash":
                setup.store.crash_next = True
                try:
                    runner.catch_up(defer=True)
                except OSError:
                    pass  # the poller logs it and tries again
                setup.store.crash_next = False
            else:
                runner.catch_up(defer=action == "pass")
                world.completed()
        world.check()

    world.runners[0].catch_up()
    world.check()
    assert all(s.lag == 0 for s in world.runners[0].status())
    for projection in world.projections:
        assert projection.applied == setup.followed(projection)
