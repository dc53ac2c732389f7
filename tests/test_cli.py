"""The ``ailedger`` command line, run as a user runs it, in subprocesses."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.bus.home import Home


def ailedger(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ailedger", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        # `ailedger init` remembers its home in the user's config: keep it in the test's
        env={**os.environ, "COLUMNS": "200", "XDG_CONFIG_HOME": str(cwd / ".config")},
    )


def test_demo_plays_the_scenario_and_exits_zero(tmp_path: Path) -> None:
    result = ailedger("demo", "--keep", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "LEDGER: 36 entries and 1 heads leaf (the notary's), index 0 is the genesis" in out
    assert "REJECTED: 10 submissions" in out
    for code in ("not_system_party", "bad_signature", "unknown_actor", "clock_skew"):
        assert code in out
    assert "unexpected" not in out
    assert "45 submissions from 7 actors" in out
    assert "35 accepted with verified receipts, 10 refused with reason codes" in out
    assert "Compliance over time" in out and "non_compliant" in out
    assert "VERIFIED" in out and "recomputed offline: matches the claim" in out
    assert (tmp_path / "demo" / "credit-scorer.bundle.json").exists()


def test_demo_serve_keeps_the_demo_ledger_up_with_the_workbench(tmp_path: Path) -> None:
    import httpx

    workdir = tmp_path / "demo"
    serve = ("demo", "--keep", str(workdir), "--serve", "--web-port", "0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailedger", *serve],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )
    out = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while "all parts up" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, out  # the demo ended instead of serving
            out += line
        assert "VERIFIED" in out and "regulator token (shown once): " in out, out
        token = out.split("regulator token (shown once): ")[1].split()[0]
        url = out.split("all parts up; workbench ")[1].split(";")[0]
        checkpoint = httpx.get(f"{url}/api/v1/checkpoint", timeout=30)
        assert checkpoint.status_code == 200
        assert checkpoint.text.startswith("demo.ailedger.kz/ai-registry\n")
        # the investigator's pages open with the printed token, and not without one
        auth = {"Authorization": f"Bearer {token}"}
        systems = httpx.get(f"{url}/api/v1/systems", headers=auth, timeout=30)
        assert systems.status_code == 200, systems.text
        assert "credit-scorer" in systems.text
        assert httpx.get(f"{url}/api/v1/systems", timeout=30).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + rest
    assert "all parts stopped cleanly" in rest
    assert (workdir / "credit-scorer.bundle.json").exists()


def test_keygen_init_up_submit_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = ailedger("init", str(home), "--origin", "cli.ailedger.kz/test", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "LEDGER index 0" in made.stdout
    assert (home / "trust.json").exists() and (home / "genesis.json").exists()

    up_command = [sys.executable, "-m", "ailedger", "up", "--home", str(home), "--web-port", "0"]
    up = subprocess.Popen(
        # A checkpoint once the three entries below are in: a heads leaf at 3, size 4.
        [*up_command, "--checkpoint-every", "3", "--checkpoint-interval", "3600"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        line = ""
        deadline = time.monotonic() + 30
        while "notary up" not in line and time.monotonic() < deadline:
            line = up.stdout.readline()
        assert "notary up: cli.ailedger.kz/test, 1 entry" in line

        # the regulator enrols a bank whose key was made with keygen
        gen = ailedger("keygen", "bank", "--out", str(tmp_path / "bank.pem"), cwd=tmp_path)
        assert gen.returncode == 0, gen.stderr
        public = gen.stdout.split("public key")[1].split()[0]
        enrol = tmp_path / "enrol.json"
        enrol.write_text(
            json.dumps(
                {
                    "type": "ActorEnrolled",
                    "subject": "actor/bank",
                    "legal_name": "Bank JSC",
                    "bin": "990140000123",
                    "roles": ["owner"],
                    "public_keys": [public],
                }
            )
        )
        sent = ailedger(
            "submit", str(enrol), "--key", str(home / "keys" / "regulator.pem"),
            "--home", str(home), cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "accepted ActorEnrolled as entry 1" in sent.stdout
        assert "ailedger/receipt/v2" in sent.stdout and "— cli.ailedger.kz/test " in sent.stdout

        register = tmp_path / "register.json"
        register.write_text(
            json.dumps(
                {
                    "type": "SystemRegistered",
                    "subject": "system/scorer",
                    "name": "Scorer",
                    "purpose": "credit scoring",
                    "sector": "finance",
                    "owner": "bank",
                    "holder": "bank",
                    "generates_synthetic_content": False,
                }
            )
        )
        args = ("submit", str(register), "--key", str(tmp_path / "bank.pem"), "--home", str(home))
        assert ailedger(*args, cwd=tmp_path).returncode == 0
        again = ailedger(*args, cwd=tmp_path)  # a new event id: a second registration
        assert again.returncode == 1
        assert again.stderr.strip() == (
            "rejected: system_already_registered: system scorer is already registered"
        )

        log = ailedger("log", "--home", str(home), "--json", cwd=tmp_path)
        rows = [json.loads(x) for x in log.stdout.splitlines()]
        assert [(r["index"], r["type"], r["signer"]) for r in rows][:3] == [
            (0, "LedgerGenesis", "regulator"),
            (1, "ActorEnrolled", "regulator"),
            (2, "SystemRegistered", "bank"),
        ]
        # Then, once the checkpoint is due, the notary's heads leaf.
        assert [(r["index"], r["type"], r["signer"]) for r in rows][3:] in (
            [],
            [(3, "HeadsLeaf", "notary")],
        )
        table = ailedger("log", "--home", str(home), cwd=tmp_path)
        assert "system/scorer" in table.stdout
        rejected = ailedger("log", "--home", str(home), "--rejected", "--json", cwd=tmp_path)
        assert json.loads(rejected.stdout)["code"] == "system_already_registered"

        # proofs: wait for the checkpoint covering all three entries and the heads leaf
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            cp = ailedger("checkpoint", "--home", str(home), cwd=tmp_path)
            if cp.returncode == 0 and cp.stdout.startswith("cli.ailedger.kz/test\n4\n"):
                break
            time.sleep(0.3)
        assert cp.stdout.startswith("cli.ailedger.kz/test\n4\n"), cp.stdout + cp.stderr
        # cosigned by the home's own witness, which `ailedger up` runs
        assert "— cli.ailedger.kz/witness " in cp.stdout
        proof = ailedger("prove", "2", "--home", str(home), cwd=tmp_path)
        assert proof.stdout.startswith("c2sp.org/tlog-proof@v1\nindex 2\n"), proof.stderr
        consistent = ailedger("prove", "--consistency", "1", "4", "--home", str(home), cwd=tmp_path)
        assert consistent.stdout.startswith("old 1\nnew 4\n"), consistent.stderr

        bundle = tmp_path / "scorer.bundle.json"
        exported = ailedger(
            "export", "--system", "scorer", "-o", str(bundle), "--home", str(home), cwd=tmp_path
        )
        assert exported.returncode == 0, exported.stderr
        assert "3 entries, 3 chains, checkpoint size 4" in exported.stdout
        trust = str(home / "trust.json")
        ok = ailedger("verify", str(bundle), "--trust", trust, cwd=tmp_path)
        assert ok.returncode == 0 and "VERIFIED" in ok.stdout, ok.stderr
        doc = json.loads(bundle.read_text())
        entry = bytearray(base64.b64decode(doc["entries"][2]["entry"]))
        entry[-20] ^= 1
        doc["entries"][2]["entry"] = base64.b64encode(bytes(entry)).decode()
        bundle.write_text(json.dumps(doc))
        bad = ailedger("verify", str(bundle), "--trust", trust, cwd=tmp_path)
        assert bad.returncode == 1
        assert f"{bundle}: FAILED inclusion (entry 2): not in the tree" in bad.stderr

        # compliance: the bank's system is registered but not in operation
        status = ailedger("status", "--home", str(home), "--json", cwd=tmp_path)
        (verdict,) = [json.loads(line) for line in status.stdout.splitlines()]
        assert (verdict["system"], verdict["verdict"]) == ("scorer", "compliant")
        table = ailedger("status", "scorer", "--home", str(home), "--at-index", "2", cwd=tmp_path)
        assert "scorer: compliant as of index 2" in table.stdout
        lines = ailedger("timeline", "scorer", "--home", str(home), "--json", cwd=tmp_path)
        (row,) = [json.loads(x) for x in lines.stdout.splitlines()]
        assert (row["legal_name"], row["role"], row["type"]) == (
            "Bank JSC",
            "owner",
            "SystemRegistered",
        )
        # no rebuild under the running projector of `ailedger up`: after it (below)
        refused = ailedger("rebuild", "--home", str(home), cwd=tmp_path)
        assert refused.returncode == 2 and "a projector is writing the read model" in refused.stderr
        claimed = tmp_path / "claimed.bundle.json"
        args = ("export", "--system", "scorer", "--claim", "-o", str(claimed), "--home", str(home))
        assert ailedger(*args, cwd=tmp_path).returncode == 0
        ok = ailedger("verify", str(claimed), "--trust", trust, cwd=tmp_path)  # always recomputed
        assert "scorer: compliant as of entry 2" in ok.stdout and "matches the claim" in ok.stdout
        assert ailedger("status", "ghost", "--home", str(home), cwd=tmp_path).returncode == 2
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=30)
    assert up.returncode == 0
    assert "notary stopped cleanly: accepted 2, rejected 1" in out
    assert not Home(home).url_file.exists()
    # nothing runs: rebuild starts the home's nats-server for its duration
    rebuilt = ailedger("rebuild", "--home", str(home), cwd=tmp_path)
    # rebuild counts LEDGER messages: the heads leaf too
    assert "rebuilt 4 entries" in rebuilt.stdout and "state digest" in rebuilt.stdout, (
        rebuilt.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("submit", "x.json", "--key", "missing.pem"), "error: cannot read key file missing.pem"),
        (("log", "--home", "nowhere"), "error: no NATS server: start one with `ailedger up"),
        (("up", "--home", "nowhere"), "error: nowhere is not a ledger home"),
        (("init", "--origin", "o", "existing"), "error: existing already holds a ledger"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "trust.json").write_text("{}")
    result = ailedger(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_submit_of_an_invalid_payload_says_what_is_wrong(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ailedger("init", str(home), cwd=tmp_path).returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "SystemRegistered", "subject": "system/x"}))
    result = ailedger(
        "submit", str(bad), "--key", str(home / "keys" / "regulator.pem"),
        "--home", str(home), "--nats", "nats://127.0.0.1:9",
        cwd=tmp_path,
    )  # fmt: skip
    # the payload is checked before any network I/O: nothing listens on port 9, and
    # no connection is attempted
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {bad} is not a valid event: "), result.stderr
    assert "connect" not in result.stderr and "Traceback" not in result.stderr
