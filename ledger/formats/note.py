"""C2SP signed-note (c2sp.org/signed-note), as Go's golang.org/x/mod/sumdb/note.

A note is UTF-8 text ending in a newline, a blank line, then one or more
signature lines ``— <key name> base64(key ID || signature)``. The key ID is the
first four bytes, big-endian, of SHA-256(name || 0x0A || signature type ||
public key); Ed25519 is signature type 0x01. Keys are written as in Go:
verifier keys ``<name>+<hex key ID>+base64(type || public key)`` and signer keys
``PRIVATE+KEY+<name>+<hex key ID>+base64(type || seed)``.

``open_note`` follows Go's ``note.Open``: signatures by unknown keys are kept
as unverified, a signature by a known key that fails is an error, and a note
without any verified signature is an error. It is stricter in two places the
spec allows: base64 must be canonical (so no two encodings of one signature
exist) and every signature by a known key is verified, repeated ones included.

Signature types other than 0x01 (tlog cosignatures, ledger/checkpoint.py)
subclass ``Signer`` and ``Verifier``, changing ``ALG`` and the signature layout.

Compatibility: tests/test_note.py reproduces exactly the notes of
tests/vectors/signed-note.json and of the sumdb/note package documentation,
all produced by Go.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import ClassVar, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ledger.formats.errors import CHECK_FAILED, USAGE, LedgerError

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "AmbiguousVerifierError",
    "InvalidSignatureError",
    "MalformedKeyError",
    "MalformedNoteError",
    "Note",
    "NoteError",
    "Signature",
    "Signer",
    "UnknownVerifierError",
    "UnverifiedNoteError",
    "Verifier",
    "Verifiers",
    "b64decode_strict",
    "generate_key",
    "is_valid_name",
    "key_hash",
    "open_note",
    "open_record",
    "sign_note",
    "signer_key",
    "verifier_key",
]

ALG_ED25519 = 0x01

#: Go rejects notes with more signatures; the spec requires accepting 16.
MAX_SIGNATURES = 100

_SIG_PREFIX = "— "
# C0 controls other than newline are forbidden anywhere in a note.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
# The Unicode White_Space property, which is what Go's unicode.IsSpace tests.
_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class NoteError(LedgerError, ValueError):
    """A signed note or key could not be parsed, signed or verified."""

    code = "note"
    exit_status = USAGE


class MalformedNoteError(NoteError):
    """The note does not follow the signed-note format."""

    code = "malformed_note"
    exit_status = USAGE


class MalformedKeyError(NoteError):
    """A signer or verifier key string is malformed, of another type, or has a wrong key ID."""

    code = "malformed_key"
    exit_status = USAGE


class UnknownVerifierError(NoteError):
    """No known verifier has this name and key ID."""

    code = "unknown_verifier"
    exit_status = USAGE

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"unknown key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class AmbiguousVerifierError(NoteError):
    """Several known verifiers have this name and key ID: the trust list is broken."""

    code = "ambiguous_verifier"
    exit_status = USAGE

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"ambiguous key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class InvalidSignatureError(NoteError):
    """A known key's signature does not verify."""

    code = "invalid_signature"
    exit_status = CHECK_FAILED

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class UnverifiedNoteError(NoteError):
    """The note is well formed but no known key signed it; ``note`` holds what was read."""

    code = "unverified_note"
    exit_status = CHECK_FAILED

    def __init__(self, note: Note) -> None:
        super().__init__("note has no verifiable signatures")
        self.note = note


def b64decode_strict(s: str) -> bytes:
    """Decode padded standard base64 (RFC 4648 §4) in its canonical form only.

    Raises ValueError otherwise. Canonical means padded and with zero unused
    bits, so that each byte string has exactly one accepted encoding.
    """
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("invalid base64") from e
    if base64.b64encode(data).decode("ascii") != s:
        raise ValueError("non-canonical base64")
    return data


def is_valid_name(name: str) -> bool:
    """Report whether name is a valid key name: non-empty, no spaces, no '+', no controls."""
    return (
        name != ""
        and "+" not in name
        and not any(c in _WHITE_SPACE for c in name)
        and _CONTROL.search(name) is None
        and _is_utf8(name)
    )


def _is_utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def key_hash(name: str, key: bytes) -> int:
    """Return the key ID of ``key`` (signature type byte || public key) named ``name``."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _encode_key(name: str, alg: int, key: bytes, public: bytes) -> str:
    """Return ``<name>+<hex key ID>+base64(alg || key)``; the ID is always of the public key."""
    if not is_valid_name(name):
        raise MalformedKeyError(f"invalid key name {name!r}")
    kh = key_hash(name, bytes([alg]) + public)
    return f"{name}+{kh:08x}+{base64.b64encode(bytes([alg]) + key).decode('ascii')}"


def _decode_key(encoded: str, what: str) -> tuple[str, int, int, bytes]:
    """Split ``<name>+<hex key ID>+base64(alg || key)`` into (name, key ID, alg, key)."""
    name, _, rest = encoded.partition("+")
    hash16, _, key64 = rest.partition("+")
    try:
        key = b64decode_strict(key64)
    except ValueError:
        key = b""
    if (
        len(hash16) != 8
        or any(c not in "0123456789abcdefABCDEF" for c in hash16)
        or not is_valid_name(name)
        or not key
    ):
        raise MalformedKeyError(f"malformed {what} key")
    return name, int(hash16, 16), key[0], key[1:]


def verifier_key(name: str, public_key: bytes, alg: int = ALG_ED25519) -> str:
    """Return the verifier key string of a raw 32-byte Ed25519 public key used as type alg."""
    if len(public_key) != 32:
        raise MalformedKeyError(f"Ed25519 public key is {len(public_key)} bytes, not 32")
    return _encode_key(name, alg, public_key, public_key)


def signer_key(name: str, private_key: Ed25519PrivateKey) -> str:
    """Return the signer key string ``PRIVATE+KEY+...`` for an Ed25519 key. Keep it secret."""
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return "PRIVATE+KEY+" + _encode_key(
        name, ALG_ED25519, seed, _raw_public(private_key.public_key())
    )


def generate_key(name: str) -> tuple[str, str]:
    """Generate an Ed25519 key pair; return (signer key, verifier key) strings."""
    private_key = Ed25519PrivateKey.generate()
    return signer_key(name, private_key), verifier_key(name, _raw_public(private_key.public_key()))


class Verifier:
    """Verifies signatures of one named Ed25519 key (signature type ``ALG``).

    Subclasses for other signature types change ``ALG`` and override ``verify``.
    """

    ALG: ClassVar[int] = ALG_ED25519

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not is_valid_name(name):
            raise MalformedKeyError(f"invalid key name {name!r}")
        self.name = name
        self.public_key = public_key
        self.key_hash = key_hash(name, bytes([self.ALG]) + _raw_public(public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        """Parse a verifier key string of this class's signature type."""
        name, kh, alg, key = _decode_key(vkey, "verifier")
        if alg != cls.ALG:
            raise MalformedKeyError(
                f"verifier key has signature type {alg:#04x}, not {cls.ALG:#04x}"
            )
        if len(key) != 32:
            raise MalformedKeyError("malformed verifier key")
        if kh != key_hash(name, bytes([alg]) + key):
            raise MalformedKeyError("verifier key ID does not match the key")
        return cls(name, Ed25519PublicKey.from_public_bytes(key))

    @property
    def vkey(self) -> str:
        """The verifier key string."""
        return verifier_key(self.name, _raw_public(self.public_key), self.ALG)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Report whether sig is this key's signature of the note text msg."""
        return self._verify_ed25519(msg, sig)

    def _verify_ed25519(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            self.public_key.verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}+{self.key_hash:08x})"


class Signer:
    """Signs note texts with one named Ed25519 key (signature type ``ALG``).

    Subclasses for other signature types change ``ALG``, ``VERIFIER`` and ``sign``.
    """

    ALG: ClassVar[int] = ALG_ED25519
    VERIFIER: ClassVar[type[Verifier]] = Verifier

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not is_valid_name(name):
            raise MalformedKeyError(f"invalid key name {name!r}")
        self.name = name
        self._private_key = private_key
        public = _raw_public(private_key.public_key())
        self.key_hash = key_hash(name, bytes([self.ALG]) + public)

    @classmethod
    def from_private_key(cls, name: str, private_key: Ed25519PrivateKey) -> Self:
        """Return the signer named ``name`` for ``private_key``."""
        return cls(name, private_key)

    @classmethod
    def from_skey(cls, skey: str) -> Self:
        """Parse a signer key string ``PRIVATE+KEY+<name>+<hex key ID>+<base64>``."""
        if not skey.startswith("PRIVATE+KEY+"):
            raise MalformedKeyError("malformed signer key")
        name, kh, alg, seed = _decode_key(skey.removeprefix("PRIVATE+KEY+"), "signer")
        if alg != cls.ALG:
            raise MalformedKeyError(f"signer key has signature type {alg:#04x}, not {cls.ALG:#04x}")
        if len(seed) != 32:
            raise MalformedKeyError("malformed signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        # The key ID is of the public key, so it can only be checked after deriving it.
        if signer.key_hash != kh:
            raise MalformedKeyError("signer key ID does not match the key")
        return signer

    def verifier(self) -> Verifier:
        """Return the verifier of this signer's signatures."""
        return self.VERIFIER(self.name, self._private_key.public_key())

    def sign(self, msg: bytes) -> bytes:
        """Return the signature of the note text msg."""
        return self._private_key.sign(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}+{self.key_hash:08x})"


class Verifiers:
    """The known verifier keys, looked up by (name, key ID)."""

    def __init__(self, *verifiers: Verifier) -> None:
        self._map: dict[tuple[str, int], list[Verifier]] = {}
        for v in verifiers:
            self._map.setdefault((v.name, v.key_hash), []).append(v)

    def verifier(self, name: str, key_hash: int) -> Verifier:
        found = self._map.get((name, key_hash))
        if not found:
            raise UnknownVerifierError(name, key_hash)
        if len(found) > 1:
            raise AmbiguousVerifierError(name, key_hash)
        return found[0]


@dataclass(frozen=True)
class Signature:
    """One signature line of a note: key name, key ID and base64(key ID || signature)."""

    name: str
    key_hash: int
    base64: str


@dataclass(frozen=True)
class Note:
    """A note text with its verified and unverified signatures."""

    text: str
    sigs: tuple[Signature, ...] = ()
    unverified_sigs: tuple[Signature, ...] = ()


def open_note(msg: bytes, verifiers: Verifiers) -> Note:
    """Parse the signed note msg and verify its signatures by the known verifiers."""
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("note is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise MalformedNoteError("note contains a control character")
    # The text is separated from the signatures by the last blank line.
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block.endswith(b"\n"):
        raise MalformedNoteError("note has no signatures or does not end in a newline")
    lines = block[:-1].decode("utf-8").split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"note has more than {MAX_SIGNATURES} signatures")

    sigs: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError("signature line does not start with an em dash and a space")
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            raw = b64decode_strict(b64)
        except ValueError:
            raise MalformedNoteError(f"signature by {name!r} is not canonical base64") from None
        if not is_valid_name(name) or len(raw) < 5:
            raise MalformedNoteError("malformed signature line")
        kh = int.from_bytes(raw[:4], "big")
        sig = Signature(name, kh, b64)
        try:
            verifier = verifiers.verifier(name, kh)
        except UnknownVerifierError:
            if line not in seen_unverified:
                seen_unverified.add(line)
                unverified.append(sig)
            continue
        if not verifier.verify(text, raw[4:]):
            raise InvalidSignatureError(name, kh)
        if (name, kh) not in seen:
            seen.add((name, kh))
            sigs.append(sig)

    note = Note(text.decode("utf-8"), tuple(sigs), tuple(unverified))
    if not sigs:
        raise UnverifiedNoteError(note)
    return note


def open_record(
    note: bytes,
    verifiers: Verifiers,
    *,
    header: str,
    names: tuple[str, ...],
    what: str,
    error: type[Exception],
) -> tuple[Note, str, dict[str, str]]:
    """Open a note whose body is ``header``, an origin line, then one ``<name> <value>``
    line per name, signed by a key named after the origin (ailedger's seals and
    rejections). Returns the note, the origin and the values; any deviation raises
    ``error`` with ``what`` naming the record."""
    try:
        opened = open_note(note, verifiers)
    except NoteError as e:
        raise error(f"{what} signature: {e}") from None
    lines = opened.text.split("\n")
    if len(lines) != len(names) + 3 or lines[-1] != "" or lines[0] != header:
        raise error(f"{what} body is not {header}")
    origin = lines[1]
    if not any(sig.name == origin for sig in opened.sigs):
        raise error(f"{what} of {origin!r} is not signed by a key of that name")
    fields: dict[str, str] = {}
    for line, name in zip(lines[2:-1], names, strict=True):
        key, sep, value = line.partition(" ")
        if key != name or not sep:
            raise error(f"{what} line {line[:40]!r}: expected {name}")
        fields[name] = value
    return opened, origin, fields


def sign_note(text: str | Note, *signers: Signer) -> bytes:
    """Return the note text signed by signers.

    Given a Note, its existing signatures are kept, before the new ones, except
    those by the same keys as the signers (as Go's ``note.Sign``): this is how a
    witness adds its cosignature to a checkpoint signed by the log.
    """
    existing: tuple[Signature, ...] = ()
    if isinstance(text, Note):
        existing = text.sigs + text.unverified_sigs
        text = text.text
    if not text.endswith("\n"):
        raise MalformedNoteError("note text does not end in a newline")
    if _CONTROL.search(text):
        raise MalformedNoteError("note text contains a control character")
    try:
        msg = text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedNoteError("note text is not valid UTF-8") from None

    replaced = {(s.name, s.key_hash) for s in signers}
    lines: list[str] = []
    for old in existing:
        if (old.name, old.key_hash) in replaced:
            continue
        try:
            raw = b64decode_strict(old.base64)
        except ValueError:
            raw = b""
        if (
            not is_valid_name(old.name)
            or len(raw) < 5
            or raw[:4] != old.key_hash.to_bytes(4, "big")
        ):
            raise MalformedNoteError("malformed existing signature")
        lines.append(f"{_SIG_PREFIX}{old.name} {old.base64}\n")
    for signer in signers:
        if not is_valid_name(signer.name):
            raise NoteError(f"invalid signer name {signer.name!r}")
        raw = signer.key_hash.to_bytes(4, "big") + signer.sign(msg)
        lines.append(f"{_SIG_PREFIX}{signer.name} {base64.b64encode(raw).decode('ascii')}\n")
    if not lines:
        raise NoteError("a note needs at least one signature")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note can have at most {MAX_SIGNATURES} signatures")
    return msg + b"\n" + "".join(lines).encode("utf-8")
