from application.billing import OpenedRequest, RequestBilling
from application.routing import Route


def first_route(billing: RequestBilling, opened: OpenedRequest) -> Route:
    """The route the gateway would try first for this request."""
    return next(billing.router.routes(opened.targets[0]))
