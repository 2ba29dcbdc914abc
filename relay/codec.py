"""The payload codec that keeps workflow history encrypted (Temporal's encryption sample).

Each payload is serialised, encrypted with the keyring's current key and stored as
`binary/encrypted` with the key id in its metadata, so a history written under an
old key still decodes after rotation.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from relay.crypto import DecryptionError, Keyring

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"


class EncryptionCodec(PayloadCodec):
    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            kid, blob = self._keyring.encrypt(payload.SerializeToString())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: kid.encode()},
                    data=blob,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding", b"") != ENCODING:
                decoded.append(payload)
                continue
            if KEY_ID_METADATA not in payload.metadata:
                raise DecryptionError("an encrypted payload names no encryption key id")
            kid = payload.metadata[KEY_ID_METADATA].decode()
            decoded.append(Payload.FromString(self._keyring.decrypt(kid, payload.data)))
        return decoded
