"""The projector's fast paths keep its guarantees: LEDGER read ahead and applied in
large chunks gives the stores that one sealed batch at a time gives; a failed chunk
is applied again by the next catch-up, never skipped; rebuild compares the signed
checkpoint with the seals' Merkle frontier at the checkpoint's size, wherever that
size falls in a batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import services.projector as projector_module
from ledger.bus.auth import SUPERUSER
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.sealed import Frontier, SealedBatch, trusted_reader
from ledger.bus.streams import CHECKPOINT_SUBJECT, CHECKPOINTS, LEDGER, connect, last_sequence
from ledger.formats.checkpoint import Checkpoint
from ledger.formats.merkle import leaf_hash
from ledger.formats.note import sign_note
from ledger.state.application import LedgerCorrupt, LedgerState
from ledger.state.persistence import store_envs
from ledger.views.store import open_view
from services.projector import Projector, RebuildError, StateWorker, rebuild
from tests.conftest import deployments, running_notary


async def _ledger_with_batches(server: EmbeddedNats, home: Home) -> None:
    """A ledger of many sealed batches (several entries each), with heads leaves
    between them: three owners deploy in waves, a checkpoint after each wave."""
    async with running_notary(server.url, home) as ledger:
        clients = []
        for i in range(3):
            _, client = await ledger.enrol(f"owner{i}", ["owner"])
            await ledger.register(client, f"sys{i}")
            clients.append(client)
        for _ in range(3):
            waves = [
                c.submit_many(deployments(c, f"sys{i}", 30), concurrency=15, timeout=60)
                for i, c in enumerate(clients)
            ]
            await asyncio.gather(*waves)
            assert await ledger.notary.checkpoint() is not None


def _projector(nc: object, home: Home, where: Path) -> Projector:
    where.mkdir()
    state_env, view_env = store_envs(where)
    return Projector(nc, LedgerState(state_env, trust=home.trust()), open_view(view_env))  # type: ignore[arg-type]


async def test_chunks_read_ahead_give_the_stores_of_one_batch_at_a_time(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home
) -> None:
    await _ledger_with_batches(nats_server, home)
    nc = await connect(nats_server.url)
    try:
        one = _projector(nc, home, tmp_path / "one")
        many = _projector(nc, home, tmp_path / "many")
        failing = _projector(nc, home, tmp_path / "failing")
        try:
            progress: list[int] = []
            heads = []
            last = await one.catch_up(
                chunk_size=1,
                on_progress=lambda done, _: progress.append(done),
                on_batch=lambda b: heads.append(b.heads),
            )
            assert progress == sorted(progress) and progress[-1] == last
            assert len(heads) > 10 and sum(h is not None for h in heads) >= 3
            assert await many.catch_up() == last
            # genesis, 3 enrolments, 3 registrations, 270 deployments; heads leaves
            assert one.reader.size - sum(h is not None for h in heads) == 1 + 3 + 3 + 270
            assert one.state.size == many.state.size
            assert await one.digest() == await many.digest()

            # The second chunk fails to apply: the next catch-up applies it, and
            # everything after it, reading LEDGER again from its first message.
            apply, calls = failing._apply, []

            def flaky(chunk: object) -> None:
                calls.append(chunk)
                if len(calls) == 2:
                    raise RuntimeError("the disk is full")
                apply(chunk)  # type: ignore[arg-type]

            failing._apply = flaky  # type: ignore[method-assign]
            with pytest.raises(RuntimeError, match="disk is full"):
                await failing.catch_up(chunk_size=20)
            assert failing.reader.size == 0  # a fresh reader
            assert await failing.catch_up(chunk_size=20) == last
            assert await failing.digest() == await one.digest()
        finally:
            for p in (one, many, failing):
                p.close()
    finally:
        await nc.close()


async def test_rebuild_checks_the_checkpoint_root_at_its_size(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home
) -> None:
    await _ledger_with_batches(nats_server, home)
    nc = await connect(nats_server.url)
    try:
        # every sealed leaf, and the tree sizes the seals end at
        reader = trusted_reader(nc, home.trust())
        leaves: list[bytes] = []
        async for batch in reader.read():
            leaves += [m.data for m in batch.messages]
        inside = next(
            size - 1
            for before, size in zip(reader.sizes, reader.sizes[1:], strict=False)
            if size - before > 2
        )
        assert inside not in reader.sizes  # a size in the middle of a batch

        def root(size: int) -> bytes:
            frontier = Frontier()
            for data in leaves[:size]:
                frontier.append(leaf_hash(data))
            return frontier.root()

        async def latest_checkpoint(size: int, root_hash: bytes) -> None:
            body = Checkpoint(home.trust().origin, size, root_hash).body()
            # as the compromised bus of the threat model could, with the log's key
            bus = await connect(nats_server.url, **home.bus_identity(SUPERUSER))
            try:
                note = sign_note(body, home.notary_signer())
                await bus.jetstream().publish(CHECKPOINT_SUBJECT, note, stream=CHECKPOINTS)
            finally:
                await bus.close()

        state_env, view_env = store_envs(tmp_path)
        # the state replayed in a worker process, or on the projector's state thread
        report = await rebuild(nc, home, state_env, view_env, worker=True)
        assert report.entries == await last_sequence(nc, LEDGER)
        assert report.checkpoint_size == len(leaves)
        in_thread = await rebuild(nc, home, state_env, view_env, worker=False)
        assert in_thread == report

        await latest_checkpoint(inside, root(inside))
        report = await rebuild(nc, home, state_env, view_env)
        assert report.checkpoint_size == inside

        for size, wrong in ((inside, root(inside - 1)), (len(leaves) + 1, root(len(leaves)))):
            await latest_checkpoint(size, wrong)
            with pytest.raises(RebuildError, match=f"first {size} LEDGER entries"):
                await rebuild(nc, home, state_env, view_env)
    finally:
        await nc.close()


async def test_a_state_worker_that_dies_is_an_error_not_a_hang(tmp_path: Path, home: Home) -> None:
    worker = StateWorker(home.trust())
    await worker.start()
    try:
        state_env, _ = store_envs(tmp_path)
        await worker.open(state_env)
        assert await worker.position() == 0
        with pytest.raises(LedgerCorrupt, match="LEDGER #1"):
            await worker.replay([(0, [(1, b"not an entry")])])  # its errors come back
        assert await worker.position() == 0
        # the chunk went over in a file, deleted once read
        spool = worker._spool
        assert spool is not None and spool.is_dir() and not any(spool.iterdir())
        assert worker._proc is not None
        worker._proc.kill()
        with pytest.raises(RebuildError, match="state worker stopped"):
            await worker.position()
        with pytest.raises(RebuildError, match="not available"):
            await worker.digest()
    finally:
        await worker.close()
    assert not spool.exists()  # removed with the worker


async def test_a_projector_started_again_reads_only_what_is_new(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home
) -> None:
    await _ledger_with_batches(nats_server, home)
    nc = await connect(nats_server.url)
    try:
        first = _projector(nc, home, tmp_path / "stores")
        try:
            last = await first.catch_up(chunk_size=50)
            size = first.reader.size
        finally:
            first.close()

        def again() -> tuple[Projector, list[int]]:
            state_env, view_env = store_envs(tmp_path / "stores")
            state = LedgerState(state_env, trust=home.trust())
            return Projector(nc, state, open_view(view_env)), []

        # nothing new: no entry read again (heads leaves after the last chunk of
        # entries may be: the view records the reader with its rows), the reader
        # where the first one stopped
        second, batches = again()
        heads_only: list[bool] = []

        def seen(b: SealedBatch) -> None:
            batches.append(b.first_index)
            heads_only.append(b.heads is not None)

        try:
            assert await second.catch_up(on_batch=seen) == last
            assert all(heads_only) and second.reader.size == size
            assert second.reader.position == last
        finally:
            second.close()

        # new entries: only they are read, seals checked from the recorded frontier on
        async with running_notary(nats_server.url, home) as ledger:
            _, client = await ledger.enrol("late", ["owner"])
            await ledger.register(client, "late-sys")
            await client.submit_many(deployments(client, "late-sys", 20), concurrency=10)
        third, batches = again()
        try:

            def entries_batch(b: SealedBatch) -> None:
                if b.heads is None:
                    batches.append(b.first_index)

            newest = await third.catch_up(on_batch=entries_batch)
            assert batches and min(batches) >= size  # entries: only the new ones
            assert third.reader.foreign == [] and newest > last
            resumed = await third.digest()
        finally:
            third.close()
        whole = _projector(nc, home, tmp_path / "whole")
        try:
            assert await whole.catch_up() == newest
            assert await whole.digest() == resumed
        finally:
            whole.close()

        # a state behind the view's reader state (here: its store dropped): all read again
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / "stores" / f"projector.sqlite{suffix}").unlink(missing_ok=True)
        fourth, batches = again()
        try:
            await fourth.catch_up(on_batch=lambda b: batches.append(b.first_index))
            assert batches[0] == 0 and await fourth.digest() == resumed
        finally:
            fourth.close()
    finally:
        await nc.close()


async def test_a_state_far_behind_catches_up_in_a_worker_process(
    tmp_path: Path, nats_server: EmbeddedNats, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _ledger_with_batches(nats_server, home)
    nc = await connect(nats_server.url)
    try:
        plain = _projector(nc, home, tmp_path / "plain")
        far = _projector(nc, home, tmp_path / "far")
        try:
            last = await plain.catch_up()
            monkeypatch.setattr(projector_module, "WORKER_FROM", 2)
            started: list[StateWorker] = []
            start = StateWorker.start

            async def starting(worker: StateWorker) -> None:
                started.append(worker)
                await start(worker)

            monkeypatch.setattr(StateWorker, "start", starting)
            assert await far.catch_up() == last
            assert len(started) == 1 and type(far.state) is LedgerState
            assert await far.digest() == await plain.digest()
            assert far.state.size == plain.state.size
            # this process's state reads what the worker recorded, not what it cached
            ours = await far.state_thread.call(far.state.system, "sys0")
            theirs = await plain.state_thread.call(plain.state.system, "sys0")
            assert ours is not None and theirs is not None and ours.version == theirs.version > 30
            assert await far.catch_up() == last  # from a state that is not empty: here
            assert len(started) == 1
        finally:
            plain.close()
            far.close()
    finally:
        await nc.close()
