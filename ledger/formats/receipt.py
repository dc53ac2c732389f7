"""Receipts: the notary's signed promise that an event is in the ledger.

A receipt is returned on acceptance, before any checkpoint covers the entry.
It is a C2SP signed note by the notary key (named after the log's origin)
whose body is exactly::

    ailedger/receipt/v1
    <origin>
    index <n>
    leaf <base64 leaf hash>
    integrated <RFC 3339 UTC>
    event <event id>

It is sent only after LEDGER has acknowledged the entry (fsynced), so it is
the durability promise. It is deterministic: the same entry always yields the
same receipt, which is how a resubmitted event gets "the same receipt".
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.note import NoteError, Signer, Verifiers, open_note, sign_note
from ledger.formats.timeutil import ClockError, format_time, parse_time

__all__ = ["RECEIPT_HEADER", "Receipt", "ReceiptError", "open_receipt", "sign_receipt"]

RECEIPT_HEADER = "ailedger/receipt/v1"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ReceiptError(LedgerError, ValueError):
    """A receipt that is malformed or whose signature does not verify."""

    code = "receipt_invalid"
    exit_status = CHECK_FAILED


@dataclass(frozen=True)
class Receipt:
    origin: str
    index: int
    leaf_hash: bytes
    integrated: datetime
    event_id: str
    note: bytes

    def body(self) -> str:
        return receipt_body(self.origin, self.index, self.leaf_hash, self.integrated, self.event_id)


def receipt_body(
    origin: str, index: int, leaf_hash: bytes, integrated: datetime, event_id: str
) -> str:
    return (
        f"{RECEIPT_HEADER}\n{origin}\nindex {index}\n"
        f"leaf {base64.b64encode(leaf_hash).decode()}\n"
        f"integrated {format_time(integrated)}\nevent {event_id}\n"
    )


def sign_receipt(
    signer: Signer,
    origin: str,
    index: int,
    leaf_hash: bytes,
    integrated: datetime,
    event_id: str,
) -> Receipt:
    note = sign_note(receipt_body(origin, index, leaf_hash, integrated, event_id), signer)
    return Receipt(origin, index, leaf_hash, integrated, event_id, note)


def open_receipt(note: bytes, verifiers: Verifiers) -> Receipt:
    """Verify the notary's signature and parse the body strictly."""
    try:
        opened = open_note(note, verifiers)
    except NoteError as e:
        raise ReceiptError(f"receipt signature: {e}") from None
    lines = opened.text.split("\n")
    if len(lines) != 7 or lines[6] != "" or lines[0] != RECEIPT_HEADER:
        raise ReceiptError("receipt body is not ailedger/receipt/v1")
    origin = lines[1]
    fields: dict[str, str] = {}
    for line, name in zip(lines[2:6], ("index", "leaf", "integrated", "event"), strict=True):
        key, _, value = line.partition(" ")
        if key != name or not value:
            raise ReceiptError(f"receipt line {line!r}: expected {name}")
        fields[name] = value
    try:
        if not re.fullmatch(r"0|[1-9][0-9]*", fields["index"]):
            raise ValueError("index is not a decimal number")
        leaf = base64.b64decode(fields["leaf"], validate=True)
        if len(leaf) != 32:
            raise ValueError("leaf hash is not 32 bytes")
        integrated = parse_time(fields["integrated"])
    except (ValueError, binascii.Error, ClockError) as e:
        raise ReceiptError(f"receipt: {e}") from None
    if not _UUID.fullmatch(fields["event"]):
        raise ReceiptError("receipt event id is not a UUID")
    receipt = Receipt(origin, int(fields["index"]), leaf, integrated, fields["event"], note)
    if receipt.body() != opened.text:
        raise ReceiptError("receipt body is not canonical")
    return receipt
