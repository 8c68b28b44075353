"""The failed-auth throttle's rules: ``limit`` failures inside the window refuse the address
until the oldest of them is a window old; other addresses are untouched; memory is bounded."""

from application.auth_throttle import AuthThrottle


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_th_failure_inside_the_window_refuses_the_address_until_the_oldest_ages_out() -> None:
    ticks = Ticks()
    throttle = AuthThrottle(limit=3, window_seconds=60, clock=ticks)
    for at in (0, 10, 20):
        assert throttle.retry_after("a") == 0
        ticks.now = at
        throttle.failed("a")
    assert throttle.retry_after("a") == 40 and throttle.retry_after("b") == 0
    ticks.now = 59.5
    assert throttle.retry_after("a") == 1
    ticks.now = 60  # the failure at 0 is a window old: two left, under the limit
    assert throttle.retry_after("a") == 0
    throttle.failed("a")
    assert throttle.retry_after("a") == 10  # the failure at 10 is now the oldest of three


def test_failures_spread_wider_than_the_window_never_refuse() -> None:
    ticks = Ticks()
    throttle = AuthThrottle(limit=3, window_seconds=60, clock=ticks)
    for minute in range(10):
        ticks.now = minute * 30.0
        throttle.failed("a")
        assert throttle.retry_after("a") == 0
    ticks.now = 10_000
    assert throttle.retry_after("a") == 0 and "a" not in throttle._failures  # forgotten once clean


def test_at_most_max_addresses_are_remembered_least_recently_failing_first_forgotten() -> None:
    throttle = AuthThrottle(limit=2, window_seconds=60, max_addresses=3, clock=Ticks())
    for address in ("a", "b", "c"):
        throttle.failed(address)
    throttle.failed("a")  # a failed again: b is now the least recent
    throttle.failed("d")
    assert set(throttle._failures) == {"a", "c", "d"}
    assert throttle.retry_after("a") > 0


def test_a_limit_of_zero_turns_throttling_off() -> None:
    throttle = AuthThrottle(limit=0, clock=Ticks())
    for _ in range(100):
        throttle.failed("a")
    assert throttle.retry_after("a") == 0 and not throttle._failures
