"""Console: publishing price-book versions, as ``tallyhub prices set | publish | import`` do.

A version is proposed from one model's form, an uploaded price file (the format ``prices
publish FILE`` takes: application/pricing_input.py) or the genai-prices catalog with a
margin (the import's own dry run: application/price_import.py). Each proposal is first
reviewed: its diff against the latest version (dashboard/console/prices_diff.py) is shown,
and nothing is published until "Publish" is pressed. Publishing is the CLI's command
(``Prices.set_price`` / ``publish_prices``) run as the signed-in admin, and only while the
latest version is still the one the diff was made against. Rates are exact decimal text
parsed by the CLI's helpers into integer nanocredits, never floats.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
import streamlit as st

from adapters.catalogs import GENAI_PRICES, open_catalog
from adapters.cli.price_import_commands import run_import
from adapters.presenters import price_json
from adapters.services import Services
from adapters.time_window import optional_instant
from application.ledger import validate_model_id
from application.price_import import Markup
from application.pricing_input import parse_price_file, price_from_entry
from dashboard import timezones, ui
from dashboard.console import prices_diff
from dashboard.console import providers_outcome as outcome
from dashboard.console.actions import services
from domain.errors import InvalidRequest
from domain.pricing import ModelPrice

PENDING = "prices_pending"
RATE_LABELS = {
    "input": "Input",
    "output": "Output",
    "cached_input": "Cached input",
    "reasoning": "Reasoning",
    "cache_write": "Cache write (5 min)",
    "cache_write_1h": "Cache write (1 h)",
    "per_image": "Per image",
    "per_request": "Per request",
    "per_web_search": "Per web search",
}
WHOLE_LABELS = {"max_output_tokens": "Max output tokens", "context_window": "Context window"}
COST_LABELS = {"input": "Input", "output": "Output", "cached_input": "Cached input"}
EVERY_PROVIDER = "(every provider)"


def _latest(s: Services) -> tuple[int, dict[str, ModelPrice]]:
    latest = s.ledger.price_book().latest
    return latest.number, {model: ModelPrice.from_dict(data) for model, data in latest.prices.items()}


def _propose(section: str, pending: prices_diff.Proposal) -> None:
    if not pending.diff.has_changes:
        outcome.refuse(section, f"Nothing changes against version {pending.base_version}: nothing to publish.")
        return
    st.session_state[PENDING] = pending


# --- reviewing: the callbacks that build a proposal (nothing is recorded) ------------------


def _form_entry() -> dict[str, Any]:
    """The form as one price-file entry: the rates given (text), the whole numbers, the cost."""
    entry: dict[str, Any] = {name: outcome.text(f"price_form_{name}") for name in RATE_LABELS}
    entry = {name: value for name, value in entry.items() if value}
    for name in WHOLE_LABELS:
        given = outcome.text(f"price_form_{name}")
        if given:
            if not (given.isascii() and given.isdigit()):
                raise InvalidRequest(f"{name} must be a whole number, got {given!r}", param=name)
            entry[name] = int(given)
    cost = {name: outcome.text(f"price_form_cost_{name}") for name in COST_LABELS}
    cost = {name: value for name, value in cost.items() if value}
    if cost:
        entry["provider_cost"] = cost
    return entry


def _review_form() -> None:
    def review() -> None:
        model = outcome.text("price_form_model")
        validate_model_id(model)
        price = price_from_entry(_form_entry())
        effective_at = optional_instant(outcome.text("price_form_effective_at"), "effective_at")
        version, current = _latest(services())
        proposed = {**current, model: price}
        _propose(
            "price_form",
            prices_diff.Proposal(
                "form",
                f"{model} from the form",
                version,
                proposed,
                effective_at,
                prices_diff.diff_versions(version, current, proposed),
                model=model,
            ),
        )

    outcome.attempt("price_form", review)


def _review_file() -> None:
    def review() -> None:
        uploaded = st.session_state.get("price_file")
        if uploaded is None:
            raise InvalidRequest("Choose a price file first.")
        try:
            text = uploaded.getvalue().decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"the price file {uploaded.name} is not UTF-8 text") from None
        prices, effective_at = parse_price_file(text)
        s = services()
        s.ledger.check_models_known(prices)
        version, current = _latest(s)
        diff = prices_diff.diff_versions(version, current, prices)
        _propose(
            "price_file",
            prices_diff.Proposal("file", f"the price file {uploaded.name}", version, prices, effective_at, diff),
        )

    outcome.attempt("price_file", review)


def _decimal(key: str, what: str) -> Decimal:
    given = outcome.text(key)
    try:
        value = Decimal(given)
    except InvalidOperation:
        raise InvalidRequest(f"expected {what}, got {given!r}") from None
    if not value.is_finite():
        raise InvalidRequest(f"expected {what}, got {given!r}")
    return value


def _review_import() -> None:
    def review() -> None:
        markup = Markup(_decimal("price_import_margin", "a percentage"), _decimal("price_import_usd", "a number"))
        provider = outcome.field("price_import_provider")
        models = [m.strip() for m in outcome.text("price_import_models").split(",") if m.strip()]
        effective_at = optional_instant(outcome.text("price_import_effective_at"), "effective_at")
        plan = run_import(
            services(),
            open_catalog(GENAI_PRICES),
            markup,
            provider=None if provider in (None, EVERY_PROVIDER) else str(provider),
            models=models or None,
            effective_at=effective_at,
            dry_run=True,
        )
        notes = []
        if plan.not_in_catalog:
            notes.append(f"Not in the catalog, kept as they are: {', '.join(plan.not_in_catalog)}")
        notes += [f"{model}: the catalog's {', '.join(keys)} not imported" for model, keys in plan.skipped_keys.items()]
        what = f"{plan.catalog} {plan.catalog_version}, margin {markup.margin_percent}%, credits per USD "
        what += str(markup.credits_per_usd)
        diff = prices_diff.diff_of_import(plan)
        _propose(
            "price_import",
            prices_diff.Proposal("import", what, plan.base_version, plan.prices, effective_at, diff, notes=notes),
        )

    outcome.attempt("price_import", review)


# --- publishing: the command, once reviewed --------------------------------------------------


def _publish() -> None:
    pending: prices_diff.Proposal | None = st.session_state.pop(PENDING, None)
    if pending is None:
        return
    latest, _ = _latest(services())
    if latest != pending.base_version:
        outcome.refuse(
            "price_publish",
            f"The price book changed since this review (it is now at version {latest}): review again. "
            "Nothing was published.",
        )
        return

    def prepare() -> outcome.Action:
        def action(s: Services) -> str:
            if pending.origin == "form" and pending.effective_at is None and pending.model is not None:
                version = s.prices.set_price(pending.model, pending.prices[pending.model])
            else:
                version = s.prices.publish_prices(pending.prices, pending.effective_at)
            when = timezones.text(pending.effective_at) if pending.effective_at else "now"
            return f"Published price-book version {version} ({len(pending.prices)} models), effective {when}."

        return action

    outcome.run("price_publish", prepare)


def _cancel() -> None:
    if st.session_state.pop(PENDING, None) is not None:
        outcome.succeed("price_publish", "Nothing was published.")


# --- the page ----------------------------------------------------------------------------------


def _prices_frame(prices: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for model, data in sorted(prices.items()):
        shown = price_json(data)
        cost = shown.get("provider_cost") or {}
        rows.append(
            {
                "model": model,
                **{name: shown.get(name) for name in ("input", "cached_input", "output", "reasoning", "per_image")},
                "cost input": cost.get("input"),
                "cost output": cost.get("output"),
                "source": shown.get("source"),
            }
        )
    return pd.DataFrame(rows)


def _current_book() -> list[str]:
    book = services().ledger.price_book()
    latest = book.latest
    in_effect = book.effective(services().ledger.clock.now())
    if not latest.number:
        st.info("**No price-book version yet.** Publish the first one below.")
        return []
    line = f"Latest version **{latest.number}**, effective {timezones.text(latest.effective_at)}"
    if in_effect.number != latest.number:
        line += f"; version {in_effect.number} is in effect until then"
    st.markdown(line + ". Rates are credits per 1M tokens (per image / request / web search for the fees).")
    st.dataframe(_prices_frame(latest.prices), hide_index=True, width="stretch", key="prices_table")
    return sorted(latest.prices)


def _form_tab() -> None:
    with st.form("price_form"):
        st.text_input("Model", key="price_form_model", placeholder="openai/gpt-4o-mini")
        columns = st.columns(3)
        for index, (name, title) in enumerate(RATE_LABELS.items()):
            columns[index % 3].text_input(title, key=f"price_form_{name}", placeholder="required" if index < 2 else "")
        left, right = st.columns(2)
        for column, (name, title) in zip((left, right), WHOLE_LABELS.items(), strict=True):
            column.text_input(title, key=f"price_form_{name}")
        st.caption("What the provider charges you (optional; input and output together), for margins:")
        cost_columns = st.columns(3)
        for column, (name, title) in zip(cost_columns, COST_LABELS.items(), strict=True):
            column.text_input(f"Cost: {title.lower()}", key=f"price_form_cost_{name}")
        st.text_input(
            "Effective at", key="price_form_effective_at", placeholder="now; or ISO 8601, UTC when no zone is given"
        )
        st.form_submit_button("Review", key="price_form_review", type="primary", on_click=_review_form)
    outcome.show("price_form")


def _file_tab() -> None:
    st.caption("A JSON price file as `tallyhub prices publish FILE` takes (docs: application/pricing_input.py).")
    st.file_uploader("Price file", type=["json"], key="price_file")
    st.button("Review file", key="price_file_review", type="primary", on_click=_review_file)
    outcome.show("price_file")


def _import_tab(providers: list[str]) -> None:
    with st.form("price_import"):
        left, right = st.columns(2)
        left.text_input("Margin (%)", value="0", key="price_import_margin")
        right.text_input("Credits per US dollar", value="1", key="price_import_usd")
        left.selectbox("Provider", [EVERY_PROVIDER, *providers], key="price_import_provider")
        right.text_input("Models", key="price_import_models", placeholder="default: priced or asked for; or M1,M2")
        st.text_input("Effective at", key="price_import_effective_at", placeholder="now; or ISO 8601")
        st.form_submit_button("Review import", key="price_import_review", type="primary", on_click=_review_import)
    outcome.show("price_import")


def _review(pending: prices_diff.Proposal) -> None:
    st.subheader("Review before publishing")
    when = timezones.text(pending.effective_at) if pending.effective_at else "now"
    st.markdown(f"From {pending.what}, effective {when}, {pending.diff.summary()}.")
    st.dataframe(
        pd.DataFrame(pending.diff.rows(), columns=prices_diff.COLUMNS),
        hide_index=True,
        width="stretch",
        key="price_diff_table",
    )
    for note in pending.notes:
        st.caption(note)
    left, right = st.columns(2)
    with left:
        st.button("Publish", key="price_publish", type="primary", on_click=_publish)
    with right:
        st.button("Cancel", key="price_cancel", on_click=_cancel)


ui.page_context()
st.title("Prices")
_current_book()
outcome.show("price_publish")
reviewed = st.session_state.get(PENDING)
if isinstance(reviewed, prices_diff.Proposal):
    _review(reviewed)
one, whole, catalog = st.tabs(["One model", "Price file", "Import from genai-prices"])
with one:
    _form_tab()
with whole:
    _file_tab()
with catalog:
    _import_tab([p.name for p in services().ledger.list_providers()])
