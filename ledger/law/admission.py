"""One admission judgement: who may sign what, with which key, at which moment.

The notary refuses a submission, the offline verifier refuses a bundle entry
and the read model's timeline marks an entry for exactly the same reasons,
because all three ask this module. It has two parts:

* :func:`judge` -- a pure function: may ``request.actor``, whose signature
  was made with key ``request.key``, sign ``request.type`` about
  ``request.subject`` when integrated at ``request.at``, given the
  :class:`Facts` the ledger established before that entry? It returns a
  :class:`Judgement`: the role the signer acts in, or the
  :mod:`ledger.law.rejections` class (and so the stable reason code) of the
  first rule broken, with a detail for people.
* :class:`Admission` -- a small state machine fed ledger entries in order
  (:meth:`Admission.apply`): actors with their roles, keys (enrolment,
  rotation with the old key's ``valid_until``, revocation with its
  ``compromised_at``) and suspension, which key belongs to whom, each
  system's owner, holder and status, who issued each insurance policy. It
  is itself :class:`Facts`. The notary keeps the same facts in its
  eventsourcing aggregates (whose key rings are this module's
  :class:`KeyRing`) and passes those instead.

Checks, in order (the first broken one is the judgement): the signer is an
enrolled actor (``unknown_actor``); the signing key is one of its keys
(``unknown_key``, or ``signer_not_actor`` for another actor's key), valid at
the integration time (``key_revoked``, ``key_not_valid``); the signer is not
suspended (``actor_suspended``); the system exists (``system_not_registered``);
the signer's role may sign the type about that subject
(``role_not_allowed``, ``not_system_party``, see :mod:`ledger.law.authority`);
the system is not retired unless the regulator decides
(``system_retired``); then what the entry itself does to actors, keys,
systems and insurance policies (``actor_already_enrolled``,
``unknown_actor``, ``unknown_key``, ``key_revoked``, ``key_not_valid``,
``key_in_use``, ``system_already_registered``, ``not_system_party``,
``party_not_enrolled``, ``not_policy_insurer``, ``policy_not_read``).

:func:`judge_root_quorum` is the one judgement of the regulator's acts that
shape the ledger (the genesis, a ``PolicyAdopted``, an enrolment giving the
regulator role): they need the trust policy's ``root_quorum`` distinct
regulator root keys, valid at the integration time, among the envelope's
signatures (``root_quorum``).

Standard library only (with :mod:`ledger.formats` helpers for key
fingerprints and times): the offline verifier uses it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ledger.formats.dsse import ParsedEnvelope
from ledger.formats.keys import decode_public_key, fingerprint
from ledger.formats.timeutil import format_time, parse_time
from ledger.formats.trust import TrustPolicy
from ledger.law import rejections as errors
from ledger.law.authority import authorize

__all__ = [
    "KEY_CODES",
    "ROOT_ACTS",
    "ActorRecord",
    "Admission",
    "Facts",
    "Judgement",
    "KeyRing",
    "KeyState",
    "Parties",
    "Request",
    "Signer",
    "SystemRecord",
    "judge",
    "judge_root_quorum",
    "needs_root_quorum",
]

#: Reason codes about the signing key or the keys an entry binds (the verifier's
#: ``key`` check); every other refusal is about authority.
KEY_CODES = frozenset(
    {"unknown_key", "signer_not_actor", "key_not_valid", "key_revoked", "key_in_use"}
)

#: The regulator's acts that need ``root_quorum`` root signatures (with an
#: ``ActorEnrolled`` only when it gives the regulator role).
ROOT_ACTS = frozenset({"LedgerGenesis", "PolicyAdopted", "ActorEnrolled"})


# --- keys ----------------------------------------------------------------------


@dataclass
class KeyState:
    """One key of an actor: when it became valid, was rotated out, was compromised."""

    public_key: str
    valid_from: datetime
    valid_until: datetime | None = None
    compromised_at: datetime | None = None

    def status_at(self, t: datetime) -> str:
        """``valid``, ``not_yet``, ``rotated`` or ``revoked`` at integration time ``t``."""
        if self.compromised_at is not None and t >= self.compromised_at:
            return "revoked"
        if t < self.valid_from:
            return "not_yet"
        if self.valid_until is not None and t >= self.valid_until:
            return "rotated"
        return "valid"


def key_fingerprint(public_key: str) -> str:
    """The fingerprint of a base64 public key as it appears in events."""
    return fingerprint(decode_public_key(public_key))


class KeyRing(dict[str, KeyState]):
    """An actor's keys by fingerprint, changed only by enrolment, rotation, revocation.

    ``at`` is always the integration time of the entry making the change.
    """

    def enrol(self, public_keys: Iterable[str], at: datetime) -> None:
        for key in public_keys:
            self[key_fingerprint(key)] = KeyState(key, at)

    def rotate(self, new_key: str, old_key: str, old_valid_until: datetime, at: datetime) -> None:
        old = self[key_fingerprint(old_key)]
        # Not before now (what was signed stays signed), never later than an
        # earlier rotation allowed (a deadline is not extended by rotating again).
        until = max(old_valid_until, at)
        old.valid_until = until if old.valid_until is None else min(old.valid_until, until)
        self[key_fingerprint(new_key)] = KeyState(new_key, at)

    def revoke(self, key: str, compromised_at: datetime, at: datetime) -> datetime:
        """Mark ``key`` compromised; returns the compromise time this revocation claims
        in effect (never after the revocation itself)."""
        state = self[key_fingerprint(key)]
        # Nothing integrated after the revocation itself may use the key,
        # whatever compromise time was claimed; a later revocation cannot move
        # an earlier compromise time.
        effective = min(compromised_at, at)
        state.compromised_at = (
            effective if state.compromised_at is None else min(state.compromised_at, effective)
        )
        return effective

    def status_at(self, key: str, t: datetime) -> str:
        """Like :meth:`KeyState.status_at` for fingerprint ``key``, or ``unknown``."""
        state = self.get(key)
        return "unknown" if state is None else state.status_at(t)


# --- the facts a judgement reads -----------------------------------------------


class Signer(Protocol):
    """An enrolled actor as admission sees it (the notary's ``Actor`` aggregate is one)."""

    @property
    def actor_id(self) -> str: ...
    @property
    def roles(self) -> Collection[str]: ...
    @property
    def keys(self) -> KeyRing: ...
    @property
    def suspended(self) -> bool: ...


class Parties(Protocol):
    """A registered system as admission sees it (the notary's ``AISystem`` is one)."""

    @property
    def owner(self) -> str: ...
    @property
    def holder(self) -> str: ...
    @property
    def status(self) -> str: ...


class Facts(Protocol):
    """What the ledger established before the entry being judged."""

    def actor(self, actor_id: str) -> Signer | None: ...
    def key_owner(self, key_fingerprint: str) -> str | None: ...
    def system(self, system_id: str) -> Parties | None: ...
    def policy_insurer(self, system_id: str, policy_number: str) -> str | None: ...
    def reads_policy(self, policy_id: str) -> bool:
        """Whether the rules read ``policy/<policy_id>``: the genesis rulebook's id only."""
        ...


@dataclass(frozen=True)
class Request:
    """One entry asking to be admitted: the signed event and the key that signed it.

    ``key`` is the fingerprint of the key whose signature verified (or, when no
    known key did, of the envelope's key id); ``fields`` is the payload, as a
    JSON object or as the decoded event (read by attribute). ``index`` is the
    entry's ledger index (only needed for revocations and what they reveal).
    """

    type: str
    actor: str
    subject: str
    key: str
    at: datetime
    fields: object = None
    index: int = -1
    keyid: str = ""

    def get(self, name: str) -> Any:
        if isinstance(self.fields, Mapping):
            return self.fields.get(name)
        return getattr(self.fields, name, None)

    def text(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return str(value)

    def texts(self, name: str) -> list[str]:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return [str(v) for v in value]

    def time(self, name: str) -> datetime:
        value = self.get(name)
        if isinstance(value, datetime):
            return value
        if value is None:
            raise KeyError(name)
        return parse_time(str(value))

    @property
    def subject_id(self) -> str:
        return self.subject.partition("/")[2]


@dataclass(frozen=True)
class Judgement:
    """The role the signer acts in, or the rejection that says why it may not sign."""

    role: str | None = None
    refusal: type[errors.Rejection] | None = None
    detail: str = ""

    @property
    def admitted(self) -> bool:
        return self.refusal is None

    @property
    def code(self) -> str:
        """The reason code of :mod:`ledger.law.rejections`, or ``""`` when admitted."""
        return "" if self.refusal is None else self.refusal.code

    def rejection(self) -> errors.Rejection:
        assert self.refusal is not None, "an admitted request has no rejection"
        return self.refusal(self.detail)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.refusal else f"admitted as {self.role}"


def _refuse(refusal: type[errors.Rejection], detail: str) -> Judgement:
    return Judgement(None, refusal, detail)


# --- the judgement ---------------------------------------------------------------


def judge(facts: Facts, request: Request, *, every_actor_known: bool = True) -> Judgement:
    """May ``request`` be admitted after ``facts``? (Signatures are checked by the caller.)

    ``every_actor_known`` is False where ``facts`` holds only some actors (an
    evidence bundle): then an actor missing from them is no evidence that it
    is not enrolled, and only the checks the facts can decide are made.
    """
    if request.type == "LedgerGenesis":
        for key in request.texts("regulator_keys"):
            if facts.key_owner(key_fingerprint(key)) is not None:
                return _refuse(errors.KeyInUse, f"regulator key {key} is already bound")
        return Judgement("regulator")
    signer = facts.actor(request.actor)
    if signer is None:
        return _refuse(errors.UnknownActor, f"{request.actor} is not an enrolled actor")
    refused = _judge_signing_key(facts, signer, request)
    if refused is not None:
        return refused
    if signer.suspended:
        return _refuse(errors.ActorSuspendedError, f"{signer.actor_id} is suspended")
    kind, _, ident = request.subject.partition("/")
    system: Parties | None = None
    owner = holder = None
    if kind == "system":
        if request.type == "SystemRegistered":
            owner, holder = request.text("owner"), request.text("holder")
        else:
            system = facts.system(ident)
            if system is None:
                return _refuse(errors.SystemNotRegistered, f"system {ident} is not registered")
            owner, holder = system.owner, system.holder
    decision = authorize(
        request.type, signer.actor_id, signer.roles, request.subject, owner=owner, holder=holder
    )
    if decision.role is None:
        refusal = errors.NotSystemParty if decision.kind == "party" else errors.RoleNotAllowed
        return _refuse(refusal, decision.reason)
    if system is not None and decision.role != "regulator" and system.status == "retired":
        return _refuse(errors.SystemRetired, f"system {ident} is retired")
    refused = _judge_effects(facts, request, every_actor_known)
    return refused if refused is not None else Judgement(decision.role)


def needs_root_quorum(request: Request) -> bool:
    """Whether ``request`` is one of the regulator's acts of :data:`ROOT_ACTS`."""
    if request.type not in ROOT_ACTS:
        return False
    return request.type != "ActorEnrolled" or "regulator" in request.texts("roles")


def judge_root_quorum(request: Request, envelope: ParsedEnvelope, trust: TrustPolicy) -> Judgement:
    """Do enough distinct regulator root keys, valid at ``request.at`` under ``trust``,
    sign ``envelope`` (each key counted once)? Admitted for any other act."""
    if not needs_root_quorum(request):
        return Judgement("regulator")
    signed = envelope.signed_by(trust.valid_regulator_keys(request.at))
    if len(signed) < trust.root_quorum:
        return _refuse(
            errors.RootQuorum,
            f"{request.type} needs {trust.root_quorum} regulator root signatures valid at "
            f"{format_time(request.at)}, it has {len(signed)}",
        )
    return Judgement("regulator")


def _judge_signing_key(facts: Facts, signer: Signer, request: Request) -> Judgement | None:
    state = signer.keys.get(request.key)
    if state is None:
        owner = facts.key_owner(request.key)
        if owner is None or owner == signer.actor_id:
            keyid = request.keyid or f"{request.actor}/{request.key}"
            return _refuse(errors.UnknownKey, f"key {keyid!r} is not enrolled")
        return _refuse(
            errors.SignerNotActor,
            f"signed with {owner}'s key {request.key}, but the payload's actor is {request.actor}",
        )
    return _judge_key_state(signer.actor_id, request.key, state, request.at)


def _judge_key_state(actor: str, key: str, state: KeyState, at: datetime) -> Judgement | None:
    status = state.status_at(at)
    if status == "revoked":
        return _refuse(
            errors.KeyRevokedError,
            f"key {actor}/{key} was revoked "
            f"(compromised at {format_time(state.compromised_at or at)})",
        )
    if status != "valid":
        return _refuse(errors.KeyNotValid, f"key {actor}/{key} is {status} at {format_time(at)}")
    return None


def _judge_keys_unbound(facts: Facts, keys: Iterable[str]) -> Judgement | None:
    for key in keys:
        fp = key_fingerprint(key)
        owner = facts.key_owner(fp)
        if owner is not None:
            return _refuse(errors.KeyInUse, f"key {fp} already belongs to {owner}")
    return None


def _judge_effects(facts: Facts, request: Request, every_actor_known: bool) -> Judgement | None:
    """What the entry does to actors, keys and systems must be possible."""
    kind, ident = request.type, request.subject_id
    if kind == "ActorEnrolled":
        if facts.actor(ident) is not None:
            return _refuse(errors.ActorAlreadyEnrolled, f"{ident} is already enrolled")
        return _judge_keys_unbound(facts, request.texts("public_keys"))
    if kind in ("KeyRotated", "KeyRevoked", "ActorSuspended", "ActorReinstated"):
        target = facts.actor(ident)
        if target is None:
            return _refuse(errors.UnknownActor, f"{ident} is not an enrolled actor")
        if kind == "KeyRotated":
            old = key_fingerprint(request.text("old_key"))
            state = target.keys.get(old)
            if state is None:
                return _refuse(errors.UnknownKey, f"key {old} is not a key of {ident}")
            return _judge_key_state(ident, old, state, request.at) or _judge_keys_unbound(
                facts, [request.text("new_key")]
            )
        if kind == "KeyRevoked":
            revoked = key_fingerprint(request.text("key"))
            if revoked not in target.keys:
                return _refuse(errors.UnknownKey, f"key {revoked} is not a key of {ident}")
        return None
    if kind == "PolicyAdopted" and not facts.reads_policy(ident):
        return _refuse(
            errors.PolicyNotRead,
            f"the rules read only the genesis rulebook's policy, not policy/{ident}",
        )
    if kind == "InsurancePolicyChanged":
        number = request.text("policy_number")
        insurer = facts.policy_insurer(ident, number)
        if insurer is not None and insurer != request.actor:
            return _refuse(
                errors.NotPolicyInsurer,
                f"policy {number} of {ident} was issued by {insurer}, not {request.actor}",
            )
        return None
    if kind == "SystemRegistered":
        if facts.system(ident) is not None:
            return _refuse(errors.SystemAlreadyRegistered, f"system {ident} is already registered")
        owner, holder = request.text("owner"), request.text("holder")
        if owner != request.actor:
            return _refuse(
                errors.NotSystemParty,
                f"{request.actor} may register only its own systems, not {owner}'s",
            )
        if holder != owner:
            party = facts.actor(holder)
            known = party is not None or every_actor_known
            if known and (party is None or "holder" not in party.roles):
                return _refuse(
                    errors.PartyNotEnrolled, f"holder {holder} is not enrolled as a holder"
                )
    return None


# --- the state machine ---------------------------------------------------------------


@dataclass
class ActorRecord:
    """An enrolled actor: name, roles, keys, whether suspended."""

    actor_id: str
    legal_name: str
    roles: tuple[str, ...]
    keys: KeyRing = field(default_factory=KeyRing)
    suspended: bool = False


@dataclass
class SystemRecord:
    """A registered system's parties and operation status."""

    owner: str
    holder: str
    status: str = "registered"


class Admission:
    """The facts of :func:`judge`, replayed from ledger entries in order.

    Feed every entry that was admitted with :meth:`apply`, after judging it
    (:meth:`admit` does both). A revocation recorded later may reveal a
    compromise time before an entry that was admitted:
    :meth:`compromise_revealed_later` tells.
    """

    def __init__(self) -> None:
        self.actors: dict[str, ActorRecord] = {}
        self.systems: dict[str, SystemRecord] = {}
        self.bindings: dict[str, str] = {}  # key fingerprint -> actor
        self.insurers: dict[tuple[str, str], str] = {}  # (system, policy number) -> insurer
        self.rulebooks: set[str] = set()  # the genesis rulebook's policy id
        # (actor, key fingerprint) -> [(index of the revocation, compromise time it claims)]
        self._revoked: dict[tuple[str, str], list[tuple[int, datetime]]] = {}

    # Facts

    def actor(self, actor_id: str) -> ActorRecord | None:
        return self.actors.get(actor_id)

    def key_owner(self, key_fingerprint: str) -> str | None:
        return self.bindings.get(key_fingerprint)

    def system(self, system_id: str) -> SystemRecord | None:
        return self.systems.get(system_id)

    def policy_insurer(self, system_id: str, policy_number: str) -> str | None:
        return self.insurers.get((system_id, policy_number))

    def reads_policy(self, policy_id: str) -> bool:
        return policy_id in self.rulebooks

    # the state machine

    def judge(self, request: Request, *, every_actor_known: bool = True) -> Judgement:
        return judge(self, request, every_actor_known=every_actor_known)

    def admit(self, request: Request, *, every_actor_known: bool = True) -> Judgement:
        """Judge ``request``; apply it if admitted (a refused entry leaves no trace)."""
        judgement = self.judge(request, every_actor_known=every_actor_known)
        if judgement.admitted:
            self.apply(request)
        return judgement

    def apply(self, request: Request) -> None:
        """The entry's effects on actors, keys and systems (those that can apply)."""
        kind, ident, at = request.type, request.subject_id, request.at
        if kind == "LedgerGenesis":
            self._enrol(
                request.actor,
                request.text("regulator_name"),
                ("regulator",),
                request.texts("regulator_keys"),
                at,
            )
            policy = request.get("policy")
            policy_id = (
                policy.get("policy_id")
                if isinstance(policy, Mapping)
                else getattr(policy, "policy_id", None)
            )
            if policy_id is not None:
                self.rulebooks.add(str(policy_id))
        elif kind == "ActorEnrolled":
            roles = tuple(request.texts("roles"))
            self._enrol(ident, request.text("legal_name"), roles, request.texts("public_keys"), at)
        elif kind in ("KeyRotated", "KeyRevoked", "ActorSuspended", "ActorReinstated"):
            target = self.actors.get(ident)
            if target is None:
                return
            if kind == "KeyRotated":
                old, new = request.text("old_key"), request.text("new_key")
                if key_fingerprint(old) in target.keys:
                    target.keys.rotate(new, old, request.time("old_key_valid_until"), at)
                    self.bindings.setdefault(key_fingerprint(new), ident)
            elif kind == "KeyRevoked":
                key = request.text("key")
                fp = key_fingerprint(key)
                if fp in target.keys:
                    effective = target.keys.revoke(key, request.time("compromised_at"), at)
                    self._revoked.setdefault((ident, fp), []).append((request.index, effective))
            else:
                target.suspended = kind == "ActorSuspended"
        elif kind == "SystemRegistered":
            if ident not in self.systems:
                self.systems[ident] = SystemRecord(request.text("owner"), request.text("holder"))
        elif kind == "OperationStatusChanged":
            system = self.systems.get(ident)
            if system is not None:
                system.status = request.text("status")
        elif kind == "InsurancePolicyChanged":
            self.insurers.setdefault((ident, request.text("policy_number")), request.actor)

    def _enrol(
        self, actor: str, legal_name: str, roles: tuple[str, ...], keys: list[str], at: datetime
    ) -> None:
        record = ActorRecord(actor, legal_name, roles)
        record.keys.enrol(keys, at)
        self.actors[actor] = record
        for fp in record.keys:
            self.bindings.setdefault(fp, actor)

    def key_status(self, actor: str, key: str, at: datetime) -> str:
        """``valid``, ``not_yet``, ``rotated``, ``revoked`` or ``unknown`` as of now."""
        record = self.actors.get(actor)
        return "unknown" if record is None else record.keys.status_at(key, at)

    def compromise_revealed_later(self, request: Request) -> tuple[int, datetime] | None:
        """A revocation after the admitted ``request`` whose compromise time precedes
        its integration: (index of the revocation, compromise time), if any. The
        revocation of a key signed with that very key stands."""
        revocations = self._revoked.get((request.actor, request.key))
        if not revocations:
            return None
        if request.type == "KeyRevoked":
            try:
                if key_fingerprint(request.text("key")) == request.key:
                    return None
            except (KeyError, ValueError):
                pass
        for revoked_in, compromised in revocations:
            if revoked_in > request.index and compromised <= request.at:
                return revoked_in, compromised
        return None
