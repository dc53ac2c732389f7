"""Receipts: the notary's promise that an exact entry is in the ledger.

A receipt is returned on acceptance, only after LEDGER acknowledged the batch
(fsynced), before any checkpoint covers the entry. It is text, exactly::

    ailedger/receipt/v2
    index <n>
    integrated <RFC 3339 UTC>
    subject <subject>
    prev <index | none>
    event <event id>
    <base64 inclusion-proof hash>        (zero or more, one per line)
    <empty line>
    <the batch's seal: a signed note, ledger/formats/seal.py>

It carries no signature of its own: the submitter rebuilds the entry from
these lines and its own envelope bytes, hashes it, folds the proof up to the
seal's root and checks the seal with the log key (once per seal: one
signature covers a whole batch of receipts). The same entry always yields the
same receipt, which is how a resubmitted event gets "the same receipt".
Parsing is all-or-nothing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from ledger.formats import strictjson
from ledger.formats.dsse import EnvelopeError, parse_envelope
from ledger.formats.entry import Entry, MalformedEntryError
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.merkle import ProofError, verify_inclusion
from ledger.formats.note import Verifiers, b64decode_strict
from ledger.formats.seal import Seal, SealCache, SealError, open_seal, parse_uint
from ledger.formats.timeutil import ClockError, format_time, parse_time

__all__ = [
    "RECEIPT_HEADER",
    "Receipt",
    "ReceiptError",
    "format_receipt",
    "make_receipt",
    "open_receipt",
]

RECEIPT_HEADER = "ailedger/receipt/v2"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: An entry's path in a tree of at most 2^63 leaves.
MAX_PROOF = 63


class ReceiptError(LedgerError, ValueError):
    """A receipt that is malformed, does not prove the exact entry, or has a bad seal."""

    code = "receipt_invalid"
    exit_status = CHECK_FAILED


@dataclass(frozen=True)
class Receipt:
    """A verified receipt: the entry it proves, the proof and the batch's seal."""

    entry: Entry
    event_id: str
    proof: tuple[bytes, ...]
    seal: Seal

    @property
    def origin(self) -> str:
        return self.seal.origin

    @property
    def index(self) -> int:
        return self.entry.index

    @property
    def integrated(self) -> datetime:
        return self.entry.integrated

    @property
    def subject(self) -> str:
        return self.entry.subject

    @property
    def prev(self) -> int | None:
        return self.entry.prev

    @property
    def leaf_hash(self) -> bytes:
        return self.entry.leaf_hash

    @cached_property
    def note(self) -> bytes:
        """The receipt's text, as sent (the name is kept from v1, where it was a note)."""
        return format_receipt(self.entry, self.event_id, self.proof, self.seal.note)


def format_receipt(entry: Entry, event_id: str, proof: Sequence[bytes], seal_note: bytes) -> bytes:
    prev = "none" if entry.prev is None else str(entry.prev)
    head = (
        f"{RECEIPT_HEADER}\nindex {entry.index}\n"
        f"integrated {format_time(entry.integrated)}\nsubject {entry.subject}\n"
        f"prev {prev}\nevent {event_id}\n"
    )
    hashes = "".join(_b64(h) + "\n" for h in proof)
    return (head + hashes + "\n").encode("ascii") + seal_note


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_receipt(
    entry: Entry, event_id: str, proof: Sequence[bytes], seal: Seal, *, checked: bool = False
) -> Receipt:
    """The notary's side: the receipt of ``entry`` in the tree of ``seal``. The proof
    is verified unless the caller has ``checked`` it already (the notary verifies
    the first and last proof of each batch it proves at once)."""
    if not checked:
        try:
            verify_inclusion(entry.leaf_hash, entry.index, seal.size, proof, seal.root)
        except ProofError as e:
            raise ReceiptError(f"entry {entry.index} is not under its seal: {e}") from None
    return Receipt(entry, event_id, tuple(proof), seal)


def open_receipt(data: bytes, envelope: bytes, verifiers: Verifiers | SealCache) -> Receipt:
    """Check that ``data`` proves the entry of ``envelope`` (the submitter's own
    bytes) under a seal signed by a known log key; return the receipt.

    ``verifiers`` may be a :class:`SealCache`, so that each seal is verified once.
    """
    split = data.find(b"\n\n")
    if split < 0:
        raise ReceiptError("receipt has no empty line before its seal")
    try:
        head = data[: split + 1].decode("ascii")
    except UnicodeDecodeError:
        raise ReceiptError("receipt lines are not ASCII") from None
    seal_note = data[split + 2 :]
    lines = head.split("\n")[:-1]
    if len(lines) < 6 or lines[0] != RECEIPT_HEADER:
        raise ReceiptError("receipt is not ailedger/receipt/v2")
    fields: dict[str, str] = {}
    for line, name in zip(
        lines[1:6], ("index", "integrated", "subject", "prev", "event"), strict=True
    ):
        key, sep, value = line.partition(" ")
        if key != name or not sep:
            raise ReceiptError(f"receipt line {line[:40]!r}: expected {name}")
        fields[name] = value
    index = parse_uint(fields["index"], "index", ReceiptError)
    prev = None if fields["prev"] == "none" else parse_uint(fields["prev"], "prev", ReceiptError)
    if not _UUID.fullmatch(fields["event"]):
        raise ReceiptError("receipt event id is not a UUID")
    if len(lines) - 6 > MAX_PROOF:
        raise ReceiptError("receipt proof is too long")
    try:
        integrated = parse_time(fields["integrated"])
        proof = tuple(b64decode_strict(line) for line in lines[6:])
        entry = Entry(index, integrated, fields["subject"], prev, envelope)
    except (ValueError, ClockError, MalformedEntryError) as e:
        raise ReceiptError(f"receipt: {e}") from None
    try:
        if isinstance(verifiers, SealCache):
            seal = verifiers.open(seal_note)
        else:
            seal = open_seal(seal_note, verifiers)
    except SealError as e:
        raise ReceiptError(f"receipt's seal: {e}") from None
    if _event_id(envelope) != fields["event"]:
        raise ReceiptError(f"receipt is for event {fields['event']}, not this envelope's")
    receipt = make_receipt(entry, fields["event"], proof, seal)
    if receipt.note != data:
        raise ReceiptError("receipt is not in canonical form")
    return receipt


def _event_id(envelope: bytes) -> str | None:
    """The ``event_id`` of the envelope's payload (None if there is none to read)."""
    try:
        doc = strictjson.loads(parse_envelope(envelope).payload)
    except (EnvelopeError, strictjson.StrictJsonError):
        return None
    value = doc.get("event_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None
