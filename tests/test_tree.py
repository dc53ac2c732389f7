"""The file tree store: same hashes as merkle.MemoryHashStore, durable, shared, O(log n)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.formats import merkle
from ledger.formats.tree import TreeError, TreeStore

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "rfc9162-tlog.json").read_text()
)
LEAVES: list[bytes] = [bytes.fromhex(leaf) for leaf in VECTORS["leaves"]]
LEAF_HASHES: list[bytes] = [merkle.leaf_hash(leaf) for leaf in LEAVES]
ROOTS: dict[int, bytes] = {int(k): bytes.fromhex(v) for k, v in VECTORS["roots"].items()}
H = merkle.HASH_SIZE


def memory_store(leaf_hashes: list[bytes]) -> merkle.MemoryHashStore:
    mem = merkle.MemoryHashStore()
    for h in leaf_hashes:
        mem.append_leaf(h)
    return mem


def synthetic_leaf(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def append_in_batches(store: TreeStore, leaf_hashes: list[bytes], sizes: list[int]) -> None:
    pos = 0
    for k in sizes:
        assert store.append(pos, leaf_hashes[pos : pos + k]) == min(pos + k, len(leaf_hashes))
        pos += k
    assert pos >= len(leaf_hashes)


def file_hashes(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [data[i : i + H] for i in range(0, len(data), H)]


def test_vectors_match_memory_store(tmp_path: Path) -> None:
    n = len(LEAVES)
    mem = memory_store(LEAF_HASHES)
    with TreeStore(tmp_path / "tree") as store:
        # Uneven batches: 1, 2, 3, ... leaves per append.
        append_in_batches(store, LEAF_HASHES, list(range(1, 13)))
        assert store.size == n
        # The file is exactly the Go tlog stored hash layout.
        assert file_hashes(tmp_path / "tree") == mem.read_hashes(range(merkle.stored_hash_count(n)))
        assert store.root(0) == merkle.empty_root()
        for size in range(1, n + 1):
            root = store.root(size)
            assert root == merkle.tree_hash(size, mem.read_hashes) == ROOTS[size]
            for index in range(size):
                proof = store.inclusion_proof(index, size)
                assert proof == merkle.prove_record(size, index, mem.read_hashes)
                merkle.verify_inclusion(LEAF_HASHES[index], index, size, proof, root)
            for old in range(size + 1):
                proof = store.consistency_proof(old, size)
                assert proof == merkle.prove_tree(size, old, mem.read_hashes)
                merkle.verify_consistency(old, size, store.root(old), root, proof)
        assert store.root() == ROOTS[n]
    # Reopened, it serves Go's proofs byte for byte.
    with TreeStore(tmp_path / "tree") as store:
        for v in VECTORS["inclusion"]:
            assert [h.hex() for h in store.inclusion_proof(v["index"], v["size"])] == v["path"]
        for v in VECTORS["consistency"]:
            assert [h.hex() for h in store.consistency_proof(v["old"], v["new"])] == v["path"]


def test_create_reopen_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tree"
    with TreeStore(path) as store:
        assert store.size == 0
        assert store.root() == merkle.empty_root()
        assert store.consistency_proof(0, 0) == []
        assert store.append(0, []) == 0
        assert store.append(0, LEAF_HASHES[:10]) == 10
        roots = [store.root(n) for n in range(11)]
        with pytest.raises(TreeError, match=r"append at leaf 9, but the tree has 10 leaves"):
            store.append(9, LEAF_HASHES[9:12])
        with pytest.raises(TreeError, match=r"append at leaf 11, but the tree has 10 leaves"):
            store.append(11, LEAF_HASHES[11:12])
        with pytest.raises(TreeError, match=r"^tree has 10 leaves, asked for 12$"):
            store.root(12)
        with pytest.raises(TreeError, match=r"tree has 10 leaves, asked for 11"):
            store.inclusion_proof(0, 11)
        with pytest.raises(TreeError, match=r"tree has 10 leaves, asked for 12"):
            store.consistency_proof(3, 12)
        with pytest.raises(TreeError, match=r"leaf 10 is not in a tree of 10 leaves"):
            store.inclusion_proof(10, 10)
        with pytest.raises(TreeError, match=r"not a prefix"):
            store.consistency_proof(6, 5)
        with pytest.raises(TreeError, match=r"negative"):
            store.root(-1)
        with pytest.raises(TreeError, match=r"out of range"):
            store.read_hashes([merkle.stored_hash_count(10)])
        # A bad leaf hash anywhere in a batch writes nothing.
        with pytest.raises(TreeError, match=r"leaf 11: .*32 bytes"):
            store.append(10, [LEAF_HASHES[10], b"short"])
        assert store.size == 10
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.stat().st_size == merkle.stored_hash_count(10) * H
    with TreeStore(path, fsync=True) as store:
        assert store.size == 10
        assert [store.root(n) for n in range(11)] == roots
        assert store.append(10, LEAF_HASHES[10:20]) == 20
        assert store.root() == ROOTS[20]
    store.close()  # Twice is harmless.
    with pytest.raises(TreeError, match=r"closed"):
        _ = store.size


@pytest.mark.parametrize(
    "damage",
    [
        b"\xff" * 5,  # not a whole hash
        b"\xff" * (3 * H),  # whole hashes, but 3 of the 4 of leaf 7's record
        b"\xff" * (2 * H + 7),
    ],
    ids=["5-bytes", "3-of-4-hashes", "2-hashes-and-7-bytes"],
)
def test_torn_tail_is_cut_on_open(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "tree"
    with TreeStore(path) as store:
        store.append(0, LEAF_HASHES[:7])
    with path.open("ab") as f:
        f.write(damage)
    with TreeStore(path) as store:
        assert store.size == 7
        assert path.stat().st_size == merkle.stored_hash_count(7) * H
        assert store.root() == ROOTS[7]
        assert store.append(7, LEAF_HASHES[7:30]) == 30
        assert store.root() == ROOTS[30]
        assert file_hashes(path) == memory_store(LEAF_HASHES[:30]).read_hashes(
            range(merkle.stored_hash_count(30))
        )


def test_record_cut_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "tree"
    with TreeStore(path) as store:
        store.append(0, LEAF_HASHES[:8])  # leaf 7 completes 3 subtrees: a 4-hash record
    os.truncate(path, merkle.stored_hash_count(8) * H - 40)
    with TreeStore(path) as store:
        assert store.size == 7
        assert store.root() == ROOTS[7]
        assert store.append(7, LEAF_HASHES[7:]) == len(LEAVES)
        assert store.root() == ROOTS[len(LEAVES)]


def test_torn_tail_seen_by_an_open_store(tmp_path: Path) -> None:
    path = tmp_path / "tree"
    with TreeStore(path) as store:
        store.append(0, LEAF_HASHES[:7])
        with path.open("ab") as f:  # a writer died after this store was opened
            f.write(b"\xff" * (3 * H))
        # Readers count only complete records; the next append cuts the tail first.
        assert store.size == 7
        assert store.append(7, LEAF_HASHES[7:9]) == 9
        assert path.stat().st_size == merkle.stored_hash_count(9) * H
        assert store.root() == ROOTS[9]


def test_two_stores_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tree"
    with TreeStore(path) as a, TreeStore(path) as b:
        assert a.append(0, LEAF_HASHES[:3]) == 3
        assert b.size == 3
        assert b.root() == ROOTS[3]
        assert b.append(3, LEAF_HASHES[3:4]) == 4
        assert a.append(4, LEAF_HASHES[4:17]) == 17
        assert b.append(17, LEAF_HASHES[17:40]) == 40
        assert a.append(40, LEAF_HASHES[40:]) == len(LEAVES)
        assert a.root() == b.root() == ROOTS[len(LEAVES)]
        assert b.inclusion_proof(5, 33) == a.inclusion_proof(5, 33)
    with TreeStore(tmp_path / "single") as single:
        single.append(0, LEAF_HASHES)
        assert single.root() == ROOTS[len(LEAVES)]
        assert file_hashes(tmp_path / "single") == file_hashes(path)

    with TreeStore(tmp_path / "race") as a, TreeStore(tmp_path / "race") as b:
        a.append(0, LEAF_HASHES[:3])
        # b decided to write leaves 0.. before it saw a's append: refused, nothing written.
        with pytest.raises(TreeError, match=r"append at leaf 0, but the tree has 3 leaves"):
            b.append(0, LEAF_HASHES[:5])
        assert a.size == b.size == 3
        assert b.root() == ROOTS[3]


_WORKER = """
import hashlib, os, sys, time
from pathlib import Path
from ledger.formats.tree import TreeError, TreeStore
path, go, wid, target = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
won = 0
with TreeStore(path) as store:
    while (n := store.size) < target:
        try:
            store.append(n, [hashlib.sha256(f"{wid}:{n}".encode()).digest()])
            won += 1
        except TreeError:
            pass  # another process appended leaf n first
print(won)
"""


def test_processes_append_concurrently(tmp_path: Path) -> None:
    path, go, target = tmp_path / "tree", tmp_path / "go", 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(go), str(w), str(target)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    time.sleep(0.3)  # let them all start and wait at the line
    go.touch()
    won = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        won.append(int(out))
    # Every leaf was won by exactly one process, and the file is a valid tlog.
    assert sum(won) == target
    with TreeStore(path) as store:
        assert store.size == target
        count = merkle.stored_hash_count(target)
        leaves = store.read_hashes([merkle.stored_hash_index(0, i) for i in range(target)])
        assert store.read_hashes(range(count)) == memory_store(leaves).read_hashes(range(count))


N_BIG = 100_000


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TreeStore]:
    leaves = [synthetic_leaf(i) for i in range(N_BIG)]
    with TreeStore(tmp_path_factory.mktemp("big") / "tree") as store:
        append_in_batches(store, leaves, [1000] * (N_BIG // 1000))
        yield store


def test_proofs_read_log_n_hashes(big_store: TreeStore) -> None:
    rng = random.Random(9162)
    store = big_store
    assert store.size == N_BIG

    def bound(size: int) -> int:
        return 2 * math.ceil(math.log2(size))

    special = [1, 2, 3, 4, 5, 1 << 16, (1 << 16) + 1, N_BIG - 1, N_BIG]
    sizes = special + [rng.randint(1, N_BIG) for _ in range(300)]
    for size in sizes:
        index = rng.randrange(size)
        root = store.root(size)
        store.reads = 0
        proof = store.inclusion_proof(index, size)
        assert store.reads <= bound(size), (index, size, store.reads)
        merkle.verify_inclusion(synthetic_leaf(index), index, size, proof, root)
    for size in sizes:
        for old in (rng.randint(1, size), size - 1, 1):
            old_root, root = store.root(old), store.root(size)
            store.reads = 0
            proof = store.consistency_proof(old, size)
            assert store.reads <= bound(size), (old, size, store.reads)
            merkle.verify_consistency(old, size, old_root, root, proof)
    store.reads = 0
    store.root()
    assert store.reads <= 1 + math.log2(N_BIG)


def test_batch_proofs_equal_single_proofs_and_read_each_hash_once(big_store: TreeStore) -> None:
    """A batch's receipts: the same proofs as one by one, fewer stored hashes read."""
    rng = random.Random(7)
    for first, count, size in [(0, 1, 1), (N_BIG - 500, 500, N_BIG), (1000, 257, 1300)]:
        indexes = list(range(first, first + count))
        store = big_store
        store.reads = 0
        proofs = store.inclusion_proofs(indexes, size)
        batch_reads = store.reads
        store.reads = 0
        assert proofs == [store.inclusion_proof(i, size) for i in indexes]
        assert batch_reads <= store.reads
        if count > 100:
            assert batch_reads < store.reads / 4, (batch_reads, store.reads)
        root = store.root(size)
        i = rng.randrange(count)
        merkle.verify_inclusion(synthetic_leaf(indexes[i]), indexes[i], size, proofs[i], root)
    with pytest.raises(TreeError):
        big_store.inclusion_proofs([N_BIG], N_BIG)


def test_proofs_of_the_newest_leaves_from_memory(tmp_path: Path) -> None:
    """merkle.prove_newest (a batch just appended, its leaves in memory, one stored
    hash read per level) gives prove_record's proofs, for every batch shape."""
    rng = random.Random(11)
    leaves = [synthetic_leaf(i) for i in range(3000)]
    with TreeStore(tmp_path / "tree") as store:
        size = 0
        while size < len(leaves):
            m = min(rng.choice([1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 255, 500]), len(leaves) - size)
            store.append(size, leaves[size : size + m])
            size += m
            store.reads = 0
            proofs = merkle.prove_newest(size, leaves[size - m : size], store.read_hashes)
            assert store.reads <= math.ceil(math.log2(size)) if size > 1 else store.reads == 0
            assert proofs == [store.inclusion_proof(i, size) for i in range(size - m, size)]
        with pytest.raises(ValueError):
            merkle.prove_newest(2, leaves[:3], store.read_hashes)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.binary(max_size=6), max_size=17),
        max_size=12,
    )
)
def test_random_appends_match_memory_store(batches: list[list[bytes]]) -> None:
    mem = merkle.MemoryHashStore()
    with tempfile.TemporaryDirectory() as d, TreeStore(Path(d) / "tree") as store:
        for batch in batches:
            hashes = [merkle.leaf_hash(b) for b in batch]
            assert store.append(mem.size, hashes) == mem.size + len(batch)
            for h in hashes:
                mem.append_leaf(h)
        assert store.size == mem.size
        for n in range(mem.size + 1):
            assert store.root(n) == merkle.tree_hash(n, mem.read_hashes)
        count = merkle.stored_hash_count(mem.size)
        assert store.read_hashes(range(count)) == mem.read_hashes(range(count))
