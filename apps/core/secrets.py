"""The one secrets layer: AES-256-GCM under the key-encryption key (KEK).

``MDMCERTS_KEK`` holds one or more keys, ``<key id>:<base64url 32 bytes>``, separated by
commas. The first encrypts; all of them decrypt, so a new KEK is put first, the secrets
are rewrapped (``manage.py rewrap_secrets``) and the old key is dropped afterwards.

A stored secret is ``mdmc1:<key id>:<base64url(nonce || ciphertext || tag)>``. The
context (which model field holds it) is authenticated, so a ciphertext copied into
another field does not decrypt.
"""

import base64
import binascii
import os
from dataclasses import dataclass
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

PREFIX = "mdmc1"
NONCE_BYTES = 12


class SecretError(Exception):
    """A secret could not be decrypted: wrong or missing key, or altered ciphertext."""


class KEKConfigurationError(SecretError):
    """``MDMCERTS_KEK`` is malformed."""


@dataclass(frozen=True)
class KeyRing:
    """The parsed KEK: the key that encrypts and every key that may decrypt."""

    primary_id: str
    keys: dict[str, bytes]


def parse_kek(value: str) -> KeyRing:
    keys: dict[str, bytes] = {}
    primary_id = ""
    for item in filter(None, (part.strip() for part in value.split(","))):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id or ":" in encoded:
            raise KEKConfigurationError("each MDMCERTS_KEK entry is <key id>:<base64 key>")
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise KEKConfigurationError(f"MDMCERTS_KEK key {key_id!r} is not base64") from exc
        if len(key) != 32:
            raise KEKConfigurationError(f"MDMCERTS_KEK key {key_id!r} must be 32 bytes")
        keys[key_id] = key
        primary_id = primary_id or key_id
    if not keys:
        raise KEKConfigurationError("MDMCERTS_KEK is empty")
    return KeyRing(primary_id=primary_id, keys=keys)


@cache
def _ring_for(value: str) -> KeyRing:
    return parse_kek(value)


def key_ring() -> KeyRing:
    return _ring_for(settings.MDMCERTS_KEK)


def encrypt(plaintext: bytes, *, context: str) -> str:
    """Encrypt ``plaintext`` under the primary KEK, bound to ``context``."""
    ring = key_ring()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.keys[ring.primary_id]).encrypt(nonce, plaintext, context.encode())
    token = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
    return f"{PREFIX}:{ring.primary_id}:{token}"


def key_id_of(token: str) -> str:
    prefix, _, rest = token.partition(":")
    if prefix != PREFIX:
        raise SecretError("not an mdmcerts secret")
    return rest.partition(":")[0]


def decrypt(token: str, *, context: str) -> bytes:
    """Decrypt a stored secret; raises SecretError without saying why in detail."""
    try:
        prefix, key_id, body = token.split(":", 2)
        if prefix != PREFIX:
            raise ValueError
        key = key_ring().keys[key_id]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
    except KeyError as exc:
        raise SecretError(f"secret was encrypted under unknown KEK id {key_id!r}") from exc
    except (ValueError, binascii.Error, InvalidTag) as exc:
        raise SecretError("secret cannot be decrypted") from exc


def needs_rewrap(token: str) -> bool:
    return bool(token) and key_id_of(token) != key_ring().primary_id


def rewrap(token: str, *, context: str) -> str:
    """Re-encrypt a secret under the primary KEK (the plaintext never leaves this call)."""
    return encrypt(decrypt(token, context=context), context=context)
