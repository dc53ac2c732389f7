"""The DOMAIN.md scenario as data: months of events, each with its expected outcome.

The demo plays it, and the tests play it and assert every outcome. Times are
simulated: the notary's clock is moved to each step's time before it is
submitted, so ``integrated`` follows the story.

Actors: the regulator (from ``ailedger init``); a bank owning a credit-scoring
system (high risk, medium autonomy); the city akimat owning a traffic-signal
optimiser (high risk, high autonomy, critical ICT) operated by the city
transport company as holder; a media company owning a generative news
summariser (medium risk, synthetic content); one auditor; one insurer.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.bus.client import sign_event
from ledger.formats.keys import ActorKey, generate
from ledger.law import events as ev
from ledger.law.rulebook import default_parameters

__all__ = ["START", "Scenario", "Step"]

#: The law is in force from 18 January 2026; the story starts the next morning.
START = datetime(2026, 1, 19, 9, 0, tzinfo=UTC)


def _sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    """Signed bytes to submit as they are (used for the deliberately bad ones)."""

    event_id: str
    event_type: str
    envelope: bytes


@dataclass(frozen=True)
class Step:
    at: datetime
    actor: str
    what: str
    make: Callable[[Scenario], ev.Event | Submission]
    expect: str = "accepted"  # or the reason code the notary must give


ACTORS = {
    "bank": ("Halyk Credit Bank JSC", "990140000123", ["owner"]),
    "akimat": ("Akimat of Almaty", "990240000456", ["owner"]),
    "transit": ("Almaty City Transport LLP", "051140000789", ["holder"]),
    "media": ("Qazaq Media Group LLP", "100340000321", ["owner"]),
    "auditor": ("Trusted AI Audit LLP", "180540000654", ["auditor"]),
    "insurer": ("Steppe Insurance JSC", "970640000987", ["insurer"]),
}


class Scenario:
    """Keys of every actor and the ordered steps of the story."""

    def __init__(self, regulator: ActorKey, start: datetime = START) -> None:
        self.start = start
        self.keys: dict[str, ActorKey] = {"regulator": regulator}
        for actor in ACTORS:
            self.keys[actor] = generate(actor)
        self.outsider = generate("outsider")  # never enrolled
        self.steps = self._steps()

    def at(self, days: float, hours: float = 0) -> datetime:
        return self.start + timedelta(days=days, hours=hours)

    def event(self, cls: type[ev.Event], actor: str, at: datetime, **fields: Any) -> ev.Event:
        return cls(v=1, event_id=ev.new_event_id(), actor=actor, signed_at=at, **fields)

    # --- builders of the deliberately bad submissions -------------------------

    def forged(self, at: datetime) -> Submission:
        """Claims to be the bank, signed with a key that is not the bank's."""
        e = self.event(
            ev.OperationStatusChanged,
            "bank",
            at,
            subject="system/credit-scorer",
            status="suspended",
            reason="forged suspension",
        )
        envelope = sign_event(e, ActorKey("bank", self.outsider.private_key))
        bank_fp = self.keys["bank"].fingerprint
        envelope = envelope.replace(self.outsider.fingerprint.encode(), bank_fp.encode())
        return Submission(e.event_id, e.type_name, envelope)

    def tampered(self, at: datetime) -> Submission:
        """A genuine signature over other bytes than the payload carried."""
        e = self.event(
            ev.HumanOversightWithdrawn,
            "transit",
            at,
            subject="system/traffic-optimiser",
            overseer="Control room duty officer",
            reason="night shift",
        )
        envelope = sign_event(e, self.keys["transit"])
        payload = ev.encode_event(e)
        # Keep the signature, swap the payload for a changed one.
        changed = payload.replace(b"night shift", b"never again")
        envelope = envelope.replace(base64.b64encode(payload), base64.b64encode(changed))
        return Submission(e.event_id, e.type_name, envelope)

    def by_outsider(self, at: datetime) -> Submission:
        e = self.event(
            ev.SystemRegistered,
            "outsider",
            at,
            subject="system/shadow-ai",
            name="Shadow AI",
            purpose="unregistered experiments",
            sector="unknown",
            owner="outsider",
            holder="outsider",
            generates_synthetic_content=False,
        )
        return Submission(e.event_id, e.type_name, sign_event(e, self.outsider))

    # --- the story ------------------------------------------------------------

    def _steps(self) -> list[Step]:
        s: list[Step] = []

        def step(
            days: float,
            actor: str,
            what: str,
            make: Callable[[Scenario, datetime], ev.Event | Submission],
            expect: str = "accepted",
            hours: float = 0,
        ) -> None:
            at = self.at(days, hours)

            def build(sc: Scenario) -> ev.Event | Submission:
                return make(sc, at)

            s.append(Step(at, actor, what, build, expect))

        def enrol(actor: str) -> Callable[[Scenario, datetime], ev.Event]:
            name, bin_, roles = ACTORS[actor]
            return lambda sc, at: sc.event(
                ev.ActorEnrolled,
                "regulator",
                at,
                subject=f"actor/{actor}",
                legal_name=name,
                bin=bin_,
                roles=roles,
                public_keys=[sc.keys[actor].public_key_b64],
            )

        for i, actor in enumerate(ACTORS):
            step(0, "regulator", f"enrols {actor}", enrol(actor), hours=1 + i * 0.1)

        # --- credit scorer: bank, high risk, medium autonomy ---
        step(
            1,
            "bank",
            "registers credit-scorer",
            lambda sc, at: sc.event(
                ev.SystemRegistered,
                "bank",
                at,
                subject="system/credit-scorer",
                name="Retail credit scoring",
                purpose="Scores consumer loan applications",
                sector="finance",
                owner="bank",
                holder="bank",
                generates_synthetic_content=False,
            ),
        )
        step(
            1,
            "bank",
            "classifies credit-scorer high risk",
            lambda sc, at: sc.event(
                ev.RiskClassified,
                "bank",
                at,
                subject="system/credit-scorer",
                risk_level="high",
                autonomy="medium",
                critical_ict=False,
                rationale="Decides access to credit for individuals",
            ),
            hours=1,
        )
        step(
            1,
            "bank",
            "deploys credit-scorer v1.0",
            lambda sc, at: sc.event(
                ev.VersionDeployed,
                "bank",
                at,
                subject="system/credit-scorer",
                version="1.0",
                artifact_sha256=_sha("credit-scorer 1.0"),
            ),
            hours=2,
        )
        step(
            1,
            "insurer",
            "binds liability insurance for credit-scorer",
            lambda sc, at: sc.event(
                ev.InsurancePolicyChanged,
                "insurer",
                at,
                subject="system/credit-scorer",
                policy_number="STI-2026-0001",
                coverage_tenge=500_000_000,
                start=sc.at(1),
                end=sc.at(162),
                status="bound",
            ),
            hours=3,
        )
        step(
            2,
            "auditor",
            "audits credit-scorer v1.0: pass",
            lambda sc, at: sc.event(
                ev.AuditCompleted,
                "auditor",
                at,
                subject="system/credit-scorer",
                scope="Bias, robustness and documentation of the scoring model",
                audited_version_sha256=_sha("credit-scorer 1.0"),
                result="pass",
                findings=[ev.AuditFinding(severity="low", text="Document the appeal process")],
                report_sha256=_sha("audit report credit-scorer"),
                valid_until=sc.at(182),
            ),
        )
        step(
            2,
            "bank",
            "assigns the credit committee as human oversight",
            lambda sc, at: sc.event(
                ev.HumanOversightAssigned,
                "bank",
                at,
                subject="system/credit-scorer",
                overseer="Retail credit committee",
                can_override=True,
                can_stop=True,
            ),
            hours=1,
        )
        step(
            2,
            "bank",
            "puts credit-scorer in operation",
            lambda sc, at: sc.event(
                ev.OperationStatusChanged,
                "bank",
                at,
                subject="system/credit-scorer",
                status="in_operation",
                reason="Audit passed, insurance bound",
            ),
            hours=2,
        )

        # --- traffic optimiser: akimat owns, transit holds, high autonomy, critical ICT ---
        step(
            3,
            "akimat",
            "registers traffic-optimiser, held by transit",
            lambda sc, at: sc.event(
                ev.SystemRegistered,
                "akimat",
                at,
                subject="system/traffic-optimiser",
                name="Adaptive traffic-signal optimiser",
                purpose="Times traffic lights city-wide",
                sector="transport",
                owner="akimat",
                holder="transit",
                generates_synthetic_content=False,
            ),
        )
        step(
            3,
            "akimat",
            "classifies traffic-optimiser",
            lambda sc, at: sc.event(
                ev.RiskClassified,
                "akimat",
                at,
                subject="system/traffic-optimiser",
                risk_level="high",
                autonomy="high",
                critical_ict=True,
                rationale="Controls critical urban infrastructure in real time",
            ),
            hours=1,
        )
        step(
            3,
            "transit",
            "deploys traffic-optimiser v3.2",
            lambda sc, at: sc.event(
                ev.VersionDeployed,
                "transit",
                at,
                subject="system/traffic-optimiser",
                version="3.2",
                artifact_sha256=_sha("traffic-optimiser 3.2"),
            ),
            hours=2,
        )
        step(
            3,
            "transit",
            "assigns the control room as human oversight",
            lambda sc, at: sc.event(
                ev.HumanOversightAssigned,
                "transit",
                at,
                subject="system/traffic-optimiser",
                overseer="Control room duty officer",
                can_override=True,
                can_stop=True,
            ),
            hours=3,
        )
        step(
            4,
            "insurer",
            "binds insurance for traffic-optimiser",
            lambda sc, at: sc.event(
                ev.InsurancePolicyChanged,
                "insurer",
                at,
                subject="system/traffic-optimiser",
                policy_number="STI-2026-0002",
                coverage_tenge=2_000_000_000,
                start=sc.at(4),
                end=sc.at(346),
                status="bound",
            ),
        )
        step(
            4,
            "auditor",
            "audits traffic-optimiser v3.2: pass with findings",
            lambda sc, at: sc.event(
                ev.AuditCompleted,
                "auditor",
                at,
                subject="system/traffic-optimiser",
                scope="Safety case and fallback to fixed timing",
                audited_version_sha256=_sha("traffic-optimiser 3.2"),
                result="pass",
                findings=[ev.AuditFinding(severity="medium", text="Drill the manual fallback")],
                report_sha256=_sha("audit report traffic-optimiser"),
                valid_until=sc.at(184),
            ),
            hours=2,
        )
        step(
            5,
            "transit",
            "puts traffic-optimiser in operation",
            lambda sc, at: sc.event(
                ev.OperationStatusChanged,
                "transit",
                at,
                subject="system/traffic-optimiser",
                status="in_operation",
                reason="Pilot on Abay and Al-Farabi avenues",
            ),
        )

        # --- news summariser: media, medium risk, synthetic content ---
        step(
            6,
            "media",
            "registers news-summariser",
            lambda sc, at: sc.event(
                ev.SystemRegistered,
                "media",
                at,
                subject="system/news-summariser",
                name="Generative news summariser",
                purpose="Writes short summaries of wire news",
                sector="media",
                owner="media",
                holder="media",
                generates_synthetic_content=True,
            ),
        )
        step(
            6,
            "media",
            "classifies news-summariser medium risk",
            lambda sc, at: sc.event(
                ev.RiskClassified,
                "media",
                at,
                subject="system/news-summariser",
                risk_level="medium",
                autonomy="low",
                critical_ict=False,
                rationale="Editors review before publication",
            ),
            hours=1,
        )
        step(
            6,
            "media",
            "puts news-summariser in operation",
            lambda sc, at: sc.event(
                ev.OperationStatusChanged,
                "media",
                at,
                subject="system/news-summariser",
                status="in_operation",
                reason="Launch",
            ),
            hours=2,
        )

        # --- submissions the notary must refuse ---
        step(
            7,
            "bank",
            "bank tries to classify the akimat's system",
            lambda sc, at: sc.event(
                ev.RiskClassified,
                "bank",
                at,
                subject="system/traffic-optimiser",
                risk_level="minimal",
                autonomy="low",
                critical_ict=False,
                rationale="Not ours",
            ),
            expect="not_system_party",
        )
        step(
            7,
            "bank",
            "bank registers credit-scorer a second time",
            lambda sc, at: sc.event(
                ev.SystemRegistered,
                "bank",
                at,
                subject="system/credit-scorer",
                name="Retail credit scoring",
                purpose="again",
                sector="finance",
                owner="bank",
                holder="bank",
                generates_synthetic_content=False,
            ),
            expect="system_already_registered",
            hours=1,
        )
        step(
            7,
            "insurer",
            "insurer tries to register a system",
            lambda sc, at: sc.event(
                ev.SystemRegistered,
                "insurer",
                at,
                subject="system/claims-bot",
                name="Claims bot",
                purpose="Settles claims",
                sector="insurance",
                owner="insurer",
                holder="insurer",
                generates_synthetic_content=False,
            ),
            expect="role_not_allowed",
            hours=2,
        )
        step(
            7,
            "media",
            "media reports a measure for an unknown incident",
            lambda sc, at: sc.event(
                ev.PreventiveMeasureTaken,
                "media",
                at,
                subject="system/news-summariser",
                incident_id="inc-404",
                measure="patch",
                effective_at=at,
                description="Patched",
            ),
            expect="unknown_incident",
            hours=3,
        )
        step(
            7,
            "bank",
            "a forged suspension of credit-scorer",
            lambda sc, at: sc.forged(at),
            expect="bad_signature",
            hours=4,
        )
        step(
            7,
            "transit",
            "a payload changed after signing",
            lambda sc, at: sc.tampered(at),
            expect="bad_signature",
            hours=5,
        )
        step(
            7,
            "outsider",
            "an unenrolled actor registers a system",
            lambda sc, at: sc.by_outsider(at),
            expect="unknown_actor",
            hours=6,
        )
        step(
            7,
            "bank",
            "an event dated tomorrow",
            lambda sc, at: sc.event(
                ev.VersionDeployed,
                "bank",
                at + timedelta(days=1),
                subject="system/credit-scorer",
                version="1.1",
                artifact_sha256=_sha("credit-scorer 1.1"),
            ),
            expect="clock_skew",
            hours=7,
        )
        step(
            7,
            "bank",
            "deploys for an unregistered system",
            lambda sc, at: sc.event(
                ev.VersionDeployed,
                "bank",
                at,
                subject="system/fraud-detector",
                version="0.1",
                artifact_sha256=_sha("fraud-detector 0.1"),
            ),
            expect="system_not_registered",
            hours=8,
        )

        # --- week 3: labelling ---
        step(
            20,
            "media",
            "attests labelling of synthetic summaries",
            lambda sc, at: sc.event(
                ev.LabelingAttested,
                "media",
                at,
                subject="system/news-summariser",
                content_types=["text"],
                marking_method="C2PA manifest and visible 'AI-generated' tag",
                visible_warning=True,
            ),
        )

        # --- March: incident at the traffic optimiser, measure within 2 hours ---
        step(
            43,
            "transit",
            "reports a signal-timing incident",
            lambda sc, at: sc.event(
                ev.IncidentReported,
                "transit",
                at,
                subject="system/traffic-optimiser",
                incident_id="inc-2026-03-03",
                occurred_at=sc.at(43, -0.75),
                aware_at=sc.at(43, -0.5),
                harm_category="critical_infrastructure",
                severity="serious",
                affected_count=0,
                description="All-red phase held for 4 minutes at 12 junctions",
            ),
            hours=1.25,
        )
        step(
            43,
            "transit",
            "restricts the optimiser to fixed timing",
            lambda sc, at: sc.event(
                ev.PreventiveMeasureTaken,
                "transit",
                at,
                subject="system/traffic-optimiser",
                incident_id="inc-2026-03-03",
                measure="restrict",
                effective_at=sc.at(43, 1.5),
                description="Fallback to fixed timing plans until the fix is verified",
            ),
            hours=2.5,
        )
        step(
            45,
            "akimat",
            "closes the incident",
            lambda sc, at: sc.event(
                ev.IncidentClosed,
                "akimat",
                at,
                subject="system/traffic-optimiser",
                incident_id="inc-2026-03-03",
                resolution="Timing bug fixed in 3.2.1, verified",
            ),
        )
        step(
            45,
            "transit",
            "deploys traffic-optimiser v3.2.1",
            lambda sc, at: sc.event(
                ev.VersionDeployed,
                "transit",
                at,
                subject="system/traffic-optimiser",
                version="3.2.1",
                artifact_sha256=_sha("traffic-optimiser 3.2.1"),
            ),
            hours=1,
        )

        step(
            48,
            "auditor",
            "audits traffic-optimiser v3.2.1: pass",
            lambda sc, at: sc.event(
                ev.AuditCompleted,
                "auditor",
                at,
                subject="system/traffic-optimiser",
                scope="Regression audit of the timing fix",
                audited_version_sha256=_sha("traffic-optimiser 3.2.1"),
                result="pass",
                findings=[],
                report_sha256=_sha("audit report traffic-optimiser 3.2.1"),
                valid_until=sc.at(184),
            ),
        )

        # --- April: incident at the scorer, no measure in time ---
        step(
            86,
            "bank",
            "reports discriminatory scoring a day late",
            lambda sc, at: sc.event(
                ev.IncidentReported,
                "bank",
                at,
                subject="system/credit-scorer",
                incident_id="inc-2026-04-14",
                occurred_at=sc.at(84),
                aware_at=sc.at(85),
                harm_category="fundamental_rights",
                severity="serious",
                affected_count=312,
                description="Applicants from two districts systematically scored lower",
            ),
        )
        step(
            89,
            "bank",
            "rolls back the scorer three days after",
            lambda sc, at: sc.event(
                ev.PreventiveMeasureTaken,
                "bank",
                at,
                subject="system/credit-scorer",
                incident_id="inc-2026-04-14",
                measure="rollback",
                effective_at=at,
                description="Rolled back the district feature",
            ),
        )

        # --- June-July: insurance lapses, the regulator widens mandatory insurance ---
        step(
            162,
            "insurer",
            "credit-scorer insurance lapses",
            lambda sc, at: sc.event(
                ev.InsurancePolicyChanged,
                "insurer",
                at,
                subject="system/credit-scorer",
                policy_number="STI-2026-0001",
                coverage_tenge=500_000_000,
                start=sc.at(1),
                end=sc.at(162),
                status="lapsed",
            ),
        )
        step(
            163,
            "regulator",
            "requires insurance for medium risk too, from 15 July",
            lambda sc, at: sc.event(
                ev.PolicyAdopted,
                "regulator",
                at,
                subject="policy/rulebook",
                title="Rulebook v2: insurance for medium-risk systems",
                effective_from=datetime(2026, 7, 15, tzinfo=UTC),
                parameters=_v2_parameters(),
                legal_references=["Order of the Minister of AI and Digital Development, 2026"],
            ),
        )
        step(
            164,
            "regulator",
            "a policy back-dated to June is refused",
            lambda sc, at: sc.event(
                ev.PolicyAdopted,
                "regulator",
                at,
                subject="policy/rulebook",
                title="Back-dated",
                effective_from=datetime(2026, 6, 1, tzinfo=UTC),
                parameters=_v2_parameters(),
                legal_references=["none"],
            ),
            expect="policy_retroactive",
        )
        step(
            175,
            "insurer",
            "renews credit-scorer insurance",
            lambda sc, at: sc.event(
                ev.InsurancePolicyChanged,
                "insurer",
                at,
                subject="system/credit-scorer",
                policy_number="STI-2026-0001",
                coverage_tenge=500_000_000,
                start=at,
                end=sc.at(540),
                status="renewed",
            ),
        )
        step(
            200,
            "insurer",
            "binds insurance for news-summariser",
            lambda sc, at: sc.event(
                ev.InsurancePolicyChanged,
                "insurer",
                at,
                subject="system/news-summariser",
                policy_number="STI-2026-0003",
                coverage_tenge=100_000_000,
                start=at,
                end=sc.at(565),
                status="bound",
            ),
        )
        return s


def _v2_parameters() -> ev.RulebookParameters:
    return default_parameters(insurance_required_levels=["medium", "high"])
