"""The uvicorn factory shortens the interpreter's switch interval for serving: a group
commit's writer thread, back from a call into SQLite, waits at most that long for the event
loop to let go of the interpreter lock (adapters/gc_tuning.py says what that saved)."""

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.bootstrap import initialise
from adapters.gc_tuning import SERVING_SWITCH_INTERVAL, tune_for_serving
from adapters.http.asgi import create_app_from_env
from adapters.settings import Settings


@pytest.fixture
def restored_interpreter() -> Iterator[None]:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


def test_the_serving_factory_lets_a_waiting_thread_have_the_interpreter_lock_within_half_a_millisecond(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_interpreter: None
) -> None:
    monkeypatch.setenv("TALLYHUB_DATA_DIR", str(tmp_path))
    initialise(Settings.from_env())
    sys.setswitchinterval(0.005)  # CPython's default
    app = create_app_from_env()
    assert sys.getswitchinterval() == pytest.approx(SERVING_SWITCH_INTERVAL) == pytest.approx(0.0005)
    app.state.services.close()


def test_the_worker_gets_the_same_switch_interval(restored_interpreter: None) -> None:
    sys.setswitchinterval(0.005)
    tune_for_serving()  # what `tallyhub worker` calls once its services are built
    assert sys.getswitchinterval() == pytest.approx(SERVING_SWITCH_INTERVAL)
