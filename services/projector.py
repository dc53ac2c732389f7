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
from dataclasses import dataclass

from eventsourcing.persistence import Tracking
from nats.aio.client import Client as NATS

from ledger.bus.alarms import Alarms
from ledger.bus.home import Home
from ledger.bus.proofs import ProofUnavailable, find_checkpoint
from ledger.bus.sealed import SealedReader, trusted_reader
from ledger.bus.streams import LEDGER, ensure_open, last_sequence
from ledger.formats.checkpoint import parse_checkpoint
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.merkle import MemoryHashStore
from ledger.formats.note import Verifier, Verifiers, open_note
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

    def _apply(self, chunk: list[tuple[int, bytes]], first_index: int) -> None:
        """On the state thread: one sealed batch into the state and the view."""
        self.state.replay(chunk, first_index=first_index)
        if chunk[-1][0] > self.view.position():
            self.view.process_event(chunk, Tracking("LEDGER", chunk[-1][0]))

    async def catch_up(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        on_entry: Callable[[int, bytes], None] | None = None,
        chunk_size: int = 500,
    ) -> int:
        """Apply every sealed entry not yet applied; return the LEDGER sequence reached.

        ``on_entry`` sees every sealed leaf in index order (applied or not), heads
        leaves included."""
        last = await last_sequence(self.nc, LEDGER)
        state_pos, view_pos = await self.state_thread.call(self.positions)
        applied = min(state_pos, view_pos)
        async for batch in self.reader.read(last):
            if on_entry is not None:
                for m in batch.messages:
                    on_entry(m.sequence, m.data)
            # Heads leaves are the notary's, about no subject: not projected.
            chunk = [(m.sequence, m.data) for m, _ in batch.subject_entries()]
            if chunk and chunk[-1][0] > applied:
                await self.state_thread.call(self._apply, chunk, batch.first_index)
            if on_progress is not None:
                on_progress(batch.last_sequence, last)
        if on_progress is not None:
            on_progress(last, last)
        return last

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
    state of the ledger everyone else can verify.
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
    tree = MemoryHashStore()

    def leaf(seq: int, data: bytes) -> None:
        # Sealed entries only, in index order: the first checkpoint.size of them.
        if checkpoint is not None and tree.size < checkpoint.size:
            tree.append(data)

    try:
        last = await projector.catch_up(on_progress, on_entry=leaf)
        if checkpoint is not None and (
            tree.size != checkpoint.size or tree.root() != checkpoint.root_hash
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
