"""Secret-store rules over any sequence of credential additions, rotations (with and
without a grace period), deletions, clock advances and master-key rotations:

- no event ever holds an envelope or a secret;
- every current credential opens to the secret it was given;
- after a master-key rotation, the store holds exactly the current secrets (nothing
  superseded) and no earlier master key opens any of its rows.
"""

import json
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from application import key_management as km
from application.ledger import Ledger, secret_context
from application.providers import ProviderRegistry
from domain import ids
from domain.errors import InvalidRequest, SecretError
from tests.fakes.clock import FakeClock

PROVIDERS = ("openai", "anthropic")


class SecretStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.keys = [f"k0:{generate_master_key()}"]
        self.clock = FakeClock()
        self.ledger = Ledger(
            {"PERSISTENCE_MODULE": "eventsourcing.popo"},
            vault=self.vault(*self.keys),
            key_scheme_factory=HmacApiKeyScheme,
            clock=self.clock,
        )
        self.ledger.initialise()
        self.given: dict[str, str] = {}  # credential id -> the secret it was given
        self.counter = 0
        for name in PROVIDERS:
            provider = ProviderRegistry(self.ledger).register_provider(
                name, "openai", base_url=None, region=None, secret=self.secret()
            )
            self.given[provider.credentials[0].credential_id] = self.last

    @staticmethod
    def vault(*entries: str) -> AesGcmKeyVault:
        return AesGcmKeyVault(KeyRing.parse(",".join(entries), source="TEST"))

    def secret(self) -> str:
        self.counter += 1
        self.last = f"sk-prop-{self.counter:04d}-{generate_master_key()[:12]}"
        return self.last

    def current(self) -> list[tuple[str, dict]]:
        now = self.clock.now()
        return [(p.name, c) for p in self.ledger.list_providers() for c in p.current_credentials(now)]

    @rule(provider=st.sampled_from(PROVIDERS))
    def add(self, provider: str) -> None:
        added = ProviderRegistry(self.ledger).add_credential(provider, self.secret())
        self.given[added.credentials[-1].credential_id] = self.last

    @rule(provider=st.sampled_from(PROVIDERS), grace=st.sampled_from([0, 30]), pick=st.integers(0, 10))
    def rotate_credential(self, provider: str, grace: int, pick: int) -> None:
        candidates = [c for name, c in self.current() if name == provider and c.enabled and not c.replaced_by]
        if not candidates:
            return
        old = candidates[pick % len(candidates)].credential_id
        rotation = ProviderRegistry(self.ledger).rotate_credential(
            provider, self.secret(), credential_id=old, grace=timedelta(seconds=grace)
        )
        self.given[rotation.new_credential_id] = self.last

    @rule(provider=st.sampled_from(PROVIDERS), pick=st.integers(0, 10))
    def delete(self, provider: str, pick: int) -> None:
        credentials = self.ledger.get_provider(provider).credentials
        try:
            ProviderRegistry(self.ledger).delete_credential(
                provider, credentials[pick % len(credentials)].credential_id
            )
        except InvalidRequest:
            pass  # its last credential

    @rule(seconds=st.sampled_from([1, 31]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)
        ProviderRegistry(self.ledger).retire_due_credentials()

    @precondition(lambda self: len(self.keys) < 4)
    @rule()
    def rotate_master(self) -> None:
        self.keys.insert(0, f"k{len(self.keys)}:{generate_master_key()}")
        self.ledger.vault = self.vault(*self.keys)
        km.rotate_master(self.ledger)
        current_refs = {c.secret_ref for _, c in self.current()}
        pepper_ref = self.ledger.find(ids.DEPLOYMENT_ID).pepper_ref
        rows = self.ledger.secret_store.all()
        assert {row.ref for row in rows} == current_refs | {pepper_ref}
        for retired in self.keys[1:]:
            for row in rows:
                try:
                    self.vault(retired).open(row.envelope, context=secret_context(row.ref))
                except SecretError:
                    continue
                raise AssertionError(f"{retired.partition(':')[0]} still opens {row.ref}")

    @invariant()
    def every_current_credential_opens_to_its_secret(self) -> None:
        for name, credential in self.current():
            provider = self.ledger.get_provider(name)
            assert self.ledger.open_credential(provider, credential) == self.given[credential.credential_id]

    @invariant()
    def no_event_holds_an_envelope_or_a_secret(self) -> None:
        states = [n.state for n in self.ledger.recorder.select_notifications(start=1, limit=100_000)]
        for state in states:
            assert b"wrapped_key" not in state and b"ciphertext" not in state, json.loads(state)
        history = b"".join(states)
        assert not [secret for secret in self.given.values() if secret[:-4].encode() in history]

    def teardown(self) -> None:
        self.ledger.close()


TestSecretStoreRules = SecretStoreMachine.TestCase
TestSecretStoreRules.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
