"""The sealed reader: LEDGER as the notary sealed it, and nothing else.

Every atomic batch the notary appends carries, on its last message, the
``Ailedger-Seal`` header (:mod:`ledger.formats.seal`). :class:`SealedReader`
reads LEDGER batch by batch and yields a :class:`SealedBatch` only when

- the seal is a signed note by a log key (valid at the seal's time, when the
  reader is given a validity check), of this ledger's origin;
- the batch is the run of messages from the seal's ``seq`` up to the sealed
  message, holding exactly ``size`` minus the previous size entries, each a
  well-formed entry with the next index;
- ``integrated`` never decreases, from the previous batch on, and the seal's
  ``last`` is the batch's last ``integrated``;
- the entries fold, after every earlier sealed leaf, to the seal's ``root``;
- a heads leaf (``ailedger/heads/v1``, :mod:`ledger.formats.heads`) stands
  alone in its batch, at the index equal to its ``size``, and its seal's
  ``last`` (the notary's time when it sealed it) is not before the previous
  ``integrated``.

Anything else is *foreign* (an unsealed message, a wrongly sealed run, a
replayed seal): it gets no index, is never applied and never covered by a
checkpoint, and never stops the reader. It is skipped with an alarm
(``foreign_message``, logged at ERROR). Readers map index to stream sequence
through the seals (:meth:`SealedReader.sequence_of`).

The reader keeps only the right frontier of the Merkle tree (one hash per
set bit of its size), so checking roots costs no tree store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from ledger.bus.alarms import FOREIGN_MESSAGE, Alarms
from ledger.bus.streams import LEDGER, StoredMessage, last_sequence, read_stream
from ledger.formats.entry import Entry, MalformedEntryError
from ledger.formats.heads import HeadsLeaf, MalformedHeadsError, is_heads_leaf
from ledger.formats.merkle import empty_root, node_hash, stored_hash_index
from ledger.formats.note import Verifier, Verifiers
from ledger.formats.seal import HDR_SEAL, Seal, SealCache, SealError
from ledger.formats.timeutil import format_time
from ledger.formats.trust import TrustPolicy

__all__ = [
    "Frontier",
    "Leaf",
    "SealedBatch",
    "SealedReader",
    "parse_leaf",
    "trusted_reader",
    "trusted_seals",
]

#: A sealed log leaf: an entry about a subject, or a heads leaf of the notary.
Leaf = Entry | HeadsLeaf


def parse_leaf(data: bytes) -> Leaf:
    """The leaf stored in ``data``: a heads leaf or an entry (all-or-nothing)."""
    return HeadsLeaf.parse(data) if is_heads_leaf(data) else Entry.parse(data)


log = logging.getLogger("ailedger.sealed")


class Frontier:
    """The roots of the full subtrees of a Merkle tree, largest first: enough to
    append leaves and compute the RFC 9162 root."""

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if len(peaks) != size.bit_count():
            raise ValueError("a frontier has one peak per set bit of its size")
        self.size = size
        self.peaks = list(peaks)

    @staticmethod
    def of(size: int, read_hashes: Callable[[Sequence[int]], Sequence[bytes]]) -> Frontier:
        """The frontier of the first ``size`` leaves of a tree store."""
        indexes = []
        lo = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                indexes.append(stored_hash_index(level, lo >> level))
                lo += 1 << level
        return Frontier(size, list(read_hashes(indexes)) if indexes else [])

    def copy(self) -> Frontier:
        return Frontier(self.size, self.peaks)

    def append(self, leaf_hash: bytes) -> None:
        h, n = leaf_hash, self.size
        while n & 1:
            h = node_hash(self.peaks.pop(), h)
            n >>= 1
        self.peaks.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.peaks:
            return empty_root()
        h = self.peaks[-1]
        for p in reversed(self.peaks[:-1]):
            h = node_hash(p, h)
        return h


@dataclass(frozen=True)
class SealedBatch:
    """One sealed batch: its seal, its messages (consecutive sequences) and leaves:
    entries, or one heads leaf alone."""

    seal: Seal
    messages: list[StoredMessage]
    entries: list[Leaf]

    @property
    def first_index(self) -> int:
        return self.entries[0].index

    @property
    def heads(self) -> HeadsLeaf | None:
        """The heads leaf, if this is the batch of one."""
        first = self.entries[0]
        return first if isinstance(first, HeadsLeaf) else None

    def subject_entries(self) -> list[tuple[StoredMessage, Entry]]:
        """The entries about subjects, with their messages (heads leaves left out)."""
        return [
            (m, e) for m, e in zip(self.messages, self.entries, strict=True) if isinstance(e, Entry)
        ]

    @property
    def first_sequence(self) -> int:
        return self.messages[0].sequence

    @property
    def last_sequence(self) -> int:
        return self.messages[-1].sequence


@dataclass
class SealedReader:
    """Reads LEDGER forward from where it stopped, yielding sealed batches only."""

    nc: NATS
    seals: SealCache
    origin: str
    alarms: Alarms = field(default_factory=Alarms)
    #: Sealed leaves so far (the next index) and their frontier.
    frontier: Frontier = field(default_factory=Frontier)
    #: The last stream sequence read (sealed or foreign).
    position: int = 0
    last_integrated: datetime | None = None
    #: Every seal read, in order: (tree size after it, its batch's first sequence).
    sizes: list[int] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)
    seal_notes: list[Seal] = field(default_factory=list)
    #: Foreign messages skipped, by stream sequence.
    foreign: list[int] = field(default_factory=list)
    keep_seals: bool = True

    @property
    def size(self) -> int:
        return self.frontier.size

    def sequence_of(self, index: int) -> int | None:
        """The stream sequence of sealed entry ``index`` (None: not sealed yet)."""
        i = bisect.bisect_right(self.sizes, index)
        if i >= len(self.sizes):
            return None
        before = self.sizes[i - 1] if i else 0
        return self.firsts[i] + index - before

    def seal_of(self, index: int) -> Seal | None:
        i = bisect.bisect_right(self.sizes, index)
        return self.seal_notes[i] if self.keep_seals and i < len(self.seal_notes) else None

    def add_own(self, seal: Seal, entries: Sequence[Leaf]) -> None:
        """A batch this process just appended (and LEDGER acknowledged)."""
        for e in entries:
            self.frontier.append(e.leaf_hash)
        self._remember(seal)
        self.position = max(self.position, seal.seq + len(entries) - 1)
        self.last_integrated = seal.last

    def _remember(self, seal: Seal) -> None:
        self.sizes.append(seal.size)
        self.firsts.append(seal.seq)
        if self.keep_seals:
            self.seal_notes.append(seal)

    async def read(
        self, up_to: int | None = None, *, request_size: int = 500
    ) -> AsyncGenerator[SealedBatch]:
        """Yield the sealed batches after :attr:`position`, up to LEDGER's last
        message (or ``up_to``); skip foreign messages with an alarm.
        ``request_size``: messages asked for per direct-get request."""
        last = await last_sequence(self.nc, LEDGER) if up_to is None else up_to
        pending: list[StoredMessage] = []
        start = self.position + 1
        while True:
            # Closed with this generator (a reader that stops early), not left to the
            # garbage collector after the connection is gone.
            messages = read_stream(self.nc, LEDGER, start, last, batch=request_size)
            async with contextlib.aclosing(messages):
                async for m in messages:
                    pending.append(m)
                    value = m.headers.get(HDR_SEAL)
                    if value is None:
                        continue
                    batch = self._check(pending, value)
                    self.position = m.sequence
                    pending = []
                    if batch is not None:
                        yield batch
            if not pending:
                return
            # An unsealed run at the end: an atomic batch being committed is applied
            # message by message, and readers see its first messages before its last,
            # sealed one (no isolated reads, nats-io/nats-server#7128). Its commit
            # takes milliseconds: read on when LEDGER grows; still unsealed after
            # IN_PROGRESS_SECONDS, it is not the notary's.
            grown = await self._more_after(pending[-1], last)
            if grown is None:
                self._foreign(pending, "no seal covers it")
                self.position = pending[-1].sequence
                return
            start, last = last + 1, grown

    async def _more_after(self, tail: StoredMessage, last: int) -> int | None:
        """LEDGER's new last sequence once it grows past ``last``, or None if it does
        not within :data:`IN_PROGRESS_SECONDS` (at once if ``tail`` is old)."""
        if not _recent(tail, 60.0):
            return None
        deadline = time.monotonic() + IN_PROGRESS_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            current = await last_sequence(self.nc, LEDGER)
            if current > last:
                return current
        return None

    def _foreign(self, messages: Sequence[StoredMessage], why: str) -> None:
        for m in messages:
            self.foreign.append(m.sequence)
        first, last = messages[0].sequence, messages[-1].sequence
        where = f"#{first}" if first == last else f"#{first}-#{last}"
        self.alarms.record(
            FOREIGN_MESSAGE, f"LEDGER {where} ({messages[0].subject}): {why}; skipped"
        )

    def _check(self, pending: list[StoredMessage], value: str) -> SealedBatch | None:
        sealed = pending[-1]
        try:
            seal = self.seals.open(base64.b64decode(value, validate=True))
        except (SealError, binascii.Error, ValueError) as e:
            self._foreign(pending, f"seal does not verify: {e}")
            return None
        if seal.origin != self.origin:
            self._foreign(pending, f"seal of another log {seal.origin!r}")
            return None
        first = pending[0].sequence
        if not first <= seal.seq <= sealed.sequence:
            self._foreign(pending, f"seal names sequence {seal.seq}, outside the unsealed run")
            return None
        before = [m for m in pending if m.sequence < seal.seq]
        run = [m for m in pending if m.sequence >= seal.seq]
        problem = self._verify_run(seal, run)
        if isinstance(problem, str):
            self._foreign(pending, problem)
            return None
        if before:
            self._foreign(before, "no seal covers it")
        entries, frontier = problem
        self.frontier = frontier
        self.last_integrated = seal.last
        self._remember(seal)
        return SealedBatch(seal, run, entries)

    def _verify_run(
        self, seal: Seal, run: list[StoredMessage]
    ) -> str | tuple[list[Leaf], Frontier]:
        if seal.size - self.size != len(run):
            return f"seal says size {seal.size}, the batch makes it {self.size + len(run)}"
        if any(is_heads_leaf(m.data) for m in run):
            return self._verify_heads(seal, run)
        entries: list[Leaf] = []
        previous = self.last_integrated
        frontier = self.frontier.copy()
        for m in run:
            try:
                entry = Entry.parse(m.data)
            except MalformedEntryError as e:
                return f"#{m.sequence} is not an entry: {e}"
            if entry.index != frontier.size:
                return f"#{m.sequence} holds index {entry.index}, expected {frontier.size}"
            if previous is not None and entry.integrated < previous:
                return (
                    f"#{m.sequence} integrated {format_time(entry.integrated)} is before "
                    f"{format_time(previous)}"
                )
            previous = entry.integrated
            frontier.append(entry.leaf_hash)
            entries.append(entry)
        if previous != seal.last:
            return "seal's last time is not its batch's last integrated"
        if frontier.root() != seal.root:
            return f"batch does not fold to the seal's root (size {seal.size})"
        return entries, frontier

    def _verify_heads(
        self, seal: Seal, run: list[StoredMessage]
    ) -> str | tuple[list[Leaf], Frontier]:
        m = run[0]
        if len(run) != 1:
            return "a heads leaf is sealed alone, not inside a batch"
        try:
            heads = HeadsLeaf.parse(m.data)
        except MalformedHeadsError as e:
            return f"#{m.sequence} is not a heads leaf: {e}"
        if heads.size != self.size:
            return f"#{m.sequence}: heads leaf of size {heads.size} stands at index {self.size}"
        previous = self.last_integrated
        if previous is not None and seal.last < previous:
            return (
                f"#{m.sequence}: heads leaf sealed at {format_time(seal.last)}, before "
                f"{format_time(previous)}"
            )
        frontier = self.frontier.copy()
        frontier.append(heads.leaf_hash)
        if frontier.root() != seal.root:
            return f"heads leaf does not fold to the seal's root (size {seal.size})"
        return [heads], frontier


def trusted_seals(trust: TrustPolicy) -> SealCache:
    """Seals checked against the trust policy: signed by one of its log keys, valid
    at the seal's time."""
    verifiers = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))

    def valid_at(seal: Seal) -> bool:
        keys = {(v.name, v.key_hash) for v in map(Verifier.from_vkey, trust.log_vkeys(seal.last))}
        return any(signer in keys for signer in seal.signed_by)

    return SealCache(verifiers, valid_at=valid_at)


def trusted_reader(nc: NATS, trust: TrustPolicy, alarms: Alarms | None = None) -> SealedReader:
    """A sealed reader of the ledger of ``trust`` (its origin, its log keys)."""
    return SealedReader(nc, trusted_seals(trust), trust.origin, alarms or Alarms())


#: How long an unsealed run at the end of LEDGER may be a batch still being
#: committed (which takes milliseconds) before it is taken as foreign.
IN_PROGRESS_SECONDS = 2.0


def _recent(m: StoredMessage, seconds: float) -> bool:
    """Whether ``m`` was stored less than ``seconds`` ago by its ``Nats-Time-Stamp``
    (a message without a readable stamp is not recent)."""
    stamp = m.headers.get("Nats-Time-Stamp", "")
    try:
        # RFC 3339 with nanoseconds: microseconds are enough here.
        head, _, frac = stamp.rstrip("Z").partition(".")
        stored = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    except ValueError:
        return False
    return (datetime.now(UTC) - stored).total_seconds() < seconds
