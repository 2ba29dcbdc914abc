"""The keyring: AES-256-GCM with key ids, rotation, the development key file."""

from __future__ import annotations

import base64
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relay.crypto import DecryptionError, Keyring, generate_key_spec, load_keyring
from relay.errors import ConfigError


def _flip(blob: bytes, index: int) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 0x01
    return bytes(changed)


def test_roundtrip_names_the_key_and_never_repeats_a_nonce() -> None:
    keyring = Keyring.parse(generate_key_spec("k1"))
    kid, first = keyring.encrypt(b"attack at dawn")
    _, second = keyring.encrypt(b"attack at dawn")

    assert kid == "k1" == keyring.current_kid
    assert first != second
    assert b"attack at dawn" not in first
    assert keyring.decrypt(kid, first) == b"attack at dawn"
    assert keyring.decrypt(kid, second) == b"attack at dawn"


def test_rotation_old_data_still_opens_and_new_data_uses_the_new_key() -> None:
    old_spec, new_spec = generate_key_spec("old"), generate_key_spec("new")
    before = Keyring.parse(old_spec)
    kid, blob = before.encrypt(b"written before rotation")
    sealed = before.seal("token-before", context="integration:1")

    after = Keyring.parse(f"{new_spec},{old_spec}")

    assert after.current_kid == "new"
    assert after.kids == ["new", "old"]
    assert after.decrypt(kid, blob) == b"written before rotation"
    assert after.open(sealed, context="integration:1") == "token-before"
    new_kid, new_blob = after.encrypt(b"written after rotation")
    assert new_kid == "new"
    assert Keyring.kid_of(after.seal("token-after")) == "new"
    # A process still on the old ring cannot read what the new key wrote.
    with pytest.raises(DecryptionError, match="no key with id 'new'"):
        before.decrypt(new_kid, new_blob)


def test_unknown_key_id_raises() -> None:
    keyring = Keyring.parse(generate_key_spec("k1"))
    _, blob = keyring.encrypt(b"data")
    with pytest.raises(DecryptionError, match="no key with id 'k2'"):
        keyring.decrypt("k2", blob)


def test_same_key_id_with_other_material_fails_authentication() -> None:
    _, blob = Keyring.parse(generate_key_spec("k1")).encrypt(b"data")
    with pytest.raises(DecryptionError, match="failed authentication"):
        Keyring.parse(generate_key_spec("k1")).decrypt("k1", blob)


@pytest.mark.parametrize("index", [0, 11, 12, -1])
def test_tampering_with_nonce_ciphertext_or_tag_raises(index: int) -> None:
    keyring = Keyring.parse(generate_key_spec("k1"))
    kid, blob = keyring.encrypt(b"a payment of 10.00 EUR")
    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt(kid, _flip(blob, index))


@pytest.mark.parametrize("blob", [b"", b"short", bytes(27)])
def test_truncated_data_raises_decryption_error(blob: bytes) -> None:
    keyring = Keyring.parse(generate_key_spec("k1"))
    with pytest.raises(DecryptionError):
        keyring.decrypt("k1", blob)


def test_sealed_values_are_bound_to_their_context() -> None:
    keyring = Keyring.parse(generate_key_spec("k1"))
    sealed = keyring.seal("refresh-token-123", context="integration:a")
    assert "refresh-token-123" not in sealed
    assert keyring.open(sealed, context="integration:a") == "refresh-token-123"
    with pytest.raises(DecryptionError):
        keyring.open(sealed, context="integration:b")
    with pytest.raises(DecryptionError):
        keyring.open(sealed)
    with pytest.raises(DecryptionError):
        keyring.open("k1:***not base64***")


def test_key_material_never_appears_in_repr() -> None:
    spec = generate_key_spec("k1")
    secret = spec.partition(":")[2]
    keyring = Keyring.parse(spec)
    assert secret not in repr(keyring)
    assert secret not in repr(keyring.__dict__)


def test_dev_key_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    keys_file = tmp_path / "data" / "encryption.keys"

    first = load_keyring(None, keys_file)
    content = keys_file.read_text()
    second = load_keyring(None, keys_file)

    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert keys_file.read_text() == content
    assert first.current_kid == second.current_kid == "dev1"
    kid, blob = first.encrypt(b"survives a restart")
    assert second.decrypt(kid, blob) == b"survives a restart"
    assert [path.name for path in keys_file.parent.iterdir()] == ["encryption.keys"]


def test_dev_key_is_one_key_when_processes_start_together(tmp_path: Path) -> None:
    keys_file = tmp_path / "encryption.keys"
    barrier = threading.Barrier(8)

    def start() -> bytes:
        barrier.wait()
        kid, blob = load_keyring(None, keys_file).encrypt(b"x")
        return blob

    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda _: start(), range(8)))

    ring = load_keyring(None, keys_file)
    assert all(ring.decrypt("dev1", blob) == b"x" for blob in blobs)
    assert len(keys_file.read_text().strip().split(",")) == 1


def test_configured_keys_win_over_the_dev_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "encryption.keys"
    keyring = load_keyring(generate_key_spec("prod1"), keys_file)
    assert keyring.current_kid == "prod1"
    assert not keys_file.exists()


_GOOD = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "holds no key"),
        (" , ", "holds no key"),
        (_GOOD, "entry 1 must be kid:base64(32 bytes)"),
        (f"k1:{_GOOD},{_GOOD}", "entry 2 must be kid:base64(32 bytes)"),
        (f"bad kid:{_GOOD}", "entry 1 must be kid:base64(32 bytes)"),
        ("k1:not*base64", "key 'k1' is not valid base64"),
        (f"k1:{base64.b64encode(bytes(16)).decode()}", "key 'k1' must be 32 bytes, not 16"),
        (f"k1:{_GOOD},k1:{_GOOD}", "repeats a key id"),
    ],
)
def test_malformed_encryption_keys_name_the_problem_not_the_key(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Keyring.parse(spec)
    text = str(caught.value)
    assert "ENCRYPTION_KEYS" in text
    assert message in text
    assert _GOOD not in text
