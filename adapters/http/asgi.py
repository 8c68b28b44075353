"""Entry point for uvicorn (``factory=True``): builds the app from the environment in
each worker process, then settles the garbage collector for serving (adapters/gc_tuning.py)."""

from fastapi import FastAPI

from adapters.bootstrap import build_services
from adapters.gc_tuning import tune_for_serving
from adapters.http.app import create_app
from adapters.settings import Settings


def create_app_from_env() -> FastAPI:
    app = create_app(build_services(Settings.from_env()))
    tune_for_serving()
    return app
