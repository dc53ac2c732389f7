"""The rules R1-R8: edge cases on the pure rule engine, and the DOMAIN.md scenario end to end."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ailedger.demo import play
from ailedger.scenario import START, Scenario
from ledger.bus.auth import GATEWAY, READER
from ledger.bus.home import init_home
from ledger.bus.streams import connect
from ledger.formats.timeutil import SimulatedClock, format_time
from ledger.law.rulebook import DEFAULT_PARAMETERS
from ledger.law.rules import Fact, evaluate
from ledger.state.persistence import store_envs
from ledger.views.compliance import ComplianceView
from ledger.views.store import open_view
from services.notary import Notary, serve
from services.projector import rebuild

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
S = timedelta(seconds=1)


class Story:
    """Ledger facts made by hand, in index order, for the pure rule engine."""

    def __init__(self, parameters: dict[str, Any] | None = None) -> None:
        params = parameters or copy.deepcopy(dict(DEFAULT_PARAMETERS))
        self.facts: list[Fact] = []
        self.add(
            "LedgerGenesis",
            "ledger/genesis",
            T0 - 100 * H,
            actor="regulator",
            policy={
                "policy_id": "rulebook",
                "effective_from": format_time(T0 - 100 * H),
                "parameters": params,
            },
        )

    def add(
        self, type: str, subject: str, at: datetime, actor: str = "bank", **payload: Any
    ) -> Fact:
        values = {k: format_time(v) if isinstance(v, datetime) else v for k, v in payload.items()}
        fact = Fact(
            len(self.facts),
            at,
            subject,
            type,
            actor,
            "fp",
            {"type": type, "actor": actor, **values},
        )
        self.facts.append(fact)
        return fact

    def system(
        self,
        at: datetime = T0,
        *,
        risk: str = "high",
        autonomy: str = "low",
        synthetic: bool = False,
    ) -> None:
        s = "system/s"
        self.add(
            "SystemRegistered",
            s,
            at,
            owner="bank",
            holder="bank",
            generates_synthetic_content=synthetic,
        )
        self.add("RiskClassified", s, at, risk_level=risk, autonomy=autonomy, critical_ict=False)
        self.add("VersionDeployed", s, at, version="1", artifact_sha256="a" * 64)
        self.add("HumanOversightAssigned", s, at, overseer="desk", can_override=True, can_stop=True)
        self.add(
            "InsurancePolicyChanged",
            s,
            at,
            actor="insurer",
            policy_number="P1",
            start=at,
            end=at + 1000 * H,
            status="bound",
        )
        self.add(
            "AuditCompleted",
            s,
            at,
            actor="auditor",
            audited_version_sha256="a" * 64,
            result="pass",
            valid_until=at + 1000 * H,
        )
        self.add("OperationStatusChanged", s, at, status="in_operation", reason="go")

    def verdict(self, at: datetime) -> tuple[str, list[tuple[str, str]]]:
        v = evaluate("s", self.facts, at)
        return v.verdict, [(f.rule, f.status) for f in v.findings]


def incident(story: Story, reported: datetime, aware: datetime, **kw: Any) -> Fact:
    fields = {
        "incident_id": "i1",
        "occurred_at": aware - H,
        "aware_at": aware,
        "harm_category": "property_environment",
        "severity": "serious",
    }
    fields.update(kw)
    return story.add("IncidentReported", "system/s", reported, **fields)


def measure(story: Story, at: datetime) -> Fact:
    return story.add(
        "PreventiveMeasureTaken",
        "system/s",
        at,
        incident_id="i1",
        measure="restrict",
        effective_at=at - H,
    )


def test_a_compliant_system_stays_compliant() -> None:
    story = Story()
    story.system()
    assert story.verdict(T0 + H) == ("compliant", [])


def test_r5_deadline_exactly_met_passes_and_missed_by_a_second_fails() -> None:
    for delay, expected in ((4 * H, "compliant"), (4 * H + S, "non_compliant")):
        story = Story()
        story.system()
        incident(story, T0 + H, T0 + H)
        assert story.verdict(T0 + 2 * H) == ("at_risk", [("R5", "open")])
        measure(story, T0 + H + delay)
        verdict, _ = story.verdict(T0 + 10 * H)
        assert verdict == expected
        if expected == "non_compliant":
            v = evaluate("s", story.facts, T0 + 10 * H)
            (f,) = v.findings
            assert (f.rule, f.since, f.deadline) == ("R5", T0 + 5 * H, T0 + 5 * H)
            assert f.evidence == (8, 9)  # the report and the late measure
            assert "Senate" in f.legal_basis


def test_r5_a_measure_claimed_in_time_but_integrated_late_is_late() -> None:
    story = Story()
    story.system()
    incident(story, T0 + H, T0 + H)
    late = story.add(
        "PreventiveMeasureTaken",
        "system/s",
        T0 + 30 * H,
        incident_id="i1",
        measure="patch",
        effective_at=T0 + 2 * H,
    )
    v = evaluate("s", story.facts, T0 + 31 * H)
    assert v.verdict == "non_compliant"
    assert "claimed effective" in v.findings[0].summary and late.index in v.findings[0].evidence
    # once the incident is closed the late measure stays on record, without blocking
    story.add("IncidentClosed", "system/s", T0 + 40 * H, incident_id="i1")
    assert story.verdict(T0 + 41 * H) == ("compliant", [("R5", "late")])


def test_a_claimed_awareness_after_the_report_does_not_postpone_the_clock() -> None:
    story = Story()
    story.system()
    incident(story, T0 + H, T0 + 2000 * H)  # "we will only become aware in 83 days"
    v = evaluate("s", story.facts, T0 + 10 * H)
    (f,) = v.findings
    assert (f.rule, f.status, f.deadline) == ("R5", "violation", T0 + 5 * H)


def test_closing_an_incident_without_a_measure() -> None:
    story = Story()
    story.system()
    incident(story, T0 + H, T0 + H)
    story.add("IncidentClosed", "system/s", T0 + 2 * H, incident_id="i1", resolution="false alarm")
    assert story.verdict(T0 + 10 * H) == ("compliant", [])  # closed before it was due
    story = Story()
    story.system()
    incident(story, T0 + H, T0 + H)
    story.add("IncidentClosed", "system/s", T0 + 9 * H, incident_id="i1", resolution="gave up")
    assert story.verdict(T0 + 10 * H) == ("non_compliant", [("R5", "violation")])


def test_r5_minor_incidents_have_24_hours() -> None:
    story = Story()
    story.system()
    incident(story, T0 + H, T0 + H, severity="minor")
    measure(story, T0 + 25 * H)
    assert story.verdict(T0 + 30 * H) == ("compliant", [])


def test_r6_reporting_deadline_and_death() -> None:
    story = Story()
    story.system()
    incident(story, T0 + 48 * H, T0)  # exactly 48 h after awareness
    measure(story, T0 + 48 * H)
    assert ("R6", "violation") not in story.verdict(T0 + 50 * H)[1]
    story = Story()
    story.system()
    incident(story, T0 + 48 * H + S, T0, severity="minor")
    measure(story, T0 + 49 * H)
    assert story.verdict(T0 + 50 * H) == (
        "non_compliant",
        [("R5", "violation"), ("R6", "violation")],
    )
    story = Story()
    story.system()
    incident(story, T0 + 200 * H, T0, harm_category="death", severity="minor")
    measure(story, T0 + 200 * H)
    assert ("R6", "violation") not in story.verdict(T0 + 201 * H)[1]


def test_a_rulebook_change_applies_from_its_effective_date_only() -> None:
    story = Story()
    story.system(risk="medium")
    effective = T0 + 10 * H
    tighter = copy.deepcopy(dict(DEFAULT_PARAMETERS))
    tighter["insurance_required_levels"] = ["medium", "high"]
    tighter["preventive_measure_hours_serious"] = 2
    story.facts[5] = Fact(
        5,
        T0,
        "system/s",
        "InsurancePolicyChanged",
        "insurer",
        "fp",
        {
            "type": "InsurancePolicyChanged",
            "policy_number": "P1",
            "status": "lapsed",
            "start": format_time(T0 - 10 * H),
            "end": format_time(T0 - H),
        },
    )
    adoption = story.add(
        "PolicyAdopted",
        "policy/rulebook",
        T0 + H,
        actor="regulator",
        effective_from=effective,
        parameters=tighter,
    )
    assert story.verdict(effective - S) == ("compliant", [])
    v = evaluate("s", story.facts, effective)
    assert v.verdict == "non_compliant" and v.policy_index == adoption.index
    (f,) = v.findings
    assert (f.rule, f.since) == ("R2", effective) and adoption.index in f.evidence
    # an incident aware before the change keeps the old 4 h; one after gets 2 h
    incident(story, effective - 2 * H, effective - 2 * H)
    measure(story, effective + H + 30 * 60 * S)  # 3.5 h after awareness
    incident(story, effective + 10 * H, effective + 10 * H, incident_id="i2")
    story.add(
        "PreventiveMeasureTaken",
        "system/s",
        effective + 13 * H,
        incident_id="i2",
        measure="patch",
        effective_at=effective + 11 * H,
    )
    findings = evaluate("s", story.facts, effective + 20 * H).findings
    assert [(f.rule, f.summary.split(" (")[0]) for f in findings if f.rule == "R5"] == [
        ("R5", "incident i2")
    ]


def test_r3_an_audit_of_an_older_version_does_not_count() -> None:
    story = Story()
    story.system()
    deploy = story.add(
        "VersionDeployed", "system/s", T0 + 5 * H, version="2", artifact_sha256="b" * 64
    )
    v = evaluate("s", story.facts, T0 + 6 * H)
    (f,) = v.findings
    assert (f.rule, f.since) == ("R3", deploy.integrated)
    assert deploy.index in f.evidence and "deployed version 2" in f.summary
    story.add(
        "AuditCompleted",
        "system/s",
        T0 + 8 * H,
        actor="auditor",
        audited_version_sha256="b" * 64,
        result="fail",
        valid_until=T0 + 900 * H,
    )
    assert story.verdict(T0 + 9 * H)[0] == "non_compliant"  # a failed audit is no audit
    story.add(
        "AuditCompleted",
        "system/s",
        T0 + 9 * H,
        actor="auditor",
        audited_version_sha256="b" * 64,
        result="pass",
        valid_until=T0 + 900 * H,
    )
    assert story.verdict(T0 + 10 * H) == ("compliant", [])
    # an audit expires at its valid_until or after audit_validity_days, whichever first
    assert story.verdict(T0 + 900 * H) == ("non_compliant", [("R3", "violation")])


def test_r2_insurance_lapsed_then_renewed() -> None:
    story = Story()
    story.system()
    lapse = story.add(
        "InsurancePolicyChanged",
        "system/s",
        T0 + 10 * H,
        actor="insurer",
        policy_number="P1",
        start=T0,
        end=T0 + 1000 * H,
        status="lapsed",
    )
    v = evaluate("s", story.facts, T0 + 11 * H)
    (f,) = v.findings
    assert (f.rule, f.since) == ("R2", lapse.integrated) and lapse.index in f.evidence
    story.add(
        "InsurancePolicyChanged",
        "system/s",
        T0 + 20 * H,
        actor="insurer",
        policy_number="P1",
        start=T0 + 20 * H,
        end=T0 + 2000 * H,
        status="renewed",
    )
    assert story.verdict(T0 + 19 * H)[0] == "non_compliant"
    assert story.verdict(T0 + 21 * H) == ("compliant", [])
    # coverage that simply runs out (and by then the audit has expired too)
    assert story.verdict(T0 + 2000 * H) == (
        "non_compliant",
        [("R2", "violation"), ("R3", "violation")],
    )


def test_r1_r4_r7_r8() -> None:
    story = Story()
    story.add(
        "SystemRegistered",
        "system/s",
        T0,
        owner="bank",
        holder="bank",
        generates_synthetic_content=True,
    )
    story.add("OperationStatusChanged", "system/s", T0, status="in_operation", reason="go")
    assert story.verdict(T0 + H) == ("non_compliant", [("R1", "violation"), ("R8", "violation")])
    story.add(
        "RiskClassified",
        "system/s",
        T0 + H,
        risk_level="minimal",
        autonomy="high",
        critical_ict=False,
    )
    story.add(
        "LabelingAttested",
        "system/s",
        T0 + H,
        content_types=["text"],
        marking_method="C2PA",
        visible_warning=True,
    )
    assert story.verdict(T0 + 2 * H) == ("non_compliant", [("R4", "violation")])
    story.add(
        "HumanOversightAssigned",
        "system/s",
        T0 + 2 * H,
        overseer="desk",
        can_override=True,
        can_stop=False,
    )
    assert story.verdict(T0 + 3 * H)[0] == "non_compliant"  # it must be able to stop it
    story.add(
        "HumanOversightAssigned",
        "system/s",
        T0 + 3 * H,
        overseer="desk",
        can_override=True,
        can_stop=True,
    )
    assert story.verdict(T0 + 4 * H) == ("compliant", [])
    withdrawn = story.add("HumanOversightWithdrawn", "system/s", T0 + 5 * H, overseer="desk")
    v = evaluate("s", story.facts, T0 + 6 * H)
    assert [(f.rule, f.since) for f in v.findings] == [("R4", withdrawn.integrated)]
    story.add(
        "HumanOversightAssigned",
        "system/s",
        T0 + 6 * H,
        overseer="desk",
        can_override=True,
        can_stop=True,
    )
    found = story.add(
        "ProhibitedCapabilityFound",
        "system/s",
        T0 + 7 * H,
        actor="auditor",
        category="social_scoring",
    )
    v = evaluate("s", story.facts, T0 + 8 * H)
    assert v.verdict == "critical"
    assert v.findings[0].evidence == (2, found.index)  # the start of operation, the finding
    story.add("OperationStatusChanged", "system/s", T0 + 9 * H, status="suspended", reason="R7")
    assert story.verdict(T0 + 10 * H) == ("compliant", [])


def test_the_regulators_classification_stands_against_the_owner() -> None:
    story = Story()
    story.system(risk="minimal")
    story.facts = [f for f in story.facts if f.type != "InsurancePolicyChanged"]
    story.add(
        "RiskClassified",
        "system/s",
        T0 + H,
        actor="regulator",
        risk_level="high",
        autonomy="low",
        critical_ict=False,
    )
    story.add(
        "RiskClassified",
        "system/s",
        T0 + 2 * H,
        risk_level="minimal",
        autonomy="low",
        critical_ict=False,
    )
    assert ("R2", "violation") in story.verdict(T0 + 3 * H)[1]


def test_time_and_index_bounds_are_respected() -> None:
    story = Story()
    story.system()
    incident(story, T0 + 10 * H, T0 + H)
    # before the report is integrated the ledger cannot show the incident
    assert story.verdict(T0 + 9 * H) == ("compliant", [])
    v = evaluate("s", story.facts, T0 + 20 * H, as_of_index=6)
    assert v.verdict == "compliant" and v.as_of_index == 6
    with pytest.raises(ValueError, match="not registered"):
        evaluate("s", story.facts, T0 - H)


# --- the DOMAIN.md scenario, through the notary and the projector ---------------------------


@pytest.fixture(scope="module")
def scenario_view(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComplianceView]:
    """The scenario played on a real embedded ledger, then projected into views."""
    tmp = tmp_path_factory.mktemp("scenario")
    home = init_home(tmp / "home", origin="scenario.ailedger.kz/test", at=START)
    home.identities().ensure(GATEWAY)  # outsiders and suspended actors submit through it

    async def run() -> None:
        clock = SimulatedClock(START)
        stop = asyncio.Event()
        ready: asyncio.Future[tuple[str, Notary]] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            serve(
                home,
                stop,
                clock=clock,
                on_ready=lambda url, n: ready.set_result((url, n)),
                # Checkpoints (each after a heads leaf) only where the scenario asks
                # for them: the evidence indexes below do not depend on timing.
                checkpoint_interval=3600.0,
                checkpoint_every=100_000,
            )
        )
        url, notary = await asyncio.wait_for(asyncio.shield(ready), 30)
        outcomes = await play(url, home, Scenario(home.regulator_key()), clock, notary=notary)
        assert all(o.as_expected for o in outcomes)
        nc = await connect(url, **home.bus_identity(READER))
        try:
            state_env, view_env = store_envs(home.state_dir)
            await rebuild(nc, home, state_env, view_env)
        finally:
            await nc.close()
            stop.set()
            await task

    asyncio.run(run())
    yield open_view(store_envs(home.state_dir)[1])


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("system", "when", "verdict", "rules"),
    [
        ("credit-scorer", "2026-02-01T12:00", "compliant", []),
        ("credit-scorer", "2026-04-14T12:00", "compliant", []),  # the incident is not reported yet
        ("credit-scorer", "2026-04-15T12:00", "non_compliant", ["R5"]),
        ("credit-scorer", "2026-07-01T12:00", "non_compliant", ["R2", "R5"]),  # insurance lapsed
        ("credit-scorer", "2026-07-14T12:00", "non_compliant", ["R5"]),  # renewed on Jul 13
        (
            "credit-scorer",
            "2026-07-21T12:00",
            "non_compliant",
            ["R3", "R5"],
        ),  # audit expired Jul 20
        ("traffic-optimiser", "2026-03-03T11:00", "at_risk", ["R5"]),  # measure due by 12:30
        ("traffic-optimiser", "2026-03-03T12:00", "compliant", []),  # measure within 2 hours
        ("traffic-optimiser", "2026-03-06T12:00", "non_compliant", ["R3"]),  # 3.2.1 not audited
        ("traffic-optimiser", "2026-03-10T12:00", "compliant", []),  # re-audited Mar 9
        ("news-summariser", "2026-02-01T12:00", "non_compliant", ["R8"]),  # no labelling yet
        ("news-summariser", "2026-02-09T12:00", "compliant", []),  # attested in week 3
        ("news-summariser", "2026-07-14T12:00", "compliant", []),  # medium: no insurance needed
        ("news-summariser", "2026-07-16T12:00", "non_compliant", ["R2"]),  # rulebook v2, Jul 15
        ("news-summariser", "2026-08-10T12:00", "compliant", []),  # insured Aug 7
    ],
)
def test_the_scenario_reads_as_a_lawyer_would(
    scenario_view: ComplianceView, system: str, when: str, verdict: str, rules: list[str]
) -> None:
    v = scenario_view.status(system, at=at(when))
    assert (v.verdict, [f.rule for f in v.findings if f.status != "late"]) == (verdict, rules)


def test_scenario_findings_cite_their_evidence_and_basis(scenario_view: ComplianceView) -> None:
    v = scenario_view.status("credit-scorer", at=at("2026-07-21T12:00"))
    r3, r5 = v.findings
    assert r3.rule == "R3" and r3.since == at("2026-07-20T09:00")
    assert r3.evidence == (8, 9, 11, 13)  # classification, version, audit, start of operation
    assert "Arts. 19-20" in r3.legal_basis
    assert r5.rule == "R5" and r5.deadline == at("2026-04-14T13:00")
    assert r5.evidence == (30, 31)  # the incident report and the (late) rollback
    summariser = scenario_view.status("news-summariser", at=at("2026-07-16T12:00"))
    (r2,) = summariser.findings
    assert r2.since == at("2026-07-15T00:00") and 33 in r2.evidence  # the rulebook adoption
    # as of an index: the reproducible form used in bundles
    by_index = scenario_view.status("credit-scorer", at_index=31)
    assert by_index.as_of_index == 31 and by_index.verdict == "non_compliant"


def test_the_timeline_tells_who_did_what(scenario_view: ComplianceView) -> None:
    rows = scenario_view.timeline("traffic-optimiser", until=at("2026-03-04T00:00"))
    assert [(r.actor, r.role, r.type) for r in rows][:3] == [
        ("akimat", "owner", "SystemRegistered"),
        ("akimat", "owner", "RiskClassified"),
        ("transit", "holder", "VersionDeployed"),
    ]
    assert rows[-1].type == "PreventiveMeasureTaken"
    assert rows[0].legal_name == "Akimat of Almaty"
    assert all(r.verification == "verified" for r in rows)
    assert all(r.index < 30 for r in rows)
