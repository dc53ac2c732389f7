"""The HTTP API (services/web) against a real ledger: a real nats-server with
authorization, the notary in-process, the app on uvicorn on a free port, and
httpx speaking HTTP to it. What comes back is checked with the library's own
verifiers (signed notes, RFC 9162 proofs, receipts, rejections), never trusted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import sys
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.bus.client import sign_event
from ledger.formats.checkpoint import parse_checkpoint, parse_tlog_proof
from ledger.formats.entry import Entry
from ledger.formats.keys import ActorKey, generate
from ledger.formats.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from ledger.formats.note import Verifier, Verifiers, open_note
from ledger.formats.receipt import open_receipt
from ledger.formats.rejection import open_rejection
from ledger.formats.timeutil import format_time
from ledger.law import events as ev
from services.web.app import WebConfig, serve_web
from services.web.auth import issue_token, revoke_token
from tests.conftest import Harness

PROBLEM = "application/problem+json"


@dataclass
class Web:
    url: str
    http: httpx.AsyncClient
    ledger: Harness

    def verifiers(self) -> Verifiers:
        trust = self.ledger.home.trust()
        return Verifiers(*(Verifier.from_vkey(k) for k in trust.log_vkeys()))


@pytest_asyncio.fixture
async def web(ledger: Harness) -> AsyncIterator[Web]:
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_web(
            WebConfig(ledger.home, ledger.url, submit_timeout=20.0),
            stop,
            port=0,
            ui=False,
            on_ready=ready.set_result,
        )
    )
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        stop.set()
        if task.done():
            task.result()
        raise AssertionError("the web app did not start")
    try:
        async with httpx.AsyncClient(base_url=ready.result(), timeout=60) as http:
            yield Web(ready.result(), http, ledger)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    doc = r.json()
    assert doc["status"] == status
    assert doc["code"] == code, doc
    assert doc["type"].endswith(f"/{code}")
    assert doc["title"] and isinstance(doc["detail"], str)
    return doc


async def owner_with_system(ledger: Harness, actor: str = "bank") -> tuple[ActorKey, Any]:
    key, client = await ledger.enrol(actor, ["owner"])
    await ledger.register(client, f"{actor}-scoring")
    return key, client


# --- public ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_checkpoint_entries_and_proofs_verify_and_fail_after_a_byte_flip(web: Web) -> None:
    ledger = web.ledger
    await owner_with_system(ledger)
    first = await ledger.notary.checkpoint()
    assert first is not None

    r = await web.http.get("/api/v1/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    note = open_note(r.content, web.verifiers())  # signed by the log key of the trust policy
    checkpoint = parse_checkpoint(note.text)
    assert r.content == first and checkpoint.origin == ledger.home.trust().origin
    size = checkpoint.size

    # every entry: the raw bytes are the leaf, the decoded view says the same, and the
    # proof fetched over HTTP folds the leaf up to the checkpoint's root
    for index in range(size - 1):  # the last leaf is the heads leaf
        raw = await web.http.get(f"/api/v1/entries/{index}/raw")
        assert raw.status_code == 200
        entry = Entry.parse(raw.content)
        assert entry.index == index
        decoded = (await web.http.get(f"/api/v1/entries/{index}")).json()
        assert decoded["kind"] == "entry" and base64.b64decode(decoded["raw"]) == raw.content
        assert decoded["subject"] == entry.subject and decoded["prev"] == entry.prev
        assert decoded["integrated"] == format_time(entry.integrated)
        assert base64.b64decode(decoded["leaf_hash"]) == leaf_hash(raw.content)
        proof = await web.http.get(f"/api/v1/entries/{index}/proof")
        assert proof.status_code == 200
        tlog = parse_tlog_proof(proof.content)
        assert tlog.index == index and tlog.checkpoint == r.content
        verify_inclusion(
            leaf_hash(raw.content), index, size, list(tlog.proof), checkpoint.root_hash
        )
    heads = (await web.http.get(f"/api/v1/entries/{size - 1}")).json()
    assert heads["kind"] == "heads" and heads["heads_size"] == size - 1

    registered = (await web.http.get("/api/v1/entries/2")).json()
    assert registered["type"] == "SystemRegistered" and registered["signer"] == "bank"
    assert registered["payload"]["subject"] == "system/bank-scoring"
    assert registered["signatures"][0]["keyid"].startswith("bank/")

    # one flipped byte in a proof hash, or in the entry: the proof no longer verifies
    proof_text = (await web.http.get("/api/v1/entries/2/proof")).content
    tlog = parse_tlog_proof(proof_text)
    raw2 = (await web.http.get("/api/v1/entries/2/raw")).content
    flipped = bytearray(tlog.proof[0])
    flipped[0] ^= 1
    with pytest.raises(ProofError):
        verify_inclusion(
            leaf_hash(raw2),
            2,
            size,
            [bytes(flipped), *tlog.proof[1:]],
            checkpoint.root_hash,
        )
    bad_entry = bytearray(raw2)
    bad_entry[-3] ^= 1
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(bytes(bad_entry)), 2, size, tlog.proof, checkpoint.root_hash)

    # a second checkpoint: history and a consistency proof between the two
    await ledger.register(ledger.clients[-1], "bank-chat")
    second = await ledger.notary.checkpoint()
    assert second is not None
    new = parse_checkpoint(open_note(second, web.verifiers()).text)
    assert new.size > size
    history = (await web.http.get("/api/v1/checkpoints")).json()
    sizes = [c["size"] for c in history["checkpoints"]]
    assert sizes == sorted(sizes) and {size, new.size} <= set(sizes)
    assert (await web.http.get(f"/api/v1/checkpoints/{size}")).content == first
    page = (await web.http.get("/api/v1/checkpoints", params={"limit": 1})).json()
    assert len(page["checkpoints"]) == 1 and page["next_after"] == sizes[0]

    c = await web.http.get("/api/v1/proofs/consistency", params={"old": size, "new": new.size})
    assert c.status_code == 200
    head, _, tail = c.content.partition(b"\n\n")
    lines = head.decode().split("\n")
    assert lines[:2] == [f"old {size}", f"new {new.size}"] and tail == second
    hashes = [base64.b64decode(h) for h in lines[2:]]
    verify_consistency(size, new.size, checkpoint.root_hash, new.root_hash, hashes)
    bad = bytearray(hashes[-1])
    bad[5] ^= 0x80
    with pytest.raises(ProofError):
        verify_consistency(
            size, new.size, checkpoint.root_hash, new.root_hash, [*hashes[:-1], bytes(bad)]
        )

    # under an older checkpoint, by its size
    old_proof = await web.http.get("/api/v1/entries/1/proof", params={"size": size})
    assert parse_tlog_proof(old_proof.content).checkpoint == first


@pytest.mark.asyncio
async def test_trust_policy_schemas_and_openapi_are_public(web: Web) -> None:
    r = await web.http.get("/api/v1/trust")
    assert r.status_code == 200 and r.content == web.ledger.home.trust_path.read_bytes()
    names = (await web.http.get("/api/v1/schemas")).json()
    assert "envelope" in names and "events/IncidentReported" in names
    schema = await web.http.get("/api/v1/schemas/events/IncidentReported")
    assert schema.status_code == 200 and schema.headers["content-type"].startswith(
        "application/schema+json"
    )
    assert "properties" in json.dumps(schema.json())
    openapi = (await web.http.get("/api/v1/openapi.json")).json()
    assert openapi["openapi"].startswith("3.")
    for path in ("/api/v1/submissions", "/api/v1/entries/{index}/proof", "/api/v1/checkpoint"):
        assert path in openapi["paths"], sorted(openapi["paths"])
    problem = (await web.http.get("/api/v1/problems/bad_signature")).json()
    assert problem["code"] == "bad_signature" and problem["meaning"]


# --- the gateway -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hand_signed(key: ActorKey, payload: dict[str, Any]) -> bytes:
    """A DSSE envelope made without the SDK, from the rules of docs/ (DSSE v1, PAE,
    Ed25519, keyid <actor>/<first 16 hex of SHA-256 of the raw public key>)."""
    raw_public = key.private_key.public_key().public_bytes_raw()
    keyid = f"{payload['actor']}/{hashlib.sha256(raw_public).hexdigest()[:16]}"
    body = json.dumps(payload, separators=(",", ":")).encode()
    payload_type = "application/vnd.ailedger.event+json; v=1"
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(body), body)
    private = Ed25519PrivateKey.from_private_bytes(key.private_key.private_bytes_raw())
    envelope = {
        "payloadType": payload_type,
        "payload": _b64(body),
        "signatures": [{"keyid": keyid, "sig": _b64(private.sign(pae))}],
    }
    return json.dumps(envelope).encode()


def deployment(actor: str, system: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "type": "VersionDeployed",
        "v": 1,
        "event_id": str(uuid.uuid4()),
        "actor": actor,
        "subject": f"system/{system}",
        "signed_at": format_time(datetime.now(UTC)),
        "version": "2.0",
        "artifact_sha256": "cd" * 32,
    }


@pytest.mark.asyncio
async def test_gateway_answers_as_the_nats_intake_same_receipt_on_resubmission(web: Web) -> None:
    ledger = web.ledger
    key, _ = await owner_with_system(ledger)
    token, _ = issue_token(ledger.home, actor="bank")
    auth = {"authorization": f"Bearer {token}"}

    envelope = hand_signed(key, deployment("bank", "bank-scoring"))
    r = await web.http.post("/api/v1/submissions", content=envelope, headers=auth)
    assert r.status_code == 200, r.text
    verdict = r.json()
    assert verdict["status"] == "accepted"
    assert verdict["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()
    receipt = open_receipt(verdict["receipt"].encode(), envelope, web.verifiers())
    assert receipt.index == verdict["index"]
    assert (
        receipt.event_id
        == verdict["event_id"]
        == json.loads(base64.b64decode(json.loads(envelope)["payload"]))["event_id"]
    )

    # the same bytes over NATS (the SDK), then over HTTP again: the same receipt
    nats_client = await ledger.client(key)
    over_nats = await nats_client.submit_signed(envelope)
    assert over_nats.note.decode() == verdict["receipt"]
    again = await web.http.post("/api/v1/submissions", content=envelope, headers=auth)
    assert again.status_code == 200 and again.json() == verdict
    as_text = await web.http.post(
        "/api/v1/submissions", content=envelope, headers={**auth, "accept": "text/plain"}
    )
    assert as_text.headers["content-type"].startswith("text/plain")
    assert as_text.text == verdict["receipt"]
    # integrated once
    raw = await web.http.get(f"/api/v1/entries/{receipt.index}/raw")
    assert Entry.parse(raw.content).envelope == envelope
    nxt = await web.http.get(f"/api/v1/entries/{receipt.index + 1}")
    assert nxt.status_code == 404 or nxt.json()["kind"] == "heads"

    # other bytes under an event id already integrated: refused, never a second entry
    other = hand_signed(
        key, {**json.loads(base64.b64decode(json.loads(envelope)["payload"])), "version": "9.9"}
    )
    r = await web.http.post("/api/v1/submissions", content=other, headers=auth)
    dup = r.json()
    # (the notary answers with the receipt of the first bytes; the SDK's check of its
    # envelope hash concludes it, as over NATS: 409, no signed rejection of these bytes)
    assert r.status_code == 409 and dup["code"] == "duplicate_event_id", r.text
    assert dup["event_id"] == verdict["event_id"] and "rejection" not in dup

    # the same new envelope posted five times at once: one entry, one receipt for all
    concurrent = hand_signed(key, deployment("bank", "bank-scoring"))
    answers = await asyncio.gather(
        *(web.http.post("/api/v1/submissions", content=concurrent, headers=auth) for _ in range(5))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["receipt"] for a in answers}) == 1

    # an envelope signed by the SDK goes through the same way
    event = nats_client.event(
        ev.VersionDeployed, subject="system/bank-scoring", version="2.1", artifact_sha256="ef" * 32
    )
    sdk_envelope = sign_event(event, key)
    r2 = await web.http.post("/api/v1/submissions", content=sdk_envelope, headers=auth)
    assert r2.status_code == 200
    assert open_receipt(r2.json()["receipt"].encode(), sdk_envelope, web.verifiers()).index > (
        receipt.index
    )


@pytest.mark.asyncio
async def test_gateway_bad_signature_gets_the_signed_rejection_with_its_code(web: Web) -> None:
    ledger = web.ledger
    key, _ = await owner_with_system(ledger)
    token, _ = issue_token(ledger.home, actor="bank")
    auth = {"authorization": f"Bearer {token}"}
    payload = deployment("bank", "bank-scoring")
    envelope = json.loads(hand_signed(key, payload))
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[10] ^= 1
    envelope["signatures"][0]["sig"] = _b64(bytes(sig))
    data = json.dumps(envelope).encode()

    r = await web.http.post("/api/v1/submissions", content=data, headers=auth)
    problem = assert_problem(r, 422, "bad_signature")
    assert problem["event_id"] == payload["event_id"]
    signed = open_rejection(problem["rejection"].encode(), web.verifiers())
    assert signed.code == "bad_signature" and signed.event_id == payload["event_id"]
    assert signed.is_for(data)
    # the same answer again, and over NATS
    again = await web.http.post("/api/v1/submissions", content=data, headers=auth)
    assert assert_problem(again, 422, "bad_signature")["rejection"] == problem["rejection"]
    nats_client = await ledger.client(key)
    from ledger.bus.client import SubmissionRejected

    with pytest.raises(SubmissionRejected) as caught:
        await nats_client.submit_signed(data)
    assert caught.value.code == "bad_signature"

    # an actor the ledger does not know, with a gateway token of its name: the notary's
    # own refusal, signed, as over NATS
    stranger = generate("stranger")
    stranger_token, _ = issue_token(ledger.home, actor="stranger")
    unknown = hand_signed(stranger, deployment("stranger", "bank-scoring"))
    r = await web.http.post(
        "/api/v1/submissions",
        content=unknown,
        headers={"authorization": f"Bearer {stranger_token}"},
    )
    refused = assert_problem(r, 422, "unknown_actor")
    assert open_rejection(refused["rejection"].encode(), web.verifiers()).is_for(unknown)


@pytest.mark.asyncio
async def test_credentials_401_403(web: Web) -> None:
    ledger = web.ledger
    key, _ = await owner_with_system(ledger)
    other_key, _ = await ledger.enrol("insurer", ["insurer"])
    envelope = hand_signed(key, deployment("bank", "bank-scoring"))
    post = "/api/v1/submissions"

    r = await web.http.post(post, content=envelope)
    assert_problem(r, 401, "credentials_missing")
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    r = await web.http.post(post, content=envelope, headers={"authorization": "Basic Ym9i"})
    assert_problem(r, 401, "credentials_missing")
    forged = "alt_" + base64.urlsafe_b64encode(b"x" * 32).decode().rstrip("=")
    r = await web.http.post(post, content=envelope, headers={"authorization": f"Bearer {forged}"})
    assert_problem(r, 401, "credentials_invalid")

    investigator, _ = issue_token(ledger.home, role="auditor")
    r = await web.http.post(
        post, content=envelope, headers={"authorization": f"Bearer {investigator}"}
    )
    assert_problem(r, 403, "not_permitted")

    insurer_token, insurer = issue_token(ledger.home, actor="insurer")
    r = await web.http.post(
        post, content=envelope, headers={"authorization": f"Bearer {insurer_token}"}
    )
    assert_problem(r, 403, "actor_mismatch")
    # nothing of it reached the ledger
    refused = json.loads(base64.b64decode(json.loads(envelope)["payload"]))["event_id"]
    index = 0
    while (r := await web.http.get(f"/api/v1/entries/{index}")).status_code == 200:
        assert r.json()["event_id"] != refused
        index += 1
    assert_problem(r, 404, "proof_unavailable")
    assert index >= 4

    # a revoked token is unknown at once, without a restart
    assert revoke_token(ledger.home, insurer.token_id[:12]) == 1
    own = hand_signed(other_key, {**deployment("insurer", "bank-scoring")})
    r = await web.http.post(post, content=own, headers={"authorization": f"Bearer {insurer_token}"})
    assert_problem(r, 401, "credentials_invalid")
    # only hashes are stored
    stored = (ledger.home.path / "web" / "tokens.json").read_text()
    assert insurer_token not in stored and investigator not in stored
    assert hashlib.sha256(investigator.encode()).hexdigest() in stored


@pytest.mark.asyncio
async def test_hostile_inputs_get_problem_details_never_a_500(web: Web) -> None:
    ledger = web.ledger
    await owner_with_system(ledger)
    token, _ = issue_token(ledger.home, actor="bank")
    auth = {"authorization": f"Bearer {token}"}
    post = "/api/v1/submissions"

    r = await web.http.post(post, content=b"{" + b" " * (2 << 20) + b"}", headers=auth)
    assert_problem(r, 413, "body_too_large")

    # streamed without a Content-Length, too
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    r = await web.http.post(post, content=chunks(), headers=auth)
    assert_problem(r, 413, "body_too_large")
    r = await web.http.post(post, content=b"not json at all", headers=auth)
    assert_problem(r, 400, "envelope_invalid")
    r = await web.http.post(post, content=b"", headers=auth)
    assert_problem(r, 400, "bad_request")
    r = await web.http.post(post, content=b'{"payloadType": 1}', headers=auth)
    assert_problem(r, 400, "envelope_invalid")
    r = await web.http.post(post, content=b"\xff\xfe\x00garbage", headers=auth)
    assert_problem(r, 400, "envelope_invalid")

    assert_problem(await web.http.get("/api/v1/entries/abc"), 404, "no_such_resource")
    assert_problem(await web.http.get("/api/v1/entries/-1"), 400, "bad_request")
    assert_problem(await web.http.get(f"/api/v1/entries/{10**30}"), 400, "bad_request")
    assert_problem(await web.http.get("/api/v1/entries/999999"), 404, "proof_unavailable")
    assert_problem(await web.http.get("/api/v1/checkpoints/12345"), 404, "proof_unavailable")
    assert_problem(await web.http.get("/api/v1/schemas/../../trust"), 404, "no_such_resource")
    assert_problem(await web.http.get("/api/v1/nothing-here"), 404, "no_such_resource")
    assert_problem(
        await web.http.get("/api/v1/proofs/consistency", params={"old": 5, "new": 2}),
        400,
        "bad_request",
    )
    assert_problem(
        await web.http.get("/api/v1/proofs/consistency", params={"old": "x", "new": 2}),
        400,
        "bad_request",
    )
    assert_problem(await web.http.get("/api/v1/proofs/consistency"), 400, "bad_request")
    assert_problem(
        await web.http.get("/api/v1/entries/1/proof", params={"size": "abc"}), 400, "bad_request"
    )
    long_token = {"authorization": "Bearer alt_" + "x" * 20000}
    assert_problem(
        await web.http.post(post, content=b"{}", headers=long_token), 401, "credentials_invalid"
    )
    latin = {"authorization": b"Bearer alt_\xe9\xff\xa0z"}
    r = await web.http.post(post, content=b"{}", headers=latin)
    assert r.status_code in (400, 401) and r.headers["content-type"].startswith(PROBLEM)
    auditor, _ = issue_token(ledger.home, role="auditor")
    inv = {"authorization": f"Bearer {auditor}"}
    for query in ("at=%00", "at=2026-13-45", "at_index=-3", "checkpoint=x", "at=" + "9" * 5000):
        r = await web.http.get(f"/api/v1/systems?{query}", headers=inv)
        assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM), query
    r = await web.http.get("/api/v1/search?actor=%FF%FE", headers=inv)
    assert r.status_code < 500 and r.headers["content-type"].startswith(("application/", PROBLEM))
    r = await web.http.get("/api/v1/search", params={"actor": "bank", "limit": 10**6}, headers=inv)
    assert_problem(r, 400, "bad_request")
    r = await web.http.delete("/api/v1/checkpoint")
    assert r.status_code == 405 and r.headers["content-type"].startswith(PROBLEM)
    r = await web.http.get("/api/v1/checkpoints", params={"limit": 0})
    assert_problem(r, 400, "bad_request")


@pytest.mark.asyncio
async def test_tokens_are_bound_to_an_actor_or_a_role(ledger: Harness) -> None:
    from services.web.auth import TokenError

    with pytest.raises(TokenError):
        issue_token(ledger.home, actor="Not A Slug")
    with pytest.raises(TokenError):
        issue_token(ledger.home, role="journalist")
    with pytest.raises(TokenError):
        issue_token(ledger.home, actor="bank", role="auditor")
    with pytest.raises(TokenError):
        revoke_token(ledger.home, "abc")
    token, principal = issue_token(ledger.home, role="regulator", label="inspector Aliyev")
    assert token.startswith("alt_") and principal.kind == "investigator"
    mode = (ledger.home.path / "web" / "tokens.json").stat().st_mode & 0o777
    assert mode == 0o600


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ailedger", *args, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_ailedger_web_serves_prints_its_url_and_stops_cleanly(ledger: Harness) -> None:
    home = str(ledger.home.path)
    status, token, err = await run_cli("web-token", "issue", "--actor", "bank", "--home", home)
    assert status == 0, err
    token = token.strip()
    assert token.startswith("alt_") and "only its hash is stored" in err
    status, listed, _ = await run_cli("web-token", "list", "--home", home)
    assert status == 0 and "actor bank" in listed and token not in listed

    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "ailedger", "web", "--home", home, "--nats", ledger.url],
        *["--port", "0", "--no-ui"],
        stdout=PIPE,
        stderr=PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("web up: http://127.0.0.1:") and f"(pid {proc.pid})" in line, line
        url = line.split()[2]
        await ledger.notary.checkpoint()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.get("/api/v1/checkpoint")
            assert r.status_code == 200
            open_note(r.content, Web(url, http, ledger).verifiers())
            r = await http.post(
                "/api/v1/submissions", content=b"{}", headers={"authorization": f"Bearer {token}"}
            )
            assert_problem(r, 400, "envelope_invalid")  # authenticated, then judged
        proc.send_signal(signal.SIGTERM)
        out, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err_bytes.decode()
        assert "web stopped cleanly" in out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- investigation (the notary stopped) ---------------------------------------------------


@pytest.mark.asyncio
async def test_investigation_needs_an_investigator_and_works_with_the_notary_stopped(
    nats_server: Any, home: Any, tmp_path: Any
) -> None:
    from tests.conftest import running_notary

    async with running_notary(nats_server.url, home) as ledger:
        _, bank = await owner_with_system(ledger)
        await bank.submit(
            bank.event(
                ev.VersionDeployed,
                subject="system/bank-scoring",
                version="1.1",
                artifact_sha256="ab" * 32,
            )
        )
        assert await ledger.notary.checkpoint() is not None
    # the notary is down from here on: the read model is brought up to date by the
    # projector (as `ailedger up` runs it), and the web app reads it and LEDGER
    status, out, err = await run_cli(
        "project", "--once", "--home", str(home.path), "--nats", nats_server.url
    )
    assert status == 0, err
    auditor, _ = issue_token(home, role="auditor")
    gateway_token, _ = issue_token(home, actor="bank")
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_web(
            WebConfig(home, nats_server.url), stop, port=0, ui=False, on_ready=ready.set_result
        )
    )
    await asyncio.wait_for(asyncio.shield(ready), 30)
    auth = {"authorization": f"Bearer {auditor}"}
    try:
        async with httpx.AsyncClient(base_url=ready.result(), timeout=60) as http:
            for path in (
                "/api/v1/systems",
                "/api/v1/systems/bank-scoring",
                "/api/v1/systems/bank-scoring/timeline",
                "/api/v1/systems/bank-scoring/bundle",
                "/api/v1/search?actor=bank",
                "/api/v1/due",
            ):
                assert_problem(await http.get(path), 401, "credentials_missing")
                r = await http.get(path, headers={"authorization": f"Bearer {gateway_token}"})
                assert_problem(r, 403, "not_permitted")

            r = await http.get("/api/v1/systems", headers=auth)
            # no projector runs: the read model is answered as it stands, and says so
            assert r.headers["ailedger-read-model"] == "stale"
            from ledger.views.store import writing

            with writing(home.state_dir) as mine:  # as a running projector holds it
                assert mine
                live = await http.get("/api/v1/systems", headers=auth)
                assert live.headers["ailedger-read-model"] == "live"
            listed = r.json()
            assert [s["system"] for s in listed] == ["bank-scoring"]
            one = (await http.get("/api/v1/systems/bank-scoring", headers=auth)).json()
            # the same verdict as the CLI's, from the same read model
            status, out, err = await run_cli(
                "status",
                "bank-scoring",
                "--json",
                "--home",
                str(home.path),
                "--nats",
                nats_server.url,
            )
            assert status == 0, err
            cli = json.loads(out)
            assert (one["verdict"], one["as_of_index"]) == (cli["verdict"], cli["as_of_index"])
            assert {**one, "at": None} == {**listed[0], "at": None}  # asked a moment apart

            timeline = (
                await http.get("/api/v1/systems/bank-scoring/timeline", headers=auth)
            ).json()
            found = (
                await http.get("/api/v1/search?subject=system/bank-scoring", headers=auth)
            ).json()
            assert [t["index"] for t in timeline] == [e["index"] for e in found["entries"]]
            assert len(timeline) == 2 and timeline[0]["actor"] == "bank"
            assert int(r.headers["ailedger-read-model-index"]) == timeline[-1]["index"]
            by_bank = (
                await http.get("/api/v1/search", params={"actor": "bank"}, headers=auth)
            ).json()
            assert {e["index"] for e in by_bank["entries"]} == {t["index"] for t in timeline}

            # bad questions: a reason code, never a 500
            assert_problem(await http.get("/api/v1/search", headers=auth), 400, "bad_query")
            assert_problem(await http.get("/api/v1/systems/nope", headers=auth), 404, "not_found")
            r = await http.get("/api/v1/systems", params={"at": "yesterday-ish"}, headers=auth)
            assert_problem(r, 400, "bad_request")
            r = await http.get("/api/v1/systems", params={"at": "1999-01-01"}, headers=auth)
            assert_problem(r, 400, "bad_query")
            r = await http.get("/api/v1/due", params={"within": "soon"}, headers=auth)
            assert_problem(r, 400, "bad_query")
            for params in (
                {"within": "99999999999999999999w"},
                {"within": "2w", "at": "9999-12-31T23:59:59Z"},
                {"at_index": str(1 << 63)},
                {"checkpoint": str(10**30)},
            ):
                where = "/api/v1/due" if "within" in params else "/api/v1/systems"
                r = await http.get(where, params=params, headers=auth)
                assert r.status_code == 400, (params, r.text)
                assert r.headers["content-type"].startswith(PROBLEM)
            for path, params in (
                ("/api/v1/systems", {"at": "9999-12-31T23:59:59Z"}),
                ("/api/v1/systems/bank-scoring", {"at": "9999-12-31T23:59:59Z"}),
                ("/api/v1/systems/bank-scoring/timeline", {"until": "9999-12-31T23:59:59Z"}),
                ("/api/v1/search", {"actor": "bank", "after": str(1 << 63)}),
                ("/api/v1/search", {"key": "x" * 5000}),
                ("/api/v1/search", {"type": "'; DROP TABLE entries; --"}),
                ("/api/v1/due", {"system": "nope"}),
            ):
                r = await http.get(path, params=params, headers=auth)
                assert r.status_code < 500, (path, params, r.text)
            assert (await http.get("/api/v1/due", headers=auth)).status_code == 200

            # the evidence bundle verifies offline with the trust policy alone
            r = await http.get("/api/v1/systems/bank-scoring/bundle", headers=auth)
            assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
            path = tmp_path / "bank-scoring.bundle.json"
            path.write_bytes(r.content)
            status, out, err = await run_cli(
                "verify", str(path), "--trust", str(home.trust_path), "--no-pin"
            )
            assert status == 0, out + err
            assert json.loads(r.content)["claim"]["verdicts"][0]["verdict"] == one["verdict"]
            # a byte changed in one of its entries: it no longer verifies
            doc = json.loads(r.content)
            entry = bytearray(base64.b64decode(doc["entries"][-1]["entry"]))
            entry[-5] ^= 1
            doc["entries"][-1]["entry"] = _b64(bytes(entry))
            path.write_text(json.dumps(doc))
            status, out, err = await run_cli(
                "verify", str(path), "--trust", str(home.trust_path), "--no-pin"
            )
            assert status == 1, out + err
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.asyncio
async def test_a_fresh_home_lets_the_gateway_onto_its_embedded_server(tmp_path: Any) -> None:
    """`ailedger up` renders the server's users from the home's bus identities: the
    gateway's is one of them, so the web app can forward submissions from the start."""
    from ledger.bus.auth import GATEWAY
    from ledger.bus.home import init_home
    from ledger.bus.streams import connect
    from services.notary.service import start_home_server
    from tests.conftest import ORIGIN

    home = init_home(tmp_path / "home", origin=ORIGIN)
    server = start_home_server(home)
    server.start()
    try:
        nc = await connect(server.url, max_reconnect_attempts=0, **home.bus_identity(GATEWAY))
        await nc.close()
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_ailedger_web_without_nats_says_which_url_failed(home: Any) -> None:
    status, out, err = await run_cli(
        "web", "--home", str(home.path), "--nats", "nats://127.0.0.1:9", "--port", "0"
    )
    assert status == 3, out + err
    assert "nats://127.0.0.1:9" in err and "[nats_unreachable]" in err
    assert "Traceback" not in err


@pytest.mark.asyncio
async def test_a_forged_checkpoint_on_the_bus_is_never_served(web: Web) -> None:
    """The bus operator can append to CHECKPOINTS (threat model): a note not signed by a
    log key of the trust policy is skipped, newest or not."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.bus.streams import CHECKPOINT_SUBJECT
    from ledger.formats.checkpoint import Checkpoint
    from ledger.formats.note import Signer, sign_note
    from tests.conftest import bus_admin_connection

    ledger = web.ledger
    await owner_with_system(ledger)
    genuine = await ledger.notary.checkpoint()
    assert genuine is not None
    real = parse_checkpoint(open_note(genuine, web.verifiers()).text)
    origin = ledger.home.trust().origin
    impostor = Signer(origin, Ed25519PrivateKey.generate())  # the log's name, another key
    forged = sign_note(Checkpoint(origin, real.size + 40, b"\x07" * 32).body(), impostor)
    async with bus_admin_connection(ledger) as nc:
        await nc.jetstream().publish(CHECKPOINT_SUBJECT, b"not a note at all\n")
        await nc.jetstream().publish(CHECKPOINT_SUBJECT, forged)  # the newest message

    r = await web.http.get("/api/v1/checkpoint")
    assert r.status_code == 200 and r.content == genuine
    sizes = [c["size"] for c in (await web.http.get("/api/v1/checkpoints")).json()["checkpoints"]]
    assert real.size in sizes and real.size + 40 not in sizes
    assert_problem(
        await web.http.get(f"/api/v1/checkpoints/{real.size + 40}"), 404, "proof_unavailable"
    )


@pytest.mark.asyncio
async def test_the_gateway_connects_again_when_nats_py_gave_its_connection_up(
    ledger: Harness,
) -> None:
    from ledger.formats.receipt import Receipt
    from services.web.app import WebContext

    key, _ = await owner_with_system(ledger)
    web = WebContext(WebConfig(ledger.home, ledger.url, submit_timeout=20.0))
    await web.start()
    try:
        first = await web.ensure_gateway()
        assert first is not None
        await first.client.nc.close()  # as nats-py does after its reconnect attempts
        assert first.closed
        again = await web.ensure_gateway()
        assert again is not None and again is not first and not again.closed
        receipt = await again.submit(hand_signed(key, deployment("bank", "bank-scoring")))
        assert isinstance(receipt, Receipt) and receipt.index > 0
    finally:
        await web.close()
