"""The witness (c2sp.org/tlog-witness) and the notary's client for it.

Real witness processes (``ailedger witness``, ``python -m services.witness``)
on real HTTP, killed with SIGKILL where the point is durability; the injected
clock runs the witness in-process (still over HTTP). Checkpoints are signed with
the home's real notary key over real RFC 9162 trees, and every cosignature is
checked with ``CosignatureVerifier`` the way a verifier would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bus.home import Home
from ledger.formats.checkpoint import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    cosignature_timestamp,
)
from ledger.formats.merkle import MemoryHashStore, prove_tree
from ledger.formats.note import (
    InvalidSignatureError,
    Signer,
    Verifier,
    Verifiers,
    open_note,
    sign_note,
)
from ledger.formats.timeutil import SimulatedClock
from ledger.formats.trust import TrustedKey
from ledger.formats.witness import (
    CONTENT_TYPE_SIZE,
    CosignedState,
    encode_add_checkpoint,
    judge,
    load_witness_key,
    parse_add_checkpoint,
)
from services.notary.cosigning import CosigningError, collect_cosignatures
from services.witness.service import WitnessConfig, serve_witness

# --- logs: real trees, real checkpoints --------------------------------------------------


def tree_of(n: int, tag: bytes = b"entry") -> MemoryHashStore:
    tree = MemoryHashStore()
    for i in range(n):
        tree.append(b"%s %d" % (tag, i))
    return tree


def checkpoint_note(signer: Signer, tree: MemoryHashStore, origin: str | None = None) -> bytes:
    body = Checkpoint(origin or signer.name, tree.size, tree.root()).body()
    return sign_note(body, signer)


def grow(tree: MemoryHashStore, n: int, tag: bytes = b"entry") -> MemoryHashStore:
    while tree.size < n:
        tree.append(b"%s %d" % (tag, tree.size))
    return tree


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def flip_signature(line: bytes) -> bytes:
    """A signature line ``— <name> <base64>`` with one byte of the signature changed
    (still canonical base64, same key id)."""
    head, _, b64 = line.rstrip(b"\n").rpartition(b" ")
    raw = base64.b64decode(b64)
    return head + b" " + base64.b64encode(flip(raw, len(raw) - 3)) + b"\n"


def witness_verifier(home: Home) -> CosignatureVerifier:
    return CosignatureVerifier.from_vkey(home.ensure_witness_key())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- a witness process -------------------------------------------------------------------


@dataclass
class WitnessProcess:
    home: Home
    state: Path
    log: Path
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    commands: list[list[str]] = field(default_factory=list)

    def start(self, module: bool = False) -> str:
        """Start it (``ailedger witness`` or ``python -m services.witness``); its URL."""
        self.starts += 1
        where = ["--home", str(self.home.path), "--state", str(self.state)]
        cmd = (
            [sys.executable, "-m", "services.witness", *where]
            if module
            else [sys.executable, "-m", "ailedger", "witness", *where]
        )
        self.commands.append(cmd)
        marker = f"--- start {self.starts} ---\n".encode()
        with self.log.open("ab") as out:
            out.write(marker)
            out.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_bytes().split(marker)[-1].decode()
            m = re.search(r"witness up: \S+ at (http://127\.0\.0\.1:\d+)", text)
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise AssertionError(f"witness exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"witness not ready: {self.log.read_text()}")

    def post(self, body: bytes) -> httpx.Response:
        return httpx.post(f"{self.url}/add-checkpoint", content=body, timeout=10, trust_env=False)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def witness(home: Home, tmp_path: Path) -> Iterator[WitnessProcess]:
    home.ensure_witness_key()
    process = WitnessProcess(home, tmp_path / "witness-state", tmp_path / "witness.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def add(witness: WitnessProcess, old: int, proof: list[bytes], note: bytes) -> httpx.Response:
    return witness.post(encode_add_checkpoint(old, proof, note))


def opened_cosignature(note: bytes, answer: bytes, verifier: CosignatureVerifier) -> int:
    """The cosignature's time, after checking it as a verifier does: the checkpoint's
    text plus the answer's line is a note that verifies with the witness's key."""
    text = note[: note.rfind(b"\n\n") + 1]
    opened = open_note(text + b"\n" + answer, Verifiers(verifier))
    (sig,) = opened.sigs
    return cosignature_timestamp(sig)


# --- the protocol, process and HTTP -------------------------------------------------------


def test_cosigns_a_first_checkpoint_and_consistent_extensions(
    home: Home, witness: WitnessProcess
) -> None:
    log_key = home.notary_signer()
    verifier = witness_verifier(home)
    tree = tree_of(3)
    first = checkpoint_note(log_key, tree)

    answer = add(witness, 0, [], first)
    assert answer.status_code == 200, answer.text
    assert answer.content.startswith(f"— {verifier.name} ".encode())
    assert answer.content.count(b"\n") == 1
    before = int(time.time())
    assert abs(opened_cosignature(first, answer.content, verifier) - before) < 60
    # Appended to the log's note it is a note both keys verify, log first.
    both = open_note(first + answer.content, Verifiers(log_key.verifier(), verifier))
    assert [s.name for s in both.sigs] == [log_key.name, verifier.name]
    # A byte flipped in the cosignature: the verifier refuses it.
    with pytest.raises(InvalidSignatureError):
        opened_cosignature(first, flip_signature(answer.content), verifier)

    # The same checkpoint again (nothing appended since): cosigned again.
    assert add(witness, 3, [], first).status_code == 200

    # A consistent extension with a real RFC 9162 consistency proof.
    grow(tree, 7)
    second = checkpoint_note(log_key, tree)
    proof = prove_tree(7, 3, tree.read_hashes)
    answer = add(witness, 3, proof, second)
    assert answer.status_code == 200, answer.text
    opened_cosignature(second, answer.content, verifier)

    info = httpx.get(witness.url + "/", trust_env=False).json()
    assert info == {
        "name": verifier.name,
        "verifier_key": verifier.vkey,
        "logs": {log_key.name: {"size": 7}},
    }
    assert httpx.get(witness.url + "/healthz", trust_env=False).json() == info


def test_refuses_forks_and_bad_requests_with_the_spec_statuses(
    home: Home, witness: WitnessProcess, tmp_path: Path
) -> None:
    log_key = home.notary_signer()
    tree = tree_of(7)
    genuine7 = checkpoint_note(log_key, tree)
    assert add(witness, 0, [], genuine7).status_code == 200

    # Wrong old size: 409 text/x.tlog.size with the witness's size.
    stale = add(witness, 3, prove_tree(7, 3, tree.read_hashes), genuine7)
    assert stale.status_code == 409
    assert stale.headers["content-type"] == CONTENT_TYPE_SIZE
    assert stale.content == b"7\n"

    # Same size, another root: a fork, 409 but not a size to retry with.
    fork = tree_of(7, b"forged")
    fork7 = checkpoint_note(log_key, fork)
    same_size = add(witness, 7, [], fork7)
    assert same_size.status_code == 409
    assert not same_size.headers["content-type"].startswith(CONTENT_TYPE_SIZE)
    assert "root" in same_size.text

    # A bigger tree that does not extend the cosigned one: its own proof, 422.
    grow(fork, 9, b"forged")
    fork9 = checkpoint_note(log_key, fork)
    assert add(witness, 7, prove_tree(9, 7, fork.read_hashes), fork9).status_code == 422
    # The genuine extension with one byte of its proof flipped: 422.
    grow(tree, 9)
    genuine9 = checkpoint_note(log_key, tree)
    proof = prove_tree(9, 7, tree.read_hashes)
    assert add(witness, 7, [flip(proof[0], 5), *proof[1:]], genuine9).status_code == 422
    assert add(witness, 7, proof[:-1], genuine9).status_code == 422

    # Unknown origin: 404, even when well signed by its own key.
    other = Signer("elsewhere.example/log", Ed25519PrivateKey.generate())
    assert add(witness, 0, [], checkpoint_note(other, tree_of(2))).status_code == 404
    # The right origin signed by another key of the same name: 403; a flipped signature too.
    impostor = Signer(log_key.name, Ed25519PrivateKey.generate())
    assert add(witness, 7, [], checkpoint_note(impostor, tree_of(7, b"forged"))).status_code == 403
    text9, _, line9 = genuine9.partition(b"\n\n")
    assert add(witness, 7, proof, text9 + b"\n\n" + flip_signature(line9)).status_code == 403

    # Old size above the checkpoint's size: 400.
    assert add(witness, 9, [], genuine7).status_code == 400

    # Malformed requests: 400, never 500.
    good = encode_add_checkpoint(7, proof, genuine9)
    malformed = [
        b"",
        b"\n\n",
        b"garbage",
        b"old 7\n",
        good.replace(b"old 7", b"old 07"),
        good.replace(b"old 7", b"old -7"),
        good.replace(b"old 7", b"new 7"),
        good.replace(b"old 7", b"old 18446744073709551616"),
        b"old 7\n" + b"AAAA\n" + b"\n" + genuine9,  # a proof line that is no SHA-256
        b"old 7\n" + (base64.b64encode(bytes(32)) + b"\n") * 64 + b"\n" + genuine9,
        b"old 7\n\n" + genuine9.split(b"\n\n")[0],  # the note without signatures
        b"old 7\n\nnot a checkpoint\n\n" + genuine9.split(b"\n\n")[1],
        b"old 7\n\n" + b"\xff\xfe" * 10 + b"\n\n",
        good.replace(b"\n\n", b"\n\n\x01", 1),
        bytes(range(256)),
    ]
    for body in malformed:
        answer = witness.post(body)
        assert answer.status_code == 400, (body[:60], answer.status_code, answer.text)
    too_big = witness.post(b"old 7\n" + b"A" * (1 << 20) + b"\n\n" + genuine9)
    assert too_big.status_code == 413

    # Nothing of that moved the witness: the genuine extension is still cosigned.
    answer = add(witness, 7, proof, genuine9)
    assert answer.status_code == 200, answer.text
    opened_cosignature(genuine9, answer.content, witness_verifier(home))

    # Each refusal is logged with its reason; the forks are kept as evidence.
    witness.stop()
    log = witness.log.read_text()
    for reason in ("old_size_mismatch", "fork", "inconsistent", "unknown_origin"):
        assert f" {reason})" in log, reason
    assert "Traceback" not in log
    db = sqlite3.connect(witness.state / "witness.sqlite")
    kept = db.execute("SELECT reason, request FROM evidence ORDER BY id").fetchall()
    assert [r for r, _ in kept] == ["fork", "inconsistent", "inconsistent", "inconsistent"]
    assert parse_add_checkpoint(kept[0][1]).note == fork7


def test_a_killed_witness_still_refuses_what_contradicts_its_cosignature(
    home: Home, witness: WitnessProcess
) -> None:
    log_key = home.notary_signer()
    verifier = witness_verifier(home)
    tree = tree_of(7)
    genuine7 = checkpoint_note(log_key, tree)
    answer = add(witness, 0, [], genuine7)
    witness.kill()  # SIGKILL right after the answer
    assert answer.status_code == 200
    opened_cosignature(genuine7, answer.content, verifier)

    witness.start(module=True)  # python -m services.witness, same state
    assert witness.commands[-1][1:3] == ["-m", "services.witness"]
    # It remembers size 7: a fresh start from 0 is told so ...
    fresh = add(witness, 0, [], checkpoint_note(log_key, tree_of(5)))
    assert (fresh.status_code, fresh.content) == (409, b"7\n")
    # ... a fork of the same size is refused ...
    assert add(witness, 7, [], checkpoint_note(log_key, tree_of(7, b"forged"))).status_code == 409
    # ... and so is a bigger fork with its own proof.
    fork = tree_of(12, b"forged")
    refused = add(witness, 7, prove_tree(12, 7, fork.read_hashes), checkpoint_note(log_key, fork))
    assert refused.status_code == 422

    witness.kill()
    witness.start()
    grow(tree, 12)
    answer = add(witness, 7, prove_tree(12, 7, tree.read_hashes), checkpoint_note(log_key, tree))
    assert answer.status_code == 200, answer.text


def test_witness_command_on_a_directory_without_a_ledger(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ailedger", "witness", "--home", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "[usage]" in result.stderr
    assert "Traceback" not in result.stderr


# --- the injected clock (in-process, over HTTP) ---------------------------------------------


async def test_the_cosignature_carries_the_injected_clocks_time(home: Home, tmp_path: Path) -> None:
    start = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    clock = SimulatedClock(start)
    config = WitnessConfig.from_home(home, state_dir=tmp_path / "w")
    home.ensure_witness_key()
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_witness(config, stop, clock=clock, on_ready=lambda url, _w: ready.set_result(url))
    )
    url = await asyncio.wait_for(ready, 30)
    log_key = home.notary_signer()
    verifier = witness_verifier(home)
    tree = tree_of(4)
    note = checkpoint_note(log_key, tree)
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await client.post(
            f"{url}/add-checkpoint", content=encode_add_checkpoint(0, [], note)
        )
        clock.advance(timedelta(days=40))
        again = await client.post(
            f"{url}/add-checkpoint", content=encode_add_checkpoint(4, [], note)
        )
    stop.set()
    stopped = await asyncio.wait_for(task, 30)
    assert opened_cosignature(note, first.content, verifier) == int(start.timestamp())
    later = start + timedelta(days=40)
    assert opened_cosignature(note, again.content, verifier) == int(later.timestamp())
    assert stopped.counts == {"cosigned": 2}


def test_judge_is_the_protocol_without_http(home: Home) -> None:
    """The pure decision, for each answer of the spec."""
    log_key = home.notary_signer()
    home.ensure_witness_key()
    signer = load_witness_key(home.witness_key_path, home.witness_name(), lambda: 1_900_000_000)
    logs: dict[str, list[Verifier]] = {log_key.name: [log_key.verifier()]}
    tree = tree_of(5)
    note = checkpoint_note(log_key, tree)
    body = encode_add_checkpoint(0, [], note)
    nothing: dict[str, CosignedState] = {}

    outcome = judge(body, logs, nothing.get, signer)
    assert (outcome.status, outcome.reason) == (200, "cosigned")
    assert outcome.state == CosignedState(5, tree.root(), note + outcome.body)
    state = {log_key.name: outcome.state}
    assert judge(body, logs, state.get, signer).reason == "old_size_mismatch"
    assert judge(body, {}, nothing.get, signer).status == 404
    assert judge(body, {log_key.name: []}, nothing.get, signer).status == 403  # no key valid now
    assert judge(b"old 0\n\n", logs, nothing.get, signer).status == 400
    fork = encode_add_checkpoint(5, [], checkpoint_note(log_key, tree_of(5, b"x")))
    forked = judge(fork, logs, state.get, signer)
    assert (forked.status, forked.reason, forked.evidence) == (409, "fork", True)
    assert forked.state is None


def test_a_log_key_counts_only_within_its_validity_window(home: Home, tmp_path: Path) -> None:
    """A rotated-out log key (valid_until passed on the witness's clock) gets nothing
    cosigned; the same key within its window does."""
    from services.witness.service import Witness

    home.ensure_witness_key()
    log_key = home.notary_signer()
    vkey = log_key.verifier().vkey
    until = datetime(2030, 1, 1, tzinfo=UTC)
    config = WitnessConfig(
        name=home.witness_name(),
        key_path=home.witness_key_path,
        state_dir=tmp_path / "w",
        logs={log_key.name: [TrustedKey(vkey, valid_until=until)]},
    )
    clock = SimulatedClock(until - timedelta(seconds=1))
    w = Witness(config, clock=clock)
    try:
        note = checkpoint_note(log_key, tree_of(2))
        assert w.add_checkpoint(encode_add_checkpoint(0, [], note)).status == 200
        clock.set(until)
        refused = w.add_checkpoint(encode_add_checkpoint(2, [], note))
        assert (refused.status, refused.reason) == (403, "bad_log_signature")
    finally:
        w.close()


# --- the notary's client ------------------------------------------------------------------


async def test_collect_cosignatures_reaches_quorum_with_one_witness(
    home: Home, witness: WitnessProcess
) -> None:
    log_key = home.notary_signer()
    verifier = witness_verifier(home)
    tree = tree_of(3)
    note3 = checkpoint_note(log_key, tree)
    cosigned = await collect_cosignatures(
        note3, 0, [], [witness.url], Verifiers(verifier), 1, timeout=10
    )
    opened = open_note(cosigned, Verifiers(log_key.verifier(), verifier))
    assert [s.name for s in opened.sigs] == [log_key.name, verifier.name]  # notary first
    assert cosigned.startswith(note3) and cosigned.count("— ".encode()) == 2

    # The notary believes the witness never cosigned (old size 0): the witness answers
    # 409 with its size, the client asks the notary for a proof from there, and retries.
    grow(tree, 8)
    note8 = checkpoint_note(log_key, tree)
    asked: list[int] = []

    async def proof_from(old: int) -> list[bytes]:
        asked.append(old)
        return prove_tree(8, old, tree.read_hashes)

    cosigned = await collect_cosignatures(
        note8, 0, [], [witness.url], Verifiers(verifier), 1, timeout=10, proof_from=proof_from
    )
    assert asked == [3]
    open_note(cosigned, Verifiers(verifier))

    # Without a way to get the proof, the same situation is a clear failure.
    grow(tree, 9)
    with pytest.raises(CosigningError, match="latest cosigned size is 8"):
        await collect_cosignatures(
            checkpoint_note(log_key, tree), 0, [], [witness.url], Verifiers(verifier), 1, timeout=10
        )


async def test_collect_cosignatures_fails_clearly_when_the_witness_is_down(home: Home) -> None:
    log_key = home.notary_signer()
    verifier = witness_verifier(home)
    endpoint = f"http://127.0.0.1:{free_port()}"
    note = checkpoint_note(log_key, tree_of(2))
    with pytest.raises(CosigningError) as caught:
        await collect_cosignatures(note, 0, [], [endpoint], Verifiers(verifier), 1, timeout=3)
    error = caught.value
    assert (error.code, error.exit_status) == ("witness_quorum", 3)
    assert endpoint in str(error) and "unreachable" in str(error)
    assert "0 of the 1" in str(error)
    assert list(error.answers) == [endpoint]
    # Quorum 0 (a trust policy without witnesses): the note is returned as it is.
    assert await collect_cosignatures(note, 0, [], [], Verifiers(verifier), 0, timeout=3) == note


async def test_collect_cosignatures_never_trusts_an_unchecked_answer(
    home: Home, witness: WitnessProcess
) -> None:
    log_key = home.notary_signer()
    verifier = witness_verifier(home)
    tree = tree_of(4)
    note = checkpoint_note(log_key, tree)

    # The trust policy names another key for that witness name: its cosignature is
    # a signature by an unknown key, and counts for nothing.
    other = CosignatureSigner(verifier.name, Ed25519PrivateKey.generate()).verifier()
    with pytest.raises(CosigningError, match="no cosignature by a witness key of the trust"):
        await collect_cosignatures(note, 0, [], [witness.url], Verifiers(other), 1, timeout=10)

    # A genuine cosignature line with one byte of its signature changed, served by a
    # fake witness over HTTP: refused as a cosignature that does not verify.
    genuine = add(witness, 4, [], note)
    assert genuine.status_code == 200
    forged = flip_signature(genuine.content)
    async with fake_witness(200, "text/plain", forged) as fake:
        with pytest.raises(CosigningError, match="does not verify"):
            await collect_cosignatures(note, 4, [], [fake], Verifiers(verifier), 1, timeout=10)
        # A forged answer beside the genuine witness: quorum 1 reached, quorum 2 not.
        cosigned = await collect_cosignatures(
            note, 4, [], [fake, witness.url], Verifiers(verifier), 1, timeout=10
        )
        assert cosigned.count("— ".encode()) == 2
        with pytest.raises(CosigningError) as caught:
            await collect_cosignatures(
                note, 4, [], [witness.url, fake], Verifiers(verifier), 2, timeout=10
            )
        assert caught.value.answers[witness.url].startswith("cosigned by ")
        assert "does not verify" in caught.value.answers[fake]

    # A witness that answers with its refusal: the refusal is named.
    fork = checkpoint_note(log_key, tree_of(4, b"forged"))
    with pytest.raises(CosigningError, match="HTTP 409"):
        await collect_cosignatures(fork, 4, [], [witness.url], Verifiers(verifier), 1, timeout=10)


class fake_witness:
    """A one-answer HTTP server on a free port: whatever is posted, it answers this."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.response = (
            f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode() + body
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(m.group(1)) if m else 0)
        writer.write(self.response)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
