"""Reading LEDGER and REJECTED for people: one row per entry or rejection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from nats.aio.client import Client as NATS

from ledger.bus.sealed import Leaf, trusted_reader
from ledger.bus.streams import (
    HDR_DETAIL,
    HDR_EVENT,
    HDR_INTAKE_SUBJECT,
    HDR_REASON,
    REJECTED,
    last_sequence,
    read_stream,
)
from ledger.formats.dsse import EnvelopeError, parse_envelope
from ledger.formats.heads import HeadsLeaf
from ledger.formats.trust import TrustPolicy

__all__ = ["LogRow", "RejectionRow", "read_log", "read_rejections", "sealed_entries"]


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


#: How ``ailedger log`` names the notary's heads leaves (they have no signer or subject).
HEADS_ROW_SIGNER = "notary"
HEADS_ROW_TYPE = "HeadsLeaf"


def describe(entry: Leaf, sealed_at: datetime | None = None) -> LogRow:
    """One log row; a heads leaf is a notary row, dated by its seal (``sealed_at``)."""
    if isinstance(entry, HeadsLeaf):
        return LogRow(
            entry.index,
            sealed_at or datetime.min.replace(tzinfo=UTC),
            HEADS_ROW_SIGNER,
            HEADS_ROW_TYPE,
            f"heads of [0, {entry.size}): {entry.subjects} "
            + ("subject" if entry.subjects == 1 else "subjects"),
            None,
            "-",
        )
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


async def read_log(
    nc: NATS, start: int = 0, limit: int | None = None, *, trust: TrustPolicy
) -> list[LogRow]:
    """Sealed entries from index ``start`` on, in order (foreign messages skipped)."""
    return [describe(e, at) async for e, at in sealed_entries(nc, trust, start, limit)]


async def sealed_entries(
    nc: NATS, trust: TrustPolicy, start: int = 0, limit: int | None = None
) -> AsyncGenerator[tuple[Leaf, datetime]]:
    """LEDGER's sealed leaves from index ``start`` on (at most ``limit``), read
    through their seals (:mod:`ledger.bus.sealed`), each with its seal's time."""
    end = None if limit is None else start + limit
    reader = trusted_reader(nc, trust)
    reader.keep_seals = False
    async with contextlib.aclosing(reader.read()) as batches:
        async for batch in batches:
            for e in batch.entries:
                if e.index >= start and (end is None or e.index < end):
                    yield e, batch.seal.last
            if end is not None and reader.size >= end:
                return


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
