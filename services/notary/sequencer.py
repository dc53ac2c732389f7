"""The sequencer: the single writer that turns INTAKE submissions into LEDGER entries.

For each batch pulled from INTAKE it

1. checks what needs no state: size, JSON, DSSE structure, schema, the intake
   subject, clock skew (:func:`services.notary.submission.precheck`);
2. verifies signatures in parallel threads (each signature once) against the
   keys it already knows;
3. admits each submission against the domain state (:class:`ledger.state.application.Batch`:
   key validity, roles, invariants), assigning index, ``integrated`` and ``prev``;
4. appends the admitted entries to LEDGER as one atomic batch fenced with
   ``Nats-Expected-Last-Sequence`` (a second notary cannot fork the ledger: its
   batch is refused, it catches up from LEDGER and tries again);
5. records the state change with its LEDGER tracking position, and notes each
   entry in the head map (:mod:`ledger.formats.headmap`);
6. answers: a signed receipt once LEDGER has acknowledged, or a reason code
   with the original bytes kept in REJECTED; only then acks INTAKE.

Before each checkpoint it appends a heads leaf (``ailedger/heads/v1``, sealed
alone, :meth:`Sequencer.append_heads`): the head map's root over every leaf so
far, so the checkpoint's last leaf commits every subject's newest entry.

A notary killed at any moment loses nothing acknowledged: INTAKE messages are
acked only after their outcome is durable, and a redelivered submission that is
already in LEDGER gets the same receipt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ledger.bus.alarms import Alarms
from ledger.bus.sealed import SealedBatch, SealedReader, trusted_seals
from ledger.bus.streams import (
    HDR_DETAIL,
    HDR_EVENT,
    HDR_INTAKE_SEQ,
    HDR_INTAKE_SUBJECT,
    HDR_MSG_ID,
    HDR_REASON,
    HEADS_SUBJECT,
    INTAKE,
    LEDGER,
    REJECTED,
    BusError,
    Verdict,
    get_message,
    last_sequence,
    publish_atomic,
    read_stream,
    rejected_copy,
    rejected_subject,
)
from ledger.formats import merkle
from ledger.formats.dsse import parse_envelope
from ledger.formats.entry import Entry, ledger_subject
from ledger.formats.headmap import HeadMap, MemoryNodeStore
from ledger.formats.heads import HeadsLeaf, heads_msg_id
from ledger.formats.keys import SLUG
from ledger.formats.note import Signer, Verifiers
from ledger.formats.receipt import Receipt, make_receipt
from ledger.formats.rejection import RejectionNoteError, open_rejection, sign_rejection
from ledger.formats.seal import HDR_SEAL, Seal, SealCache, sign_seal
from ledger.formats.timeutil import Clock, SystemClock
from ledger.formats.tree import TreeStore
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.state.application import (
    Admitted,
    AlreadyIntegrated,
    Batch,
    LedgerCorrupt,
    LedgerState,
    SignatureCheck,
)
from ledger.state.asyncbridge import StateThread
from ledger.state.successor import begin_after
from services.notary import NotaryError
from services.notary.answers import RecentRejections, accepted, is_inbox
from services.notary.submission import (
    DEFAULT_FRESHNESS,
    SignatureCache,
    Submission,
    precheck,
    verify_chunk,
)

__all__ = ["CONSUMER", "Sequencer"]

log = logging.getLogger("ailedger.notary")

_SLUG = re.compile(SLUG)
CONSUMER = "notary"


class Sequencer:
    """INTAKE in, LEDGER out: admission, fenced atomic appends, answers."""

    def __init__(
        self,
        nc: NATS,
        state: LedgerState,
        state_thread: StateThread,
        signer: Signer,
        tree: TreeStore,
        rejections: RecentRejections,
        *,
        clock: Clock | None = None,
        genesis: bytes | None = None,
        batch_size: int = 500,
        verify_threads: int = 2,
        ack_wait: float = 10.0,
        alarms: Alarms | None = None,
        heads: HeadMap | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.alarms = alarms if alarms is not None else Alarms()
        self.state = state
        self.state_thread = state_thread
        self.signer = signer
        self.tree = tree
        #: Subjects' newest entries (derived, like the tree: rebuilt from LEDGER).
        self.heads = heads if heads is not None else HeadMap(MemoryNodeStore())
        #: The newest heads leaf sealed in LEDGER, and whether the map's store
        #: was found to agree with LEDGER's heads leaves (None: nothing wrong).
        self.last_heads: HeadsLeaf | None = None
        self._heads_problem: str | None = None
        self._heads_confirmed = False
        self.rejections = rejections
        self.clock = clock or SystemClock()
        self.genesis = genesis
        self.batch_size = min(batch_size, 1000)
        self.ack_wait = ack_wait
        self.verify_pool = ThreadPoolExecutor(max(1, verify_threads), thread_name_prefix="verify")
        self.verify_threads = max(1, verify_threads)
        self.signatures = SignatureCache()
        self.last_sequence = 0
        self.last_integrated: datetime | None = None
        self._consumer: object | None = None
        #: The next batch, fetched and verified while the current one is integrated.
        self._ahead: asyncio.Task[_Prepared | None] | None = None
        #: The batch sent to LEDGER and not yet recorded (at most one).
        self._inflight: _InFlight | None = None
        # Seals by any log key of the trust policy, valid at the seal's time (a
        # rotated-out key's seals stay valid), or, without a policy, by this key.
        self._seal_cache = (
            trusted_seals(state.trust)
            if state.trust is not None
            else SealCache(Verifiers(signer.verifier()))
        )
        #: LEDGER as sealed: seals (index -> sequence, receipts), the tree's
        #: frontier, foreign messages skipped with an alarm.
        self.reader = self._new_reader()
        #: The last integrated batch's answers (receipts, verdicts, acks) in
        #: progress, and the event ids it rejects.
        self._answering: asyncio.Task[None] | None = None
        self._answering_rejected: set[str] = set()
        #: Called with the events of each appended batch, before any answer
        #: (the bus permissions follow enrolments and suspensions).
        self.on_integrated: Callable[[list[ev.Event]], Awaitable[None]] | None = None
        self.stats = {"accepted": 0, "rejected": 0, "duplicates": 0, "fenced": 0}

    # --- lifecycle ---------------------------------------------------------

    async def begin(self) -> None:
        """Rebuild state from LEDGER; integrate the genesis entry if the ledger is new."""
        await self.sync()
        await self._recall_rejections()
        if self.reader.size == 0:
            if self.genesis is None:
                raise NotaryError("LEDGER is empty and no genesis entry was given (ailedger init)")
            await self._integrate_genesis(self.genesis)

    async def subscribe(self) -> None:
        """Start taking submissions from INTAKE."""
        self._consumer = await self.js.pull_subscribe(
            "intake.>",
            durable=CONSUMER,
            stream=INTAKE,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=20_000,
                max_deliver=-1,
            ),
        )

    async def step(self) -> None:
        """Integrate one batch from INTAKE (waiting up to half a second for one).

        Pipelined: while batch k is appended to LEDGER (nats-server making it
        durable), batch k+1 is already admitted on the state as it will be once k
        is recorded (:func:`ledger.state.successor.begin_after`), and batch k+2 is
        fetched, prechecked and its signatures verified (when busy: batches of a
        quarter of ``batch_size`` or more; otherwise k+2 is fetched once k+1 is
        sent, and prepared during its append). Appends stay one after the
        other (k+1's is sent only once k's is acknowledged, fenced on k's last
        sequence), records and answers in order. If LEDGER refuses k, k+1's
        admission is dropped unrecorded and both are judged again after a catch-up."""
        assert self._consumer is not None, "start() first"
        ahead = self._ahead or asyncio.create_task(self._fetch_prepared())
        self._ahead = None
        inflight = self._inflight
        if inflight is not None and not ahead.done():
            # Whichever comes first: the next batch, or the batch in flight being
            # durable (then it is recorded and answered at once, not after the fetch).
            await asyncio.wait({ahead, inflight.append}, return_when=asyncio.FIRST_COMPLETED)
            if not ahead.done():
                await self._settle_logged()
        prepared = await ahead
        if prepared is None:
            await self._settle_logged()
            return
        if len(prepared.subs) >= self.batch_size // 4:
            # Busy: the next batch is fetched, prechecked and verified while this
            # one is admitted (its preparation would not fit in an append).
            self._ahead = asyncio.create_task(self._fetch_prepared())
        try:
            await self._integrate(prepared)
        except Exception:
            # Unacked messages come back after ack_wait; nothing is lost.
            log.exception("batch of %d failed; it will be redelivered", len(prepared.subs))
            await self._settle_logged()
            await asyncio.sleep(0.5)
        if self._ahead is None:
            # Not busy: fetched once this batch is on its way to LEDGER, so that it
            # holds what arrived while this one was admitted (one batch cycle less
            # of waiting in INTAKE); prepared and admitted during this one's append.
            self._ahead = asyncio.create_task(self._fetch_prepared())

    async def _fetch_prepared(self) -> _Prepared | None:
        """The next INTAKE batch, prechecked and its signatures verified; None if
        none came within half a second (or the fetch failed)."""
        try:
            msgs = await self._consumer.fetch(self.batch_size, timeout=0.5)  # type: ignore[union-attr]
        except TimeoutError:
            return None
        except Exception as e:
            log.warning("fetch from INTAKE failed: %s", e)
            await asyncio.sleep(0.5)
            return None
        try:
            return await self.prepare(msgs)
        except Exception:
            log.exception("preparing a batch of %d failed; it will be redelivered", len(msgs))
            await _nak_all(msgs)
            return None

    async def unsubscribe(self) -> None:
        await self._settle_logged()
        await self._wait_answered()
        task, self._ahead = self._ahead, None
        if task is not None:
            # A batch fetched ahead and not integrated: back to INTAKE at once
            # (not after ack_wait).
            task.cancel()
            with contextlib.suppress(BaseException):
                prepared = await task
                if prepared is not None:
                    await _nak_all([s.msg for s in prepared.subs])
        if self._consumer is not None:
            try:
                await self._consumer.unsubscribe()  # type: ignore[attr-defined]
            except Exception as e:
                log.debug("unsubscribe: %s", e)

    def close(self) -> None:
        self.verify_pool.shutdown(wait=True)

    # --- catching up with LEDGER --------------------------------------------

    async def sync(self) -> None:
        """Bring the state and the tree up to LEDGER's last sealed batch (at start,
        after a fence), through the sealed reader: seals and roots checked, foreign
        messages skipped with an alarm, never applied."""
        last = await last_sequence(self.nc, LEDGER)
        position = await self.state_thread.call(self.state.position)
        if position > last:
            raise NotaryError(
                f"the state holds LEDGER #{position} but LEDGER ends at #{last}: it belongs "
                "to another ledger; delete it to rebuild"
            )
        before = self.reader.size
        async for batch in self.reader.read(last):
            await self.state_thread.call(self._apply_sealed, batch)
        tree_ok = await self.state_thread.call(self._tree_matches)
        heads_problem = self._heads_check_done()
        if not tree_ok or heads_problem:
            # Derived data (a crash can leave a torn tail, or another ledger's
            # file): rebuilt from LEDGER, reading it again from the start.
            if not tree_ok:
                log.warning("the Merkle tree file does not match LEDGER's seals: rebuilding it")
                await self.state_thread.call(self.tree.reset)
            if heads_problem:
                log.warning("the head map does not match LEDGER (%s): rebuilding it", heads_problem)
                await self.state_thread.call(self._reset_heads)
            self.reader = self._new_reader()
            async for batch in self.reader.read(last):
                await self.state_thread.call(self._apply_sealed, batch)
            if not await self.state_thread.call(self._tree_matches):
                raise NotaryError("the rebuilt Merkle tree does not match LEDGER's seals")
            heads_problem = self._heads_check_done()
            if heads_problem:
                # Recomputed from LEDGER itself: a heads leaf the log key sealed
                # is wrong. Never sign on top of it.
                raise NotaryError(f"LEDGER holds a wrong heads leaf: {heads_problem}")
        size = self.reader.size
        reached = await self.state_thread.call(lambda: (self.state.size, min(self.tree.size, size)))
        if size and reached != (size, size):
            raise NotaryError(f"state and tree stopped at {reached}, expected {size} entries")
        if size > before:
            log.info("caught up with LEDGER: %d -> %d entries (#%d)", before, size, last)
        # The reader may have read on past ``last`` (a batch being committed).
        self.last_sequence = max(last, self.reader.position)
        self.last_integrated = self.reader.last_integrated

    def _new_reader(self) -> SealedReader:
        return SealedReader(self.nc, self._seal_cache, self.signer.name, self.alarms)

    def _apply_sealed(self, batch: SealedBatch) -> None:
        """On the state thread: a sealed batch into the state, the tree and the head
        map (what each already holds is skipped: they may differ after a crash)."""
        heads = batch.heads
        if heads is not None:
            self._append_leaves(heads.index, [heads.leaf_hash])
            self._check_heads(heads)
            self.state.size = heads.index + 1
            return
        pairs = batch.subject_entries()
        self.state.replay([(m.sequence, m.data) for m, _ in pairs], first_index=batch.first_index)
        self._append_leaves(batch.first_index, [e.leaf_hash for e in batch.entries])
        for _, e in pairs:
            self.heads.note(e.subject, e.index, e.leaf_hash)

    def _check_heads(self, heads: HeadsLeaf) -> None:
        """On the state thread: a heads leaf read from LEDGER against the head map."""
        self.last_heads = heads
        hm = self.heads
        if self._heads_problem is not None or heads.size < hm.size:
            return
        if heads.size == hm.size:
            if (hm.root, hm.subjects) != (heads.root, heads.subjects):
                self._heads_problem = f"the stored map differs from heads leaf {heads.index}"
            else:
                self._heads_confirmed = True
            return
        staged = hm.stage(heads.size)
        if (staged.root, staged.subjects) != (heads.root, heads.subjects):
            hm.rollback()
            self._heads_problem = (
                f"heads leaf {heads.index} says {heads.subjects} subjects with root "
                f"{base64.b64encode(heads.root).decode()}, the entries before it give "
                f"{staged.subjects} subjects with root {base64.b64encode(staged.root).decode()}"
            )
            return
        hm.commit()
        self._heads_confirmed = True

    def _heads_check_done(self) -> str | None:
        """After reading LEDGER: what is wrong with the head map, if anything."""
        if self._heads_problem is None and self.heads.size > 0 and not self._heads_confirmed:
            self._heads_problem = (
                f"the stored map covers {self.heads.size} leaves, LEDGER has no heads leaf there"
            )
        return self._heads_problem

    def _reset_heads(self) -> None:
        self.heads.reset()
        self.last_heads = None
        self._heads_problem = None
        self._heads_confirmed = False

    def _tree_matches(self) -> bool:
        """On the state thread: the tree's first leaves are the sealed leaves read (it
        may hold more: another notary sharing the file may be ahead)."""
        size = self.reader.size
        if self.tree.size < size:
            return False
        return size == 0 or self.tree.root(size) == self.reader.frontier.root()

    def seal_of(self, index: int) -> Seal | None:
        """The seal of the batch holding entry ``index``."""
        return self.reader.seal_of(index)

    async def receipt_of(self, index: int, event_id: str) -> Receipt | None:
        """The receipt of an entry already in LEDGER (read back through its seal)."""
        seal = self.reader.seal_of(index)
        seq = self.reader.sequence_of(index)
        if seal is None or seq is None:
            return None
        stored = await get_message(self.nc, LEDGER, seq)
        if stored is None:
            return None
        entry = Entry.parse(stored.data)
        if entry.index != index:
            return None
        proof = await self.state_thread.call(self.tree.inclusion_proof, index, seal.size)
        return make_receipt(entry, event_id, proof, seal)

    def _sealed(self, batch: Batch, seals: list[Seal]) -> None:
        """The batch LEDGER acknowledged, into the reader (seals, frontier, position),
        unless a catch-up after a failed recording has read it already."""
        entries = [a.entry for a in batch.admitted]
        start = 0
        for seal in seals:
            count = seal.size - entries[start].index
            if seal.size > self.reader.size and seal.seq > self.reader.position:
                self.reader.add_own(seal, entries[start : start + count])
            start += count

    def _record(self, batch: Batch) -> None:
        """On the state thread: the batch LEDGER acknowledged, into the state, the tree
        and the head map."""
        self.state.commit(batch)
        self._append_leaves(batch.first_index, [a.entry.leaf_hash for a in batch.admitted])
        for a in batch.admitted:
            self.heads.note(a.entry.subject, a.entry.index, a.entry.leaf_hash)

    # --- heads leaves ------------------------------------------------------------

    @property
    def heads_current(self) -> bool:
        """Whether the last sealed leaf is a heads leaf (nothing appended since)."""
        return self.last_heads is not None and self.last_heads.index == self.reader.size - 1

    async def append_heads(self) -> HeadsLeaf | None:
        """Seal a heads leaf covering every leaf so far and append it to LEDGER alone,
        fenced like any batch; return it, or the last one if nothing was appended
        since. None when LEDGER is empty or another notary appended first (this
        one caught up; the caller tries again later)."""
        await self._settle()  # LEDGER appends one at a time: the batch in flight first
        if self.reader.size == 0:
            return None
        if self.heads_current:
            return self.last_heads
        if self._heads_problem is not None:
            raise NotaryError(f"not sealing heads over a wrong map: {self._heads_problem}")
        m = self.reader.size
        leaf = await self.state_thread.call(self.heads.stage, m)
        now = self._integration_time()
        frontier = self.reader.frontier.copy()
        frontier.append(leaf.leaf_hash)
        seq = self.last_sequence + 1
        seal = sign_seal(self.signer, seq, m + 1, frontier.root(), now)
        headers = {HDR_MSG_ID: heads_msg_id(m), HDR_SEAL: seal.header_value}
        try:
            await publish_atomic(self.nc, [(HEADS_SUBJECT, leaf.encoded, headers)], seq - 1)
        except BusError as e:
            await self.state_thread.call(self.heads.rollback)
            self.stats["fenced"] += 1
            log.info("heads leaf refused (%s): catching up with LEDGER", e)
            await self.sync()
            return None
        except BaseException:
            await self.state_thread.call(self.heads.rollback)
            raise

        def record() -> None:
            self.heads.commit()
            self._append_leaves(m, [leaf.leaf_hash])
            self.state.size = m + 1

        await self.state_thread.call(record)
        self.reader.add_own(seal, [leaf])
        self.last_sequence = seq
        self.last_integrated = now
        self.last_heads = leaf
        self._heads_confirmed = True
        log.info("heads leaf %d sealed: %d subjects", m, leaf.subjects)
        return leaf

    def _append_leaves(self, first: int, leaves: list[bytes]) -> None:
        """On the state thread: leaves ``first``... into the tree file, except those it
        holds already (another notary on the same home may have written them;
        roots are checked against the seals on every catch-up)."""
        size = self.tree.size
        if first <= size < first + len(leaves):
            self.tree.append(size, leaves[size - first :])
        elif size < first:
            raise NotaryError(f"the tree holds {size} leaves, cannot append leaf {first}")

    async def _recall_rejections(self) -> None:
        """Final rejections kept in REJECTED with their signed notes: remembered, so
        that the same event id only ever gets the same rejection (after a restart too)."""
        last = await last_sequence(self.nc, REJECTED)
        verifiers = self._seal_cache.verifiers
        n = 0
        async for m in read_stream(self.nc, REJECTED, 1, last, subject="rejected.>"):
            value = m.headers.get(HDR_REJECTION)
            if value is None:
                continue
            try:
                note = base64.b64decode(value, validate=True)
                signed = open_rejection(note, verifiers)
            except (RejectionNoteError, ValueError) as e:
                log.warning("REJECTED #%d: rejection note does not verify: %s", m.sequence, e)
                continue
            self.rejections.remember(
                signed.event_id,
                Verdict(
                    status="rejected",
                    event_id=signed.event_id,
                    code=signed.code,
                    detail=m.headers.get(HDR_DETAIL, ""),
                    rejection=note.decode(),
                ),
            )
            n += 1
        if n:
            log.info("remembered %d final rejections from REJECTED", n)

    def _integration_time(self) -> datetime:
        now = self.clock.now()
        if self.last_integrated is not None and now < self.last_integrated:
            return self.last_integrated  # integrated never decreases along the index
        return now

    async def _integrate_genesis(self, genesis: bytes) -> None:
        env = parse_envelope(genesis)
        event = ev.decode_event(env.payload)
        now = self._integration_time()

        def admit() -> Batch:
            batch = self.state.begin(first_sequence=self.last_sequence + 1)
            batch.admit(env, event, now)
            return batch

        batch = await self.state_thread.call(admit)
        try:
            seals = await self._append(batch)
        except BusError as e:
            log.info("genesis raced with another notary (%s); catching up", e)
            await self.sync()
            return
        await self.state_thread.call(self._record, batch)
        self._sealed(batch, seals)
        self.last_sequence = batch.last_sequence
        self.last_integrated = now

    # --- one batch ------------------------------------------------------------

    async def prepare(self, msgs: Sequence[Msg]) -> _Prepared:
        """What needs no state: prechecks, then each signature verified once, in
        parallel, against the hinted key if known."""
        subs = [Submission(m) for m in msgs]
        now = self._integration_time()
        trust = self.state.trust
        freshness = trust.freshness if trust is not None else DEFAULT_FRESHNESS
        for s in subs:
            precheck(s, now, freshness)
            s.prechecked = s.early
        results = await self._preverify([s for s in subs if s.early is None and s.env is not None])
        return _Prepared(subs, results)

    async def _integrate(self, prepared: _Prepared) -> None:
        """Admit one prepared batch and send it to LEDGER (in flight: recorded and
        answered by :meth:`_settle`), on top of the batch in flight if there is one."""
        subs = prepared.subs
        signatures = self.signatures.checker(prepared.results)
        inflight = self._inflight
        if inflight is not None and any(_event_id_of(s) in inflight.rejected for s in subs):
            # Judged again only once the rejection in flight is final (below).
            await self._settle()
        if self._answering is not None and any(
            _event_id_of(s) in self._answering_rejected for s in subs
        ):
            # A rejection of the batch being answered becomes final when it is
            # kept in REJECTED: wait for it, so that the same event id gets it.
            await self._wait_answered()
        for s in subs:
            event_id = _event_id_of(s)
            known = self.rejections.get(event_id) if event_id else None
            if known is not None and known.rejection is not None:
                # Rejected for good before: the same signed rejection, never judged again.
                s.remembered = known
                s.outcome = None
                s.early = None
                s.env = None
        inflight = self._inflight
        if inflight is not None:
            now = self._integration_time()
            t0 = time.perf_counter()
            batch = await self.state_thread.call(
                self._admit_all, subs, now, signatures, inflight.batch
            )
            admitted_in = time.perf_counter() - t0
            if await self._settle():
                # Recorded: the state this batch was judged on is the recorded
                # state (ledger.state.successor), so its judgement stands as
                # made, rejections only too (their fence check below).
                await self._integrate_now(prepared, signatures, batch, admitted_in)
                return
            # The batch in flight did not reach LEDGER: this one was admitted on top
            # of it, so its admission is void; judged again on the caught-up state.
        await self._integrate_now(prepared, signatures)

    async def _integrate_now(
        self,
        prepared: _Prepared,
        signatures: SignatureCheck,
        batch: Batch | None = None,
        admit_seconds: float = 0.0,
        attempt: int = 1,
    ) -> None:
        """Admit on the recorded state (or take ``batch``, already admitted on it) and
        send what is admitted to LEDGER (in flight); rejections only, judged again
        until the state they were judged on is LEDGER's (another notary may have
        appended)."""
        assert self._inflight is None
        subs = prepared.subs
        now = self._integration_time()
        for _ in range(10):
            if batch is None:
                t0 = time.perf_counter()
                batch = await self.state_thread.call(self._admit_all, subs, now, signatures, None)
                admit_seconds = time.perf_counter() - t0
            if not batch.admitted:
                # Nothing to append, so no fence proves the state was current.
                # Refusals judged on a stale state (another notary appended
                # since) must be judged again.
                if any(isinstance(s.outcome, errors.Rejection) and s.early is None for s in subs):
                    current = await last_sequence(self.nc, LEDGER)
                    if current != batch.first_sequence - 1:
                        self.stats["fenced"] += 1
                        await self.sync()
                        now = self._integration_time()
                        batch = None
                        continue
                self._answer_later(subs, [], None)
                return
            # In flight: settled (recorded, answered; judged again if refused) by
            # the next step, or as soon as LEDGER acknowledges it.
            self._launch(prepared, signatures, batch, admit_seconds, attempt)
            return
        log.error("could not judge a batch on a current state after 10 catch-ups; leaving it")

    def _launch(
        self,
        prepared: _Prepared,
        signatures: SignatureCheck,
        batch: Batch,
        admit_seconds: float,
        attempt: int = 1,
    ) -> None:
        """Send an admitted batch to LEDGER; it is in flight until :meth:`_settle`."""
        assert self._inflight is None
        rejected = {
            event_id
            for s in prepared.subs
            if isinstance(s.outcome, errors.Rejection) and (event_id := _event_id_of(s))
        }
        append = asyncio.create_task(self._append(batch))
        self._inflight = _InFlight(
            prepared,
            signatures,
            batch,
            append,
            asyncio.create_task(self._acknowledged(prepared, batch, append, admit_seconds)),
            rejected,
            attempt,
        )

    async def _acknowledged(
        self,
        prepared: _Prepared,
        batch: Batch,
        append: asyncio.Task[list[Seal]],
        admit_seconds: float,
    ) -> asyncio.Future[None] | None:
        """As soon as LEDGER acknowledges a batch (whatever the sequencer is doing):
        its recording queued on the state thread, its seals released, its receipts
        proved and its answers sent. None if LEDGER refused it (:meth:`_settle`
        catches up and judges it again)."""
        sent = time.perf_counter()
        try:
            seals = await append
        except BusError:
            return None
        appended = time.perf_counter()
        # Queued first: whatever the answers ask the state thread comes after it.
        recording = self.state_thread.submit(self._record, batch)
        # Released only now: a seal of a batch LEDGER refused never leaves.
        self._sealed(batch, seals)
        self.last_sequence = batch.last_sequence
        self.last_integrated = batch.admitted[-1].entry.integrated
        # The proofs from the batch's leaves and the tree's earlier hashes (the
        # previous batch is recorded: its settling waited for it).
        proofs: list[list[bytes]] | None = None
        try:
            proofs = self._prove(batch, seals)
        except Exception:
            # Read from the tree once recorded, each checked (_sign_receipts).
            log.exception("proving batch %d.. in memory failed", batch.first_index)
        self._answer_later(prepared.subs, batch.admitted, proofs)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "batch of %d: %d admitted, admit %.1f ms, append %.1f ms",
                len(prepared.subs),
                len(batch.admitted),
                admit_seconds * 1000,
                (appended - sent) * 1000,
            )
        return recording

    def _prove(self, batch: Batch, seals: Sequence[Seal]) -> list[list[bytes]]:
        """Inclusion proofs of a batch's entries under their seals, from the chunks'
        leaves in memory (each chunk is the tree's newest leaves under its seal)
        and the tree file's hashes left of them, each chunk checked at both ends
        against its seal's root."""
        proofs: list[list[bytes]] = []
        start = 0
        for seal in seals:
            end = seal.size - batch.first_index
            leaves = [a.entry.leaf_hash for a in batch.admitted[start:end]]
            chunk = merkle.prove_newest(seal.size, leaves, self.tree.read_hashes)
            for i in {0, len(chunk) - 1}:
                entry = batch.admitted[start + i].entry
                merkle.verify_inclusion(
                    entry.leaf_hash, entry.index, seal.size, chunk[i], seal.root
                )
            proofs += chunk
            start = end
        return proofs

    async def _settle_logged(self) -> None:
        try:
            await self._settle()
        except Exception:
            log.exception("finishing the batch in flight failed; it will be redelivered")

    async def _settle(self) -> bool:
        """Finish the batch in flight, if any: wait until it is acknowledged (then
        answered) and recorded. If LEDGER refused it: catch up and integrate its
        submissions again; False then (a batch admitted on top of it is void)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return True
        recording = await inflight.acknowledged
        if recording is None:
            error = inflight.append.exception()
            self.stats["fenced"] += 1
            log.info(
                "append refused (%s), attempt %d: catching up with LEDGER",
                error,
                inflight.attempt,
            )
            await self.sync()
            if inflight.attempt >= 10:
                log.error("could not append a batch after 10 attempts; leaving it to redelivery")
                return False
            await self._integrate_again(inflight)
            return False
        try:
            await recording
        except Exception:
            log.exception("recording state or tree failed; rebuilding from LEDGER")
            await self.sync()
        return True

    async def _integrate_again(self, inflight: _InFlight) -> None:
        """The submissions of a batch LEDGER refused, judged again on the caught-up
        state (the same attempt count: ten in all)."""
        # Rejections only are answered once the state they were judged on is
        # still LEDGER's (another notary may have appended again since the catch-up).
        await self._integrate_now(
            inflight.prepared, inflight.signatures, attempt=inflight.attempt + 1
        )
        await self._settle()

    def _answer_later(
        self, subs: list[Submission], admitted: list[Admitted], proofs: list[list[bytes]] | None
    ) -> None:
        """Receipts, verdicts and acks of a decided batch, in the background, after
        the previous batch's."""
        events: list[ev.Event] = [a.event for a in admitted]
        new = self._new_receipts(subs, proofs)
        previous = self._answering
        # Every event id rejected by a batch not yet answered (the previous
        # batch's answers may still be going out).
        unanswered = self._answering_rejected if previous and not previous.done() else set()
        self._answering_rejected = unanswered | {
            event_id
            for s in subs
            if isinstance(s.outcome, errors.Rejection) and (event_id := _event_id_of(s))
        }
        self._answering = asyncio.create_task(self._answer_batch(previous, subs, events, new))

    async def _answer_batch(
        self,
        previous: asyncio.Task[None] | None,
        subs: list[Submission],
        admitted: list[ev.Event],
        new: list[tuple[Submission, Admitted, Seal, list[bytes] | None]],
    ) -> None:
        """After the previous batch's answers: permissions, receipts, answers, acks."""
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            if self.on_integrated is not None and admitted:
                await self.on_integrated(admitted)
            await self._sign_receipts(subs, new)
            await self._answer(subs)
        except Exception:
            # Unanswered, unacked: redelivered after ack_wait, answered then.
            log.exception("answering a batch of %d failed; it will be redelivered", len(subs))

    async def _wait_answered(self) -> None:
        """Wait until every integrated batch has been answered."""
        task = self._answering
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            if self._answering is task:
                self._answering = None
                self._answering_rejected = set()

    async def _preverify(self, subs: list[Submission]) -> dict[tuple[int, bytes], bool]:
        """Verify each signature once, in parallel, against the hinted key if known."""
        jobs = self.signatures.jobs(subs)
        if not jobs:
            return {}
        loop = asyncio.get_running_loop()
        n = self.verify_threads if len(jobs) >= 32 else 1
        chunks = [jobs[i::n] for i in range(n)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self.verify_pool, verify_chunk, c) for c in chunks)
        )
        verified: dict[tuple[int, bytes], bool] = {}
        for part in results:
            verified.update(part)
        return verified

    def _admit_all(
        self,
        subs: list[Submission],
        now: datetime,
        signatures: SignatureCheck,
        after: Batch | None,
    ) -> Batch:
        """The sequential pass, on the state thread: decide every submission, on the
        recorded state or, with ``after``, on the state once ``after`` is recorded."""
        if after is None:
            batch = self.state.begin(first_sequence=self.last_sequence + 1)
        else:
            batch = begin_after(after)
        # The duplicate check of the whole batch in one query.
        batch.prefetch([s.event.event_id for s in subs if s.event is not None and s.early is None])
        for s in subs:
            if s.remembered is not None:
                continue  # answered with the rejection it had before
            # What the precheck found (a batch may be admitted again after a catch-up).
            s.early = s.outcome = s.prechecked
            if (
                isinstance(s.early, errors.Stale)
                and s.event is not None
                and batch.state.event_record(s.event.event_id) is not None
            ):
                # Freshness refuses old signatures, not old answers: an event
                # already in the ledger is judged (its receipt, or a duplicate).
                s.early = s.outcome = None
            if s.early is not None or s.env is None or s.event is None:
                continue  # rejected before admission
            s.outcome = None
            try:
                s.outcome = batch.admit(s.env, s.event, now, signatures=signatures)
            except (errors.Rejection, AlreadyIntegrated) as outcome:
                s.outcome = outcome
            except LedgerCorrupt:
                raise
            except Exception as e:
                log.exception("admitting event %s failed", s.event.event_id)
                s.outcome = errors.InternalError(f"{type(e).__name__}: {e}")
        return batch

    async def _append(self, batch: Batch) -> list[Seal]:
        """Append the batch as atomic LEDGER batches, each sealed on its last message."""
        messages = [
            (
                ledger_subject(a.entry.subject),
                a.entry.encoded,
                {HDR_MSG_ID: a.event.event_id},
            )
            for a in batch.admitted
        ]
        base = batch.admitted[0].entry.index
        if base != self.reader.size:
            raise NotaryError(
                f"batch starts at index {base}, the sealed ledger has {self.reader.size}"
            )
        frontier = self.reader.frontier.copy()
        seals = []
        for start in range(0, len(messages), 1000):
            chunk = messages[start : start + 1000]
            end = start + len(chunk)
            for a in batch.admitted[start:end]:
                frontier.append(a.entry.leaf_hash)
            root = frontier.root()
            seal = sign_seal(
                self.signer,
                batch.first_sequence + start,
                base + end,
                root,
                batch.admitted[end - 1].entry.integrated,
            )
            chunk[-1][2][HDR_SEAL] = seal.header_value
            await publish_atomic(self.nc, chunk, batch.first_sequence - 1 + start)
            seals.append(seal)
        return seals

    # --- answers ----------------------------------------------------------------

    def _new_receipts(
        self, subs: list[Submission], proofs: list[list[bytes]] | None
    ) -> list[tuple[Submission, Admitted, Seal, list[bytes] | None]]:
        """The admitted submissions with their seal and, if recorded, their proof."""
        by_index: dict[int, list[bytes]] = {}
        new: list[tuple[Submission, Admitted, Seal, list[bytes] | None]] = []
        for s in subs:
            if isinstance(s.outcome, Admitted):
                seal = self.seal_of(s.outcome.entry.index)
                assert seal is not None, "the batch was sealed"
                new.append((s, s.outcome, seal, None))
        if proofs is not None and len(proofs) == len(new):
            # _record proved the batch's entries in index order, as admitted.
            by_index = {n[1].entry.index: p for n, p in zip(new, proofs, strict=True)}
            new = [(s, a, seal, by_index[a.entry.index]) for s, a, seal, _ in new]
        return new

    async def _sign_receipts(
        self,
        subs: list[Submission],
        new: list[tuple[Submission, Admitted, Seal, list[bytes] | None]],
    ) -> None:
        """Receipts v2: each entry's proof under its batch's seal (no signature of
        its own); duplicates get the receipt of the entry already in LEDGER."""
        checked = True
        if any(proof is None for *_, proof in new):
            # Not proved when recorded (a catch-up rebuilt the state): read them now.
            checked = False
            proofs = await self.state_thread.call(
                self._proofs_of, [(a, seal) for _, a, seal, _ in new]
            )
            new = [(s, a, seal, p) for (s, a, seal, _), p in zip(new, proofs, strict=True)]
        for s, admitted, seal, proof in new:
            assert proof is not None
            s.receipt = make_receipt(
                admitted.entry, admitted.event.event_id, proof, seal, checked=checked
            )
        for s in subs:
            if isinstance(s.outcome, AlreadyIntegrated):
                record = s.outcome.record
                s.receipt = await self.receipt_of(record.index, record.event_id)
                if s.receipt is None:
                    s.outcome = errors.InternalError(f"no seal covers entry {record.index} yet")

    def _proofs_of(self, new: list[tuple[Admitted, Seal]]) -> list[list[bytes]]:
        """On the state thread (the tree): inclusion proofs of appended entries,
        each stored hash read once per seal (neighbouring proofs share theirs)."""
        proofs: list[list[bytes]] = []
        start = 0
        while start < len(new):
            seal = new[start][1]
            end = start
            while end < len(new) and new[end][1].size == seal.size:
                end += 1
            indexes = [admitted.entry.index for admitted, _ in new[start:end]]
            proofs += self.tree.inclusion_proofs(indexes, seal.size)
            start = end
        return proofs

    async def _answer(self, subs: list[Submission]) -> None:
        """Keep rejections in REJECTED, answer every submitter, then ack INTAKE."""
        rejected = [s for s in subs if isinstance(s.outcome, errors.Rejection)]
        stored = await asyncio.gather(
            *(self._keep_rejection(s) for s in rejected), return_exceptions=True
        )
        not_kept = {id(s) for s, ok in zip(rejected, stored, strict=True) if ok is not True}
        for s in subs:
            if id(s) in not_kept:
                continue  # not durable yet: no answer, no ack; it will come back
            verdict = self._verdict(s)
            if s.reply_to and is_inbox(s.reply_to):
                try:
                    await self.nc.publish(s.reply_to, verdict.encode())
                except Exception as e:
                    log.warning("answering %s: %s", s.reply_to, e)
            try:
                await s.msg.ack()
            except Exception as e:
                log.warning("ack INTAKE #%d: %s", s.intake_sequence, e)
        if not_kept:
            log.warning("%d rejections could not be stored in REJECTED; will retry", len(not_kept))

    def _verdict(self, s: Submission) -> Verdict:
        outcome = s.outcome
        remembered = s.remembered
        if remembered is not None:
            self.stats["rejected"] += 1
            return remembered
        event_id = _event_id_of(s)
        if isinstance(outcome, errors.Rejection):
            self.stats["rejected"] += 1
            verdict = s.rejection_verdict or self._rejection_verdict(s)
            if event_id is not None and verdict.rejection is not None:
                self.rejections.remember(event_id, verdict)
            return verdict
        assert s.receipt is not None and isinstance(outcome, (Admitted, AlreadyIntegrated))
        if isinstance(outcome, AlreadyIntegrated):
            self.stats["duplicates"] += 1
        else:
            self.stats["accepted"] += 1
        self.rejections.forget(s.receipt.event_id)
        return accepted(outcome.record, s.receipt)

    def _rejection_verdict(self, s: Submission) -> Verdict:
        """The verdict of a rejection: signed (``ailedger/rejection/v1``) when it is
        final, unsigned (not a verdict: the client retries) when it is transient."""
        assert isinstance(s.outcome, errors.Rejection)
        event_id = _event_id_of(s)
        verdict = Verdict(
            status="rejected", event_id=event_id, code=s.outcome.code, detail=s.outcome.detail
        )
        if event_id is not None and s.outcome.code not in TRANSIENT_CODES:
            note = sign_rejection(
                self.signer, event_id, s.msg.data, s.outcome.code, self._integration_time()
            )
            verdict.rejection = note.note.decode()
        return verdict

    async def _keep_rejection(self, s: Submission) -> bool:
        assert isinstance(s.outcome, errors.Rejection)
        verdict = self._rejection_verdict(s)
        s.rejection_verdict = verdict
        token = s.msg.subject.split(".")[1] if s.msg.subject.count(".") >= 2 else ""
        actor = token if _is_slug(token) else "_invalid"
        headers = {
            # Redelivery of the same INTAKE message must not be kept twice.
            HDR_MSG_ID: f"intake-{s.intake_sequence}",
            HDR_REASON: s.outcome.code,
            HDR_DETAIL: " ".join(s.outcome.detail.split())[:900],
            HDR_INTAKE_SUBJECT: s.msg.subject,
            HDR_INTAKE_SEQ: str(s.intake_sequence),
        }
        if s.event is not None:
            headers[HDR_EVENT] = s.event.event_id
        if verdict.rejection is not None:
            # The signed verdict is kept with the bytes: re-read at start, the
            # same event id then only ever gets this very rejection.
            headers[HDR_REJECTION] = base64.b64encode(verdict.rejection.encode()).decode()
        # Never the whole of an oversize message: the copy must stay under max_payload.
        data, headers = rejected_copy(s.msg.data, headers)
        await self.js.publish(
            rejected_subject(actor), data, headers=headers, stream=REJECTED, timeout=5
        )
        return True


#: Reason codes that are not verdicts: not signed, not remembered, retried.
TRANSIENT_CODES = frozenset({errors.InternalError.code})
#: The signed rejection note kept with a rejected submission in REJECTED (base64).
HDR_REJECTION = "Ailedger-Rejection"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class _InFlight:
    """A batch admitted and sent to LEDGER, not yet acknowledged nor recorded."""

    prepared: _Prepared
    signatures: SignatureCheck
    batch: Batch
    append: asyncio.Task[list[Seal]]
    #: Once acknowledged: answered, its recording queued (None: LEDGER refused it).
    acknowledged: asyncio.Task[asyncio.Future[None] | None]
    #: The event ids it rejects (a later batch holding one waits for it to settle).
    rejected: set[str]
    attempt: int


@dataclass
class _Prepared:
    """An INTAKE batch prechecked, its signatures verified (not yet admitted)."""

    subs: list[Submission]
    #: (id(envelope), public key) -> verified, for this batch's envelopes.
    results: dict[tuple[int, bytes], bool]


async def _nak_all(msgs: Sequence[Msg]) -> None:
    for m in msgs:
        with contextlib.suppress(Exception):
            await m.nak()


def _event_id_of(s: Submission) -> str | None:
    """The event id of a submission: its payload's, or, if the payload could not be
    read, its message id (the SDK sets it to the event id), if it is one."""
    if s.event is not None:
        return s.event.event_id
    msg_id = (s.msg.headers or {}).get(HDR_MSG_ID, "")
    return msg_id if _UUID.fullmatch(msg_id) else None


def _is_slug(token: str) -> bool:
    return _SLUG.fullmatch(token) is not None
