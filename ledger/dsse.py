"""DSSE v1 envelopes (secure-systems-lab/dsse, protocol.md).

The signature is Ed25519 over ``PAE(payloadType, payload)``. Verification runs
over the exact payload bytes carried in the envelope: nothing is re-serialised
before verifying. An ailedger envelope carries exactly one signature, whose
``keyid`` (``<actor>/<fingerprint>``) is only a hint for finding the key.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import strictjson
from ledger.keys import ActorKey

__all__ = [
    "PAYLOAD_TYPE",
    "Envelope",
    "EnvelopeError",
    "EnvelopeSignature",
    "ParsedEnvelope",
    "pae",
    "parse_envelope",
    "sign_envelope",
]

PAYLOAD_TYPE = "application/vnd.ailedger.event+json; v=1"


class EnvelopeError(ValueError):
    """Bytes that are not a well-formed ailedger DSSE envelope."""

    def __init__(self, message: str, *, json_error: bool = False) -> None:
        super().__init__(message)
        self.json_error = json_error


class EnvelopeSignature(msgspec.Struct, forbid_unknown_fields=True):
    keyid: str
    sig: str


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The DSSE JSON envelope exactly as it travels and is stored."""

    payloadType: str
    payload: str
    signatures: list[EnvelopeSignature]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _b64decode(text: str, what: str) -> bytes:
    # DSSE allows the standard or the URL-safe alphabet.
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(text.translate(str.maketrans("-_", "+/")), validate=True)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class ParsedEnvelope:
    """A structurally valid envelope: the decoded payload and its one signature."""

    raw: bytes
    payload_type: str
    payload: bytes
    keyid: str
    signature: bytes

    @property
    def keyid_actor(self) -> str:
        return self.keyid.partition("/")[0]

    @property
    def keyid_fingerprint(self) -> str:
        return self.keyid.partition("/")[2]

    def verify(self, public_key: bytes | Ed25519PublicKey) -> bool:
        """True when the signature verifies over PAE of the exact payload bytes."""
        key = (
            Ed25519PublicKey.from_public_bytes(public_key)
            if isinstance(public_key, bytes)
            else public_key
        )
        try:
            key.verify(self.signature, pae(self.payload_type, self.payload))
        except InvalidSignature:
            return False
        return True


_envelope_decoder = msgspec.json.Decoder(Envelope)


def parse_envelope(data: bytes) -> ParsedEnvelope:
    """Parse an envelope strictly; raise :class:`EnvelopeError` saying what is wrong."""
    try:
        strictjson.loads(data)
    except strictjson.StrictJsonError as e:
        raise EnvelopeError(str(e), json_error=e.syntax) from None
    try:
        env = _envelope_decoder.decode(data)
    except msgspec.ValidationError as e:
        raise EnvelopeError(f"not a DSSE envelope: {e}") from None
    except msgspec.DecodeError as e:
        raise EnvelopeError(f"not JSON: {e}", json_error=True) from None
    if env.payloadType != PAYLOAD_TYPE:
        raise EnvelopeError(f"payloadType must be {PAYLOAD_TYPE!r}, got {env.payloadType!r}")
    if len(env.signatures) != 1:
        raise EnvelopeError(f"expected exactly one signature, got {len(env.signatures)}")
    payload = _b64decode(env.payload, "payload")
    sig = _b64decode(env.signatures[0].sig, "signature")
    if len(sig) != 64:
        raise EnvelopeError(f"an Ed25519 signature is 64 bytes, got {len(sig)}")
    return ParsedEnvelope(data, env.payloadType, payload, env.signatures[0].keyid, sig)


def sign_envelope(payload: bytes, key: ActorKey, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Sign ``payload`` and return the compact JSON envelope bytes."""
    sig = key.sign(pae(payload_type, payload))
    env = Envelope(
        payloadType=payload_type,
        payload=base64.b64encode(payload).decode(),
        signatures=[EnvelopeSignature(keyid=key.keyid, sig=base64.b64encode(sig).decode())],
    )
    return msgspec.json.encode(env)
