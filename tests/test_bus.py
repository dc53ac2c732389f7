"""The embedded nats-server and the streams of DESIGN §4, on a real server."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import (
    INTAKE,
    LEDGER,
    REJECTED,
    BatchRejected,
    Fenced,
    UnsafeLedgerStream,
    api,
    connect,
    ensure_streams,
    last_sequence,
    publish_atomic,
)


def test_embedded_server_runs_on_a_free_loopback_port_and_stops_by_pid(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    pid = server.pid
    try:
        assert url.startswith("nats://127.0.0.1:")
        assert not url.endswith(":4222")
        os.kill(pid, 0)  # alive
        conf = server.config_path.read_text()
        assert "sync_interval: always" in conf
        assert str(tmp_path) in conf
    finally:
        server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_streams_are_idempotent_and_ledger_refuses_delete_and_purge(
    nats_server: EmbeddedNats,
) -> None:
    nc = await connect(nats_server.url)
    try:
        await ensure_streams(nc)
        await ensure_streams(nc)  # idempotent
        for name in (INTAKE, LEDGER, REJECTED):
            info = await api(nc, f"STREAM.INFO.{name}")
            assert "error" not in info
        cfg = (await api(nc, f"STREAM.INFO.{LEDGER}"))["config"]
        assert cfg["deny_delete"] and cfg["deny_purge"] and cfg["allow_atomic"]
        assert cfg["discard"] == "new" and cfg["max_age"] == 0 and cfg["storage"] == "file"
        seq = await publish_atomic(nc, [("ledger.system.x", b"entry", {})], 0)
        assert seq == 1
        deleted = await api(nc, f"STREAM.MSG.DELETE.{LEDGER}", {"seq": 1})
        assert deleted["error"]["description"] == "message delete not permitted"
        purged = await api(nc, f"STREAM.PURGE.{LEDGER}", {})
        assert purged["error"]["description"] == "stream purge not permitted"
        assert await last_sequence(nc, LEDGER) == 1
    finally:
        await nc.close()


async def test_refuses_a_ledger_stream_that_would_allow_deletion(nats_server: EmbeddedNats) -> None:
    nc = await connect(nats_server.url)
    try:
        created = await api(
            nc,
            f"STREAM.CREATE.{LEDGER}",
            {"name": LEDGER, "subjects": ["ledger.>"], "storage": "file", "max_age": 3600 * 10**9},
        )
        assert "error" not in created
        with pytest.raises(UnsafeLedgerStream) as e:
            await ensure_streams(nc)
        assert "deny_delete is off" in str(e.value) and "max_age is set" in str(e.value)
    finally:
        await nc.close()


async def test_atomic_batch_is_fenced_on_the_last_sequence(nats_server: EmbeddedNats) -> None:
    nc = await connect(nats_server.url)
    try:
        await ensure_streams(nc)
        batch = [(f"ledger.system.s{i}", f"e{i}".encode(), {}) for i in range(5)]
        assert await publish_atomic(nc, batch, 0) == 5
        # a writer that believes the stream is still empty is refused, whole
        with pytest.raises(Fenced):
            await publish_atomic(nc, batch, 0)
        assert await last_sequence(nc, LEDGER) == 5
        assert await publish_atomic(nc, batch[:2], 5) == 7
    finally:
        await nc.close()


async def test_one_message_is_a_plain_fenced_publish(nats_server: EmbeddedNats) -> None:
    """A batch of one goes as a plain publish (no ADR-50 staging), fenced the same
    way; a duplicate message id, which the server would drop, is refused too."""
    nc = await connect(nats_server.url)
    try:
        await ensure_streams(nc)
        one = [("ledger.system.a", b"e1", {"Nats-Msg-Id": "m1"})]
        assert await publish_atomic(nc, one, 0) == 1
        with pytest.raises(Fenced):
            await publish_atomic(nc, [("ledger.system.a", b"e2", {"Nats-Msg-Id": "m2"})], 0)
        with pytest.raises(BatchRejected):
            await publish_atomic(nc, one, 1)  # same id: the server keeps the first, adds none
        assert await last_sequence(nc, LEDGER) == 1
        assert await publish_atomic(nc, [("ledger.system.a", b"e2", {"Nats-Msg-Id": "m2"})], 1) == 2
    finally:
        await nc.close()


def test_server_killed_with_sigkill_keeps_acknowledged_messages(tmp_path: Path) -> None:
    """sync_interval: always: what the server acknowledged survives a crash."""
    server = EmbeddedNats(tmp_path / "nats")

    async def write() -> None:
        nc = await connect(server.url)
        await ensure_streams(nc)
        await publish_atomic(nc, [(f"ledger.system.s{i}", b"x", {}) for i in range(100)], 0)
        await nc.close()

    async def count() -> int:
        nc = await connect(server.url)
        try:
            return await last_sequence(nc, LEDGER)
        finally:
            await nc.close()

    server.start()
    asyncio.run(write())
    os.kill(server.pid, signal.SIGKILL)
    server.kill()
    server.start()
    try:
        assert asyncio.run(count()) == 100
    finally:
        server.stop()


async def test_reads_are_complete_for_a_slow_reader_and_gaps_are_refused(
    nats_server: EmbeddedNats,
) -> None:
    from ledger.bus.streams import BusError, read_stream, read_subject

    nc = await connect(nats_server.url)
    try:
        await ensure_streams(nc)
        for b in range(4):
            batch = [(f"ledger.system.s{i % 3}", b"x" * 500, {}) for i in range(1000)]
            await publish_atomic(nc, batch, b * 1000)
        seen = []
        async for m in read_stream(nc, LEDGER, 1, 4000, batch=300):
            seen.append(m.sequence)
            if m.sequence % 1000 == 0:
                await asyncio.sleep(0.2)  # a reader far slower than the server
        assert seen == list(range(1, 4001))
        s1 = await read_subject(nc, LEDGER, "ledger.system.s1", 2000)
        expected = [b * 1000 + i + 1 for b in range(2) for i in range(1000) if i % 3 == 1]
        assert [m.sequence for m in s1] == expected
        # a stream with a hole: the reader says so instead of skipping it
        await api(nc, "STREAM.CREATE.HOLES", {"name": "HOLES", "subjects": ["holes"],
                                               "allow_direct": True})  # fmt: skip
        for _ in range(5):
            await nc.jetstream().publish("holes", b"x")
        await api(nc, "STREAM.MSG.DELETE.HOLES", {"seq": 3})
        with pytest.raises(BusError, match="skips from #3 to #4"):
            [m async for m in read_stream(nc, "HOLES", 1, 5)]
    finally:
        await nc.close()
