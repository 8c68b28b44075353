"""A credential's weight changed after it was added (``Provider.CredentialWeightChanged``,
``ProviderRegistry.set_credential_weight``): bounded as the add path bounds it, no event
when unchanged, the actor and the audit row recorded, and routing's traffic split following
the new weight at once in this process and, in another, once its read cache has aged.

Routing's split is checked with a seeded random (application/routing.py draws from the
Router's own ``rng``), so every count below is the same on every run."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.application import Application

from adapters.bootstrap import build_ledger, in_memory_ledger, initialise
from adapters.settings import Settings
from application.acting import CLI, acting_as, actor_of
from application.health import CredentialHealth
from application.ledger import Ledger
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import InvalidRequest, ProviderNotFound
from domain.provider import MAX_CREDENTIAL_WEIGHT, Provider
from projections.audit import AuditFilter
from projections.read_models import build_read_models

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
ADMIN = "admin:0123456789ab"
PICKS = 400


def provider_with_two() -> Provider:
    provider = Provider(name="openai", kind="openai", base_url=None, region=None)
    provider.add_credential("aaaaaaaaaaaa", "credential:openai:aaaaaaaaaaaa", hint="…1111", weight=2)
    provider.add_credential("bbbbbbbbbbbb", "credential:openai:bbbbbbbbbbbb", hint="…2222")
    return provider


# --- the domain ------------------------------------------------------------------------


def test_a_weight_change_is_one_event_with_the_old_and_new_weight_and_loads_back() -> None:
    app = Application[UUID](POPO)
    provider = provider_with_two()
    provider.set_credential_weight("aaaaaaaaaaaa", 7)
    app.save(provider)
    loaded: Provider = app.repository.get(provider.id)
    assert [(c.credential_id, c.weight) for c in loaded.credentials] == [("aaaaaaaaaaaa", 7), ("bbbbbbbbbbbb", 1)]
    assert loaded.credentials == provider.credentials
    stored = app.repository.event_store.recorder.select_events(provider.id)
    [changed] = [e for e in stored if e.topic.endswith("Provider.CredentialWeightChanged")]
    state = app.mapper.transcoder.decode(changed.state)
    assert {k: state[k] for k in ("credential_id", "weight", "previous")} == {
        "credential_id": "aaaaaaaaaaaa",
        "weight": 7,
        "previous": 2,
    }


def test_the_same_weight_records_nothing() -> None:
    provider = provider_with_two()
    provider.collect_events()
    provider.set_credential_weight("aaaaaaaaaaaa", 2)
    assert provider.collect_events() == []


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (0, "a credential weight must be positive"),
        (-3, "a credential weight must be positive"),
        (MAX_CREDENTIAL_WEIGHT + 1, "a credential weight must be at most 1,000,000"),
        (10**400, "a credential weight must be at most 1,000,000"),
        (True, "a credential weight must be a whole number, got True"),
        (2.5, "a credential weight must be a whole number, got 2.5"),
    ],
)
def test_a_weight_outside_1_to_the_maximum_is_refused_on_change_and_on_add(weight: object, message: str) -> None:
    provider = provider_with_two()
    provider.collect_events()
    with pytest.raises(InvalidRequest, match=f"^{message}$") as refused:
        provider.set_credential_weight("aaaaaaaaaaaa", weight)  # type: ignore[arg-type]
    assert refused.value.param == "weight"
    with pytest.raises(InvalidRequest, match=f"^{message}$"):
        provider.add_credential("cccccccccccc", "credential:openai:cccccccccccc", hint="…3333", weight=weight)  # type: ignore[arg-type]
    assert provider.collect_events() == []
    assert provider.credential("aaaaaaaaaaaa").weight == 2


def test_the_maximum_weight_is_accepted_and_an_unknown_credential_refused() -> None:
    provider = provider_with_two()
    provider.set_credential_weight("bbbbbbbbbbbb", MAX_CREDENTIAL_WEIGHT)
    assert provider.credential("bbbbbbbbbbbb").weight == MAX_CREDENTIAL_WEIGHT
    with pytest.raises(InvalidRequest, match="^provider 'openai' has no credential 'nope'$"):
        provider.set_credential_weight("nope", 3)


# --- the application: saved once, by whom, audited ----------------------------------------


def test_the_registry_saves_the_change_as_the_actor_and_nothing_when_unchanged(ledger: Ledger) -> None:
    registry = ProviderRegistry(ledger)
    with acting_as(CLI):
        provider = registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    [credential] = provider.credentials
    with acting_as(ADMIN):
        changed = registry.set_credential_weight("openai", credential.credential_id, 5)
        again = registry.set_credential_weight("openai", credential.credential_id, 5)
    assert changed.credential(credential.credential_id).weight == 5
    assert again.version == changed.version  # the unchanged weight saved nothing
    events = list(ledger.events.get(provider.id))
    assert [(type(e).__name__, actor_of(e)) for e in events][-1] == ("CredentialWeightChanged", ADMIN)
    assert ledger.get_provider("openai").credential(credential.credential_id).weight == 5


def test_the_registry_refuses_an_unknown_provider_or_credential_and_changes_nothing(ledger: Ledger) -> None:
    registry = ProviderRegistry(ledger)
    provider = registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    with pytest.raises(ProviderNotFound, match="^no provider 'nobody'$"):
        registry.set_credential_weight("nobody", provider.credentials[0].credential_id, 2)
    with pytest.raises(InvalidRequest, match="has no credential 'nope'"):
        registry.set_credential_weight("openai", "nope", 2)
    with pytest.raises(InvalidRequest, match="must be positive"):
        registry.set_credential_weight("openai", provider.credentials[0].credential_id, 0)
    assert ledger.get_provider("openai").version == provider.version


def test_the_audit_log_shows_the_change_with_both_weights_and_who_made_it(ledger: Ledger) -> None:
    registry = ProviderRegistry(ledger)
    provider = registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    credential_id = provider.credentials[0].credential_id
    with acting_as(ADMIN):
        registry.set_credential_weight("openai", credential_id, 40)
    read_models = build_read_models(None, ledger)
    try:
        read_models.runner.catch_up()
        assert read_models.audit is not None
        [entry] = read_models.audit.list_entries(AuditFilter(action="provider.credential_weight_changed"), limit=10)
    finally:
        read_models.close()
    assert (entry.actor, entry.target, entry.summary) == (
        ADMIN,
        "openai",
        f"credential {credential_id} weight 1 → 40",
    )


# --- routing follows the new weight ---------------------------------------------------------


def first_picks(router: Router, model: str = "openai/gpt-4o") -> Counter[str | None]:
    """Which credential routing tries first, over PICKS requests."""
    counts: Counter[str | None] = Counter()
    for _ in range(PICKS):
        target = router.targets(model, router.ledger.recent_price_book().latest)[0]
        counts[next(router.routes(target)).credential_id] += 1
    return counts


def two_credentials(ledger: Ledger) -> tuple[str, str]:
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    registry.add_credential("openai", "sk-openai-bbbb")
    first, second = ledger.get_provider("openai").credentials
    return first.credential_id, second.credential_id


def test_routing_in_this_process_follows_the_new_weight_at_once_despite_its_read_cache() -> None:
    ledger = in_memory_ledger(read_cache_seconds=3600)
    ledger.initialise()
    try:
        a, b = two_credentials(ledger)
        router = Router(ledger, CredentialHealth(), rng=random.Random(7))
        even = first_picks(router)
        assert 150 < even[a] < 250 and even[a] + even[b] == PICKS  # 1 : 1
        ProviderRegistry(ledger).set_credential_weight("openai", b, 1000)
        skewed = first_picks(router)
        assert skewed[b] >= PICKS - 3  # 1000 : 1, from the very next request
        ProviderRegistry(ledger).set_credential_weight("openai", b, 1)
        ProviderRegistry(ledger).set_credential_weight("openai", a, 1000)
        assert first_picks(router)[a] >= PICKS - 3
    finally:
        ledger.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings.from_env({"TALLYHUB_DATA_DIR": str(tmp_path / "data")})
    initialise(settings)
    return settings


@pytest.fixture
def ledgers(settings: Settings) -> Iterator[list[Ledger]]:
    opened: list[Ledger] = []
    yield opened
    for ledger in opened:
        ledger.close()


def test_another_process_follows_the_new_weight_once_its_read_cache_has_aged(
    settings: Settings, ledgers: list[Ledger]
) -> None:
    """Three ledgers on one store, as the CLI and two gateways: one caching reads for an hour
    still routes by the weight it read (the documented window); one caching for 50 ms routes
    by the new weight once that has passed."""
    operator, slow, quick = (
        build_ledger(settings),
        build_ledger(settings, read_cache_seconds=3600),
        build_ledger(settings, read_cache_seconds=0.05),
    )
    ledgers += [operator, slow, quick]
    a, b = two_credentials(operator)
    slow_router = Router(slow, CredentialHealth(), rng=random.Random(7))
    quick_router = Router(quick, CredentialHealth(), rng=random.Random(7))
    assert 150 < first_picks(slow_router)[a] < 250
    assert 150 < first_picks(quick_router)[a] < 250

    with acting_as(CLI):
        ProviderRegistry(operator).set_credential_weight("openai", b, 1000)

    assert slow.recent_provider("openai").credential(b).weight == 1  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while quick.recent_provider("openai").credential(b).weight != 1000:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the 50 ms read cache never let the new weight through"
        time.sleep(0.01)
    assert first_picks(quick_router)[b] >= PICKS - 3
