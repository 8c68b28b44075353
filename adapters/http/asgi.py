"""Entry point for uvicorn (``factory=True``): builds the app from the environment in
each worker process, sends its ``tallyhub.*`` log lines to stderr (adapters/logs.py), then
settles the garbage collector for serving (adapters/gc_tuning.py)."""

from fastapi import FastAPI

from adapters.bootstrap import build_services
from adapters.gc_tuning import tune_for_serving
from adapters.http.app import create_app
from adapters.logs import log_tallyhub_lines
from adapters.settings import Settings


def create_app_from_env() -> FastAPI:
    settings = Settings.from_env()
    log_tallyhub_lines(settings.log_level)
    app = create_app(build_services(settings))
    tune_for_serving()
    return app
