"""Rejections: every rule the notary enforces is a named exception with a stable code.

The code travels back to the submitter and is kept with the original bytes in
the REJECTED stream. Codes are part of the contract: add new ones, never
rename or reuse them.
"""

from __future__ import annotations

from ledger.formats.errors import CHECK_FAILED, LedgerError

__all__ = ["REASON_CODES", "Rejection"]


class Rejection(LedgerError):
    """A submission the notary refuses. ``code`` is stable, ``detail`` is for people."""

    code = "rejected"
    exit_status = CHECK_FAILED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


# --- the bytes -------------------------------------------------------------


class Oversize(Rejection):
    """The envelope is larger than 64 KiB."""

    code = "oversize"


class MalformedJson(Rejection):
    """The envelope, or the payload inside it, is not JSON."""

    code = "malformed_json"


class MalformedEnvelope(Rejection):
    """JSON, but not a DSSE envelope with the ailedger payload type and one to 16 signatures."""

    code = "malformed_envelope"


class SchemaViolation(Rejection):
    """The payload does not fit the event catalogue (type, fields, types, patterns)."""

    code = "schema"


class IntakeSubjectMismatch(Rejection):
    """Published on ``intake.<actor>.<type>`` that does not match the payload."""

    code = "intake_subject"


class ClockSkew(Rejection):
    """``signed_at`` is more than 5 minutes ahead of the notary's clock."""

    code = "clock_skew"


class Stale(Rejection):
    """``signed_at`` is older than the trust policy's freshness window (24 hours by
    default): an old envelope cannot be replayed or resubmitted much later."""

    code = "stale"


class DuplicateEventId(Rejection):
    """Another envelope with this event id is already in the ledger."""

    code = "duplicate_event_id"


# --- who signed ------------------------------------------------------------


class UnknownActor(Rejection):
    """``payload.actor`` is not an enrolled actor."""

    code = "unknown_actor"


class UnknownKey(Rejection):
    """The signing key is not enrolled for anyone."""

    code = "unknown_key"


class BadSignature(Rejection):
    """The signature does not verify over the exact payload bytes."""

    code = "bad_signature"


class SignerNotActor(Rejection):
    """The envelope was signed with another actor's key than ``payload.actor``."""

    code = "signer_not_actor"


class KeyNotValid(Rejection):
    """The key was rotated out before the integration time."""

    code = "key_not_valid"


class KeyRevokedError(Rejection):
    """The key was revoked; signatures integrated after its compromise time are invalid."""

    code = "key_revoked"


class KeyInUse(Rejection):
    """A key can belong to one actor only, once."""

    code = "key_in_use"


class NotPolicyInsurer(Rejection):
    """Only the insurer that issued a policy may report changes to it."""

    code = "not_policy_insurer"


class ActorSuspendedError(Rejection):
    """The signer is suspended (e.g. an auditor whose accreditation was withdrawn)."""

    code = "actor_suspended"


class RoleNotAllowed(Rejection):
    """The signer holds no role that may sign this event type."""

    code = "role_not_allowed"


class NotSystemParty(Rejection):
    """An owner or holder signing about a system that is not theirs."""

    code = "not_system_party"


# --- invariants ------------------------------------------------------------


class GenesisViolation(Rejection):
    """The genesis entry must be index 0, signed by a regulator root key, and only once."""

    code = "genesis"


class ActorAlreadyEnrolled(Rejection):
    """An actor id is enrolled once; later changes are rotations, suspensions."""

    code = "actor_already_enrolled"


class PartyNotEnrolled(Rejection):
    """A system names an owner or holder that is not enrolled in that role."""

    code = "party_not_enrolled"


class SystemNotRegistered(Rejection):
    """Any event about a system must follow its registration."""

    code = "system_not_registered"


class SystemAlreadyRegistered(Rejection):
    """A system is registered once."""

    code = "system_already_registered"


class SystemRetired(Rejection):
    """Only regulator decisions may follow a system's retirement."""

    code = "system_retired"


class UnknownIncident(Rejection):
    """A measure or closure must name an incident of the same system."""

    code = "unknown_incident"


class DuplicateIncident(Rejection):
    """An incident id is reported once per system."""

    code = "duplicate_incident"


class IncidentAlreadyClosed(Rejection):
    """A closed incident cannot be closed again."""

    code = "incident_closed"


class PolicyRetroactive(Rejection):
    """A rulebook change takes effect from its date on; it cannot rewrite the past."""

    code = "policy_retroactive"


class PolicyNotRead(Rejection):
    """A ``PolicyAdopted`` for a policy id the rules do not read (only the genesis
    rulebook's subject is read): it would be integrated and silently ignored."""

    code = "policy_not_read"


class RootQuorum(Rejection):
    """The genesis, a ``PolicyAdopted`` or an enrolment giving the regulator role
    lacks the regulator root signatures the trust policy's ``root_quorum`` requires."""

    code = "root_quorum"


class InternalError(Rejection):
    """The notary failed on this submission (a bug): its bytes are kept in REJECTED,
    nothing of it reached the state; resubmit it once the notary is fixed."""

    code = "internal_error"


def _codes() -> dict[str, str]:
    out: dict[str, str] = {}
    stack: list[type[Rejection]] = list(Rejection.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        doc = (cls.__doc__ or cls.__name__).strip().split("\n\n")[0]
        out[cls.code] = " ".join(doc.split())
    return dict(sorted(out.items()))


#: Every reason code and its one-line meaning.
REASON_CODES = _codes()
