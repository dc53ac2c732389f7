"""The compliance domain model: eventsourcing aggregates named after the law's nouns.

An aggregate changes only when a ledger entry is integrated, and every domain
event carries the :class:`Provenance` of that entry (ledger index, event id,
signer, key fingerprint, ``signed_at``, ``integrated``, subject), so state can
always be traced back to signed evidence.

Guards are named ``check_*`` methods that raise the :mod:`ledger.law.rejections`
rejection of the rule they enforce. Handlers check first and change state
after, so a rejected submission leaves nothing behind.

Each ledger subject has one aggregate holding its chain head (the ``prev`` of
the next entry with that subject): ``ledger/genesis`` -> :class:`LedgerInfo`,
``actor/<id>`` -> :class:`Actor`, ``system/<id>`` -> :class:`AISystem`,
``policy/<id>`` -> :class:`Rulebook`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

import eventsourcing.domain as _es_domain
import msgspec
from eventsourcing.domain import Aggregate, DomainEvent, event
from eventsourcing.persistence import Transcoding

from ledger.formats.timeutil import format_time, parse_time
from ledger.law import rejections as errors
from ledger.law import rulebook
from ledger.law.admission import KeyRing

__all__ = [
    "RECORD_TOPIC",
    "AISystem",
    "Actor",
    "Audit",
    "EventRecord",
    "Incident",
    "InsurancePolicy",
    "KeyBinding",
    "LedgerInfo",
    "Provenance",
    "ProvenanceAsDict",
    "Rulebook",
    "StateAggregate",
    "project",
]

#: Namespace of the name-based (UUID v5) ids of aggregates.
NAMESPACE = UUID("9a3f7c52-4a8e-5b1d-9c0e-2f6d8b7a1e34")


@functools.lru_cache(maxsize=65536)
def _id(name: str) -> UUID:
    return uuid5(NAMESPACE, name)


@functools.lru_cache(maxsize=8192)
def _record_id(event_id: str) -> UUID:
    """An event record's id, remembered apart from :func:`_id`: every event id is
    new, asked for two or three times while its batch is admitted (prefetch,
    admission, record), and must not push the subjects' ids out of that cache."""
    return uuid5(NAMESPACE, f"event/{event_id}")


@functools.lru_cache(maxsize=4096)
def _format_utc(t: datetime) -> str:
    return format_time(t)


#: :func:`parse_time`, remembered likewise (datetimes are immutable: sharing one is safe).
_parse = functools.lru_cache(maxsize=4096)(parse_time)


def _format(t: datetime) -> str:
    """:func:`format_time`, remembered for the few times a batch repeats (every
    event of a batch has its ``integrated``). Only for ``datetime.UTC`` itself:
    an equal instant in another zone is refused by ``format_time`` as before."""
    return _format_utc(t) if t.tzinfo is UTC else format_time(t)


@dataclass(frozen=True)
class Provenance:
    """Where a domain event comes from: one integrated, signed ledger entry."""

    index: int
    event_id: str
    actor: str
    key_fingerprint: str
    signed_at: datetime
    integrated: datetime
    subject: str


class ProvenanceAsDict(Transcoding):
    type = Provenance
    name = "provenance"
    #: Encodes to strings and integers only (see ledger.state.transcoding).
    plain_json = True

    def encode(self, obj: Provenance) -> dict[str, Any]:
        return {
            "index": obj.index,
            "event_id": obj.event_id,
            "actor": obj.actor,
            "key": obj.key_fingerprint,
            "signed_at": _format(obj.signed_at),
            "integrated": _format(obj.integrated),
            "subject": obj.subject,
        }

    def decode(self, data: dict[str, Any]) -> Provenance:
        return Provenance(
            data["index"],
            data["event_id"],
            data["actor"],
            data["key"],
            _parse(data["signed_at"]),
            _parse(data["integrated"]),
            data["subject"],
        )


_SHARED = frozenset({str, int, bool, float, bytes, type(None), datetime, UUID})


def _copied(value: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of an aggregate's attribute, quicker than ``copy.deepcopy``
    for what aggregates hold: immutable values are shared, lists, dicts, key
    rings and dataclasses of immutable values are copied here, anything else
    by ``copy.deepcopy``."""
    t = type(value)
    if t in _SHARED:
        return value
    known = memo.get(id(value))
    if known is not None:
        return known
    new: Any
    if t is list:
        new = memo[id(value)] = []
        if value:
            new.extend([v if type(v) in _SHARED else _copied(v, memo) for v in value])
    elif t is dict or t is KeyRing:
        new = memo[id(value)] = t()
        for k, v in value.items():
            new[k] = v if type(v) in _SHARED else _copied(v, memo)
    elif _plain_dataclass(t) and all(type(v) in _SHARED for v in vars(value).values()):
        new = memo[id(value)] = object.__new__(t)
        new.__dict__.update(vars(value))
    else:
        new = copy.deepcopy(value, memo)
    return new


_PLAIN_DATACLASSES: dict[type, bool] = {}


def _plain_dataclass(t: type) -> bool:
    """A dataclass without slots or copy hooks of its own."""
    plain = _PLAIN_DATACLASSES.get(t)
    if plain is None:
        plain = _PLAIN_DATACLASSES[t] = (
            dataclasses.is_dataclass(t)
            and not hasattr(t, "__slots__")
            and not any(
                h in vars(c)
                for c in t.__mro__[:-1]
                for h in ("__deepcopy__", "__reduce__", "__reduce_ex__", "__getstate__")
            )
        )
    return plain


def project(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its assertion that each event
    is a ``CanMutateProtocol``: an ``isinstance`` against a runtime Protocol, which
    cost more than decoding and applying the event (every aggregate loaded from the
    store, event by event). A command event whose class has a plan
    (:func:`_event_plan`) calls its ``@event`` method directly, as
    :meth:`StateAggregate.trigger_event` does; any other event mutates as usual."""
    for domain_event in events:
        plan = _EVENT_PLANS.get(type(domain_event), _UNPLANNED)
        if plan is _UNPLANNED:
            plan = _event_plan(type(domain_event))
        d = domain_event.__dict__ if plan is not None else None
        if (
            d is not None
            and aggregate is not None
            and d["originator_id"] == aggregate._id
            and d["originator_version"] == aggregate._version + 1
        ):
            names, method = plan
            method(aggregate, **{name: d[name] for name in names})
            aggregate._version = d["originator_version"]
            aggregate._modified_on = d["timestamp"]
        else:
            aggregate = domain_event.mutate(aggregate)
    return aggregate


_UNPLANNED: Any = object()


class StateAggregate(Aggregate):
    """The aggregates of the state: copied quickly. The repository hands out a
    deep copy of a cached aggregate for every batch that touches it (the
    overlay's changes must not reach the cache before they are recorded), and
    ``copy.deepcopy``'s generic path was most of the cost of a batch touching
    many subjects. tests/test_perf_state.py checks that a copy shares nothing
    mutable with its original."""

    def __deepcopy__(self, memo: dict[int, Any]) -> StateAggregate:
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(
            {k: v if type(v) in _SHARED else _copied(v, memo) for k, v in self.__dict__.items()}
        )
        return new

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        """``Aggregate.trigger_event`` without the frozen dataclass's ``__init__``
        (one ``object.__setattr__`` per field) and without the generic ``mutate``
        and ``apply`` (which copy and filter the event's fields again): the
        event's ``__dict__`` is built in its fields' order, as that ``__init__``
        and eventsourcing's ``Mapper`` build it, the decorated method is called
        with the same arguments, then version and time are set as ``mutate``
        sets them. The same event, aggregate and stored bytes
        (tests/test_perf_state.py compares the two). Anything unusual (an event
        class with a default, a post-init, its own ``apply`` or ``mutate``, a
        ``timestamp`` given) takes eventsourcing's own path."""
        plan = _event_plan(event_class)
        if (
            plan is None
            or len(kwargs) != len(plan[0])
            or "timestamp" in kwargs
            or type(self._id) is not UUID
        ):
            super().trigger_event(event_class, **kwargs)
            return
        names, method = plan
        version = self._version + 1
        timestamp = event_class.create_timestamp()
        state = {"originator_id": self._id, "originator_version": version, "timestamp": timestamp}
        try:
            for name in names:
                state[name] = kwargs[name]
        except KeyError:
            super().trigger_event(event_class, **kwargs)
            return
        new_event = object.__new__(event_class)
        object.__setattr__(new_event, "__dict__", state)
        method(self, **kwargs)  # what DecoratedFuncCaller.apply calls; may raise
        self._version = version
        self._modified_on = timestamp
        self._pending_events.append(new_event)


_EVENT_PLANS: dict[type, tuple[tuple[str, ...], Any] | None] = {}
_BASE_FIELDS = ("originator_id", "originator_version", "timestamp")
_UUID_CHECK = DomainEvent.__post_init__


def _event_plan(event_class: type) -> tuple[tuple[str, ...], Any] | None:
    """For an event class of an ``@event`` command method whose dataclass
    ``__init__`` only assigns its fields (no defaults, no post-init but
    eventsourcing's check that the aggregate id is a UUID) and whose ``mutate``
    and ``apply`` are eventsourcing's: its fields after the three every event has,
    and the decorated method. Else None."""
    try:
        return _EVENT_PLANS[event_class]
    except KeyError:
        pass
    plan: tuple[tuple[str, ...], Any] | None = None
    method = _es_domain.decorated_funcs.get(event_class)
    post_init = getattr(event_class, "__post_init__", None)
    if (
        method is not None
        and dataclasses.is_dataclass(event_class)
        and post_init in (None, _UUID_CHECK)
        and getattr(event_class, "mutate", None) is _es_domain.CanMutateAggregate.mutate
        and all(
            c in (_es_domain.DecoratedFuncCaller, _es_domain.CanMutateAggregate)
            for c in event_class.__mro__
            if "apply" in vars(c) or "mutate" in vars(c)
        )
    ):
        fields = dataclasses.fields(event_class)
        plain = all(
            f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in fields
        )
        names = tuple(f.name for f in fields[3:])
        params = list(inspect.signature(method).parameters)
        if (
            plain
            and tuple(f.name for f in fields[:3]) == _BASE_FIELDS
            and params[1:] == list(names)
        ):
            plan = (names, method)
    _EVENT_PLANS[event_class] = plan
    return plan


class SubjectAggregate(StateAggregate):
    """An aggregate that owns a ledger subject and so its ``prev`` chain."""

    # Declared for type checkers only: eventsourcing would take class-level
    # annotations for constructor arguments.
    if TYPE_CHECKING:
        subject: str
        chain_head: int | None

    def _start(self, subject: str, prov: Provenance) -> None:
        self.subject = subject
        self.chain_head = None
        self._track(prov)

    def _track(self, prov: Provenance) -> None:
        if prov.subject == self.subject:
            self.chain_head = prov.index


# --- the ledger itself -----------------------------------------------------


class LedgerInfo(SubjectAggregate):
    """What the genesis entry established."""

    @staticmethod
    def create_id() -> UUID:
        return _id("ledger/genesis")

    @event("Genesis")
    def __init__(
        self,
        origin: str,
        regulator: str,
        notary_keys: list[str],
        witness_keys: list[str],
        witness_quorum: int,
        prov: Provenance,
    ) -> None:
        self._start("ledger/genesis", prov)
        self.origin = origin
        self.notary_keys = list(notary_keys)


# --- actors and their keys -------------------------------------------------


class Actor(SubjectAggregate):
    """An enrolled actor: roles and the keys it signs with, over time."""

    @staticmethod
    def create_id(actor_id: str) -> UUID:
        return _id(f"actor/{actor_id}")

    @event("Enrolled")
    def __init__(
        self,
        actor_id: str,
        legal_name: str,
        bin: str,
        roles: list[str],
        public_keys: list[str],
        prov: Provenance,
    ) -> None:
        self._start(f"actor/{actor_id}", prov)
        self.actor_id = actor_id
        self.roles = list(roles)
        self.keys = KeyRing()
        self.keys.enrol(public_keys, prov.integrated)
        self.suspended = False

    @event("KeyRotated")
    def rotate_key(
        self, new_key: str, old_key: str, old_key_valid_until: datetime, prov: Provenance
    ) -> None:
        self.keys.rotate(new_key, old_key, old_key_valid_until, prov.integrated)
        self._track(prov)

    @event("KeyRevoked")
    def revoke_key(self, key: str, compromised_at: datetime, reason: str, prov: Provenance) -> None:
        self.keys.revoke(key, compromised_at, prov.integrated)
        self._track(prov)

    @event("Suspended")
    def suspend(self, reason: str, prov: Provenance) -> None:
        self.suspended = True
        self._track(prov)

    @event("Reinstated")
    def reinstate(self, reason: str, prov: Provenance) -> None:
        self.suspended = False
        self._track(prov)


class KeyBinding(StateAggregate):
    """A public key belongs to exactly one actor, for ever."""

    @staticmethod
    def create_id(key_fingerprint: str) -> UUID:
        return _id(f"key/{key_fingerprint}")

    @event("Bound")
    def __init__(
        self, key_fingerprint: str, public_key: str, actor_id: str, prov: Provenance
    ) -> None:
        self.public_key = public_key
        self.actor_id = actor_id


# --- the rulebook ----------------------------------------------------------


class Rulebook(SubjectAggregate, rulebook.Rulebook):
    """The ``policy/<id>`` subject: the one :class:`ledger.law.rulebook.Rulebook`,
    kept as the regulator's adoptions are admitted."""

    @staticmethod
    def create_id(policy_id: str) -> UUID:
        return _id(f"policy/{policy_id}")

    @event("Created")
    def __init__(self, policy_id: str, prov: Provenance) -> None:
        self._start(f"policy/{policy_id}", prov)
        self.policy_id = policy_id
        self.versions = []

    @event("Adopted")
    def adopt(
        self,
        title: str,
        effective_from: datetime,
        parameters: dict[str, Any],
        legal_references: list[str],
        prov: Provenance,
    ) -> None:
        self.add(
            rulebook.PolicyVersion(
                self.policy_id,
                effective_from,
                parameters,
                prov.index,
                title,
                tuple(legal_references),
            )
        )
        self._track(prov)

    @staticmethod
    def check_not_retroactive(effective_from: datetime, at: datetime) -> None:
        if effective_from < at:
            raise errors.PolicyRetroactive(
                f"effective_from {format_time(effective_from)} is before its integration "
                f"{format_time(at)}: a policy cannot change the past"
            )


# --- AI systems ------------------------------------------------------------


class AISystem(SubjectAggregate):
    """An AI system in the national register (Arts. 17, 21)."""

    @staticmethod
    def create_id(system_id: str) -> UUID:
        return _id(f"system/{system_id}")

    @event("Registered")
    def __init__(
        self,
        system_id: str,
        name: str,
        purpose: str,
        sector: str,
        owner: str,
        holder: str,
        generates_synthetic_content: bool,
        prov: Provenance,
    ) -> None:
        self._start(f"system/{system_id}", prov)
        self.system_id = system_id
        self.owner = owner
        self.holder = holder
        self.status = "registered"
        self.deployed_version: str | None = None
        self.incidents: dict[str, bool] = {}  # incident id -> closed

    @event("RiskClassified")
    def classify(
        self, risk_level: str, autonomy: str, critical_ict: bool, rationale: str, prov: Provenance
    ) -> None:
        self._track(prov)

    @event("VersionDeployed")
    def deploy_version(self, version: str, artifact_sha256: str, prov: Provenance) -> None:
        self.deployed_version = version
        self._track(prov)

    @event("OperationStatusChanged")
    def change_status(self, status: str, reason: str, prov: Provenance) -> None:
        self.status = status
        self._track(prov)

    @event("HumanOversightAssigned")
    def assign_oversight(
        self, overseer: str, can_override: bool, can_stop: bool, prov: Provenance
    ) -> None:
        self._track(prov)

    @event("HumanOversightWithdrawn")
    def withdraw_oversight(self, overseer: str, reason: str, prov: Provenance) -> None:
        self._track(prov)

    @event("LabelingAttested")
    def attest_labeling(
        self, content_types: list[str], marking_method: str, visible_warning: bool, prov: Provenance
    ) -> None:
        self._track(prov)

    @event("AuditRecorded")
    def record_audit(self, audit_event_id: str, result: str, prov: Provenance) -> None:
        self._track(prov)

    @event("ProhibitedCapabilityRecorded")
    def record_prohibited_capability(self, category: str, prov: Provenance) -> None:
        self._track(prov)

    @event("InsuranceRecorded")
    def record_insurance(self, policy_number: str, status: str, prov: Provenance) -> None:
        self._track(prov)

    @event("IncidentRecorded")
    def record_incident(self, incident_id: str, prov: Provenance) -> None:
        self.incidents[incident_id] = False
        self._track(prov)

    @event("MeasureRecorded")
    def record_measure(self, incident_id: str | None, measure: str, prov: Provenance) -> None:
        self._track(prov)

    @event("IncidentClosureRecorded")
    def record_incident_closed(self, incident_id: str, prov: Provenance) -> None:
        self.incidents[incident_id] = True
        self._track(prov)

    # guards

    def check_new_incident(self, incident_id: str) -> None:
        if incident_id in self.incidents:
            raise errors.DuplicateIncident(
                f"incident {incident_id} of system {self.system_id} was already reported"
            )

    def check_incident_known(self, incident_id: str) -> None:
        if incident_id not in self.incidents:
            raise errors.UnknownIncident(f"system {self.system_id} has no incident {incident_id!r}")

    def check_incident_open(self, incident_id: str) -> None:
        self.check_incident_known(incident_id)
        if self.incidents[incident_id]:
            raise errors.IncidentAlreadyClosed(f"incident {incident_id} is already closed")


class Incident(StateAggregate):
    """A reported incident and the preventive measures taken for it."""

    @staticmethod
    def create_id(system_id: str, incident_id: str) -> UUID:
        return _id(f"incident/{system_id}/{incident_id}")

    @event("Reported")
    def __init__(
        self,
        system_id: str,
        incident_id: str,
        occurred_at: datetime,
        aware_at: datetime,
        harm_category: str,
        severity: str,
        affected_count: int,
        description: str,
        prov: Provenance,
    ) -> None:
        pass

    @event("MeasureTaken")
    def take_measure(
        self, measure: str, effective_at: datetime, description: str, prov: Provenance
    ) -> None:
        pass

    @event("Closed")
    def close(self, resolution: str, prov: Provenance) -> None:
        pass


class Audit(StateAggregate):
    """One completed audit by an accredited auditor (Art. 20)."""

    @staticmethod
    def create_id(audit_event_id: str) -> UUID:
        return _id(f"audit/{audit_event_id}")

    @event("Completed")
    def __init__(
        self,
        audit_event_id: str,
        system_id: str,
        auditor: str,
        scope: str,
        audited_version_sha256: str,
        result: str,
        findings: list[dict[str, str]],
        report_sha256: str,
        valid_until: datetime,
        prov: Provenance,
    ) -> None:
        pass


class InsurancePolicy(StateAggregate):
    """A liability insurance policy of one system, as its insurer reported it."""

    @staticmethod
    def create_id(system_id: str, policy_number: str) -> UUID:
        return _id(f"insurance/{system_id}/{policy_number}")

    @event("Opened")
    def __init__(self, system_id: str, policy_number: str, insurer: str, prov: Provenance) -> None:
        self.insurer = insurer

    @event("Changed")
    def change(
        self, status: str, start: datetime, end: datetime, coverage_tenge: int, prov: Provenance
    ) -> None:
        pass


class _FastCommand:
    """An ``@event`` command method of a state aggregate, called without
    eventsourcing's per-call binding: ``aggregate.deploy_version(version=...,
    prov=...)`` makes a ``BoundCommandMethodDecorator``, copies its arguments into a
    dict (``_coerce_args_to_kwargs``), filters them by the event class's signature
    (``filter_kwargs_for_method_params``) and calls ``trigger_event(event_class,
    **kwargs)``; called with exactly the event's fields as keywords (how
    :mod:`ledger.state.recording` calls them) the copying and filtering change
    nothing, so this calls ``trigger_event`` straight away (8 % of a replay). Any
    other call (positional arguments, other keywords) goes through eventsourcing's
    own binding. On the class the attribute is still eventsourcing's decorator."""

    def __init__(self, decorator: Any, event_class: type, names: tuple[str, ...]) -> None:
        self.decorator = decorator
        self.event_class = event_class
        self.names = frozenset(names)

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self.decorator
        return functools.partial(self._call, obj)

    def _call(self, obj: StateAggregate, *args: Any, **kwargs: Any) -> None:
        if not args and kwargs.keys() == self.names:
            obj.trigger_event(self.event_class, **kwargs)
        else:
            self.decorator.__get__(obj, type(obj))(*args, **kwargs)


def _fast_commands(*classes: type[StateAggregate]) -> None:
    """Each ``@event`` command method of ``classes`` whose event has a plan
    (:func:`_event_plan`) as a :class:`_FastCommand`."""
    for cls in classes:
        for name in dir(cls):
            if name.startswith("__"):
                continue
            decorator = inspect.getattr_static(cls, name)
            if not isinstance(decorator, _es_domain.CommandMethodDecorator):
                continue
            event_class = _es_domain.decorated_func_callers.get(decorator)
            plan = _event_plan(event_class) if isinstance(event_class, type) else None
            if event_class is not None and plan is not None:
                setattr(cls, name, _FastCommand(decorator, event_class, plan[0]))


_fast_commands(LedgerInfo, Actor, KeyBinding, Rulebook, AISystem, Incident, Audit, InsurancePolicy)


class EventRecord:
    """Which ledger entry carries an event id: answers duplicates with the same receipt.

    Not an aggregate: a fact recorded once, never changed, read only to answer
    a duplicate. It is stored as one row of the state's events table (version 1
    of its name-based id, topic :data:`RECORD_TOPIC`, plain JSON without
    eventsourcing's timestamp), written and read here without eventsourcing's
    domain-event machinery, which cost as much as recording the entry's own
    aggregate event."""

    __slots__ = ("envelope_sha256", "event_id", "id", "index", "integrated", "leaf_hash", "subject")

    def __init__(
        self,
        event_id: str,
        index: int,
        subject: str,
        integrated: datetime,
        leaf_hash: str,
        envelope_sha256: str,
        *,
        record_id: UUID | None = None,
    ) -> None:
        self.id = record_id if record_id is not None else self.create_id(event_id)
        self.event_id = event_id
        self.index = index
        self.subject = subject
        self.integrated = integrated
        self.leaf_hash = leaf_hash
        self.envelope_sha256 = envelope_sha256

    @staticmethod
    def create_id(event_id: str) -> UUID:
        # Name-based like every other aggregate id: a submitter choosing its
        # event id cannot make it collide with another aggregate's id.
        return _record_id(event_id)

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is EventRecord and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __copy__(self) -> EventRecord:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> EventRecord:
        return self

    def mutate(self, aggregate: object) -> EventRecord:
        """As a domain event projects into its aggregate: a record is its own state
        (what :func:`project` makes of its one stored row)."""
        return self

    def __repr__(self) -> str:
        return f"EventRecord({self.event_id!r}, index={self.index})"

    def stored_state(self) -> bytes:
        """The row's state: compact JSON, keys in this order."""
        return _RECORD_JSON.encode(
            {
                "event_id": self.event_id,
                "index": self.index,
                "subject": self.subject,
                "integrated": _format(self.integrated),
                "leaf_hash": self.leaf_hash,
                "envelope_sha256": self.envelope_sha256,
            }
        )

    @classmethod
    def from_stored(cls, record_id: UUID, state: bytes) -> EventRecord:
        d = _RECORD_JSON_DECODER.decode(state)
        return cls(
            d["event_id"],
            d["index"],
            d["subject"],
            _parse(d["integrated"]),
            d["leaf_hash"],
            d["envelope_sha256"],
            record_id=record_id,
        )


#: The topic of an event record's row (the module's path, as eventsourcing's topics).
RECORD_TOPIC = f"{__name__}:EventRecord"
_RECORD_JSON = msgspec.json.Encoder()
_RECORD_JSON_DECODER = msgspec.json.Decoder()
