"""DSSE v1 envelopes (secure-systems-lab/dsse, protocol.md).

The signature is Ed25519 over ``PAE(payloadType, payload)``. Verification runs
over the exact payload bytes carried in the envelope: nothing is re-serialised
before verifying. An ailedger envelope carries one signature or several (at
most :data:`MAX_SIGNATURES`: the regulator's acts may need m-of-n root keys),
each over the same PAE bytes; a ``keyid`` (``<actor>/<fingerprint>``) is only
a hint for finding the key. A key counts once however many of the signatures
it made (:meth:`ParsedEnvelope.signed_by`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.formats import strictjson
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.keys import ActorKey

__all__ = [
    "MAX_SIGNATURES",
    "PAYLOAD_TYPE",
    "EnvelopeError",
    "ParsedEnvelope",
    "add_signature",
    "pae",
    "parse_envelope",
    "sign_envelope",
]

PAYLOAD_TYPE = "application/vnd.ailedger.event+json; v=1"
#: The most signatures an envelope may carry.
MAX_SIGNATURES = 16


class EnvelopeError(LedgerError, ValueError):
    """Bytes that are not a well-formed ailedger DSSE envelope."""

    code = "envelope_invalid"
    exit_status = USAGE

    def __init__(self, message: str, *, json_error: bool = False) -> None:
        super().__init__(message)
        self.json_error = json_error


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _b64decode(text: str, what: str) -> bytes:
    # Standard base64 that binascii's strict mode accepts decodes the same way below
    # (its alphabet, its padding): taken as is, without the regular expression pass.
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    # DSSE allows the standard or the URL-safe alphabet.
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(text.translate(str.maketrans("-_", "+/")), validate=True)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class ParsedEnvelope:
    """A structurally valid envelope: the decoded payload and its signatures.

    ``keyid`` and ``signature`` are the first signature's (the hint for the
    signer); ``signatures`` are all of them, as (keyid, signature) pairs."""

    raw: bytes
    payload_type: str
    payload: bytes
    keyid: str
    signature: bytes
    signatures: tuple[tuple[str, bytes], ...] = ()

    @property
    def keyid_fingerprint(self) -> str:
        return self.keyid.partition("/")[2]

    def verify(self, public_key: bytes | Ed25519PublicKey) -> bool:
        """True when ``public_key`` made one of the signatures, over PAE of the exact
        payload bytes."""
        key = (
            Ed25519PublicKey.from_public_bytes(public_key)
            if isinstance(public_key, bytes)
            else public_key
        )
        message = pae(self.payload_type, self.payload)
        for _, sig in self.signatures or (("", self.signature),):
            try:
                key.verify(sig, message)
            except InvalidSignature:
                continue
            return True
        return False

    def signed_by(self, public_keys: Iterable[bytes]) -> set[bytes]:
        """The distinct keys among ``public_keys`` that made a signature: each counted
        once, however many signatures it made."""
        return {k for k in set(public_keys) if self.verify(k)}


_FIELDS = ("payloadType", "payload", "signatures")


def _check_fields(obj: object, expected: tuple[str, ...], where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise EnvelopeError(f"not a DSSE envelope: {where} must be an object")
    for name in expected:
        if name not in obj:
            raise EnvelopeError(f"not a DSSE envelope: missing required field `{name}` in {where}")
        if name != "signatures" and not isinstance(obj[name], str):
            raise EnvelopeError(f"not a DSSE envelope: `{name}` in {where} must be a string")
    for name in obj:
        if name not in expected:
            raise EnvelopeError(f"not a DSSE envelope: unknown field `{name}` in {where}")
    return obj


#: An envelope as :func:`sign_envelope` writes it: compact JSON, one signature, strings
#: without escapes or control characters. Bytes it matches read exactly as the strict
#: parse below reads them (``_compact``); all others, and a match whose base64 does not
#: decode strictly or whose signature is not 64 bytes, take that parse.
_COMPACT = re.compile(
    rb'\{"payloadType":"application/vnd\.ailedger\.event\+json; v=1",'
    rb'"payload":"([A-Za-z0-9+/]*={0,2})",'
    rb'"signatures":\[\{"keyid":"([\x20\x21\x23-\x5b\x5d-\x7e]*)",'
    rb'"sig":"([A-Za-z0-9+/]*={0,2})"\}\]\}'
)


def _compact(data: bytes) -> ParsedEnvelope | None:
    m = _COMPACT.fullmatch(data)
    if m is None:
        return None
    payload, keyid, sig = m.groups()
    try:
        raw_sig = binascii.a2b_base64(sig, strict_mode=True)
        raw_payload = binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error:
        return None
    if len(raw_sig) != 64:
        return None
    hint = keyid.decode()
    return ParsedEnvelope(data, PAYLOAD_TYPE, raw_payload, hint, raw_sig, ((hint, raw_sig),))


def parse_envelope(data: bytes) -> ParsedEnvelope:
    """Parse an envelope strictly; raise :class:`EnvelopeError` saying what is wrong."""
    compact = _compact(data)
    if compact is not None:
        return compact
    return _parse_strictly(data)


def _parse_strictly(data: bytes) -> ParsedEnvelope:
    try:
        doc = strictjson.loads(data)
    except strictjson.StrictJsonError as e:
        raise EnvelopeError(str(e), json_error=e.syntax) from None
    env = _check_fields(doc, _FIELDS, "the envelope")
    payload_type = str(env["payloadType"])
    if payload_type != PAYLOAD_TYPE:
        raise EnvelopeError(f"payloadType must be {PAYLOAD_TYPE!r}, got {payload_type!r}")
    signatures = env["signatures"]
    if not isinstance(signatures, list):
        raise EnvelopeError("not a DSSE envelope: `signatures` must be a list")
    if not 1 <= len(signatures) <= MAX_SIGNATURES:
        raise EnvelopeError(f"expected one to {MAX_SIGNATURES} signatures, got {len(signatures)}")
    pairs = []
    for i, item in enumerate(signatures):
        signature = _check_fields(item, ("keyid", "sig"), f"signature {i}")
        sig = _b64decode(str(signature["sig"]), "signature")
        if len(sig) != 64:
            raise EnvelopeError(f"an Ed25519 signature is 64 bytes, got {len(sig)}")
        pairs.append((str(signature["keyid"]), sig))
    payload = _b64decode(str(env["payload"]), "payload")
    keyid, sig = pairs[0]
    return ParsedEnvelope(data, payload_type, payload, keyid, sig, tuple(pairs))


def sign_envelope(payload: bytes, key: ActorKey, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Sign ``payload`` and return the compact JSON envelope bytes."""
    sig = key.sign(pae(payload_type, payload))
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(sig).decode()}],
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def add_signature(envelope: bytes, key: ActorKey) -> bytes:
    """Return ``envelope`` with one more signature by ``key`` over the same payload
    bytes (a second regulator root key, for m-of-n). The payload is not touched;
    a key that already signed is refused."""
    parsed = parse_envelope(envelope)
    if parsed.verify(key.public_key):
        raise EnvelopeError(f"key {key.keyid} already signed this envelope")
    if len(parsed.signatures) >= MAX_SIGNATURES:
        raise EnvelopeError(f"an envelope carries at most {MAX_SIGNATURES} signatures")
    sig = key.sign(pae(parsed.payload_type, parsed.payload))
    doc = json.loads(envelope)
    doc["signatures"].append({"keyid": key.keyid, "sig": base64.b64encode(sig).decode()})
    return json.dumps(doc, separators=(",", ":")).encode()
