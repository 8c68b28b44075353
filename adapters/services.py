"""What the gateway's handlers and commands use, built by adapters/bootstrap.py."""

from dataclasses import dataclass, field
from typing import Any

from adapters.settings import Settings
from application.billing import RequestBilling
from application.health import CredentialHealth
from application.ledger import Ledger
from application.routing import Router


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    billing: RequestBilling
    router: Router
    health: CredentialHealth
    read_models: Any  # projections.ReadModels
    providers: dict[str, Any] = field(default_factory=dict)  # kind -> provider adapter, set by the lifespan
