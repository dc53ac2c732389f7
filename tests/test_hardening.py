"""Hardening against a real nats-server: alarms and `ailedger doctor`, changed stream
settings, oversize submissions, quotas, reconnects (issue 9, item 3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.errors import MaxPayloadError
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError

from ledger.bus.alarms import STREAM_SETTINGS_CHANGED, Alarms, request_health
from ledger.bus.client import LedgerClient
from ledger.bus.home import Home
from ledger.bus.logview import HEADS_ROW_SIGNER, HEADS_ROW_TYPE, read_log
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import (
    INTAKE,
    INTAKE_MAX_PER_SUBJECT,
    LEDGER,
    MAX_ENVELOPE,
    MAX_PAYLOAD,
    REJECTED,
    NatsUnreachable,
    StoredMessage,
    UnsafeLedgerStream,
    api,
    connect,
    last_sequence,
    read_stream,
    rejected_copy,
    stream_configs,
)
from ledger.formats.keys import generate
from ledger.law import events as ev
from ledger.state.application import LedgerState
from ledger.state.persistence import store_envs
from ledger.views.store import open_view
from services.notary import MAX_ENVELOPE as NOTARY_MAX_ENVELOPE
from services.projector import Projector
from tests.conftest import (
    Harness,
    NotaryProcess,
    bus_admin_connection,
    enrolment_fields,
    registration_fields,
    running_notary,
)


async def doctor(url: str, home: Home, *args: str) -> tuple[int, str, str]:
    """``ailedger doctor --home H --nats url`` as a subprocess (the notary runs in this
    loop); the home gives it its bus identity."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ailedger",
        "doctor",
        "--home",
        str(home.path),
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
    # Checkpoint now, so the periodic checkpoint appends no heads leaf (which moves
    # LEDGER's last sequence) while the doctor runs: an idle notary appends none.
    await ledger.notary.checkpoint()
    status, out, err = await doctor(ledger.url, ledger.home)
    assert status == 0, out + err
    assert "checkpoint signing on" in out
    assert "stream LEDGER: ok" in out and "stream CHECKPOINTS: ok" in out
    assert "alarms: none" in out
    status, out, _ = await doctor(ledger.url, ledger.home, "--json")
    doc = json.loads(out)
    assert status == 0 and doc["ok"] and doc["alarms"] == []
    assert doc["last_sequence"] == ledger.notary.last_sequence
    nc = await connect(ledger.url)
    try:
        assert doc["last_sequence"] == await last_sequence(nc, LEDGER)  # heads leaves counted
    finally:
        await nc.close()


async def test_doctor_without_a_notary_says_so(nats_server: EmbeddedNats, home: Home) -> None:
    status, out, err = await doctor(nats_server.url, home, "--timeout", "1")
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
        status, out, err = await doctor(url, h.home)
        assert status == 1, out + err
        assert "checkpoint signing OFF" in out
        assert f"ALARM {STREAM_SETTINGS_CHANGED}" in out and "max_msgs is 2" in out
        status, out, _ = await doctor(url, h.home, "--json")
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


# --- sizes ---------------------------------------------------------------------


async def rejected_copies(url: str) -> list[StoredMessage]:
    nc = await connect(url)
    try:
        last = await last_sequence(nc, REJECTED)
        return [m async for m in read_stream(nc, REJECTED, 1, last, subject="rejected.>")]
    finally:
        await nc.close()


async def wait_rejected(url: str, n: int, timeout: float = 30.0) -> list[StoredMessage]:
    deadline = time.monotonic() + timeout
    while True:
        copies = await rejected_copies(url)
        if len(copies) >= n or time.monotonic() > deadline:
            return copies
        await asyncio.sleep(0.1)


def test_limits_are_consistent_with_the_envelope_limit() -> None:
    configs = stream_configs()
    assert MAX_ENVELOPE == NOTARY_MAX_ENVELOPE
    assert MAX_ENVELOPE < configs[INTAKE]["max_msg_size"] < MAX_PAYLOAD
    assert configs[REJECTED]["max_msg_size"] < MAX_PAYLOAD
    # what the notary copies to REJECTED always fits, whatever arrived
    data, headers = rejected_copy(b"x" * (8 << 20), {"Ailedger-Detail": "d" * 900})
    assert len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items()) < 8 * 1024
    assert headers["Ailedger-Sha256"] == hashlib.sha256(b"x" * (8 << 20)).hexdigest()
    assert headers["Ailedger-Size"] == str(8 << 20) and headers["Ailedger-Truncated"] == "1"
    assert rejected_copy(b"{}", {})[0] == b"{}"


async def test_oversize_submissions_are_refused_and_the_notary_keeps_serving(
    ledger: Harness,
) -> None:
    _, bank = await ledger.enrol("bank", ["owner"])
    nc = await connect(ledger.url)
    try:
        js = nc.jetstream(timeout=5)
        subject = "intake.bank.SystemRegistered"
        # 1 MiB: over the server's max_payload, refused before anything is sent
        with pytest.raises(MaxPayloadError):
            await js.publish(subject, b"{" + b" " * (1 << 20))
        # 100 KiB: over INTAKE's max_msg_size, refused by the stream
        with pytest.raises(BadRequestError, match="size exceeds"):
            await js.publish(subject, b"{" + b" " * (100 << 10))
        # 70 KiB: over the envelope limit, reaches the notary, rejected and kept short
        big = b'{"payload": "' + b"A" * (70 << 10) + b'"}'
        await js.publish(subject, big)
        # unreadable bytes are rejected and kept whole
        await js.publish(subject, b"\xff\xfe not json")
    finally:
        await nc.close()
    copies = await wait_rejected(ledger.url, 2)
    by_reason = {m.headers["Ailedger-Reason"]: m for m in copies}
    oversize = by_reason["oversize"]
    assert oversize.headers["Ailedger-Sha256"] == hashlib.sha256(big).hexdigest()
    assert oversize.headers["Ailedger-Size"] == str(len(big))
    assert oversize.headers["Ailedger-Truncated"] == "1"
    assert oversize.data == big[:4096]
    unreadable = by_reason["malformed_json"]
    assert (
        unreadable.data == b"\xff\xfe not json" and "Ailedger-Truncated" not in unreadable.headers
    )
    # and the notary still serves
    await ledger.register(bank, "scoring")
    assert ledger.notary.nc.is_connected


def _old_intake() -> dict[str, object]:
    """INTAKE as versions before the quotas created it."""
    old = dict(stream_configs()[INTAKE], discard="old", subjects=["intake.>"])
    for key in ("discard_new_per_subject", "max_msgs_per_subject", "max_msg_size"):
        old.pop(key)
    old.update(max_msgs=-1, max_bytes=-1)
    return old


async def test_a_1mib_submission_on_an_old_intake_does_not_break_the_notary(
    tmp_path: Path, home: Home
) -> None:
    """A server with the default 1 MB max_payload and an INTAKE without max_msg_size
    (an external server whose streams someone else manages): the notary's copy to
    REJECTED used to exceed max_payload and the server dropped its connection."""
    with EmbeddedNats(tmp_path / "nats1mb", extra_config="max_payload: 1MB\n") as server:
        async with running_notary(server.url, home) as h:
            _, bank = await h.enrol("bank", ["owner"])
            async with bus_admin_connection(h) as admin:
                assert admin.max_payload == 1 << 20
                updated = await api(admin, f"STREAM.UPDATE.{INTAKE}", _old_intake())
                assert "error" not in updated, updated
            huge = b"{" + b" " * ((1 << 20) - 4096)
            raw = await connect(server.url)
            try:
                await raw.jetstream(timeout=5).publish("intake.bank.SystemRegistered", huge)
            finally:
                await raw.close()
            copies = await wait_rejected(server.url, 1)
            assert [m.headers["Ailedger-Reason"] for m in copies] == ["oversize"]
            assert copies[0].headers["Ailedger-Sha256"] == hashlib.sha256(huge).hexdigest()
            assert len(copies[0].data) == 4096
            await h.register(bank, "scoring")  # a receipt: the notary still serves
            assert h.notary.nc.is_connected


async def test_an_old_intake_gets_the_limits_and_only_event_type_subjects(
    nats_server: EmbeddedNats, home: Home
) -> None:
    nc = await connect(nats_server.url)
    try:
        created = await api(nc, f"STREAM.CREATE.{INTAKE}", _old_intake())
        assert "error" not in created, created
    finally:
        await nc.close()
    async with running_notary(nats_server.url, home) as h:
        _, bank = await h.enrol("bank", ["owner"])
        async with bus_admin_connection(h) as admin:
            config = (await api(admin, f"STREAM.INFO.{INTAKE}"))["config"]
            for key in ("discard", "max_msgs_per_subject", "max_msg_size", "subjects"):
                assert config[key] == stream_configs()[INTAKE][key], key
            assert config["discard_new_per_subject"] is True
            # an actor cannot open subjects of its own beyond the event types
            js = admin.jetstream(timeout=2)
            with pytest.raises(NoStreamResponseError):
                await js.publish("intake.bank.flood-1", b"{}")
            await h.register(bank, "scoring")


# --- reconnects -------------------------------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_the_notary_resumes_after_its_nats_server_restarts(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    """Server down for longer than the 15 s nats-py used to retry, then back on the
    same port and store: the same notary process serves again."""
    notary = NotaryProcess.in_dir(home, nats_server.url, tmp_path)
    notary.start()
    try:
        await asyncio.to_thread(notary.wait_ready)
        reg = await LedgerClient.connect(nats_server.url, home.regulator_key(), trust=home.trust())
        try:
            key = generate("bank")
            await reg.submit(
                reg.event(ev.ActorEnrolled, **enrolment_fields("bank", ["owner"], key))
            )
        finally:
            await reg.close()
        port = _port(nats_server.url)
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(16.5)
        assert notary.proc is not None and notary.proc.poll() is None, notary.log.read_text()
        nats_server.port = port
        await asyncio.to_thread(nats_server.start)
        bank = await LedgerClient.connect(nats_server.url, key, trust=home.trust())
        try:
            fields = registration_fields("bank", "scoring")
            receipt = await bank.submit(bank.event(ev.SystemRegistered, **fields), timeout=30)
        finally:
            await bank.close()
        # The next index after the genesis entry, the enrolment and the heads leaves
        # the notary appended before checkpoints (before or after the outage).
        nc = await connect(nats_server.url)
        try:
            rows = await read_log(nc, trust=home.trust())
        finally:
            await nc.close()
        assert [r.index for r in rows] == list(range(len(rows)))
        entries = [r for r in rows if (r.signer, r.type) != (HEADS_ROW_SIGNER, HEADS_ROW_TYPE)]
        assert [r.type for r in entries] == ["LedgerGenesis", "ActorEnrolled", "SystemRegistered"]
        heads_before = len([r for r in rows if r not in entries and r.index < receipt.index])
        assert receipt.index == entries[2].index == 2 + heads_before
        status, out, err = await doctor(nats_server.url, home)
        assert status == 0, out + err  # the nats_disconnected alarm cleared on reconnect
        assert "NATS connection of ailedger-notary lost" in notary.log.read_text()
    finally:
        if notary.proc is not None and notary.proc.poll() is None:
            notary.terminate()


def _ailedger_up(home: Home, tmp_path: Path, ready: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``ailedger up`` on ``home`` (web app on a free port), once its log says ``ready``."""
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ailedger", "up", "--home", str(home.path), "--web-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 120
    while ready.encode() not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"ailedger up never said {ready!r}: {log_path.read_text()}")
        time.sleep(0.1)
    return proc, log_path


def test_ailedger_up_exits_non_zero_when_its_embedded_server_dies(
    home: Home, tmp_path: Path
) -> None:
    proc, log_path = _ailedger_up(home, tmp_path, "notary up:")
    try:
        (ports,) = home.nats_dir.glob("nats-server_*.ports")
        server_pid = int(ports.stem.rsplit("_", 1)[1])
        os.kill(server_pid, signal.SIGKILL)  # the server this test's `ailedger up` started
        status = proc.wait(30)
        text = log_path.read_text()
        assert status == 3, text
        assert "error: the embedded nats-server exited" in text and "[part_failed]" in text
        assert "every part stopped" in text and "notary stopped" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ailedger_up_runs_each_part_in_its_own_process_and_stops_all_when_one_dies(
    home: Home, tmp_path: Path
) -> None:
    proc, log_path = _ailedger_up(home, tmp_path, "all parts up")
    try:
        text = log_path.read_text()
        pids = {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+) +\| \w+(?:-server)? up: .*?\(pid (\d+)\)", text, re.M)
        }
        # the home's trust policy needs no witness here: four parts, five processes
        assert sorted(pids) == ["nats", "notary", "projector", "web"], text
        assert len(set(pids.values()) | {proc.pid}) == 5, pids
        os.kill(pids["notary"], signal.SIGKILL)
        status = proc.wait(60)
        text = log_path.read_text()
        assert status == 3, text
        assert "error: notary exited with status -9; every part stopped" in text, text
        assert "[part_failed]" in text
        for part in ("projector", "web"):
            assert f"{part} stopped cleanly" in text, text
        assert "nats-server stopped" in text
        for part, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists() or part == "notary", part
        assert not home.url_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_ailedger_up_takes_its_parts_with_it(home: Home, tmp_path: Path) -> None:
    proc, log_path = _ailedger_up(home, tmp_path, "all parts up")
    try:
        pids = [
            int(m.group(1))
            for m in re.finditer(
                r"^\w+ +\| \w+(?:-server)? up: .*?\(pid (\d+)\)", log_path.read_text(), re.M
            )
        ]
        assert len(pids) == 4, log_path.read_text()
    finally:
        proc.kill()  # SIGKILL: no chance to stop anything itself
        proc.wait()
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.1)
    for pid in alive:  # do not leave them behind, whatever the verdict
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "parts outlived their killed supervisor"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- quotas -------------------------------------------------------------------------


async def test_a_flood_from_one_actor_is_capped_and_others_get_receipts(
    nats_server: EmbeddedNats, home: Home
) -> None:
    """While the notary is away, one actor floods its intake subject: the server takes
    INTAKE_MAX_PER_SUBJECT of them and refuses the rest; another actor's submission
    is accepted meanwhile and, once the notary is back, waits behind at most that
    backlog."""
    url = nats_server.url
    async with running_notary(url, home) as h:
        bank_key, _ = await h.enrol("bank", ["owner"])
        clinic_key, clinic = await h.enrol("clinic", ["owner"])
        await h.register(clinic, "triage")
    flooder = await LedgerClient.connect(url, bank_key, trust=home.trust())
    try:
        js = flooder.nc.jetstream(timeout=5)
        accepted = refused = 0
        for _ in range(INTAKE_MAX_PER_SUBJECT + 200):
            try:
                await js.publish("intake.bank.VersionDeployed", b"{}")
                accepted += 1
            except ServiceUnavailableError as e:
                assert "maximum messages per subject exceeded" in str(e.description)
                refused += 1
        assert (accepted, refused) == (INTAKE_MAX_PER_SUBJECT, 200)
    finally:
        await flooder.close()
    nc = await connect(url)
    try:
        backlog = await last_sequence(nc, INTAKE)
    finally:
        await nc.close()
    async with running_notary(url, home) as h:
        clinic = await h.client(clinic_key)
        started = time.monotonic()
        fields = {
            "subject": "system/triage",
            "version": "2.0",
            "artifact_sha256": "ab" * 32,
        }
        receipt = await clinic.submit(clinic.event(ev.VersionDeployed, **fields), timeout=60)
        waited = time.monotonic() - started
        assert receipt.event_id
        rejected = await wait_rejected(url, INTAKE_MAX_PER_SUBJECT)
        assert len(rejected) == INTAKE_MAX_PER_SUBJECT  # the flood, each kept once
        assert {m.subject for m in rejected} == {"rejected.bank"}
        # ahead of the clinic's submission: no more than the flooder's quota
        assert backlog <= INTAKE_MAX_PER_SUBJECT + 10, backlog
        assert waited < 30, waited


async def test_the_projector_exits_when_its_connection_is_closed_for_good(
    ledger: Harness, tmp_path: Path
) -> None:
    (tmp_path / "projector").mkdir()
    state_env, view_env = store_envs(tmp_path / "projector")
    nc = await connect(ledger.url, forever=True)
    projector = Projector(
        nc, LedgerState(state_env, trust=ledger.home.trust()), open_view(view_env)
    )
    try:
        await projector.catch_up()
        await nc.close()  # as nats-py does on some server errors
        with pytest.raises(NatsUnreachable, match="closed"):
            await asyncio.wait_for(projector.follow(asyncio.Event()), 10)
    finally:
        projector.close()
