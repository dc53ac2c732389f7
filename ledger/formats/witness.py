"""C2SP tlog-witness: the ``add-checkpoint`` request and the witness's decision.

c2sp.org/tlog-witness, "add-checkpoint": a log asks a witness to cosign a new
checkpoint with ``POST <submission prefix>/add-checkpoint``. The request body
is an old size line (``old <size>``, ASCII decimal without leading zeros), at
most 63 consistency proof lines (one base64 hash each), an empty line and the
checkpoint as a signed note (c2sp.org/signed-note); every line ends in a
newline. The witness answers, in this order of checks:

- 404 Not Found: the checkpoint's origin is not a log it witnesses;
- 403 Forbidden: no signature verifies with a public key it trusts for that
  origin (signatures by unknown keys are ignored);
- 400 Bad Request: the old size is above the checkpoint's size (and, here, any
  request that does not follow the format at all);
- 409 Conflict, ``Content-Type: text/x.tlog.size``, body ``<size>\\n``: the old
  size is not the size of the latest checkpoint it cosigned for that origin
  (zero if none), so the client can ask again with a proof from that size;
- 422 Unprocessable Entity: the RFC 6962 §2.1.2 (RFC 9162 §2.1.4) consistency
  proof from the old size to the checkpoint's size does not verify (it must be
  empty when the old size is zero);
- 409 Conflict: old size and checkpoint size are equal but the root hashes are
  not (a fork). This answer is ``text/plain``, never ``text/x.tlog.size``:
  asking again cannot help;
- 200: the witness records the checkpoint as its latest for that origin and
  answers with one or more note signature lines ``— <name> <base64>``, its
  c2sp.org/tlog-cosignature ``cosignature/v1`` of the checkpoint.

The spec requires the check of the old size and the update of the witness's
record to be one atomic step, and the record to be persisted before the answer
("add-checkpoint", last paragraphs): :func:`judge` is the pure decision, the
caller (``services.witness``) runs it and persists :attr:`Outcome.state` in one
transaction before it answers.

Also here: the witness key file (``keys/witness.pem`` of a ledger home, a
PKCS#8 key like the notary's) and the witness's name. Standard library and
``cryptography`` only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.formats.checkpoint import (
    Checkpoint,
    CosignatureSigner,
    MalformedCheckpointError,
    cosignature_verifier_key,
    parse_checkpoint,
    parse_uint64,
)
from ledger.formats.errors import CHECK_FAILED, USAGE, LedgerError
from ledger.formats.keys import ActorKey, load_key, save_key
from ledger.formats.merkle import HASH_SIZE, ConsistencyProofError, empty_root, verify_consistency
from ledger.formats.note import (
    InvalidSignatureError,
    MalformedNoteError,
    NoteError,
    UnverifiedNoteError,
    Verifier,
    Verifiers,
    b64decode_strict,
    is_valid_name,
    open_note,
    sign_note,
)

__all__ = [
    "CONTENT_TYPE_SIZE",
    "CONTENT_TYPE_TEXT",
    "MAX_PROOF_LINES",
    "AddCheckpoint",
    "CosignedState",
    "MalformedWitnessRequest",
    "MalformedWitnessResponse",
    "Outcome",
    "WitnessKeyError",
    "create_witness_key",
    "encode_add_checkpoint",
    "judge",
    "load_witness_key",
    "note_text",
    "parse_add_checkpoint",
    "parse_size_response",
    "witness_name",
]

#: The Content-Type of a 409 answer that carries the witness's latest size.
CONTENT_TYPE_SIZE: Final = "text/x.tlog.size"
CONTENT_TYPE_TEXT: Final = "text/plain; charset=utf-8"
#: "The client MUST NOT send more than 63 consistency proof lines."
MAX_PROOF_LINES: Final = 63

_MAX_UINT64 = 2**64 - 1
#: The key file's actor line (keys.save_key needs one); the note name is separate.
_KEY_FILE_ACTOR = "witness"


class MalformedWitnessRequest(LedgerError, ValueError):
    """An add-checkpoint request body does not follow c2sp.org/tlog-witness."""

    code = "malformed_witness_request"
    exit_status = USAGE


class MalformedWitnessResponse(LedgerError, ValueError):
    """A witness answered add-checkpoint with something c2sp.org/tlog-witness does not allow."""

    code = "malformed_witness_response"
    exit_status = CHECK_FAILED


class WitnessKeyError(LedgerError, ValueError):
    """A witness key file is missing, unreadable or exists already, or its name is invalid."""

    code = "witness_key"
    exit_status = USAGE


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request: old size, consistency proof, checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def encode_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The add-checkpoint request body (tlog-witness "add-checkpoint")."""
    if isinstance(old_size, bool) or not 0 <= old_size <= _MAX_UINT64:
        raise MalformedWitnessRequest(f"old size {old_size!r} is not a uint64")
    if len(proof) > MAX_PROOF_LINES:
        raise MalformedWitnessRequest(f"a consistency proof has at most {MAX_PROOF_LINES} hashes")
    if any(len(h) != HASH_SIZE for h in proof):
        raise MalformedWitnessRequest("consistency proof hashes are 32 bytes")
    if not note or note.startswith(b"\n") or not note.endswith(b"\n"):
        raise MalformedWitnessRequest("the checkpoint is not a signed note")
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return "".join(f"{line}\n" for line in lines).encode("ascii") + b"\n" + note


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint request body strictly; the note is returned unopened."""
    end = body.find(b"\n\n")
    if end < 0:
        raise MalformedWitnessRequest("no empty line between the old size and the checkpoint")
    head, note = body[:end], body[end + 2 :]
    if not note or not note.endswith(b"\n"):
        raise MalformedWitnessRequest("the checkpoint is missing or does not end in a newline")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MalformedWitnessRequest("the old size and proof lines are not ASCII") from None
    first, *hash_lines = lines
    if not first.startswith("old "):
        raise MalformedWitnessRequest("the first line is not `old <size>`")
    old_size = parse_uint64(first.removeprefix("old "))
    if old_size is None:
        raise MalformedWitnessRequest(f"old size {first[4:24]!r} is not canonical decimal")
    if len(hash_lines) > MAX_PROOF_LINES:
        raise MalformedWitnessRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof: list[bytes] = []
    for i, line in enumerate(hash_lines):
        try:
            h = b64decode_strict(line)
        except ValueError:
            h = b""
        if len(h) != HASH_SIZE:
            raise MalformedWitnessRequest(f"proof line {i + 1} is not a base64 SHA-256 hash")
        proof.append(h)
    return AddCheckpoint(old_size, tuple(proof), note)


def note_text(note: bytes) -> bytes:
    """The text of a signed note (up to and including the newline before its last
    blank line), without opening it; raises MalformedNoteError when there is none."""
    split = note.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    return note[: split + 1]


def parse_size_response(body: bytes) -> int:
    """The witness's latest size from a 409 ``text/x.tlog.size`` body (``<size>\\n``)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    size = parse_uint64(text[:-1]) if text.endswith("\n") else None
    if size is None:
        raise MalformedWitnessResponse(f"not a tree size: {body[:40]!r}")
    return size


@dataclass(frozen=True)
class CosignedState:
    """What a witness remembers of one log: the latest checkpoint it cosigned."""

    size: int
    root_hash: bytes
    #: That checkpoint's note, with the witness's cosignature line appended.
    note: bytes


@dataclass(frozen=True)
class Outcome:
    """The witness's answer to one add-checkpoint request, and why."""

    #: The HTTP status (tlog-witness "add-checkpoint").
    status: int
    #: A stable reason: ``cosigned``, ``malformed``, ``unknown_origin``,
    #: ``bad_log_signature``, ``old_above_size``, ``old_size_mismatch``,
    #: ``inconsistent`` or ``fork``.
    reason: str
    #: One line for people (the witness's log).
    detail: str
    body: bytes
    content_type: str = CONTENT_TYPE_TEXT
    #: The checkpoint, once it parsed.
    checkpoint: Checkpoint | None = None
    #: The new record to persist before answering (200 only).
    state: CosignedState | None = None
    #: A request signed by the log that contradicts what the witness cosigned (a fork, a
    #: consistency proof that fails): possible proof of log misbehaviour, worth keeping.
    evidence: bool = False

    @property
    def cosigned(self) -> bool:
        return self.status == 200


def _refuse(
    status: int,
    reason: str,
    detail: str,
    checkpoint: Checkpoint | None = None,
    *,
    evidence: bool = False,
) -> Outcome:
    return Outcome(
        status, reason, detail, (detail + "\n").encode("utf-8"), CONTENT_TYPE_TEXT,
        checkpoint, None, evidence,
    )  # fmt: skip


def judge(
    body: bytes,
    known_logs: Mapping[str, Sequence[Verifier]],
    last_cosigned: Callable[[str], CosignedState | None],
    signer: CosignatureSigner,
) -> Outcome:
    """Decide one add-checkpoint request, as c2sp.org/tlog-witness "add-checkpoint" says.

    ``known_logs`` maps each origin the witness witnesses to the log keys it
    trusts for it now (an origin with no valid key refuses every signature);
    ``last_cosigned`` gives the witness's record for an origin. Bad input is an
    Outcome, never an exception. On 200 the body is the cosignature line and
    ``state`` the record the caller must persist before it answers.
    """
    try:
        request = parse_add_checkpoint(body)
        text = note_text(request.note)
        checkpoint = parse_checkpoint(text.decode("utf-8"))
    except (MalformedWitnessRequest, MalformedNoteError, MalformedCheckpointError) as e:
        return _refuse(400, "malformed", f"malformed request: {e}")
    except UnicodeDecodeError:
        return _refuse(400, "malformed", "malformed request: the checkpoint is not UTF-8")
    origin = checkpoint.origin
    keys = known_logs.get(origin)
    if keys is None:
        return _refuse(404, "unknown_origin", f"unknown origin {origin!r}", checkpoint)
    try:
        opened = open_note(request.note, Verifiers(*_distinct(keys)))
    except (UnverifiedNoteError, InvalidSignatureError) as e:
        return _refuse(
            403, "bad_log_signature", f"{origin}: no valid signature by a log key ({e})", checkpoint
        )
    except NoteError as e:
        return _refuse(400, "malformed", f"malformed checkpoint note: {e}", checkpoint)
    if request.old_size > checkpoint.size:
        return _refuse(
            400,
            "old_above_size",
            f"{origin}: old size {request.old_size} is above the checkpoint size {checkpoint.size}",
            checkpoint,
        )
    last = last_cosigned(origin)
    last_size = last.size if last is not None else 0
    if request.old_size != last_size:
        return Outcome(
            409,
            "old_size_mismatch",
            f"{origin}: old size {request.old_size}, the latest cosigned size is {last_size}",
            f"{last_size}\n".encode("ascii"),
            CONTENT_TYPE_SIZE,
            checkpoint,
        )
    old_root = last.root_hash if last is not None else empty_root()
    if request.old_size == checkpoint.size and old_root != checkpoint.root_hash:
        return _refuse(
            409,
            "fork",
            f"{origin}: size {checkpoint.size} with root {_b64(checkpoint.root_hash)}, but the "
            f"checkpoint cosigned at that size has root {_b64(old_root)}",
            checkpoint,
            evidence=True,
        )
    try:
        verify_consistency(
            request.old_size, checkpoint.size, old_root, checkpoint.root_hash, request.proof
        )
    except ConsistencyProofError as e:
        return _refuse(
            422,
            "inconsistent",
            f"{origin}: size {checkpoint.size} is not consistent with the cosigned size "
            f"{request.old_size}: {e}",
            checkpoint,
            evidence=True,
        )
    try:
        cosigned = sign_note(opened, signer)
    except NoteError as e:
        return _refuse(400, "malformed", f"cannot cosign: {e}", checkpoint)
    line = cosigned[cosigned.rstrip(b"\n").rfind(b"\n") + 1 :]
    return Outcome(
        200,
        "cosigned",
        f"{origin}: cosigned size {checkpoint.size} (from {request.old_size})",
        line,
        CONTENT_TYPE_TEXT,
        checkpoint,
        CosignedState(checkpoint.size, checkpoint.root_hash, cosigned),
    )


def _distinct(keys: Sequence[Verifier]) -> list[Verifier]:
    """One verifier per key: a trust policy may list a key twice (two validity windows)."""
    seen: dict[str, Verifier] = {}
    for v in keys:
        seen.setdefault(v.vkey, v)
    return list(seen.values())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the witness's key --------------------------------------------------------------------


def witness_name(origin: str) -> str:
    """The name of a ledger's own witness: ``<host of the origin>/witness``
    (``ailedger.local/registry`` -> ``ailedger.local/witness``), ``witness`` when the
    origin's first part is not a valid key name."""
    host = origin.split("/", 1)[0]
    name = f"{host}/witness"
    return name if host and is_valid_name(name) else "witness"


def create_witness_key(path: Path, name: str) -> str:
    """Write a new witness key to ``path`` (PKCS#8 PEM, mode 0600, never over an existing
    file) and return its cosignature verifier key ``<name>+<id>+<base64>``."""
    if not is_valid_name(name):
        raise WitnessKeyError(f"invalid witness name {name!r}")
    key = ActorKey(_KEY_FILE_ACTOR, Ed25519PrivateKey.generate())
    try:
        save_key(key, path)
    except LedgerError as e:
        raise WitnessKeyError(str(e)) from None
    return cosignature_verifier_key(name, key.public_key)


def load_witness_key(
    path: Path, name: str, clock: Callable[[], int] | None = None
) -> CosignatureSigner:
    """The witness's cosigning key from ``path``, named ``name``, timestamping with
    ``clock`` (POSIX seconds; default: the system clock)."""
    if not is_valid_name(name):
        raise WitnessKeyError(f"invalid witness name {name!r}")
    try:
        key = load_key(path, _KEY_FILE_ACTOR)
    except LedgerError as e:
        raise WitnessKeyError(str(e)) from None
    if clock is None:
        return CosignatureSigner(name, key.private_key)
    return CosignatureSigner(name, key.private_key, clock)
