"""Read-only investigation (issue 12, item 1): with the notary stopped, `ailedger get`,
`search`, `due`, `status`, `timeline`, `log` and `prove` answer from the read model
and LEDGER with the home's read-only `_reader` identity; a write is refused; with the
notary up again nothing has changed. Against a real nats-server and a real notary."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.bus import investigate, proofs
from ledger.bus.auth import READER
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import CHECKPOINT_SUBJECT, CHECKPOINTS, CREDS_ENV, connect
from ledger.formats.checkpoint import parse_tlog_proof
from ledger.formats.entry import Entry
from ledger.formats.keys import save_key
from ledger.formats.merkle import leaf_hash, verify_inclusion
from ledger.formats.timeutil import format_time
from ledger.formats.tree import TreeStore
from ledger.law import events as ev
from ledger.law.admission import key_fingerprint
from ledger.state.persistence import store_envs
from ledger.views.store import open_view, writer_active
from tests.conftest import (
    Harness,
    authorized_server,
    bus_admin_connection,
    running_notary,
    serving,
)
from tests.test_cli_conventions import cli

SERIOUS_HOURS = 4  # the default rulebook's preventive_measure_hours_serious


def _env(tmp_path: Path) -> dict[str, str]:
    """The environment of an investigator's commands: no bus identity but the home's
    reader (the tests' superuser credentials are taken away)."""
    env = {**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for name in ("AILEDGER_HOME", "AILEDGER_NATS_URL", CREDS_ENV):
        env.pop(name, None)
    return env


class Scenario:
    """What the notary integrated: the entries' indexes by what they are."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.bank_key = ""
        self.aware = datetime.now(UTC)


async def _record(url: str, home: Home, tmp_path: Path) -> Scenario:
    """Two systems of a bank: scorer (classified, in operation, a serious incident an
    hour ago: its preventive measure due within 4 h) and bot (in operation without
    a risk classification: R1 overdue); then a checkpoint over all of it."""
    s = Scenario()
    async with running_notary(url, home) as ledger:
        key, bank = await ledger.enrol("bank", ["owner"])
        save_key(key, tmp_path / "bank.pem")
        s.bank_key = key_fingerprint(key.public_key_b64)

        async def submit(name: str, event: Any) -> None:
            s.index[name] = (await bank.submit(event)).index

        await ledger.register(bank, "scorer")
        await ledger.register(bank, "bot")
        await submit(
            "classified",
            bank.event(
                ev.RiskClassified,
                subject="system/scorer",
                risk_level="minimal",
                autonomy="low",
                critical_ict=False,
                rationale="scores nothing of consequence",
            ),
        )
        for system in ("scorer", "bot"):
            await submit(
                f"operating {system}",
                bank.event(
                    ev.OperationStatusChanged,
                    subject=f"system/{system}",
                    status="in_operation",
                    reason="launched",
                ),
            )
        s.aware = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        await submit(
            "incident",
            bank.event(
                ev.IncidentReported,
                subject="system/scorer",
                incident_id="inc-1",
                occurred_at=s.aware - timedelta(minutes=5),
                aware_at=s.aware,
                harm_category="property_environment",
                severity="serious",
                affected_count=3,
                description="wrong scores for three applicants",
            ),
        )
        assert await ledger.notary.checkpoint() is not None
    return s


async def _json_lines(*args: str, cwd: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = await cli(*args, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_investigation_without_the_notary(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    s = await _record(nats_server.url, home, tmp_path)
    env = _env(tmp_path)
    where = ("--home", str(home.path), "--nats", nats_server.url)

    # The notary is down: its health request goes unanswered.
    doctor = await cli("doctor", *where, "--timeout", "1", cwd=tmp_path, env=env)
    assert doctor.returncode == 3, doctor.stdout + doctor.stderr

    log = await _json_lines("log", *where, "--json", cwd=tmp_path, env=env)
    entries = [r for r in log if r["type"] != "HeadsLeaf"]
    assert [r["index"] for r in log] == list(range(len(log)))
    bank_rows = [r["index"] for r in entries if r["signer"] == "bank"]
    assert s.index["incident"] in bank_rows

    # get: the incident decoded, its signer's key, its seal, its proof verified
    got = await cli("get", str(s.index["incident"]), *where, "--json", cwd=tmp_path, env=env)
    assert got.returncode == 0, got.stderr
    detail = json.loads(got.stdout)
    assert detail["index"] == s.index["incident"]
    assert (detail["type"], detail["actor"], detail["subject"]) == (
        "IncidentReported",
        "bank",
        "system/scorer",
    )
    assert detail["payload"]["incident_id"] == "inc-1"
    assert detail["prev"] == s.index["operating scorer"]
    signer = detail["signer"]
    assert signer["key_fingerprint"] == s.bank_key
    assert signer["key_status"] == "valid" and signer["verification"] == "verified"
    enrolment = next(r["index"] for r in entries if r["subject"] == "actor/bank")
    assert [k["index"] for k in signer["key_history"]] == [enrolment]
    raw = base64.b64decode(detail["entry"])
    assert Entry.parse(raw).index == s.index["incident"]
    assert base64.b64decode(detail["leaf_hash"]) == leaf_hash(raw)
    seal = detail["seal"]
    assert seal["first_index"] <= s.index["incident"] <= seal["last_index"]
    assert seal["root_matches_tree"] is True
    inclusion = detail["inclusion"]
    assert inclusion["verified"] is True
    size = inclusion["checkpoint"]["size"]
    assert size == len(log)  # the checkpoint covers every leaf, its heads leaf last
    proof = [base64.b64decode(h) for h in inclusion["proof"]]
    root = base64.b64decode(inclusion["checkpoint"]["root"])
    verify_inclusion(leaf_hash(raw), s.index["incident"], size, proof, root)

    # prove: the same proof, in C2SP form
    proved = await cli("prove", str(s.index["incident"]), *where, cwd=tmp_path, env=env)
    assert proved.returncode == 0, proved.stderr
    assert proved.stdout == inclusion["tlog_proof"]
    tlog = parse_tlog_proof(proved.stdout.encode())
    assert tlog.index == s.index["incident"]

    # the human form: one table, the proof verified
    table = await cli("get", str(s.index["incident"]), *where, cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "proof verified" in table.stdout and "inc-1" in table.stdout

    # search, in the manner of rekor-cli
    by_actor = await _json_lines(
        "search", "--actor", "bank", *where, "--json", cwd=tmp_path, env=env
    )
    assert [r["index"] for r in by_actor] == bank_rows
    by_key = await _json_lines(
        "search", "--key", s.bank_key, *where, "--json", cwd=tmp_path, env=env
    )
    assert [r["index"] for r in by_key] == bank_rows
    scorer = [r["index"] for r in entries if r["subject"] == "system/scorer"]
    by_subject = await _json_lines(
        "search", "--subject", "scorer", *where, "--json", cwd=tmp_path, env=env
    )
    assert [r["index"] for r in by_subject] == scorer
    by_type = await _json_lines(
        "search", "--type", "IncidentReported", *where, "--json", cwd=tmp_path, env=env
    )
    assert [r["index"] for r in by_type] == [s.index["incident"]]
    both = await _json_lines(
        "search", "--actor", "bank", "--type", "OperationStatusChanged", *where, "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert [r["index"] for r in both] == [s.index["operating scorer"], s.index["operating bot"]]
    # pages: --limit, then --after the last index shown
    first = await cli(
        "search", "--actor", "bank", "--limit", "2", *where, "--json", cwd=tmp_path, env=env
    )
    assert [json.loads(x)["index"] for x in first.stdout.splitlines()] == bank_rows[:2]
    assert f"more entries: --after {bank_rows[1]}" in first.stderr
    rest = await _json_lines(
        "search", "--actor", "bank", "--after", str(bank_rows[1]), *where, "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert [r["index"] for r in rest] == bank_rows[2:]
    nothing = await cli("search", *where, cwd=tmp_path, env=env)
    assert nothing.returncode == 2 and "[bad_query]" in nothing.stderr

    # due: R1 of bot overdue; scorer's preventive measure due 4 h after awareness
    deadline = format_time(s.aware + timedelta(hours=SERIOUS_HOURS))
    due = await cli("due", "--within", "48h", *where, "--json", cwd=tmp_path, env=env)
    assert due.returncode == 1, due.stderr  # something overdue
    report = json.loads(due.stdout)
    items = [(i["system"], i["state"], i["rule"], i["deadline"]) for i in report["items"]]
    bot_r1 = ("bot", "overdue", "R1")
    assert [i[:3] for i in items] == [bot_r1, ("scorer", "due", "R5")]
    assert items[1][3] == deadline
    assert report["items"][1]["evidence"] == [s.index["incident"]]
    assert (report["overdue"], report["due"]) == (1, 1)
    soon = await cli("due", "--system", "scorer", "--within", "48h", *where, cwd=tmp_path, env=env)
    assert soon.returncode == 4, soon.stderr  # due within the window, nothing overdue
    assert "R5" in soon.stdout and "0 overdue, 1 due within 48h" in soon.stdout
    later = await cli("due", "--system", "scorer", "--within", "2h", *where, cwd=tmp_path, env=env)
    assert later.returncode == 0, later.stdout + later.stderr  # the deadline is 3 h away
    assert "0 overdue, 0 due within 2h" in later.stdout
    bad = await cli("due", "--within", "soon", *where, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "[bad_query]" in bad.stderr

    # the evidence bundle of a system, exported as the reader, verifies offline
    nc = await connect(nats_server.url, name="investigator", **home.bus_identity(READER))
    tree = TreeStore(home.tree_path)
    try:
        bundle = await investigate.export_bundle(nc, tree, home.trust(), system="bot")
    finally:
        tree.close()
        await nc.close()
    (tmp_path / "bot.json").write_bytes(bundle)
    assert [v["verdict"] for v in json.loads(bundle)["claim"]["verdicts"]] == ["non_compliant"]
    trust = str(home.trust_path)
    verified = await cli("verify", "bot.json", "--trust", trust, "--json", cwd=tmp_path, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["size"] == size

    # status and timeline, as before
    status = await _json_lines("status", *where, "--json", cwd=tmp_path, env=env)
    verdicts = {v["system"]: v["verdict"] for v in status}
    assert verdicts == {"bot": "non_compliant", "scorer": "at_risk"}
    # as of the checkpoint: its last entry before its heads leaf
    at_checkpoint = await _json_lines(
        "status", *where, "--checkpoint", str(size), "--json", cwd=tmp_path, env=env
    )
    assert {v["as_of_index"] for v in at_checkpoint} == {size - 2} == {s.index["incident"]}
    assert {v["system"]: v["verdict"] for v in at_checkpoint} == verdicts
    huge = await cli("status", *where, "--at-index", str(2**64), cwd=tmp_path, env=env)
    assert huge.returncode == 2 and "indexes are 0 to" in huge.stderr, huge.stderr
    unsigned = await cli("status", *where, "--checkpoint", "3", cwd=tmp_path, env=env)
    assert unsigned.returncode == 2 and "no checkpoint of size 3 [proof_unavailable]" in (
        unsigned.stderr
    )
    timeline = await _json_lines("timeline", "scorer", *where, "--json", cwd=tmp_path, env=env)
    assert [r["index"] for r in timeline] == scorer
    # the timeline as of a checkpoint or an index, from the read model the CLI keeps
    view = open_view(store_envs(home.state_dir)[1])
    items = investigate.timeline(view, "scorer", checkpoint_size=size)
    assert [i.index for i in items] == scorer
    operating = s.index["operating scorer"]
    earlier = investigate.timeline(view, "scorer", at_index=operating)
    assert [i.index for i in earlier] == [i for i in scorer if i <= operating]
    assert [i.verification for i in earlier] == ["verified"] * len(earlier)
    assert {r["verification"] for r in timeline} == {"verified"}

    # beyond the log, a heads leaf: one line with a reason, no traceback
    beyond = await cli("get", str(len(log) + 5), *where, cwd=tmp_path, env=env)
    assert beyond.returncode == 2
    newest = max(r["index"] for r in entries)
    assert beyond.stderr.startswith(
        f"error: no entry {len(log) + 5}: the newest entry about a subject is {newest} "
    )
    assert beyond.stderr.rstrip().endswith("[not_found]") and "Traceback" not in beyond.stderr
    huge = await cli("get", str(2**64), *where, cwd=tmp_path, env=env)
    assert huge.returncode == 2 and f"indexes end at {2**63 - 1} [not_found]" in huge.stderr
    heads = await cli("get", str(size - 1), *where, cwd=tmp_path, env=env)
    assert heads.returncode == 2 and f"index {size - 1} is a heads leaf" in heads.stderr
    negative = await cli("get", *where, "--", "-1", cwd=tmp_path, env=env)
    assert negative.returncode == 2 and "greater than or equal to 0" in negative.stderr

    # a write is refused: the reader cannot submit, whatever the key
    reader_creds = home.identities().issue("_reader", tmp_path / "reader.creds")
    doc = json.loads(
        (await cli("template", "VersionDeployed", "--actor", "bank", cwd=tmp_path)).stdout
    )
    doc["subject"] = "system/scorer"
    (tmp_path / "deploy.json").write_text(json.dumps(doc))
    refused = await cli(
        "submit", "deploy.json", "--key", "bank.pem", "--creds", str(reader_creds),
        "--timeout", "5", *where, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: the NATS server refused these credentials: ")
    assert refused.stderr.rstrip().endswith("[permission_denied]")
    assert refused.stderr.count("\n") == 1, refused.stderr

    # the notary up again: nothing changed
    async with running_notary(nats_server.url, home):
        again = await _json_lines("log", *where, "--json", cwd=tmp_path, env=env)
        assert again[: len(log)] == log
        assert [r for r in again[len(log) :] if r["type"] != "HeadsLeaf"] == []
        still = await _json_lines("status", *where, "--json", cwd=tmp_path, env=env)
        assert {v["system"]: v["verdict"] for v in still} == verdicts
        found = await _json_lines(
            "search", "--actor", "bank", *where, "--json", cwd=tmp_path, env=env
        )
        assert [r["index"] for r in found] == bank_rows


async def test_a_stopped_embedded_home_is_read_from_its_store(home: Home, tmp_path: Path) -> None:
    """Nothing runs (no `ailedger up`, as after the demo): a reading command starts the
    home's own nats-server for its duration, reads as the reader, and stops it."""
    with serving(authorized_server(home.nats_dir, home), home) as server:
        async with running_notary(server.url, home) as ledger:
            _, bank = await ledger.enrol("bank", ["owner"])
            await ledger.register(bank, "scorer")
            assert await ledger.notary.checkpoint() is not None
    assert EmbeddedNats.attach(home.nats_dir) is None
    env = _env(tmp_path)
    here = ("--home", str(home.path))
    status = await cli("status", *here, "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "the home's nats-server was not running: started for this command" in status.stderr
    (verdict,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert (verdict["system"], verdict["verdict"]) == ("scorer", "compliant")
    found = await _json_lines("search", "--actor", "bank", *here, "--json", cwd=tmp_path, env=env)
    (registered,) = found
    assert registered["type"] == "SystemRegistered"
    got = await _json_lines("get", str(registered["index"]), *here, "--json", cwd=tmp_path, env=env)
    assert got[0]["inclusion"]["verified"] is True
    assert EmbeddedNats.attach(home.nats_dir) is None  # stopped after each command
    # a configured server is never started: it is named when it does not answer
    home.save_config(nats=server.url)
    down = await cli("status", *here, cwd=tmp_path, env=env)
    assert down.returncode == 3 and "[nats_unreachable]" in down.stderr


@pytest.mark.parametrize("foreign", [0, 3, proofs.NEWEST_LOOKBACK + 5])
async def test_the_newest_checkpoint_is_found_from_the_end(ledger: Harness, foreign: int) -> None:
    """The newest checkpoint signed by a log key, behind foreign notes appended after
    it (a compromised bus): found reading back from the end, or, past the lookback,
    in one ordered read; a size asked for is found in order."""
    _, bank = await ledger.enrol("bank", ["owner"])
    first = await ledger.notary.checkpoint()
    await ledger.register(bank, "scorer")
    newest = await ledger.notary.checkpoint()
    assert first is not None and newest is not None
    trust = ledger.home.trust()
    async with bus_admin_connection(ledger) as bus:
        for i in range(foreign):  # an unsigned copy, and text that is no note at all
            body = newest.partition(b"\n\n")[0]
            forged = body + b"\n\n\xe2\x80\x94 forged " + base64.b64encode(bytes(68)) + b"\n"
            junk = forged if i % 2 else b"junk\n"
            await bus.jetstream().publish(CHECKPOINT_SUBJECT, junk, stream=CHECKPOINTS)
        found = await investigate.newest_checkpoint(bus, trust)
        assert found.note.encode() == newest
        older = proofs.SignedCheckpoint.parse(first).checkpoint.size
        assert (await investigate.newest_checkpoint(bus, trust, older)).note.encode() == first
        with pytest.raises(proofs.ProofUnavailable, match="no checkpoint of size 1"):
            await investigate.newest_checkpoint(bus, trust, 1)


async def test_a_running_projector_is_the_read_models_only_writer(
    nats_server: EmbeddedNats, home: Home, tmp_path: Path
) -> None:
    """While `ailedger project` (a part of `ailedger up`) holds the read model's writer
    lock, reading commands read it as it stands, never catching up themselves, and
    `rebuild` is refused; once it stops, a command catches up itself."""
    env = _env(tmp_path)
    where = ("--home", str(home.path), "--nats", nats_server.url)

    async def registered() -> list[int]:
        found = await _json_lines(
            "search", "--type", "SystemRegistered", *where, "--json", cwd=tmp_path, env=env
        )
        return [r["index"] for r in found]

    async with running_notary(nats_server.url, home) as ledger:
        _, bank = await ledger.enrol("bank", ["owner"])
        await ledger.register(bank, "scorer")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ailedger", "project", *where,
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            up = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert up.startswith(b"projector up:"), up
            assert writer_active(home.state_dir)
            first = await registered()
            assert len(first) == 1
            rebuilt = await cli("rebuild", *where, cwd=tmp_path, env=env)
            assert rebuilt.returncode == 2 and "a projector is writing the read model" in (
                rebuilt.stderr
            )
            os.kill(proc.pid, signal.SIGSTOP)  # it holds the lock, and follows nothing
            try:
                await ledger.register(bank, "bot")
                assert await registered() == first  # the reader did not catch up itself
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            for _ in range(100):  # the projector follows: the new entry shows
                if len(now := await registered()) == 2:
                    break
                await asyncio.sleep(0.2)
            assert now[0] == first[0]
        finally:
            proc.terminate()
            await proc.wait()
        assert not writer_active(home.state_dir)
        await ledger.register(bank, "third")
        assert len(await registered()) == 3  # no writer: the command caught up itself


@pytest.mark.parametrize("text", ["48h", "7d", "30m", "2w", "90s"])
def test_windows(text: str) -> None:
    seconds = {"h": 3600, "d": 86400, "m": 60, "w": 604800, "s": 1}[text[-1]]
    assert investigate.parse_window(text) == timedelta(seconds=int(text[:-1]) * seconds)


@pytest.mark.parametrize(
    "text", ["", "h", "48", "-1h", "1.5h", "48 h", "2y", "\u0663h", "99999999999999999999w"]
)
def test_what_is_not_a_window_is_refused(text: str) -> None:
    with pytest.raises(investigate.BadQuery, match="not a window"):
        investigate.parse_window(text)
