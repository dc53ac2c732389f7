"""Hardening against a real nats-server: alarms and `ailedger doctor`, changed stream
settings, oversize submissions, quotas, reconnects (issue 9, item 3)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from ledger.bus.alarms import STREAM_SETTINGS_CHANGED, Alarms, request_health
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import LEDGER, UnsafeLedgerStream, api, connect
from tests.conftest import Harness, bus_admin_connection, running_notary


async def doctor(url: str, *args: str) -> tuple[int, str, str]:
    """``ailedger doctor --nats url`` as a subprocess (the notary runs in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ailedger",
        "doctor",
        "--nats",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_alarms_count_keep_the_last_detail_and_log_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alarms = Alarms()
    with caplog.at_level(logging.ERROR, logger="ailedger.alarm"):
        alarms.record("foreign_message", "LEDGER #7: no seal")
        alarms.record("foreign_message", "LEDGER #9:   no\nseal")
        alarms.record("stream_settings_changed", "x" * 5000)
    active = {a.code: a for a in alarms.active()}
    assert active["foreign_message"].count == 2
    assert active["foreign_message"].detail == "LEDGER #9: no seal"
    assert len(active["stream_settings_changed"].detail) == 500
    assert [r.levelno for r in caplog.records] == [logging.ERROR] * 3
    assert "ALARM foreign_message: LEDGER #7: no seal" in caplog.text
    assert alarms.clear("foreign_message") and not alarms.clear("foreign_message")
    assert [a.code for a in alarms.active()] == ["stream_settings_changed"]


async def test_doctor_on_a_healthy_notary_shows_its_streams_and_exits_0(ledger: Harness) -> None:
    status, out, err = await doctor(ledger.url)
    assert status == 0, out + err
    assert "checkpoint signing on" in out
    assert "stream LEDGER: ok" in out and "stream CHECKPOINTS: ok" in out
    assert "alarms: none" in out
    status, out, _ = await doctor(ledger.url, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["ok"] and doc["alarms"] == []
    assert doc["last_sequence"] == ledger.notary.last_sequence


async def test_doctor_without_a_notary_says_so(nats_server: EmbeddedNats) -> None:
    status, out, err = await doctor(nats_server.url, "--timeout", "1")
    assert status == 3, out + err
    assert "ailedger.notary.health" in err and "ailedger up" in err


async def test_a_changed_ledger_limit_stops_checkpoint_signing_with_an_alarm(
    nats_server: EmbeddedNats, home: Home
) -> None:
    url: str = nats_server.url
    async with running_notary(url, home, checkpoint_interval=0.2, settings_check_interval=0.2) as h:
        _, bank = await h.enrol("bank", ["owner"])
        await h.register(bank, "scoring")
        await asyncio.sleep(0.6)
        signed = h.notary.latest_checkpoint
        assert signed is not None and signed[0].size == h.notary.last_sequence
        async with bus_admin_connection(h) as admin:
            info = await api(admin, f"STREAM.INFO.{LEDGER}")
            cfg = dict(info["config"], max_msgs=2, discard="old")
            updated = await api(admin, f"STREAM.UPDATE.{LEDGER}", cfg)
            assert "error" not in updated, updated  # the server lets it happen
        # the periodic re-check notices within its interval
        for _ in range(50):
            if h.notary.alarms.is_active(STREAM_SETTINGS_CHANGED):
                break
            await asyncio.sleep(0.1)
        active = {a.code: a for a in h.notary.alarms.active()}
        assert STREAM_SETTINGS_CHANGED in active
        assert "max_msgs is 2" in active[STREAM_SETTINGS_CHANGED].detail
        assert "discard policy is old" in active[STREAM_SETTINGS_CHANGED].detail
        # no checkpoint is signed any more, not even when asked for one
        assert await h.notary.checkpoint() is None
        assert h.notary.latest_checkpoint == signed
        nc = await connect(url)
        try:
            health = await request_health(nc)
        finally:
            await nc.close()
        assert health["checkpoint"]["signing"] is False
        assert health["streams"]["LEDGER"]["ok"] is False
        status, out, err = await doctor(url)
        assert status == 1, out + err
        assert "checkpoint signing OFF" in out
        assert f"ALARM {STREAM_SETTINGS_CHANGED}" in out and "max_msgs is 2" in out
        status, out, _ = await doctor(url, "--json")
        assert status == 1
        assert [a["code"] for a in json.loads(out)["alarms"]] == [STREAM_SETTINGS_CHANGED]


async def test_a_notary_refuses_to_start_on_a_ledger_with_a_limit(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    url: str = nats_server.url
    async with running_notary(url, home) as h, bus_admin_connection(h) as admin:
        info = await api(admin, f"STREAM.INFO.{LEDGER}")
        cfg = dict(info["config"], max_bytes=1 << 30)
        assert "error" not in await api(admin, f"STREAM.UPDATE.{LEDGER}", cfg)
    with pytest.raises(UnsafeLedgerStream, match="max_bytes"):
        async with running_notary(url, home):
            pass
