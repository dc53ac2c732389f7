"""JSON Schemas of the formats, generated from msgspec Structs.

Event payloads are the catalogue's own Structs. The envelope and the trust
policy are parsed by hand in :mod:`ledger.formats.dsse` and :mod:`ledger.formats.trust` (the
offline verifier needs them with ``cryptography`` only), so their shapes are
declared here for the schema; tests decode real documents with both.

``python -m ailedger.schemas`` writes them into ``schemas/``; a test fails when
the files there drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ledger.bus.streams import Verdict
from ledger.formats.dsse import MAX_SIGNATURES
from ledger.formats.keys import SLUG
from ledger.formats.timeutil import RFC3339_UTC
from ledger.law import events as ev

__all__ = ["SCHEMA_DIR", "generate", "write"]

#: ``schemas/`` of the source tree, when run from its top directory.
SCHEMA_DIR = Path("schemas")
DRAFT = "https://json-schema.org/draft/2020-12/schema"


class EnvelopeSignature(msgspec.Struct, forbid_unknown_fields=True):
    keyid: Annotated[str, msgspec.Meta(description="<actor>/<fingerprint>, a hint only")]
    sig: Annotated[str, msgspec.Meta(description="base64 Ed25519 signature over PAE")]


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """DSSE v1 envelope with one to 16 Ed25519 signatures over the same payload."""

    payloadType: Literal["application/vnd.ailedger.event+json; v=1"]
    payload: Annotated[str, msgspec.Meta(description="base64 of the event payload bytes")]
    signatures: Annotated[
        list[EnvelopeSignature], msgspec.Meta(min_length=1, max_length=MAX_SIGNATURES)
    ]


class TrustedKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    key: str
    valid_from: ev.Time | None = None
    valid_until: ev.Time | None = None


class TrustPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The regulator's published trust policy (ledger.formats.trust)."""

    format: Literal["ailedger/trust/v1"]
    origin: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    regulator: Annotated[str, msgspec.Meta(pattern=SLUG)]
    regulator_keys: list[TrustedKey]
    log_keys: list[TrustedKey]
    witness_keys: list[TrustedKey] = msgspec.field(default_factory=list)
    witness_quorum: Annotated[int, msgspec.Meta(ge=0)] = 0
    root_quorum: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="distinct valid regulator root keys that must sign the genesis, "
            "a PolicyAdopted and an enrolment giving the regulator role",
        ),
    ] = 1
    freshness_seconds: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=366 * 24 * 3600,
            description="a submission whose signed_at is older than this is refused (stale)",
        ),
    ] = 24 * 3600


Base64 = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]*={0,2}$")]
Hash = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{43}=$", description="base64 SHA-256")]


class BundleEntry(msgspec.Struct, forbid_unknown_fields=True):
    index: Annotated[int, msgspec.Meta(ge=0)]
    entry: Annotated[Base64, msgspec.Meta(description="the ledger entry bytes")]
    proof: Annotated[list[Hash], msgspec.Meta(description="RFC 9162 inclusion path, leaf to root")]


class BundleConsistency(msgspec.Struct, forbid_unknown_fields=True):
    old_size: Annotated[
        int, msgspec.Meta(ge=0, description="size of the reader's pinned checkpoint")
    ]
    proof: list[Hash]


class BundleHeads(msgspec.Struct, forbid_unknown_fields=True):
    tlog_proof: Annotated[
        str,
        msgspec.Meta(
            description="C2SP tlog-proof of leaf N-1 under the bundle's checkpoint, "
            "the ailedger/heads/v1 leaf as its extra data"
        ),
    ]
    subjects: Annotated[
        dict[str, str],
        msgspec.Meta(
            description="subject -> its ailedger/heads-proof/v1 under the heads leaf's root: "
            "every chain, and every subject relied on without one"
        ),
    ]


class Bundle(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An evidence bundle (ledger.verify.bundle): entries with proofs under a signed checkpoint."""

    format: Literal["ailedger/bundle/v1"]
    origin: str
    checkpoint: Annotated[str, msgspec.Meta(description="C2SP signed note of a tlog-checkpoint")]
    chains: Annotated[
        dict[str, Annotated[int, msgspec.Meta(ge=0)]],
        msgspec.Meta(description="subject -> index of its last entry at the checkpoint"),
    ]
    entries: list[BundleEntry]
    heads: BundleHeads
    consistency: BundleConsistency | None = None
    claim: dict[str, Any] | None = None


class LedgerEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A ledger entry's fields. Stored and hashed in the text form of ``ledger.formats.entry``:
    a header of lines ``ailedger/entry/v1``, ``index``, ``integrated``, ``subject``,
    ``prev``, an empty line, then the DSSE envelope bytes exactly as submitted.
    """

    index: int
    integrated: ev.Time
    subject: str
    prev: int | None
    envelope: Envelope


def _normalise(node: Any) -> None:
    """Make the schema independent of incidental generator output, keeping its meaning.

    Times in signed data are RFC 3339 UTC with Z: say so. Descriptions come from
    docstrings, whose indentation msgspec releases treat differently: each becomes
    one line with single spaces.
    """
    if isinstance(node, dict):
        if node.get("format") == "date-time":
            node["pattern"] = RFC3339_UTC
        if isinstance(node.get("description"), str):
            node["description"] = " ".join(node["description"].split())
        for v in node.values():
            _normalise(v)
    elif isinstance(node, list):
        for v in node:
            _normalise(v)


def _schema(tp: Any, name: str, title: str) -> bytes:
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": f"urn:ailedger:schema:{name}",
        "title": title,
    }
    schema.update(msgspec.json.schema(tp))
    _normalise(schema)
    return msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"


def generate() -> dict[str, bytes]:
    """File name (relative to ``schemas/``) -> schema bytes."""
    out = {
        "event.schema.json": _schema(ev.AnyEvent, "event", "ailedger event payload, catalogue v1"),
        "envelope.schema.json": _schema(Envelope, "envelope", "DSSE v1 envelope"),
        "entry.schema.json": _schema(LedgerEntry, "entry", "ailedger ledger entry (fields)"),
        "trust.schema.json": _schema(TrustPolicy, "trust", "ailedger trust policy"),
        "bundle.schema.json": _schema(Bundle, "bundle", "ailedger evidence bundle"),
        "verdict.schema.json": _schema(
            Verdict,
            "verdict",
            "the notary's answer to a submission or lookup (carries the receipt)",
        ),
    }
    for name, cls in ev.EVENT_TYPES.items():
        out[f"events/{name}.schema.json"] = _schema(cls, f"events/{name}", f"{name} payload")
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    written = []
    for name, data in generate().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR
    changed = write(target)
    print(f"{len(changed)} schema files written to {target}")
