"""Console: providers and their credentials, as ``tallyhub providers …`` manages them.

Every action is the CLI's application command (``ProviderRegistry``) run through
``dashboard.console.actions.act`` as the signed-in admin, from its submit button's callback
(``dashboard.console.providers_outcome``). A secret is typed into a password field, read
once by that callback, blanked before the command runs, and never shown: the page lists
credentials by id and the hint of their last 4 characters. Disabling or deleting asks for
an explicit "I understand" first; changing a weight does not (nothing is lost).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from adapters.providers.config import check_provider_config
from adapters.services import Services
from application.api_keys import MAX_GRACE
from dashboard import timezones, ui
from dashboard.console import providers_outcome as outcome
from dashboard.console.actions import services
from domain.errors import InvalidRequest
from domain.provider import (
    KINDS_WITHOUT_SECRET,
    MAX_CREDENTIAL_WEIGHT,
    PROVIDER_KINDS,
    Credential,
    Provider,
    UpstreamPolicy,
)

POLICY_FIELDS = {
    "timeout_connect": "Connect timeout (s)",
    "timeout_first_byte": "First-byte timeout (s)",
    "timeout_total": "Total timeout (s)",
    "retries": "Retries",
    "retry_base_ms": "Retry backoff base (ms)",
}
CONFIRM = "I understand"


def _weight(key: str, *, allow_zero: bool = False) -> int:
    value = outcome.field(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidRequest("a credential weight is a whole number", param="weight")
    if int(value) < (0 if allow_zero else 1):
        raise InvalidRequest("a credential weight must be positive", param="weight")
    return int(value)


# --- the callbacks: parse the widgets, blank any secret, then the command ---------------


def _add_provider() -> None:
    def prepare() -> outcome.Action:
        secret = outcome.take_secret("provider_add_secret")
        name = outcome.text("provider_add_name")
        kind = str(outcome.field("provider_add_kind"))
        base_url = outcome.text("provider_add_base_url") or None
        region = outcome.text("provider_add_region") or None
        check_provider_config(kind, base_url, region)
        weight = _weight("provider_add_weight")

        def action(s: Services) -> str:
            provider = s.provider_registry.register_provider(
                name, kind, base_url=base_url, region=region, secret=secret or None, weight=weight
            )
            return f"Provider {provider.name} ({provider.kind}) added with {len(provider.credentials)} credential(s)."

        outcome.blank(["provider_add_name", "provider_add_base_url", "provider_add_region"])
        return action

    outcome.run("provider_add", prepare)


def _add_credential(name: str) -> None:
    def prepare() -> outcome.Action:
        secret = outcome.take_secret("credential_add_secret")
        weight = _weight("credential_add_weight")

        def action(s: Services) -> str:
            provider = s.provider_registry.add_credential(name, secret, weight)
            return f"Credential {provider.credentials[-1].credential_id} added to {name}."

        return action

    outcome.run("credential_add", prepare)


def _rotate_credential(name: str) -> None:
    def prepare() -> outcome.Action:
        secret = outcome.take_secret("credential_rotate_secret")
        credential_id = outcome.field("credential_rotate_id")
        grace = outcome.field("credential_rotate_grace")
        if not isinstance(grace, int) or isinstance(grace, bool):
            raise InvalidRequest("a grace period is a whole number of seconds", param="grace_seconds")
        weight = _weight("credential_rotate_weight", allow_zero=True) or None

        def action(s: Services) -> str:
            rotation = s.provider_registry.rotate_credential(
                name, secret, credential_id=credential_id, grace=timedelta(seconds=grace), weight=weight
            )
            until = (
                f"until {timezones.text(rotation.retires_at)}" if rotation.retires_at else "no longer (disabled now)"
            )
            return (
                f"Credential {rotation.new_credential_id} replaces {rotation.old_credential_id} of {name}; "
                f"the old one is used {until}."
            )

        return action

    outcome.run("credential_rotate", prepare)


def _set_weight(name: str) -> None:
    def prepare() -> outcome.Action:
        credential_id = str(outcome.field("credential_weight_id"))
        weight = _weight("credential_weight_value")

        def action(s: Services) -> str:
            s.provider_registry.set_credential_weight(name, credential_id, weight)
            return f"Credential {credential_id} of {name} now has weight {weight}."

        return action

    outcome.run("credential_weight", prepare)


def _credential_command(name: str, command: str) -> None:
    def prepare() -> outcome.Action:
        credential_id = str(outcome.field("credential_manage_id"))
        confirmed = bool(outcome.field("credential_manage_confirm"))
        if command != "enable" and not confirmed:
            raise InvalidRequest(f"Tick “{CONFIRM}” to {command} credential {credential_id}: nothing was changed.")

        def action(s: Services) -> str:
            registry = s.provider_registry
            if command == "enable":
                registry.enable_credential(name, credential_id)
            elif command == "disable":
                registry.disable_credential(name, credential_id, reason="disabled by the operator")
            else:
                registry.delete_credential(name, credential_id)
            return f"Credential {credential_id} of {name} {command}d."

        return action

    outcome.run("credential_manage", prepare)
    st.session_state["credential_manage_confirm"] = False


def _provider_command(name: str, command: str) -> None:
    def prepare() -> outcome.Action:
        if command == "disable" and not outcome.field("provider_state_confirm"):
            raise InvalidRequest(f"Tick “{CONFIRM}” to disable provider {name}: nothing was changed.")

        def action(s: Services) -> str:
            if command == "disable":
                s.provider_registry.disable_provider(name)
            else:
                s.provider_registry.enable_provider(name)
            return f"Provider {name} {command}d."

        return action

    outcome.run("provider_state", prepare)
    st.session_state["provider_state_confirm"] = False


def _set_policy(name: str) -> None:
    def prepare() -> outcome.Action:
        changes = _policy_changes()
        if not changes:
            raise InvalidRequest("Give at least one value to change (or `default` to put one back).")

        def action(s: Services) -> str:
            s.provider_registry.set_policy(name, **changes)
            return f"{name}: " + ", ".join(f"{POLICY_FIELDS[k].lower()} {_shown(v)}" for k, v in changes.items()) + "."

        outcome.blank(f"policy_{field}" for field in POLICY_FIELDS)
        return action

    outcome.run("policy", prepare)


def _policy_changes() -> dict[str, Any]:
    """The fields given (as ``providers update``: empty keeps a value, ``default`` resets it)."""
    defaults = UpstreamPolicy().to_dict()
    changes: dict[str, Any] = {}
    for name in POLICY_FIELDS:
        given = outcome.text(f"policy_{name}")
        if not given:
            continue
        if given == "default":
            changes[name] = defaults[name]
        elif name.startswith("timeout_"):
            try:
                changes[name] = float(given)
            except ValueError:
                raise InvalidRequest(f"{name} must be a number of seconds or 'default', got {given!r}") from None
        elif given.isascii() and given.isdigit():
            changes[name] = int(given)
        else:
            raise InvalidRequest(f"{name} must be a whole number or 'default', got {given!r}", param=name)
    UpstreamPolicy(**{**defaults, **changes})  # refused here, with the domain's message, before anything runs
    return changes


# --- the page -----------------------------------------------------------------------------


def _shown(value: Any) -> str:
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _status(credential: Credential) -> str:
    if credential.replaced_by and credential.enabled:
        return f"retiring at {timezones.text(credential.retires_at)} (replaced by {credential.replaced_by})"
    if not credential.enabled:
        how = " (automatically)" if credential.disabled_automatically else ""
        return f"disabled{how}: {credential.disabled_reason or '—'}"
    return "enabled"


def _providers_frame(providers: list[Provider]) -> pd.DataFrame:
    rows = [
        {
            "provider": p.name,
            "kind": p.kind,
            "status": "enabled" if p.enabled else "disabled",
            "base URL": p.base_url or "(default)",
            "region": p.region or "",
            "credentials": ", ".join(c.hint for c in p.credentials) or "—",
            **{label: _shown(getattr(p.policy, name)) for name, label in POLICY_FIELDS.items()},
        }
        for p in providers
    ]
    return pd.DataFrame(rows)


def _credentials_frame(providers: list[Provider]) -> pd.DataFrame:
    rows = [
        {
            "provider": p.name,
            "credential": c.credential_id,
            "secret": c.hint,
            "weight": c.weight,
            "status": _status(c),
        }
        for p in providers
        for c in p.credentials
    ]
    return pd.DataFrame(rows, columns=["provider", "credential", "secret", "weight", "status"])


def _add_provider_form() -> None:
    st.subheader("Add a provider")
    with st.form("provider_add", clear_on_submit=True):
        left, right = st.columns(2)
        left.text_input("Name", key="provider_add_name", help="Model ids are NAME/MODEL")
        right.selectbox("Kind", PROVIDER_KINDS, key="provider_add_kind")
        left.text_input("Base URL", key="provider_add_base_url", help="Empty: the kind's default endpoint")
        right.text_input("Region", key="provider_add_region", help="Required for bedrock")
        left.number_input("Weight", min_value=1, value=1, step=1, key="provider_add_weight")
        right.text_input(
            "API key",
            type="password",
            key="provider_add_secret",
            help=f"Never shown again. Bedrock: ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]; "
            f"{', '.join(KINDS_WITHOUT_SECRET)}: none",
        )
        st.form_submit_button("Add provider", key="provider_add_submit", type="primary", on_click=_add_provider)
    outcome.show("provider_add")


def _credential_label(provider: Provider) -> Any:
    by_id = {c.credential_id: c for c in provider.credentials}
    return lambda cid: f"{cid} {by_id[cid].hint} (weight {by_id[cid].weight}, {_status(by_id[cid])})"


def _credential_forms(provider: Provider) -> None:
    name = provider.name
    st.subheader(f"Credentials of {name}")
    with st.form("credential_add", clear_on_submit=True):
        left, right = st.columns([3, 1])
        left.text_input("New API key", type="password", key="credential_add_secret", help="Never shown again")
        right.number_input("Weight", min_value=1, value=1, step=1, key="credential_add_weight")
        st.form_submit_button("Add credential", key="credential_add_submit", on_click=_add_credential, args=(name,))
    outcome.show("credential_add")
    ids = [c.credential_id for c in provider.credentials]
    if not ids:
        return
    label = _credential_label(provider)
    with st.form("credential_rotate", clear_on_submit=True):
        st.selectbox("Credential to replace", ids, format_func=label, key="credential_rotate_id")
        st.text_input("Replacement API key", type="password", key="credential_rotate_secret", help="Never shown again")
        left, right = st.columns(2)
        left.number_input(
            "Grace period (seconds)",
            min_value=0,
            max_value=int(MAX_GRACE.total_seconds()),
            value=0,
            step=60,
            key="credential_rotate_grace",
            help="The old credential stays in use this long; 0 disables it now",
        )
        right.number_input("Weight (0: the old one's)", min_value=0, value=0, step=1, key="credential_rotate_weight")
        st.form_submit_button(
            "Rotate credential", key="credential_rotate_submit", on_click=_rotate_credential, args=(name,)
        )
    outcome.show("credential_rotate")
    with st.form("credential_weight", clear_on_submit=True):
        left, right = st.columns([3, 1])
        left.selectbox("Credential", ids, format_func=label, key="credential_weight_id")
        right.number_input(
            "New weight", min_value=1, max_value=MAX_CREDENTIAL_WEIGHT, value=1, step=1, key="credential_weight_value"
        )
        st.form_submit_button("Save weight", key="credential_weight_submit", on_click=_set_weight, args=(name,))
    outcome.show("credential_weight")
    with st.form("credential_manage"):
        st.selectbox("Credential", ids, format_func=label, key="credential_manage_id")
        st.checkbox(
            f"{CONFIRM}: disabling stops routing to it; deleting removes it and its secret for good",
            key="credential_manage_confirm",
        )
        cols = st.columns(3)
        for column, command in zip(cols, ("enable", "disable", "delete"), strict=True):
            with column:
                st.form_submit_button(
                    command.capitalize(),
                    key=f"credential_{command}_submit",
                    on_click=_credential_command,
                    args=(name, command),
                )
    outcome.show("credential_manage")


def _provider_forms(provider: Provider) -> None:
    name = provider.name
    st.subheader(f"{name}: routing, timeouts and retries")
    with st.form("provider_state"):
        st.write(f"{name} is **{'enabled' if provider.enabled else 'disabled'}**.")
        st.checkbox(f"{CONFIRM}: a disabled provider serves no request", key="provider_state_confirm")
        left, right = st.columns(2)
        with left:
            st.form_submit_button(
                "Disable provider", key="provider_disable_submit", on_click=_provider_command, args=(name, "disable")
            )
        with right:
            st.form_submit_button(
                "Enable provider", key="provider_enable_submit", on_click=_provider_command, args=(name, "enable")
            )
    outcome.show("provider_state")
    with st.form("policy", clear_on_submit=True):
        st.caption("Empty keeps a value; `default` puts it back to the default (as `tallyhub providers update`).")
        cols = st.columns(len(POLICY_FIELDS))
        for column, (field, title) in zip(cols, POLICY_FIELDS.items(), strict=True):
            column.text_input(title, key=f"policy_{field}", placeholder=_shown(getattr(provider.policy, field)))
        st.form_submit_button("Save timeouts and retries", key="policy_submit", on_click=_set_policy, args=(name,))
    outcome.show("policy")


ui.page_context()
st.title("Providers")
providers = services().ledger.list_providers()
if providers:
    st.dataframe(_providers_frame(providers), hide_index=True, width="stretch", key="providers_table")
    st.dataframe(_credentials_frame(providers), hide_index=True, width="stretch", key="credentials_table")
else:
    st.info("**No providers yet.** Add one below (or with `tallyhub providers add`).")
_add_provider_form()
if providers:
    names = [p.name for p in providers]
    picked = st.selectbox("Provider to manage", names, key="provider_pick")
    chosen = next(p for p in providers if p.name == picked)
    _credential_forms(chosen)
    _provider_forms(chosen)
