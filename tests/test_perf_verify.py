"""The offline verifier's parallel signature checks (issue 11): each signature is verified
once, checks made ahead while parsing never change a judgement, the process-wide GIL
switch interval it lowers is restored, a server's call touches nothing process-wide, and
the memos of proof hashes and tree nodes change no verdict."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections import Counter
from typing import Any

import pytest

from ledger.bus.client import LedgerClient
from ledger.formats.dsse import PAYLOAD_TYPE, ParsedEnvelope, pae
from ledger.formats.entry import Entry
from ledger.formats.keys import ActorKey
from ledger.law import events as ev
from ledger.verify.bundle import VerificationError, verify_bundle
from tests.conftest import Harness
from tests.test_verify import export, forged_bundle, ledger_entries, small_ledger


def hinted_wrongly(client: LedgerClient, key: ActorKey, event: ev.Event) -> bytes:
    """``event`` signed by ``key``, its key id naming a fingerprint no key has: only a
    hint, so the signer is found among the actor's keys."""
    payload = ev.encode_event(event)
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return json.dumps(
        {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [
                {"keyid": f"{key.actor}/0123456789abcdef", "sig": base64.b64encode(sig).decode()}
            ],
        },
        separators=(",", ":"),
    ).encode()


def deploy(client: LedgerClient, version: str) -> ev.Event:
    return client.event(
        ev.VersionDeployed, subject="system/scorer", version=version, artifact_sha256="b" * 64
    )


async def test_each_signature_is_verified_once_and_a_wrong_key_id_still_finds_the_signer(
    ledger: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await small_ledger(ledger)
    bank = next(c for c in ledger.clients if c.key.actor == "bank")
    for i in range(40):
        await bank.submit(deploy(bank, f"2.{i}"))
    odd = deploy(bank, "3.0")
    await bank.submit_envelope(hinted_wrongly(bank, bank.key, odd), odd.event_id, odd.type_name)
    data = await export(ledger)
    trust = ledger.home.trust()
    doc = json.loads(data)

    calls: Counter[bytes] = Counter()
    verify = ParsedEnvelope.verify

    def counted(self: ParsedEnvelope, public_key: Any) -> bool:
        calls[self.raw] += 1
        return verify(self, public_key)

    monkeypatch.setattr(ParsedEnvelope, "verify", counted)
    reports = [verify_bundle(data, trust, threads=n) for n in (1, 2, 4)]
    assert {r.signatures for r in reports} == {len(doc["entries"])}
    assert len({tuple(r.lines) for r in reports}) == 1
    # The regulator's acts are checked again for the root quorum (every root key);
    # every other entry's signature once per verification, the wrongly hinted one too.
    bank_envelopes = [e for e in calls if b'"keyid":"bank/' in e]
    assert len(bank_envelopes) == 43  # registration, 1.0, 40 deployments, the odd one
    assert {calls[e] for e in bank_envelopes} == {3}


async def test_a_bad_signature_is_the_same_failure_whatever_the_threads(ledger: Harness) -> None:
    """An operator's entry whose signature does not verify (the tree and checkpoint are
    the operator's, well signed): the signature check names it, with one thread or many,
    though the entries after it were checked ahead in other threads."""
    _, bank = await ledger.enrol("bank", ["owner"])
    await ledger.register(bank, "scorer")
    for i in range(30):
        await bank.submit(deploy(bank, f"1.{i}"))
    leaves = [e for e in await ledger_entries(ledger) if isinstance(e, Entry)]
    bad = leaves[12]
    assert bad.subject == "system/scorer"
    env = json.loads(bad.envelope)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    leaves[12] = dataclasses.replace(bad, envelope=json.dumps(env, separators=(",", ":")).encode())
    chains = {"ledger/genesis": 0, "actor/bank": 1, "system/scorer": len(leaves) - 1}
    bundle = json.dumps(forged_bundle(ledger, leaves, chains)).encode()
    for n in (1, 2, 4):
        with pytest.raises(VerificationError) as e:
            verify_bundle(bundle, ledger.home.trust(), threads=n)
        assert (e.value.check, e.value.index) == ("signature", 12), e.value
        assert "no key of bank verifies its DSSE signature" in str(e.value)


async def test_the_switch_interval_is_restored(ledger: Harness) -> None:
    await small_ledger(ledger)
    data = await export(ledger)
    trust = ledger.home.trust()
    before = sys.getswitchinterval()
    verify_bundle(data, trust, threads=2)
    assert sys.getswitchinterval() == before
    broken = json.loads(data)
    broken["chains"].pop("system/scorer")
    with pytest.raises(VerificationError):
        verify_bundle(json.dumps(broken).encode(), trust, threads=2)
    assert sys.getswitchinterval() == before


def test_proof_hashes_are_decoded_once_and_judged_as_before() -> None:
    from ledger.verify.bundle import _hashes

    a, b = bytes(range(32)), bytes(range(1, 33))
    text = [base64.b64encode(h).decode() for h in (a, b)]
    seen: dict[str, bytes] = {}
    assert _hashes(text, "proof", 3, seen) == [a, b]
    assert set(seen) == set(text)
    again = _hashes([text[1], text[0]], "proof", 4, seen)
    assert again == [b, a] and again[0] is seen[text[1]]  # from the memo, not decoded again

    def error(value: object) -> str:
        with pytest.raises(VerificationError) as e:
            _hashes(value, "proof", 5, seen)
        assert e.value.check == "bundle" and e.value.index == 5
        return e.value.message

    short = base64.b64encode(b"x" * 31).decode()
    assert error("AAAA") == "proof must be a list of base64 hashes"
    assert error([text[0], 7]) == "proof must be a base64 string"
    assert error([text[0], ["AAAA"]]) == "proof must be a base64 string"
    assert error([short, text[1]]) == "proof holds a hash that is not 32 bytes"
    # every hash is decoded before sizes are judged: a bad one after a short one is named
    assert error([short, "not base64!"]) == "proof is not valid base64"
    assert error([text[0][:-2] + "B="]) == "proof is not canonical base64"
    assert short not in seen


def test_canonical_base64_is_what_re_encoding_gives() -> None:
    """The bundle's base64 check (strict decoding, zero unused bits in the final
    quantum) accepts exactly the texts that re-encode to themselves: every string of up
    to 5 characters over letters with each low-bit pattern, padding and a bad char."""
    import binascii
    import itertools

    from ledger.verify.bundle import _b64

    def reference(text: str) -> str | bytes:
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            return "not valid"
        return raw if binascii.b2a_base64(raw, newline=False) == text.encode() else "canonical"

    def judged(text: str) -> str | bytes:
        try:
            return _b64(text, "x")
        except VerificationError as e:
            return "not valid" if "not valid" in e.message else "canonical"

    for n in range(6):
        for chars in itertools.product("AQBgw/+9a=-", repeat=n):
            text = "".join(chars)
            assert judged(text) == reference(text), text


async def test_worker_processes_judge_as_threads_do_and_a_dead_worker_changes_nothing(
    ledger: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks made ahead in worker processes (large bundles; here forced on a small
    one): the same report as one thread, the same failure for a bad signature, and when
    the workers die at once or never answer, their batches are verified in the threads."""
    import ledger.verify.bundle as bundle

    _, bank = await ledger.enrol("bank", ["owner"])
    await ledger.register(bank, "scorer")
    for i in range(30):
        await bank.submit(deploy(bank, f"1.{i}"))
    trust = ledger.home.trust()
    good = await export(ledger)
    leaves = [e for e in await ledger_entries(ledger) if isinstance(e, Entry)]
    env = json.loads(leaves[20].envelope)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[9] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    leaves[20] = dataclasses.replace(
        leaves[20], envelope=json.dumps(env, separators=(",", ":")).encode()
    )
    chains = {"ledger/genesis": 0, "actor/bank": 1, "system/scorer": len(leaves) - 1}
    bad = json.dumps(forged_bundle(ledger, leaves, chains)).encode()
    alone = verify_bundle(good, trust, threads=1)

    started: list[Any] = []
    real = bundle._Process.__init__

    def recorded(self: Any) -> None:
        real(self)
        started.append(self)

    monkeypatch.setattr(bundle._Process, "__init__", recorded)
    monkeypatch.setattr(bundle, "PROCESS_MIN_ENTRIES", 1)
    monkeypatch.setattr(bundle, "AHEAD_BATCH", 4)
    monkeypatch.setattr(bundle, "WORKER_TIMEOUT", 1.0)
    monkeypatch.setattr(bundle._Signatures, "steal", False)  # every batch to the workers
    for worker, dies in (
        (bundle._WORKER, False),
        ("import sys; sys.exit(3)", True),
        ("import time; time.sleep(120)", True),  # never answers: stopped after the timeout
    ):
        monkeypatch.setattr(bundle, "_WORKER", worker)
        started.clear()
        # three threads: the caller's and two worker processes, one thread each
        assert verify_bundle(good, trust, threads=3).lines == alone.lines
        assert len(started) == 2
        assert any(p.broken for p in started) == dies
        with pytest.raises(VerificationError) as e:
            verify_bundle(bad, trust, threads=3)
        assert (e.value.check, e.value.index) == ("signature", 20)
        assert all(p.proc.returncode is not None for p in started)  # none left running


async def test_a_server_thread_touches_nothing_process_wide(
    ledger: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Called from a thread other than the main one (a server's), or with
    ``exclusive=False``, verification neither sets the GIL switch interval nor starts
    worker processes, whatever the bundle's size; the CLI's way (the main thread, or
    ``exclusive=True``) does both. The report is the same."""
    import threading

    import ledger.verify.bundle as bundle

    await small_ledger(ledger)
    data = await export(ledger)
    trust = ledger.home.trust()
    started: list[Any] = []
    intervals: list[float] = []
    real_init, real_set = bundle._Process.__init__, sys.setswitchinterval

    def recorded(self: Any) -> None:
        real_init(self)
        started.append(self)

    def set_interval(value: float) -> None:
        intervals.append(value)
        real_set(value)

    monkeypatch.setattr(bundle._Process, "__init__", recorded)
    monkeypatch.setattr(sys, "setswitchinterval", set_interval)
    monkeypatch.setattr(bundle, "PROCESS_MIN_ENTRIES", 1)  # processes even for this bundle

    def in_thread(**kw: Any) -> list[str]:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(verify_bundle(data, trust, threads=2, **kw)))
        t.start()
        t.join()
        assert len(out) == 1
        return list(out[0].lines)

    before = sys.getswitchinterval()
    lines = in_thread()
    assert (started, intervals) == ([], [])
    assert in_thread(exclusive=False) == lines
    assert (started, intervals) == ([], [])
    assert verify_bundle(data, trust, threads=2, exclusive=False).lines == lines
    assert (started, intervals) == ([], [])
    # the command line's way: the main thread, or a thread that says it owns the process
    assert verify_bundle(data, trust, threads=2).lines == lines
    assert len(started) == 1 and len(intervals) == 2  # one worker process beside the caller
    assert in_thread(exclusive=True) == lines
    assert len(started) == 2 and len(intervals) == 4
    assert sys.getswitchinterval() == before
    assert all(p.proc.returncode is not None for p in started)


def test_inclusion_proofs_judged_alike_with_a_shared_node_memo() -> None:
    """The bundle's inclusion proofs share one memo of interior node hashes: each
    leaf's proof of a 37-leaf tree verifies with it, and every proof with one byte
    flipped, a hash dropped or the wrong index fails with the same error as without
    it, though the memo already holds the upper nodes."""
    from ledger.formats.merkle import (
        InclusionProofError,
        MemoryHashStore,
        leaf_hash,
        prove_record,
        verify_inclusion,
    )

    store = MemoryHashStore()
    leaves = [leaf_hash(bytes([i])) for i in range(37)]
    for h in leaves:
        store.append_leaf(h)
    size, root = store.size, store.root()
    memo: dict[bytes, bytes] = {}

    def judged(index: int, proof: list[bytes], shared: dict[bytes, bytes] | None) -> str:
        try:
            verify_inclusion(leaves[index], index, size, proof, root, memo=shared)
        except InclusionProofError as e:
            return str(e)
        return "ok"

    proofs = [prove_record(size, i, store.read_hashes) for i in range(size)]
    for i, proof in enumerate(proofs):
        assert judged(i, proof, memo) == "ok"
    assert memo  # upper nodes are there for the bad proofs below
    for i, proof in enumerate(proofs):
        bad = [(i, proof[:-1]), (i, [*proof, root]), *([] if i == 0 else [(i - 1, proof)])]
        for k in range(len(proof)):
            flipped = bytearray(proof[k])
            flipped[k % 32] ^= 1
            bad.append((i, [*proof[:k], bytes(flipped), *proof[k + 1 :]]))
        for index, p in bad:
            expected = judged(index, p, None)
            assert expected != "ok"
            assert judged(index, p, memo) == expected


async def test_memos_emptied_when_full_change_no_verdict(
    ledger: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the proof-hash and node memos emptied after every entry, a bundle gives the
    same report, and a proof hash flipped in its last entry the same failure."""
    import ledger.verify.bundle as bundle

    await small_ledger(ledger)
    data = await export(ledger)
    trust = ledger.home.trust()
    doc = json.loads(data)
    raw = bytearray(base64.b64decode(doc["entries"][-1]["proof"][0]))
    raw[0] ^= 1
    doc["entries"][-1]["proof"][0] = base64.b64encode(bytes(raw)).decode()
    results = []
    for limit in (bundle.MEMO_LIMIT, 0):
        monkeypatch.setattr(bundle, "MEMO_LIMIT", limit)
        lines = verify_bundle(data, trust).lines
        with pytest.raises(VerificationError) as e:
            verify_bundle(json.dumps(doc).encode(), trust)
        results.append((lines, e.value.check, e.value.index, e.value.message))
    assert results[0] == results[1]
    assert results[0][1:3] == ("inclusion", doc["entries"][-1]["index"])
