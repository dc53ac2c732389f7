"""The trust policy: the small file a regulator publishes so anyone can verify.

It names the log's origin, the log (notary) verifier keys, the witness
verifier keys and quorum, and the regulator's root keys. Every key carries a
validity window, so keys rotate without a flag day: a signature counts only if
its key was valid at the time that matters (the entry's integration time, or
the checkpoint's).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from ledger.keys import SLUG, decode_public_key

__all__ = ["TRUST_FORMAT", "TrustError", "TrustPolicy", "TrustedKey"]

TRUST_FORMAT: Final = "ailedger/trust/v1"
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class TrustError(ValueError):
    """A trust policy file that cannot be read or does not make sense."""


class TrustedKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A key with its validity window (``valid_until`` exclusive, open when absent)."""

    key: str
    valid_from: AwareTime | None = None
    valid_until: AwareTime | None = None

    def valid_at(self, t: datetime) -> bool:
        if self.valid_from is not None and t < self.valid_from:
            return False
        return self.valid_until is None or t < self.valid_until


class TrustPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: Literal["ailedger/trust/v1"] = TRUST_FORMAT
    origin: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    regulator: Annotated[str, msgspec.Meta(pattern=SLUG)]
    #: Raw Ed25519 public keys (standard base64) of the regulator's root.
    regulator_keys: list[TrustedKey]
    #: C2SP signed-note verifier keys of the notary (checkpoints, receipts).
    log_keys: list[TrustedKey]
    #: C2SP cosignature verifier keys of independent witnesses.
    witness_keys: list[TrustedKey] = msgspec.field(default_factory=list)
    witness_quorum: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        for k in self.regulator_keys:
            try:
                decode_public_key(k.key)
            except ValueError as e:
                raise ValueError(f"regulator key {k.key!r}: {e}") from None
        if self.witness_quorum > len(self.witness_keys):
            raise ValueError("witness_quorum exceeds the number of witness keys")

    def regulator_key_valid(self, public_key: bytes, at: datetime) -> bool:
        return any(
            decode_public_key(k.key) == public_key and k.valid_at(at) for k in self.regulator_keys
        )

    def log_vkeys(self, at: datetime | None = None) -> list[str]:
        return [k.key for k in self.log_keys if at is None or k.valid_at(at)]

    def witness_vkeys(self, at: datetime | None = None) -> list[str]:
        return [k.key for k in self.witness_keys if at is None or k.valid_at(at)]

    def encode(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"

    @staticmethod
    def decode(data: bytes) -> TrustPolicy:
        try:
            return msgspec.json.decode(data, type=TrustPolicy)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
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
