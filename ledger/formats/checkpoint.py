"""C2SP tlog-checkpoint, Ed25519 tlog-cosignature v1 and tlog-proof.

- c2sp.org/tlog-checkpoint: the note text of a signed tree head is the origin
  line, the tree size in decimal and the base64 root hash, then optional
  non-empty extension lines, each ending in a newline.
- c2sp.org/tlog-cosignature, Ed25519 "cosignature/v1": a witness signs, with
  signature type 0x04, the message ``cosignature/v1\\ntime <T>\\n`` followed by
  the whole checkpoint text, where T is POSIX seconds; the note signature is
  the 8-byte big-endian T followed by the 64-byte Ed25519 signature.
  ``CosignatureSigner`` and ``CosignatureVerifier`` plug into ``note.sign_note``
  and ``note.open_note``.
- c2sp.org/tlog-proof@v1: a leaf index, its inclusion proof and the
  (cosigned) checkpoint that proves it, as one text file.

Parsing is strict and all-or-nothing: anything but the canonical encoding is
rejected. Compatibility: tests/test_checkpoint.py verifies a checkpoint of a
public log cosigned by a public witness, and the examples of the C2SP specs.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.merkle import HASH_SIZE
from ledger.formats.note import (
    MalformedNoteError,
    Signature,
    Signer,
    Verifier,
    b64decode_strict,
    verifier_key,
)

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_TIMESTAMP",
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "CosignatureSigner",
    "CosignatureVerifier",
    "MalformedCheckpointError",
    "MalformedTlogProofError",
    "TlogProof",
    "cosignature_timestamp",
    "cosignature_verifier_key",
    "format_tlog_proof",
    "parse_checkpoint",
    "parse_tlog_proof",
    "parse_uint64",
]

ALG_COSIGNATURE_V1 = 0x04

#: Cosignature timestamps are u64 on the wire but MUST NOT exceed 2^63 - 1.
MAX_TIMESTAMP = 2**63 - 1

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"

# Tree sizes and leaf indexes are uint64 in RFC 9162 and C2SP.
_MAX_UINT64 = 2**64 - 1
# A path in a tree of at most 2^64 leaves has at most 64 hashes.
_MAX_PROOF_HASHES = 64
_DECIMAL = re.compile("0|[1-9][0-9]*")
_CONTROL = re.compile("[\x00-\x1f]")


class MalformedCheckpointError(LedgerError, ValueError):
    """A checkpoint body does not follow c2sp.org/tlog-checkpoint."""

    code = "malformed_checkpoint"
    exit_status = USAGE


class MalformedTlogProofError(LedgerError, ValueError):
    """A proof file does not follow c2sp.org/tlog-proof@v1."""

    code = "malformed_tlog_proof"
    exit_status = USAGE


def parse_uint64(s: str) -> int | None:
    """Parse ASCII decimal without sign, spaces or leading zeros; None if not a uint64."""
    if len(s) > 20 or _DECIMAL.fullmatch(s) is None:
        return None
    n = int(s)
    return n if n <= _MAX_UINT64 else None


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A checkpoint is always the text of a signed note: no line breaks or controls.
        if not self.origin or _CONTROL.search(self.origin):
            raise MalformedCheckpointError("origin must be a non-empty line")
        if isinstance(self.size, bool) or not 0 <= self.size <= _MAX_UINT64:
            raise MalformedCheckpointError(f"tree size {self.size!r} is not a uint64")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpointError(f"root hash is {len(self.root_hash)} bytes, not 32")
        for ext in self.extensions:
            if not ext or _CONTROL.search(ext):
                raise MalformedCheckpointError("extension lines must be non-empty lines")

    def body(self) -> str:
        """Return the note text of this checkpoint."""
        root = _b64encode(self.root_hash)
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text (signatures already removed, e.g. by ``open_note``)."""
    if not text.endswith("\n"):
        raise MalformedCheckpointError("checkpoint does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedCheckpointError("checkpoint has fewer than three lines")
    origin, size_line, root_line, *extensions = lines
    size = parse_uint64(size_line)
    if size is None:
        raise MalformedCheckpointError(f"tree size {size_line!r} is not canonical decimal")
    try:
        root = b64decode_strict(root_line)
    except ValueError:
        raise MalformedCheckpointError("root hash is not canonical base64") from None
    return Checkpoint(origin, size, root, tuple(extensions))


def _cosigned_message(timestamp: int, body: bytes) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def _is_checkpoint(body: bytes) -> bool:
    try:
        parse_checkpoint(body.decode("utf-8"))
    except (UnicodeDecodeError, MalformedCheckpointError):
        return False
    return True


def _unix_now() -> int:
    return int(time.time())


class CosignatureVerifier(Verifier):
    """Verifies a witness's Ed25519 cosignature/v1 (signature type 0x04) of a checkpoint."""

    ALG: ClassVar[int] = ALG_COSIGNATURE_V1

    def verify(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != 8 + 64:
            return False
        timestamp = int.from_bytes(sig[:8], "big")
        # A cosignature is a statement about a checkpoint; of any other text it is invalid.
        if timestamp > MAX_TIMESTAMP or not _is_checkpoint(msg):
            return False
        return self._verify_ed25519(_cosigned_message(timestamp, msg), sig[8:])


class CosignatureSigner(Signer):
    """Cosigns checkpoints as a witness: Ed25519 cosignature/v1 with the clock's time."""

    ALG: ClassVar[int] = ALG_COSIGNATURE_V1
    VERIFIER: ClassVar[type[Verifier]] = CosignatureVerifier

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        clock: Callable[[], int] = _unix_now,
    ) -> None:
        super().__init__(name, private_key)
        self._clock = clock

    def sign(self, msg: bytes) -> bytes:
        if not _is_checkpoint(msg):
            raise MalformedCheckpointError("a cosignature can only sign a checkpoint")
        timestamp = self._clock()
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"cosignature timestamp {timestamp} out of range")
        signature = super().sign(_cosigned_message(timestamp, msg))
        return timestamp.to_bytes(8, "big") + signature


def cosignature_verifier_key(name: str, public_key: bytes) -> str:
    """Return the verifier key string (type 0x04) of a witness's raw 32-byte Ed25519 key."""
    return verifier_key(name, public_key, ALG_COSIGNATURE_V1)


def cosignature_timestamp(sig: Signature) -> int:
    """Return the POSIX time a cosignature/v1 claims.

    Only meaningful for a signature that ``open_note`` verified with a
    ``CosignatureVerifier`` (one in ``Note.sigs``).
    """
    try:
        raw = b64decode_strict(sig.base64)
    except ValueError:
        raw = b""
    if len(raw) != 4 + 8 + 64:
        raise MalformedNoteError(f"signature by {sig.name!r} is not an Ed25519 cosignature/v1")
    timestamp = int.from_bytes(raw[4:12], "big")
    if timestamp > MAX_TIMESTAMP:
        raise MalformedNoteError(f"cosignature by {sig.name!r} has a timestamp above 2^63-1")
    return timestamp


@dataclass(frozen=True)
class TlogProof:
    """A c2sp.org/tlog-proof@v1: leaf index, inclusion proof, checkpoint note, extra data.

    Nothing in it is verified: open ``checkpoint`` with the trust policy's
    verifiers, then check ``proof`` against the checkpoint's root. ``extra`` is
    not authenticated at all.
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None


def format_tlog_proof(
    index: int,
    proof_hashes: Sequence[bytes],
    checkpoint_note: bytes,
    extra: bytes | None = None,
) -> bytes:
    """Return the tlog-proof text for leaf ``index`` with its inclusion proof and checkpoint."""
    if isinstance(index, bool) or not 0 <= index <= _MAX_UINT64:
        raise ValueError(f"leaf index {index!r} is not a uint64")
    if len(proof_hashes) > _MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in proof_hashes):
        raise ValueError("inclusion proof must be at most 64 hashes of 32 bytes")
    _check_checkpoint_note(checkpoint_note, ValueError)
    # An absent line means no extra data, so empty extra data has no encoding.
    if extra is not None and not extra:
        raise ValueError("extra data must be non-empty or None")
    lines = [TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append(f"extra {_b64encode(extra)}")
    lines.append(f"index {index}")
    lines.extend(_b64encode(h) for h in proof_hashes)
    return "".join(f"{line}\n" for line in lines).encode("ascii") + b"\n" + checkpoint_note


def _check_checkpoint_note(note: bytes, error: type[ValueError]) -> None:
    # A note starts with its (non-empty) origin line and ends with a newline;
    # a leading newline would also make the empty separator line ambiguous.
    if not note or note.startswith(b"\n") or not note.endswith(b"\n"):
        raise error("checkpoint is not a signed note")


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse a tlog-proof; the checkpoint note is returned unopened."""
    end = data.find(b"\n\n")
    if end < 0:
        raise MalformedTlogProofError("no empty line before the checkpoint")
    head, checkpoint = data[:end], data[end + 2 :]
    _check_checkpoint_note(checkpoint, MalformedTlogProofError)
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MalformedTlogProofError("proof header is not ASCII") from None
    if lines[0] != TLOG_PROOF_HEADER:
        raise MalformedTlogProofError(f"first line is not {TLOG_PROOF_HEADER!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        try:
            extra = b64decode_strict(lines[pos].removeprefix("extra "))
        except ValueError:
            raise MalformedTlogProofError("extra data is not canonical base64") from None
        if not extra:
            raise MalformedTlogProofError("extra line without data")
        pos += 1
    if pos == len(lines) or not lines[pos].startswith("index "):
        raise MalformedTlogProofError("missing index line")
    index = parse_uint64(lines[pos].removeprefix("index "))
    if index is None:
        raise MalformedTlogProofError("index is not canonical decimal")
    hash_lines = lines[pos + 1 :]
    if len(hash_lines) > _MAX_PROOF_HASHES:
        raise MalformedTlogProofError("inclusion proof has more than 64 hashes")
    proof: list[bytes] = []
    for line in hash_lines:
        try:
            h = b64decode_strict(line)
        except ValueError:
            h = b""
        if len(h) != HASH_SIZE:
            raise MalformedTlogProofError(f"proof line {line!r} is not a base64 SHA-256 hash")
        proof.append(h)
    return TlogProof(index, tuple(proof), checkpoint, extra)
