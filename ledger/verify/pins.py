"""Pinned verification: a reader remembers the newest checkpoint it accepted per origin.

A notary that shows one history to one reader and another to a second reader
(a fork) is caught when each reader requires every checkpoint it accepts to
extend the last one it accepted: equal size, equal root; a larger one, with a
consistency proof from the pinned size (the bundle's ``consistency`` member,
checked once, by :func:`ledger.verify.bundle.verify_bundle`). A pin is the
checkpoint's signed note, one file per origin in a directory the caller
chooses (``ailedger verify`` uses ``$XDG_CONFIG_HOME/ailedger/pins/``), replaced
atomically and only by a larger checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from ledger.formats.checkpoint import MalformedCheckpointError, parse_checkpoint
from ledger.formats.trust import TrustPolicy
from ledger.verify.bundle import Report, VerificationError, verify_bundle

__all__ = ["PinStore", "verify_pinned"]


class PinStore:
    """The pinned checkpoints (signed notes) of one reader, one file per origin."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, origin: str) -> Path:
        return self.directory / f"{quote(origin, safe='')}.checkpoint"

    def load(self, origin: str) -> bytes | None:
        """The pinned checkpoint note of ``origin``, if any."""
        try:
            return self.path(origin).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, origin: str) -> int | None:
        """The tree size of the pinned checkpoint of ``origin`` (None: none, or unreadable)."""
        note = self.load(origin)
        if note is None:
            return None
        body, sep, _ = note.partition(b"\n\n")
        try:
            return parse_checkpoint(body.decode() + "\n").size if sep else None
        except (MalformedCheckpointError, UnicodeDecodeError):
            return None

    def save(self, origin: str, note: bytes) -> None:
        """Pin ``note`` (already verified by the caller), atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".pin-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(note)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(origin))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def verify_pinned(
    data: bytes,
    trust: TrustPolicy,
    pins: PinStore | None,
    *,
    since: bytes | None = None,
    now: datetime | None = None,
    exclusive: bool | None = None,
) -> Report:
    """:func:`verify_bundle`, consistent with the reader's pin for the trust policy's origin.

    ``exclusive`` is :func:`verify_bundle`'s (a server passes False). ``since`` (a
    checkpoint the caller passes by hand) replaces the pin for the
    check. With ``pins`` None nothing is read or pinned. After success the bundle's
    checkpoint becomes the pin when it is larger than the pinned one (or none is).
    """
    origin = trust.origin
    from_pin = since is None and pins is not None
    pinned = since if since is not None else (pins.load(origin) if pins is not None else None)
    try:
        report = verify_bundle(data, trust, since=pinned, now=now, exclusive=exclusive)
    except VerificationError as e:
        if not from_pin or pinned is None or e.check != "consistency":
            raise
        assert pins is not None
        raise VerificationError(
            e.check, f"{e.message}; {_hint(pins, origin, e.message)}", e.index
        ) from None
    if pins is not None:
        current = pins.size(origin)
        if current is None or report.size > current:
            pins.save(origin, report.checkpoint_note)
    return report


def _hint(pins: PinStore, origin: str, message: str) -> str:
    where = f"your pin is {pins.path(origin)}, kept by an earlier ailedger verify"
    size = pins.size(origin)
    if "forked" in message or "different root" in message:
        return f"{where}; a ledger that forked cannot prove it extends it"
    if "newer than the bundle" in message:
        return f"{where}: ask for a bundle at a later checkpoint, or pass --no-pin"
    return (
        f"{where}: ask for a bundle exported with `ailedger export --since {size}`, "
        "or pass --no-pin"
    )
