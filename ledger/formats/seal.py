"""Batch seals: the notary's one signature over each atomic LEDGER batch.

The last message of every atomic batch the notary appends to LEDGER carries
the header ``Ailedger-Seal``: the standard base64 of a C2SP signed note by the
log key whose body is exactly::

    ailedger/seal/v1
    <origin>
    seq <stream sequence of the batch's first message>
    size <tree size after the batch>
    root <base64 RFC 9162 root of that tree>
    last <integrated of the batch's last entry>

A seal binds only where it stands in LEDGER: a reader checks that the sealed
message's batch starts at ``seq``, that the batch holds exactly ``size`` minus
the previous seal's size entries, and that the entries fold up to ``root``.
Anything no seal covers is *foreign*. Parsing is all-or-nothing.
"""

from __future__ import annotations

import base64
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ledger.formats.errors import CHECK_FAILED, LedgerError
from ledger.formats.merkle import (
    HashReader,
    stored_hash_count,
    stored_hashes_for_record_hash,
    tree_hash,
)
from ledger.formats.note import (
    Signer,
    Verifiers,
    b64decode_strict,
    open_record,
    sign_note,
)
from ledger.formats.timeutil import ClockError, format_time, parse_time

__all__ = [
    "HDR_SEAL",
    "SEAL_HEADER",
    "Seal",
    "SealCache",
    "SealError",
    "open_seal",
    "open_seal_header",
    "parse_uint",
    "root_after",
    "seal_body",
    "sign_seal",
]

SEAL_HEADER = "ailedger/seal/v1"
#: The NATS header on the last message of a batch.
HDR_SEAL = "Ailedger-Seal"

_UINT = re.compile(r"0|[1-9][0-9]{0,18}")


class SealError(LedgerError, ValueError):
    """A batch seal that is malformed or not signed by a log key."""

    code = "seal_invalid"
    exit_status = CHECK_FAILED


def parse_uint(text: str, what: str, error: type[LedgerError]) -> int:
    """A canonical decimal number below 10^19 (no sign, no leading zero)."""
    if not _UINT.fullmatch(text):
        raise error(f"{what} {text[:40]!r} is not a decimal number")
    return int(text)


@dataclass(frozen=True)
class Seal:
    """An opened seal: its fields and the signed note they came from."""

    origin: str
    seq: int
    size: int
    root: bytes
    last: datetime
    note: bytes
    #: (name, key ID) of the known keys whose signatures verified.
    signed_by: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    def body(self) -> str:
        return seal_body(self.origin, self.seq, self.size, self.root, self.last)

    @property
    def header_value(self) -> str:
        """The ``Ailedger-Seal`` header value: standard base64 of the note."""
        return base64.b64encode(self.note).decode("ascii")


def seal_body(origin: str, seq: int, size: int, root: bytes, last: datetime) -> str:
    return (
        f"{SEAL_HEADER}\n{origin}\nseq {seq}\nsize {size}\n"
        f"root {base64.b64encode(root).decode('ascii')}\nlast {format_time(last)}\n"
    )


def sign_seal(signer: Signer, seq: int, size: int, root: bytes, last: datetime) -> Seal:
    """Seal a batch (origin: the signer's name, as for checkpoints)."""
    if seq < 1 or size < 1 or len(root) != 32:
        raise SealError("a seal covers a non-empty batch at a stream sequence >= 1")
    note = sign_note(seal_body(signer.name, seq, size, root, last), signer)
    return Seal(signer.name, seq, size, root, last, note, ((signer.name, signer.key_hash),))


def open_seal(note: bytes, verifiers: Verifiers) -> Seal:
    """Verify the seal's signature by a log key named after its origin; parse strictly."""
    opened, origin, fields = open_record(
        note,
        verifiers,
        header=SEAL_HEADER,
        names=("seq", "size", "root", "last"),
        what="seal",
        error=SealError,
    )
    seq = parse_uint(fields["seq"], "seq", SealError)
    size = parse_uint(fields["size"], "size", SealError)
    try:
        root = b64decode_strict(fields["root"])
        last = parse_time(fields["last"])
    except (ValueError, ClockError) as e:
        raise SealError(f"seal: {e}") from None
    if len(root) != 32 or seq < 1 or size < 1:
        raise SealError("seal root is not 32 bytes, or seq or size is 0")
    signed_by = tuple((sig.name, sig.key_hash) for sig in opened.sigs)
    seal = Seal(origin, seq, size, root, last, note, signed_by)
    if seal.body() != opened.text:
        raise SealError("seal body is not canonical")
    return seal


def open_seal_header(value: str, verifiers: Verifiers) -> Seal:
    """Open the value of an ``Ailedger-Seal`` header (standard base64 of the note)."""
    try:
        note = b64decode_strict(value)
    except ValueError as e:
        raise SealError(f"seal header: {e}") from None
    return open_seal(note, verifiers)


def root_after(size: int, read_hashes: HashReader, leaves: Sequence[bytes]) -> bytes:
    """The root of the tree of ``size`` stored leaves plus ``leaves``, without storing them.

    What a seal names before LEDGER has accepted its batch (a refused batch
    must leave the tree untouched), and what a reader recomputes per batch.
    """
    base = stored_hash_count(size)
    pending: list[bytes] = []

    def read(indexes: Sequence[int]) -> list[bytes]:
        old = [i for i in indexes if i < base]
        got = dict(zip(old, read_hashes(old), strict=True)) if old else {}
        return [got[i] if i < base else pending[i - base] for i in indexes]

    for n, leaf in enumerate(leaves, start=size):
        pending.extend(stored_hashes_for_record_hash(n, leaf, read))
    return tree_hash(size + len(leaves), read)


class SealCache:
    """Opened seals by note bytes: each seal's signature is verified once (bounded).

    ``valid_at`` (optional) says whether a seal's signing key was valid at the
    seal's ``last`` time (the trust policy's validity windows); a seal it
    refuses is a :class:`SealError`.
    """

    def __init__(
        self,
        verifiers: Verifiers,
        limit: int = 4096,
        *,
        valid_at: Callable[[Seal], bool] | None = None,
    ) -> None:
        self.verifiers = verifiers
        self.valid_at = valid_at
        self.limit = limit
        self._seals: OrderedDict[bytes, Seal] = OrderedDict()
        #: How many seal signatures were checked (not answered from the cache).
        self.verified = 0

    def open(self, note: bytes) -> Seal:
        seal = self._seals.get(note)
        if seal is not None:
            self._seals.move_to_end(note)
            return seal
        seal = open_seal(note, self.verifiers)
        self.verified += 1
        if self.valid_at is not None and not self.valid_at(seal):
            raise SealError(f"seal {seal.size}: no log key valid at {format_time(seal.last)}")
        self._seals[note] = seal
        while len(self._seals) > self.limit:
            self._seals.popitem(last=False)
        return seal
