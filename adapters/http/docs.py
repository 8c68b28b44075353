"""``GET /docs``: the Swagger UI page of ``/openapi.json`` (the whole API, the hot routes'
request and response schemas included: adapters/http/schemas.py).

FastAPI's own page loads Swagger UI's script and style from a CDN, which an offline
deployment may not reach: here they are served by the gateway itself under
``/docs/assets/``, from the files the pinned ``fastapi-offline`` package ships (Swagger UI 5,
which reads OpenAPI 3.1). Nothing of the page needs a key; ``/openapi.json`` never did.
"""

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"


def install_docs(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        )
