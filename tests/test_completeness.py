"""Complete histories in evidence bundles (DESIGN §3, "Heads proof") and pinned verification.

Bundles come from a real ledger (nats-server, notary, real keys). Forgeries that
need the log key (a heads leaf contradicting the entries) are re-signed here
with the notary's key, as an operator holding it could: the verifier must
then report notary misbehaviour.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ledger.bus.proofs import export_bundle, sealed_pass
from ledger.bus.sealed import Leaf
from ledger.bus.streams import connect
from ledger.formats.checkpoint import (
    Checkpoint,
    CosignatureSigner,
    cosignature_verifier_key,
    format_tlog_proof,
    parse_tlog_proof,
)
from ledger.formats.entry import Entry
from ledger.formats.heads import (
    HeadsLeaf,
    HeadsProof,
    HeadValue,
    reference_proof,
    reference_root,
    subject_key,
)
from ledger.formats.keys import generate
from ledger.formats.merkle import MemoryHashStore, prove_record
from ledger.formats.note import Verifier, Verifiers, open_note, sign_note
from ledger.formats.timeutil import format_time
from ledger.formats.tree import TreeStore
from ledger.formats.trust import TrustedKey
from ledger.law.rulebook import DEFAULT_POLICY_ID
from ledger.verify.bundle import verify_bundle
from tests.conftest import ORIGIN, Harness, authorized_server, running_notary, serving
from tests.test_verify import export, failure, small_ledger


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def size_of(doc: dict[str, Any]) -> int:
    return int(doc["checkpoint"].split("\n")[1])


def entry_at(doc: dict[str, Any], index: int) -> Entry:
    item = next(i for i in doc["entries"] if i["index"] == index)
    return Entry.parse(base64.b64decode(item["entry"]))


def ailedger(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (this test's own $XDG_CONFIG_HOME, so its own pins)."""
    return subprocess.run(
        [sys.executable, "-m", "ailedger", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


async def leaves(h: Harness, size: int) -> list[Leaf]:
    """LEDGER's first ``size`` sealed leaves (entries and heads leaves)."""
    out: list[Leaf] = []
    nc = await connect(h.url)
    try:
        await sealed_pass(nc, h.home.trust(), size, lambda seq, leaf: out.append(leaf))
    finally:
        await nc.close()
    return out[:size]


async def resigned(
    h: Harness, doc: dict[str, Any], change: Callable[[dict[bytes, HeadValue]], None]
) -> dict[str, Any]:
    """``doc`` as the holder of the log key can re-sign it: the same leaves, but a heads
    leaf at N-1 over the head map as ``change`` leaves it, and a new checkpoint."""
    size = size_of(doc)
    before = await leaves(h, size - 1)
    values: dict[bytes, HeadValue] = {}
    for leaf in before:
        if isinstance(leaf, Entry):
            old = values.get(subject_key(leaf.subject))
            count = old.count + 1 if old else 1
            values[subject_key(leaf.subject)] = HeadValue(leaf.index, count, leaf.leaf_hash)
    change(values)
    heads = HeadsLeaf(size - 1, len(values), reference_root(values))
    tree = MemoryHashStore()
    for leaf in before:
        tree.append_leaf(leaf.leaf_hash)
    tree.append(heads.encoded)
    note = sign_note(Checkpoint(ORIGIN, size, tree.root()).body(), h.home.notary_signer())
    out = copy.deepcopy(doc)
    out["checkpoint"] = note.decode()
    for item in out["entries"]:
        item["proof"] = [b64(x) for x in prove_record(size, item["index"], tree.read_hashes)]
    out["heads"] = {
        "tlog_proof": format_tlog_proof(
            size - 1, prove_record(size, size - 1, tree.read_hashes), note, extra=heads.encoded
        ).decode(),
        "subjects": {s: reference_proof(values, s).encode() for s in doc["heads"]["subjects"]},
    }
    return out


# --- honest bundles ------------------------------------------------------------------


async def test_an_honest_bundle_reports_each_subject_complete_as_of_its_checkpoint(
    ledger: Harness,
) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    size = size_of(doc)
    assert parse_tlog_proof(doc["heads"]["tlog_proof"].encode()).index == size - 1
    report = verify_bundle(json.dumps(doc).encode(), ledger.home.trust())
    regulator = f"actor/{ledger.home.trust().regulator}"
    policy = f"policy/{DEFAULT_POLICY_ID}"
    # every chain; the regulator (a signer whose keys are in the genesis) and the
    # rulebook's policy subject (no PolicyAdopted yet), each proven to have no entries
    assert set(report.completeness) == set(report.chains) | {regulator, policy}
    assert report.completeness[regulator] is None and report.completeness[policy] is None
    for subject, head in report.chains.items():
        value = report.completeness[subject]
        assert value is not None and value.index == head
        chain = 0
        at: int | None = head
        while at is not None:
            chain, at = chain + 1, entry_at(doc, at).prev
        assert value.count == chain
    when = "not cosigned" if report.cosigned_at is None else "cosigned at"
    text = "\n".join(report.lines)
    assert f"system/scorer: complete as of checkpoint {size} ({when}" in text
    assert f"{regulator}: no entries as of checkpoint {size}" in text
    assert report.completeness["system/scorer"].count == 3  # type: ignore[union-attr]

    # cosigned by a witness of the trust policy: the report says when
    witness = generate("witness")
    name = "witness.example/w1"
    moment = int(datetime.now(UTC).timestamp()) + 1
    log = Verifiers(*(Verifier.from_vkey(k) for k in ledger.home.trust().log_vkeys()))
    opened = open_note(doc["checkpoint"].encode(), log)
    signer = CosignatureSigner(name, witness.private_key, clock=lambda: moment)
    doc["checkpoint"] = sign_note(opened, signer).decode()
    trust = dataclasses.replace(
        ledger.home.trust(),
        witness_keys=[TrustedKey(key=cosignature_verifier_key(name, witness.public_key))],
        witness_quorum=1,
    )
    cosigned = verify_bundle(json.dumps(doc).encode(), trust)
    when = format_time(datetime.fromtimestamp(moment, UTC))
    assert cosigned.cosigned_at == datetime.fromtimestamp(moment, UTC)
    assert (
        f"system/scorer: complete as of checkpoint {size} (cosigned at {when}): 3 entries, "
        f"newest {report.chains['system/scorer']}" in "\n".join(cosigned.lines)
    )


async def test_a_claim_is_judged_at_the_newest_entry_before_the_heads_leaf(
    ledger: Harness,
) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger, claim=True))
    size = size_of(doc)
    (verdict,) = doc["claim"]["verdicts"]
    newest = entry_at(doc, doc["chains"]["system/scorer"])  # the insurer's, the last one
    assert verdict["as_of_index"] == newest.index == size - 2
    report = verify_bundle(json.dumps(doc).encode(), ledger.home.trust())
    assert report.recomputed and "matches the claim" in report.recomputed[0]


# --- an exporter that leaves things out ------------------------------------------------


async def test_a_bundle_without_a_subjects_newest_entry_fails(ledger: Harness) -> None:
    """The attack of issue 10: the exporter drops the newest entry (the incident of
    the last week) and moves the chain's head back. Every remaining link holds."""
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    head = doc["chains"]["system/scorer"]
    dropped = copy.deepcopy(doc)
    dropped["entries"] = [i for i in doc["entries"] if i["index"] != head]
    dropped["chains"]["system/scorer"] = entry_at(doc, head).prev
    err = failure(dropped, trust)
    assert err.check == "completeness" and err.subject == "system/scorer"
    assert f"newest entry at the checkpoint is {head}" in err.message
    assert "leaves out its newest entries" in err.message and not err.misbehaviour

    # ... nor can it leave out the heads proof of that subject
    unproven = copy.deepcopy(dropped)
    del unproven["heads"]["subjects"]["system/scorer"]
    err = failure(unproven, trust)
    assert (err.check, err.subject) == ("completeness", "system/scorer")
    assert "no heads proof" in err.message

    # ... nor the whole key history of a signer, keeping its proof
    insurer_head = doc["chains"]["actor/insurer"]
    no_history = copy.deepcopy(doc)
    no_history["entries"] = [i for i in doc["entries"] if i["index"] not in (insurer_head, head)]
    no_history["chains"]["system/scorer"] = entry_at(doc, head).prev
    del no_history["chains"]["actor/insurer"]
    err = failure(no_history, trust)
    assert (err.check, err.subject) == ("completeness", "actor/insurer")
    assert "counts 1 entry" in err.message and "carries none of them" in err.message

    # ... nor the heads leaf itself
    err = failure({k: v for k, v in doc.items() if k != "heads"}, trust)
    assert err.check == "heads" and "no heads leaf" in err.message


async def test_heads_leaf_and_heads_proofs_are_checked_to_the_byte(ledger: Harness) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    size = size_of(doc)
    verify_bundle(json.dumps(doc).encode(), trust)

    # a flipped byte in a sibling hash of a heads proof
    proof = HeadsProof.parse(doc["heads"]["subjects"]["system/scorer"])
    assert proof.result == "inclusion" and proof.siblings
    sibling = bytearray(proof.siblings[-1])
    sibling[7] ^= 0x01
    flipped = copy.deepcopy(doc)
    flipped["heads"]["subjects"]["system/scorer"] = proof.encode().replace(
        b64(proof.siblings[-1]), b64(bytes(sibling))
    )
    assert flipped != doc
    err = failure(flipped, trust)
    assert (err.check, err.subject) == ("completeness", "system/scorer")
    assert "does not lead to the heads leaf's root" in err.message

    # a count edited in the proof (the chain is unchanged)
    assert proof.value is not None
    edited = copy.deepcopy(doc)
    edited["heads"]["subjects"]["system/scorer"] = proof.encode().replace(
        f"value {proof.value.index} {proof.value.count} ",
        f"value {proof.value.index} {proof.value.count + 1} ",
    )
    err = failure(edited, trust)
    assert (err.check, err.subject) == ("completeness", "system/scorer")

    # another subject's (valid) proof listed for this one
    swapped = copy.deepcopy(doc)
    swapped["heads"]["subjects"]["system/scorer"] = doc["heads"]["subjects"]["actor/bank"]
    err = failure(swapped, trust)
    assert err.check == "completeness" and "about actor/bank" in err.message

    tlog = parse_tlog_proof(doc["heads"]["tlog_proof"].encode())
    assert tlog.extra is not None
    heads = HeadsLeaf.parse(tlog.extra)
    note = doc["checkpoint"].encode()

    def with_tlog(index: int, proof: list[bytes], extra: bytes) -> dict[str, Any]:
        out: dict[str, Any] = copy.deepcopy(doc)
        out["heads"]["tlog_proof"] = format_tlog_proof(index, proof, note, extra=extra).decode()
        return out

    with TreeStore(ledger.home.tree_path) as tree:
        # the heads leaf proven at the wrong index (the newest entry's)
        err = failure(with_tlog(size - 2, tree.inclusion_proof(size - 2, size), tlog.extra), trust)
        assert err.check == "heads" and f"for leaf {size - 2}" in err.message
    # a heads leaf of the wrong size, at the right index
    wrong_size = HeadsLeaf(size - 2, heads.subjects, heads.root).encoded
    err = failure(with_tlog(size - 1, list(tlog.proof), wrong_size), trust)
    assert err.check == "heads" and f"size {size - 2}" in err.message
    # another root: not the leaf the checkpoint covers
    other = HeadsLeaf(size - 1, heads.subjects, bytes(31) + b"\x01").encoded
    err = failure(with_tlog(size - 1, list(tlog.proof), other), trust)
    assert err.check == "heads" and f"not leaf {size - 1}" in err.message
    # an entry passed off as the heads leaf
    err = failure(
        with_tlog(size - 1, list(tlog.proof), base64.b64decode(doc["entries"][0]["entry"])), trust
    )
    assert err.check == "heads" and "not a heads leaf" in err.message


# --- a notary that signs a wrong map ---------------------------------------------------


async def test_a_heads_leaf_contradicting_the_entries_is_notary_misbehaviour(
    ledger: Harness, tmp_path: Path
) -> None:
    await small_ledger(ledger)
    doc = json.loads(await export(ledger))
    trust = ledger.home.trust()
    scorer = subject_key("system/scorer")
    # re-signing the same map gives a bundle that verifies: the forgery itself is sound
    verify_bundle(json.dumps(await resigned(ledger, doc, lambda v: None)).encode(), trust)

    def miscount(values: dict[bytes, HeadValue]) -> None:
        v = values[scorer]
        values[scorer] = HeadValue(v.index, v.count - 1, v.leaf_hash)

    err = failure(await resigned(ledger, doc, miscount), trust)
    assert (err.check, err.subject) == ("completeness", "system/scorer") and err.misbehaviour
    assert "counts 2 entries" in err.message and "holds 3" in err.message

    def forget(values: dict[bytes, HeadValue]) -> None:
        del values[scorer]

    forged = await resigned(ledger, doc, forget)
    assert HeadsProof.parse(forged["heads"]["subjects"]["system/scorer"]).result in (
        "absent-empty",
        "absent-leaf",
    )
    err = failure(forged, trust)
    assert (err.check, err.subject) == ("completeness", "system/scorer") and err.misbehaviour
    assert err.message.startswith("EVIDENCE OF NOTARY MISBEHAVIOUR")

    path = tmp_path / "forged.bundle.json"
    path.write_text(json.dumps(forged))
    trust_file = str(ledger.home.path / "trust.json")
    result = ailedger("verify", str(path), "--trust", trust_file, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is False and report["notary_misbehaviour"] is True
    assert (report["check"], report["subject"]) == ("completeness", "system/scorer")
    text = ailedger("verify", str(path), "--trust", trust_file)
    assert "FAILED completeness (system/scorer" in text.stderr
    assert "EVIDENCE OF NOTARY MISBEHAVIOUR" in text.stderr


# --- pinned verification ---------------------------------------------------------------


def pin_file(origin: str) -> Path:
    return (
        Path(os.environ["XDG_CONFIG_HOME"])
        / "ailedger"
        / "pins"
        / f"{quote(origin, safe='')}.checkpoint"
    )


async def test_verify_pins_the_checkpoint_and_later_bundles_must_extend_it(
    ledger: Harness, tmp_path: Path
) -> None:
    await small_ledger(ledger)
    await ledger.notary.checkpoint()
    home, url = str(ledger.home.path), ledger.url
    trust = str(ledger.home.path / "trust.json")
    first = tmp_path / "first.bundle.json"
    made = ailedger("export", "--system", "scorer", "-o", str(first), "--home", home, "--nats", url)
    assert made.returncode == 0, made.stderr
    size = size_of(json.loads(first.read_text()))
    assert "consistency" not in json.loads(first.read_text())  # nothing pinned yet

    checked = ailedger("verify", str(first), "--trust", trust, "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["completeness"]["system/scorer"]["complete_as_of"] == size
    assert report["completeness"]["system/scorer"]["entries"] == 3
    assert pin_file(ORIGIN).read_bytes() == json.loads(first.read_text())["checkpoint"].encode()
    text = ailedger("verify", str(first), "--trust", trust)  # same checkpoint again: fine
    assert (
        text.returncode == 0 and f"system/scorer: complete as of checkpoint {size}" in text.stdout
    )

    # the ledger grows; a bundle without a consistency proof cannot show it extends the pin
    await ledger.enrol("media", ["owner"])
    await ledger.notary.checkpoint()
    nc = await connect(url)
    try:
        with TreeStore(ledger.home.tree_path) as tree:
            bare = await export_bundle(
                nc, tree, subjects=["system/scorer"], trust=ledger.home.trust()
            )
    finally:
        await nc.close()
    later = size_of(json.loads(bare))
    assert later > size
    (tmp_path / "bare.bundle.json").write_bytes(bare)
    refused = ailedger("verify", str(tmp_path / "bare.bundle.json"), "--trust", trust)
    assert refused.returncode == 1
    assert (
        "FAILED consistency" in refused.stderr
        and f"no consistency proof from size {size}" in refused.stderr
    )
    assert f"ailedger export --since {size}" in refused.stderr and "--no-pin" in refused.stderr
    assert pin_file(ORIGIN).read_bytes() == json.loads(first.read_text())["checkpoint"].encode()

    # `ailedger export` adds the proof from the user's pin by default: no flags needed
    second = tmp_path / "second.bundle.json"
    made = ailedger(
        "export", "--system", "scorer", "-o", str(second), "--home", home, "--nats", url
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(second.read_text())["consistency"]["old_size"] == size
    checked = ailedger("verify", str(second), "--trust", trust)
    assert checked.returncode == 0, checked.stderr
    assert f"extends your pinned checkpoint of size {size}" in checked.stdout
    assert pin_file(ORIGIN).read_bytes() == json.loads(second.read_text())["checkpoint"].encode()

    # the older bundle now predates the pin; --no-pin neither checks nor moves it
    older = ailedger("verify", str(first), "--trust", trust)
    assert older.returncode == 1 and "newer than the bundle's" in older.stderr
    unpinned = ailedger("verify", str(first), "--trust", trust, "--no-pin")
    assert unpinned.returncode == 0, unpinned.stderr
    assert pin_file(ORIGIN).read_bytes() == json.loads(second.read_text())["checkpoint"].encode()


async def test_verify_run_twice_catches_a_fork_without_since(tmp_path: Path, home: Any) -> None:
    """Two ledgers from the same keys and genesis (a notary showing two histories):
    each bundle verifies alone; the second `ailedger verify` refuses it."""
    a_server = authorized_server(tmp_path / "a", home)
    b_server = authorized_server(tmp_path / "b", home)
    bundles = {}
    with serving(a_server, home), serving(b_server, home):
        async with running_notary(a_server.url, home) as a:
            _, bank = await a.enrol("bank", ["owner"])
            await a.register(bank, "scorer")
            bundles["a"] = await export(a)
        home.tree_path.unlink()
        async with running_notary(b_server.url, home) as b:
            _, bank_b = await b.enrol("bank", ["owner"])
            await b.register(bank_b, "scorer")
            bundles["same size"] = await export(b)
            await b.enrol("media", ["owner"])
            size_a = size_of(json.loads(bundles["a"]))
            bundles["larger"] = await export(b, since=size_a)
    trust = str(home.path / "trust.json")
    for name, data in bundles.items():
        (tmp_path / f"{name}.json").write_bytes(data)
        verify_bundle(data, home.trust())  # each is well signed and complete on its own
    assert size_of(json.loads(bundles["same size"])) == size_a

    assert ailedger("verify", str(tmp_path / "a.json"), "--trust", trust).returncode == 0
    same = ailedger("verify", str(tmp_path / "same size.json"), "--trust", trust)
    assert same.returncode == 1 and "different root: the ledger forked" in same.stderr
    larger = ailedger("verify", str(tmp_path / "larger.json"), "--trust", trust)
    assert larger.returncode == 1 and "forked or rewritten" in larger.stderr
    # opting out skips the check (and a fork then verifies on its own)
    assert (
        ailedger("verify", str(tmp_path / "larger.json"), "--trust", trust, "--no-pin").returncode
        == 0
    )
    # the pin did not move to the fork
    assert pin_file(ORIGIN).read_bytes() == json.loads(bundles["a"])["checkpoint"].encode()


def test_a_pin_is_per_origin_and_only_moves_forward(tmp_path: Path) -> None:
    from ledger.verify.pins import PinStore

    pins = PinStore(tmp_path / "pins")
    assert pins.load(ORIGIN) is None and pins.size(ORIGIN) is None
    pins.save(ORIGIN, b"test.ailedger.kz/registry\n5\n" + b64(bytes(32)).encode() + b"\n\nsig\n")
    assert pins.size(ORIGIN) == 5 and pins.size("other.example/log") is None
    assert pins.path(ORIGIN).name == "test.ailedger.kz%2Fregistry.checkpoint"
