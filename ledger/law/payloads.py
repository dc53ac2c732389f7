"""Typed views of the payloads the rule engine reads: the JSON shapes of the
catalogue's events (:mod:`ledger.law.events`), limited to the fields the rules use.

The rule engine runs inside the offline verifier, which must not need msgspec,
so it reads payloads as decoded JSON rather than as the catalogue's Structs.
These TypedDicts give that JSON its types. Times stay the RFC 3339 strings that
were signed (:data:`Time`), so findings quote them verbatim.
``tests/test_payloads.py`` checks every view against the Struct of the same
name (field names, JSON types, literals, which fields are required), so the two
cannot drift apart.

Standard library only.
"""

from __future__ import annotations

from typing import Literal, NewType, NotRequired, TypedDict

__all__ = [
    "AuditCompleted",
    "Autonomy",
    "HarmCategory",
    "HumanOversightAssigned",
    "HumanOversightWithdrawn",
    "IncidentClosed",
    "IncidentReported",
    "IncidentSeverity",
    "InsurancePolicyChanged",
    "LedgerGenesis",
    "OperationStatusChanged",
    "Policy",
    "PolicyAdopted",
    "PreventiveMeasureTaken",
    "ProhibitedCapabilityFound",
    "RiskClassified",
    "RiskLevel",
    "RuleId",
    "RulebookParameters",
    "SystemRegistered",
    "Time",
    "VersionDeployed",
]

#: An RFC 3339 UTC time as signed (``...Z``); :func:`ledger.formats.timeutil.parse_time` reads it.
Time = NewType("Time", str)

RiskLevel = Literal["minimal", "medium", "high"]
Autonomy = Literal["low", "medium", "high"]
RuleId = Literal["R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8"]
HarmCategory = Literal[
    "death",
    "health",
    "critical_infrastructure",
    "fundamental_rights",
    "property_environment",
    "other",
]
IncidentSeverity = Literal["minor", "serious", "critical"]


# --- the rulebook ----------------------------------------------------------


class RulebookParameters(TypedDict):
    insurance_required_levels: list[RiskLevel]
    audit_required_levels: list[RiskLevel]
    audit_validity_days: int
    oversight_required_levels: list[RiskLevel]
    oversight_required_autonomy: list[Autonomy]
    preventive_measure_hours: int
    preventive_measure_hours_serious: int
    report_hours: int
    report_hours_death: int
    legal_basis: dict[RuleId, str]


class Policy(TypedDict):
    policy_id: str
    effective_from: Time
    parameters: RulebookParameters


class LedgerGenesis(TypedDict):
    policy: Policy


class PolicyAdopted(TypedDict):
    effective_from: Time
    parameters: RulebookParameters


# --- the AI system's lifecycle ---------------------------------------------


class SystemRegistered(TypedDict):
    owner: str
    generates_synthetic_content: bool


class RiskClassified(TypedDict):
    risk_level: RiskLevel
    autonomy: Autonomy


class VersionDeployed(TypedDict):
    version: str
    artifact_sha256: str


class OperationStatusChanged(TypedDict):
    status: Literal["in_operation", "suspended", "retired"]


class HumanOversightAssigned(TypedDict):
    overseer: str
    can_override: bool
    can_stop: bool


class HumanOversightWithdrawn(TypedDict):
    overseer: str


# --- audits and insurance --------------------------------------------------


class AuditCompleted(TypedDict):
    audited_version_sha256: str
    result: Literal["pass", "conditional", "fail"]
    valid_until: Time


class ProhibitedCapabilityFound(TypedDict):
    category: str


class InsurancePolicyChanged(TypedDict):
    policy_number: str
    start: Time
    end: Time
    status: Literal["bound", "renewed", "lapsed", "cancelled"]


# --- incidents -------------------------------------------------------------


class IncidentReported(TypedDict):
    incident_id: str
    aware_at: Time
    harm_category: HarmCategory
    severity: IncidentSeverity


class PreventiveMeasureTaken(TypedDict):
    incident_id: NotRequired[str | None]  # or a risk_reference, which the rules do not read
    measure: Literal["suspend", "rollback", "restrict", "patch", "notify_users", "other"]
    effective_at: Time


class IncidentClosed(TypedDict):
    incident_id: str
