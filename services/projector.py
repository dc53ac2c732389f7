"""The projector: follows LEDGER into the domain state and the compliance view.

Each LEDGER entry is applied exactly once to each of them: the domain state
(:class:`ledger.state.application.LedgerState`, the same eventsourcing model the notary
checks against) and the read model (:class:`ledger.views.compliance.ComplianceView`)
record every batch together with their own ``Tracking("LEDGER", sequence)`` in
one transaction. Killed at any moment, it resumes from what was committed; a
redelivered entry is skipped. Both can be dropped and rebuilt from LEDGER.

LEDGER is read through :class:`ledger.bus.sealed.SealedReader`: only batches
sealed by a log key of the trust policy, whose entries fold to the seal's
root, are applied; a foreign message is skipped with an alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from eventsourcing.persistence import Tracking
from nats.aio.client import Client as NATS

from ledger.bus.alarms import Alarms
from ledger.bus.home import Home
from ledger.bus.proofs import ProofUnavailable, find_checkpoint
from ledger.bus.sealed import SealedBatch, SealedReader, trusted_reader
from ledger.bus.streams import LEDGER, ensure_open, last_sequence
from ledger.formats.checkpoint import parse_checkpoint
from ledger.formats.entry import Entry
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.merkle import empty_root
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.trust import TrustPolicy
from ledger.state.application import LedgerState
from ledger.state.asyncbridge import StateThread
from ledger.state.persistence import drop_stores
from ledger.views.compliance import ComplianceView
from ledger.views.store import open_view

__all__ = [
    "Projector",
    "RebuildError",
    "RebuildReport",
    "rebuild",
]

log = logging.getLogger("ailedger.projector")


#: Entries applied per transaction (of the state and of the view).
CHUNK_ENTRIES = 4096
#: Chunks read ahead while one is being applied.
READ_AHEAD = 2


@dataclass
class _Chunk:
    """Sealed entries read, to be applied in one go: runs of consecutive indexes
    (a heads leaf between two batches takes an index, so it starts a new run)."""

    runs: list[tuple[int, list[tuple[int, Entry]]]] = field(default_factory=list)
    size: int = 0
    #: The last LEDGER sequence read, heads leaves and foreign messages included.
    read_to: int = 0

    def add(self, entries: list[tuple[int, Entry]]) -> None:
        first = entries[0][1].index
        if self.runs:
            _, run = self.runs[-1]
            if run[-1][1].index + 1 == first:
                run.extend(entries)
                self.size += len(entries)
                return
        self.runs.append((first, list(entries)))
        self.size += len(entries)


class Projector:
    def __init__(
        self,
        nc: NATS,
        state: LedgerState,
        view: ComplianceView,
        *,
        alarms: Alarms | None = None,
    ) -> None:
        self.nc = nc
        self.state = state
        self.view = view
        self.state_thread = StateThread("projector")
        self.alarms = alarms if alarms is not None else Alarms(log)
        if state.trust is None:
            raise RebuildError("the projector needs the trust policy to check LEDGER's seals")
        #: Reads LEDGER from its first message once per process (seals and roots
        #: are checked from the start), then only what is new.
        self.reader: SealedReader = trusted_reader(nc, state.trust, self.alarms)

    def positions(self) -> tuple[int, int]:
        return self.state.position(), self.view.position()

    def _apply(self, chunk: _Chunk) -> None:
        """On the state thread: sealed entries into the state (one transaction per run
        of consecutive indexes) and then into the view (one transaction)."""
        for first_index, run in chunk.runs:
            self.state.replay(
                [(seq, entry.encoded) for seq, entry in run],
                first_index=first_index,
                commit_every=len(run),
            )
        entries = [item for _, run in chunk.runs for item in run]
        if entries[-1][0] > self.view.position():
            self.view.process_event(entries, Tracking("LEDGER", entries[-1][0]))

    async def catch_up(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        on_batch: Callable[[SealedBatch], None] | None = None,
        chunk_size: int = CHUNK_ENTRIES,
    ) -> int:
        """Apply every sealed entry not yet applied; return the LEDGER sequence reached.

        LEDGER is read (and its seals checked) ahead, while the state thread applies
        what was read before, in chunks of about ``chunk_size`` entries.
        ``on_batch`` sees every sealed batch in order (applied or not), heads leaves
        included; ``on_progress`` the sequence applied up to, after each chunk."""
        last = await last_sequence(self.nc, LEDGER)
        state_pos, view_pos = await self.state_thread.call(self.positions)
        applied = min(state_pos, view_pos)
        chunks: asyncio.Queue[_Chunk | None] = asyncio.Queue(READ_AHEAD)

        async def read() -> None:
            chunk = _Chunk()
            async for batch in self.reader.read(last, request_size=1000):
                if on_batch is not None:
                    on_batch(batch)
                # Heads leaves are the notary's, about no subject: not projected.
                entries = [(m.sequence, e) for m, e in batch.subject_entries()]
                if entries and entries[-1][0] > applied:
                    chunk.add(entries)
                chunk.read_to = batch.last_sequence
                if chunk.size >= chunk_size:
                    await chunks.put(chunk)
                    chunk = _Chunk()
            chunk.read_to = last
            await chunks.put(chunk)
            await chunks.put(None)

        async def apply() -> None:
            while (chunk := await chunks.get()) is not None:
                if chunk.runs:
                    await self.state_thread.call(self._apply, chunk)
                if on_progress is not None:
                    on_progress(chunk.read_to, last)

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(read())
                tasks.create_task(apply())
        except BaseExceptionGroup as group:
            # What was read ahead but not applied is not read again by this reader:
            # the next catch-up starts over from LEDGER's first message (entries
            # already applied are skipped), checking the seals again.
            self.reader = trusted_reader(self.nc, self.reader_trust, self.alarms)
            raise group.exceptions[0] from None
        return last

    @property
    def reader_trust(self) -> TrustPolicy:
        trust = self.state.trust
        assert trust is not None  # checked in __init__
        return trust

    async def follow(self, stop: asyncio.Event, poll: float = 0.2) -> None:
        """Keep applying new entries until ``stop`` is set; raises (exit non-zero) once
        the NATS connection is closed for good, never staying up idle."""
        while not stop.is_set():
            ensure_open(self.nc, "projector")
            try:
                await self.catch_up()
            except Exception:
                log.exception("projecting LEDGER failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)

    async def digest(self) -> str:
        state = await self.state_thread.call(self.state.digest)
        view = await self.state_thread.call(self.view.digest)
        return f"{state[:32]}{view[:32]}"

    def close(self) -> None:
        self.state_thread.close()


class RebuildError(LedgerError, RuntimeError):
    """The replayed LEDGER does not match its signed checkpoint."""

    code = "rebuild_mismatch"
    exit_status = CHECK_FAILED


@dataclass(frozen=True)
class RebuildReport:
    entries: int
    checkpoint_size: int | None
    digest: str


async def rebuild(
    nc: NATS,
    home: Home,
    state_env: Mapping[str, str],
    view_env: Mapping[str, str],
    on_progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    """Drop the projector's stores and replay LEDGER into them from the first entry.

    The entries replayed must hash to the root of the latest signed checkpoint
    (checked against the trust policy's log keys), so the rebuilt state is the
    state of the ledger everyone else can verify. The sealed reader folds every
    leaf into its Merkle frontier and checks each batch's root against its seal;
    the checkpoint's root is compared with that frontier at the checkpoint's size.
    """
    trust = home.trust()
    try:
        verifiers = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
        # Foreign notes in CHECKPOINTS are skipped: the latest the log signed.
        signed = await find_checkpoint(nc, verifiers=verifiers)
        note = open_note(signed.note, verifiers)
        checkpoint = parse_checkpoint(note.text)
    except ProofUnavailable:
        checkpoint = None
    drop_stores(state_env, view_env)
    projector = Projector(nc, LedgerState(state_env, trust=trust), open_view(view_env))
    before = projector.reader.frontier.copy()  # the frontier before each batch
    root: bytes | None = None

    def batch_read(batch: SealedBatch) -> None:
        # Sealed leaves only, in index order: the root of the first checkpoint.size.
        nonlocal before, root
        if checkpoint is not None and before.size < checkpoint.size <= before.size + len(
            batch.entries
        ):
            tree = before.copy()
            for leaf in batch.entries[: checkpoint.size - before.size]:
                tree.append(leaf.leaf_hash)
            root = tree.root()
        before = projector.reader.frontier.copy()

    try:
        last = await projector.catch_up(on_progress, on_batch=batch_read)
        if checkpoint is not None and (
            (checkpoint.size > 0 and root is None)
            or (root if checkpoint.size > 0 else empty_root()) != checkpoint.root_hash
        ):
            raise RebuildError(
                f"the first {checkpoint.size} LEDGER entries do not hash to the root of the "
                "latest signed checkpoint"
            )
        return RebuildReport(
            last, checkpoint.size if checkpoint else None, await projector.digest()
        )
    finally:
        projector.close()
