"""The DOMAIN.md scenario: months of events, each with its expected outcome.

The story itself is data, ``scenario.toml`` next to this module, decoded into
the typed Structs below; this module places its steps on the timeline and
builds each one into a signed submission. The demo plays it, and the tests play
it and assert every outcome. Times are simulated: the notary's clock is moved
to each step's time before it is submitted, so ``integrated`` follows the story.

Actors: the regulator (from ``ailedger init``); a bank owning a credit-scoring
system (high risk, medium autonomy); the city akimat owning a traffic-signal
optimiser (high risk, high autonomy, critical ICT) operated by the city
transport company as holder; a media company owning a generative news
summariser (medium risk, synthetic content); one auditor; one insurer.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import importlib.resources
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ledger.bus.client import sign_event
from ledger.formats.keys import ActorKey, generate
from ledger.law import events as ev
from ledger.law.rulebook import DEFAULT_PARAMETERS

__all__ = ["START", "Scenario", "Step", "StepSpec", "Story", "Submission", "load_story"]

# --- the data file's types ---------------------------------------------------------------


class _Value(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True):
    """A field value the builder computes (see the comment at the top of scenario.toml)."""


class Day(_Value, tag="day"):
    """The story's start plus ``day`` days and ``hours`` hours."""

    day: float
    hours: float = 0


class Now(_Value, tag="now"):
    """The step's own time."""


class Date(_Value, tag="date"):
    at: datetime


class Sha256Of(_Value, tag="sha256"):
    """A stand-in artifact digest: SHA-256 of a label."""

    of: str


class PublicKeysOf(_Value, tag="public_keys"):
    of: str


class DefaultRulebook(_Value, tag="default_rulebook"):
    """The default rulebook parameters with some changed."""

    changes: dict[str, Any] = {}


Value = str | int | bool | list[Any] | Day | Now | Date | Sha256Of | PublicKeysOf | DefaultRulebook


class _Bad(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True):
    """A deliberately bad submission."""


class Forged(_Bad, tag="forged"):
    """Claims to be the step's actor, signed with a key that is not the actor's."""


class Tampered(_Bad, tag="tampered"):
    """A genuine signature over other bytes than the payload carried."""

    replace: str
    by: str


class ByOutsider(_Bad, tag="by_outsider"):
    """Signed by an actor that was never enrolled."""


class StepSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One step as the data file states it."""

    day: float
    hours: float = 0
    actor: str
    what: str
    type: str
    subject: str
    fields: dict[str, Value] = {}
    signed_ahead_hours: float = 0  # a signer's clock ahead of the notary's
    bad: Forged | Tampered | ByOutsider | None = None
    expect: str = "accepted"  # or the reason code the notary must give

    def __post_init__(self) -> None:
        if self.type not in ev.EVENT_TYPES:
            raise ValueError(f"{self.what}: {self.type} is not an event type of the catalogue")


class Story(msgspec.Struct, forbid_unknown_fields=True):
    start: datetime
    actors: list[str]
    steps: list[StepSpec]


@functools.cache
def load_story() -> Story:
    """The scenario shipped with the package."""
    text = (importlib.resources.files("ailedger") / "scenario.toml").read_bytes()
    return msgspec.toml.decode(text, type=Story)


#: The law is in force from 18 January 2026; the story starts the next morning.
START = load_story().start


# --- building the steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """Signed bytes to submit as they are (used for the deliberately bad ones)."""

    event_id: str
    event_type: str
    envelope: bytes


@dataclass(frozen=True)
class Step:
    """A step of the story placed on the timeline."""

    at: datetime
    spec: StepSpec

    @property
    def actor(self) -> str:
        return self.spec.actor

    @property
    def what(self) -> str:
        return self.spec.what

    @property
    def expect(self) -> str:
        return self.spec.expect


class Scenario:
    """Keys of every actor and the ordered steps of the story."""

    def __init__(
        self, regulator: ActorKey, start: datetime = START, story: Story | None = None
    ) -> None:
        story = story or load_story()
        self.start = start
        self.keys: dict[str, ActorKey] = {"regulator": regulator}
        for actor in story.actors:
            self.keys[actor] = generate(actor)
        self.outsider = generate("outsider")  # never enrolled
        self.steps = [Step(self.at(s.day, s.hours), s) for s in story.steps]

    def at(self, days: float, hours: float = 0) -> datetime:
        return self.start + timedelta(days=days, hours=hours)

    def build(self, step: Step) -> ev.Event | Submission:
        """The step's event, or for a deliberately bad step the bytes to submit."""
        spec = step.spec
        payload = {name: self._value(v, step.at) for name, v in spec.fields.items()}
        event = msgspec.convert(
            {
                "type": spec.type,
                "v": 1,
                "event_id": ev.new_event_id(),
                "actor": spec.actor,
                "subject": spec.subject,
                "signed_at": step.at + timedelta(hours=spec.signed_ahead_hours),
                **payload,
            },
            ev.EVENT_TYPES[spec.type],
        )
        match spec.bad:
            case None:
                return event
            case Forged():
                envelope = sign_event(event, ActorKey(spec.actor, self.outsider.private_key))
                claimed = self.keys[spec.actor].fingerprint.encode()
                envelope = envelope.replace(self.outsider.fingerprint.encode(), claimed)
            case Tampered(replace=old, by=new):
                envelope = sign_event(event, self.keys[spec.actor])
                signed = ev.encode_event(event)
                # Keep the signature, swap the payload for a changed one.
                changed = signed.replace(old.encode(), new.encode())
                envelope = envelope.replace(base64.b64encode(signed), base64.b64encode(changed))
            case ByOutsider():
                envelope = sign_event(event, self.outsider)
        return Submission(event.event_id, event.type_name, envelope)

    def _value(self, value: Value, now: datetime) -> Any:
        match value:
            case Day(day=day, hours=hours):
                return self.at(day, hours)
            case Now():
                return now
            case Date(at=at):
                return at
            case Sha256Of(of=label):
                return hashlib.sha256(label.encode()).hexdigest()
            case PublicKeysOf(of=actor):
                return [self.keys[actor].public_key_b64]
            case DefaultRulebook(changes=changes):
                return {**copy.deepcopy(dict(DEFAULT_PARAMETERS)), **changes}
        return value
