"""The rulebook: every version of the rules' parameters the regulator adopted,
each in force from its ``effective_from`` on (DOMAIN.md: "every legal parameter
is data").

There is one rulebook class. The rule engine (:mod:`ledger.law.rules`) builds
it from ledger facts with :meth:`Rulebook.from_facts`; the state's
``policy/<id>`` aggregate (:class:`ledger.state.domain.Rulebook`) is one, kept
up to date as policies are admitted. A new ledger's genesis starts it with
:data:`DEFAULT_PARAMETERS`.

Standard library only at import time: the offline verifier uses this module
through the rule engine. :func:`default_parameters` and :func:`default_policy`,
which give the defaults as the event catalogue's Structs, import msgspec when
called.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from ledger.formats.timeutil import parse_time
from ledger.law import payloads as pl

if TYPE_CHECKING:
    from ledger.law import events as ev

__all__ = [
    "DEFAULT_PARAMETERS",
    "DEFAULT_POLICY_ID",
    "PolicyVersion",
    "Rulebook",
    "default_parameters",
    "default_policy",
]

#: The id of a new ledger's rulebook: its later versions are ``policy/rulebook`` entries.
DEFAULT_POLICY_ID: Final = "rulebook"

#: The parameters of a new ledger's first rulebook version (DOMAIN.md defaults),
#: as the JSON data a ``RulebookParameters`` payload carries.
DEFAULT_PARAMETERS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "insurance_required_levels": ["high"],
        "audit_required_levels": ["high"],
        "audit_validity_days": 365,
        "oversight_required_levels": ["high"],
        "oversight_required_autonomy": ["high"],
        "preventive_measure_hours": 24,
        "preventive_measure_hours_serious": 4,
        "report_hours": 48,
        "report_hours_death": 240,
        "legal_basis": {
            "R1": "Law No. 230-VIII, Art. 17(1): AI systems are classified by risk level",
            "R2": "Law No. 230-VIII as amended by the Senate: mandatory liability insurance",
            "R3": "Law No. 230-VIII, Arts. 19-20; Ministry order on AI audits of 26 Feb 2026",
            "R4": "Law No. 230-VIII, Art. 17(2): no fully autonomous system without human "
            "oversight",
            "R5": "Law No. 230-VIII as amended by the Senate: immediate preventive measures",
            "R6": "EU AI Act Art. 73(2)-(4), the reference for incident reporting deadlines",
            "R7": "Law No. 230-VIII, Art. 17(3): prohibited AI capabilities",
            "R8": "Law No. 230-VIII, Art. 21: labelling of synthetic content",
        },
    }
)


def default_parameters(**changes: Any) -> ev.RulebookParameters:
    """The default parameters as the catalogue's Struct, with ``changes`` applied."""
    import msgspec

    from ledger.law import events as ev

    data = {**copy.deepcopy(dict(DEFAULT_PARAMETERS)), **changes}
    return msgspec.convert(data, ev.RulebookParameters)


def default_policy(effective_from: datetime) -> ev.Policy:
    """The policy a new ledger's genesis adopts."""
    from ledger.law import events as ev

    return ev.Policy(
        policy_id=DEFAULT_POLICY_ID,
        title="Rulebook v1: defaults of Law No. 230-VIII",
        effective_from=effective_from,
        parameters=default_parameters(),
        legal_references=[
            "Law of the Republic of Kazakhstan No. 230-VIII 'On Artificial Intelligence' "
            "of 17 Nov 2025"
        ],
    )


@dataclass(frozen=True)
class PolicyVersion:
    """One adopted version of the rulebook."""

    policy_id: str
    effective_from: datetime
    parameters: Mapping[str, Any]
    index: int  # the ledger entry that adopted it
    title: str = ""
    legal_references: tuple[str, ...] = ()

    @property
    def params(self) -> pl.RulebookParameters:
        """The parameters, typed."""
        return cast("pl.RulebookParameters", self.parameters)

    def basis(self, rule: str) -> str:
        return str(self.parameters.get("legal_basis", {}).get(rule, "not stated in the rulebook"))


class FactLike(Protocol):
    """What :meth:`Rulebook.from_facts` reads of a ledger fact (:class:`ledger.law.rules.Fact`)."""

    @property
    def index(self) -> int: ...
    @property
    def subject(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


class Rulebook:
    """Every version of the rulebook adopted up to some point, each from its date on."""

    def __init__(self, versions: Iterable[PolicyVersion] = ()) -> None:
        self.versions: list[PolicyVersion] = sorted(versions, key=_order)

    @classmethod
    def from_facts(cls, facts: Iterable[FactLike]) -> Rulebook:
        """The rulebook the genesis and its policy's ``PolicyAdopted`` entries set."""
        versions: list[PolicyVersion] = []
        policy_id: str | None = None
        for f in sorted(facts, key=lambda f: f.index):
            if f.type == "LedgerGenesis":
                policy = f.payload["policy"]
                policy_id = str(policy["policy_id"])
                versions.append(
                    PolicyVersion(
                        policy_id,
                        parse_time(str(policy["effective_from"])),
                        policy["parameters"],
                        f.index,
                    )
                )
            elif f.type == "PolicyAdopted" and f.subject == f"policy/{policy_id}":
                versions.append(
                    PolicyVersion(
                        f.subject.partition("/")[2],
                        parse_time(str(f.payload["effective_from"])),
                        f.payload["parameters"],
                        f.index,
                    )
                )
        if not versions:
            raise ValueError("no rulebook: the genesis entry is missing")
        return cls(versions)

    def add(self, version: PolicyVersion) -> None:
        self.versions.append(version)
        self.versions.sort(key=_order)

    def in_force(self, at: datetime) -> PolicyVersion:
        """The version in force at ``at`` (the first one, before any is effective)."""
        current = self.versions[0]
        for v in self.versions:
            if v.effective_from <= at:
                current = v
        return current

    def required_since(self, at: datetime, requires: Callable[[PolicyVersion], bool]) -> datetime:
        """Since when the versions in force have required it, without a break, up to ``at``."""
        since: datetime | None = None
        for v in self.versions:
            if v.effective_from > at:
                break
            if not requires(v):
                since = None
            elif since is None:
                since = v.effective_from
        return since if since is not None else at

    def adoption_starting(self, since: datetime) -> int | None:
        """The index of the adoption (not the genesis) that took effect at ``since``, if any:
        cited as evidence when it is what made an obligation start."""
        for v in self.versions[1:]:
            if v.effective_from == since:
                return v.index
        return None


def _order(v: PolicyVersion) -> tuple[datetime, int]:
    return (v.effective_from, v.index)
