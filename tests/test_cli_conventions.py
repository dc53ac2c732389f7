"""CLI conventions (as cosign/rekor-cli and the nats CLI): --version, template, schema,
sign, submit of pre-signed envelopes, --json, remembered settings, times in UTC+5,
pipes, and a verifier that always recomputes a claim. Against real nats-servers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ailedger import resources
from ailedger.cli import app
from ledger.bus.home import Home, init_home
from ledger.bus.logview import HEADS_ROW_SIGNER, HEADS_ROW_TYPE, LogRow, read_log
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import CREDS_ENV, connect
from ledger.formats.keys import generate, save_key
from ledger.formats.timeutil import ClockError, format_moment, format_time, parse_moment
from ledger.law import events as ev
from tests.conftest import ORIGIN, Harness, running_notary

README = Path(__file__).resolve().parent.parent / "README.md"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for name in ("AILEDGER_HOME", "AILEDGER_NATS_URL"):
        env.pop(name, None)
    env.update(extra)
    return env


async def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m ailedger ARGS`` without blocking the loop the in-process notary runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ailedger",
        *args,
        cwd=cwd,
        env=env or _env(cwd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ailedger", *args],
        cwd=cwd,
        env=env or _env(cwd),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- times ------------------------------------------------------------------------------


def test_a_date_is_the_end_of_that_day_in_kazakhstan() -> None:
    assert format_time(parse_moment("2026-08-31")) == "2026-08-31T18:59:59.999999Z"
    # an entry integrated at 23:59:59.999999 UTC+5 counts, one a microsecond later does not
    end = parse_moment("2026-08-31")
    assert end == datetime(2026, 8, 31, 23, 59, 59, 999999, tzinfo=UTC) - timedelta(hours=5)


def test_a_time_without_zone_is_utc_plus_5_and_zones_are_taken_as_given() -> None:
    noon = datetime(2026, 8, 31, 7, tzinfo=UTC)
    assert parse_moment("2026-08-31T12:00") == noon
    assert parse_moment("2026-08-31 12:00:00") == noon
    assert parse_moment("2026-08-31T07:00:00Z") == noon
    assert parse_moment("2026-08-31T07:00:00z") == noon
    assert parse_moment("2026-08-31T12:00:00+05:00") == noon
    assert parse_moment("2026-08-31T10:00:00+03:00") == noon
    assert parse_moment("2026-08-31T07:00:00.25Z") == noon + timedelta(microseconds=250000)
    assert parse_moment("2026-08-31T12:00").tzinfo == UTC


@pytest.mark.parametrize(
    "text", ["", "x", "2026-13-01", "20260831", "2026-08-31T25:00", "31.08.2026"]
)
def test_what_is_not_a_moment_is_refused(text: str) -> None:
    with pytest.raises(ClockError, match="not a date or time"):
        parse_moment(text)


def test_moments_print_in_utc_and_utc_plus_5() -> None:
    assert format_moment(parse_moment("2026-08-31")) == (
        "2026-08-31T18:59:59.999999Z (2026-08-31 23:59:59 UTC+5)"
    )
    assert format_moment(datetime(2026, 1, 1, 20, tzinfo=UTC)) == (
        "2026-01-01T20:00:00Z (2026-01-02 01:00:00 UTC+5)"
    )


# --- commands that need no server ----------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert re.fullmatch(r"ailedger \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_template_prints_a_valid_fresh_payload(tmp_path: Path) -> None:
    for event_type in ("IncidentReported", "SystemRegistered", "PolicyAdopted"):
        result = run("template", event_type, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        example = json.loads(resources.example(event_type))
        assert doc["type"] == event_type and doc["event_id"] != example["event_id"]
        signed = datetime.fromisoformat(doc["signed_at"].replace("Z", "+00:00"))
        assert abs(datetime.now(UTC) - signed) < timedelta(minutes=1)
        ev.decode_event(json.dumps(doc).encode())  # valid against the catalogue
    bank = json.loads(run("template", "SystemRegistered", "--actor", "bank2", cwd=tmp_path).stdout)
    assert bank["actor"] == "bank2"
    unknown = run("template", "IncidentReport", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no event type 'IncidentReport'; valid types: ActorEnrolled," in unknown.stderr
    assert "IncidentReported" in unknown.stderr


def test_schema_lists_and_prints_the_published_schemas(tmp_path: Path) -> None:
    names = run("schema", cwd=tmp_path)
    assert names.returncode == 0
    assert names.stdout.splitlines() == resources.schema_names()
    bundle = run("schema", "bundle", cwd=tmp_path)
    assert json.loads(bundle.stdout) == json.loads(resources.schema("bundle"))
    by_type = run("schema", "IncidentReported", cwd=tmp_path)
    assert json.loads(by_type.stdout) == json.loads(resources.schema("events/IncidentReported"))
    missing = run("schema", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no schema 'nope'" in missing.stderr


def test_sign_writes_the_envelope_beside_the_payload(tmp_path: Path) -> None:
    key = generate("bank")
    save_key(key, tmp_path / "bank.pem")
    payload = json.loads(resources.example("SystemRegistered"))
    for field in ("v", "event_id", "actor", "signed_at"):
        del payload[field]
    (tmp_path / "register.json").write_text(json.dumps(payload))
    result = run("sign", "register.json", "--key", "bank.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    envelope = (tmp_path / "register.envelope.json").read_bytes()
    assert result.stdout.startswith("wrote register.envelope.json: SystemRegistered by bank")
    from ledger.formats.dsse import parse_envelope

    parsed = parse_envelope(envelope)
    assert parsed.verify(key.public_key)
    event = ev.decode_event(parsed.payload)
    assert event.actor == "bank" and event.v == 1
    assert abs(datetime.now(UTC) - event.signed_at) < timedelta(minutes=1)
    out = run("sign", "register.json", "--key", "bank.pem", "-o", "x.json", cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / "x.json").exists()
    # an envelope is not signed twice by one key; another key adds its signature
    again = run("sign", "register.envelope.json", "--key", "bank.pem", cwd=tmp_path)
    assert again.returncode == 2 and "already signed this envelope" in again.stderr
    second = generate("bank")
    save_key(second, tmp_path / "bank2.pem")
    cosigned = run("sign", "register.envelope.json", "--key", "bank2.pem", cwd=tmp_path)
    assert cosigned.returncode == 0, cosigned.stderr
    assert "signature 2 added, by bank/" in cosigned.stdout
    both = parse_envelope((tmp_path / "register.envelope.json").read_bytes())
    assert both.payload == parsed.payload and len(both.signatures) == 2
    assert both.signed_by([key.public_key, second.public_key, generate("x").public_key]) == {
        key.public_key,
        second.public_key,
    }
    # another actor's payload is not signed with this key
    (tmp_path / "other.json").write_text(json.dumps({**payload, "actor": "insurer"}))
    other = run("sign", "other.json", "--key", "bank.pem", cwd=tmp_path)
    assert other.returncode == 2 and "is by actor 'insurer'" in other.stderr


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ('{"type": "SystemRegistered", "subject": "system/x"}', "--key", "is not a valid event"),
        ("{not json", "--key", "is not JSON"),
        (
            '{"payloadType": "x", "payload": "", "signatures": []}',
            "",
            "not a valid signed envelope",
        ),
        ('{"type": "SystemRegistered", "subject": "system/x"}', "", "is a payload, not a signed"),
    ],
)
def test_submit_checks_its_input_before_any_network_io(
    tmp_path: Path, content: str, extra: str, message: str
) -> None:
    home = init_home(tmp_path / "home", origin=ORIGIN)
    (tmp_path / "in.json").write_text(content)
    args = ["submit", "in.json", "--home", str(home.path), "--nats", "nats://127.0.0.1:9"]
    if extra:
        args += ["--key", str(home.regulator_key_path)]
    started = time.monotonic()
    result = CliRunner().invoke(app, args, catch_exceptions=False, env=_env(tmp_path))
    assert time.monotonic() - started < 0.5
    assert result.exit_code == 2
    # a subprocess too: one line, no connection attempt (nothing listens on port 9)
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "connect" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_closed_pipe_is_not_a_failure(tmp_path: Path) -> None:
    for args in (("schema", "bundle"), ("template", "LedgerGenesis")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ailedger", *args],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader went away before anything was written
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 0, err
        assert err == "", err


# --- against a running ledger ------------------------------------------------------------


async def _bank(ledger: Harness, tmp_path: Path) -> Path:
    key, bank = await ledger.enrol("bank", ["owner"])
    save_key(key, tmp_path / "bank.pem")
    await ledger.register(bank, "credit-scorer")
    return tmp_path / "bank.pem"


async def _entries(ledger: Harness) -> list[LogRow]:
    """LEDGER's entries in index order, read through the seals, without the heads
    leaves the notary appends before each checkpoint (notary rows of their own:
    whether one falls between two submissions depends on the checkpoint timer)."""
    nc = await connect(ledger.url)
    try:
        rows = await read_log(nc, trust=ledger.home.trust())
    finally:
        await nc.close()
    assert [r.index for r in rows] == list(range(len(rows)))
    return [r for r in rows if (r.signer, r.type) != (HEADS_ROW_SIGNER, HEADS_ROW_TYPE)]


async def test_a_presigned_envelope_is_submitted_without_the_key(
    ledger: Harness, tmp_path: Path
) -> None:
    await _bank(ledger, tmp_path)
    where = ("--home", str(ledger.home.path), "--nats", ledger.url)
    doc = json.loads(
        (await cli("template", "VersionDeployed", "--actor", "bank", cwd=tmp_path)).stdout
    )
    doc["subject"] = "system/credit-scorer"
    (tmp_path / "deploy.json").write_text(json.dumps(doc))
    signed = await cli("sign", "deploy.json", "--key", "bank.pem", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    sent = await cli("submit", "deploy.envelope.json", *where, "--json", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    (receipt,) = [json.loads(line) for line in sent.stdout.splitlines()]
    assert receipt["status"] == "accepted" and receipt["event_id"] == doc["event_id"]
    assert receipt["type"] == "VersionDeployed"  # its index: checked against the log below
    assert receipt["receipt"].startswith("ailedger/receipt/v2\n")
    # a rejected envelope: exit 1, the reason in the one JSON object
    rejected = await cli("submit", "deploy.envelope.json", *where, "--json", cwd=tmp_path)
    assert rejected.returncode == 0  # the same envelope again: the same receipt
    assert json.loads(rejected.stdout)["index"] == receipt["index"]
    doc["event_id"] = ev.new_event_id()
    doc["subject"] = "system/ghost"
    (tmp_path / "ghost.json").write_text(json.dumps(doc))
    ghost = await cli("submit", "ghost.json", "--key", "bank.pem", *where, "--json", cwd=tmp_path)
    assert ghost.returncode == 1
    assert json.loads(ghost.stdout)["code"] == "system_not_registered"
    ghost_envelope = (tmp_path / "ghost.envelope.json").read_bytes()  # saved before sending

    log = await cli("log", *where, "--json", cwd=tmp_path)
    rows = [json.loads(line) for line in log.stdout.splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    # the notary's heads leaves (one before each checkpoint) are rows of their own
    heads = [r for r in rows if r["type"] == HEADS_ROW_TYPE]
    for r in heads:
        assert r["signer"] == HEADS_ROW_SIGNER and r["payload"]["format"] == "ailedger/heads/v1"
        assert r["payload"]["size"] == r["index"]  # it covers the leaves before it
    entries = [r for r in rows if r not in heads]
    assert [r["type"] for r in entries] == [
        "LedgerGenesis", "ActorEnrolled", "SystemRegistered", "VersionDeployed"
    ]  # fmt: skip
    deployed = entries[3]
    assert (
        receipt["index"]
        == deployed["index"]
        == 3 + len([r for r in heads if r["index"] < deployed["index"]])
    )
    assert deployed["payload"]["event_id"] == receipt["event_id"]
    assert deployed["payload"]["version"] == doc["version"]
    refused = await cli("log", *where, "--rejected", "--json", cwd=tmp_path)
    (row,) = [json.loads(line) for line in refused.stdout.splitlines()]
    assert row["code"] == "system_not_registered"
    assert base64.b64decode(row["bytes"]) == ghost_envelope


async def test_a_submission_that_times_out_is_retried_with_the_same_event_id(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    payload = json.loads(resources.example("ActorEnrolled"))
    for field in ("v", "event_id", "actor", "signed_at"):
        del payload[field]
    payload["public_keys"] = [generate("bank").public_key_b64]
    (tmp_path / "enrol.json").write_text(json.dumps(payload))
    where = ("--home", str(home.path), "--nats", nats_server.url)
    key = str(home.regulator_key_path)
    # no notary yet: nobody answers
    late = await cli("submit", "enrol.json", "--key", key, *where, "--timeout", "1", cwd=tmp_path)
    assert late.returncode == 3, late.stderr
    saved = tmp_path / "enrol.envelope.json"
    assert saved.exists()
    assert "retry with the same event id, `ailedger submit enrol.envelope.json`" in late.stderr
    event_id = ev.decode_event(_payload(saved)).event_id
    async with running_notary(nats_server.url, home):
        again = await cli("submit", str(saved), *where, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["event_id"] == event_id


def _payload(envelope: Path) -> bytes:
    return base64.b64decode(json.loads(envelope.read_text())["payload"])


async def test_json_outputs_and_times(ledger: Harness, tmp_path: Path) -> None:
    await _bank(ledger, tmp_path)
    where = ("--home", str(ledger.home.path), "--nats", ledger.url)
    # status: all systems, one object per line; one system, one object
    everything = await cli("status", *where, "--json", cwd=tmp_path)
    assert everything.returncode == 0, everything.stderr
    (verdict,) = [json.loads(line) for line in everything.stdout.splitlines()]
    assert verdict["system"] == "credit-scorer"
    one = await cli("status", "credit-scorer", *where, "--json", cwd=tmp_path)
    assert json.loads(one.stdout)["verdict"] == "compliant"
    # human output: the moment in UTC and UTC+5; a date is the end of that day in UTC+5
    today = datetime.now(UTC) + timedelta(hours=5)
    text = await cli("status", "credit-scorer", *where, "--at", f"{today:%Y-%m-%d}", cwd=tmp_path)
    assert f"{today:%Y-%m-%d} 23:59:59 UTC+5)" in text.stdout, text.stdout + text.stderr
    assert "T18:59:59.999999Z (" in text.stdout
    before = await cli("status", *where, "--at", "2020-01-01", cwd=tmp_path)
    assert before.returncode == 2
    assert "the ledger starts at " in before.stderr
    assert "nothing is recorded before it" in before.stderr and "genesis" not in before.stderr
    timeline = await cli("timeline", "credit-scorer", *where, "--json", cwd=tmp_path)
    (row,) = [json.loads(line) for line in timeline.stdout.splitlines()]
    assert row["type"] == "SystemRegistered"
    # export and verify: one object each
    await ledger.notary.checkpoint()
    signed = ledger.notary.latest_checkpoint
    assert signed is not None
    size = signed[0].size
    assert size == 3 + 1  # the 3 entries and the heads leaf sealed before the checkpoint
    exported = await cli(
        "export", "--system", "credit-scorer", "--claim", "-o", "b.json", *where, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads(exported.stdout)
    assert summary == {
        "bundle": "b.json", "entries": 3, "chains": 3, "checkpoint_size": size, "claim": True
    }  # fmt: skip
    trust = str(ledger.home.trust_path)
    verified = await cli("verify", "b.json", "--trust", trust, "--json", cwd=tmp_path)
    report = json.loads(verified.stdout)
    assert report["verified"] is True and report["size"] == size
    assert "matches the claim" in report["claim"][0]
    # the progress bar is for terminals only
    rebuilt = await cli("rebuild", *where, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    # it counts the LEDGER messages replayed: the entries and the heads leaf
    assert rebuilt.stdout.startswith(f"rebuilt {size} entries"), rebuilt.stdout


async def test_verify_always_recomputes_a_claim(ledger: Harness, tmp_path: Path) -> None:
    await _bank(ledger, tmp_path)
    await ledger.notary.checkpoint()
    where = ("--home", str(ledger.home.path), "--nats", ledger.url)
    exported = await cli(
        "export", "--system", "credit-scorer", "--claim", "-o", "b.json", *where, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    doc["claim"]["verdicts"][0]["verdict"] = "critical"
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    trust = str(ledger.home.trust_path)
    for extra in ((), ("--recompute",)):
        edited = await cli("verify", "edited.json", "--trust", trust, *extra, cwd=tmp_path)
        assert edited.returncode == 1, edited.stdout
        assert "VERIFIED" not in edited.stdout
        assert "FAILED claim: credit-scorer: the bundle claims 'critical'" in edited.stderr
    as_json = await cli("verify", "edited.json", "--trust", trust, "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["check"] == "claim"

    # a trust policy of another ledger: which origin, which key
    other = init_home(tmp_path / "other", origin="other.ailedger.kz/registry")
    wrong = await cli("verify", "b.json", "--trust", str(other.trust_path), cwd=tmp_path)
    assert wrong.returncode == 1
    assert (
        f"the bundle's origin {ORIGIN} is not the trust policy's origin "
        "other.ailedger.kz/registry" in wrong.stderr
    )
    same_origin = init_home(tmp_path / "same", origin=ORIGIN)
    wrong = await cli("verify", "b.json", "--trust", str(same_origin.trust_path), cwd=tmp_path)
    assert wrong.returncode == 1
    signer = ledger.home.trust().log_keys[0].key.split("+")
    assert (
        f"the checkpoint is signed by key {signer[0]}+{signer[1]}, which the trust policy "
        "does not list" in wrong.stderr
    ), wrong.stderr


def test_init_remembers_the_home_and_the_nats_server(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    made = run(
        "init",
        "--home",
        "reg",
        "--origin",
        ORIGIN,
        "--nats",
        nats_server.url,
        # an external server with authorization: its include file, its reload command
        "--auth-file",
        str(nats_server.auth_path),
        "--auth-reload",
        f"kill -HUP {nats_server.pid}",
        cwd=tmp_path,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    config = json.loads((tmp_path / "reg" / "config.json").read_text())
    assert config == {
        "nats": nats_server.url,
        "auth_file": str(nats_server.auth_path),
        "auth_reload": f"kill -HUP {nats_server.pid}",
    }
    # from another directory, no flags: the remembered home and its server
    log = run("log", "--json", cwd=tmp_path / "elsewhere", env=env)
    assert log.returncode == 0, log.stderr
    assert json.loads(log.stdout)["type"] == "LedgerGenesis"
    # AILEDGER_HOME still chooses the home
    via_env = run(
        "log",
        "--json",
        cwd=tmp_path / "elsewhere",
        env={**env, "AILEDGER_HOME": str(tmp_path / "reg")},
    )
    assert json.loads(via_env.stdout)["index"] == 0
    # an external server that does not answer is named, the embedded one never suggested
    Home(tmp_path / "reg").save_config(nats="nats://127.0.0.1:9")
    down = run("log", cwd=tmp_path / "elsewhere", env=env)
    assert down.returncode == 3
    assert "nats://127.0.0.1:9" in down.stderr and "configured" in down.stderr
    assert "ailedger up" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


async def test_the_readme_sdk_example_runs(ledger: Harness, tmp_path: Path) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    await _bank(ledger, tmp_path)
    (tmp_path / ".ailedger").mkdir()
    (tmp_path / ".ailedger" / "trust.json").write_bytes(ledger.home.trust_path.read_bytes())
    (tmp_path / "sdk.py").write_text(block)
    env = {k: v for k, v in os.environ.items() if k != CREDS_ENV}  # only the bank's own creds
    where = ("--home", str(ledger.home.path))
    issued = await cli("creds", "issue", "bank", "-o", "bank.creds", *where, cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    # the pre-signed part: an envelope made by `ailedger sign`
    doc = json.loads(
        (await cli("template", "VersionDeployed", "--actor", "bank", cwd=tmp_path)).stdout
    )
    doc["subject"] = "system/credit-scorer"
    (tmp_path / "measure.json").write_text(json.dumps(doc))
    assert (await cli("sign", "measure.json", "--key", "bank.pem", cwd=tmp_path)).returncode == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "sdk.py", cwd=tmp_path,
        env={**env, "AILEDGER_NATS_URL": ledger.url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    entries = await _entries(ledger)
    assert [r.type for r in entries][3:] == ["IncidentReported", "VersionDeployed"]
    assert lines[0].startswith(f"entry {entries[3].index}, leaf ")
    assert lines[1] == f"entry {entries[4].index} (pre-signed)"
