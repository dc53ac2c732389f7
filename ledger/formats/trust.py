"""The trust policy: the small file a regulator publishes so anyone can verify.

It names the log's origin, the log (notary) verifier keys, the witness
verifier keys and quorum, the regulator's root keys and how many of them must
sign the acts that shape the ledger (``root_quorum``: the genesis, adopted
policies, regulator enrolments), and the freshness window of submissions
(``freshness_seconds``: an envelope whose ``signed_at`` is older is refused).
Every key carries a validity window, so keys rotate without a flag day: a
signature counts only if its key was valid at the time that matters.

Standard library and ``cryptography`` only: the offline verifier reads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from ledger.formats import strictjson
from ledger.formats.checkpoint import CosignatureVerifier
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.keys import SLUG, decode_public_key
from ledger.formats.note import NoteError, Verifier
from ledger.formats.timeutil import ClockError, format_time, parse_time

__all__ = ["DEFAULT_FRESHNESS_SECONDS", "TRUST_FORMAT", "TrustError", "TrustPolicy", "TrustedKey"]

TRUST_FORMAT: Final = "ailedger/trust/v1"
#: Submissions signed longer ago than this are refused (DESIGN §6): 24 hours.
DEFAULT_FRESHNESS_SECONDS: Final = 24 * 3600
#: The longest freshness window a trust policy may set: one year.
MAX_FRESHNESS_SECONDS: Final = 366 * 24 * 3600
_SLUG = re.compile(SLUG)


class TrustError(LedgerError, ValueError):
    """A trust policy file that cannot be read or does not make sense."""

    code = "trust_policy"
    exit_status = USAGE


@dataclass(frozen=True)
class TrustedKey:
    """A key with its validity window (``valid_until`` exclusive, open when absent)."""

    key: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def valid_at(self, t: datetime) -> bool:
        if self.valid_from is not None and t < self.valid_from:
            return False
        return self.valid_until is None or t < self.valid_until

    def to_json(self) -> dict[str, str]:
        out = {"key": self.key}
        if self.valid_from is not None:
            out["valid_from"] = format_time(self.valid_from)
        if self.valid_until is not None:
            out["valid_until"] = format_time(self.valid_until)
        return out


@dataclass(frozen=True)
class TrustPolicy:
    origin: str
    regulator: str
    #: Raw Ed25519 public keys (standard base64) of the regulator's root.
    regulator_keys: list[TrustedKey]
    #: C2SP signed-note verifier keys of the notary (checkpoints, receipts).
    log_keys: list[TrustedKey]
    #: C2SP cosignature verifier keys of independent witnesses.
    witness_keys: list[TrustedKey] = field(default_factory=list)
    witness_quorum: int = 0
    #: Distinct valid regulator root keys that must sign the genesis, a
    #: ``PolicyAdopted`` and an enrolment giving the regulator role.
    root_quorum: int = 1
    #: A submission whose ``signed_at`` is older than this is refused (``stale``).
    freshness_seconds: int = DEFAULT_FRESHNESS_SECONDS

    @property
    def freshness(self) -> timedelta:
        return timedelta(seconds=self.freshness_seconds)

    def __post_init__(self) -> None:
        if not self.origin or len(self.origin) > 200:
            raise TrustError("origin must be 1 to 200 characters")
        if not _SLUG.fullmatch(self.regulator):
            raise TrustError(f"regulator {self.regulator!r} is not an actor id")
        for k in self.regulator_keys:
            try:
                decode_public_key(k.key)
            except ValueError as e:
                raise TrustError(f"regulator key {k.key!r}: {e}") from None
        for k in self.log_keys:
            try:
                Verifier.from_vkey(k.key)
            except NoteError as e:
                raise TrustError(f"log key {k.key!r}: {e}") from None
        for k in self.witness_keys:
            try:
                CosignatureVerifier.from_vkey(k.key)
            except NoteError as e:
                raise TrustError(f"witness key {k.key!r}: {e}") from None
        if not 0 <= self.witness_quorum <= len(self.witness_keys):
            raise TrustError("witness_quorum must be between 0 and the number of witness keys")
        if not 1 <= self.root_quorum <= max(1, len(self.regulator_keys)):
            raise TrustError("root_quorum must be between 1 and the number of regulator keys")
        if not 1 <= self.freshness_seconds <= MAX_FRESHNESS_SECONDS:
            raise TrustError(
                f"freshness_seconds must be between 1 and {MAX_FRESHNESS_SECONDS} (366 days)"
            )

    def regulator_key_valid(self, public_key: bytes, at: datetime) -> bool:
        return any(
            decode_public_key(k.key) == public_key and k.valid_at(at) for k in self.regulator_keys
        )

    def valid_regulator_keys(self, at: datetime) -> set[bytes]:
        """The raw root keys valid at ``at``."""
        return {decode_public_key(k.key) for k in self.regulator_keys if k.valid_at(at)}

    def log_key_problem(self, vkey: str, at: datetime) -> str | None:
        """Why ``vkey`` may not sign as the log at ``at`` under this policy, or None."""
        name = "+".join(vkey.split("+")[:2])
        windows = [k for k in self.log_keys if k.key == vkey]
        if not windows:
            return f"log key {name} is not a log key of the trust policy"
        if any(k.valid_at(at) for k in windows):
            return None
        spans = ", ".join(
            f"from {format_time(k.valid_from) if k.valid_from else 'always'} "
            f"until {format_time(k.valid_until) if k.valid_until else 'open'}"
            for k in windows
        )
        return f"log key {name} is valid {spans} in the trust policy, not at {format_time(at)}"

    def log_vkeys(self, at: datetime | None = None) -> list[str]:
        return [k.key for k in self.log_keys if at is None or k.valid_at(at)]

    def witness_vkeys(self, at: datetime | None = None) -> list[str]:
        return [k.key for k in self.witness_keys if at is None or k.valid_at(at)]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TRUST_FORMAT,
            "origin": self.origin,
            "regulator": self.regulator,
            "regulator_keys": [k.to_json() for k in self.regulator_keys],
            "log_keys": [k.to_json() for k in self.log_keys],
            "witness_keys": [k.to_json() for k in self.witness_keys],
            "witness_quorum": self.witness_quorum,
            "root_quorum": self.root_quorum,
            "freshness_seconds": self.freshness_seconds,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode() + b"\n"

    @staticmethod
    def decode(data: bytes) -> TrustPolicy:
        try:
            doc = strictjson.loads(data)
            return _policy(doc)
        except (strictjson.StrictJsonError, ClockError) as e:
            raise TrustError(f"not a trust policy ({TRUST_FORMAT}): {e}") from None

    @staticmethod
    def load(path: Path) -> TrustPolicy:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise TrustError(f"cannot read trust policy {path}: {e.strerror}") from None
        return TrustPolicy.decode(data)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.encode())


_POLICY_FIELDS = {
    "format",
    "origin",
    "regulator",
    "regulator_keys",
    "log_keys",
    "witness_keys",
    "witness_quorum",
    "root_quorum",
    "freshness_seconds",
}
_REQUIRED = ("format", "origin", "regulator", "regulator_keys", "log_keys")


def _object(
    value: object, fields: set[str], required: tuple[str, ...], where: str
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TrustError(f"{where} must be a JSON object")
    for name in required:
        if name not in value:
            raise TrustError(f"missing required field `{name}` in {where}")
    for name in value:
        if name not in fields:
            raise TrustError(f"unknown field `{name}` in {where}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TrustError(f"{where} must be a string")
    return value


def _keys(value: object, where: str) -> list[TrustedKey]:
    if not isinstance(value, list):
        raise TrustError(f"{where} must be a list")
    out = []
    for i, item in enumerate(value):
        obj = _object(item, {"key", "valid_from", "valid_until"}, ("key",), f"{where}[{i}]")
        times = {
            name: parse_time(_str(obj[name], f"{where}[{i}].{name}"))
            for name in ("valid_from", "valid_until")
            if name in obj
        }
        out.append(TrustedKey(_str(obj["key"], f"{where}[{i}].key"), **times))
    return out


def _policy(doc: object) -> TrustPolicy:
    obj = _object(doc, _POLICY_FIELDS, _REQUIRED, "the trust policy")
    if obj["format"] != TRUST_FORMAT:
        raise TrustError(f"format must be {TRUST_FORMAT!r}")
    quorum = _int(obj.get("witness_quorum", 0), "witness_quorum")
    root_quorum = _int(obj.get("root_quorum", 1), "root_quorum")
    freshness = _int(obj.get("freshness_seconds", DEFAULT_FRESHNESS_SECONDS), "freshness_seconds")
    return TrustPolicy(
        origin=_str(obj["origin"], "origin"),
        regulator=_str(obj["regulator"], "regulator"),
        regulator_keys=_keys(obj["regulator_keys"], "regulator_keys"),
        log_keys=_keys(obj["log_keys"], "log_keys"),
        witness_keys=_keys(obj.get("witness_keys", []), "witness_keys"),
        witness_quorum=quorum,
        root_quorum=root_quorum,
        freshness_seconds=freshness,
    )


def _int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TrustError(f"{where} must be an integer")
    return value
