"""AES-256-GCM with key ids: one keyring for workflow payloads and tokens at rest.

`ENCRYPTION_KEYS` is `kid:base64(32 bytes)[,kid:base64(32 bytes)…]`. The first key
encrypts; every key decrypts, so a new key is put first and the old ones stay
until nothing encrypted with them remains (`relay keys rotate-tokens` re-encrypts
stored tokens; old workflow histories keep decrypting).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.errors import ConfigError

_NONCE_BYTES = 12
_TAG_BYTES = 16
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class DecryptionError(Exception):
    """Ciphertext that no key in the ring opens (unknown key id or tampered data)."""


@dataclass(frozen=True)
class Key:
    kid: str
    secret: bytes

    def __repr__(self) -> str:  # never print key material
        return f"Key(kid={self.kid!r})"


class Keyring:
    """Encrypts with the first key, decrypts with whichever key id the data names."""

    def __init__(self, keys: list[Key]) -> None:
        if not keys:
            raise ConfigError("ENCRYPTION_KEYS holds no key")
        self._keys = {key.kid: AESGCM(key.secret) for key in keys}
        if len(self._keys) != len(keys):
            raise ConfigError("ENCRYPTION_KEYS repeats a key id")
        self.current_kid = keys[0].kid
        self.kids = [key.kid for key in keys]

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        keys = []
        for index, item in enumerate(part.strip() for part in spec.split(",") if part.strip()):
            kid, sep, encoded = item.partition(":")
            if not sep or not _KID.match(kid):
                raise ConfigError(f"ENCRYPTION_KEYS entry {index + 1} must be kid:base64(32 bytes)")
            try:
                secret = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"ENCRYPTION_KEYS key {kid!r} is not valid base64") from None
            if len(secret) != 32:
                raise ConfigError(
                    f"ENCRYPTION_KEYS key {kid!r} must be 32 bytes, not {len(secret)}"
                )
            keys.append(Key(kid, secret))
        return cls(keys)

    def encrypt(self, plaintext: bytes, associated_data: bytes | None = None) -> tuple[str, bytes]:
        """Returns (key id, nonce + ciphertext)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.current_kid].encrypt(nonce, plaintext, associated_data)
        return self.current_kid, nonce + sealed

    def decrypt(self, kid: str, blob: bytes, associated_data: bytes | None = None) -> bytes:
        aead = self._keys.get(kid)
        if aead is None:
            raise DecryptionError(f"no key with id {kid!r} in ENCRYPTION_KEYS")
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError(f"data under key {kid!r} is too short to be ciphertext")
        try:
            return aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise DecryptionError(f"data under key {kid!r} failed authentication") from None

    # Text form for database columns: "kid:base64url(nonce + ciphertext)".

    def seal(self, plaintext: str, context: str = "") -> str:
        kid, blob = self.encrypt(plaintext.encode(), context.encode() or None)
        return f"{kid}:{base64.urlsafe_b64encode(blob).decode()}"

    def open(self, sealed: str, context: str = "") -> str:
        kid, _, encoded = sealed.partition(":")
        try:
            blob = base64.urlsafe_b64decode(encoded)
        except (binascii.Error, ValueError):
            raise DecryptionError("sealed value is not base64") from None
        return self.decrypt(kid, blob, context.encode() or None).decode()

    @staticmethod
    def kid_of(sealed: str) -> str:
        return sealed.partition(":")[0]


def generate_key_spec(kid: str | None = None) -> str:
    kid = kid or f"k{secrets.token_hex(4)}"
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def load_keyring(encryption_keys: str | None, dev_keys_file: Path) -> Keyring:
    """The configured keys, or in development a key generated once into DATA_DIR."""
    if encryption_keys:
        return Keyring.parse(encryption_keys)
    if not dev_keys_file.exists():
        dev_keys_file.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: two processes starting at once must
        # neither write different keys nor read a file the other has not filled yet.
        draft = dev_keys_file.with_name(f".{dev_keys_file.name}.{secrets.token_hex(6)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_key_spec("dev1") + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(draft, dev_keys_file)
            except FileExistsError:
                pass
        finally:
            draft.unlink()
    return Keyring.parse(dev_keys_file.read_text().strip())
