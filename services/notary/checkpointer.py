"""The checkpointer: signs C2SP checkpoints of the Merkle tree into CHECKPOINTS.

It signs every ``every`` new entries or after ``interval`` seconds with new
entries, and never two inconsistent checkpoints: not across restarts (the last
one in CHECKPOINTS must still be a prefix of the tree), not against another
notary (the publication is fenced on the last CHECKPOINTS sequence).

Checkpoint ``N`` is signed only when leaf ``N-1`` is a heads leaf of size
``N-1`` (the sequencer appends one first: DESIGN §3), and published only once
the trust policy's quorum of witnesses cosigned it (``cosign``); without the
quorum nothing is published and it is tried again, so the log resumes when the
witnesses come back. When nothing was appended since, the same checkpoint is
cosigned again every ``recosign_interval`` seconds (no new heads leaf), so
witnesses and monitors keep seeing fresh times.

The heads leaf and the log's signature are made on the sequencing path (in turn
with the batches); the cosigning and the publication run in the background, one
checkpoint in flight, so INTAKE batches keep flowing while the witnesses answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from ledger.bus.alarms import FOREIGN_MESSAGE, WITNESS_QUORUM, Alarms
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
from ledger.formats.errors import LedgerError
from ledger.formats.heads import HeadsLeaf
from ledger.formats.note import NoteError, Signer, Verifiers, open_note, sign_note
from ledger.formats.tree import TreeStore
from ledger.state.asyncbridge import StateThread
from services.notary import NotaryError

__all__ = ["Checkpointer"]

log = logging.getLogger("ailedger.notary")


@dataclass(frozen=True)
class _Signed:
    """A checkpoint signed by the log, not yet cosigned nor published."""

    size: int
    root: bytes
    note: bytes
    old_size: int


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
        append_heads: Callable[[], Awaitable[HeadsLeaf | None]] | None = None,
        cosign: Callable[[bytes, int], Awaitable[bytes]] | None = None,
        recosign_interval: float = 60.0,
    ) -> None:
        """``size`` tells how many LEDGER entries the tree holds; ``catch_up`` brings
        the tree up to LEDGER (after another notary published a checkpoint);
        ``guard`` is asked before each signature (False: do not sign);
        ``append_heads`` seals the heads leaf the checkpoint ends with (None:
        nothing to cover); ``cosign(note, old_size)`` returns the note with the
        witnesses' cosignatures once the quorum cosigned (raises otherwise)."""
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
        self.append_heads = append_heads
        self.cosign = cosign
        self.recosign_interval = recosign_interval
        #: Why the last checkpoint was not published (no witness quorum ...), or None.
        self.withheld: str | None = None
        #: CHECKPOINTS' last sequence (foreign messages included): the fence.
        self._stream_last = 0
        #: The last checkpoint in CHECKPOINTS: (checkpoint, signed note, stream sequence).
        self.latest: tuple[Checkpoint, bytes, int] | None = None
        self._last_at = time.monotonic()
        self._verifiers: Verifiers | None = None
        #: The checkpoint being cosigned and published in the background, if any.
        self._inflight: asyncio.Task[bytes | None] | None = None
        #: Set when a background publication lost a race: reload before the next.
        self._reload = False

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
        """Sign a checkpoint if enough entries are new, or some are and it is time;
        cosign the same one again when nothing was appended for a while.

        Off the sequencing path: the heads leaf and the signature are made here
        (they are LEDGER appends and tree reads, ordered with the batches), the
        witnesses' cosigning and the publication run in the background, one
        checkpoint in flight at a time; the next one waits for it."""
        if self._inflight is not None:
            if not self._inflight.done():
                return
            self._reap()
        if self._reload:
            # A publication lost a race with another notary: catch up with LEDGER
            # (on the sequencing path, never beside a batch), take its checkpoint.
            self._reload = False
            await self.catch_up()
            await self.load()
        covered = self.latest[0].size if self.latest else 0
        pending = self.size() - covered
        since = time.monotonic() - self._last_at
        recosign = (
            pending == 0
            and self.cosign is not None
            and self.latest is not None
            and since >= self.recosign_interval
        )
        if pending >= self.every or (pending > 0 and since >= self.interval) or recosign:
            try:
                signed = await self._sign(again=recosign)
            except BusError as e:
                log.warning("checkpoint not published: %s", e)
                return
            if signed is not None:
                self._inflight = asyncio.create_task(self._publish(signed, background=True))
            elif self.withheld is not None:
                self._last_at = time.monotonic()  # retried at the next interval

    async def checkpoint(self, *, again: bool = False) -> bytes | None:
        """Seal a heads leaf, then sign, have cosigned and publish a checkpoint of the
        whole tree; None if nothing new to cover (unless ``again``: the same
        checkpoint cosigned anew) or if the witnesses' quorum was not reached."""
        await self.wait_published()
        signed = await self._sign(again=again)
        if signed is None:
            return None
        return await self._publish(signed, background=False)

    async def wait_published(self) -> None:
        """Wait for the checkpoint in flight, if any, to be published or withheld."""
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._inflight)
            self._reap()

    async def close(self) -> None:
        """Let the checkpoint in flight finish (bounded by the cosigning timeout)."""
        await self.wait_published()

    def _reap(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("checkpoint publication failed", exc_info=task.exception())

    async def _sign(self, *, again: bool) -> _Signed | None:
        """On the sequencing path: the heads leaf, then the log's signature over the
        checkpoint that ends with it."""
        latest = self.latest
        if self.guard is not None and not await self.guard():
            return None
        if self.append_heads is not None:
            heads = await self.append_heads()
            if heads is None:
                return None
            size = heads.index + 1
        else:
            size = self.size()
        if latest is not None and (latest[0].size > size or (latest[0].size == size and not again)):
            return None
        root, old_root = await self.state_thread.call(
            lambda: (self.tree.root(size), self.tree.root(latest[0].size) if latest else None)
        )
        if latest is not None and old_root != latest[0].root_hash:
            raise NotaryError(
                "the tree no longer agrees with the last checkpoint; refusing to sign"
            )
        note = sign_note(Checkpoint(self.origin, size, root).body(), self.signer)
        return _Signed(size, root, note, latest[0].size if latest else 0)

    async def _publish(self, signed: _Signed, *, background: bool) -> bytes | None:
        """Have ``signed`` cosigned by the witnesses' quorum, then publish it, fenced
        on CHECKPOINTS' last sequence."""
        note = signed.note
        size = signed.size
        try:
            if self.cosign is not None:
                try:
                    note = await self.cosign(note, signed.old_size)
                except LedgerError as e:
                    self.withheld = str(e)
                    self.alarms.record(WITNESS_QUORUM, f"checkpoint {size} not published: {e}")
                    return None
            self.withheld = None
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
                if background:
                    self._reload = True
                else:
                    await self.catch_up()
                    await self.load()
                return None
            self.latest = (Checkpoint(self.origin, size, signed.root), note, ack.seq)
            self.alarms.clear(WITNESS_QUORUM)
            self._stream_last = ack.seq
            self._last_at = time.monotonic()
            log.info("checkpoint %d signed", size)
            return note
        finally:
            if self.withheld is not None:
                self._last_at = time.monotonic()  # retried at the next interval

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
