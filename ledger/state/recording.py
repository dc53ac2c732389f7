"""Recording admitted events: one handler per event type changes the aggregates
in a batch's overlay. Handlers run once admission has judged the event
(:func:`ledger.law.admission.judge`), for new submissions and for entries
replayed from LEDGER alike; they check the aggregates' own invariants, then
change state."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ledger.formats.keys import decode_public_key, fingerprint
from ledger.law import events as ev
from ledger.state.domain import (
    Actor,
    AISystem,
    Audit,
    Incident,
    InsurancePolicy,
    KeyBinding,
    LedgerInfo,
    Provenance,
    Rulebook,
)
from ledger.state.overlay import Overlay

__all__ = ["Recording"]

_HANDLERS: dict[type[ev.Event], str] = {}


def _handles(*types: type[ev.Event]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        for t in types:
            _HANDLERS[t] = fn.__name__
        return fn

    return register


class Recording(Overlay):
    """The state changes of admitted events, made in the overlay."""

    def _apply_event(self, event: ev.AnyEvent, prov: Provenance) -> None:
        handler = getattr(self, _HANDLERS[type(event)])
        handler(event, prov)

    def _system_for(self, event: ev.AnyEvent) -> AISystem:
        system = self.system(event.subject_id)
        assert system is not None, "judged: the system is registered"
        return system

    # --- handlers: check everything, then change state ---------------------

    @_handles(ev.LedgerGenesis)
    def _genesis(self, event: ev.LedgerGenesis, prov: Provenance) -> None:
        info = LedgerInfo(
            origin=event.origin,
            regulator=event.actor,
            notary_keys=event.notary_keys,
            witness_keys=event.witness_keys,
            witness_quorum=event.witness_quorum,
            prov=prov,
        )
        regulator = Actor(
            actor_id=event.actor,
            legal_name=event.regulator_name,
            bin=event.regulator_bin,
            roles=["regulator"],
            public_keys=event.regulator_keys,
            prov=prov,
        )
        rulebook = Rulebook(policy_id=event.policy.policy_id, prov=prov)
        rulebook.adopt(
            title=event.policy.title,
            effective_from=event.policy.effective_from,
            parameters=msgspec.to_builtins(event.policy.parameters),
            legal_references=event.policy.legal_references,
            prov=prov,
        )
        self._add(
            info, regulator, rulebook, *self._bind_keys(event.actor, event.regulator_keys, prov)
        )

    def _bind_keys(self, actor_id: str, keys: list[str], prov: Provenance) -> list[KeyBinding]:
        bindings = []
        for key in keys:
            fp = fingerprint(decode_public_key(key))
            bindings.append(
                KeyBinding(key_fingerprint=fp, public_key=key, actor_id=actor_id, prov=prov)
            )
        return bindings

    @_handles(ev.ActorEnrolled)
    def _enrol(self, event: ev.ActorEnrolled, prov: Provenance) -> None:
        actor = Actor(
            actor_id=event.subject_id,
            legal_name=event.legal_name,
            bin=event.bin,
            roles=list(event.roles),
            public_keys=event.public_keys,
            prov=prov,
        )
        self._add(actor, *self._bind_keys(event.subject_id, event.public_keys, prov))

    def _target_actor(self, event: ev.ActorEvent) -> Actor:
        target = self.actor(event.subject_id)
        assert target is not None, "judged: the actor is enrolled"
        return target

    @_handles(ev.KeyRotated)
    def _rotate(self, event: ev.KeyRotated, prov: Provenance) -> None:
        target = self._target_actor(event)
        target.rotate_key(
            new_key=event.new_key,
            old_key=event.old_key,
            old_key_valid_until=event.old_key_valid_until,
            prov=prov,
        )
        self._add(*self._bind_keys(target.actor_id, [event.new_key], prov))

    @_handles(ev.KeyRevoked)
    def _revoke(self, event: ev.KeyRevoked, prov: Provenance) -> None:
        self._target_actor(event).revoke_key(
            key=event.key, compromised_at=event.compromised_at, reason=event.reason, prov=prov
        )

    @_handles(ev.ActorSuspended)
    def _suspend(self, event: ev.ActorSuspended, prov: Provenance) -> None:
        self._target_actor(event).suspend(reason=event.reason, prov=prov)

    @_handles(ev.ActorReinstated)
    def _reinstate(self, event: ev.ActorReinstated, prov: Provenance) -> None:
        self._target_actor(event).reinstate(reason=event.reason, prov=prov)

    @_handles(ev.PolicyAdopted)
    def _adopt_policy(self, event: ev.PolicyAdopted, prov: Provenance) -> None:
        Rulebook.check_not_retroactive(event.effective_from, prov.integrated)
        rulebook = self._get(Rulebook, Rulebook.create_id(event.subject_id))
        if rulebook is None:
            rulebook = Rulebook(policy_id=event.subject_id, prov=prov)
            self._add(rulebook)
        rulebook.adopt(
            title=event.title,
            effective_from=event.effective_from,
            parameters=msgspec.to_builtins(event.parameters),
            legal_references=event.legal_references,
            prov=prov,
        )

    @_handles(ev.SystemRegistered)
    def _register(self, event: ev.SystemRegistered, prov: Provenance) -> None:
        system = AISystem(
            system_id=event.subject_id,
            name=event.name,
            purpose=event.purpose,
            sector=event.sector,
            owner=event.owner,
            holder=event.holder,
            generates_synthetic_content=event.generates_synthetic_content,
            prov=prov,
        )
        self._add(system)

    @_handles(ev.RiskClassified)
    def _classify(self, event: ev.RiskClassified, prov: Provenance) -> None:
        system = self._system_for(event)
        system.classify(
            risk_level=event.risk_level,
            autonomy=event.autonomy,
            critical_ict=event.critical_ict,
            rationale=event.rationale,
            prov=prov,
        )

    @_handles(ev.VersionDeployed)
    def _deploy(self, event: ev.VersionDeployed, prov: Provenance) -> None:
        system = self._system_for(event)
        system.deploy_version(
            version=event.version, artifact_sha256=event.artifact_sha256, prov=prov
        )

    @_handles(ev.OperationStatusChanged)
    def _status(self, event: ev.OperationStatusChanged, prov: Provenance) -> None:
        system = self._system_for(event)
        system.change_status(status=event.status, reason=event.reason, prov=prov)

    @_handles(ev.HumanOversightAssigned)
    def _assign(self, event: ev.HumanOversightAssigned, prov: Provenance) -> None:
        system = self._system_for(event)
        system.assign_oversight(
            overseer=event.overseer,
            can_override=event.can_override,
            can_stop=event.can_stop,
            prov=prov,
        )

    @_handles(ev.HumanOversightWithdrawn)
    def _withdraw(self, event: ev.HumanOversightWithdrawn, prov: Provenance) -> None:
        system = self._system_for(event)
        system.withdraw_oversight(overseer=event.overseer, reason=event.reason, prov=prov)

    @_handles(ev.LabelingAttested)
    def _label(self, event: ev.LabelingAttested, prov: Provenance) -> None:
        system = self._system_for(event)
        system.attest_labeling(
            content_types=list(event.content_types),
            marking_method=event.marking_method,
            visible_warning=event.visible_warning,
            prov=prov,
        )

    @_handles(ev.AuditCompleted)
    def _audit(self, event: ev.AuditCompleted, prov: Provenance) -> None:
        system = self._system_for(event)
        audit = Audit(
            audit_event_id=event.event_id,
            system_id=system.system_id,
            auditor=event.actor,
            scope=event.scope,
            audited_version_sha256=event.audited_version_sha256,
            result=event.result,
            findings=[msgspec.to_builtins(f) for f in event.findings],
            report_sha256=event.report_sha256,
            valid_until=event.valid_until,
            prov=prov,
        )
        system.record_audit(audit_event_id=event.event_id, result=event.result, prov=prov)
        self._add(audit)

    @_handles(ev.ProhibitedCapabilityFound)
    def _prohibited(self, event: ev.ProhibitedCapabilityFound, prov: Provenance) -> None:
        system = self._system_for(event)
        system.record_prohibited_capability(category=event.category, prov=prov)

    @_handles(ev.InsurancePolicyChanged)
    def _insurance(self, event: ev.InsurancePolicyChanged, prov: Provenance) -> None:
        system = self._system_for(event)
        policy = self.insurance_policy(system.system_id, event.policy_number)
        if policy is None:
            policy = InsurancePolicy(
                system_id=system.system_id,
                policy_number=event.policy_number,
                insurer=event.actor,
                prov=prov,
            )
            self._add(policy)
        policy.change(
            status=event.status,
            start=event.start,
            end=event.end,
            coverage_tenge=event.coverage_tenge,
            prov=prov,
        )
        system.record_insurance(policy_number=event.policy_number, status=event.status, prov=prov)

    @_handles(ev.IncidentReported)
    def _incident(self, event: ev.IncidentReported, prov: Provenance) -> None:
        system = self._system_for(event)
        system.check_new_incident(event.incident_id)
        incident = Incident(
            system_id=system.system_id,
            incident_id=event.incident_id,
            occurred_at=event.occurred_at,
            aware_at=event.aware_at,
            harm_category=event.harm_category,
            severity=event.severity,
            affected_count=event.affected_count,
            description=event.description,
            prov=prov,
        )
        system.record_incident(incident_id=event.incident_id, prov=prov)
        self._add(incident)

    @_handles(ev.PreventiveMeasureTaken)
    def _measure(self, event: ev.PreventiveMeasureTaken, prov: Provenance) -> None:
        system = self._system_for(event)
        incident = None
        if event.incident_id is not None:
            system.check_incident_known(event.incident_id)
            incident = self._get(Incident, Incident.create_id(system.system_id, event.incident_id))
            assert incident is not None
        if incident is not None:
            incident.take_measure(
                measure=event.measure,
                effective_at=event.effective_at,
                description=event.description,
                prov=prov,
            )
        system.record_measure(incident_id=event.incident_id, measure=event.measure, prov=prov)

    @_handles(ev.IncidentClosed)
    def _close(self, event: ev.IncidentClosed, prov: Provenance) -> None:
        system = self._system_for(event)
        system.check_incident_open(event.incident_id)
        incident = self._get(Incident, Incident.create_id(system.system_id, event.incident_id))
        assert incident is not None
        incident.close(resolution=event.resolution, prov=prov)
        system.record_incident_closed(incident_id=event.incident_id, prov=prov)


_missing = set(ev.EVENT_TYPES.values()) - set(_HANDLERS)
if _missing:  # pragma: no cover - a catalogue type without a handler is a programming error
    raise RuntimeError(f"no handler for {sorted(t.__name__ for t in _missing)}")
