"""Signed rejections: the notary's final verdict that an event is refused.

A C2SP signed note by the log key whose body is exactly::

    ailedger/rejection/v1
    <origin>
    event <event id>
    envelope <base64 SHA-256 of the submitted bytes>
    code <reason code>
    at <RFC 3339 UTC: when the notary judged it>

Only deterministic rejections (the bytes, the signature, the state) are
signed: they are final, and the same event id then always gets this very
note. Transient failures are not verdicts and are never signed. Parsing is
all-or-nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.note import Signer, Verifiers, b64decode_strict, open_record, sign_note
from ledger.formats.timeutil import ClockError, format_time, parse_time

__all__ = [
    "REJECTION_HEADER",
    "RejectionNoteError",
    "SignedRejection",
    "open_rejection",
    "sign_rejection",
]

REJECTION_HEADER = "ailedger/rejection/v1"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class RejectionNoteError(LedgerError, ValueError):
    """A rejection note that is malformed or not signed by a log key."""

    code = "rejection_invalid"
    exit_status = CHECK_FAILED


@dataclass(frozen=True)
class SignedRejection:
    origin: str
    event_id: str
    envelope_sha256: bytes
    code: str
    at: datetime
    note: bytes

    def body(self) -> str:
        return rejection_body(self.origin, self.event_id, self.envelope_sha256, self.code, self.at)

    def is_for(self, envelope: bytes) -> bool:
        """Whether this rejection is of exactly these submitted bytes."""
        return hashlib.sha256(envelope).digest() == self.envelope_sha256


def rejection_body(
    origin: str, event_id: str, envelope_sha256: bytes, code: str, at: datetime
) -> str:
    return (
        f"{REJECTION_HEADER}\n{origin}\nevent {event_id}\n"
        f"envelope {base64.b64encode(envelope_sha256).decode('ascii')}\n"
        f"code {code}\nat {format_time(at)}\n"
    )


def sign_rejection(
    signer: Signer, event_id: str, envelope: bytes, code: str, at: datetime
) -> SignedRejection:
    """Sign the rejection of the submitted bytes ``envelope`` (origin: the signer's name)."""
    if not _UUID.fullmatch(event_id) or not _CODE.fullmatch(code):
        raise RejectionNoteError(f"cannot sign a rejection of {event_id!r} with code {code!r}")
    digest = hashlib.sha256(envelope).digest()
    note = sign_note(rejection_body(signer.name, event_id, digest, code, at), signer)
    return SignedRejection(signer.name, event_id, digest, code, at, note)


def open_rejection(note: bytes, verifiers: Verifiers) -> SignedRejection:
    """Verify the signature by a log key named after the origin; parse strictly."""
    opened, origin, fields = open_record(
        note,
        verifiers,
        header=REJECTION_HEADER,
        names=("event", "envelope", "code", "at"),
        what="rejection",
        error=RejectionNoteError,
    )
    if not _UUID.fullmatch(fields["event"]) or not _CODE.fullmatch(fields["code"]):
        raise RejectionNoteError("rejection event id or code is malformed")
    try:
        digest = b64decode_strict(fields["envelope"])
        at = parse_time(fields["at"])
    except (ValueError, ClockError) as e:
        raise RejectionNoteError(f"rejection: {e}") from None
    if len(digest) != 32:
        raise RejectionNoteError("rejection envelope hash is not 32 bytes")
    rejection = SignedRejection(origin, fields["event"], digest, fields["code"], at, note)
    if rejection.body() != opened.text:
        raise RejectionNoteError("rejection body is not canonical")
    return rejection
