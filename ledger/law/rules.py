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

The rules are a table, :data:`RULES`: one small function per rule, named after
the obligation, taking the :class:`Moment` judged (the system's chain folded
into a :class:`SystemState`, the rulebook, T) and returning its findings.
Payloads are read through the typed views of :mod:`ledger.law.payloads`.

Standard library only: the offline verifier recomputes verdicts with this very
code (``ailedger verify`` recomputes every claimed verdict).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar, cast

from ledger.formats import strictjson
from ledger.formats.dsse import ParsedEnvelope, parse_envelope
from ledger.formats.entry import Entry
from ledger.formats.timeutil import format_time, parse_time
from ledger.law import payloads as pl
from ledger.law.payloads import RuleId
from ledger.law.rulebook import PolicyVersion, Rulebook

__all__ = [
    "RULES",
    "Evidence",
    "Fact",
    "Finding",
    "Moment",
    "Rule",
    "Severity",
    "Status",
    "SystemState",
    "SystemVerdict",
    "Verdict",
    "evaluate",
    "fact_from_entry",
    "summarize",
]


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


Status = Literal["violation", "open", "late"]
"""``violation``: due and unmet; ``open``: not yet due; ``late``: met late, the matter closed."""
Severity = Literal["critical", "high", "medium"]
Verdict = Literal["compliant", "at_risk", "non_compliant", "critical"]

VERDICTS: tuple[Verdict, ...] = ("compliant", "at_risk", "non_compliant", "critical")
PASSING_AUDIT = ("pass", "conditional")
ACTIVE_INSURANCE = ("bound", "renewed")


@dataclass(frozen=True)
class Finding:
    rule: RuleId
    status: Status
    severity: Severity
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
    verdict: Verdict
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

P = TypeVar("P")


@dataclass(frozen=True)
class Evidence(Generic[P]):
    """An entry the rules rely on: the fact (index, integration, signer) and its
    payload read as the typed view ``P`` (:mod:`ledger.law.payloads`)."""

    fact: Fact
    payload: P

    @property
    def index(self) -> int:
        return self.fact.index

    @property
    def integrated(self) -> datetime:
        return self.fact.integrated


def _read(fact: Fact, view: Callable[..., P]) -> Evidence[P]:
    return Evidence(fact, cast(P, fact.payload))


@dataclass
class IncidentState:
    report: Evidence[pl.IncidentReported]
    measures: list[Evidence[pl.PreventiveMeasureTaken]] = field(default_factory=list)
    closed: Fact | None = None


@dataclass
class SystemState:
    """A system's chain folded up to T: what the rules read."""

    registration: Evidence[pl.SystemRegistered] | None = None
    status: str = "registered"
    status_fact: Fact | None = None
    classification: Evidence[pl.RiskClassified] | None = None
    regulator_classified: bool = False
    deployment: Evidence[pl.VersionDeployed] | None = None
    oversight: dict[str, Evidence[pl.HumanOversightAssigned]] = field(default_factory=dict)
    oversight_withdrawn: Fact | None = None
    labeling: Fact | None = None
    audits: list[Evidence[pl.AuditCompleted]] = field(default_factory=list)
    insurance: dict[str, Evidence[pl.InsurancePolicyChanged]] = field(default_factory=dict)
    insurance_history: list[Evidence[pl.InsurancePolicyChanged]] = field(default_factory=list)
    prohibited: list[Evidence[pl.ProhibitedCapabilityFound]] = field(default_factory=list)
    incidents: dict[str, IncidentState] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return "" if self.registration is None else self.registration.payload["owner"]

    @property
    def risk(self) -> pl.RiskLevel | None:
        return None if self.classification is None else self.classification.payload["risk_level"]

    @property
    def autonomy(self) -> pl.Autonomy | None:
        return None if self.classification is None else self.classification.payload["autonomy"]


def _fold(facts: Sequence[Fact]) -> SystemState:
    s = SystemState()
    for f in facts:
        if f.type == "SystemRegistered":
            s.registration = _read(f, pl.SystemRegistered)
        elif f.type == "OperationStatusChanged":
            s.status, s.status_fact = _read(f, pl.OperationStatusChanged).payload["status"], f
        elif f.type == "RiskClassified":
            # Only the owner or the regulator may classify; the regulator's
            # override stands against later classifications by the owner.
            by_regulator = f.actor != s.owner
            if by_regulator or not s.regulator_classified:
                s.classification = _read(f, pl.RiskClassified)
                s.regulator_classified = s.regulator_classified or by_regulator
        elif f.type == "VersionDeployed":
            s.deployment = _read(f, pl.VersionDeployed)
        elif f.type == "HumanOversightAssigned":
            assigned = _read(f, pl.HumanOversightAssigned)
            s.oversight[assigned.payload["overseer"]] = assigned
        elif f.type == "HumanOversightWithdrawn":
            s.oversight.pop(_read(f, pl.HumanOversightWithdrawn).payload["overseer"], None)
            s.oversight_withdrawn = f
        elif f.type == "LabelingAttested":
            s.labeling = f
        elif f.type == "AuditCompleted":
            s.audits.append(_read(f, pl.AuditCompleted))
        elif f.type == "InsurancePolicyChanged":
            change = _read(f, pl.InsurancePolicyChanged)
            s.insurance[change.payload["policy_number"]] = change
            s.insurance_history.append(change)
        elif f.type == "ProhibitedCapabilityFound":
            s.prohibited.append(_read(f, pl.ProhibitedCapabilityFound))
        elif f.type == "IncidentReported":
            report = _read(f, pl.IncidentReported)
            s.incidents[report.payload["incident_id"]] = IncidentState(report)
        elif f.type == "PreventiveMeasureTaken":
            measure = _read(f, pl.PreventiveMeasureTaken)
            incident = _incident(s, measure.payload.get("incident_id"))
            if incident is not None:
                incident.measures.append(measure)
        elif f.type == "IncidentClosed":
            incident = _incident(s, _read(f, pl.IncidentClosed).payload.get("incident_id"))
            if incident is not None:
                incident.closed = f
    return s


def _incident(s: SystemState, incident_id: str | None) -> IncidentState | None:
    return None if incident_id is None else s.incidents.get(incident_id)


# --- the rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """What a rule judges: the system's chain folded up to T, the rulebook, and T."""

    system: SystemState
    rulebook: Rulebook
    policy: PolicyVersion  # in force at T
    at: datetime

    @property
    def params(self) -> pl.RulebookParameters:
        return self.policy.params

    @property
    def in_operation(self) -> Fact | None:
        """The entry that put the system in operation, if it is in operation at T."""
        return self.system.status_fact if self.system.status == "in_operation" else None


#: A rule: the findings it makes about one system at one moment.
Rule = Callable[[Moment], list[Finding]]


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
    moment = Moment(_fold(chain), rulebook, rulebook.in_force(at), at)
    findings = [finding for rule in RULES.values() for finding in rule(moment)]
    findings.sort(key=lambda f: (f.rule, f.since, f.evidence))
    return SystemVerdict(
        system,
        at,
        as_of_index if as_of_index is not None else (known[-1].index if known else -1),
        _verdict(findings),
        tuple(findings),
        moment.policy.index,
    )


def _verdict(findings: Sequence[Finding]) -> Verdict:
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


def _idx(*evidence: Evidence[Any] | Fact | int | None) -> tuple[int, ...]:
    return tuple(sorted({e if isinstance(e, int) else e.index for e in evidence if e is not None}))


def _since_classified(s: SystemState) -> datetime | None:
    return s.classification.integrated if s.classification else None


def r1_risk_classification(m: Moment) -> list[Finding]:
    """Art. 17(1): a system in operation must be classified by risk level."""
    op = m.in_operation
    if op is None or m.system.classification is not None:
        return []
    return [
        Finding(
            "R1",
            "violation",
            "high",
            op.integrated,
            op.integrated,
            m.policy.basis("R1"),
            _idx(m.system.registration, op),
            "in operation without a risk classification",
        )
    ]


def r2_liability_insurance(m: Moment) -> list[Finding]:
    """Senate amendment: mandatory liability insurance for the risk levels the rulebook names."""
    s, at, op, risk = m.system, m.at, m.in_operation, m.system.risk
    if op is None or risk not in m.params["insurance_required_levels"]:
        return []
    if any(_insured(p.payload, at) for p in s.insurance.values()):
        return []
    required = m.rulebook.required_since(
        at, lambda v: risk in v.params["insurance_required_levels"]
    )
    ended = [t for t in (_insurance_end(p) for p in s.insurance.values()) if t <= at]
    since = _latest(op.integrated, _since_classified(s), required, max(ended) if ended else None)
    last = s.insurance_history[-1] if s.insurance_history else None
    why = (
        f"no insurance policy active (last: {last.payload['policy_number']} "
        f"{last.payload['status']}, ends {last.payload['end']})"
        if last
        else "no insurance policy ever reported"
    )
    return [
        Finding(
            "R2",
            "violation",
            "high",
            since,
            since,
            m.policy.basis("R2"),
            _idx(s.classification, op, last, m.rulebook.adoption_starting(required)),
            f"risk level {risk} in operation, {why}",
        )
    ]


def _insured(p: pl.InsurancePolicyChanged, at: datetime) -> bool:
    return p["status"] in ACTIVE_INSURANCE and parse_time(p["start"]) <= at < parse_time(p["end"])


def _insurance_end(change: Evidence[pl.InsurancePolicyChanged]) -> datetime:
    """When the cover ends: its term, or the integration of a lapse or cancellation before it."""
    end = parse_time(change.payload["end"])
    if change.payload["status"] in ACTIVE_INSURANCE:
        return end
    return min(end, change.integrated)


def r3_valid_audit(m: Moment) -> list[Finding]:
    """Arts. 19-20: a passing audit, valid at T, of the version deployed."""
    s, at, op, risk = m.system, m.at, m.in_operation, m.system.risk
    if op is None or risk not in m.params["audit_required_levels"]:
        return []
    version = s.deployment.payload["artifact_sha256"] if s.deployment else None
    validity = timedelta(days=int(m.params["audit_validity_days"]))

    def expiry(a: Evidence[pl.AuditCompleted]) -> datetime:
        return min(parse_time(a.payload["valid_until"]), a.integrated + validity)

    matching = [
        a
        for a in s.audits
        if a.payload["result"] in PASSING_AUDIT
        and (version is None or a.payload["audited_version_sha256"] == version)
    ]
    if any(expiry(a) > at for a in matching):
        return []
    required = m.rulebook.required_since(at, lambda v: risk in v.params["audit_required_levels"])
    expired = [expiry(a) for a in matching if expiry(a) <= at]
    deployed = s.deployment.integrated if s.deployment else None
    since = _latest(
        op.integrated, _since_classified(s), required, deployed, max(expired) if expired else None
    )
    last_audit = s.audits[-1] if s.audits else None
    if matching:
        why = f"the last passing audit expired {format_time(max(expired))}"
    elif last_audit is not None and s.deployment is not None:
        why = f"no passing audit of the deployed version {s.deployment.payload['version']}"
    else:
        why = "no passing audit"
    return [
        Finding(
            "R3",
            "violation",
            "high",
            since,
            since,
            m.policy.basis("R3"),
            _idx(
                s.classification,
                op,
                s.deployment,
                last_audit,
                m.rulebook.adoption_starting(required),
            ),
            f"risk level {risk} in operation: {why}",
        )
    ]


def r4_human_oversight(m: Moment) -> list[Finding]:
    """Art. 17(2): no highly autonomous (or high-risk) system without human oversight
    able to override and stop it."""
    s, op = m.system, m.in_operation
    if op is None or s.classification is None:
        return []
    needs_oversight = (
        s.autonomy in m.params["oversight_required_autonomy"]
        or s.risk in m.params["oversight_required_levels"]
    )
    capable = [
        o
        for o in s.oversight.values()
        if o.payload["can_override"] is True and o.payload["can_stop"] is True
    ]
    if not needs_oversight or capable:
        return []
    withdrawn = s.oversight_withdrawn
    since = _latest(
        op.integrated, _since_classified(s), withdrawn.integrated if withdrawn else None
    )
    return [
        Finding(
            "R4",
            "violation",
            "high",
            since,
            since,
            m.policy.basis("R4"),
            _idx(s.classification, op, withdrawn),
            f"autonomy {s.autonomy}, risk {s.risk}: no human oversight able to override and stop",
        )
    ]


def _incident_clock(inc: IncidentState, rulebook: Rulebook) -> tuple[datetime, PolicyVersion]:
    """When the incident's clock started, and the rulebook in force then.

    A claimed awareness later than the report itself cannot postpone the
    clock: the reporter was aware when it reported at the latest."""
    report = inc.report
    aware = min(parse_time(report.payload["aware_at"]), report.integrated)
    return aware, rulebook.in_force(aware)


def r5_preventive_measure(m: Moment) -> list[Finding]:
    """Senate amendment: a preventive measure integrated within the allowed hours of awareness."""
    out = []
    for incident_id, inc in m.system.incidents.items():
        report = inc.report
        aware, policy = _incident_clock(inc, m.rulebook)
        serious = report.payload["severity"] in ("serious", "critical")
        hours = int(
            policy.params[
                "preventive_measure_hours_serious" if serious else "preventive_measure_hours"
            ]
        )
        deadline = aware + timedelta(hours=hours)
        first = inc.measures[0] if inc.measures else None
        closed_in_time = inc.closed is not None and inc.closed.integrated <= deadline
        if first is None and closed_in_time:
            continue
        if first is not None and first.integrated <= deadline:
            continue
        status: Status
        if first is None and m.at < deadline:
            status = "open"
        elif first is not None and inc.closed is not None:
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
    return out


def r6_incident_reported_in_time(m: Moment) -> list[Finding]:
    """EU AI Act Art. 73(2)-(4) as reference: an incident reported within the allowed
    hours of awareness."""
    out = []
    for incident_id, inc in m.system.incidents.items():
        report = inc.report
        aware, policy = _incident_clock(inc, m.rulebook)
        death = report.payload["harm_category"] == "death"
        report_hours = int(policy.params["report_hours_death" if death else "report_hours"])
        report_deadline = aware + timedelta(hours=report_hours)
        if report.integrated <= report_deadline:
            continue
        out.append(
            Finding(
                "R6",
                "late" if inc.closed is not None else "violation",
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


def r7_prohibited_capability(m: Moment) -> list[Finding]:
    """Art. 17(3): a prohibited capability found while in operation: critical until suspended."""
    op = m.in_operation
    if op is None:
        return []
    out = []
    for found in m.system.prohibited:
        since = _latest(op.integrated, found.integrated)
        out.append(
            Finding(
                "R7",
                "violation",
                "critical",
                since,
                since,
                m.policy.basis("R7"),
                _idx(found, op),
                f"prohibited capability {found.payload['category']} found "
                f"by {found.fact.actor}, system still in operation",
            )
        )
    return out


def r8_synthetic_content_labelled(m: Moment) -> list[Finding]:
    """Art. 21: a system generating synthetic content needs a labelling attestation."""
    s, op = m.system, m.in_operation
    synthetic = s.registration is not None and s.registration.payload["generates_synthetic_content"]
    if op is None or not synthetic or s.labeling is not None:
        return []
    return [
        Finding(
            "R8",
            "violation",
            "high",
            op.integrated,
            op.integrated,
            m.policy.basis("R8"),
            _idx(s.registration, op),
            "generates synthetic content without a labelling attestation",
        )
    ]


#: The rules R1-R8 (DOMAIN.md), by id.
RULES: dict[RuleId, Rule] = {
    "R1": r1_risk_classification,
    "R2": r2_liability_insurance,
    "R3": r3_valid_audit,
    "R4": r4_human_oversight,
    "R5": r5_preventive_measure,
    "R6": r6_incident_reported_in_time,
    "R7": r7_prohibited_capability,
    "R8": r8_synthetic_content_labelled,
}


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
