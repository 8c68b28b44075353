"""``GET /metrics``: the Prometheus text of adapters/metrics.py.

Open when ``TALLYHUB_METRICS_TOKEN`` is unset (bind the server to a private network, or
set the token: the figures tell traffic, models and spend, though no account or key).
With the token set, ``Authorization: Bearer <token>`` is required; a wrong or missing one
is a 401 counted by the failed-authentication throttle like any other."""

import hmac

from fastapi import APIRouter, Request, Response

from adapters.http.services import services_of
from adapters.metrics import CONTENT_TYPE
from domain.errors import AuthenticationFailed

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """A thread of the pool runs it: the gauges read at scrape may query the store."""
    services = services_of(request)
    token = services.settings.metrics_token
    if token is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise AuthenticationFailed("GET /metrics needs 'Authorization: Bearer <TALLYHUB_METRICS_TOKEN>'")
    assert services.metrics is not None, "the services of a server have metrics"
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
