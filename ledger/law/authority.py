"""Who may sign what: one table and one decision, for the notary and the offline verifier.

DOMAIN.md gives the roles allowed to sign each event type; an owner or holder
may sign only about its own systems; "self" lets an actor sign key events
about itself. The notary refuses a submission that fails this check; the
offline verifier refuses a bundle holding an entry that fails it (which only
a log operator forging entries could produce). Standard library only.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["SIGNERS", "Decision", "authorize"]

#: Event type -> who may sign it: roles, or "self" for the actor itself.
SIGNERS: dict[str, frozenset[str]] = {
    "LedgerGenesis": frozenset({"regulator"}),
    "ActorEnrolled": frozenset({"regulator"}),
    "KeyRotated": frozenset({"self", "regulator"}),
    "KeyRevoked": frozenset({"self", "regulator"}),
    "ActorSuspended": frozenset({"regulator"}),
    "ActorReinstated": frozenset({"regulator"}),
    "PolicyAdopted": frozenset({"regulator"}),
    "SystemRegistered": frozenset({"owner"}),
    "RiskClassified": frozenset({"owner", "regulator"}),
    "VersionDeployed": frozenset({"owner", "holder"}),
    "OperationStatusChanged": frozenset({"owner", "holder"}),
    "HumanOversightAssigned": frozenset({"holder", "owner"}),
    "HumanOversightWithdrawn": frozenset({"holder", "owner"}),
    "LabelingAttested": frozenset({"owner"}),
    "AuditCompleted": frozenset({"auditor"}),
    "ProhibitedCapabilityFound": frozenset({"auditor", "regulator"}),
    "InsurancePolicyChanged": frozenset({"insurer"}),
    "IncidentReported": frozenset({"owner", "holder", "regulator"}),
    "PreventiveMeasureTaken": frozenset({"owner", "holder"}),
    "IncidentClosed": frozenset({"owner", "regulator"}),
}


@dataclass(frozen=True)
class Decision:
    """The role the signer acts in, or why it may not sign (``role`` is None)."""

    role: str | None
    reason: str = ""
    #: "role" (no role may sign this type) or "party" (not this system's owner/holder)
    kind: str = ""


def authorize(
    event_type: str,
    signer: str,
    roles: Collection[str],
    subject: str,
    *,
    owner: str | None = None,
    holder: str | None = None,
) -> Decision:
    """May ``signer`` (holding ``roles``) sign ``event_type`` about ``subject``?

    ``owner`` and ``holder`` are the system's, for system subjects (for a
    registration: the owner it names).
    """
    allowed = SIGNERS.get(event_type, frozenset())
    if "self" in allowed and subject == f"actor/{signer}":
        return Decision("self")
    held = set(roles) & allowed
    if not held:
        return Decision(
            None,
            f"{signer} (roles: {', '.join(sorted(roles)) or 'none'}) may not sign {event_type}; "
            f"allowed: {', '.join(sorted(allowed))}",
            "role",
        )
    if "regulator" in held:
        return Decision("regulator")
    parties = held & {"owner", "holder"}
    if parties and subject.startswith("system/"):
        if "owner" in parties and signer == owner:
            return Decision("owner")
        if "holder" in parties and signer == holder:
            return Decision("holder")
        if held - parties:
            return Decision(sorted(held - parties)[0])
        return Decision(
            None,
            f"{signer} is neither owner ({owner}) nor holder ({holder}) of "
            f"{subject.partition('/')[2]}",
            "party",
        )
    return Decision(sorted(held)[0])
