"""Completeness: the heads leaf and heads proofs (DESIGN §3, "Heads leaf", "Heads proof").

The *head map* is a prefix tree over subjects. A subject's key is
``SHA-256("ailedger/heads/v1 key\\n" || S)``, read most significant bit first;
its value is ``(k, c, h)``: the index of the subject's newest entry, its number
of entries and that entry's leaf hash. Hashes::

    LEAF  = SHA-256(0x02 || key || u64be(k) || u64be(c) || h)
    NODE  = SHA-256(0x03 || left || right)
    EMPTY = 32 zero bytes
    ROOT(T) = EMPTY if T is empty, LEAF of the element if T has one,
              else NODE(ROOT(T0), ROOT(T1)) splitting on the next key bit

A *heads leaf* is a log leaf of its own kind, canonical and all-or-nothing::

    ailedger/heads/v1
    size <m>
    subjects <n>
    root <base64 map root>

at index ``m``, covering leaves ``[0, m)``. The notary signs checkpoint ``N``
only when leaf ``N-1`` is a heads leaf of size ``N-1``, so witnesses cosign the
map root without any change to C2SP checkpoints.

A *heads proof* shows a subject's value (``inclusion``) or its absence
(``absent-empty``: an empty subtree on its path; ``absent-leaf``: another key
alone in the subtree on its path) under a map root; the siblings are listed
deepest first. :func:`reference_root` is the ten-line definition above, the
oracle for the incremental map (:mod:`ledger.formats.headmap`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from ledger.formats.checkpoint import parse_uint64
from ledger.formats.errors import CHECK_FAILED, USAGE, LedgerError
from ledger.formats.merkle import leaf_hash

__all__ = [
    "EMPTY",
    "HEADS_HEADER",
    "HEADS_PROOF_HEADER",
    "HeadValue",
    "HeadsLeaf",
    "HeadsProof",
    "HeadsProofError",
    "MalformedHeadsError",
    "ProofResult",
    "bit",
    "heads_msg_id",
    "is_heads_leaf",
    "leaf_node",
    "map_node",
    "reference_proof",
    "reference_root",
    "subject_key",
]

HEADS_HEADER = b"ailedger/heads/v1\n"
HEADS_PROOF_HEADER = "ailedger/heads-proof/v1"
KEY_PREFIX = b"ailedger/heads/v1 key\n"
EMPTY = bytes(32)
#: Keys are SHA-256 digests: no path is longer than 256 bits.
MAX_DEPTH = 256
_U64 = (1 << 64) - 1

ProofResult = Literal["inclusion", "absent-empty", "absent-leaf"]
_RESULTS: tuple[ProofResult, ...] = ("inclusion", "absent-empty", "absent-leaf")


class MalformedHeadsError(LedgerError, ValueError):
    """Bytes that are not a well-formed heads leaf or heads proof."""

    code = "malformed_heads"
    exit_status = USAGE


class HeadsProofError(LedgerError, ValueError):
    """A heads proof that does not hold under the heads leaf's root."""

    code = "heads_proof_invalid"
    exit_status = CHECK_FAILED


def subject_key(subject: str) -> bytes:
    """The map key of ``subject``: SHA-256 with domain separation."""
    return hashlib.sha256(KEY_PREFIX + subject.encode()).digest()


def bit(key: bytes, i: int) -> int:
    """Bit ``i`` of ``key``, most significant first."""
    return (key[i >> 3] >> (7 - (i & 7))) & 1


@dataclass(frozen=True, slots=True)
class HeadValue:
    """A subject's head: its newest entry's index, its number of entries, that entry's leaf hash."""

    index: int
    count: int
    leaf_hash: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.index <= _U64 and 1 <= self.count <= _U64):
            raise MalformedHeadsError(f"head value out of range: {self.index} {self.count}")
        if self.count > self.index + 1:
            raise MalformedHeadsError(f"{self.count} entries cannot end at index {self.index}")
        if len(self.leaf_hash) != 32:
            raise MalformedHeadsError("a leaf hash has 32 bytes")


def leaf_node(key: bytes, value: HeadValue) -> bytes:
    """LEAF = SHA-256(0x02 || key || u64be(k) || u64be(c) || h)."""
    return hashlib.sha256(
        b"\x02"
        + key
        + value.index.to_bytes(8, "big")
        + value.count.to_bytes(8, "big")
        + value.leaf_hash
    ).digest()


def map_node(left: bytes, right: bytes) -> bytes:
    """NODE = SHA-256(0x03 || left || right)."""
    return hashlib.sha256(b"\x03" + left + right).digest()


def reference_root(items: Mapping[bytes, HeadValue], depth: int = 0) -> bytes:
    """ROOT(T), exactly as defined: the oracle (quadratic; for tests and tiny maps)."""
    if not items:
        return EMPTY
    if len(items) == 1:
        ((key, value),) = items.items()
        return leaf_node(key, value)
    zero = {k: v for k, v in items.items() if not bit(k, depth)}
    one = {k: v for k, v in items.items() if bit(k, depth)}
    return map_node(reference_root(zero, depth + 1), reference_root(one, depth + 1))


def reference_proof(items: Mapping[bytes, HeadValue], subject: str) -> HeadsProof:
    """The heads proof of ``subject`` computed from the whole map (the oracle)."""
    key = subject_key(subject)
    siblings: list[bytes] = []
    here = dict(items)
    depth = 0
    while len(here) > 1:
        side = bit(key, depth)
        mine = {k: v for k, v in here.items() if bit(k, depth) == side}
        other = {k: v for k, v in here.items() if bit(k, depth) != side}
        siblings.append(reference_root(other, depth + 1))
        here = mine
        depth += 1
    siblings.reverse()
    if not here:
        return HeadsProof(subject, "absent-empty", depth, None, None, tuple(siblings))
    ((k, v),) = here.items()
    if k == key:
        return HeadsProof(subject, "inclusion", depth, v, None, tuple(siblings))
    return HeadsProof(subject, "absent-leaf", depth, None, (k, v), tuple(siblings))


# --- the heads leaf ---------------------------------------------------------------


def is_heads_leaf(data: bytes) -> bool:
    """Whether ``data`` claims to be a heads leaf (parse it to know it is one)."""
    return data.startswith(HEADS_HEADER)


def heads_msg_id(size: int) -> str:
    """The ``Nats-Msg-Id`` of the heads leaf at index ``size``."""
    return f"heads-{size}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedHeadsError(f"{what} is not base64") from None
    if _b64(raw) != text:
        raise MalformedHeadsError(f"{what} is not canonical base64")
    return raw


def _number(text: str, what: str) -> int:
    n = parse_uint64(text)
    if n is None:
        raise MalformedHeadsError(f"{what} {text[:30]!r} is not a decimal uint64")
    return n


@dataclass(frozen=True)
class HeadsLeaf:
    """``ailedger/heads/v1``: the map root over leaves ``[0, size)``, stored at index ``size``."""

    size: int
    subjects: int
    root: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.size <= _U64 and 0 <= self.subjects <= self.size):
            raise MalformedHeadsError(
                f"a heads leaf of size {self.size} cannot cover {self.subjects} subjects"
            )
        if len(self.root) != 32:
            raise MalformedHeadsError("a map root has 32 bytes")
        if (self.subjects == 0) != (self.root == EMPTY):
            raise MalformedHeadsError("the map root is EMPTY exactly when there are no subjects")

    @property
    def index(self) -> int:
        """Where the leaf stands in the log: right after the leaves it covers."""
        return self.size

    @cached_property
    def encoded(self) -> bytes:
        return (
            HEADS_HEADER
            + (f"size {self.size}\nsubjects {self.subjects}\nroot {_b64(self.root)}\n").encode()
        )

    @cached_property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encoded)

    @staticmethod
    def parse(data: bytes) -> HeadsLeaf:
        if not data.startswith(HEADS_HEADER):
            raise MalformedHeadsError("missing ailedger/heads/v1 header")
        try:
            text = data[len(HEADS_HEADER) :].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedHeadsError("a heads leaf is ASCII") from None
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "":
            raise MalformedHeadsError("a heads leaf has exactly three lines after its header")
        fields = []
        for line, name in zip(lines[:3], ("size", "subjects", "root"), strict=True):
            key, sep, value = line.partition(" ")
            if key != name or not sep:
                raise MalformedHeadsError(f"expected a {name!r} line, got {line[:40]!r}")
            fields.append(value)
        leaf = HeadsLeaf(
            _number(fields[0], "size"), _number(fields[1], "subjects"), _unb64(fields[2], "root")
        )
        if leaf.encoded != data:
            raise MalformedHeadsError("heads leaf is not in canonical form")
        return leaf


# --- heads proofs ------------------------------------------------------------------


@dataclass(frozen=True)
class HeadsProof:
    """A subject's value, or its absence, under a map root (siblings deepest first)."""

    subject: str
    result: ProofResult
    depth: int
    value: HeadValue | None
    other: tuple[bytes, HeadValue] | None
    siblings: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.result not in _RESULTS:
            raise MalformedHeadsError(f"unknown result {self.result!r}")
        if not 0 <= self.depth <= MAX_DEPTH or len(self.siblings) != self.depth:
            raise MalformedHeadsError(
                f"depth {self.depth} with {len(self.siblings)} sibling hashes"
            )
        if any(len(s) != 32 for s in self.siblings):
            raise MalformedHeadsError("a sibling hash has 32 bytes")
        if (self.value is not None) != (self.result == "inclusion"):
            raise MalformedHeadsError("a value line belongs to an inclusion proof, only")
        if (self.other is not None) != (self.result == "absent-leaf"):
            raise MalformedHeadsError("an other line belongs to an absent-leaf proof, only")
        if self.other is not None:
            other_key = self.other[0]
            key = self.key
            if len(other_key) != 32 or other_key == key:
                raise MalformedHeadsError("the other key must be a different 32-byte key")
            if any(bit(other_key, i) != bit(key, i) for i in range(self.depth)):
                raise MalformedHeadsError(
                    f"the other key does not share the subject key's first {self.depth} bits"
                )

    @cached_property
    def key(self) -> bytes:
        return subject_key(self.subject)

    def fold(self) -> bytes:
        """The map root this proof leads to."""
        if self.result == "inclusion":
            assert self.value is not None
            t = leaf_node(self.key, self.value)
        elif self.result == "absent-leaf":
            assert self.other is not None
            t = leaf_node(*self.other)
        else:
            t = EMPTY
        for j, sibling in enumerate(self.siblings):
            i = self.depth - 1 - j
            t = map_node(sibling, t) if bit(self.key, i) else map_node(t, sibling)
        return t

    def verify(self, root: bytes) -> None:
        """Raise :class:`HeadsProofError` unless the proof leads to ``root``."""
        if self.siblings and self.siblings[0] == EMPTY:
            # In the canonical tree, a leaf or an empty subtree at depth d has a
            # non-empty sibling, or it would stand one level higher.
            raise HeadsProofError(
                f"heads proof of {self.subject}: its deepest sibling is EMPTY, so it is not "
                "at the depth the map puts it"
            )
        if self.fold() != root:
            raise HeadsProofError(
                f"heads proof of {self.subject} ({self.result}, depth {self.depth}) does not "
                "lead to the heads leaf's root"
            )

    def encode(self) -> str:
        lines = [
            HEADS_PROOF_HEADER,
            f"subject {self.subject}",
            f"result {self.result}",
            f"depth {self.depth}",
        ]
        if self.value is not None:
            v = self.value
            lines.append(f"value {v.index} {v.count} {_b64(v.leaf_hash)}")
        if self.other is not None:
            k, v = self.other
            lines.append(f"other {_b64(k)} {v.index} {v.count} {_b64(v.leaf_hash)}")
        lines.extend(_b64(s) for s in self.siblings)
        return "".join(f"{line}\n" for line in lines)

    @staticmethod
    def parse(text: str) -> HeadsProof:
        if not text.endswith("\n"):
            raise MalformedHeadsError("a heads proof ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 4 or lines[0] != HEADS_PROOF_HEADER:
            raise MalformedHeadsError(f"missing {HEADS_PROOF_HEADER} header")
        fields = []
        for line, name in zip(lines[1:4], ("subject", "result", "depth"), strict=True):
            key, sep, field = line.partition(" ")
            if key != name or not sep:
                raise MalformedHeadsError(f"expected a {name!r} line, got {line[:40]!r}")
            fields.append(field)
        subject, result, depth_text = fields
        if result not in _RESULTS:
            raise MalformedHeadsError(f"unknown result {result[:30]!r}")
        depth = _number(depth_text, "depth")
        rest = lines[4:]
        value: HeadValue | None = None
        other: tuple[bytes, HeadValue] | None = None
        if result == "inclusion":
            parts = rest[0].split(" ") if rest else []
            if len(parts) != 4 or parts[0] != "value":
                raise MalformedHeadsError("an inclusion proof has a 'value <k> <c> <h>' line")
            value = HeadValue(_number(parts[1], "k"), _number(parts[2], "c"), _unb64(parts[3], "h"))
            rest = rest[1:]
        elif result == "absent-leaf":
            parts = rest[0].split(" ") if rest else []
            if len(parts) != 5 or parts[0] != "other":
                raise MalformedHeadsError(
                    "an absent-leaf proof has an 'other <key> <k> <c> <h>' line"
                )
            other = (
                _unb64(parts[1], "other key"),
                HeadValue(_number(parts[2], "k"), _number(parts[3], "c"), _unb64(parts[4], "h")),
            )
            rest = rest[1:]
        siblings = tuple(_unb64(s, "sibling") for s in rest)
        proof = HeadsProof(subject, result, depth, value, other, siblings)
        if proof.encode() != text:
            raise MalformedHeadsError("heads proof is not in canonical form")
        return proof
