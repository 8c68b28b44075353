"""The uvicorn factory builds the app and then settles the garbage collector for serving:
what exists once the process is built is frozen out of every collection, and the young
generation's threshold is raised (adapters/gc_tuning.py says what that saved)."""

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.bootstrap import initialise
from adapters.gc_tuning import SERVING_THRESHOLDS
from adapters.http.asgi import create_app_from_env
from adapters.settings import Settings


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_serving_factory_freezes_what_it_built_and_raises_the_young_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_gc: None
) -> None:
    monkeypatch.setenv("TALLYHUB_DATA_DIR", str(tmp_path))
    initialise(Settings.from_env())
    gc.unfreeze()
    app = create_app_from_env()
    assert gc.get_threshold() == SERVING_THRESHOLDS
    assert gc.get_freeze_count() > 10_000  # the app, its services and the imported modules
    assert app.state.services.ledger.is_initialised()
    app.state.services.close()
