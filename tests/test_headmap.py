"""The incremental head map (ledger.formats.headmap): its root equals the recursive
ROOT of DESIGN §3 on random maps built over many batches, its proofs equal the
reference proofs and verify, rollback and reopening keep the committed map, a commit
survives SIGKILL whole, and the negative cases of DESIGN §3 fail on real proofs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.formats.headmap import (
    HeadMap,
    HeadStoreError,
    MemoryNodeStore,
    NodeStore,
    SqliteNodeStore,
    depth_for,
)
from ledger.formats.heads import (
    EMPTY,
    HeadsLeaf,
    HeadsProof,
    HeadsProofError,
    HeadValue,
    MalformedHeadsError,
    bit,
    reference_proof,
    reference_root,
    subject_key,
)


def entry_hash(index: int) -> bytes:
    return hashlib.sha256(f"entry {index}".encode()).digest()


class Model:
    """The map by its definition: a dict of values, replayed entry by entry."""

    def __init__(self) -> None:
        self.items: dict[bytes, HeadValue] = {}

    def note(self, subject: str, index: int) -> None:
        key = subject_key(subject)
        count = self.items[key].count + 1 if key in self.items else 1
        self.items[key] = HeadValue(index, count, entry_hash(index))

    def copy(self) -> Model:
        model = Model()
        model.items = dict(self.items)
        return model


def filled(store: NodeStore, subjects: int, entries: int, batch: int = 50) -> tuple[HeadMap, Model]:
    """A map of ``entries`` entries over ``subjects`` subjects, committed every ``batch``."""
    heads, model = HeadMap(store), Model()
    for i in range(entries):
        subject = f"system/{(i * 7919) % subjects}"
        heads.note(subject, i, entry_hash(i))
        model.note(subject, i)
        if heads.pending == batch:
            heads.stage(i + 1)
            heads.commit()
    heads.stage(entries)
    heads.commit()
    return heads, model


def store_of(kind: str, tmp: Path) -> NodeStore:
    if kind == "sqlite":
        return SqliteNodeStore(tmp / "heads.sqlite")
    if kind == "sqlite-small":
        return SqliteNodeStore(tmp / "heads.sqlite", cache_nodes=20)  # bucket depth 3
    return MemoryNodeStore(depth=int(kind.removeprefix("memory-")))


STORES = ["memory-0", "memory-2", "memory-16", "sqlite", "sqlite-small"]

# -- the incremental root is the recursive ROOT -----------------------------------------

batches = st.lists(  # each batch: notes as (subject number, rollback first?)
    st.tuples(st.lists(st.integers(0, 60), max_size=40), st.booleans()), min_size=1, max_size=8
)


@pytest.mark.parametrize("kind", STORES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=batches, probes=st.lists(st.integers(0, 90), min_size=1, max_size=10))
def test_incremental_root_and_proofs_equal_the_reference(
    kind: str, rounds: list[tuple[list[int], bool]], probes: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        heads = HeadMap(store_of(kind, Path(tmp)))
        model = Model()
        index = 0
        for notes, retry in rounds:
            for n in notes:
                heads.note(f"actor/{n}", index, entry_hash(index))
                model.note(f"actor/{n}", index)
                index += 1
            size = index + 1  # room for the heads leaf itself
            leaf = heads.stage(size)
            if retry:  # a failed append: roll back, stage again with the same notes
                heads.rollback()
                assert heads.pending == len(notes)
                assert heads.stage(size) == leaf
            heads.commit()
            index = size
            assert leaf == HeadsLeaf(size, len(model.items), reference_root(model.items))
            assert (heads.size, heads.subjects, heads.root) == (
                leaf.size,
                leaf.subjects,
                leaf.root,
            )
            assert heads.pending == 0
            for n in probes:
                proof = heads.prove(f"actor/{n}")
                assert proof == reference_proof(model.items, f"actor/{n}")
                proof.verify(heads.root)
                assert HeadsProof.parse(proof.encode()) == proof
        heads.close()


@pytest.mark.parametrize("kind", STORES)
def test_members_and_both_kinds_of_absence_prove_and_verify(kind: str, tmp_path: Path) -> None:
    heads, model = filled(store_of(kind, tmp_path), subjects=300, entries=700)
    assert heads.root == reference_root(model.items)
    results = []
    for n in range(600):  # system/0..299 are members, the rest are not
        subject = f"system/{n}"
        proof = heads.prove(subject)
        assert proof == reference_proof(model.items, subject)
        proof.verify(heads.root)
        results.append(proof.result)
        if proof.result == "inclusion":
            assert proof.value == model.items[subject_key(subject)] == heads.value(subject)
        else:
            assert heads.value(subject) is None
    assert results[:300] == ["inclusion"] * 300
    assert {"absent-empty", "absent-leaf"} <= set(results[300:])


def test_the_empty_map(tmp_path: Path) -> None:
    for store in (MemoryNodeStore(), SqliteNodeStore(tmp_path / "heads.sqlite")):
        heads = HeadMap(store)
        assert (heads.size, heads.subjects, heads.root, heads.pending) == (0, 0, EMPTY, 0)
        proof = heads.prove("system/x")
        assert (proof.result, proof.depth) == ("absent-empty", 0)
        proof.verify(EMPTY)
        assert heads.stage(0) == HeadsLeaf(0, 0, EMPTY)
        heads.commit()
        assert heads.stage(5) == HeadsLeaf(5, 0, EMPTY)  # no entry of any subject yet
        heads.commit()
        assert heads.size == 5


# -- notes, counts, staging ---------------------------------------------------------------


def test_counts_increase_with_notes_and_replays_are_ignored(tmp_path: Path) -> None:
    heads = HeadMap(SqliteNodeStore(tmp_path / "heads.sqlite"))
    assert heads.value("actor/bank") is None
    heads.note("actor/bank", 0, entry_hash(0))
    heads.note("actor/insurer", 1, entry_hash(1))
    heads.note("actor/bank", 3, entry_hash(3))
    assert heads.value("actor/bank") == HeadValue(3, 2, entry_hash(3))
    assert heads.pending == 3
    heads.note("actor/bank", 2, entry_hash(2))  # out of order: ignored
    heads.note("actor/bank", 3, entry_hash(3))  # the same again: ignored
    assert heads.pending == 3
    heads.stage(4)
    heads.commit()
    assert heads.value("actor/bank") == HeadValue(3, 2, entry_hash(3))
    heads.note("actor/bank", 2, entry_hash(2))  # below the map's size: a replay
    heads.note("actor/bank", 4, entry_hash(4))  # the heads leaf's own index
    heads.note("actor/bank", 5, entry_hash(5))
    assert heads.pending == 2
    assert heads.value("actor/bank") == HeadValue(5, 4, entry_hash(5))
    leaf = heads.stage(6)
    heads.commit()
    assert heads.value("actor/bank") == HeadValue(5, 4, entry_hash(5))
    assert heads.prove("actor/bank").value == HeadValue(5, 4, entry_hash(5))
    assert leaf.subjects == 2


def test_stage_refuses_a_size_that_does_not_cover_the_map() -> None:
    heads = HeadMap(MemoryNodeStore())
    heads.note("actor/bank", 4, entry_hash(4))
    with pytest.raises(ValueError, match="does not cover"):
        heads.stage(4)
    heads.stage(5)
    heads.commit()
    with pytest.raises(ValueError, match="below the map's size"):
        heads.stage(4)
    with pytest.raises(RuntimeError, match="nothing staged"):
        heads.commit()


def test_rollback_restores_the_committed_map_and_keeps_the_notes(tmp_path: Path) -> None:
    heads, model = filled(SqliteNodeStore(tmp_path / "heads.sqlite"), subjects=80, entries=200)
    before = (heads.size, heads.subjects, heads.root)
    proofs = {f"system/{n}": heads.prove(f"system/{n}") for n in range(0, 120, 3)}
    for i in range(200, 260):
        heads.note(f"system/{i % 100}", i, entry_hash(i))
    staged = heads.stage(260)
    assert staged.root != before[2]
    # while staged, the committed map is what the properties and proofs show
    assert (heads.size, heads.subjects, heads.root) == before
    assert {s: heads.prove(s) for s in proofs} == proofs
    heads.rollback()
    assert (heads.size, heads.subjects, heads.root) == before
    assert heads.pending == 60
    assert {s: heads.prove(s) for s in proofs} == proofs
    heads.note("system/7", 260, entry_hash(260))  # a note between two attempts
    again = heads.stage(261)
    heads.commit()
    for i in range(200, 261):
        model.note(f"system/{i % 100}" if i < 260 else "system/7", i)
    assert again == HeadsLeaf(261, len(model.items), reference_root(model.items))
    assert heads.root == again.root and heads.pending == 0


def test_a_note_after_stage_stays_pending_after_commit() -> None:
    heads = HeadMap(MemoryNodeStore(depth=2))
    heads.note("actor/a", 0, entry_hash(0))
    heads.stage(1)
    heads.note("actor/a", 2, entry_hash(2))  # after the heads leaf at index 1
    heads.commit()
    assert heads.size == 1 and heads.pending == 1
    assert heads.prove("actor/a").value == HeadValue(0, 1, entry_hash(0))
    assert heads.value("actor/a") == HeadValue(2, 2, entry_hash(2))
    heads.stage(3)
    heads.commit()
    assert heads.prove("actor/a").value == HeadValue(2, 2, entry_hash(2))


def test_reset_empties_the_map(tmp_path: Path) -> None:
    path = tmp_path / "heads.sqlite"
    heads, _ = filled(SqliteNodeStore(path), subjects=30, entries=90)
    heads.note("system/1", 90, entry_hash(90))
    heads.reset()
    assert (heads.size, heads.subjects, heads.root, heads.pending) == (0, 0, EMPTY, 0)
    assert heads.value("system/1") is None
    heads.close()
    heads = HeadMap(SqliteNodeStore(path))
    assert (heads.size, heads.root) == (0, EMPTY)
    assert heads.prove("system/1").result == "absent-empty"


# -- on disk --------------------------------------------------------------------------


def test_reopened_from_disk_the_map_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "heads.sqlite"
    heads, model = filled(SqliteNodeStore(path), subjects=500, entries=1500, batch=256)
    committed = (heads.size, heads.subjects, heads.root)
    proofs = [heads.prove(f"system/{n}") for n in range(0, 700, 13)]
    heads.note("system/1", 1500, entry_hash(1500))
    heads.stage(1501)  # staged, never committed: not on disk
    heads.close()
    heads = HeadMap(SqliteNodeStore(path, cache_nodes=10))  # keeps the depth it was made with
    assert (heads.size, heads.subjects, heads.root) == committed
    assert [heads.prove(f"system/{n}") for n in range(0, 700, 13)] == proofs
    assert heads.pending == 0
    heads.note("system/1", 1501, entry_hash(1501))
    model.note("system/1", 1501)
    assert heads.stage(1502).root == reference_root(model.items)


def test_commits_survive_sigkill_whole(tmp_path: Path) -> None:
    """A writer killed at a random moment leaves the last commit: the reopened map
    equals the reference map of exactly the entries below its size."""
    path = tmp_path / "heads.sqlite"
    child = textwrap.dedent(
        f"""
        import hashlib, sys
        from pathlib import Path
        from ledger.formats.headmap import HeadMap, SqliteNodeStore
        heads = HeadMap(SqliteNodeStore(Path({str(path)!r})))
        for i in range(10**9):
            heads.note(f"system/{{(i * 7919) % 5000}}", i,
                       hashlib.sha256(f"entry {{i}}".encode()).digest())
            if heads.pending == 300:
                heads.stage(i + 1)
                heads.commit()
                if heads.size > 600:
                    print("committed", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "committed\n"
    time.sleep(0.7)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    heads = HeadMap(SqliteNodeStore(path))
    assert heads.size > 600 and heads.size % 300 == 0
    model = Model()
    for i in range(heads.size):
        model.note(f"system/{(i * 7919) % 5000}", i)
    assert heads.root == reference_root(model.items)
    assert heads.subjects == len(model.items)


def test_a_file_that_is_not_a_head_map_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(HeadStoreError, match="not a head map"):
        SqliteNodeStore(other)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(HeadStoreError) as caught:
        SqliteNodeStore(garbage)
    assert caught.value.code == "head_store"
    newer = tmp_path / "newer.sqlite"
    SqliteNodeStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(HeadStoreError, match="schema version 7"):
        SqliteNodeStore(newer)


def test_a_tampered_bucket_is_caught_on_open(tmp_path: Path) -> None:
    path = tmp_path / "heads.sqlite"
    heads, _ = filled(SqliteNodeStore(path), subjects=50, entries=120)
    heads.close()
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE buckets SET hash = zeroblob(32) WHERE id = (SELECT min(id) FROM buckets)"
        )
    with pytest.raises(HeadStoreError, match="rebuild it from LEDGER"):
        HeadMap(SqliteNodeStore(path))


def test_bucket_depth_follows_cache_nodes() -> None:
    assert depth_for(1_000_000) == 18  # 2^19 top prefixes <= 1,000,000 (the default)
    assert depth_for(200_000) == 16  # 2^17 top prefixes <= 200,000
    assert depth_for(1) == 0
    for n in (200_000, 1_000_000):
        assert (2 << depth_for(n)) <= n < (2 << (depth_for(n) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteNodeStore(Path(tmp) / "heads.sqlite")
        assert store.depth == 18
        store.close()


# -- the negative cases of DESIGN §3, on real proofs ------------------------------------


@pytest.fixture(scope="module")
def mapped() -> tuple[HeadMap, Model]:
    return filled(MemoryNodeStore(depth=4), subjects=200, entries=500)


def proofs_of(heads: HeadMap, result: str) -> list[HeadsProof]:
    found = [heads.prove(f"system/{n}") for n in range(400)]
    return [p for p in found if p.result == result and p.depth >= 2]


def test_a_flipped_sibling_byte_fails(mapped: tuple[HeadMap, Model]) -> None:
    heads, _ = mapped
    for result in ("inclusion", "absent-empty", "absent-leaf"):
        proof = proofs_of(heads, result)[0]
        proof.verify(heads.root)
        for j in range(proof.depth):
            sibling = bytearray(proof.siblings[j])
            sibling[j % 32] ^= 0x01
            siblings = (*proof.siblings[:j], bytes(sibling), *proof.siblings[j + 1 :])
            forged = HeadsProof.parse(dataclasses.replace(proof, siblings=siblings).encode())
            with pytest.raises(HeadsProofError):
                forged.verify(heads.root)


def test_a_wrong_depth_fails(mapped: tuple[HeadMap, Model]) -> None:
    heads, _ = mapped
    for result in ("inclusion", "absent-empty", "absent-leaf"):
        proof = proofs_of(heads, result)[0]
        text = proof.encode()
        # the depth line alone changed: it no longer counts the siblings
        for depth in (proof.depth - 1, proof.depth + 1):
            with pytest.raises(MalformedHeadsError):
                HeadsProof.parse(text.replace(f"\ndepth {proof.depth}\n", f"\ndepth {depth}\n"))
        # one level fewer or more, siblings to match: the fold misses the root
        shorter = dataclasses.replace(proof, depth=proof.depth - 1, siblings=proof.siblings[1:])
        with pytest.raises(HeadsProofError):
            HeadsProof.parse(shorter.encode()).verify(heads.root)
        try:
            longer = dataclasses.replace(
                proof, depth=proof.depth + 1, siblings=(proof.siblings[0], *proof.siblings)
            )
        except MalformedHeadsError:
            assert result == "absent-leaf"  # the other key does not share one more bit
            continue
        with pytest.raises(HeadsProofError):
            HeadsProof.parse(longer.encode()).verify(heads.root)


def test_an_absent_leaf_whose_other_key_does_not_share_the_prefix_fails(
    mapped: tuple[HeadMap, Model],
) -> None:
    heads, model = mapped
    proof = proofs_of(heads, "absent-leaf")[0]
    assert proof.other is not None
    key = subject_key(proof.subject)
    strangers = [
        (k, v)
        for k, v in model.items.items()
        if any(bit(k, i) != bit(key, i) for i in range(proof.depth))
    ]
    assert strangers
    with pytest.raises(MalformedHeadsError, match="does not share"):
        dataclasses.replace(proof, other=strangers[0])
    text = proof.encode()
    other_line = next(line for line in text.split("\n") if line.startswith("other "))
    k, v = strangers[0]
    forged = text.replace(
        other_line,
        f"other {base64.b64encode(k).decode()} {v.index} {v.count} "
        f"{base64.b64encode(v.leaf_hash).decode()}",
    )
    with pytest.raises(MalformedHeadsError, match="does not share"):
        HeadsProof.parse(forged)
    # a key that does share the prefix, but is not the one in the map there: no fold
    sharing = bytearray(proof.other[0])
    sharing[31] ^= 0x01
    with pytest.raises(HeadsProofError):
        dataclasses.replace(proof, other=(bytes(sharing), proof.other[1])).verify(heads.root)
    # the subject's own key as the other: refused
    with pytest.raises(MalformedHeadsError):
        dataclasses.replace(proof, other=(key, proof.other[1]))


def test_an_inclusion_with_a_wrong_count_or_index_fails(mapped: tuple[HeadMap, Model]) -> None:
    heads, _ = mapped
    proof = proofs_of(heads, "inclusion")[0]
    value = proof.value
    assert value is not None and value.count >= 1
    wrong = [
        HeadValue(value.index, value.count + 1, value.leaf_hash),
        HeadValue(value.index + 1, value.count, value.leaf_hash),
        HeadValue(value.index, value.count, entry_hash(value.index + 1)),
    ]
    if value.count > 1:
        wrong.append(HeadValue(value.index, value.count - 1, value.leaf_hash))
    for v in wrong:
        with pytest.raises(HeadsProofError):
            HeadsProof.parse(dataclasses.replace(proof, value=v).encode()).verify(heads.root)


def test_an_empty_deepest_sibling_fails(mapped: tuple[HeadMap, Model]) -> None:
    heads, _ = mapped
    for result in ("inclusion", "absent-empty", "absent-leaf"):
        proof = proofs_of(heads, result)[0]
        # the same leaf claimed one level deeper, beside an EMPTY sibling
        try:
            deeper = dataclasses.replace(
                proof, depth=proof.depth + 1, siblings=(EMPTY, *proof.siblings)
            )
        except MalformedHeadsError:
            continue  # absent-leaf whose other key differs at that bit
        with pytest.raises(HeadsProofError, match="deepest sibling is EMPTY"):
            deeper.verify(deeper.fold())  # refused even where the fold agrees
        with pytest.raises(HeadsProofError):
            deeper.verify(heads.root)
