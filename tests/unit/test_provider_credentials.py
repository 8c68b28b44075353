"""domain/provider.py: a provider's credentials are frozen ``Credential`` values built from
the events, whose payloads keep their plain shape (a store written before the value object
loads unchanged)."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.application import Application

from domain.provider import Credential, Provider

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ENVELOPE = {"kid": "k1", "nonce": "bm9uY2U=", "wrapped": "d3JhcHBlZA==", "ct": "Y3Q="}


@pytest.fixture
def app() -> Application:
    return Application(POPO)


def test_credentials_load_from_the_events_as_the_values_they_were_saved_as(app: Application) -> None:
    provider = Provider(name="openai", kind="openai", base_url=None, region=None)
    provider.add_credential("aaaaaaaaaaaa", "credential:openai:aaaaaaaaaaaa", hint="…1111", weight=2)
    provider.add_credential("bbbbbbbbbbbb", "credential:openai:bbbbbbbbbbbb", hint="…2222")
    provider.rotate_credential("aaaaaaaaaaaa", "bbbbbbbbbbbb", retires_at=T0 + timedelta(hours=1))
    provider.disable_credential("aaaaaaaaaaaa", "refused", automatic=True)
    app.save(provider)
    loaded = app.repository.get(provider.id)
    assert loaded.credentials == provider.credentials
    assert loaded.credential("aaaaaaaaaaaa") == Credential(
        credential_id="aaaaaaaaaaaa",
        hint="…1111",
        weight=2,
        enabled=False,
        secret_ref="credential:openai:aaaaaaaaaaaa",
        disabled_reason="refused",
        disabled_automatically=True,
        replaced_by="bbbbbbbbbbbb",
        retires_at=T0 + timedelta(hours=1),
    )
    assert loaded.usable_credentials(T0) == [loaded.credential("bbbbbbbbbbbb")]
    assert loaded.usable_credentials(T0 + timedelta(hours=2)) == [loaded.credential("bbbbbbbbbbbb")]
    assert loaded.current_credentials(T0 + timedelta(hours=2)) == [loaded.credential("bbbbbbbbbbbb")]


def test_the_credential_events_keep_their_plain_payloads(app: Application) -> None:
    provider = Provider(name="openai", kind="openai", base_url=None, region=None)
    provider.add_credential("aaaaaaaaaaaa", "credential:openai:aaaaaaaaaaaa", hint="…1111", weight=1)
    app.save(provider)
    stored = app.repository.event_store.recorder.select_events(provider.id)  # type: ignore[attr-defined]
    stored_event = next(e for e in stored if e.topic.endswith("Provider.CredentialStored"))
    state = app.mapper.transcoder.decode(stored_event.state)
    assert {k: state[k] for k in ("credential_id", "secret_ref", "hint", "weight")} == {
        "credential_id": "aaaaaaaaaaaa",
        "secret_ref": "credential:openai:aaaaaaaaaaaa",
        "hint": "…1111",
        "weight": 1,
    }


def test_a_credential_recorded_with_its_envelope_loads_and_moves_to_the_secret_store(app: Application) -> None:
    """Events of a store made before the secret store (CredentialAdded with the envelope)."""
    provider = Provider(name="openai", kind="openai", base_url=None, region=None)
    provider._credential_added(credential_id="aaaaaaaaaaaa", sealed=ENVELOPE, hint="…1111", weight=1)
    provider._credential_rewrapped(credential_id="aaaaaaaaaaaa", sealed={**ENVELOPE, "kid": "k2"})
    app.save(provider)
    loaded = app.repository.get(provider.id)
    assert loaded.credential("aaaaaaaaaaaa").legacy_sealed == {**ENVELOPE, "kid": "k2"}
    assert loaded.credential("aaaaaaaaaaaa").secret_ref is None
    assert loaded.sealed_in_history == {"k1": 1, "k2": 1}
    loaded.move_secret("aaaaaaaaaaaa", "credential:openai:aaaaaaaaaaaa")
    app.save(loaded)
    moved = app.repository.get(provider.id).credential("aaaaaaaaaaaa")
    assert (moved.legacy_sealed, moved.secret_ref) == (None, "credential:openai:aaaaaaaaaaaa")


def test_a_credential_cannot_be_changed_in_place() -> None:
    credential = Credential(credential_id="aaaaaaaaaaaa", hint="…1111", weight=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        credential.enabled = False  # type: ignore[misc]
