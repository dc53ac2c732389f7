"""The incremental head map of DESIGN §3, kept in a store, with bounded memory.

:mod:`ledger.formats.heads` defines the map (keys, values, LEAF, NODE, EMPTY,
``ROOT``) and its proofs; this module keeps one up to date, one batch (one heads
leaf) at a time, without ever holding the whole tree in memory.

*Prefixes.* A prefix of ``d`` key bits is written as an ``int`` with a marker bit
above them, ``(1 << d) | bits``: the root is 1, the children of ``p`` are ``2p``
and ``2p + 1``.

*Top and buckets.* The map is cut at a fixed *bucket depth* ``D``. Above it, the
:class:`HeadMap` holds, for every prefix of at most ``D`` bits, the number of keys
under it and its subtree hash (EMPTY, the lone key's LEAF, or NODE), in two flat
arrays of ``2^(D+1)`` entries: 20 MiB for ``D = 18``, whatever the size of the map.
Below it, a *bucket* (a prefix of exactly ``D`` bits) is small (``n / 2^D`` keys on
average) and its subtree is recomputed from its values whenever one of its keys
changes. The store keeps the values and, per bucket, its count and hash; nothing
else. Subjects are never removed, so counts only grow.

*Batches.* :meth:`HeadMap.note` records entries as the notary seals them;
:meth:`HeadMap.stage` applies all of them at once: it reads the committed values of
the buckets they fall in (one query per few hundred buckets), recomputes those
buckets, then rehashes the top arrays bottom-up, each prefix on the batch's paths
once. The arrays are changed in place, the old entries kept, so
:meth:`HeadMap.rollback` restores them exactly and keeps the notes (a failed append
of the heads leaf is retried with the same notes), and :meth:`HeadMap.commit` writes
the new values, the changed buckets and the heads leaf in one transaction.

*Stores.* :class:`MemoryNodeStore` keeps values in dicts (exporters, tests).
:class:`SqliteNodeStore` keeps them on disk: ``leaves`` (key -> u64be(k) ||
u64be(c) || h || LEAF hash), ``buckets`` (count and hash of each non-empty bucket)
and ``meta`` (the bucket depth and the last committed heads leaf).
A commit writes one row per new value and one per changed bucket, so its cost does
not grow with the depth of the tree; SQLite's page cache is bounded. The file is
derived data: the notary compares :attr:`HeadMap.size` and :attr:`HeadMap.root`
with the last heads leaf of LEDGER when it starts and rebuilds the map (``reset``,
then notes from LEDGER) when they differ. Commits are atomic (SQLite WAL);
``synchronous=NORMAL`` may lose the last commits on power loss, never tear one.
One process writes a store; a :class:`HeadMap` may be used from several threads
in turn, never at once.

*Scale.* Staging costs about one SHA-256 per prefix on the batch's paths plus the
bucket-internal hashes of the buckets it touches: the bucket depth is best near
``log2(subjects) - 2`` (``cache_nodes`` of :class:`SqliteNodeStore`: its default,
1,000,000, gives ``D = 18``, about 20 MiB, right for 10^5 to a few 10^6 subjects;
200,000 gives ``D = 16``, 5 MiB, twice as slow to stage at 10^6). A rebuild should
stage every few thousand to hundred thousand notes: a stage holds its new values in
memory until it is committed.

Only the standard library and :mod:`ledger.formats.heads`.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.heads import (
    EMPTY,
    HeadsLeaf,
    HeadsProof,
    HeadValue,
    subject_key,
)

__all__ = [
    "DEFAULT_DEPTH",
    "MAX_DEPTH",
    "HeadMap",
    "HeadStoreError",
    "MemoryNodeStore",
    "NodeStore",
    "SqliteNodeStore",
    "decode_value",
    "depth_for",
]

#: The bucket depth of a store made without a size in mind: 2^16 buckets.
DEFAULT_DEPTH = 16
#: The deepest bucket depth allowed: 2^25 entries in the top arrays (1.3 GiB) is too many.
MAX_DEPTH = 24
_NO_HEADS = HeadsLeaf(0, 0, EMPTY)
#: 2: values of 80 bytes (with their LEAF hash); files of earlier drafts are refused.
_SCHEMA_VERSION = 2
#: SQLite's page cache, in KiB (negative cache_size): bounded, whatever the file size.
_PAGE_CACHE_KIB = 8192
#: Small pages: a commit rewrites one page per new value and per changed bucket.
_PAGE_SIZE = 1024
#: Checkpoint the WAL every 10 MiB (pages): fewer checkpoints, each page written once.
_WAL_PAGES = 10_000
#: Bucket ranges per query (two parameters each, below SQLite's oldest limit of 999).
_RANGES_PER_QUERY = 400
_sha256 = hashlib.sha256


class HeadStoreError(LedgerError, RuntimeError):
    """The head map's store cannot be used: not a head map database, another schema
    version, unreadable, or inconsistent with its own heads leaf (derived data: delete it
    and rebuild the map from LEDGER)."""

    code = "head_store"
    exit_status = USAGE


def depth_for(cache_nodes: int) -> int:
    """The bucket depth whose top arrays hold at most ``cache_nodes`` prefixes."""
    if cache_nodes < 1:
        raise ValueError("cache_nodes must be at least 1")
    return min(MAX_DEPTH, max(0, cache_nodes.bit_length() - 2))


def decode_value(record: bytes) -> HeadValue:
    """The value of a stored record (see :func:`_record`)."""
    if len(record) != 80:
        raise HeadStoreError(f"a stored head value has 80 bytes, not {len(record)}")
    return HeadValue(
        int.from_bytes(record[:8], "big"), int.from_bytes(record[8:16], "big"), record[16:48]
    )


class NodeStore(Protocol):
    """Where a :class:`HeadMap` keeps its committed values and bucket summaries.

    Values travel as 80-byte records: u64be(k) || u64be(c) || h || LEAF hash
    (:func:`decode_value`); bucket ``b`` holds the keys whose first ``depth`` bits are
    ``b``. ``save`` makes a whole batch durable, or nothing.
    """

    @property
    def depth(self) -> int:
        """The bucket depth ``D``, fixed when the store is made."""
        ...

    def heads(self) -> HeadsLeaf:
        """The last committed heads leaf (size 0, no subjects, EMPTY root when new)."""
        ...

    def buckets(self) -> Iterable[tuple[int, int, bytes]]:
        """``(bucket, count, hash)`` of every non-empty bucket."""
        ...

    def leaves(self, buckets: Sequence[int]) -> Iterable[tuple[bytes, bytes]]:
        """``(key, encoded value)`` of every key in these buckets, in any order."""
        ...

    def value(self, key: bytes) -> bytes | None:
        """The encoded value of ``key``, or None if it is not in the map."""
        ...

    def save(
        self,
        values: Mapping[bytes, bytes],
        buckets: Mapping[int, tuple[int, bytes]],
        heads: HeadsLeaf,
    ) -> None:
        """Commit new values, new bucket summaries and the heads leaf, atomically."""
        ...

    def clear(self) -> None:
        """Forget everything: an empty map of size 0 (same depth)."""
        ...

    def close(self) -> None: ...


def _check_depth(depth: int) -> int:
    if not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"bucket depth {depth} is not in [0, {MAX_DEPTH}]")
    return depth


class MemoryNodeStore:
    """Every value in a dict: for exporters, monitors and tests."""

    def __init__(self, *, depth: int = DEFAULT_DEPTH) -> None:
        self._depth = _check_depth(depth)
        self._shift = 256 - depth
        self._leaves: dict[int, dict[bytes, bytes]] = {}
        self._buckets: dict[int, tuple[int, bytes]] = {}
        self._heads = _NO_HEADS

    @property
    def depth(self) -> int:
        return self._depth

    def heads(self) -> HeadsLeaf:
        return self._heads

    def buckets(self) -> Iterator[tuple[int, int, bytes]]:
        for b, (count, h) in self._buckets.items():
            yield b, count, h

    def leaves(self, buckets: Sequence[int]) -> Iterator[tuple[bytes, bytes]]:
        for b in buckets:
            yield from self._leaves.get(b, {}).items()

    def value(self, key: bytes) -> bytes | None:
        return self._leaves.get(int.from_bytes(key, "big") >> self._shift, {}).get(key)

    def save(
        self,
        values: Mapping[bytes, bytes],
        buckets: Mapping[int, tuple[int, bytes]],
        heads: HeadsLeaf,
    ) -> None:
        for key, value in values.items():
            self._leaves.setdefault(int.from_bytes(key, "big") >> self._shift, {})[key] = value
        self._buckets.update(buckets)
        self._heads = heads

    def clear(self) -> None:
        self._leaves.clear()
        self._buckets.clear()
        self._heads = _NO_HEADS

    def close(self) -> None:
        pass


class SqliteNodeStore:
    """The map's values and bucket summaries on disk (SQLite, WAL).

    ``cache_nodes`` bounds the map's memory: a new store gets the bucket depth whose
    top arrays hold at most that many prefixes (:func:`depth_for`: 18 for the default,
    about 20 MiB); an existing one keeps the depth it was made with.
    """

    def __init__(self, path: Path, *, cache_nodes: int = 1_000_000) -> None:
        wanted = depth_for(cache_nodes)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, cached_statements=16
            )
        except sqlite3.Error as e:
            raise HeadStoreError(f"cannot open the head map {self.path}: {e}") from None
        try:
            self._depth, self._heads = self._open(wanted)
        except BaseException:
            self._db.close()
            raise
        self._shift = 256 - self._depth

    def _open(self, depth: int) -> tuple[int, HeadsLeaf]:
        db = self._db
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and not db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # before WAL: fixed from then on
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA cache_size=-{_PAGE_CACHE_KIB}")
            db.execute(f"PRAGMA wal_autocheckpoint={_WAL_PAGES}")
            if version == 0:
                if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                    raise HeadStoreError(f"{self.path} is a database, but not a head map")
                self._create(depth)
            elif version != _SCHEMA_VERSION:
                raise HeadStoreError(
                    f"{self.path}: head map schema version {version}, this ailedger reads "
                    f"{_SCHEMA_VERSION}"
                )
            row = db.execute("SELECT depth, heads FROM meta WHERE id = 0").fetchone()
        except sqlite3.Error as e:
            raise HeadStoreError(f"cannot read the head map {self.path}: {e}") from None
        if row is None or not isinstance(row[0], int) or not 0 <= row[0] <= MAX_DEPTH:
            raise HeadStoreError(f"{self.path}: the head map has no valid meta row")
        return row[0], HeadsLeaf.parse(bytes(row[1]))

    def _create(self, depth: int) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "CREATE TABLE leaves (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
            )
            db.execute(
                "CREATE TABLE buckets (id INTEGER PRIMARY KEY, count INTEGER NOT NULL, "
                "hash BLOB NOT NULL)"
            )
            db.execute(
                "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), "
                "depth INTEGER NOT NULL, heads BLOB NOT NULL)"
            )
            db.execute("INSERT INTO meta VALUES (0, ?, ?)", (depth, _NO_HEADS.encoded))
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @property
    def depth(self) -> int:
        return self._depth

    def heads(self) -> HeadsLeaf:
        return self._heads

    def buckets(self) -> Iterator[tuple[int, int, bytes]]:
        try:
            yield from self._db.execute("SELECT id, count, hash FROM buckets")
        except sqlite3.Error as e:
            raise HeadStoreError(f"cannot read the head map {self.path}: {e}") from None

    def leaves(self, buckets: Sequence[int]) -> list[tuple[bytes, bytes]]:
        shift = self._shift
        rows: list[tuple[bytes, bytes]] = []
        try:
            for start in range(0, len(buckets), _RANGES_PER_QUERY):
                chunk = buckets[start : start + _RANGES_PER_QUERY]
                params: list[bytes] = []
                for b in chunk:
                    params.append((b << shift).to_bytes(32, "big"))
                    params.append((((b + 1) << shift) - 1).to_bytes(32, "big"))
                ranges = ",".join(["(?,?)"] * len(chunk))
                query = (
                    f"WITH r(lo, hi) AS (VALUES {ranges}) SELECT l.key, l.value "
                    "FROM r JOIN leaves l ON l.key BETWEEN r.lo AND r.hi"
                )
                rows += self._db.execute(query, params).fetchall()
        except sqlite3.Error as e:
            raise HeadStoreError(f"cannot read the head map {self.path}: {e}") from None
        return rows

    def value(self, key: bytes) -> bytes | None:
        try:
            row = self._db.execute("SELECT value FROM leaves WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise HeadStoreError(f"cannot read the head map {self.path}: {e}") from None
        return None if row is None else row[0]

    def save(
        self,
        values: Mapping[bytes, bytes],
        buckets: Mapping[int, tuple[int, bytes]],
        heads: HeadsLeaf,
    ) -> None:
        with self._transaction("write") as db:
            db.executemany("INSERT OR REPLACE INTO leaves VALUES (?, ?)", values.items())
            db.executemany(
                "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)",
                ((b, count, h) for b, (count, h) in buckets.items()),
            )
            db.execute("UPDATE meta SET heads = ? WHERE id = 0", (heads.encoded,))
        self._heads = heads

    def clear(self) -> None:
        with self._transaction("clear") as db:
            db.execute("DELETE FROM leaves")
            db.execute("DELETE FROM buckets")
            db.execute("UPDATE meta SET heads = ? WHERE id = 0", (_NO_HEADS.encoded,))
        self._heads = _NO_HEADS

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back and named."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise HeadStoreError(f"cannot {what} the head map {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()


# --- subtrees below the bucket depth ------------------------------------------------


def _root(d: int, ks: list[int], leaves: list[bytes], lo: int, hi: int) -> bytes:
    """ROOT of the subtree at depth ``d`` holding exactly the keys ``ks[lo:hi]``.

    ``ks`` are keys as ints, sorted; ``leaves`` their LEAF hashes. Recursion happens
    only at branching nodes: the first and last keys of a range share the bits all of
    its keys share, the chain of one-sided NODEs above the split is hashed in a loop.
    """
    if hi - lo < 2:
        return leaves[lo] if hi > lo else EMPTY
    first = ks[lo]
    b = 256 - (first ^ ks[hi - 1]).bit_length()  # the first bit on which they differ
    mid = bisect_left(ks, ((first >> (255 - b)) | 1) << (255 - b), lo, hi)
    left = leaves[lo] if mid - lo == 1 else _root(b + 1, ks, leaves, lo, mid)
    right = leaves[mid] if hi - mid == 1 else _root(b + 1, ks, leaves, mid, hi)
    h = _sha256(b"\x03" + left + right).digest()  # NODE
    for i in range(b - 1, d - 1, -1):  # every key goes the same way at depths d .. b-1
        h = _sha256(
            b"\x03" + EMPTY + h if (first >> (255 - i)) & 1 else b"\x03" + h + EMPTY
        ).digest()
    return h


def _record(key: bytes, value: HeadValue) -> bytes:
    """A stored value: u64be(k) || u64be(c) || h, then its LEAF hash (80 bytes).

    The first 48 bytes are the tail of the LEAF preimage, LEAF = SHA-256(0x02 || key ||
    u64be(k) || u64be(c) || h); keeping the hash saves rehashing a bucket's other keys.
    """
    encoded = value.index.to_bytes(8, "big") + value.count.to_bytes(8, "big") + value.leaf_hash
    return encoded + _sha256(b"\x02" + key + encoded).digest()


class _Undo:
    """The committed (count, hash) of every top prefix a staged batch changed."""

    def __init__(self) -> None:
        self.prefixes: list[int] = []
        self.counts = array("Q")
        self.hashes = bytearray()

    def save(self, prefixes: Iterable[int], cnt: array[int], hashes: bytearray) -> None:
        for p in prefixes:
            self.prefixes.append(p)
            self.counts.append(cnt[p])
            self.hashes += hashes[32 * p : 32 * p + 32]

    def restore(self, cnt: array[int], hashes: bytearray) -> None:
        for i, p in enumerate(self.prefixes):
            cnt[p] = self.counts[i]
            hashes[32 * p : 32 * p + 32] = self.hashes[32 * i : 32 * i + 32]

    def committed(self) -> dict[int, tuple[int, bytes]]:
        return {
            p: (self.counts[i], bytes(self.hashes[32 * i : 32 * i + 32]))
            for i, p in enumerate(self.prefixes)
        }


@dataclass(frozen=True)
class _Staged:
    notes: int
    values: dict[bytes, bytes]
    buckets: dict[int, tuple[int, bytes]]
    heads: HeadsLeaf
    undo: _Undo


class HeadMap:
    """The head map, updated one batch (one heads leaf) at a time. Single-threaded."""

    def __init__(self, store: NodeStore) -> None:
        self._store = store
        self._depth = _check_depth(store.depth)
        self._shift = 256 - self._depth
        self._new_arrays()
        self._heads = store.heads()
        bucket0 = 1 << self._depth
        loaded = []
        for b, count, h in store.buckets():
            self._set(bucket0 | b, count, h)
            loaded.append(bucket0 | b)
        self._rehash(loaded, None)
        if (self._cnt[1], bytes(self._hash[32:64])) != (self._heads.subjects, self._heads.root):
            raise HeadStoreError(
                "the head map's buckets do not add up to its last heads leaf: rebuild it from "
                "LEDGER"
            )
        #: Notes since the last commit, in order: (key, index, leaf hash).
        self._notes: list[tuple[bytes, int, bytes]] = []
        #: Per key: (number of notes, newest index, newest leaf hash).
        self._pending: dict[bytes, tuple[int, int, bytes]] = {}
        self._last = self._heads.size - 1
        self._staged: _Staged | None = None

    def _new_arrays(self) -> None:
        n = 2 << self._depth
        #: Keys under each prefix of at most D bits (index: the marked prefix).
        self._cnt = array("Q", bytes(8 * n))
        #: The subtree hash of each such prefix, 32 bytes at 32 * prefix (zeros: EMPTY).
        self._hash = bytearray(32 * n)

    def _set(self, p: int, count: int, h: bytes) -> None:
        self._cnt[p] = count
        self._hash[32 * p : 32 * p + 32] = h

    def _rehash(self, bottom: Iterable[int], undo: _Undo | None) -> None:
        """Recompute every ancestor of the prefixes ``bottom`` (all of depth D), bottom-up."""
        cnt, hashes, sha256 = self._cnt, self._hash, _sha256
        level = dict.fromkeys(p >> 1 for p in bottom)
        level.pop(0, None)  # D = 0: the bucket is the root
        while level:
            if undo is not None:
                undo.save(level, cnt, hashes)
            for p in level:
                c = p + p
                n = cnt[c] + cnt[c + 1]
                o = 64 * p
                q = 32 * p
                if n >= 2:
                    hashes[q : q + 32] = sha256(b"\x03" + hashes[o : o + 64]).digest()  # NODE
                elif cnt[c]:
                    hashes[q : q + 32] = hashes[o : o + 32]
                else:
                    hashes[q : q + 32] = hashes[o + 32 : o + 64]
                cnt[p] = n
            if 1 in level:
                break
            level = dict.fromkeys(p >> 1 for p in level)

    # -- the committed map ------------------------------------------------------

    @property
    def size(self) -> int:
        """``m`` of the last committed heads leaf: entries ``[0, m)`` are in the map."""
        return self._heads.size

    @property
    def subjects(self) -> int:
        """The number of subjects in the committed map."""
        return self._heads.subjects

    @property
    def root(self) -> bytes:
        """The committed map root (EMPTY when the map is empty)."""
        return self._heads.root

    @property
    def pending(self) -> int:
        """The number of noted entries not yet committed (staged ones included)."""
        return len(self._notes)

    # -- notes ------------------------------------------------------------------

    def note(self, subject: str, index: int, leaf_hash: bytes) -> None:
        """Entry ``index`` of ``subject``, with its leaf hash: the subject's new head.

        Entries already in the map (``index < size``) and notes out of order (``index``
        not above the last noted index) are ignored: replays are harmless.
        """
        if index < self._heads.size or index <= self._last:
            return
        if len(leaf_hash) != 32:
            raise ValueError("a leaf hash has 32 bytes")
        key = subject_key(subject)
        self._notes.append((key, index, leaf_hash))
        seen = self._pending.get(key)
        self._pending[key] = (seen[0] + 1 if seen else 1, index, leaf_hash)
        self._last = index

    def value(self, subject: str) -> HeadValue | None:
        """The subject's head: the committed value updated by the pending notes."""
        key = subject_key(subject)
        stored = self._store.value(key)
        committed = None if stored is None else decode_value(stored)
        seen = self._pending.get(key)
        if seen is None:
            return committed
        n, index, leaf_hash = seen
        return HeadValue(index, n + (committed.count if committed else 0), leaf_hash)

    # -- batches ----------------------------------------------------------------

    def stage(self, size: int) -> HeadsLeaf:
        """Apply every pending note, uncommitted; the heads leaf of the new map at ``size``.

        A batch already staged is rolled back first and staged again with all the notes.
        """
        self.rollback()
        if size < self._heads.size:
            raise ValueError(f"heads leaf size {size} below the map's size {self._heads.size}")
        if self._notes and size <= self._notes[-1][1]:
            raise ValueError(
                f"heads leaf size {size} does not cover the noted entry {self._notes[-1][1]}"
            )
        shift = self._shift
        bucket0 = 1 << self._depth
        cnt = self._cnt
        by_bucket: dict[int, list[bytes]] = {}
        for key in self._pending:
            by_bucket.setdefault(int.from_bytes(key, "big") >> shift, []).append(key)
        rows: dict[int, dict[bytes, bytes]] = {b: {} for b in by_bucket}
        for key, value in self._store.leaves([b for b in by_bucket if cnt[bucket0 | b]]):
            rows[int.from_bytes(key, "big") >> shift][key] = value
        values: dict[bytes, bytes] = {}
        buckets: dict[int, tuple[int, bytes]] = {}
        hashes = self._hash
        depth = self._depth
        pending = self._pending
        bottom = [bucket0 | b for b in by_bucket]
        undo = _Undo()
        undo.save(bottom, cnt, hashes)
        for b, keys in by_bucket.items():
            bucket = rows[b]
            for key in keys:
                n, index, leaf_hash = pending[key]
                old = bucket.get(key)
                count = n + (int.from_bytes(old[8:16], "big") if old else 0)
                bucket[key] = values[key] = _record(key, HeadValue(index, count, leaf_hash))
            if len(bucket) == 1:
                (record,) = bucket.values()
                h = record[48:]
            else:
                entries = sorted((int.from_bytes(k, "big"), r[48:]) for k, r in bucket.items())
                ks = [k for k, _ in entries]
                h = _root(depth, ks, [x for _, x in entries], 0, len(ks))
            p = bucket0 | b
            cnt[p] = len(bucket)
            hashes[32 * p : 32 * p + 32] = h
            buckets[b] = (len(bucket), h)
        self._rehash(bottom, undo)
        heads = HeadsLeaf(size, cnt[1], bytes(hashes[32:64]))
        self._staged = _Staged(len(self._notes), values, buckets, heads, undo)
        return heads

    def commit(self) -> None:
        """Make the staged batch durable (with its heads leaf); its notes are done."""
        staged = self._staged
        if staged is None:
            raise RuntimeError("nothing staged to commit")
        self._store.save(staged.values, staged.buckets, staged.heads)
        self._heads = staged.heads
        self._staged = None
        self._notes = self._notes[staged.notes :]
        self._pending = {}
        for key, index, leaf_hash in self._notes:
            seen = self._pending.get(key)
            self._pending[key] = (seen[0] + 1 if seen else 1, index, leaf_hash)

    def rollback(self) -> None:
        """Drop the staged batch; the notes stay pending for the next :meth:`stage`."""
        staged = self._staged
        if staged is not None:
            staged.undo.restore(self._cnt, self._hash)
            self._staged = None

    # -- proofs -----------------------------------------------------------------

    def prove(self, subject: str) -> HeadsProof:
        """The subject's heads proof against the committed root."""
        key = subject_key(subject)
        k = int.from_bytes(key, "big")
        depth = self._depth
        undo = self._staged.undo.committed() if self._staged is not None else {}

        def count(p: int) -> int:
            return undo[p][0] if p in undo else self._cnt[p]

        def hash_of(p: int) -> bytes:
            return undo[p][1] if p in undo else bytes(self._hash[32 * p : 32 * p + 32])

        siblings: list[bytes] = []
        p, d = 1, 0
        while d < depth and count(p) >= 2:
            p = (p << 1) | ((k >> (255 - d)) & 1)
            siblings.append(hash_of(p ^ 1))
            d += 1
        if count(p) == 0:
            return HeadsProof(subject, "absent-empty", d, None, None, tuple(siblings[::-1]))
        q = p  # the bucket below p (p itself at depth D)
        while q < 1 << depth:
            q = q << 1 if count(q << 1) else (q << 1) | 1
        bucket = sorted(
            (int.from_bytes(x, "big"), x, v) for x, v in self._store.leaves([q ^ (1 << depth)])
        )
        ks = [x for x, _, _ in bucket]
        lo, hi = 0, len(bucket)
        if count(p) >= 2:  # d == D: down through the bucket's subtree
            leaves = [v[48:] for _, _, v in bucket]
            while hi - lo >= 2:
                mid = bisect_left(ks, (((p ^ (1 << d)) << 1) | 1) << (255 - d), lo, hi)
                p <<= 1
                if (k >> (255 - d)) & 1:
                    siblings.append(_root(d + 1, ks, leaves, lo, mid))
                    lo, p = mid, p | 1
                else:
                    siblings.append(_root(d + 1, ks, leaves, mid, hi))
                    hi = mid
                d += 1
            if lo == hi:
                return HeadsProof(subject, "absent-empty", d, None, None, tuple(siblings[::-1]))
        elif hi - lo != 1:
            raise HeadStoreError(f"a bucket counted once holds {hi - lo} keys")
        _, lone, stored = bucket[lo]
        value = decode_value(stored)
        if lone == key:
            return HeadsProof(subject, "inclusion", d, value, None, tuple(siblings[::-1]))
        return HeadsProof(subject, "absent-leaf", d, None, (lone, value), tuple(siblings[::-1]))

    # -- lifecycle --------------------------------------------------------------

    def reset(self) -> None:
        """Empty the map (size 0) and drop every note: it is rebuilt from LEDGER."""
        self._store.clear()
        self._staged = None
        self._new_arrays()
        self._heads = self._store.heads()
        self._notes = []
        self._pending = {}
        self._last = -1

    def close(self) -> None:
        self._store.close()
