"""Batch seals, receipts v2 and signed rejections (DESIGN §3): exact bytes,
strict all-or-nothing parsing (every byte flip fails), one seal per batch."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from ledger.formats.dsse import sign_envelope
from ledger.formats.entry import Entry
from ledger.formats.keys import generate
from ledger.formats.merkle import MemoryHashStore, prove_record
from ledger.formats.note import Signer, Verifiers, generate_key
from ledger.formats.receipt import ReceiptError, make_receipt, open_receipt
from ledger.formats.rejection import RejectionNoteError, open_rejection, sign_rejection
from ledger.formats.seal import SealCache, SealError, open_seal, open_seal_header, sign_seal

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
EVENT = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def _signer(name: str = "ailedger.test/log") -> Signer:
    skey, _ = generate_key(name)
    return Signer.from_skey(skey)


KEY = generate("acme")


def _envelope(n: int, event_id: str = EVENT) -> bytes:
    return sign_envelope(f'{{"event_id":"{event_id}","n":{n}}}'.encode(), KEY)


def _batch(signer: Signer, n: int = 5) -> tuple[list[Entry], MemoryHashStore, object]:
    tree = MemoryHashStore()
    entries = [
        Entry(
            i,
            T0 + timedelta(seconds=i),
            f"system/s{i % 2}",
            i - 2 if i >= 2 else None,
            _envelope(i),
        )
        for i in range(n)
    ]
    for e in entries:
        tree.append_leaf(e.leaf_hash)
    seal = sign_seal(signer, 1, n, tree.root(), entries[-1].integrated)
    return entries, tree, seal


def _flips(data: bytes) -> list[bytes]:
    out = []
    for i in range(len(data)):
        b = bytearray(data)
        b[i] ^= 0x01
        out.append(bytes(b))
    return out


def test_seal_exact_bytes_and_round_trip() -> None:
    signer = _signer()
    seal = sign_seal(signer, 7, 12, bytes(range(32)), T0)
    body = seal.note.split(b"\n\n")[0] + b"\n"
    assert body == (
        b"ailedger/seal/v1\nailedger.test/log\nseq 7\nsize 12\n"
        b"root AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nlast 2026-03-01T09:30:00Z\n"
    )
    verifiers = Verifiers(signer.verifier())
    assert open_seal(seal.note, verifiers) == seal
    assert open_seal_header(seal.header_value, verifiers) == seal


def test_seal_every_byte_flip_fails() -> None:
    signer = _signer()
    seal = sign_seal(signer, 7, 12, bytes(range(32)), T0)
    verifiers = Verifiers(signer.verifier())
    for bad in _flips(seal.note):
        with pytest.raises(SealError):
            open_seal(bad, verifiers)


def test_seal_by_another_key_or_name_fails() -> None:
    signer = _signer()
    seal = sign_seal(_signer(), 1, 1, bytes(32), T0)
    with pytest.raises(SealError):
        open_seal(seal.note, Verifiers(signer.verifier()))
    other = sign_seal(_signer("someone.else"), 1, 1, bytes(32), T0)
    with pytest.raises(SealError):
        open_seal(other.note, Verifiers(signer.verifier()))


def test_seal_cache_verifies_each_seal_once_and_checks_validity() -> None:
    signer = _signer()
    seal = sign_seal(signer, 1, 3, bytes(32), T0)
    cache = SealCache(Verifiers(signer.verifier()))
    for _ in range(5):
        assert cache.open(seal.note) == seal
    assert cache.verified == 1
    expired = SealCache(Verifiers(signer.verifier()), valid_at=lambda s: s.last < T0)
    with pytest.raises(SealError, match="no log key valid"):
        expired.open(seal.note)


def test_receipt_v2_exact_bytes_and_proves_the_entry() -> None:
    signer = _signer()
    entries, tree, seal = _batch(signer)
    e = entries[3]
    proof = prove_record(tree.size, e.index, tree.read_hashes)
    receipt = make_receipt(e, EVENT, proof, seal)  # type: ignore[arg-type]
    head, _, rest = receipt.note.partition(b"\n\n")
    lines = head.split(b"\n")
    assert lines[:6] == [
        b"ailedger/receipt/v2",
        b"index 3",
        b"integrated 2026-03-01T09:30:03Z",
        b"subject system/s1",
        b"prev 1",
        b"event " + EVENT.encode(),
    ]
    assert [base64.b64decode(x) for x in lines[6:]] == proof
    assert rest == seal.note  # type: ignore[attr-defined]
    cache = SealCache(Verifiers(signer.verifier()))
    opened = open_receipt(receipt.note, e.envelope, cache)
    assert opened.entry == e and opened.leaf_hash == e.leaf_hash and opened.origin == signer.name
    # Another envelope (the submitter's own bytes differ) is not proven,
    # nor is the receipt's event line bound to anything but the envelope's id.
    with pytest.raises(ReceiptError):
        open_receipt(receipt.note, entries[2].envelope, cache)
    other = "0190a1b2-c3d4-7e5f-8a9b-000000000000"
    with pytest.raises(ReceiptError, match="not this envelope"):
        open_receipt(receipt.note.replace(EVENT.encode(), other.encode()), e.envelope, cache)


def test_receipt_every_byte_flip_fails() -> None:
    signer = _signer()
    entries, tree, seal = _batch(signer)
    e = entries[2]
    receipt = make_receipt(e, EVENT, prove_record(tree.size, 2, tree.read_hashes), seal)  # type: ignore[arg-type]
    verifiers = Verifiers(signer.verifier())
    for bad in _flips(receipt.note):
        with pytest.raises(ReceiptError):
            open_receipt(bad, e.envelope, verifiers)


def test_receipts_of_one_batch_share_one_seal_signature() -> None:
    signer = _signer()
    entries, tree, seal = _batch(signer, 9)
    cache = SealCache(Verifiers(signer.verifier()))
    for e in entries:
        r = make_receipt(e, EVENT, prove_record(tree.size, e.index, tree.read_hashes), seal)  # type: ignore[arg-type]
        open_receipt(r.note, e.envelope, cache)
    assert cache.verified == 1


def test_rejection_exact_bytes_round_trip_and_flips() -> None:
    signer = _signer()
    env = _envelope(1)
    r = sign_rejection(signer, EVENT, env, "key_revoked", T0)
    digest = base64.b64encode(hashlib.sha256(env).digest())
    assert r.note.split(b"\n\n")[0] + b"\n" == (
        b"ailedger/rejection/v1\nailedger.test/log\nevent " + EVENT.encode() + b"\n"
        b"envelope " + digest + b"\ncode key_revoked\nat 2026-03-01T09:30:00Z\n"
    )
    verifiers = Verifiers(signer.verifier())
    opened = open_rejection(r.note, verifiers)
    assert opened == r and opened.is_for(env) and not opened.is_for(env + b" ")
    for bad in _flips(r.note):
        with pytest.raises(RejectionNoteError):
            open_rejection(bad, verifiers)
    with pytest.raises(RejectionNoteError):
        open_rejection(sign_rejection(_signer(), EVENT, env, "schema", T0).note, verifiers)


def test_root_after_equals_the_stored_root() -> None:
    from ledger.formats.seal import root_after

    tree = MemoryHashStore()
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(37)]
    for cut in (0, 1, 5, 16, 30):
        tree = MemoryHashStore()
        for lh in leaves[:cut]:
            tree.append_leaf(lh)
        got = root_after(cut, tree.read_hashes, leaves[cut:])
        for lh in leaves[cut:]:
            tree.append_leaf(lh)
        assert got == tree.root()
