"""Console: model aliases, as ``tallyhub aliases …`` manages them: a name callers may use
as a model, served by its first ``PROVIDER/MODEL`` and failing over to the others in order.

Setting and removing are the CLI's commands (``Prices.set_alias`` / ``remove_alias``, which
validate as the CLI's do) run as the signed-in admin; removing asks for "I understand"
first. A name that already exists is replaced, as ``aliases set`` replaces it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from adapters.services import Services
from dashboard import ui
from dashboard.console import providers_outcome as outcome
from dashboard.console.actions import services
from domain.errors import InvalidRequest

CONFIRM = "I understand"


def models_of(text: str) -> list[str]:
    """The targets typed one per line (or separated by commas), in order."""
    return [model.strip() for line in text.splitlines() for model in line.split(",") if model.strip()]


def _set_alias() -> None:
    def prepare() -> outcome.Action:
        name = outcome.text("alias_set_name")
        models = models_of(outcome.text("alias_set_models"))

        def action(s: Services) -> str:
            s.prices.set_alias(name, models)
            return f"{name} → {' → '.join(models)}"

        return action

    outcome.run("alias_set", prepare)


def _remove_alias() -> None:
    def prepare() -> outcome.Action:
        name = str(outcome.field("alias_remove_name"))
        if not outcome.field("alias_remove_confirm"):
            raise InvalidRequest(f"Tick “{CONFIRM}” to remove the alias {name}: nothing was changed.")

        def action(s: Services) -> str:
            s.prices.remove_alias(name)
            return f"Alias {name} removed."

        return action

    outcome.run("alias_remove", prepare)
    st.session_state["alias_remove_confirm"] = False


ui.page_context()
st.title("Aliases")
aliases = services().prices.aliases()
if aliases:
    st.dataframe(
        pd.DataFrame(
            [
                {"alias": name, "serves": models[0], "fallbacks": " → ".join(models[1:]) or "—"}
                for name, models in sorted(aliases.items())
            ]
        ),
        hide_index=True,
        width="stretch",
        key="aliases_table",
    )
else:
    st.info("**No aliases yet.** Set one below (or with `tallyhub aliases set NAME PROVIDER/MODEL`).")

st.subheader("Set an alias")
with st.form("alias_set", clear_on_submit=True):
    st.text_input("Alias", key="alias_set_name", help="A name without '/' or spaces; an existing one is replaced")
    st.text_area(
        "Models, in order",
        key="alias_set_models",
        help="PROVIDER/MODEL, one per line: the first serves the alias, the others are fallbacks tried in order",
    )
    st.form_submit_button("Set alias", key="alias_set_submit", type="primary", on_click=_set_alias)
outcome.show("alias_set")

if aliases:
    st.subheader("Remove an alias")
    with st.form("alias_remove"):
        st.selectbox("Alias", sorted(aliases), key="alias_remove_name")
        st.checkbox(f"{CONFIRM}: callers using this name get model_not_found", key="alias_remove_confirm")
        st.form_submit_button("Remove alias", key="alias_remove_submit", on_click=_remove_alias)
outcome.show("alias_remove")
