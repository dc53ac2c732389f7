"""The event catalogue, version 1 (DOMAIN.md), declared once as msgspec Structs.

Every payload is a member of the tagged union :data:`AnyEvent` (tag field
``type``). Decoding is strict: unknown types or fields, wrong types, floats
anywhere, duplicate keys, naive or non-``Z`` times and ids that are not slugs
are all rejected with :class:`SchemaError`. JSON Schemas in ``schemas/`` are
generated from these classes (:mod:`ailedger.schemas`).

Which roles may sign each type is :data:`ledger.law.authority.SIGNERS`; the notary
enforces it together with the invariants in :mod:`ledger.state.domain`.
"""

from __future__ import annotations

import functools
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ledger.formats import strictjson
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.keys import SLUG
from ledger.formats.timeutil import RFC3339_UTC, ClockError, utc
from ledger.law.payloads import Autonomy, HarmCategory, IncidentSeverity, RiskLevel, RuleId

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "Event",
    "SchemaError",
    "decode_event",
    "encode_event",
    "new_event_id",
]

# --- field types -----------------------------------------------------------

Slug = Annotated[str, msgspec.Meta(pattern=SLUG, description="lower-case slug id")]
EventId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="UUID, lower-case hyphenated",
    ),
]
Time = Annotated[
    datetime,
    msgspec.Meta(tz=True, description="RFC 3339 UTC ending in Z, at most microseconds"),
]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
PublicKeyB64 = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$",
        description="raw 32-byte Ed25519 public key, standard base64",
    ),
]
VerifierKey = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$",
        description="C2SP signed-note verifier key <name>+<hex key id>+<base64>",
    ),
]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Bin = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{12}$", description="12-digit BIN")]
Count = Annotated[int, msgspec.Meta(ge=0)]
Hours = Annotated[int, msgspec.Meta(ge=0, le=100_000)]

Role = Literal["regulator", "owner", "holder", "auditor", "insurer", "sectoral_body"]

SYSTEM_SUBJECT = r"^system/[a-z0-9][a-z0-9_-]{0,62}$"
ACTOR_SUBJECT = r"^actor/[a-z0-9][a-z0-9_-]{0,62}$"
POLICY_SUBJECT = r"^policy/[a-z0-9][a-z0-9_-]{0,62}$"
LEDGER_SUBJECT = r"^ledger/genesis$"


class SchemaError(LedgerError, ValueError):
    """A payload that does not fit the event catalogue. ``syntax``: not even JSON."""

    code = "event_invalid"
    exit_status = USAGE

    def __init__(self, message: str, *, syntax: bool = False) -> None:
        super().__init__(message)
        self.syntax = syntax


def _unwrap(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    while isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    return t


def _pattern_of(t: msgspec.inspect.Type) -> str | None:
    t = _unwrap(t)
    if isinstance(t, msgspec.inspect.UnionType):
        for option in t.types:
            found = _pattern_of(option)
            if found:
                return found
        return None
    return t.pattern if isinstance(t, msgspec.inspect.StrType) else None


@functools.cache
def _pattern_fields(cls: type[msgspec.Struct]) -> tuple[tuple[str, re.Pattern[str], bool], ...]:
    """(field, pattern, is a list) of every pattern-constrained string field of ``cls``."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    out = []
    for f in info.fields:
        t = _unwrap(f.type)
        is_list = isinstance(t, msgspec.inspect.ListType)
        pattern = _pattern_of(t.item_type if isinstance(t, msgspec.inspect.ListType) else t)
        if pattern:
            out.append((f.name, re.compile(pattern), is_list))
    return tuple(out)


def check_patterns(obj: msgspec.Struct) -> None:
    """Whole-string pattern checks. msgspec (like ``re.search``) lets ``$`` match
    before a final newline, so ``"bank\\n"`` would pass as a slug otherwise."""
    for name, rx, is_list in _pattern_fields(type(obj)):
        value = getattr(obj, name)
        for v in value if is_list else (value,):
            if isinstance(v, str) and not rx.fullmatch(v):
                raise ValueError(f"{name}: {v!r} does not match {rx.pattern}")


# --- base classes ----------------------------------------------------------


class Event(msgspec.Struct, tag_field="type", tag=True, forbid_unknown_fields=True, kw_only=True):
    """Fields common to every event. Subclasses narrow ``subject`` to their kind."""

    v: Literal[1]
    event_id: EventId
    actor: Slug
    subject: str
    signed_at: Time

    def __post_init__(self) -> None:
        check_patterns(self)
        for name in _time_fields(type(self)):
            value = getattr(self, name)
            if value is not None:
                try:
                    utc(value)
                except ClockError as e:
                    raise ValueError(str(e)) from None
                if value.utcoffset().total_seconds() != 0:
                    raise ValueError(f"{name} must be UTC")

    @property
    def subject_id(self) -> str:
        """The id part of ``<kind>/<id>``."""
        return self.subject.partition("/")[2]

    @property
    def type_name(self) -> str:
        return type(self).__name__


class SystemEvent(Event, kw_only=True):
    subject: Annotated[str, msgspec.Meta(pattern=SYSTEM_SUBJECT)]


class ActorEvent(Event, kw_only=True):
    subject: Annotated[str, msgspec.Meta(pattern=ACTOR_SUBJECT)]


# --- trust and identity ----------------------------------------------------


class RulebookParameters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every parameter of the compliance rules R1-R8 (DOMAIN.md): data, never code."""

    insurance_required_levels: list[RiskLevel]
    audit_required_levels: list[RiskLevel]
    audit_validity_days: Annotated[int, msgspec.Meta(ge=1, le=3650)]
    oversight_required_levels: list[RiskLevel]
    oversight_required_autonomy: list[Autonomy]
    preventive_measure_hours: Hours
    preventive_measure_hours_serious: Hours
    report_hours: Hours
    report_hours_death: Hours
    legal_basis: dict[RuleId, Text]

    def __post_init__(self) -> None:
        check_patterns(self)


class Policy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    policy_id: Slug
    title: ShortText
    effective_from: Time
    parameters: RulebookParameters
    legal_references: list[Text]

    def __post_init__(self) -> None:
        check_patterns(self)


class LedgerGenesis(Event, kw_only=True):
    """Index 0: the ledger's origin, infrastructure keys and initial rulebook."""

    subject: Annotated[str, msgspec.Meta(pattern=LEDGER_SUBJECT)]
    origin: ShortText
    regulator_name: ShortText
    regulator_bin: Bin
    regulator_keys: Annotated[list[PublicKeyB64], msgspec.Meta(min_length=1, max_length=8)]
    notary_keys: Annotated[list[VerifierKey], msgspec.Meta(min_length=1)]
    witness_keys: list[VerifierKey]
    witness_quorum: Count
    policy: Policy


class ActorEnrolled(ActorEvent, kw_only=True):
    legal_name: ShortText
    bin: Bin
    roles: Annotated[list[Role], msgspec.Meta(min_length=1)]
    public_keys: Annotated[list[PublicKeyB64], msgspec.Meta(min_length=1, max_length=8)]

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("roles must be unique")
        if len(set(self.public_keys)) != len(self.public_keys):
            raise ValueError("public_keys must be unique")


class KeyRotated(ActorEvent, kw_only=True):
    new_key: PublicKeyB64
    old_key: PublicKeyB64
    old_key_valid_until: Time


class KeyRevoked(ActorEvent, kw_only=True):
    key: PublicKeyB64
    compromised_at: Time
    reason: Text


class ActorSuspended(ActorEvent, kw_only=True):
    reason: Text


class ActorReinstated(ActorEvent, kw_only=True):
    reason: Text


class PolicyAdopted(Event, kw_only=True):
    subject: Annotated[str, msgspec.Meta(pattern=POLICY_SUBJECT)]
    title: ShortText
    effective_from: Time
    parameters: RulebookParameters
    legal_references: list[Text]


# --- AI-system lifecycle ---------------------------------------------------


class SystemRegistered(SystemEvent, kw_only=True):
    name: ShortText
    purpose: Text
    sector: ShortText
    owner: Slug
    holder: Slug
    generates_synthetic_content: bool


class RiskClassified(SystemEvent, kw_only=True):
    risk_level: RiskLevel
    autonomy: Autonomy
    critical_ict: bool
    rationale: Text


class VersionDeployed(SystemEvent, kw_only=True):
    version: ShortText
    artifact_sha256: Sha256Hex


class OperationStatusChanged(SystemEvent, kw_only=True):
    status: Literal["in_operation", "suspended", "retired"]
    reason: Text


class HumanOversightAssigned(SystemEvent, kw_only=True):
    overseer: ShortText
    can_override: bool
    can_stop: bool


class HumanOversightWithdrawn(SystemEvent, kw_only=True):
    overseer: ShortText
    reason: Text


class LabelingAttested(SystemEvent, kw_only=True):
    content_types: Annotated[
        list[Literal["text", "image", "audio", "video"]], msgspec.Meta(min_length=1)
    ]
    marking_method: ShortText
    visible_warning: bool


# --- audits and insurance --------------------------------------------------


class AuditFinding(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    severity: Literal["info", "low", "medium", "high", "critical"]
    text: Text

    def __post_init__(self) -> None:
        check_patterns(self)


class AuditCompleted(SystemEvent, kw_only=True):
    scope: Text
    audited_version_sha256: Sha256Hex
    result: Literal["pass", "conditional", "fail"]
    findings: list[AuditFinding]
    report_sha256: Sha256Hex
    valid_until: Time


class ProhibitedCapabilityFound(SystemEvent, kw_only=True):
    category: Slug
    evidence_sha256: Sha256Hex
    description: Text


class InsurancePolicyChanged(SystemEvent, kw_only=True):
    policy_number: ShortText
    coverage_tenge: Count
    start: Time
    end: Time
    status: Literal["bound", "renewed", "lapsed", "cancelled"]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.end <= self.start:
            raise ValueError("end must be after start")


# --- incidents -------------------------------------------------------------


class IncidentReported(SystemEvent, kw_only=True):
    incident_id: Slug
    occurred_at: Time
    aware_at: Time
    harm_category: HarmCategory
    severity: IncidentSeverity
    affected_count: Count
    description: Text

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aware_at < self.occurred_at:
            raise ValueError("aware_at is before occurred_at")


class PreventiveMeasureTaken(SystemEvent, kw_only=True):
    incident_id: Slug | None = None
    risk_reference: ShortText | None = None
    measure: Literal["suspend", "rollback", "restrict", "patch", "notify_users", "other"]
    effective_at: Time
    description: Text

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.incident_id is None) == (self.risk_reference is None):
            raise ValueError("name exactly one of incident_id or risk_reference")


class IncidentClosed(SystemEvent, kw_only=True):
    incident_id: Slug
    resolution: Text


AnyEvent = (
    LedgerGenesis
    | ActorEnrolled
    | KeyRotated
    | KeyRevoked
    | ActorSuspended
    | ActorReinstated
    | PolicyAdopted
    | SystemRegistered
    | RiskClassified
    | VersionDeployed
    | OperationStatusChanged
    | HumanOversightAssigned
    | HumanOversightWithdrawn
    | LabelingAttested
    | AuditCompleted
    | ProhibitedCapabilityFound
    | InsurancePolicyChanged
    | IncidentReported
    | PreventiveMeasureTaken
    | IncidentClosed
)

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in AnyEvent.__args__}


# --- strict decoding -------------------------------------------------------


def _is_time(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.Metadata):
        return _is_time(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_is_time(x) for x in t.types)
    return isinstance(t, msgspec.inspect.DateTimeType)


@functools.cache
def _time_fields(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """Names of the datetime fields of ``cls`` itself."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(f.name for f in info.fields if _is_time(f.type))


def _all_time_field_names() -> frozenset[str]:
    """Wire names of every time field in the catalogue, nested structs included."""
    names: set[str] = set()
    stack = list(msgspec.inspect.multi_type_info(list(EVENT_TYPES.values())))
    while stack:
        t = stack.pop()
        if isinstance(t, msgspec.inspect.StructType):
            names.update(f.encode_name for f in t.fields if _is_time(f.type))
            stack.extend(f.type for f in t.fields)
        elif isinstance(t, msgspec.inspect.UnionType):
            stack.extend(t.types)
        elif isinstance(t, msgspec.inspect.Metadata):
            stack.append(t.type)
        elif isinstance(t, msgspec.inspect.ListType):
            stack.append(t.item_type)
        elif isinstance(t, msgspec.inspect.DictType):
            stack.append(t.value_type)
    return frozenset(names)


TIME_FIELDS = _all_time_field_names()
_UTC_Z = re.compile(RFC3339_UTC)


def _check_time_fields(key: str, value: Any) -> None:
    if key in TIME_FIELDS and isinstance(value, str) and not _UTC_Z.fullmatch(value):
        raise SchemaError(f"{key}: {value!r} is not RFC 3339 UTC ending in Z")


_decoder = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


def decode_event(payload: bytes) -> AnyEvent:
    """Decode a payload strictly, or raise :class:`SchemaError` naming the problem.

    A first pass (:mod:`ledger.formats.strictjson`) rejects what msgspec would let
    through (duplicate keys, floats, non-``Z`` times); msgspec then checks
    types, patterns and the tagged union.
    """
    try:
        tree = strictjson.loads(payload, _check_time_fields)
    except strictjson.StrictJsonError as e:
        raise SchemaError(f"payload {e}" if e.syntax else str(e), syntax=e.syntax) from None
    if not isinstance(tree, dict):
        raise SchemaError("payload must be a JSON object")
    kind = tree.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise SchemaError(f"unknown event type {kind!r}")
    try:
        event: AnyEvent = _decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise SchemaError(str(e)) from None
    return event


def encode_event(event: Event) -> bytes:
    """Compact JSON, times as ``...Z``: the bytes a signer signs."""
    return _encoder.encode(event)


def new_event_id() -> str:
    return str(uuid.uuid4())
