"""RFC 9162 Merkle tree: Go tlog vectors, RFC definitions, proof rejection, read costs."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.formats.merkle import (
    HASH_SIZE,
    ConsistencyProofError,
    HashReader,
    InclusionProofError,
    MemoryHashStore,
    ProofError,
    empty_root,
    leaf_hash,
    node_hash,
    prove_record,
    prove_tree,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes_for_record_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "rfc9162-tlog.json").read_text()
)
LEAVES: list[bytes] = [bytes.fromhex(leaf) for leaf in VECTORS["leaves"]]
ROOTS: dict[int, bytes] = {int(k): bytes.fromhex(v) for k, v in VECTORS["roots"].items()}
INCLUSION: list[tuple[int, int, list[bytes]]] = [
    (v["index"], v["size"], [bytes.fromhex(h) for h in v["path"]]) for v in VECTORS["inclusion"]
]
CONSISTENCY: list[tuple[int, int, list[bytes]]] = [
    (v["old"], v["new"], [bytes.fromhex(h) for h in v["path"]]) for v in VECTORS["consistency"]
]


@functools.cache
def vector_store() -> MemoryHashStore:
    store = MemoryHashStore()
    for leaf in LEAVES:
        store.append(leaf)
    return store


def flip_bit(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def mutations(proof: Sequence[bytes], extra: bytes) -> list[tuple[str, list[bytes]]]:
    """Every proof with one hash dropped, one hash added, or one bit flipped."""
    out: list[tuple[str, list[bytes]]] = []
    for i in range(len(proof)):
        out.append((f"drop {i}", [*proof[:i], *proof[i + 1 :]]))
    for i in range(len(proof) + 1):
        out.append((f"add {i}", [*proof[:i], extra, *proof[i:]]))
    for i in range(len(proof)):
        for bit in (0, 7 * 8 + 3, 255):
            out.append((f"flip {i}/{bit}", [*proof[:i], flip_bit(proof[i], bit), *proof[i + 1 :]]))
    return out


# Vectors from Go's sumdb/tlog.


def test_vector_file_shape() -> None:
    assert len(LEAVES) == 70
    assert sorted(ROOTS) == list(range(1, 71))
    assert len(INCLUSION) == 541
    assert len(CONSISTENCY) == 638


def test_hash_functions() -> None:
    assert empty_root() == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == ROOTS[1]  # the first leaf is empty
    assert node_hash(leaf_hash(LEAVES[0]), leaf_hash(LEAVES[1])) == ROOTS[2]
    assert HASH_SIZE == 32


def test_roots_reproduced_while_appending() -> None:
    store = MemoryHashStore()
    assert store.size == 0
    assert store.root() == empty_root()
    assert tree_hash(0, store.read_hashes) == empty_root()
    for i, leaf in enumerate(LEAVES):
        assert store.append(leaf) == i
        assert store.size == i + 1
        assert store.root() == ROOTS[i + 1], f"root of size {i + 1}"
        assert len(store.read_hashes(range(stored_hash_count(i + 1)))) == stored_hash_count(i + 1)
        with pytest.raises(IndexError):
            store.read_hashes([stored_hash_count(i + 1)])


def test_roots_of_every_prefix_from_the_full_store() -> None:
    store = vector_store()
    for size, root in ROOTS.items():
        assert tree_hash(size, store.read_hashes) == root, f"size {size}"


def test_inclusion_vectors_reproduced_and_verified() -> None:
    store = vector_store()
    for index, size, path in INCLUSION:
        assert prove_record(size, index, store.read_hashes) == path, f"{index} in {size}"
        verify_inclusion(leaf_hash(LEAVES[index]), index, size, path, ROOTS[size])


def test_consistency_vectors_reproduced_and_verified() -> None:
    store = vector_store()
    for old, new, path in CONSISTENCY:
        assert prove_tree(new, old, store.read_hashes) == path, f"{old} -> {new}"
        verify_consistency(old, new, ROOTS[old], ROOTS[new], path)


def test_inclusion_vectors_mutated_are_rejected() -> None:
    for index, size, path in INCLUSION:
        leaf = leaf_hash(LEAVES[index])
        for what, bad in mutations(path, ROOTS[size]):
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaf, index, size, bad, ROOTS[size])
                pytest.fail(f"{what} of proof of {index} in {size} accepted")
        with pytest.raises(InclusionProofError):
            verify_inclusion(flip_bit(leaf, 9), index, size, path, ROOTS[size])
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf, index, size, path, flip_bit(ROOTS[size], 9))


def test_inclusion_vectors_with_wrong_index_or_size_are_rejected() -> None:
    store = vector_store()
    for index, size, path in INCLUSION:
        leaf = leaf_hash(LEAVES[index])
        for other in (index - 1, index + 1, size - 1 - index):
            if other != index and 0 <= other < size:
                with pytest.raises(InclusionProofError):
                    verify_inclusion(leaf, other, size, path, ROOTS[size])
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf, size, size, path, ROOTS[size])
        # Against another tree head, the proof holds only if it is that tree's proof.
        for other_size in (size - 1, size + 1, 2 * size):
            if index < other_size <= len(LEAVES):
                expected = prove_record(other_size, index, store.read_hashes)
                try:
                    verify_inclusion(leaf, index, other_size, path, ROOTS[other_size])
                    accepted = True
                except InclusionProofError:
                    accepted = False
                assert accepted == (expected == path), f"{index} in {size} as {other_size}"


def test_consistency_vectors_mutated_are_rejected() -> None:
    for old, new, path in CONSISTENCY:
        for what, bad in mutations(path, ROOTS[old]):
            with pytest.raises(ConsistencyProofError):
                verify_consistency(old, new, ROOTS[old], ROOTS[new], bad)
                pytest.fail(f"{what} of proof {old} -> {new} accepted")
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, new, flip_bit(ROOTS[old], 9), ROOTS[new], path)
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, new, ROOTS[old], flip_bit(ROOTS[new], 9), path)


def test_consistency_vectors_with_wrong_sizes_are_rejected() -> None:
    store = vector_store()
    for old, new, path in CONSISTENCY:
        for other_old, other_new in (
            (old - 1, new),
            (old + 1, new),
            (old, new - 1),
            (old, new + 1),
        ):
            if not 1 <= other_old <= other_new <= len(LEAVES):
                continue
            expected = prove_tree(other_new, other_old, store.read_hashes)
            try:
                verify_consistency(other_old, other_new, ROOTS[other_old], ROOTS[other_new], path)
                accepted = True
            except ConsistencyProofError:
                accepted = False
            assert accepted == (expected == path), f"{old}->{new} as {other_old}->{other_new}"
        # The roots of the claimed sizes, but other sizes given.
        if old < new:
            with pytest.raises(ConsistencyProofError):
                verify_consistency(new, old, ROOTS[new], ROOTS[old], path)


# Edge cases of verification.


def test_inclusion_edge_cases() -> None:
    leaf = leaf_hash(LEAVES[0])
    with pytest.raises(InclusionProofError, match="not below tree size"):
        verify_inclusion(leaf, 0, 0, [], empty_root())
    with pytest.raises(InclusionProofError, match="not below tree size"):
        verify_inclusion(leaf, 1, 1, [], leaf)
    with pytest.raises(InclusionProofError, match="negative"):
        verify_inclusion(leaf, -1, 1, [], leaf)
    verify_inclusion(leaf, 0, 1, [], leaf)
    with pytest.raises(InclusionProofError, match="more hashes"):
        verify_inclusion(leaf, 0, 1, [leaf], leaf)
    index, size, path = INCLUSION[-1]
    good = leaf_hash(LEAVES[index])
    with pytest.raises(InclusionProofError, match="fewer hashes"):
        verify_inclusion(good, index, size, path[:-1], ROOTS[size])
    with pytest.raises(InclusionProofError, match="root does not match"):
        verify_inclusion(good, index, size, path[::-1], ROOTS[size])


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_hash_lengths_are_rejected(length: int) -> None:
    bad = b"\x01" * length
    index, size, path = next(v for v in INCLUSION if v[1] == 7 and v[2])
    leaf = leaf_hash(LEAVES[index])
    with pytest.raises(InclusionProofError, match="bytes"):
        verify_inclusion(bad, index, size, path, ROOTS[size])
    with pytest.raises(InclusionProofError, match="bytes"):
        verify_inclusion(leaf, index, size, path, bad)
    with pytest.raises(InclusionProofError, match="bytes"):
        verify_inclusion(leaf, index, size, [*path[:-1], bad], ROOTS[size])
    # A 64-byte "hash" that is two real hashes glued together is still rejected.
    with pytest.raises(InclusionProofError, match="bytes"):
        verify_inclusion(leaf, index, size, [path[0] + path[1], *path[2:]], ROOTS[size])
    proof = prove_tree(7, 3, vector_store().read_hashes)
    with pytest.raises(ConsistencyProofError, match="bytes"):
        verify_consistency(3, 7, bad, ROOTS[7], proof)
    with pytest.raises(ConsistencyProofError, match="bytes"):
        verify_consistency(3, 7, ROOTS[3], bad, proof)
    with pytest.raises(ConsistencyProofError, match="bytes"):
        verify_consistency(3, 7, ROOTS[3], ROOTS[7], [bad, *proof[1:]])


def test_consistency_edge_cases() -> None:
    # From the empty tree: nothing to prove, but the old root must be the empty tree's.
    verify_consistency(0, 0, empty_root(), empty_root(), [])
    verify_consistency(0, 5, empty_root(), ROOTS[5], [])
    with pytest.raises(ConsistencyProofError, match="must be empty"):
        verify_consistency(0, 5, empty_root(), ROOTS[5], [ROOTS[5]])
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])
    # Equal sizes: empty proof and equal roots.
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    with pytest.raises(ConsistencyProofError, match="must be empty"):
        verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    with pytest.raises(ConsistencyProofError, match="equal size differ"):
        verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    # Shrinking, negative sizes, empty proofs.
    with pytest.raises(ConsistencyProofError, match="larger than"):
        verify_consistency(6, 5, ROOTS[6], ROOTS[5], [])
    with pytest.raises(ConsistencyProofError, match="negative"):
        verify_consistency(-1, 5, ROOTS[1], ROOTS[5], [])
    with pytest.raises(ConsistencyProofError, match="proof is empty"):
        verify_consistency(4, 8, ROOTS[4], ROOTS[8], [])
    # A power-of-two old tree must not have its own root in the proof.
    proof = prove_tree(8, 4, vector_store().read_hashes)
    assert len(proof) == 1
    verify_consistency(4, 8, ROOTS[4], ROOTS[8], proof)
    with pytest.raises(ConsistencyProofError, match="more hashes"):
        verify_consistency(4, 8, ROOTS[4], ROOTS[8], [ROOTS[4], *proof])
    with pytest.raises(ConsistencyProofError, match="fewer hashes"):
        verify_consistency(
            3, 70, ROOTS[3], ROOTS[70], prove_tree(70, 3, vector_store().read_hashes)[:-1]
        )


def test_prove_invalid_inputs() -> None:
    read = vector_store().read_hashes
    for size, index in ((0, 0), (5, 5), (5, -1), (-1, 0)):
        with pytest.raises(ValueError):
            prove_record(size, index, read)
    for size, old in ((5, 6), (5, -1), (-1, -1)):
        with pytest.raises(ValueError):
            prove_tree(size, old, read)
    assert prove_tree(5, 0, read) == []
    assert prove_tree(5, 5, read) == []
    assert prove_record(1, 0, read) == []
    with pytest.raises(ValueError):
        tree_hash(-1, read)


def test_short_reader_is_an_error() -> None:
    def short(indexes: Sequence[int]) -> list[bytes]:
        return vector_store().read_hashes(indexes)[:-1]

    with pytest.raises(ValueError, match="hashes"):
        tree_hash(7, short)
    with pytest.raises(ValueError, match="hashes"):
        prove_record(7, 3, short)
    with pytest.raises(ValueError, match="hashes"):
        prove_tree(7, 3, short)
    with pytest.raises(ValueError, match="hashes"):
        stored_hashes_for_record_hash(7, leaf_hash(b"x"), short)


# Stored hash layout, as in Go's tlog.


def go_stored_hash_index(level: int, n: int) -> int:
    """Go's StoredHashIndex, loop for loop."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def test_stored_hash_index_matches_go_and_inverts() -> None:
    for level in range(12):
        for n in range(300):
            index = stored_hash_index(level, n)
            assert index == go_stored_hash_index(level, n)
            assert split_stored_hash_index(index) == (level, n)
    for index in range(5000):
        assert stored_hash_index(*split_stored_hash_index(index)) == index


def test_stored_hash_count_and_layout() -> None:
    store = MemoryHashStore()
    assert stored_hash_count(0) == 0
    for n in range(300):
        assert stored_hash_index(0, n) == stored_hash_count(n)
        store.append(n.to_bytes(2, "big"))
        assert store.read_hashes([stored_hash_index(0, n)]) == [leaf_hash(n.to_bytes(2, "big"))]
        assert len(store.read_hashes(range(stored_hash_count(n + 1)))) == stored_hash_count(n + 1)
    # Each stored hash is the hash of the complete subtree its coordinates name.
    leaves = [leaf_hash(n.to_bytes(2, "big")) for n in range(300)]
    for index in range(stored_hash_count(300)):
        level, n = split_stored_hash_index(index)
        lo = n << level
        assert store.read_hashes([index]) == [rfc_mth(tuple(leaves[lo : lo + (1 << level)]))]


def test_memory_store_rejects_out_of_range_reads() -> None:
    store = vector_store()
    with pytest.raises(IndexError):
        store.read_hashes([-1])
    with pytest.raises(IndexError):
        store.read_hashes([stored_hash_count(store.size)])


# Proof costs: O(log n) stored hashes, one read, no tree rebuild.


class CountingReader:
    def __init__(self, read: HashReader) -> None:
        self.read = read
        self.calls = 0
        self.hashes = 0

    def __call__(self, indexes: Sequence[int]) -> Sequence[bytes]:
        self.calls += 1
        self.hashes += len(indexes)
        return self.read(indexes)


@functools.cache
def big_store() -> MemoryHashStore:
    store = MemoryHashStore()
    for i in range(100_000):
        store.append(i.to_bytes(4, "big"))
    return store


def test_proofs_at_100k_leaves_read_logarithmically_many_hashes() -> None:
    store = big_store()
    n = store.size
    bound = 2 * math.log2(n)
    root = store.root()
    rng = random.Random(9162)
    indexes = [0, 1, n // 2, n - 2, n - 1, *(rng.randrange(n) for _ in range(200))]
    for index in indexes:
        reader = CountingReader(store.read_hashes)
        proof = prove_record(n, index, reader)
        assert reader.calls == 1
        assert reader.hashes <= bound, f"leaf {index}: {reader.hashes} reads"
        verify_inclusion(leaf_hash(index.to_bytes(4, "big")), index, n, proof, root)
    for old in [1, 2, 3, n // 2, n - 1, *(rng.randrange(1, n) for _ in range(50))]:
        reader = CountingReader(store.read_hashes)
        proof = prove_tree(n, old, reader)
        assert reader.calls == 1
        assert reader.hashes <= bound, f"old size {old}: {reader.hashes} reads"
        verify_consistency(old, n, tree_hash(old, store.read_hashes), root, proof)
    reader = CountingReader(store.read_hashes)
    tree_hash(n, reader)
    assert reader.calls == 1
    assert reader.hashes <= 1 + math.log2(n)


def test_appending_reads_at_most_log_n_hashes() -> None:
    store = MemoryHashStore()
    for n in range(1, 2000):
        reader = CountingReader(store.read_hashes)
        hashes = stored_hashes_for_record_hash(store.size, leaf_hash(b"%d" % n), reader)
        assert reader.hashes <= math.log2(n) and len(hashes) <= 1 + math.log2(n)
        store.append_leaf(leaf_hash(b"%d" % n))


# Random trees against the recursive definitions of RFC 9162 §2.1.


def rfc_mth(leaves: tuple[bytes, ...]) -> bytes:
    """MTH (§2.1.1) over leaf hashes."""
    if not leaves:
        return empty_root()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(rfc_mth(leaves[:k]), rfc_mth(leaves[k:]))


def rfc_path(
    m: int, leaves: tuple[bytes, ...], mth: Callable[[tuple[bytes, ...]], bytes]
) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1)."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, leaves[:k], mth), mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:], mth), mth(leaves[:k])]


def rfc_subproof(
    m: int, leaves: tuple[bytes, ...], b: bool, mth: Callable[[tuple[bytes, ...]], bytes]
) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (§2.1.4.1)."""
    if m == len(leaves):
        return [] if b else [mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], b, mth), mth(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False, mth), mth(leaves[:k])]


def random_tree(size: int, seed: int) -> tuple[tuple[bytes, ...], MemoryHashStore]:
    leaves = tuple(leaf_hash(b"%d/%d" % (seed, i)) for i in range(size))
    store = MemoryHashStore()
    for h in leaves:
        store.append_leaf(h)
    return leaves, store


def mutate(proof: list[bytes], data: st.DataObject) -> list[bytes]:
    kinds = ["add", "flip", "drop"] if proof else ["add"]
    kind = data.draw(st.sampled_from(kinds))
    if kind == "add":
        pos = data.draw(st.integers(0, len(proof)))
        extra = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE))
        return [*proof[:pos], extra, *proof[pos:]]
    pos = data.draw(st.integers(0, len(proof) - 1))
    if kind == "drop":
        return [*proof[:pos], *proof[pos + 1 :]]
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    return [*proof[:pos], flip_bit(proof[pos], bit), *proof[pos + 1 :]]


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 300), seed=st.integers(0, 2**32), data=st.data())
def test_random_inclusion_proofs(size: int, seed: int, data: st.DataObject) -> None:
    leaves, store = random_tree(size, seed)
    mth = functools.cache(rfc_mth)
    root = store.root()
    assert root == mth(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = prove_record(size, index, store.read_hashes)
    assert proof == rfc_path(index, leaves, mth)
    verify_inclusion(leaves[index], index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, size, mutate(proof, data), root)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 300), seed=st.integers(0, 2**32), data=st.data())
def test_random_consistency_proofs(size: int, seed: int, data: st.DataObject) -> None:
    leaves, store = random_tree(size, seed)
    mth = functools.cache(rfc_mth)
    old = data.draw(st.integers(1, size))
    proof = prove_tree(size, old, store.read_hashes)
    assert proof == rfc_subproof(old, leaves, True, mth)
    old_root = tree_hash(old, store.read_hashes)
    assert old_root == mth(leaves[:old])
    verify_consistency(old, size, old_root, store.root(), proof)
    with pytest.raises(ProofError):
        verify_consistency(old, size, old_root, store.root(), mutate(proof, data))
