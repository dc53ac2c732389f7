"""The ledger entry: the bytes stored in LEDGER and hashed into the Merkle tree.

::

    ailedger/entry/v1
    index <n>
    integrated <RFC 3339 UTC>
    subject <subject>
    prev <index of the previous entry with the same subject, or "none">
    <empty line>
    <DSSE envelope bytes exactly as submitted>

``index`` starts at 0 with no gaps; it equals the LEDGER stream sequence minus
one only as long as no foreign message was appended: readers map index to
sequence through the batch seals (ledger.formats.seal, ledger.bus.sealed).
``prev`` chains every subject's history, so an omitted entry is
detectable. Parsing is all-or-nothing: an :class:`Entry` exists only for bytes
that are exactly in this form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.merkle import leaf_hash
from ledger.formats.timeutil import ClockError, format_time, parse_time

__all__ = ["ENTRY_HEADER", "Entry", "MalformedEntryError", "ledger_subject"]

ENTRY_HEADER = b"ailedger/entry/v1\n"
SUBJECT = r"^(system|actor|policy)/[a-z0-9][a-z0-9_-]{0,62}$|^ledger/genesis$"
_SUBJECT = re.compile(SUBJECT)
_NUMBER = re.compile(rb"^(0|[1-9][0-9]{0,18})$")
#: An entry's header in its one canonical spelling: decimal numbers without leading
#: zeros, a time whose fraction, if any, is six digits and not zero (as
#: :func:`format_time` writes it). Bytes it matches parse as they read; all others
#: go through the field-by-field parse, which names what is wrong.
_CANONICAL = re.compile(
    rb"ailedger/entry/v1\nindex (0|[1-9][0-9]{0,18})\n"
    rb"integrated ([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    rb"(?:\.(?!000000)[0-9]{6})?Z)\n"
    rb"subject ([a-z0-9/_-]{1,80})\nprev (none|0|[1-9][0-9]{0,18})\n\n(?=.)",
    re.DOTALL,
)


class MalformedEntryError(LedgerError, ValueError):
    """Bytes that are not a well-formed ledger entry."""

    code = "malformed_entry"
    exit_status = USAGE


def ledger_subject(subject: str) -> str:
    """The LEDGER stream subject of an entry: ``ledger.<kind>.<id>``."""
    return "ledger." + subject.replace("/", ".", 1)


@dataclass(frozen=True)
class Entry:
    index: int
    integrated: datetime
    subject: str
    prev: int | None
    envelope: bytes

    def __post_init__(self) -> None:
        if self.index < 0:
            raise MalformedEntryError("index must be >= 0")
        if not _SUBJECT.fullmatch(self.subject):
            raise MalformedEntryError(f"bad subject {self.subject!r}")
        if self.prev is not None and not 0 <= self.prev < self.index:
            raise MalformedEntryError(f"prev {self.prev} must be below index {self.index}")

    @cached_property
    def encoded(self) -> bytes:
        prev = "none" if self.prev is None else str(self.prev)
        head = (
            f"index {self.index}\n"
            f"integrated {format_time(self.integrated)}\n"
            f"subject {self.subject}\n"
            f"prev {prev}\n\n"
        )
        return ENTRY_HEADER + head.encode() + self.envelope

    @cached_property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encoded)

    @property
    def stream_sequence(self) -> int:
        """The stream sequence in a LEDGER without foreign messages (tests, the
        notary's own fresh batches); readers use the seals instead."""
        return self.index + 1

    @staticmethod
    def parse(data: bytes) -> Entry:
        m = _CANONICAL.match(data)
        if m is not None:
            index, integrated, subject, prev = m.groups()
            try:
                entry = Entry(
                    int(index),
                    parse_time(integrated.decode()),
                    subject.decode(),
                    None if prev == b"none" else int(prev),
                    data[m.end() :],
                )
            except (ClockError, MalformedEntryError):
                pass  # named below
            else:
                # Exactly what ``encoded`` would give: each field as it is written back.
                entry.__dict__["encoded"] = data
                return entry
        return Entry._parse_fields(data)

    @staticmethod
    def _parse_fields(data: bytes) -> Entry:
        if not data.startswith(ENTRY_HEADER):
            raise MalformedEntryError("missing ailedger/entry/v1 header")
        lines = data[len(ENTRY_HEADER) :].split(b"\n", 5)
        if len(lines) != 6 or lines[4] != b"":
            raise MalformedEntryError("header must be four lines and an empty line")
        fields = {}
        for line, name in zip(
            lines[:4], (b"index", b"integrated", b"subject", b"prev"), strict=True
        ):
            key, sep, value = line.partition(b" ")
            if key != name or not sep:
                raise MalformedEntryError(f"expected {name.decode()!r} line, got {line[:40]!r}")
            fields[name] = value
        if not _NUMBER.fullmatch(fields[b"index"]):
            raise MalformedEntryError("index is not a decimal number")
        if fields[b"prev"] != b"none" and not _NUMBER.fullmatch(fields[b"prev"]):
            raise MalformedEntryError("prev is neither a decimal number nor 'none'")
        try:
            integrated = parse_time(fields[b"integrated"].decode("ascii"))
            subject = fields[b"subject"].decode("ascii")
        except (ClockError, UnicodeDecodeError) as e:
            raise MalformedEntryError(f"bad header: {e}") from None
        envelope = lines[5]
        if not envelope:
            raise MalformedEntryError("empty envelope")
        prev = None if fields[b"prev"] == b"none" else int(fields[b"prev"])
        entry = Entry(int(fields[b"index"]), integrated, subject, prev, envelope)
        if entry.encoded != data:
            raise MalformedEntryError("entry is not in canonical form")
        return entry
