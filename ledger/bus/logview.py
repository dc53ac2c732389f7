"""Reading LEDGER and REJECTED for people: one row per entry or rejection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from nats.aio.client import Client as NATS

from ledger.bus.streams import (
    HDR_DETAIL,
    HDR_EVENT,
    HDR_INTAKE_SUBJECT,
    HDR_REASON,
    LEDGER,
    REJECTED,
    last_sequence,
    read_stream,
)
from ledger.formats.dsse import EnvelopeError, parse_envelope
from ledger.formats.entry import Entry

__all__ = ["LogRow", "RejectionRow", "read_log", "read_rejections"]


@dataclass(frozen=True)
class LogRow:
    index: int
    integrated: datetime
    signer: str
    type: str
    subject: str
    prev: int | None
    event_id: str


@dataclass(frozen=True)
class RejectionRow:
    sequence: int
    intake_subject: str
    event_id: str
    code: str
    detail: str


class _Head(msgspec.Struct):
    """Just enough of a payload to describe it."""

    type: str = "?"
    actor: str = "?"
    event_id: str = "?"


def describe(entry: Entry) -> LogRow:
    try:
        head = msgspec.json.decode(parse_envelope(entry.envelope).payload, type=_Head)
    except (EnvelopeError, msgspec.DecodeError, msgspec.ValidationError):
        head = _Head()
    return LogRow(
        entry.index,
        entry.integrated,
        head.actor,
        head.type,
        entry.subject,
        entry.prev,
        head.event_id,
    )


async def read_log(nc: NATS, start: int = 0, limit: int | None = None) -> list[LogRow]:
    """Entries from index ``start`` on, in order."""
    last = await last_sequence(nc, LEDGER)
    end = last if limit is None else min(last, start + limit)
    rows = []
    async for m in read_stream(nc, LEDGER, start + 1, end):
        rows.append(describe(Entry.parse(m.data)))
    return rows


async def read_rejections(nc: NATS, limit: int | None = None) -> list[RejectionRow]:
    last = await last_sequence(nc, REJECTED)
    start = 1 if limit is None else max(1, last - limit + 1)
    rows = []
    # REJECTED has a retention (docs/operations.md): old sequences may be gone.
    async for m in read_stream(nc, REJECTED, start, last, subject="rejected.>"):
        h = m.headers
        rows.append(
            RejectionRow(
                m.sequence,
                h.get(HDR_INTAKE_SUBJECT, m.subject),
                h.get(HDR_EVENT, "-"),
                h.get(HDR_REASON, "?"),
                h.get(HDR_DETAIL, ""),
            )
        )
    return rows
