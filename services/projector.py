"""The projector: follows LEDGER into the domain state and the compliance view.

Each LEDGER entry is applied exactly once to each of them: the domain state
(:class:`ledger.state.application.LedgerState`, the same eventsourcing model the notary
checks against) and the read model (:class:`ledger.views.compliance.ComplianceView`)
record every batch together with their own ``Tracking("LEDGER", sequence)`` in
one transaction. Killed at any moment, it resumes from what was committed; a
redelivered entry is skipped. Both can be dropped and rebuilt from LEDGER.

LEDGER is read through :class:`ledger.bus.sealed.SealedReader`: only batches
sealed by a log key of the trust policy, whose entries fold to the seal's
root, are applied; a foreign message is skipped with an alarm. The reader's
own state (stream position, Merkle frontier, last integration time) is recorded
with the view's rows in the same transaction, so a projector started again
(``ailedger status``, ``project``) reads and checks only what is new, from that
frontier on, when the state has applied as far as the view; otherwise it reads
LEDGER from its first message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking
from nats.aio.client import Client as NATS

from ledger.bus.alarms import Alarms
from ledger.bus.home import Home
from ledger.bus.proofs import ProofUnavailable, find_checkpoint
from ledger.bus.sealed import Frontier, SealedBatch, SealedReader, trusted_reader
from ledger.bus.streams import LEDGER, ensure_open, last_sequence
from ledger.formats.checkpoint import parse_checkpoint
from ledger.formats.entry import Entry
from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.merkle import empty_root
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.timeutil import format_time, parse_time
from ledger.formats.trust import TrustPolicy
from ledger.state.application import LedgerState
from ledger.state.asyncbridge import StateThread
from ledger.state.persistence import drop_stores
from ledger.state.worker import Runs
from ledger.state.worker import main as worker_main
from ledger.state.worker import replay_runs as _replay_runs
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
CHUNK_ENTRIES = 2048
#: The first chunk of a catch-up: small, so that applying starts while the rest is
#: read (the chunks after it double in size up to ``chunk_size``).
FIRST_CHUNK_ENTRIES = 256
#: Chunks read ahead while one is being applied.
READ_AHEAD = 2
#: LEDGER messages from which ``rebuild`` replays the state in a worker process.
WORKER_FROM = 10_000


@dataclass
class _Chunk:
    """Sealed entries read, to be applied in one go: runs of consecutive indexes
    (a heads leaf between two batches takes an index, so it starts a new run)."""

    runs: list[tuple[int, list[tuple[int, Entry]]]] = field(default_factory=list)
    size: int = 0
    #: The last LEDGER sequence read, heads leaves and foreign messages included.
    read_to: int = 0
    #: The reader's state once it had read up to ``read_to`` (:func:`reader_state`).
    reader: bytes | None = None

    def stored_runs(self) -> list[tuple[int, list[tuple[int, bytes]]]]:
        """The runs as the state replays them: ``(sequence, stored bytes)``."""
        return [(first, [(seq, e.encoded) for seq, e in run]) for first, run in self.runs]

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


class StateWorker:
    """The projector's :class:`LedgerState` in a process of its own, for bulk replays
    (``rebuild``): the state's CPU-bound replay runs on another core than the
    reading of LEDGER, the seal checks and the view, instead of sharing one
    interpreter lock with them. The child is :func:`ledger.state.worker.main`
    (requests and answers are pickles on its stdin and stdout; it exits when its
    stdin closes, also when this process is killed, after the transaction it is in)."""

    def __init__(self, trust: TrustPolicy) -> None:
        self.trust = trust
        #: Entries applied (the next index), after each replay.
        self.size: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._broken: str | None = None
        #: Where chunks are handed to the child, a file each (see :meth:`replay`).
        self._spool: Path | None = None
        self._chunks = 0

    async def start(self) -> None:
        """Start the child (it imports the state's modules meanwhile)."""
        self._spool = Path(tempfile.mkdtemp(prefix="ailedger-state-worker-"))
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            # the state's modules only: no NATS, views or services to import
            "from ledger.state.worker import main; main()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def open(self, env: Mapping[str, str], *, fresh: bool = False) -> None:
        """Open the state store ``env`` names, in the child (``fresh``: an empty store
        only this worker writes, :meth:`LedgerState.assume_fresh`)."""
        await self._call("open", dict(env), self.trust, fresh)

    async def position(self) -> int:
        return int(await self._call("position"))

    async def replay(self, runs: Runs) -> None:
        """Replay ``runs`` in the child. A chunk (megabytes) is handed over in a file,
        written in one go: through the child's stdin it would trickle in 64 KiB at a
        time, each as this event loop gets to it between reading LEDGER and checking
        seals, while the child waits (measured: 0.2 s of a 1.7 s rebuild)."""
        if self._spool is None:
            raise RebuildError("the state worker is not available: not started")
        self._chunks += 1
        path = self._spool / f"chunk-{self._chunks}"
        path.write_bytes(pickle.dumps(runs, protocol=pickle.HIGHEST_PROTOCOL))
        self.size = await self._call("replay_file", str(path))

    async def digest(self) -> str:
        return str(await self._call("digest"))

    async def _call(self, *request: Any) -> Any:
        async with self._lock:
            proc = self._proc
            if self._broken is not None or proc is None:
                raise RebuildError(
                    f"the state worker is not available: {self._broken or 'not started'}"
                )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.write(len(payload).to_bytes(8, "big"))
                proc.stdin.write(payload)
                await proc.stdin.drain()
                size = int.from_bytes(await proc.stdout.readexactly(8), "big")
                status, value = pickle.loads(await proc.stdout.readexactly(size))
            except BaseException as e:
                # Interrupted between a request and its answer: never reused.
                self._broken = f"{type(e).__name__} during {request[0]}"
                if isinstance(e, (asyncio.IncompleteReadError, ConnectionError)):
                    raise RebuildError(
                        f"the state worker stopped (exit status {await proc.wait()})"
                    ) from None
                raise
        if status == "error":
            raise value
        return value

    async def close(self) -> None:
        """Let the child finish and exit (stdin closed); killed if it does not."""
        proc, self._proc = self._proc, None
        spool, self._spool = self._spool, None
        try:
            await self._stop(proc)
        finally:
            if spool is not None:
                shutil.rmtree(spool, ignore_errors=True)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process | None) -> None:
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def state_worker_main() -> None:
    """The child of :class:`StateWorker` (kept for callers of this name)."""
    worker_main()


def reader_state(reader: SealedReader) -> bytes:
    """What a reader needs to go on reading LEDGER after a restart: the stream
    position, the Merkle frontier of the sealed leaves, the last integration time."""
    last = reader.last_integrated
    return json.dumps(
        {
            "v": 1,
            "position": reader.position,
            "size": reader.size,
            "peaks": [base64.b64encode(p).decode() for p in reader.frontier.peaks],
            "last_integrated": None if last is None else format_time(last),
        },
        separators=(",", ":"),
    ).encode()


def resumed_reader(fresh: SealedReader, state: bytes) -> SealedReader:
    """``fresh`` (a reader that has read nothing) set to a recorded :func:`reader_state`."""
    doc = json.loads(state)
    if doc["v"] != 1 or fresh.position or fresh.size:
        raise ValueError("not a reader state of this version, or not a fresh reader")
    peaks = [base64.b64decode(p, validate=True) for p in doc["peaks"]]
    if any(len(p) != 32 for p in peaks):
        raise ValueError("a frontier hash is not 32 bytes")
    frontier = Frontier(int(doc["size"]), peaks)
    position = int(doc["position"])
    last = doc["last_integrated"]
    last_integrated = None if last is None else parse_time(str(last))
    fresh.frontier, fresh.position, fresh.last_integrated = frontier, position, last_integrated
    return fresh


class Projector:
    def __init__(
        self,
        nc: NATS,
        state: LedgerState | StateWorker,
        view: ComplianceView,
        *,
        alarms: Alarms | None = None,
    ) -> None:
        """``state``: the state store, applied on this process's state thread, or a
        :class:`StateWorker` applying it in a process of its own."""
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
        """On the state thread: the LEDGER sequences the state and the view applied."""
        state = self.state
        if isinstance(state, StateWorker):
            raise TypeError("the state is in a worker process: use positions_now()")
        return state.position(), self.view.position()

    async def positions_now(self) -> tuple[int, int]:
        state = self.state
        if isinstance(state, StateWorker):
            view = self.state_thread.call(self.view.position)
            return await asyncio.gather(state.position(), view)
        return await self.state_thread.call(self.positions)

    def _apply(self, chunk: _Chunk) -> None:
        """On the state thread: sealed entries into the state (one transaction per run
        of consecutive indexes) and then into the view (one transaction)."""
        state = self.state
        assert isinstance(state, LedgerState)
        _replay_runs(state, chunk.stored_runs())
        self._apply_view(chunk)

    def _apply_view(self, chunk: _Chunk) -> None:
        entries = [item for _, run in chunk.runs for item in run]
        if entries[-1][0] > self.view.position():
            self.view.process_event(entries, Tracking("LEDGER", entries[-1][0]), chunk.reader)

    def _resume(self, state_position: int, view_position: int) -> None:
        """On the state thread: a fresh reader continues from the reader state the view
        recorded, if the view is where it recorded it and the state got as far."""
        if self.reader.position or self.reader.size:
            return
        saved = self.view.view.reader_state()
        if saved is None or saved[0] != view_position or state_position < saved[0]:
            return
        try:
            resumed = resumed_reader(self.reader, saved[1])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("the view's reader state is unreadable (%s): reading LEDGER again", e)
            return
        self.reader = resumed

    async def _apply_chunk(self, chunk: _Chunk) -> None:
        state = self.state
        if isinstance(state, StateWorker):
            # Each store skips what it has applied: neither waits for the other.
            await asyncio.gather(
                state.replay(chunk.stored_runs()),
                self.state_thread.call(self._apply_view, chunk),
            )
        else:
            await self.state_thread.call(self._apply, chunk)

    async def _replay_worker_chunk(self, chunk: _Chunk) -> None:
        state = self.state
        assert isinstance(state, StateWorker)
        await state.replay(chunk.stored_runs())

    async def _apply_view_chunk(self, chunk: _Chunk) -> None:
        await self.state_thread.call(self._apply_view, chunk)

    async def catch_up(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        on_batch: Callable[[SealedBatch], None] | None = None,
        chunk_size: int = CHUNK_ENTRIES,
    ) -> int:
        """Apply every sealed entry not yet applied (:meth:`_catch_up`). An empty state
        store, with at least :data:`WORKER_FROM` LEDGER messages to apply (``ailedger
        project`` from nothing), is caught up by a :class:`StateWorker` on the same
        store, as ``rebuild`` does, and then this process's state forgets what it
        cached. Only from empty: a state that has applied entries may trail LEDGER's
        last message by heads leaves alone, which are not projected."""
        state = self.state
        if isinstance(state, LedgerState) and type(state) is LedgerState and state.shareable:
            last = await last_sequence(self.nc, LEDGER)
            if last >= WORKER_FROM and (await self.positions_now())[0] == 0:
                return await self._catch_up_in_worker(state, on_progress, on_batch, chunk_size)
        return await self._catch_up(on_progress, on_batch, chunk_size)

    async def _catch_up_in_worker(
        self,
        state: LedgerState,
        on_progress: Callable[[int, int], None] | None,
        on_batch: Callable[[SealedBatch], None] | None,
        chunk_size: int,
    ) -> int:
        worker = StateWorker(self.reader_trust)
        await worker.start()
        try:
            await worker.open(state.store_env)
            self.state = worker
            return await self._catch_up(on_progress, on_batch, chunk_size)
        finally:
            self.state = state
            size = worker.size
            await worker.close()

            def forget() -> None:
                state.forget()
                state.size = size

            await self.state_thread.call(forget)

    async def _catch_up(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        on_batch: Callable[[SealedBatch], None] | None = None,
        chunk_size: int = CHUNK_ENTRIES,
    ) -> int:
        """Apply every sealed entry not yet applied; return the LEDGER sequence reached.

        LEDGER is read (and its seals checked) ahead, while the state thread applies
        what was read before, in chunks of about ``chunk_size`` entries (the first
        ones smaller, from :data:`FIRST_CHUNK_ENTRIES`, so that applying starts early).
        ``on_batch`` sees every sealed batch in order (applied or not), heads leaves
        included; ``on_progress`` the sequence applied up to, after each chunk."""
        last = await last_sequence(self.nc, LEDGER)
        state_pos, view_pos = await self.positions_now()
        await self.state_thread.call(self._resume, state_pos, view_pos)
        applied = min(state_pos, view_pos)
        # One queue per store: with the state in a worker process, the worker never
        # waits for the view's transaction of a chunk (nor the view for the worker's).
        appliers = (
            [self._replay_worker_chunk, self._apply_view_chunk]
            if isinstance(self.state, StateWorker)
            else [self._apply_chunk]
        )
        queues: list[asyncio.Queue[_Chunk | None]] = [asyncio.Queue(READ_AHEAD) for _ in appliers]
        done = [applied] * len(appliers)
        reported = applied

        async def put(chunk: _Chunk | None) -> None:
            for queue in queues:
                await queue.put(chunk)

        async def read() -> None:
            chunk = _Chunk()
            limit = min(FIRST_CHUNK_ENTRIES, chunk_size)
            async for batch in self.reader.read(last, request_size=1000):
                if on_batch is not None:
                    on_batch(batch)
                # Heads leaves are the notary's, about no subject: not projected.
                entries = [(m.sequence, e) for m, e in batch.subject_entries()]
                if entries and entries[-1][0] > applied:
                    chunk.add(entries)
                chunk.read_to = batch.last_sequence
                if chunk.size >= limit:
                    chunk.reader = reader_state(self.reader)
                    await put(chunk)
                    chunk = _Chunk()
                    limit = min(2 * limit, chunk_size)
            chunk.read_to = last
            chunk.reader = reader_state(self.reader)
            await put(chunk)
            await put(None)

        async def apply(i: int) -> None:
            nonlocal reported
            queue, applier = queues[i], appliers[i]
            while (chunk := await queue.get()) is not None:
                if chunk.runs:
                    await applier(chunk)
                done[i] = chunk.read_to
                if on_progress is not None and min(done) > reported:
                    reported = min(done)
                    on_progress(reported, last)

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(read())
                for i in range(len(appliers)):
                    tasks.create_task(apply(i))
        except BaseExceptionGroup as group:
            # What was read ahead but not applied is not read again by this reader:
            # the next catch-up starts over with a fresh one (from the reader state
            # the view recorded, or from LEDGER's first message; entries already
            # applied are skipped), checking the seals again.
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
        view_digest = self.state_thread.call(self.view.digest)
        state = self.state
        if isinstance(state, StateWorker):
            state_digest, view = await asyncio.gather(state.digest(), view_digest)
        else:
            state_digest = await self.state_thread.call(state.digest)
            view = await view_digest
        return f"{state_digest[:32]}{view[:32]}"

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
    *,
    worker: bool | None = None,
) -> RebuildReport:
    """Drop the projector's stores and replay LEDGER into them from the first entry.

    ``worker``: replay the state in a :class:`StateWorker` process (default: when
    LEDGER holds at least :data:`WORKER_FROM` messages, where the child's start-up
    is small beside the replay).

    The entries replayed must hash to the root of the latest signed checkpoint
    (checked against the trust policy's log keys), so the rebuilt state is the
    state of the ledger everyone else can verify. The sealed reader folds every
    leaf into its Merkle frontier and checks each batch's root against its seal;
    the checkpoint's root is compared with that frontier at the checkpoint's size.
    """
    trust = home.trust()
    if worker is None:
        worker = await last_sequence(nc, LEDGER) >= WORKER_FROM
    if not worker:
        return await _rebuild(nc, home, None, state_env, view_env, on_progress)
    process = StateWorker(trust)
    await process.start()  # importing, while the checkpoint is found
    try:
        return await _rebuild(nc, home, process, state_env, view_env, on_progress)
    finally:
        await process.close()


async def _rebuild(
    nc: NATS,
    home: Home,
    worker: StateWorker | None,
    state_env: Mapping[str, str],
    view_env: Mapping[str, str],
    on_progress: Callable[[int, int], None] | None,
) -> RebuildReport:
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
    state: LedgerState | StateWorker
    # Dropped just now, and the caller writes it alone (ailedger rebuild holds the
    # read model's writer lock): what the state has not recorded is absent.
    if worker is None:
        state = LedgerState(state_env, trust=trust)
        state.assume_fresh()
    else:
        await worker.open(state_env, fresh=True)
        state = worker
    projector = Projector(nc, state, open_view(view_env))
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
