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
from datetime import datetime
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
    "KeyHistory",
    "KeyRing",
    "KeyState",
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


# --- key lifecycle: shared by the notary's state and the offline verifier ----


@dataclass
class KeyState:
    """One key of an actor: when it became valid, was rotated out, was compromised."""

    public_key: str
    valid_from: datetime
    valid_until: datetime | None = None
    compromised_at: datetime | None = None

    def status_at(self, t: datetime) -> str:
        """``valid``, ``not_yet``, ``rotated`` or ``revoked`` at integration time ``t``."""
        if self.compromised_at is not None and t >= self.compromised_at:
            return "revoked"
        if t < self.valid_from:
            return "not_yet"
        if self.valid_until is not None and t >= self.valid_until:
            return "rotated"
        return "valid"


class KeyRing(dict[str, KeyState]):
    """An actor's keys by fingerprint, changed only by enrolment, rotation, revocation.

    ``at`` is always the integration time of the entry making the change.
    """

    def enrol(self, public_keys: list[str], at: datetime) -> None:
        for key in public_keys:
            self[fingerprint(decode_public_key(key))] = KeyState(key, at)

    def rotate(self, new_key: str, old_key: str, old_valid_until: datetime, at: datetime) -> None:
        old = self[fingerprint(decode_public_key(old_key))]
        # Not before now (what was signed stays signed), never later than an
        # earlier rotation allowed (a deadline is not extended by rotating again).
        until = max(old_valid_until, at)
        old.valid_until = until if old.valid_until is None else min(old.valid_until, until)
        self[fingerprint(decode_public_key(new_key))] = KeyState(new_key, at)

    def revoke(self, key: str, compromised_at: datetime, at: datetime) -> None:
        state = self[fingerprint(decode_public_key(key))]
        # Nothing integrated after the revocation itself may use the key,
        # whatever compromise time was claimed; a later revocation cannot move
        # an earlier compromise time.
        times = [compromised_at, at]
        if state.compromised_at is not None:
            times.append(state.compromised_at)
        state.compromised_at = min(times)

    def status_at(self, key_fingerprint: str, t: datetime) -> str:
        """Like :meth:`KeyState.status_at`, or ``unknown`` for a key not in the ring."""
        state = self.get(key_fingerprint)
        return "unknown" if state is None else state.status_at(t)


class KeyHistory:
    """Every actor's keys, replayed in ledger order: as the notary judged each entry.

    The notary judged a signature against the signer's keys as they stood
    just before that entry. A revocation recorded later may reveal a
    compromise time before an entry the notary accepted: that entry's
    signature no longer counts (except the revocation of that very key).
    Standard library only: the offline verifier and the timeline use it.
    """

    def __init__(self) -> None:
        self.rings: dict[str, KeyRing] = {}
        # (actor, fingerprint) -> (index of the revocation, effective compromise time)
        self._revoked: dict[tuple[str, str], list[tuple[int, datetime]]] = {}

    def enrol(self, actor: str, public_keys: list[str], at: datetime) -> None:
        self.rings[actor] = KeyRing()
        self.rings[actor].enrol(public_keys, at)

    def rotate(
        self, actor: str, new: str, old: str, old_valid_until: datetime, at: datetime
    ) -> None:
        self.rings[actor].rotate(new, old, old_valid_until, at)

    def revoke(
        self, actor: str, key: str, compromised_at: datetime, at: datetime, index: int
    ) -> None:
        self.rings[actor].revoke(key, compromised_at, at)
        fp = fingerprint(decode_public_key(key))
        self._revoked.setdefault((actor, fp), []).append((index, min(compromised_at, at)))

    def status(self, actor: str, key_fingerprint: str, at: datetime) -> str:
        """``valid`` (or why not) for a signature integrated at ``at``, as of now in the replay."""
        ring = self.rings.get(actor)
        return "unknown" if ring is None else ring.status_at(key_fingerprint, at)

    def compromise_revealed_later(
        self, actor: str, key_fingerprint: str, index: int, integrated: datetime
    ) -> tuple[int, datetime] | None:
        """A revocation after entry ``index`` whose compromise time precedes it, if any."""
        for revoked_at, compromised in self._revoked.get((actor, key_fingerprint), []):
            if revoked_at > index and compromised <= integrated:
                return revoked_at, compromised
        return None
