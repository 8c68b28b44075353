"""Price catalogs for ``tallyhub prices import`` and ``prices drift``: the ``genai-prices``
package's bundled data, or a LiteLLM-format price file (application/price_import.py
``PriceCatalog``)."""

from application.price_import import PriceCatalog

GENAI_PRICES = "genai-prices"


def open_catalog(name: str) -> PriceCatalog:
    """``genai-prices``, or the path of a LiteLLM-format price file."""
    if name == GENAI_PRICES:
        from adapters.catalogs.genai_prices import GenaiPricesCatalog  # loads the package's data: only when asked

        return GenaiPricesCatalog()
    from adapters.catalogs.litellm_file import LiteLLMFileCatalog

    return LiteLLMFileCatalog(name)
