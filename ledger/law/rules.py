"""The compliance rules R1-R8 (DOMAIN.md): a pure function of ledger entries.

``evaluate(facts, at)`` takes the ledger entries about one system (its whole
``system/<id>`` chain), the rulebook's entries (the genesis and the
``policy/<id>`` chain) and a time T, and returns the system's verdict at T:
``compliant``, ``at_risk`` (obligations open, not yet due), ``non_compliant``
or ``critical``, with findings that each carry the rule, severity, since when,
the deadline, the legal basis (from the rulebook in force) and the ledger
indices of the entries that prove it.

"As of T" means: only entries integrated at or before T count, and the rules
are judged at clock T under the rulebook in force at T. Deadlines are judged by
what the ledger can prove: an obligation is met when the entry that meets it is
integrated by the deadline; the times a signer claims (``effective_at``,
``aware_at``) are shown, and ``aware_at`` starts the clock, but a claim cannot
meet a deadline by itself. Obligations that arise from an event (R5, R6) use
the rulebook in force when the event happened; standing obligations use the
one in force at T.

Standard library only: the offline verifier recomputes verdicts with this very
code (``ailedger verify --recompute``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ledger.formats import strictjson
from ledger.formats.dsse import ParsedEnvelope, parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.timeutil import format_time, parse_time
from ledger.law.rulebook import PolicyVersion, Rulebook

__all__ = [
    "Fact",
    "Finding",
    "SystemVerdict",
    "evaluate",
    "fact_from_entry",
    "summarize",
]

VERDICTS = ("compliant", "at_risk", "non_compliant", "critical")
PASSING_AUDIT = ("pass", "conditional")
ACTIVE_INSURANCE = ("bound", "renewed")


@dataclass(frozen=True)
class Fact:
    """One ledger entry, as the rules read it."""

    index: int
    integrated: datetime
    subject: str
    type: str
    actor: str
    key_fingerprint: str
    payload: Mapping[str, Any]

    def time(self, name: str) -> datetime:
        return parse_time(str(self.payload[name]))


def fact_from_entry(entry: Entry, envelope: ParsedEnvelope | None = None) -> Fact:
    """The fact an entry records; pass its ``envelope`` if it is already parsed."""
    if envelope is None:
        envelope = parse_envelope(entry.envelope)
    payload = strictjson.loads(envelope.payload)
    return Fact(
        entry.index,
        entry.integrated,
        entry.subject,
        str(payload["type"]),
        str(payload["actor"]),
        envelope.keyid_fingerprint,
        payload,
    )


@dataclass(frozen=True)
class Finding:
    rule: str
    status: str  # "violation": due and unmet; "open": not yet due; "late": met late, matter closed
    severity: str  # "critical", "high", "medium"
    since: datetime
    deadline: datetime | None
    legal_basis: str
    evidence: tuple[int, ...]
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "status": self.status,
            "severity": self.severity,
            "since": format_time(self.since),
            "deadline": None if self.deadline is None else format_time(self.deadline),
            "legal_basis": self.legal_basis,
            "evidence": list(self.evidence),
            "summary": self.summary,
        }


@dataclass(frozen=True)
class SystemVerdict:
    system: str
    at: datetime
    as_of_index: int  # the last entry taken into account
    verdict: str
    findings: tuple[Finding, ...]
    policy_index: int  # the entry that adopted the rulebook version in force

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "at": format_time(self.at),
            "as_of_index": self.as_of_index,
            "verdict": self.verdict,
            "policy_index": self.policy_index,
            "findings": [f.to_json() for f in self.findings],
        }


# --- the system's state at T, folded from its chain -----------------------------------


@dataclass
class _Incident:
    report: Fact
    measures: list[Fact] = field(default_factory=list)
    closed: Fact | None = None


@dataclass
class _System:
    registration: Fact | None = None
    status: str = "registered"
    status_fact: Fact | None = None
    classification: Fact | None = None
    regulator_classified: bool = False
    deployment: Fact | None = None
    oversight: dict[str, Fact] = field(default_factory=dict)
    oversight_withdrawn: Fact | None = None
    labeling: Fact | None = None
    audits: list[Fact] = field(default_factory=list)
    insurance: dict[str, Fact] = field(default_factory=dict)
    insurance_history: list[Fact] = field(default_factory=list)
    prohibited: list[Fact] = field(default_factory=list)
    incidents: dict[str, _Incident] = field(default_factory=dict)


def _fold(facts: Sequence[Fact]) -> _System:
    s = _System()
    for f in facts:
        p = f.payload
        if f.type == "SystemRegistered":
            s.registration = f
        elif f.type == "OperationStatusChanged":
            s.status, s.status_fact = str(p["status"]), f
        elif f.type == "RiskClassified":
            # Only the owner or the regulator may classify; the regulator's
            # override stands against later classifications by the owner.
            by_regulator = f.actor != _owner(s)
            if by_regulator or not s.regulator_classified:
                s.classification = f
                s.regulator_classified = s.regulator_classified or by_regulator
        elif f.type == "VersionDeployed":
            s.deployment = f
        elif f.type == "HumanOversightAssigned":
            s.oversight[str(p["overseer"])] = f
        elif f.type == "HumanOversightWithdrawn":
            s.oversight.pop(str(p["overseer"]), None)
            s.oversight_withdrawn = f
        elif f.type == "LabelingAttested":
            s.labeling = f
        elif f.type == "AuditCompleted":
            s.audits.append(f)
        elif f.type == "InsurancePolicyChanged":
            s.insurance[str(p["policy_number"])] = f
            s.insurance_history.append(f)
        elif f.type == "ProhibitedCapabilityFound":
            s.prohibited.append(f)
        elif f.type == "IncidentReported":
            s.incidents[str(p["incident_id"])] = _Incident(f)
        elif f.type == "PreventiveMeasureTaken" and p.get("incident_id") in s.incidents:
            s.incidents[str(p["incident_id"])].measures.append(f)
        elif f.type == "IncidentClosed" and p.get("incident_id") in s.incidents:
            s.incidents[str(p["incident_id"])].closed = f
    return s


def _owner(s: _System) -> str:
    if s.registration is None:
        return ""
    return str(s.registration.payload["owner"])


# --- the rules -------------------------------------------------------------------------


def evaluate(
    system: str, facts: Iterable[Fact], at: datetime, *, as_of_index: int | None = None
) -> SystemVerdict:
    """The verdict on ``system`` at ``at`` from the given ledger facts.

    ``facts`` must hold the genesis, the rulebook's chain and the system's
    chain; others are ignored. Only facts integrated by ``at`` (and with index
    <= ``as_of_index`` when given) count.
    """
    known = sorted(
        (
            f
            for f in facts
            if f.integrated <= at and (as_of_index is None or f.index <= as_of_index)
        ),
        key=lambda f: f.index,
    )
    rulebook = Rulebook.from_facts(known)
    chain = [f for f in known if f.subject == f"system/{system}"]
    if not chain or chain[0].type != "SystemRegistered":
        raise ValueError(f"system {system} is not registered as of {format_time(at)}")
    s = _fold(chain)
    policy = rulebook.in_force(at)
    findings: list[Finding] = []
    if s.status == "in_operation":
        findings += _standing_obligations(system, s, rulebook, policy, at)
    findings += _incident_obligations(s, rulebook, at)
    findings.sort(key=lambda f: (f.rule, f.since, f.evidence))
    return SystemVerdict(
        system,
        at,
        as_of_index if as_of_index is not None else (known[-1].index if known else -1),
        _verdict(findings),
        tuple(findings),
        policy.index,
    )


def _verdict(findings: Sequence[Finding]) -> str:
    due = [f for f in findings if f.status == "violation"]
    if any(f.severity == "critical" for f in due):
        return "critical"
    if due:
        return "non_compliant"
    if any(f.status == "open" for f in findings):
        return "at_risk"
    return "compliant"


def _latest(*times: datetime | None) -> datetime:
    return max(t for t in times if t is not None)


def _idx(*evidence: Fact | int | None) -> tuple[int, ...]:
    return tuple(sorted({e if isinstance(e, int) else e.index for e in evidence if e is not None}))


def _standing_obligations(
    system: str, s: _System, rulebook: Rulebook, policy: PolicyVersion, at: datetime
) -> list[Finding]:
    out: list[Finding] = []
    params = policy.parameters
    op = s.status_fact
    assert op is not None
    op_since = op.integrated
    risk = str(s.classification.payload["risk_level"]) if s.classification else None
    autonomy = str(s.classification.payload["autonomy"]) if s.classification else None
    cls_since = s.classification.integrated if s.classification else None

    # R1: in operation without a risk classification
    if s.classification is None:
        out.append(
            Finding(
                "R1",
                "violation",
                "high",
                op_since,
                op_since,
                policy.basis("R1"),
                _idx(s.registration, op),
                "in operation without a risk classification",
            )
        )

    # R2: mandatory liability insurance for the levels the rulebook names
    if risk in params["insurance_required_levels"]:
        active = [
            f
            for f in s.insurance.values()
            if f.payload["status"] in ACTIVE_INSURANCE and f.time("start") <= at < f.time("end")
        ]
        if not active:
            required = rulebook.required_since(
                at, lambda v: risk in v.parameters["insurance_required_levels"]
            )
            ended = [
                min(f.time("end"), f.integrated)
                if f.payload["status"] not in ACTIVE_INSURANCE
                else f.time("end")
                for f in s.insurance.values()
            ]
            ended = [t for t in ended if t <= at]
            since = _latest(op_since, cls_since, required, max(ended) if ended else None)
            last = s.insurance_history[-1] if s.insurance_history else None
            why = (
                f"no insurance policy active (last: {last.payload['policy_number']} "
                f"{last.payload['status']}, ends {last.payload['end']})"
                if last
                else "no insurance policy ever reported"
            )
            out.append(
                Finding(
                    "R2",
                    "violation",
                    "high",
                    since,
                    since,
                    policy.basis("R2"),
                    _idx(s.classification, op, last, rulebook.adoption_starting(required)),
                    f"risk level {risk} in operation, {why}",
                )
            )

    # R3: a passing audit, valid at T, of the version deployed
    if risk in params["audit_required_levels"]:
        version = str(s.deployment.payload["artifact_sha256"]) if s.deployment else None
        validity = timedelta(days=int(params["audit_validity_days"]))

        def expiry(a: Fact) -> datetime:
            return min(a.time("valid_until"), a.integrated + validity)

        matching = [
            a
            for a in s.audits
            if a.payload["result"] in PASSING_AUDIT
            and (version is None or a.payload["audited_version_sha256"] == version)
        ]
        valid = [a for a in matching if expiry(a) > at]
        if not valid:
            required = rulebook.required_since(
                at, lambda v: risk in v.parameters["audit_required_levels"]
            )
            expired = [expiry(a) for a in matching if expiry(a) <= at]
            deployed = s.deployment.integrated if s.deployment else None
            since = _latest(
                op_since, cls_since, required, deployed, max(expired) if expired else None
            )
            last_audit = s.audits[-1] if s.audits else None
            if matching:
                why = f"the last passing audit expired {format_time(max(expired))}"
            elif last_audit is not None and version is not None:
                why = "no passing audit of the deployed version " + (
                    f"{s.deployment.payload['version']}" if s.deployment else ""
                )
            else:
                why = "no passing audit"
            out.append(
                Finding(
                    "R3",
                    "violation",
                    "high",
                    since,
                    since,
                    policy.basis("R3"),
                    _idx(
                        s.classification,
                        op,
                        s.deployment,
                        last_audit,
                        rulebook.adoption_starting(required),
                    ),
                    f"risk level {risk} in operation: {why}",
                )
            )

    # R4: human oversight that can override and stop
    needs_oversight = (
        autonomy in params["oversight_required_autonomy"]
        or risk in params["oversight_required_levels"]
    )
    if s.classification is not None and needs_oversight:
        capable = [
            f
            for f in s.oversight.values()
            if f.payload["can_override"] is True and f.payload["can_stop"] is True
        ]
        if not capable:
            since = _latest(
                op_since,
                cls_since,
                s.oversight_withdrawn.integrated if s.oversight_withdrawn else None,
            )
            out.append(
                Finding(
                    "R4",
                    "violation",
                    "high",
                    since,
                    since,
                    policy.basis("R4"),
                    _idx(s.classification, op, s.oversight_withdrawn),
                    f"autonomy {autonomy}, risk {risk}: no human oversight able to "
                    "override and stop",
                )
            )

    # R7: a prohibited capability found while in operation: critical until suspended
    for finding in s.prohibited:
        since = _latest(op_since, finding.integrated)
        out.append(
            Finding(
                "R7",
                "violation",
                "critical",
                since,
                since,
                policy.basis("R7"),
                _idx(finding, op),
                f"prohibited capability {finding.payload['category']} found "
                f"by {finding.actor}, system still in operation",
            )
        )

    # R8: synthetic content needs a current labelling attestation
    synthetic = s.registration is not None and s.registration.payload["generates_synthetic_content"]
    if synthetic and s.labeling is None:
        out.append(
            Finding(
                "R8",
                "violation",
                "high",
                op_since,
                op_since,
                policy.basis("R8"),
                _idx(s.registration, op),
                "generates synthetic content without a labelling attestation",
            )
        )
    return out


def _incident_obligations(s: _System, rulebook: Rulebook, at: datetime) -> list[Finding]:
    out: list[Finding] = []
    for incident_id, inc in s.incidents.items():
        report = inc.report
        # A claimed awareness later than the report itself cannot postpone the
        # clock: the reporter was aware when it reported at the latest.
        aware = min(report.time("aware_at"), report.integrated)
        policy = rulebook.in_force(aware)  # the rules in force when the clock started
        params = policy.parameters
        closed = inc.closed is not None
        serious = report.payload["severity"] in ("serious", "critical")

        # R5: a preventive measure integrated within the allowed hours of aware_at
        hours = int(
            params["preventive_measure_hours_serious" if serious else "preventive_measure_hours"]
        )
        deadline = aware + timedelta(hours=hours)
        first = inc.measures[0] if inc.measures else None
        closed_in_time = inc.closed is not None and inc.closed.integrated <= deadline
        if (first is None and not closed_in_time) or (
            first is not None and first.integrated > deadline
        ):
            if first is None and at < deadline:
                status = "open"
            elif first is not None and closed:
                status = "late"  # measured after the deadline; the matter is closed
            else:
                status = "violation"
            measure = (
                f"measure {first.payload['measure']} integrated {format_time(first.integrated)}"
                f" (claimed effective {first.payload['effective_at']})"
                if first
                else "no preventive measure"
            )
            out.append(
                Finding(
                    "R5",
                    status,
                    "high" if serious else "medium",
                    deadline if status != "open" else report.integrated,
                    deadline,
                    policy.basis("R5"),
                    _idx(report, first, inc.closed),
                    f"incident {incident_id} ({report.payload['severity']}), aware "
                    f"{format_time(aware)}: {measure}; due within {hours} h",
                )
            )

        # R6: reported within the allowed hours of aware_at
        death = report.payload["harm_category"] == "death"
        report_hours = int(params["report_hours_death" if death else "report_hours"])
        report_deadline = aware + timedelta(hours=report_hours)
        if report.integrated > report_deadline:
            out.append(
                Finding(
                    "R6",
                    "late" if closed else "violation",
                    "medium",
                    report_deadline,
                    report_deadline,
                    policy.basis("R6"),
                    _idx(report, inc.closed),
                    f"incident {incident_id} reported {format_time(report.integrated)}, "
                    f"{report_hours} h after awareness were allowed",
                )
            )
    return out


# --- one line per event, for timelines ---------------------------------------------------


def summarize(f: Fact) -> str:
    """The event in one line, as a person would say it."""
    p = f.payload

    def yes(flag: str) -> str:
        return "yes" if p.get(flag) else "no"

    match f.type:
        case "LedgerGenesis":
            return f"ledger {p.get('origin')} created"
        case "ActorEnrolled":
            return f"enrolled {p.get('legal_name')} as {', '.join(p.get('roles', []))}"
        case "KeyRotated":
            return "rotated a key"
        case "KeyRevoked":
            return f"revoked a key, compromised at {p.get('compromised_at')}"
        case "ActorSuspended" | "ActorReinstated":
            return f"{f.type.removeprefix('Actor').lower()}: {p.get('reason')}"
        case "PolicyAdopted":
            return f"adopted {p.get('title')!r} effective {p.get('effective_from')}"
        case "SystemRegistered":
            return f"registered {p.get('name')} (owner {p.get('owner')}, holder {p.get('holder')})"
        case "RiskClassified":
            ict = ", critical ICT" if p.get("critical_ict") else ""
            return f"classified risk {p.get('risk_level')}, autonomy {p.get('autonomy')}{ict}"
        case "VersionDeployed":
            return f"deployed version {p.get('version')}"
        case "OperationStatusChanged":
            return f"status {p.get('status')}: {p.get('reason')}"
        case "HumanOversightAssigned":
            return (
                f"oversight by {p.get('overseer')} "
                f"(override {yes('can_override')}, stop {yes('can_stop')})"
            )
        case "HumanOversightWithdrawn":
            return f"oversight by {p.get('overseer')} withdrawn"
        case "LabelingAttested":
            return f"labelling attested: {p.get('marking_method')}"
        case "AuditCompleted":
            return f"audit {p.get('result')}, valid until {p.get('valid_until')}"
        case "ProhibitedCapabilityFound":
            return f"prohibited capability found: {p.get('category')}"
        case "InsurancePolicyChanged":
            return (
                f"insurance {p.get('policy_number')} {p.get('status')} "
                f"({p.get('start')} to {p.get('end')})"
            )
        case "IncidentReported":
            return (
                f"incident {p.get('incident_id')}: {p.get('severity')} "
                f"{p.get('harm_category')}, aware {p.get('aware_at')}"
            )
        case "PreventiveMeasureTaken":
            target = p.get("incident_id") or p.get("risk_reference")
            return f"measure {p.get('measure')} for {target}, effective {p.get('effective_at')}"
        case "IncidentClosed":
            return f"incident {p.get('incident_id')} closed"
    return f.type
