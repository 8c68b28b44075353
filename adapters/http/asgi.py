"""Entry point for uvicorn (``factory=True``): builds the app from the environment in
each worker process."""

from fastapi import FastAPI

from adapters.bootstrap import build_services
from adapters.http.app import create_app
from adapters.settings import Settings


def create_app_from_env() -> FastAPI:
    return create_app(build_services(Settings.from_env()))
