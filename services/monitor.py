"""The monitor: replays LEDGER and CHECKPOINTS as a third party, and proves what it finds.

A monitor trusts nothing the notary says about itself (DESIGN §7: "serve a
wrong head map unnoticed (monitors replay)"). It reads LEDGER and CHECKPOINTS
read-only, as the regulator-reader bus identity, and checks every leaf and
every checkpoint again:

- the batch seals (:class:`ledger.bus.sealed.SealedReader`): what no log key
  sealed is *foreign*, skipped with an alarm and counted (not a finding: the
  log key did not sign it);
- each entry: its LEDGER subject and the subject of its signed payload are the
  entry's ``subject``; its ``prev`` is the newest entry of that subject the
  monitor itself counted (one that skips an entry, or points to the wrong
  one, is a :class:`PrevMismatch`); every DSSE signature is verified with the
  actor's key (:class:`SignatureInvalid`; replay in the notary and projector
  trusts the hinted key of a sealed entry, the monitor does not); and the
  admission rules are judged again by the same state the notary keeps
  (:class:`RuleBreach`);
- each heads leaf: the head map recomputed from the entries before it
  (:class:`ledger.formats.headmap.HeadMap`) has the same root and number of
  subjects (:class:`HeadsRootMismatch`);
- each checkpoint signed by a log key of the trust policy (anything else in
  CHECKPOINTS is foreign): its root is the root of the log's first ``size``
  leaves (else :class:`CheckpointFork`: two signed statements of the log key
  that cannot both hold), its leaf ``size - 1`` is a heads leaf
  (:class:`CheckpointWithoutHeads`), and LEDGER holds that many sealed leaves
  (:class:`CheckpointBeyondLog`). Every checkpoint equals the one tree the
  monitor built, so each is consistent with the one before it.

A finding is a :class:`MonitorFinding` (one subclass per kind, its ``code`` the
kind) carrying an *evidence* document, format ``ailedger/evidence/v1``
(:data:`EVIDENCE_FORMAT`): the kind, a sentence, and the raw material a third
party checks offline: the leaves involved (base64) with the seals that signed
them and their inclusion proofs, the signed checkpoint notes, consistency
proofs (docs/monitor.md says how to check each kind by hand).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from ledger.bus.alarms import FOREIGN_MESSAGE, Alarms
from ledger.bus.sealed import SealedBatch, SealedReader, trusted_reader
from ledger.bus.streams import (
    CHECKPOINTS,
    HEADS_SUBJECT,
    LEDGER,
    BusError,
    ensure_open,
    get_message,
    last_sequence,
    read_stream,
)
from ledger.formats.checkpoint import Checkpoint, CosignatureVerifier, parse_checkpoint
from ledger.formats.dsse import EnvelopeError, ParsedEnvelope, parse_envelope
from ledger.formats.entry import Entry, ledger_subject
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.headmap import HeadMap, SqliteNodeStore
from ledger.formats.heads import HeadsLeaf, HeadValue
from ledger.formats.keys import decode_public_key
from ledger.formats.merkle import empty_root
from ledger.formats.note import NoteError, Verifier, Verifiers, open_note
from ledger.formats.seal import Seal
from ledger.formats.timeutil import format_time
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustPolicy
from ledger.law import events as ev
from ledger.law import rejections
from ledger.state.application import LedgerCorrupt, LedgerState
from ledger.state.asyncbridge import StateThread
from ledger.state.domain import KeyBinding
from ledger.state.persistence import sqlite_env

__all__ = [
    "EVIDENCE_FORMAT",
    "CheckpointBeyondLog",
    "CheckpointFork",
    "CheckpointWithoutHeads",
    "HeadsRootMismatch",
    "Monitor",
    "MonitorFinding",
    "PrevMismatch",
    "Report",
    "RuleBreach",
    "SignatureInvalid",
    "SubjectMismatch",
    "write_evidence",
]

log = logging.getLogger("ailedger.monitor")

EVIDENCE_FORMAT = "ailedger/evidence/v1"
#: At most this many leaves of a chain or of the changes since a heads leaf go
#: into one evidence file (it says when it was cut).
MAX_EVIDENCE_LEAVES = 200


# --- findings ------------------------------------------------------------------------


class MonitorFinding(LedgerError):
    """The ledger contradicts itself: the monitor wrote evidence of it (each kind of finding
    has its own code, all with this base)."""

    code = "monitor_finding"
    exit_status = CHECK_FAILED

    def __init__(
        self,
        message: str,
        evidence: dict[str, Any] | None = None,
        *,
        problem: _Problem | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.evidence: dict[str, Any] = evidence or {}
        #: What it points at, until the monitor gathered the evidence from LEDGER.
        self.problem = problem

    @property
    def kind(self) -> str:
        return self.code

    def default_name(self) -> str:
        """The evidence file's name when none is given: after the finding."""
        where = self.evidence.get("at")
        return f"evidence-{self.kind}{'' if where is None else f'-{where}'}.json"


class HeadsRootMismatch(MonitorFinding):
    """A heads leaf's map root or subject count is not what the entries before it give."""

    code = "heads_root_mismatch"
    exit_status = CHECK_FAILED


class CheckpointFork(MonitorFinding):
    """A checkpoint signed by a log key whose root the log does not produce at its size."""

    code = "fork"
    exit_status = CHECK_FAILED


class CheckpointWithoutHeads(MonitorFinding):
    """A signed checkpoint whose last leaf is not a heads leaf (DESIGN §3)."""

    code = "checkpoint_without_heads"
    exit_status = CHECK_FAILED


class CheckpointBeyondLog(MonitorFinding):
    """A signed checkpoint of more leaves than LEDGER holds sealed."""

    code = "checkpoint_beyond_log"
    exit_status = CHECK_FAILED


class PrevMismatch(MonitorFinding):
    """An entry's ``prev`` is not the newest earlier entry of its subject."""

    code = "prev_mismatch"
    exit_status = CHECK_FAILED


class SignatureInvalid(MonitorFinding):
    """A sealed entry whose envelope no key of its actor signed."""

    code = "signature_invalid"
    exit_status = CHECK_FAILED


class RuleBreach(MonitorFinding):
    """A sealed entry the admission rules refuse when the ledger is replayed."""

    code = "rule_breach"
    exit_status = CHECK_FAILED


class SubjectMismatch(MonitorFinding):
    """An entry stored under another subject than the one its signed payload names."""

    code = "subject_mismatch"
    exit_status = CHECK_FAILED


def write_evidence(finding: MonitorFinding, path: Path) -> None:
    """Write the finding's evidence document to ``path`` (JSON, one object)."""
    path.write_text(json.dumps(finding.evidence, indent=1) + "\n")


# --- the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointSeen:
    size: int
    root: bytes
    sequence: int
    cosignatures: int


@dataclass
class Report:
    """What the monitor checked so far."""

    #: Sealed leaves replayed (entries and heads leaves), and batches.
    size: int = 0
    batches: int = 0
    entries: int = 0
    heads_leaves: int = 0
    #: Envelope signatures verified with the actor's key.
    signatures: int = 0
    subjects: int = 0
    #: Checkpoints signed by a log key, all checked; the newest of them.
    checkpoints: int = 0
    newest: CheckpointSeen | None = None
    #: Stream sequences skipped as foreign (no seal / no log key signed them).
    foreign_ledger: list[int] = field(default_factory=list)
    foreign_checkpoints: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        newest = self.newest
        return {
            "ok": True,
            "size": self.size,
            "batches": self.batches,
            "entries": self.entries,
            "heads_leaves": self.heads_leaves,
            "signatures": self.signatures,
            "subjects": self.subjects,
            "checkpoints": self.checkpoints,
            "newest_checkpoint": None
            if newest is None
            else {
                "size": newest.size,
                "root": _b64(newest.root),
                "sequence": newest.sequence,
                "cosignatures": newest.cosignatures,
            },
            "foreign": {"ledger": self.foreign_ledger, "checkpoints": self.foreign_checkpoints},
        }


# --- what a finding points at, before the evidence is gathered from LEDGER ------------


@dataclass
class _Problem:
    """A finding found on the state thread (raised as :meth:`finding`); the event loop
    gathers its evidence from LEDGER."""

    kind: type[MonitorFinding]
    message: str
    at: int
    #: (role, index): leaves to carry with their seal and inclusion proof.
    leaves: list[tuple[str, int]] = field(default_factory=list)
    #: (role, head index, lowest index): a subject's chain, newest first, to carry
    #: down to the lowest index (included).
    chains: list[tuple[str, int, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def finding(self) -> MonitorFinding:
        return self.kind(self.message, problem=self)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _value_json(v: HeadValue) -> dict[str, Any]:
    return {"index": v.index, "count": v.count, "leaf_hash": _b64(v.leaf_hash)}


# --- the monitor ------------------------------------------------------------------------


class Monitor:
    """Replays a ledger read-only. Keep one per process: it reads LEDGER and CHECKPOINTS
    from their first messages once, then only what is new (:meth:`check`)."""

    def __init__(
        self,
        nc: NATS,
        trust: TrustPolicy,
        workdir: Path,
        *,
        verify_threads: int = 2,
        alarms: Alarms | None = None,
        beyond_grace: float = 30.0,
    ) -> None:
        """``workdir``: an empty directory for the monitor's own derived data (the
        tree's leaf hashes, the head map, the state, the seals), all rebuilt from
        LEDGER. ``beyond_grace``: seconds a followed checkpoint may stay ahead of
        LEDGER (a replica lagging) before it is a finding."""
        self.nc = nc
        self.trust = trust
        self.origin = trust.origin
        self.alarms = alarms if alarms is not None else Alarms(log)
        self.beyond_grace = beyond_grace
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_thread = StateThread("monitor")
        self.verify_threads = max(1, verify_threads)
        self.verify_pool = ThreadPoolExecutor(self.verify_threads, thread_name_prefix="verify")
        self.tree = TreeStore(workdir / "tree")
        self.state = LedgerState(sqlite_env(workdir / "state.sqlite"), trust=trust)
        self.heads = HeadMap(SqliteNodeStore(workdir / "heads.sqlite"))
        #: Subjects noted in the map since its last commit, with their new values.
        self.pending: dict[str, HeadValue] = {}
        self._seals = sqlite3.connect(workdir / "seals.sqlite", check_same_thread=False)
        self._seals.execute(
            "CREATE TABLE IF NOT EXISTS seals (size INTEGER PRIMARY KEY, note BLOB)"
        )
        self.reader: SealedReader = trusted_reader(nc, trust, self.alarms)
        self.reader.keep_seals = False  # kept on disk, in self._seals
        self.log_verifiers = Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))
        self.witness_verifiers = Verifiers(
            *(CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys())
        )
        #: Indexes of the heads leaves read, and the last one (it matched the map).
        self.heads_indexes: set[int] = set()
        self.last_heads: HeadsLeaf | None = None
        #: Good checkpoints by size: (root, note, CHECKPOINTS sequence).
        self.checkpoints: dict[int, tuple[bytes, bytes, int]] = {}
        self.checkpoint_position = 0
        #: Signed checkpoints not yet covered by LEDGER as read: (seq, checkpoint, note, since).
        self.ahead: list[tuple[int, Checkpoint, bytes, float]] = []
        self.report = Report()

    def close(self) -> None:
        self.state_thread.close()
        self.verify_pool.shutdown(wait=True)
        self.tree.close()
        self.heads.close()
        self._seals.close()

    # --- one pass ------------------------------------------------------------------------

    async def check(self, *, final: bool = True) -> Report:
        """Read what is new in LEDGER and CHECKPOINTS and check it. Raises a
        :class:`MonitorFinding` on the first discrepancy. ``final``: a checkpoint
        of more leaves than LEDGER holds is a finding now (else after the grace)."""
        # CHECKPOINTS first: the notary publishes a checkpoint only after LEDGER
        # acknowledged its leaves, so LEDGER read afterwards covers them.
        checkpoints_last = await last_sequence(self.nc, CHECKPOINTS)
        ledger_last = await last_sequence(self.nc, LEDGER)
        try:
            async with contextlib.aclosing(self.reader.read(ledger_last)) as batches:
                async for batch in batches:
                    await self.state_thread.call(self._check_batch, batch)
            self.report.foreign_ledger = list(self.reader.foreign)
            await self._read_checkpoints(checkpoints_last)
            now = asyncio.get_running_loop().time()
            await self.state_thread.call(self._check_checkpoints, None if final else now)
        except MonitorFinding as f:
            if f.problem is None:
                raise
            raise await self._finding(f.problem) from None
        return self.report

    async def follow(
        self,
        stop: asyncio.Event,
        poll: float = 2.0,
        on_report: Callable[[Report], None] | None = None,
    ) -> Report:
        """Check again every ``poll`` seconds until ``stop`` is set; raises on a finding,
        or once the NATS connection is closed for good."""
        while not stop.is_set():
            ensure_open(self.nc, "monitor")
            try:
                report = await self.check(final=False)
            except BusError as e:
                if self.nc.is_closed:
                    raise
                log.warning("reading the ledger failed (%s); retrying", e)
            else:
                if on_report is not None:
                    on_report(report)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
        return self.report

    # --- LEDGER (on the state thread) ----------------------------------------------------

    def _check_batch(self, batch: SealedBatch) -> None:
        seal = batch.seal
        self.tree.append(batch.first_index, [e.leaf_hash for e in batch.entries])
        self._seals.execute("INSERT OR REPLACE INTO seals VALUES (?, ?)", (seal.size, seal.note))
        self._seals.commit()
        self.report.batches += 1
        heads = batch.heads
        if heads is not None:
            self._check_heads(batch, heads)
        else:
            self._check_entries(batch)
        self.report.size = self.reader.size

    def _check_heads(self, batch: SealedBatch, heads: HeadsLeaf) -> None:
        message = batch.messages[0]
        if message.subject != HEADS_SUBJECT:
            raise _Problem(
                SubjectMismatch,
                f"heads leaf {heads.index} is stored under LEDGER subject {message.subject!r}, "
                f"not {HEADS_SUBJECT}",
                heads.index,
                [("offending", heads.index)],
                extra={"stream_sequence": message.sequence, "stream_subject": message.subject},
            ).finding()
        staged = self.heads.stage(heads.size)
        if heads.index != heads.size or (staged.root, staged.subjects, staged.size) != (
            heads.root,
            heads.subjects,
            heads.size,
        ):
            changed = sorted(self.pending.items())
            proofs = [
                {
                    "subject": subject,
                    "value": _value_json(value),
                    "before": self.heads.prove(subject).encode(),
                }
                for subject, value in changed[:MAX_EVIDENCE_LEAVES]
            ]
            self.heads.rollback()
            previous = self.last_heads
            leaves = [("heads", heads.index)]
            if previous is not None:
                leaves.append(("previous_heads", previous.index))
            leaves += [("changed", v.index) for _, v in changed[:MAX_EVIDENCE_LEAVES]]
            raise _Problem(
                HeadsRootMismatch,
                f"heads leaf {heads.index} says {heads.subjects} subjects with map root "
                f"{_b64(heads.root)}; the {heads.size} leaves before it give {staged.subjects} "
                f"subjects with root {_b64(staged.root)}",
                heads.index,
                leaves,
                extra={
                    "computed": {
                        "size": staged.size,
                        "subjects": staged.subjects,
                        "root": _b64(staged.root),
                    },
                    "claimed": {
                        "size": heads.size,
                        "subjects": heads.subjects,
                        "root": _b64(heads.root),
                    },
                    "previous_heads": None if previous is None else previous.index,
                    "changed_since": {
                        "subjects": len(changed),
                        "cut": len(changed) > MAX_EVIDENCE_LEAVES,
                        "heads_proofs": proofs,
                    },
                },
            ).finding()
        self.heads.commit()
        self.pending.clear()
        self.last_heads = heads
        self.heads_indexes.add(heads.index)
        self.report.heads_leaves += 1
        self.report.subjects = self.heads.subjects

    def _check_entries(self, batch: SealedBatch) -> None:
        pairs = batch.subject_entries()
        envelopes: list[ParsedEnvelope] = []
        for m, e in pairs:
            try:
                env = parse_envelope(e.envelope)
                event = ev.decode_event(env.payload)
            except (EnvelopeError, ev.SchemaError) as x:
                raise _Problem(
                    RuleBreach,
                    f"entry {e.index} does not hold a signed event: {x}",
                    e.index,
                    [("offending", e.index)],
                ).finding() from None
            if event.subject != e.subject or m.subject != ledger_subject(e.subject):
                raise _Problem(
                    SubjectMismatch,
                    f"entry {e.index} says subject {e.subject}, its signed event is about "
                    f"{event.subject} and LEDGER stores it under {m.subject!r}",
                    e.index,
                    [("offending", e.index)],
                    extra={"stream_sequence": m.sequence, "stream_subject": m.subject},
                ).finding()
            # The subject's head as the monitor counted it (pending notes included).
            head = self.heads.value(e.subject)
            expected = None if head is None else head.index
            if e.prev != expected:
                self._prev_problem(e, head)
            self.heads.note(e.subject, e.index, e.leaf_hash)
            self.pending[e.subject] = HeadValue(
                e.index, 1 if head is None else head.count + 1, e.leaf_hash
            )
            envelopes.append(env)
        self._replay(batch, envelopes)
        self.report.entries += len(pairs)

    def _prev_problem(self, e: Entry, head: HeadValue | None) -> None:
        if head is None:
            message = (
                f"entry {e.index} about {e.subject} says prev {e.prev}, but it is the first "
                f"entry about {e.subject}"
            )
        elif e.prev is None:
            message = (
                f"entry {e.index} about {e.subject} says prev none, but entry {head.index} "
                f"is about {e.subject} before it"
            )
        else:
            message = (
                f"entry {e.index} about {e.subject} says prev {e.prev}, but the newest entry "
                f"about {e.subject} before it is {head.index}"
                + (" (it skips that one)" if e.prev < head.index else "")
            )
        leaves = [("offending", e.index)]
        chains = []
        if head is not None:
            leaves.append(("newest_of_subject", head.index))
            # the subject's entries the offending prev jumps over (or all, prev none)
            chains.append(("chain", head.index, 0 if e.prev is None else e.prev))
        if e.prev is not None and (head is None or e.prev != head.index):
            leaves.append(("pointed_to", e.prev))
        raise _Problem(
            PrevMismatch,
            message,
            e.index,
            leaves,
            chains,
            extra={
                "subject": e.subject,
                "claimed_prev": e.prev,
                "computed_prev": None if head is None else head.index,
                "computed_count": 0 if head is None else head.count,
            },
        ).finding()

    def _replay(self, batch: SealedBatch, envelopes: list[ParsedEnvelope]) -> None:
        """The batch into the state, judged by the admission rules, every signature
        verified (once, in parallel, against the hinted key when it is known)."""
        jobs: list[tuple[bytes, bytes]] = []
        for env in envelopes:
            binding = self.state.get(KeyBinding, KeyBinding.create_id(env.keyid_fingerprint))
            if binding is not None:
                jobs.append((env.raw, decode_public_key(binding.public_key)))
        by_raw = {env.raw: env for env in envelopes}
        n = self.verify_threads if len(jobs) >= 32 else 1
        chunks = [jobs[i::n] for i in range(n)]

        def verify(chunk: list[tuple[bytes, bytes]]) -> dict[tuple[bytes, bytes], bool]:
            return {(raw, key): by_raw[raw].verify(key) for raw, key in chunk}

        results: dict[tuple[bytes, bytes], bool] = {}
        for part in self.verify_pool.map(verify, chunks):
            results.update(part)
        self.report.signatures += len(results)

        def check(env: ParsedEnvelope, public_key: bytes) -> bool:
            known = results.get((env.raw, public_key))
            if known is None:
                known = env.verify(public_key)
                results[(env.raw, public_key)] = known
                self.report.signatures += 1
            return known

        pairs = batch.subject_entries()
        applied: list[int] = []
        try:
            self.state.replay(
                [(m.sequence, m.data) for m, _ in pairs],
                first_index=batch.first_index,
                signatures=check,
                on_entry=lambda e: applied.append(e.index),
            )
        except LedgerCorrupt as x:
            index = applied[-1] + 1 if applied else pairs[0][1].index
            entry = next(e for _, e in pairs if e.index == index)
            if isinstance(x.__context__, rejections.BadSignature):
                env = parse_envelope(entry.envelope)
                event = ev.decode_event(env.payload)
                raise _Problem(
                    SignatureInvalid,
                    f"entry {index} ({event.type_name} by {event.actor}, key id {env.keyid}): "
                    f"{x.__context__}",
                    index,
                    [("offending", index), ("genesis", 0)],
                    self._actor_chain(event.actor),
                    extra={"actor": event.actor, "keyid": env.keyid},
                ).finding() from None
            raise _Problem(RuleBreach, str(x), index, [("offending", index)]).finding() from None

    def _actor_chain(self, actor: str) -> list[tuple[str, int, int]]:
        """The signer's own chain (its enrolment and key changes), if it has one."""
        a = self.state.actor(actor)
        head = None if a is None else a.chain_head
        return [] if head is None else [("signer_chain", head, 0)]

    # --- CHECKPOINTS --------------------------------------------------------------------

    async def _read_checkpoints(self, last: int) -> None:
        loop = asyncio.get_running_loop()
        async for m in read_stream(self.nc, CHECKPOINTS, self.checkpoint_position + 1, last):
            self.checkpoint_position = m.sequence
            try:
                checkpoint = parse_checkpoint(open_note(m.data, self.log_verifiers).text)
                if checkpoint.origin != self.origin:
                    raise ValueError(f"checkpoint of another log {checkpoint.origin!r}")
            except (NoteError, ValueError) as e:
                self.report.foreign_checkpoints.append(m.sequence)
                self.alarms.record(
                    FOREIGN_MESSAGE, f"CHECKPOINTS #{m.sequence} is not the log's ({e}); skipped"
                )
                continue
            self.ahead.append((m.sequence, checkpoint, m.data, loop.time()))

    def _cosignatures(self, note: bytes) -> int:
        if not self.trust.witness_keys:
            return 0
        try:
            return len(open_note(note, self.witness_verifiers).sigs)
        except NoteError:
            return 0

    def _check_checkpoints(self, now: float | None) -> None:
        """On the state thread: the checkpoints LEDGER as read covers. One of more
        leaves than LEDGER holds is a finding when ``now`` is None (a last pass),
        else once it stayed so for the grace."""
        still: list[tuple[int, Checkpoint, bytes, float]] = []
        for seq, checkpoint, note, since in self.ahead:
            if checkpoint.size > self.reader.size:
                if now is None or now - since >= self.beyond_grace:
                    self._beyond(seq, checkpoint, note)
                still.append((seq, checkpoint, note, since))
                continue
            self._check_checkpoint(seq, checkpoint, note)
        self.ahead = still

    def _beyond(self, seq: int, checkpoint: Checkpoint, note: bytes) -> None:
        size = self.reader.size
        raise _Problem(
            CheckpointBeyondLog,
            f"checkpoint {checkpoint.size} (CHECKPOINTS #{seq}) is signed by the log key, "
            f"but LEDGER holds {size} sealed leaves",
            checkpoint.size,
            [] if size == 0 else [("last_sealed", size - 1)],
            extra={
                "checkpoints": [("claimed", note)],
                "log_size": size,
                "log_root": _b64(self.tree.root(size)),
            },
        ).finding()

    def _check_checkpoint(self, seq: int, checkpoint: Checkpoint, note: bytes) -> None:
        size = checkpoint.size
        log_root = self.tree.root(size) if size else empty_root()
        if log_root != checkpoint.root_hash:
            self._fork(seq, checkpoint, note, log_root)
        if size and size - 1 not in self.heads_indexes:
            raise _Problem(
                CheckpointWithoutHeads,
                f"checkpoint {size} (CHECKPOINTS #{seq}) ends with leaf {size - 1}, which is "
                "not a heads leaf: it commits no head map",
                size,
                [("last_leaf", size - 1)],
                extra={
                    "checkpoints": [("claimed", note)],
                    "inclusion": {
                        "index": size - 1,
                        "size": size,
                        "proof": [_b64(h) for h in self.tree.inclusion_proof(size - 1, size)],
                    },
                },
            ).finding()
        self.checkpoints.setdefault(size, (checkpoint.root_hash, note, seq))
        self.report.checkpoints += 1
        newest = self.report.newest
        if newest is None or size >= newest.size:
            self.report.newest = CheckpointSeen(
                size, checkpoint.root_hash, seq, self._cosignatures(note)
            )

    def _fork(self, seq: int, checkpoint: Checkpoint, note: bytes, log_root: bytes) -> None:
        size = checkpoint.size
        notes: list[tuple[str, bytes]] = [("claimed", note)]
        consistency: list[dict[str, Any]] = []
        same = self.checkpoints.get(size)
        if same is not None:
            notes.append(("same_size", same[1]))
        earlier = [s for s in self.checkpoints if s < size]
        if earlier:
            old = max(earlier)
            old_root, old_note, _ = self.checkpoints[old]
            notes.append(("previous", old_note))
            consistency.append(
                {
                    "old": f"checkpoint {old} (previous)",
                    "old_size": old,
                    "old_root": _b64(old_root),
                    "new": f"the log's first {size} leaves",
                    "new_size": size,
                    "new_root": _b64(log_root),
                    "proof": [_b64(h) for h in self.tree.consistency_proof(old, size)],
                }
            )
        seals: list[tuple[str, bytes]] = []
        covering = self._seal_covering(size)
        if covering is not None:
            seal_size, seal_note, seal_root = covering
            seals.append(("covering", seal_note))
            consistency.append(
                {
                    "old": f"the log's first {size} leaves",
                    "old_size": size,
                    "old_root": _b64(log_root),
                    "new": f"the seal of size {seal_size} (covering)",
                    "new_size": seal_size,
                    "new_root": _b64(seal_root),
                    "proof": [_b64(h) for h in self.tree.consistency_proof(size, seal_size)],
                }
            )
        also = (
            f"; CHECKPOINTS #{same[2]}, signed for the same size, says {_b64(same[0])}"
            if same is not None
            else ""
        )
        raise _Problem(
            CheckpointFork,
            f"checkpoint {size} (CHECKPOINTS #{seq}) signs root {_b64(checkpoint.root_hash)}, "
            f"but the log's first {size} leaves give {_b64(log_root)}{also}",
            size,
            extra={
                "checkpoints": notes,
                "seals": seals,
                "consistency": consistency,
                "log_root": _b64(log_root),
            },
        ).finding()

    def _seal_covering(self, size: int) -> tuple[int, bytes, bytes] | None:
        """The first seal of a tree of at least ``size`` leaves: (size, note, root)."""
        row = self._seals.execute(
            "SELECT size, note FROM seals WHERE size >= ? ORDER BY size LIMIT 1", (size,)
        ).fetchone()
        if row is None:
            return None
        seal = self.reader.seals.open(bytes(row[1]))
        return int(row[0]), bytes(row[1]), seal.root

    def _seal_of(self, index: int) -> Seal | None:
        row = self._seals.execute(
            "SELECT note FROM seals WHERE size > ? ORDER BY size LIMIT 1", (index,)
        ).fetchone()
        return None if row is None else self.reader.seals.open(bytes(row[0]))

    # --- evidence ------------------------------------------------------------------------

    async def _leaf_bytes(self, index: int) -> bytes | None:
        seq = self.reader.sequence_of(index)
        if seq is None:
            return None
        m = await get_message(self.nc, LEDGER, seq)
        return None if m is None else m.data

    async def _leaf_json(self, role: str, index: int) -> dict[str, Any] | None:
        data = await self._leaf_bytes(index)
        seal = await self.state_thread.call(self._seal_of, index)
        if data is None or seal is None:
            return None
        proof = await self.state_thread.call(self.tree.inclusion_proof, index, seal.size)
        return {
            "role": role,
            "index": index,
            "leaf": _b64(data),
            "seal": _b64(seal.note),
            "proof": [_b64(h) for h in proof],
        }

    async def _finding(self, p: _Problem) -> MonitorFinding:
        leaves: list[dict[str, Any]] = []
        seen: set[int] = set()

        async def add(role: str, index: int) -> None:
            if index not in seen:  # each leaf once, under its first role
                seen.add(index)
                doc = await self._leaf_json(role, index)
                if doc is not None:
                    leaves.append(doc)

        for role, index in p.leaves:
            await add(role, index)
        cut = False
        for role, head, lowest in p.chains:
            at: int | None = head
            n = 0
            while at is not None and at >= lowest:
                if n >= MAX_EVIDENCE_LEAVES:
                    cut = True
                    break
                await add(role, at)
                n += 1
                data = await self._leaf_bytes(at)
                at = None if data is None else Entry.parse(data).prev
        extra = dict(p.extra)
        checkpoints = extra.pop("checkpoints", [])
        seals = extra.pop("seals", [])
        evidence: dict[str, Any] = {
            "format": EVIDENCE_FORMAT,
            "kind": p.kind.code,
            "summary": p.message,
            "origin": self.origin,
            "at": p.at,
            "found_at": format_time(datetime.now(UTC)),
            "log_keys": self.trust.log_vkeys(),
            "leaves": leaves,
            "checkpoints": [{"role": r, "note": _b64(n)} for r, n in checkpoints],
            "seals": [{"role": r, "note": _b64(n)} for r, n in seals],
            **extra,
        }
        if cut:
            evidence["chains_cut"] = MAX_EVIDENCE_LEAVES
        return p.kind(p.message, evidence)
