"""prometheus-client's multiprocess directory of one ``serve``. Kept apart from
adapters/metrics.py on purpose: prometheus-client decides at import whether its values live
in this process's memory or in the files of ``PROMETHEUS_MULTIPROC_DIR``, so ``serve`` must
set that variable (``prepare_multiproc_dir``) before anything imports prometheus-client;
this module does not import it. With ``--workers 1`` the app runs in the process that ran
``serve`` and needs no files: ``single_process_metrics`` keeps its figures in memory."""

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir(data_dir: Path, pid: int | None = None) -> Path:
    """The private directory a ``serve`` process (``pid``) gives prometheus-client's
    multiprocess mode: one per ``serve``, so two of them on one data dir never mix or
    delete each other's figures (each is scraped on its own port)."""
    return data_dir / "prometheus" / str(os.getpid() if pid is None else pid)


def prepare_multiproc_dir(data_dir: Path) -> Path:
    """This ``serve``'s multiprocess directory, empty (a previous run's figures must not be
    summed in), and ``PROMETHEUS_MULTIPROC_DIR`` set to it for the workers ``serve`` starts,
    before any import of prometheus_client in this process tree reads it. The directories
    of ``serve`` processes no longer running are deleted."""
    from adapters.files import private_dir

    path = multiproc_dir(data_dir)
    private_dir(path.parent)
    _remove_stale(path)
    private_dir(path)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def single_process_metrics(data_dir: Path) -> None:
    """``serve --workers 1``: the app runs in this process, so its figures stay in memory
    (about 3 µs a request against 8–13 µs in multiprocess files), and no inherited
    ``PROMETHEUS_MULTIPROC_DIR`` may send them to files; the directories of ``serve``
    processes no longer running are deleted."""
    os.environ.pop(MULTIPROC_ENV, None)
    path = multiproc_dir(data_dir)
    if path.parent.is_dir():
        _remove_stale(path)


def _remove_stale(path: Path) -> None:
    """Empty this serve's directory (a previous run's figures must not be summed in) and
    delete those of serve processes no longer running."""
    for other in path.parent.iterdir():
        if other.name.isdigit() and (other == path or not _running(int(other.name))):
            shutil.rmtree(other, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
