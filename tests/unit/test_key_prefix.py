"""What is shown of an API key after it was issued: its kind and last 4 characters, never
the characters after ``thk_`` (the old prefix showed 8 of them). Keys issued before keep
working and are shown by their kind alone; authentication never looks at the prefix."""

import os

import pytest

from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.presenters import api_key_json
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from domain.api_key import ApiKey, shown_prefix
from domain.errors import AuthenticationFailed


def test_a_new_keys_prefix_is_its_kind_and_last_4_characters(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    for issued in [ApiKeys(ledger).issue_api_key("acme") for _ in range(20)] + [
        ApiKeys(ledger).issue_api_key("acme", models=["openai/*"])
    ]:
        body = issued.plaintext.removeprefix("thk_")
        assert issued.prefix == "thk_…" + body[-4:]  # a constant and the last 4: nothing else of the key
        assert body[:8] not in issued.prefix  # what the old prefix showed
        assert api_key_json(ledger.get_api_key(issued.key_id))["prefix"] == issued.prefix


def test_the_admin_key_is_masked_the_same_way() -> None:
    scheme = HmacApiKeyScheme(os.urandom(32))
    key = scheme.new_admin_key()
    assert scheme.visible_prefix(key) == "tha_…" + key[-4:]
    assert scheme.visible_prefix("short") == "…"


def test_a_key_issued_with_the_old_12_character_prefix_is_shown_by_its_kind_alone(ledger: Ledger) -> None:
    """The old ``Issued`` event recorded ``thk_`` and 8 characters of the key: loading it shows ``thk_…``."""
    Accounts(ledger).create_account("acme")
    scheme = ledger.key_scheme
    plaintext = scheme.new_user_key()
    old = ApiKey(
        digest=scheme.digest(plaintext),
        account_id=ledger.get_account("acme").id,
        name="old",
        prefix=plaintext[:12],
        expires_at=None,
    )
    ledger.save(old)
    loaded = ledger.get_api_key(old.id)
    assert loaded.prefix == "thk_…"
    assert plaintext[4:12] not in str(api_key_json(loaded))
    assert ledger.authenticate(plaintext).id == old.id  # it still works
    assert shown_prefix("thk_a_b-cdefg") == "thk_…" and shown_prefix("garbage") == "…"


def test_authentication_never_depends_on_the_prefix(ledger: Ledger) -> None:
    Accounts(ledger).create_account("acme")
    issued = ApiKeys(ledger).issue_api_key("acme")
    body = issued.plaintext.removeprefix("thk_")
    same_shown = "thk_" + ("A" if body[0] != "A" else "B") + body[1:]  # same kind, same last 4, other key
    assert HmacApiKeyScheme(os.urandom(32)).visible_prefix(same_shown) == issued.prefix
    with pytest.raises(AuthenticationFailed):
        ledger.authenticate(same_shown)
    for shown in (issued.prefix, issued.prefix.replace("…", "")):
        with pytest.raises(AuthenticationFailed):
            ledger.authenticate(shown)
    assert ledger.authenticate(issued.plaintext).id == issued.key_id
