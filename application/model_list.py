"""The models a caller may use (``GET /v1/models`` and ``GET /v1/models/{id}``): the priced
models of enabled providers in the price-book version in effect, and the aliases that reach
one of them, each with the caller's prices (credits per 1M tokens, as decimal text), the
output limit the price sets and the context window when the price knows it. In track mode
an unpriced model is usable but not listed.

An alias is priced as its first listed target that is: the model it routes to first."""

from dataclasses import dataclass

from application.ledger import Ledger
from domain.errors import ModelNotFound
from domain.money import format_credits
from domain.pricing import ModelPrice


@dataclass(frozen=True, slots=True)
class ListedModel:
    id: str
    owned_by: str  # the provider's name, or "alias"
    price: ModelPrice

    def to_dict(self) -> dict[str, object]:
        """OpenAI's model object, with Tallyhub's additions: ``context_window`` (only when
        the price sets it), ``max_output_tokens`` and ``pricing`` (the rates a request is
        charged at, before any tier)."""
        price = self.price
        pricing = {"unit": "credits per 1M tokens", "input": format_credits(price.input)}
        pricing["cached_input"] = format_credits(price.cached_input_rate)
        pricing["output"] = format_credits(price.output)
        if price.per_request:
            pricing["per_request"] = format_credits(price.per_request)
        if price.per_image:
            pricing["per_image"] = format_credits(price.per_image)
        listed: dict[str, object] = {"id": self.id, "object": "model", "created": 0, "owned_by": self.owned_by}
        if price.context_window is not None:
            listed["context_window"] = price.context_window
        listed["max_output_tokens"] = price.max_output_tokens
        listed["pricing"] = pricing
        return listed


class ModelList:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def visible(self, api_key: str) -> list[ListedModel]:
        """The models the key may use, priced models first (sorted), then aliases (sorted)."""
        key = self.ledger.authenticate(api_key)
        book = self.ledger.recent_price_book().effective(self.ledger.clock.now())
        enabled: dict[str, bool] = {}
        listed: dict[str, ListedModel] = {}
        for model in sorted(book.prices):
            provider_name = model.partition("/")[0]
            if provider_name not in enabled:
                provider = self.ledger.recent_provider(provider_name)
                enabled[provider_name] = provider is not None and provider.enabled
            price = book.price_for(model)
            if enabled[provider_name] and price is not None:
                listed[model] = ListedModel(model, provider_name, price)
        aliases = []
        for alias, targets in sorted(self.ledger.recent_aliases().items()):
            first = next((listed[target] for target in targets if target in listed), None)
            if first is not None:
                aliases.append(ListedModel(alias, "alias", first.price))
        return [model for model in [*listed.values(), *aliases] if key.allows(model.id)]

    def one(self, api_key: str, model_id: str) -> ListedModel:
        """One model the key may use; ModelNotFound (404) for any other, named or not."""
        for model in self.visible(api_key):
            if model.id == model_id:
                return model
        raise ModelNotFound(f"the model {model_id!r} does not exist or is not available to this key")
