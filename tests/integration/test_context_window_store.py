"""Price books written before prices had a context window (the store of commit 6d40aed,
tests/fixtures/store_main_6d40aed/) load with today's code: every version's prices have no
window and keep their stored form; a price set today with one is stored with it, the others
carried into that version unchanged, and only that model (and an alias that routes to it
first) shows it on the model list."""

from pathlib import Path

from application.model_list import ModelList
from application.pricing_input import price_from_credits
from tests.integration.test_store_from_main import FACTS, open_copy


def test_old_price_books_load_without_a_window_and_a_new_version_adds_one_to_one_model(tmp_path: Path) -> None:
    services = open_copy(tmp_path)
    try:
        book = services.ledger.price_book()
        assert book.versions, "the fixture's store has price-book versions"
        for version in book.versions:
            for model, stored in version["prices"].items():
                price = book.effective(version["effective_at"]).price_for(model)
                assert "context_window" not in stored and price is not None and price.context_window is None
                assert price.to_dict() == stored  # read and written back, an old price is what was stored
        before = dict(book.latest.prices)
        listed_before = ModelList(services.ledger).visible(FACTS["acme_key"])
        assert listed_before and all("context_window" not in model.to_dict() for model in listed_before)
        model = listed_before[0].id
        services.prices.set_price(model, price_from_credits(input="1", output="2", context_window=64_000))
        after = services.ledger.price_book().latest.prices
        assert after[model]["context_window"] == 64_000
        assert {name: data for name, data in after.items() if name != model} == {
            name: data for name, data in before.items() if name != model
        }
        listed = {entry.id: entry.to_dict() for entry in ModelList(services.ledger).visible(FACTS["acme_key"])}
        assert listed[model]["context_window"] == 64_000
        routed_first = {alias for alias, targets in services.ledger.recent_aliases().items() if targets[0] == model}
        assert {name for name, entry in listed.items() if "context_window" in entry} == {model, *routed_first}
    finally:
        services.close()
