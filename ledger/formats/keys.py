"""Ed25519 keys of actors: generation, storage, fingerprints and key ids.

A key file is a PKCS#8 PEM private key, written with mode 0600, preceded by
explanatory text (allowed by RFC 7468) naming the actor it belongs to::

    ailedger actor: bank
    fingerprint: 3f2a9c0d1e4b5a67
    -----BEGIN PRIVATE KEY-----
    ...

The fingerprint of a public key is the first 16 hex characters of SHA-256 of
its raw 32 bytes; a DSSE key id is ``<actor>/<fingerprint>`` (DESIGN §3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)

from ledger.formats.errors import USAGE, LedgerError

__all__ = [
    "SLUG",
    "ActorKey",
    "KeyFileError",
    "decode_public_key",
    "encode_public_key",
    "fingerprint",
    "generate",
    "load_key",
    "save_key",
]

#: Actor and system ids: safe as NATS subject tokens (DESIGN §3).
SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_SLUG = re.compile(SLUG)
_ACTOR_LINE = re.compile(rb"^ailedger actor: (\S+)\s*$", re.MULTILINE)


class KeyFileError(LedgerError, ValueError):
    """A key file is missing, unreadable, not Ed25519, or names no valid actor."""

    code = "key_file"
    exit_status = USAGE


def fingerprint(public_key: bytes) -> str:
    """First 16 hex characters of SHA-256 of the raw 32-byte public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(public_key).hexdigest()[:16]


def encode_public_key(public_key: bytes) -> str:
    """Standard base64 of the raw key, as it appears in enrolment events."""
    return base64.b64encode(public_key).decode()


def decode_public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"public key is not base64: {text!r}") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


@dataclass(frozen=True)
class ActorKey:
    """An actor's signing key and the identifiers derived from it."""

    actor: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not _SLUG.fullmatch(self.actor):
            raise KeyFileError(f"actor id {self.actor!r} is not a slug ({SLUG})")

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @property
    def public_key_b64(self) -> str:
        return encode_public_key(self.public_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @property
    def keyid(self) -> str:
        return f"{self.actor}/{self.fingerprint}"

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def generate(actor: str) -> ActorKey:
    return ActorKey(actor, Ed25519PrivateKey.generate())


def save_key(key: ActorKey, path: Path, *, overwrite: bool = False) -> None:
    """Write the key with mode 0600; refuse to replace an existing file by default."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    text = f"ailedger actor: {key.actor}\nfingerprint: {key.fingerprint}\n".encode() + pem
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as f:
        f.write(text)
    os.chmod(path, 0o600)


def load_key(path: Path, actor: str | None = None) -> ActorKey:
    """Load an actor key; ``actor`` overrides (or supplies) the actor named in the file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(private).__name__}, not an Ed25519 key")
    if actor is None:
        m = _ACTOR_LINE.search(data)
        if m is None:
            raise KeyFileError(f"{path} names no actor; pass the actor id explicitly")
        actor = m.group(1).decode()
    return ActorKey(actor, private)
