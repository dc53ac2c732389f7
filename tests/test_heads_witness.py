"""The notary's side of completeness: heads leaves before checkpoints, the head map
checked at start, and checkpoints published only with the witnesses' quorum.

Real parts only: an authorized nats-server, the notary in-process, the home's own
witness over HTTP (a Litestar/uvicorn server) and, for the crash, a witness
process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ledger.bus.alarms import WITNESS_QUORUM
from ledger.bus.home import Home, init_home
from ledger.bus.proofs import SignedCheckpoint
from ledger.bus.sealed import parse_leaf
from ledger.bus.streams import CHECKPOINTS, LEDGER, connect, last_sequence, read_stream
from ledger.formats.checkpoint import CosignatureVerifier, cosignature_timestamp
from ledger.formats.entry import Entry
from ledger.formats.heads import HeadsLeaf, HeadValue, reference_root, subject_key
from ledger.formats.note import Verifier, Verifiers, open_note
from services.notary import NotaryError
from services.witness.service import WitnessConfig, serve_witness
from tests.conftest import (
    ORIGIN,
    Harness,
    authorized_server,
    deployments,
    running_notary,
    serving,
)


@pytest.fixture
def witnessed_home(tmp_path: Path) -> Home:
    return init_home(tmp_path / "home", origin=ORIGIN, local_witness=True)


@contextlib.contextmanager
def server_for(tmp_path: Path, home: Home) -> Iterator[str]:
    with serving(authorized_server(tmp_path / "nats", home), home) as server:
        yield server.url


@contextlib.asynccontextmanager
async def witness(home: Home, port: int = 0) -> AsyncIterator[str]:
    """The home's witness over real HTTP in this loop; its URL."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_witness(
            WitnessConfig.from_home(home),
            stop,
            port=port,
            on_ready=lambda url, _w: ready.set_result(url),
        )
    )
    url = await asyncio.wait_for(ready, 30)
    try:
        yield url
    finally:
        stop.set()
        await task


async def leaves(url: str) -> list[Entry | HeadsLeaf]:
    nc = await connect(url)
    try:
        last = await last_sequence(nc, LEDGER)
        return [parse_leaf(m.data) async for m in read_stream(nc, LEDGER, 1, last)]
    finally:
        await nc.close()


async def published(url: str) -> list[bytes]:
    nc = await connect(url)
    try:
        last = await last_sequence(nc, CHECKPOINTS)
        return [m.data async for m in read_stream(nc, CHECKPOINTS, 1, last)] if last else []
    finally:
        await nc.close()


def map_of(entries: list[Entry | HeadsLeaf]) -> dict[bytes, HeadValue]:
    values: dict[bytes, HeadValue] = {}
    for e in entries:
        if isinstance(e, Entry):
            key = subject_key(e.subject)
            count = values[key].count + 1 if key in values else 1
            values[key] = HeadValue(e.index, count, e.leaf_hash)
    return values


async def submit_some(h: Harness, system: str, n: int) -> None:
    _, owner = await h.enrol(f"owner-{system}", ["owner"])
    await h.register(owner, system)
    for e in deployments(owner, system, n):
        await owner.submit(e, timeout=20)


def cosigners(note: bytes, home: Home) -> list[tuple[str, int]]:
    trust = home.trust()
    witnesses = [CosignatureVerifier.from_vkey(k) for k in trust.witness_vkeys()]
    logs = [Verifier.from_vkey(k) for k in trust.log_vkeys()]
    opened = open_note(note, Verifiers(*logs, *witnesses))
    names = {w.name for w in witnesses}
    return [(s.name, cosignature_timestamp(s)) for s in opened.sigs if s.name in names]


async def test_each_checkpoint_ends_with_a_heads_leaf_of_the_entries_before_it(
    tmp_path: Path, witnessed_home: Home
) -> None:
    home = witnessed_home
    with server_for(tmp_path, home) as url:
        async with witness(home) as w, running_notary(url, home, witnesses=[w]) as h:
            await submit_some(h, "scorer", 3)
            first = await h.notary.checkpoint()
            assert first is not None
            all_leaves = await leaves(url)
            size = SignedCheckpoint.parse(first).checkpoint.size
            assert size == len(all_leaves)
            heads = all_leaves[size - 1]
            assert isinstance(heads, HeadsLeaf) and heads.size == size - 1
            before = all_leaves[: size - 1]
            assert heads.root == reference_root(map_of(before))
            assert heads.subjects == len(map_of(before))
            # Cosigned by the home's witness before publication, and published.
            assert [name for name, _ in cosigners(first, home)] == [home.witness_name()]
            assert (await published(url))[-1] == first

            # Nothing appended since: no new heads leaf, no new checkpoint...
            assert await h.notary.checkpoint() is None
            assert len(await leaves(url)) == size
            # ... but the same checkpoint cosigned again, on request or when idle,
            # with the witness's new time (cosignature times are in seconds).
            await asyncio.sleep(1.1)
            again = await h.notary.checkpointer.checkpoint(again=True)
            assert again is not None
            assert cosigners(again, home)[0][1] > cosigners(first, home)[0][1]
            assert (
                SignedCheckpoint.parse(again).checkpoint == SignedCheckpoint.parse(first).checkpoint
            )
            assert len(await leaves(url)) == size

            # New entries: a new heads leaf covering them all, projections unaware.
            await submit_some(h, "summariser", 2)
            second = await h.notary.checkpoint()
            assert second is not None
            all_leaves = await leaves(url)
            assert SignedCheckpoint.parse(second).checkpoint.size == len(all_leaves)
            assert isinstance(all_leaves[-1], HeadsLeaf)
            assert all_leaves[-1].root == reference_root(map_of(all_leaves[:-1]))
            assert sum(isinstance(e, HeadsLeaf) for e in all_leaves) == 2
            # The state counts the heads leaves' indexes without projecting them.
            assert h.notary.state.size == len(all_leaves)


async def test_no_checkpoint_is_published_without_the_quorum_and_it_resumes(
    tmp_path: Path, witnessed_home: Home
) -> None:
    home = witnessed_home
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with server_for(tmp_path, home) as url:
        down = f"http://127.0.0.1:{port}"
        async with running_notary(url, home, witnesses=[down], witness_timeout=2.0) as h:
            await submit_some(h, "scorer", 2)
            assert await h.notary.checkpoint() is None  # the witness is not there
            assert await published(url) == []
            assert h.notary.alarms.is_active(WITNESS_QUORUM)
            assert "witness" in (h.notary.checkpointer.withheld or "")
            # The heads leaf is in LEDGER; entries keep flowing meanwhile.
            await submit_some(h, "summariser", 1)
            # The witness comes back on its address: the next checkpoint goes out.
            async with witness(home, port=port):
                note = await h.notary.checkpoint()
                assert note is not None
                assert [n for n, _ in cosigners(note, home)] == [home.witness_name()]
                assert (await published(url)) == [note]
                assert not h.notary.alarms.is_active(WITNESS_QUORUM)
                all_leaves = await leaves(url)
                assert SignedCheckpoint.parse(note).checkpoint.size == len(all_leaves)
                # Two heads leaves: the withheld checkpoint's and the published one's.
                assert sum(isinstance(e, HeadsLeaf) for e in all_leaves) == 2


def _witness_process(home: Home, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ailedger",
                "witness",
                "--home",
                str(home.path),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"witness did not start: {log.read_text()}")


async def test_a_witness_killed_and_restarted_still_holds_the_notary_to_its_history(
    tmp_path: Path, witnessed_home: Home
) -> None:
    """The witness's state survives SIGKILL: after a restart it still refuses a
    checkpoint inconsistent with what it cosigned (a second ledger, same keys)."""
    home = witnessed_home
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "witness.log"
    proc = _witness_process(home, port, log)
    try:
        w = f"http://127.0.0.1:{port}"
        with server_for(tmp_path, home) as url:
            async with running_notary(url, home, witnesses=[w]) as h:
                await submit_some(h, "scorer", 2)
                assert await h.notary.checkpoint() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = _witness_process(home, port, log)
        # The same home on a fresh server: another history under the same keys.
        (home.tree_path).unlink()
        with server_for(tmp_path / "fork", home) as url:
            async with running_notary(url, home, witnesses=[w]) as h:
                await submit_some(h, "other", 4)
                assert await h.notary.checkpoint() is None
                assert await published(url) == []
                withheld = h.notary.checkpointer.withheld or ""
                assert (
                    "HTTP 422" in withheld and "not consistent with the cosigned size" in withheld
                )
    finally:
        proc.kill()
        proc.wait(10)


async def test_a_wrong_head_map_store_is_rebuilt_and_a_wrong_heads_leaf_stops_the_notary(
    tmp_path: Path, witnessed_home: Home
) -> None:
    from ledger.formats.headmap import HeadMap, SqliteNodeStore

    home = witnessed_home
    store = tmp_path / "heads.sqlite"
    with server_for(tmp_path, home) as url:
        async with witness(home) as w:
            heads = HeadMap(SqliteNodeStore(store))
            async with running_notary(url, home, witnesses=[w], heads=heads) as h:
                await submit_some(h, "scorer", 2)
                assert await h.notary.checkpoint() is not None
                good = (heads.size, heads.root)
            heads.close()
            assert good[0] > 0
            # Another ledger's map in its place: found at start, rebuilt from LEDGER.
            store.unlink()
            other = HeadMap(SqliteNodeStore(store))
            other.note("system/elsewhere", 0, b"\x01" * 32)
            other.stage(good[0])
            other.commit()
            other.close()
            heads = HeadMap(SqliteNodeStore(store))
            async with running_notary(url, home, witnesses=[w], heads=heads) as h:
                assert (heads.size, heads.root) == good
            heads.close()

            # A heads leaf in LEDGER that the entries do not give, sealed with the
            # log key (a notary bug or a stolen key): never signed over.
            from ledger.bus.streams import HEADS_SUBJECT, publish_atomic
            from ledger.formats.seal import HDR_SEAL, sign_seal
            from ledger.formats.timeutil import SystemClock
            from tests.conftest import bus_admin_connection

            async with running_notary(url, home, witnesses=[w]) as h:
                await submit_some(h, "other", 1)
                reader = h.notary.sequencer.reader
                m = reader.size
                wrong = HeadsLeaf(m, 1, b"\x07" * 32)
                frontier = reader.frontier.copy()
                frontier.append(wrong.leaf_hash)
                seal = sign_seal(
                    home.notary_signer(),
                    h.notary.last_sequence + 1,
                    m + 1,
                    frontier.root(),
                    SystemClock().now(),
                )
                async with bus_admin_connection(h) as nc:
                    await publish_atomic(
                        nc,
                        [(HEADS_SUBJECT, wrong.encoded, {HDR_SEAL: seal.header_value})],
                        h.notary.last_sequence,
                    )
            with pytest.raises(NotaryError, match="wrong heads leaf"):
                async with running_notary(url, home, witnesses=[w]):
                    pass


def test_an_unreadable_head_map_store_is_replaced_not_fatal(tmp_path: Path) -> None:
    from services.notary.service import open_head_map

    path = tmp_path / "notary.heads.sqlite"
    path.write_bytes(b"not a head map, nor SQLite at all" * 100)
    heads = open_head_map(path)
    try:
        assert (heads.size, heads.subjects) == (0, 0)
        heads.note("system/scorer", 0, b"\x01" * 32)
        leaf = heads.stage(1)
        heads.commit()
        assert (
            heads.root
            == leaf.root
            == reference_root({subject_key("system/scorer"): HeadValue(0, 1, b"\x01" * 32)})
        )
    finally:
        heads.close()
