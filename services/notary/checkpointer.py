"""The checkpointer: signs C2SP checkpoints of the Merkle tree into CHECKPOINTS.

It signs every ``every`` new entries or after ``interval`` seconds with new
entries, and never two inconsistent checkpoints: not across restarts (the last
one in CHECKPOINTS must still be a prefix of the tree), not against another
notary (the publication is fenced on the last CHECKPOINTS sequence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from ledger.bus.alarms import FOREIGN_MESSAGE, Alarms
from ledger.bus.proofs import ProofUnavailable, SignedCheckpoint, tlog_proof
from ledger.bus.streams import (
    CHECKPOINT_SUBJECT,
    CHECKPOINTS,
    BusError,
    StoredMessage,
    get_message,
    last_sequence,
)
from ledger.formats.checkpoint import Checkpoint, parse_checkpoint
from ledger.formats.note import NoteError, Signer, Verifiers, open_note, sign_note
from ledger.formats.tree import TreeStore
from ledger.state.asyncbridge import StateThread
from services.notary import NotaryError

__all__ = ["Checkpointer"]

log = logging.getLogger("ailedger.notary")


class Checkpointer:
    def __init__(
        self,
        nc: NATS,
        state_thread: StateThread,
        signer: Signer,
        tree: TreeStore,
        *,
        size: Callable[[], int],
        catch_up: Callable[[], Awaitable[None]],
        every: int = 256,
        interval: float = 5.0,
        guard: Callable[[], Awaitable[bool]] | None = None,
        alarms: Alarms | None = None,
    ) -> None:
        """``size`` tells how many LEDGER entries the tree holds; ``catch_up`` brings
        the tree up to LEDGER (after another notary published a checkpoint);
        ``guard`` is asked before each signature (False: do not sign)."""
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.state_thread = state_thread
        self.signer = signer
        self.origin = signer.name
        self.tree = tree
        self.size = size
        self.catch_up = catch_up
        self.every = max(1, every)
        self.interval = interval
        self.guard = guard
        self.alarms = alarms if alarms is not None else Alarms()
        #: CHECKPOINTS' last sequence (foreign messages included): the fence.
        self._stream_last = 0
        #: The last checkpoint in CHECKPOINTS: (checkpoint, signed note, stream sequence).
        self.latest: tuple[Checkpoint, bytes, int] | None = None
        self._last_at = time.monotonic()
        self._verifiers: Verifiers | None = None

    async def start(self, verifiers: Verifiers) -> None:
        """Load the last checkpoint, which must verify with one of ``verifiers``."""
        self._verifiers = verifiers
        await self.load()

    async def load(self) -> None:
        """Read the last signed checkpoint and make sure the tree still agrees with it.

        A notary never signs a checkpoint inconsistent with one signed before,
        also across restarts: if LEDGER no longer produces the root it signed
        (a replaced or rewritten stream), it refuses to go on.
        """
        assert self._verifiers is not None, "start() first"
        self._stream_last = await last_sequence(self.nc, CHECKPOINTS)
        found = await self._latest_signed(self._stream_last)
        if found is None:
            self.latest = None
            return
        checkpoint, stored = found
        if checkpoint.size > self.tree.size:
            raise NotaryError(
                f"checkpoint of size {checkpoint.size} is beyond LEDGER ({self.tree.size} "
                "entries): LEDGER lost entries it had; refusing to sign"
            )
        root = await self.state_thread.call(self.tree.root, checkpoint.size)
        if root != checkpoint.root_hash:
            raise NotaryError(
                f"LEDGER's first {checkpoint.size} entries no longer hash to the root signed in "
                "the last checkpoint: the ledger was rewritten; refusing to sign"
            )
        self.latest = (checkpoint, stored.data, stored.sequence)

    async def _latest_signed(self, last: int) -> tuple[Checkpoint, StoredMessage] | None:
        """The newest checkpoint in CHECKPOINTS signed by a log key for this origin;
        anything else there is foreign: skipped with an alarm, never trusted."""
        assert self._verifiers is not None
        for seq in range(last, 0, -1):
            stored = await get_message(self.nc, CHECKPOINTS, seq)
            if stored is None:
                continue
            try:
                checkpoint = parse_checkpoint(open_note(stored.data, self._verifiers).text)
                if checkpoint.origin != self.origin:
                    raise ValueError(f"checkpoint of another log {checkpoint.origin!r}")
            except (NoteError, ValueError) as e:
                self.alarms.record(
                    FOREIGN_MESSAGE, f"CHECKPOINTS #{seq} does not verify ({e}); skipped"
                )
                continue
            return checkpoint, stored
        return None

    async def maybe_checkpoint(self) -> None:
        """Sign a checkpoint if enough entries are new, or some are and it is time."""
        covered = self.latest[0].size if self.latest else 0
        pending = self.size() - covered
        due = time.monotonic() - self._last_at >= self.interval
        if pending >= self.every or (pending > 0 and due):
            try:
                await self.checkpoint()
            except BusError as e:
                log.warning("checkpoint not published: %s", e)

    async def checkpoint(self) -> bytes | None:
        """Sign and publish a checkpoint of the whole tree; None if nothing new to cover."""
        size = self.size()
        latest = self.latest
        if latest is not None and latest[0].size >= size:
            return None
        if self.guard is not None and not await self.guard():
            return None
        root, old_root = await self.state_thread.call(
            lambda: (self.tree.root(size), self.tree.root(latest[0].size) if latest else None)
        )
        if latest is not None and old_root != latest[0].root_hash:
            raise NotaryError(
                "the tree no longer agrees with the last checkpoint; refusing to sign"
            )
        note = sign_note(Checkpoint(self.origin, size, root).body(), self.signer)
        try:
            ack = await self.js.publish(
                CHECKPOINT_SUBJECT,
                note,
                stream=CHECKPOINTS,
                headers={"Nats-Expected-Last-Sequence": str(self._stream_last)},
                timeout=5,
            )
        except Exception as e:
            # Another notary published first: catch up with LEDGER, then take its
            # checkpoint (after checking it against our tree).
            log.info("checkpoint race (%s); reloading", e)
            await self.catch_up()
            await self.load()
            return None
        self.latest = (Checkpoint(self.origin, size, root), note, ack.seq)
        self._stream_last = ack.seq
        self._last_at = time.monotonic()
        log.info("checkpoint %d signed", size)
        return note

    def tlog_proof(self, index: int) -> bytes | None:
        """C2SP tlog-proof of entry ``index`` under the latest checkpoint (state thread);
        None if no checkpoint covers it yet."""
        if self.latest is None:
            return None
        checkpoint, note, _ = self.latest
        try:
            return tlog_proof(self.tree, index, SignedCheckpoint(checkpoint, note))
        except ProofUnavailable:
            return None
