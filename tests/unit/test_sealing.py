"""Encryption at rest: sealing, opening, rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from sessionhub.store.sealing import PREFIX, Sealer

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


def test_without_keys_sealing_is_the_identity() -> None:
    s = Sealer()
    assert not s.enabled and s.seal('{"a":1}') == '{"a":1}' and s.open('{"a":1}') == '{"a":1}'


def test_sealed_text_hides_the_plaintext_and_opens_again() -> None:
    s = Sealer([OLD])
    sealed = s.seal('{"secret":"hunter2"}')
    assert sealed.startswith(PREFIX) and "hunter2" not in sealed
    assert s.open(sealed) == '{"secret":"hunter2"}'


def test_plaintext_rows_are_read_once_a_key_is_introduced() -> None:
    assert Sealer([OLD]).open('{"a":1}') == '{"a":1}'


def test_rotation_reseals_with_the_newest_key() -> None:
    old_only = Sealer([OLD])
    both = Sealer([NEW, OLD])
    new_only = Sealer([NEW])
    sealed_old = old_only.seal("x")
    assert both.open(sealed_old) == "x"
    with pytest.raises(RuntimeError, match="cannot be decrypted"):
        new_only.open(sealed_old)
    resealed = both.reseal(sealed_old)
    assert new_only.open(resealed) == "x"


def test_encrypted_data_without_a_key_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no encryption key"):
        Sealer().open(Sealer([OLD]).seal("x"))
