"""Encryption at rest for session metadata and event payloads (Fernet, with key rotation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

PREFIX = "fernet:"


class Sealer:
    """Seals JSON text before it is written and opens it after it is read.

    With no keys it is the identity. With keys, the first one encrypts and every one
    decrypts, so a key is rotated by putting the new key first, running
    ``sessionhub rotate-keys`` (which re-seals every row) and then dropping the old one.
    Text without the ``fernet:`` prefix is read as plaintext, so a key can be introduced
    on an existing database.
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._fernet: MultiFernet | None = None
        #: What a failed decryption raises (cryptography's InvalidToken once keys are set).
        self._invalid: type[Exception] = RuntimeError
        if keys:
            # cryptography (several MB resident) only where keys are configured; looked up
            # once here, not on every encrypted row read.
            from cryptography.fernet import Fernet, InvalidToken, MultiFernet

            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
            self._invalid = InvalidToken

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, text: str) -> str:
        if self._fernet is None:
            return text
        return PREFIX + self._fernet.encrypt(text.encode()).decode()

    def open(self, text: str) -> str:
        if not text.startswith(PREFIX):
            return text
        if self._fernet is None:
            raise RuntimeError("stored data is encrypted but no encryption key is configured")
        try:
            return self._fernet.decrypt(text[len(PREFIX) :].encode()).decode()
        except self._invalid:
            raise RuntimeError("stored data cannot be decrypted with the configured keys") from None

    def reseal(self, text: str) -> str:
        """Re-encrypt with the newest key (used by key rotation)."""
        return self.seal(self.open(text))
