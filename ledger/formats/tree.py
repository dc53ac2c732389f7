"""A durable RFC 9162 Merkle tree: Go tlog stored hashes, appended to one file.

The file holds the ledger's tree in the dense layout of Go's
golang.org/x/mod/sumdb/tlog (see ``ledger.formats.merkle``): stored hash i, the leaf
hash or a complete-subtree hash, is the 32 bytes at offset ``32 * i``; a tree of
n leaves is exactly ``stored_hash_count(n) * 32`` bytes. Nothing else is stored:
the tree size is the file length, so any process opening the file sees the
current tree. Every complete subtree hash is kept, so a root, an inclusion
proof or a consistency proof reads O(log n) hashes and never rebuilds the tree
(DESIGN.md §3).

Appends are whole records: each batch's hashes go to the end of the file in one
write, under an exclusive ``flock`` of ``<path>.lock`` so several processes can
share the file. A crash can still leave part of a record; opening the store (or
the next append) cuts that torn tail back to the last complete leaf. Recovery
goes by length alone: a tail that happens to be whole records of garbage (say,
blocks of zeros after a crash) is taken as leaves. The file is derived data,
rebuildable from the leaf hashes of LEDGER, so the writer should check its size
and last leaf hash against LEDGER when it starts; it is fsynced only when asked.

Only the standard library and ``ledger.formats.merkle``: offline verification uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from ledger.formats import merkle
from ledger.formats.errors import USAGE, LedgerError

__all__ = ["TreeError", "TreeStore"]

_H = merkle.HASH_SIZE


class TreeError(LedgerError, ValueError):
    """A tree store operation was refused: wrong size or index, or an unreadable file."""

    code = "tree_store"
    exit_status = USAGE


def _leaves_in(nbytes: int) -> int:
    """Return the largest n whose ``stored_hash_count(n)`` hashes fit in nbytes."""
    h = nbytes // _H
    # stored_hash_count(n) = 2n - popcount(n) lies in [n, 2n], strictly increasing,
    # so n starts at h/2 and climbs at most a few dozen steps.
    n = h // 2
    while merkle.stored_hash_count(n + 1) <= h:
        n += 1
    return n


class TreeStore:
    """RFC 9162 tree of the ledger's leaf hashes, as Go tlog stored hashes in one file."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        #: Stored hashes read through ``read_hashes`` (proofs and roots), for tests.
        self.reads = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # Under the lock, a tail that is not a whole record was left by a writer
            # that crashed; without it, it may be a live writer's append in progress.
            with self._locked():
                self._cut_torn_tail()
        except BaseException:
            self.close()
            raise

    # -- size -------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of leaves stored, re-read from the file length on every access."""
        # A concurrent append may be half written: count only complete records.
        return _leaves_in(os.fstat(self._open_fd()).st_size)

    def _check_size(self, size: int) -> None:
        if size < 0:
            raise TreeError(f"negative tree size {size}")
        have = self.size
        if size > have:
            raise TreeError(f"tree has {have} leaves, asked for {size}")

    # -- writing ----------------------------------------------------------------

    def append(self, first_index: int, leaf_hashes: Sequence[bytes]) -> int:
        """Append leaves first_index, first_index+1, ... by their leaf hashes.

        ``first_index`` must be the current size: it states which leaves the
        caller thinks come next, so a writer that lost a race is refused rather
        than appending in the wrong place. Returns the new size.
        """
        fd = self._open_fd()
        with self._locked():
            self._cut_torn_tail()
            size = self.size
            if first_index != size:
                raise TreeError(f"append at leaf {first_index}, but the tree has {size} leaves")
            if not leaf_hashes:
                return size
            base = merkle.stored_hash_count(size)
            new: list[bytes] = []

            def read(indexes: Sequence[int]) -> list[bytes]:
                # Left siblings come from the file, or from this batch if not yet written.
                return [self._pread(i) if i < base else new[i - base] for i in indexes]

            for n, leaf in enumerate(leaf_hashes, start=size):
                try:
                    new.extend(merkle.stored_hashes_for_record_hash(n, leaf, read))
                except ValueError as e:
                    raise TreeError(f"leaf {n}: {e}") from None
            data = b"".join(new)
            try:
                written = os.pwrite(fd, data, base * _H)
                while written < len(data):  # Short writes do not happen on local files.
                    written += os.pwrite(fd, data[written:], base * _H + written)
                if self.fsync:
                    os.fsync(fd)
            except BaseException:
                # Leave no partial record behind for readers to skip over.
                os.ftruncate(fd, base * _H)
                raise
            return size + len(leaf_hashes)

    def _cut_torn_tail(self) -> None:
        """Truncate a partial record left by a crashed writer (call with the lock held)."""
        fd = self._open_fd()
        length = os.fstat(fd).st_size
        complete = merkle.stored_hash_count(_leaves_in(length)) * _H
        if length != complete:
            os.ftruncate(fd, complete)
            if self.fsync:
                os.fsync(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock belongs to the open file description, so two TreeStore objects
        # in one process exclude each other just as two processes do.
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------

    def _pread(self, index: int) -> bytes:
        h = os.pread(self._open_fd(), _H, index * _H)
        if len(h) != _H:
            raise TreeError(f"stored hash {index} is beyond the end of {self.path}")
        return h

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Return the stored hashes at ``indexes`` (a ``merkle.HashReader``)."""
        count = merkle.stored_hash_count(self.size)
        for i in indexes:
            if not 0 <= i < count:
                raise TreeError(f"stored hash index {i} out of range [0, {count})")
        self.reads += len(indexes)
        return [self._pread(i) for i in indexes]

    def root(self, size: int | None = None) -> bytes:
        """Return the root hash of the first ``size`` leaves (default: all of them)."""
        if size is None:
            size = self.size
        self._check_size(size)
        return merkle.tree_hash(size, self.read_hashes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        self._check_size(size)
        if not 0 <= index < size:
            raise TreeError(f"leaf {index} is not in a tree of {size} leaves")
        return merkle.prove_record(size, index, self.read_hashes)

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """Inclusion proofs of several leaves in the tree of ``size`` leaves, each
        stored hash read once (the proofs of neighbouring leaves share most of
        theirs: a batch's receipts read about two hashes per leaf, not log n)."""
        self._check_size(size)
        for index in indexes:
            if not 0 <= index < size:
                raise TreeError(f"leaf {index} is not in a tree of {size} leaves")
        seen: dict[int, bytes] = {}

        def read(wanted: Sequence[int]) -> list[bytes]:
            missing = [i for i in wanted if i not in seen]
            if missing:
                seen.update(zip(missing, self.read_hashes(missing), strict=True))
            return [seen[i] for i in wanted]

        return [merkle.prove_record(size, index, read) for index in indexes]

    def consistency_proof(self, old_size: int, size: int) -> list[bytes]:
        """Return the RFC 9162 consistency proof from tree ``old_size`` to tree ``size``."""
        self._check_size(size)
        if not 0 <= old_size <= size:
            raise TreeError(f"tree of {old_size} leaves is not a prefix of the tree of {size}")
        return merkle.prove_tree(size, old_size, self.read_hashes)

    # -- lifetime ---------------------------------------------------------------

    def _open_fd(self) -> int:
        if self._fd < 0:
            raise TreeError(f"tree store {self.path} is closed")
        return self._fd

    def reset(self) -> None:
        """Empty the store (it is derived data: the caller rebuilds it from LEDGER)."""
        with self._locked():
            os.ftruncate(self._open_fd(), 0)
            if self.fsync:
                os.fsync(self._open_fd())

    def close(self) -> None:
        """Close the file; further use raises TreeError. Closing twice is harmless."""
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def __enter__(self) -> TreeStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
