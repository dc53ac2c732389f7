"""The notary: the single sequencer that turns INTAKE submissions into LEDGER entries.

For each batch pulled from INTAKE it

1. checks what needs no state: size, JSON, DSSE structure, schema, the intake
   subject, clock skew;
2. verifies signatures in parallel threads (each signature once) against the
   keys it already knows;
3. admits each submission against the domain state (:class:`ledger.state.application.Batch`:
   key validity, roles, invariants), assigning index, ``integrated`` and ``prev``;
4. appends the admitted entries to LEDGER as one atomic batch fenced with
   ``Nats-Expected-Last-Sequence`` (a second notary cannot fork the ledger: its
   batch is refused, it catches up from LEDGER and tries again);
5. records the state change with its LEDGER tracking position;
6. answers: a signed receipt once LEDGER has acknowledged, or a reason code
   with the original bytes kept in REJECTED; only then acks INTAKE.

A notary killed at any moment loses nothing acknowledged: INTAKE messages are
acked only after their outcome is durable, and a redelivered submission that is
already in LEDGER gets the same receipt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import (
    CHECKPOINT_SUBJECT,
    CHECKPOINTS,
    HDR_DETAIL,
    HDR_EVENT,
    HDR_INTAKE_SEQ,
    HDR_INTAKE_SUBJECT,
    HDR_MSG_ID,
    HDR_REASON,
    HDR_REPLY,
    INTAKE,
    LEDGER,
    LOOKUP_SUBJECT,
    REJECTED,
    BusError,
    Verdict,
    connect,
    ensure_streams,
    get_message,
    last_message,
    last_sequence,
    publish_atomic,
    read_stream,
    rejected_subject,
)
from ledger.formats.checkpoint import Checkpoint, format_tlog_proof, parse_checkpoint
from ledger.formats.dsse import EnvelopeError, ParsedEnvelope, parse_envelope
from ledger.formats.entry import Entry, ledger_subject
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.keys import SLUG, fingerprint
from ledger.formats.merkle import leaf_hash, stored_hash_index
from ledger.formats.note import NoteError, Signer, Verifier, Verifiers, open_note, sign_note
from ledger.formats.receipt import Receipt, sign_receipt
from ledger.formats.timeutil import Clock, SystemClock, format_time
from ledger.formats.tree import TreeStore
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.state.application import Admitted, AlreadyIntegrated, Batch, LedgerCorrupt, LedgerState
from ledger.state.asyncbridge import StateThread
from ledger.state.domain import EventRecord
from ledger.state.persistence import sqlite_env

__all__ = ["MAX_ENVELOPE", "Notary", "NotaryError"]

log = logging.getLogger("ailedger.notary")

MAX_ENVELOPE = 64 * 1024
_SLUG = re.compile(SLUG)
MAX_CLOCK_SKEW = timedelta(minutes=5)
CONSUMER = "notary"


class NotaryError(LedgerError, RuntimeError):
    """The notary cannot run (no genesis, foreign key, state from another ledger)."""

    code = "notary_cannot_run"
    exit_status = USAGE


@dataclass
class Submission:
    """One INTAKE message on its way through the notary."""

    msg: Msg
    env: ParsedEnvelope | None = None
    event: ev.AnyEvent | None = None
    #: A rejection found before any state was consulted; final.
    early: errors.Rejection | None = None
    outcome: Admitted | AlreadyIntegrated | errors.Rejection | None = None
    receipt: Receipt | None = None

    @property
    def reply_to(self) -> str | None:
        return (self.msg.headers or {}).get(HDR_REPLY)

    @property
    def intake_sequence(self) -> int:
        return int(self.msg.metadata.sequence.stream)


@dataclass
class SignatureCache:
    """Signatures verified once, in parallel, before the sequential admission pass."""

    results: dict[tuple[int, bytes], bool] = field(default_factory=dict)
    known_keys: dict[str, bytes] = field(default_factory=dict)

    def check(self, env: ParsedEnvelope, public_key: bytes) -> bool:
        found = self.results.get((id(env), public_key))
        if found is None:
            found = env.verify(public_key)
            self.known_keys[fingerprint(public_key)] = public_key
        return found


class Notary:
    def __init__(
        self,
        nc: NATS,
        state: LedgerState,
        signer: Signer,
        tree: TreeStore,
        *,
        clock: Clock | None = None,
        genesis: bytes | None = None,
        batch_size: int = 500,
        verify_threads: int = 2,
        ack_wait: float = 10.0,
        checkpoint_every: int = 256,
        checkpoint_interval: float = 5.0,
    ) -> None:
        self.nc = nc
        self.tree = tree
        self.checkpoint_every = max(1, checkpoint_every)
        self.checkpoint_interval = checkpoint_interval
        #: The last checkpoint in CHECKPOINTS: (checkpoint, signed note, stream sequence).
        self.latest_checkpoint: tuple[Checkpoint, bytes, int] | None = None
        self._last_checkpoint_at = time.monotonic()
        self.js = nc.jetstream(timeout=10)
        self.state = state
        self.signer = signer
        self.origin = signer.name
        self.clock = clock or SystemClock()
        self.genesis = genesis
        self.batch_size = min(batch_size, 1000)
        self.ack_wait = ack_wait
        self.state_thread = StateThread("notary-state")
        self.verify_pool = ThreadPoolExecutor(max(1, verify_threads), thread_name_prefix="verify")
        self.verify_threads = max(1, verify_threads)
        self.signatures = SignatureCache()
        self.last_sequence = 0
        self.last_integrated: datetime | None = None
        self._recent_rejections: OrderedDict[str, Verdict] = OrderedDict()
        self._consumer: object | None = None
        self._lookup_sub: object | None = None
        self.stats = {"accepted": 0, "rejected": 0, "duplicates": 0, "fenced": 0}

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Set up streams, rebuild state from LEDGER, integrate genesis if the ledger is new."""
        await ensure_streams(self.nc)
        await self.sync()
        if self.last_sequence == 0:
            if self.genesis is None:
                raise NotaryError("LEDGER is empty and no genesis entry was given (ailedger init)")
            await self._integrate_genesis(self.genesis)
        info = await self.state_thread.call(self.state.ledger_info)
        if info is None:
            raise NotaryError("LEDGER has no genesis entry")
        if self.signer.verifier().vkey not in info.notary_keys:
            raise NotaryError(
                f"this notary's key {self.signer.verifier().vkey} is not a notary key of "
                f"ledger {info.origin!r}"
            )
        if info.origin != self.origin:
            raise NotaryError(f"notary key is named {self.origin!r}, the ledger is {info.origin!r}")
        self._log_verifiers = Verifiers(*(Verifier.from_vkey(k) for k in info.notary_keys))
        await self._load_checkpoint()
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
        self._lookup_sub = await self.nc.subscribe(
            LOOKUP_SUBJECT, queue="notary", cb=self._on_lookup
        )
        log.info("notary ready: %s, %d entries", self.origin, self.last_sequence)

    async def run(self, stop: asyncio.Event) -> None:
        """Integrate submissions until ``stop`` is set."""
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        while not stop.is_set():
            await self._maybe_checkpoint()
            try:
                msgs = await consumer.fetch(self.batch_size, timeout=0.5)  # type: ignore[attr-defined]
            except TimeoutError:
                continue
            except Exception as e:
                log.warning("fetch from INTAKE failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            try:
                await self.process(msgs)
            except Exception:
                # Unacked messages come back after ack_wait; nothing is lost.
                log.exception("batch of %d failed; it will be redelivered", len(msgs))
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        for sub in (self._lookup_sub, self._consumer):
            if sub is not None:
                try:
                    await sub.unsubscribe()  # type: ignore[attr-defined]
                except Exception as e:
                    log.debug("unsubscribe: %s", e)
        self.state_thread.close()
        self.verify_pool.shutdown(wait=True)

    # --- catching up with LEDGER --------------------------------------------

    async def sync(self) -> None:
        """Bring the state and the tree up to LEDGER's last entry (at start, after a fence)."""
        last = await last_sequence(self.nc, LEDGER)
        position = await self.state_thread.call(self.state.position)
        await self._check_tree_tail(last)
        tree_size = await self.state_thread.call(lambda: self.tree.size)
        for what, have in (("state", position), ("Merkle tree", tree_size)):
            if have > last:
                raise NotaryError(
                    f"the {what} holds {have} entries but LEDGER holds {last}: it belongs to "
                    "another ledger; delete it to rebuild"
                )
        start = min(position, tree_size) + 1
        if last >= start:
            chunk: list[tuple[int, bytes]] = []
            async for m in read_stream(self.nc, LEDGER, start, last):
                chunk.append((m.sequence, m.data))
                if len(chunk) >= 1000:
                    await self.state_thread.call(self._apply_stored, chunk)
                    chunk = []
            if chunk:
                await self.state_thread.call(self._apply_stored, chunk)
            reached = await self.state_thread.call(lambda: (self.state.position(), self.tree.size))
            if reached != (last, last):
                raise NotaryError(f"state and tree stopped at {reached}, expected LEDGER #{last}")
            log.info("caught up with LEDGER: %d -> %d", min(position, tree_size), last)
        self.last_sequence = last
        if last:
            stored = await get_message(self.nc, LEDGER, last)
            if stored is None:
                raise LedgerCorrupt(f"LEDGER #{last} is missing")
            self.last_integrated = Entry.parse(stored.data).integrated

    async def _check_tree_tail(self, last: int) -> None:
        """The tree file is derived data: if its last leaf is not LEDGER's entry (a
        crash can leave blocks that look like whole records), rebuild it."""
        size = await self.state_thread.call(lambda: self.tree.size)
        if size == 0 or size > last:
            return
        stored = await get_message(self.nc, LEDGER, size)
        (leaf,) = await self.state_thread.call(
            self.tree.read_hashes, [stored_hash_index(0, size - 1)]
        )
        if stored is None or leaf != leaf_hash(stored.data):
            log.warning("tree file's last leaf is not LEDGER #%d: rebuilding the tree", size)
            await self.state_thread.call(self.tree.reset)

    def _apply_stored(self, messages: list[tuple[int, bytes]]) -> None:
        """On the state thread: entries read from LEDGER into the state and the tree."""
        self.state.replay(messages)
        size = self.tree.size
        leaves = [leaf_hash(data) for seq, data in messages if seq > size]
        if leaves:
            self.tree.append(size, leaves)

    def _record(self, batch: Batch) -> None:
        """On the state thread: the batch LEDGER acknowledged, into the state and the tree."""
        self.state.commit(batch)
        self.tree.append(batch.first_sequence - 1, [a.entry.leaf_hash for a in batch.admitted])

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
            batch = self.state.begin()
            batch.admit(env, event, now)
            return batch

        batch = await self.state_thread.call(admit)
        try:
            await self._append(batch)
        except BusError as e:
            log.info("genesis raced with another notary (%s); catching up", e)
            await self.sync()
            return
        await self.state_thread.call(self._record, batch)
        self.last_sequence = batch.last_sequence
        self.last_integrated = now

    # --- one batch ------------------------------------------------------------

    async def process(self, msgs: Sequence[Msg]) -> None:
        subs = [Submission(m) for m in msgs]
        self.signatures.results.clear()  # keyed by envelope object: valid for one batch
        now = self._integration_time()
        for s in subs:
            self._precheck(s, now)
        await self._preverify([s for s in subs if s.early is None])
        for attempt in range(1, 11):
            batch = await self.state_thread.call(self._admit_all, subs, now)
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
                        continue
                break
            try:
                await self._append(batch)
            except BusError as e:
                self.stats["fenced"] += 1
                log.info("append refused (%s), attempt %d: catching up with LEDGER", e, attempt)
                await self.sync()
                now = self._integration_time()
                continue
            try:
                await self.state_thread.call(self._record, batch)
            except Exception:
                log.exception("recording state or tree failed; rebuilding from LEDGER")
                await self.sync()
            self.last_sequence = batch.last_sequence
            self.last_integrated = batch.admitted[-1].entry.integrated
            break
        else:
            log.error("could not append a batch after 10 attempts; leaving it to redelivery")
            return
        await self._sign_receipts(subs)
        await self._answer(subs)

    def _precheck(self, s: Submission, now: datetime) -> None:
        """Everything that needs no state. Sets ``outcome`` to a rejection, or leaves it None."""
        data = s.msg.data
        try:
            if len(data) > MAX_ENVELOPE:
                raise errors.Oversize(f"envelope is {len(data)} bytes, the limit is {MAX_ENVELOPE}")
            try:
                s.env = parse_envelope(data)
            except EnvelopeError as e:
                cls = errors.MalformedJson if e.json_error else errors.MalformedEnvelope
                raise cls(str(e)) from None
            try:
                s.event = ev.decode_event(s.env.payload)
            except ev.SchemaError as e:
                if e.syntax:
                    raise errors.MalformedJson(str(e)) from None
                raise errors.SchemaViolation(str(e)) from None
            expected = f"intake.{s.event.actor}.{s.event.type_name}"
            if s.msg.subject != expected:
                raise errors.IntakeSubjectMismatch(
                    f"published on {s.msg.subject}, the payload says {expected}"
                )
            claimed = [("signed_at", s.event.signed_at)]
            if isinstance(s.event, ev.IncidentReported):
                # facts about the past cannot be dated in the future
                claimed += [("occurred_at", s.event.occurred_at), ("aware_at", s.event.aware_at)]
            for name, value in claimed:
                if value > now + MAX_CLOCK_SKEW:
                    raise errors.ClockSkew(
                        f"{name} {format_time(value)} is more than 5 minutes ahead of the "
                        f"notary clock {format_time(now)}"
                    )
        except errors.Rejection as r:
            s.early = s.outcome = r
        except Exception as e:  # a bug: still an answer for this message, not a stalled batch
            log.exception("precheck of INTAKE #%d failed", s.intake_sequence)
            s.early = s.outcome = errors.InternalError(f"{type(e).__name__}: {e}")

    async def _preverify(self, subs: list[Submission]) -> None:
        """Verify each signature once, in parallel, against the hinted key if known."""
        jobs: list[tuple[ParsedEnvelope, bytes]] = []
        for s in subs:
            assert s.env is not None
            public = self.signatures.known_keys.get(s.env.keyid_fingerprint)
            if public is not None:
                jobs.append((s.env, public))
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        n = self.verify_threads if len(jobs) >= 32 else 1
        chunks = [jobs[i::n] for i in range(n)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self.verify_pool, _verify_chunk, c) for c in chunks)
        )
        for part in results:
            self.signatures.results.update(part)

    def _admit_all(self, subs: list[Submission], now: datetime) -> Batch:
        """The sequential pass, on the state thread: decide every submission."""
        batch = self.state.begin()
        for s in subs:
            if s.early is not None or s.env is None or s.event is None:
                continue  # rejected before admission
            s.outcome = None
            try:
                s.outcome = batch.admit(s.env, s.event, now, signatures=self.signatures.check)
            except (errors.Rejection, AlreadyIntegrated) as outcome:
                s.outcome = outcome
            except LedgerCorrupt:
                raise
            except Exception as e:
                log.exception("admitting event %s failed", s.event.event_id)
                s.outcome = errors.InternalError(f"{type(e).__name__}: {e}")
        return batch

    async def _append(self, batch: Batch) -> None:
        messages = [
            (
                ledger_subject(a.entry.subject),
                a.entry.encoded,
                {HDR_MSG_ID: a.event.event_id},
            )
            for a in batch.admitted
        ]
        for start in range(0, len(messages), 1000):
            await publish_atomic(
                self.nc, messages[start : start + 1000], batch.first_sequence - 1 + start
            )

    async def _sign_receipts(self, subs: list[Submission]) -> None:
        todo = [s for s in subs if isinstance(s.outcome, (Admitted, AlreadyIntegrated))]
        if not todo:
            return
        loop = asyncio.get_running_loop()
        n = self.verify_threads if len(todo) >= 32 else 1
        chunks = [todo[i::n] for i in range(n)]
        await asyncio.gather(
            *(loop.run_in_executor(self.verify_pool, self._sign_chunk, c) for c in chunks)
        )

    def _sign_chunk(self, subs: list[Submission]) -> None:
        for s in subs:
            assert isinstance(s.outcome, (Admitted, AlreadyIntegrated))
            s.receipt = self.receipt_for(s.outcome.record)

    def receipt_for(self, record: EventRecord) -> Receipt:
        return sign_receipt(
            self.signer,
            self.origin,
            record.index,
            base64.b64decode(record.leaf_hash),
            record.integrated,
            record.event_id,
        )

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
            if s.reply_to and _is_inbox(s.reply_to):
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
        event_id = s.event.event_id if s.event is not None else None
        if isinstance(outcome, errors.Rejection):
            self.stats["rejected"] += 1
            verdict = Verdict(
                status="rejected", event_id=event_id, code=outcome.code, detail=outcome.detail
            )
            if event_id is not None:
                self._recent_rejections[event_id] = verdict
                while len(self._recent_rejections) > 100_000:
                    self._recent_rejections.popitem(last=False)
            return verdict
        assert s.receipt is not None and isinstance(outcome, (Admitted, AlreadyIntegrated))
        if isinstance(outcome, AlreadyIntegrated):
            self.stats["duplicates"] += 1
        else:
            self.stats["accepted"] += 1
        self._recent_rejections.pop(s.receipt.event_id, None)
        return self._accepted(outcome.record, s.receipt)

    @staticmethod
    def _accepted(record: EventRecord, receipt: Receipt) -> Verdict:
        return Verdict(
            status="accepted",
            event_id=record.event_id,
            index=record.index,
            receipt=receipt.note.decode(),
            envelope_sha256=record.envelope_sha256,
        )

    async def _keep_rejection(self, s: Submission) -> bool:
        assert isinstance(s.outcome, errors.Rejection)
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
        await self.js.publish(
            rejected_subject(actor), s.msg.data, headers=headers, stream=REJECTED, timeout=5
        )
        return True

    # --- checkpoints ---------------------------------------------------------

    async def _load_checkpoint(self) -> None:
        """Read the last signed checkpoint and make sure the tree still agrees with it.

        A notary never signs a checkpoint inconsistent with one signed before,
        also across restarts: if LEDGER no longer produces the root it signed
        (a replaced or rewritten stream), it refuses to go on.
        """
        stored = await last_message(self.nc, CHECKPOINTS)
        if stored is None:
            self.latest_checkpoint = None
            return
        try:
            checkpoint = parse_checkpoint(open_note(stored.data, self._log_verifiers).text)
        except (NoteError, ValueError) as e:
            raise NotaryError(f"CHECKPOINTS #{stored.sequence} does not verify: {e}") from None
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
        self.latest_checkpoint = (checkpoint, stored.data, stored.sequence)

    async def _maybe_checkpoint(self) -> None:
        covered = self.latest_checkpoint[0].size if self.latest_checkpoint else 0
        pending = self.last_sequence - covered
        due = time.monotonic() - self._last_checkpoint_at >= self.checkpoint_interval
        if pending >= self.checkpoint_every or (pending > 0 and due):
            try:
                await self.checkpoint()
            except BusError as e:
                log.warning("checkpoint not published: %s", e)

    async def checkpoint(self) -> bytes | None:
        """Sign and publish a checkpoint of the whole tree; None if nothing new to cover."""
        size = self.last_sequence
        latest = self.latest_checkpoint
        if latest is not None and latest[0].size >= size:
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
                headers={"Nats-Expected-Last-Sequence": str(latest[2] if latest else 0)},
                timeout=5,
            )
        except Exception as e:
            # Another notary published first: catch up with LEDGER, then take its
            # checkpoint (after checking it against our tree).
            log.info("checkpoint race (%s); reloading", e)
            await self.sync()
            await self._load_checkpoint()
            return None
        self.latest_checkpoint = (Checkpoint(self.origin, size, root), note, ack.seq)
        self._last_checkpoint_at = time.monotonic()
        log.info("checkpoint %d signed", size)
        return note

    def tlog_proof(self, index: int) -> bytes | None:
        """C2SP tlog-proof of entry ``index`` under the latest checkpoint (state thread)."""
        if self.latest_checkpoint is None or index >= self.latest_checkpoint[0].size:
            return None
        checkpoint, note, _ = self.latest_checkpoint
        return format_tlog_proof(index, self.tree.inclusion_proof(index, checkpoint.size), note)

    # --- lookups ----------------------------------------------------------

    async def _on_lookup(self, msg: Msg) -> None:
        event_id = msg.data.decode(errors="replace").strip()
        try:
            record = await self.state_thread.call(self.state.event_record, event_id)
        except Exception as e:
            log.warning("lookup %s: %s", event_id, e)
            record = None
        if record is not None:
            verdict = self._accepted(record, self.receipt_for(record))
            proof = await self.state_thread.call(self.tlog_proof, record.index)
            if proof is not None:
                verdict.proof = proof.decode()
        else:
            verdict = self._recent_rejections.get(event_id) or Verdict(
                status="unknown", event_id=event_id
            )
        if msg.reply and _is_inbox(msg.reply):
            await self.nc.publish(msg.reply, verdict.encode())


def _verify_chunk(jobs: list[tuple[ParsedEnvelope, bytes]]) -> dict[tuple[int, bytes], bool]:
    # cryptography releases the GIL while verifying, so chunks run in parallel.
    return {(id(env), public): env.verify(public) for env, public in jobs}


def _is_slug(token: str) -> bool:
    return _SLUG.fullmatch(token) is not None


_INBOX = re.compile(r"_INBOX\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def _is_inbox(subject: str) -> bool:
    """Answers go to reply inboxes only. The reply subject is chosen by whoever
    published; the notary's connection may write LEDGER, so an unchecked reply
    subject would let anyone make it write there."""
    return _INBOX.fullmatch(subject) is not None


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock``: one notary per state store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotaryError(
                f"another notary is using the state store {path}; give this one its own (--state)"
            ) from None
        yield


async def serve(
    home: Home,
    stop: asyncio.Event,
    *,
    nats_url: str | None = None,
    port: int | None = None,
    state_path: Path | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[str, Notary], None] | None = None,
    batch_size: int = 500,
    ack_wait: float = 10.0,
    checkpoint_every: int = 256,
    checkpoint_interval: float = 5.0,
) -> Notary:
    """Run a notary for ``home`` until ``stop`` is set.

    Without ``nats_url`` it starts the embedded nats-server on the home's store
    and writes its URL to ``home/run/nats.url`` for the other commands.
    """
    state_path = state_path or home.state_dir / "notary.sqlite"
    server: EmbeddedNats | None = None
    with exclusive(state_path):
        if nats_url is None:
            server = EmbeddedNats(home.nats_dir, port=port)
            nats_url = await asyncio.to_thread(server.start)
            home.url_file.parent.mkdir(parents=True, exist_ok=True)
            home.url_file.write_text(nats_url + "\n")
        try:
            nc = await connect(nats_url, name="ailedger-notary")
            state = LedgerState(sqlite_env(state_path), trust=home.trust())
            notary = Notary(
                nc,
                state,
                home.notary_signer(),
                TreeStore(home.tree_path),
                clock=clock,
                genesis=home.genesis(),
                batch_size=batch_size,
                ack_wait=ack_wait,
                checkpoint_every=checkpoint_every,
                checkpoint_interval=checkpoint_interval,
            )
            try:
                await notary.start()
                if on_ready is not None:
                    on_ready(nats_url, notary)
                await notary.run(stop)
            finally:
                await notary.close()
                notary.tree.close()
                with contextlib.suppress(Exception):
                    await nc.drain()
        finally:
            if server is not None:
                home.url_file.unlink(missing_ok=True)
                await asyncio.to_thread(server.stop)
    return notary
