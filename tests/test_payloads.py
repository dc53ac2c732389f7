"""The rule engine's typed payload views (ledger.law.payloads) against the event
catalogue's Structs (ledger.law.events): same field names, JSON types, literals
and required fields, so the views cannot drift from what the notary admits."""

from __future__ import annotations

import types
from datetime import datetime
from typing import (
    Annotated,
    Literal,
    NotRequired,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

import msgspec
import pytest

from ailedger.resources import example
from ledger.law import events as ev
from ledger.law import payloads as pl
from ledger.law.rulebook import DEFAULT_PARAMETERS
from ledger.law.rules import RULES

VIEWS = [v for v in vars(pl).values() if is_typeddict(v)]


def json_shape(t: object) -> object:
    """What ``t`` looks like as JSON: the comparison key of a view's and a Struct's field."""
    origin, args = get_origin(t), get_args(t)
    if origin in (Annotated, NotRequired):
        return json_shape(args[0])
    if t is pl.Time or t is datetime:
        return "time"
    if t in (str, int, bool, type(None)):
        return t
    if origin is Literal:
        return ("literal", frozenset(args))
    if origin is list:
        return ("list", json_shape(args[0]))
    if origin is dict:
        return ("dict", json_shape(args[0]), json_shape(args[1]))
    if origin in (Union, types.UnionType):
        return ("union", frozenset(json_shape(a) for a in args))
    if isinstance(t, type) and (is_typeddict(t) or issubclass(t, msgspec.Struct)):
        return ("object", t.__name__)  # compared field by field as its own pair
    raise TypeError(f"no JSON shape for {t!r}")


def drift(view: type, struct: type[msgspec.Struct]) -> list[str]:
    """How ``view`` differs from ``struct``, in words; empty when it is a faithful subset."""
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    view_types = get_type_hints(view, include_extras=True)
    struct_types = get_type_hints(struct, include_extras=True)
    out = []
    for name, t in view_types.items():
        if name not in fields:
            out.append(f"{view.__name__}.{name}: no such field in {struct.__name__}")
            continue
        if json_shape(t) != json_shape(struct_types[name]):
            out.append(
                f"{view.__name__}.{name}: {json_shape(t)} but {struct.__name__} has "
                f"{json_shape(struct_types[name])}"
            )
        # (not __required_keys__: it misses NotRequired in postponed annotations)
        required = get_origin(t) is not NotRequired
        if required != fields[name].required:
            out.append(f"{view.__name__}.{name}: required={required}, unlike {struct.__name__}")
    return out


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_each_view_matches_the_struct_of_its_name(view: type) -> None:
    assert drift(view, getattr(ev, view.__name__)) == []


def test_the_drift_check_catches_drift() -> None:
    class RiskClassified(TypedDict):  # every way a view can drift
        risk_level: Literal["low", "high"]
        autonomy: NotRequired[pl.Autonomy]
        critical_ict: str
        rationale_text: str

    found = drift(RiskClassified, ev.RiskClassified)
    assert [line.split(":")[0] for line in found] == [
        "RiskClassified.risk_level",
        "RiskClassified.autonomy",
        "RiskClassified.critical_ict",
        "RiskClassified.rationale_text",
    ]


@pytest.mark.parametrize(
    "view", [v for v in VIEWS if v.__name__ in ev.EVENT_TYPES], ids=lambda v: v.__name__
)
def test_each_view_reads_the_published_example(view: type) -> None:
    msgspec.json.decode(example(view.__name__), type=view)


def test_the_literals_are_the_catalogues() -> None:
    for name in ("RiskLevel", "Autonomy", "RuleId"):
        assert get_args(getattr(pl, name)) == get_args(getattr(ev, name)), name


def test_the_rules_table_has_one_rule_per_id_named_after_it() -> None:
    assert list(RULES) == list(get_args(ev.RuleId)) == list(DEFAULT_PARAMETERS["legal_basis"])
    for rule_id, rule in RULES.items():
        assert rule.__name__.startswith(f"{rule_id.lower()}_"), rule.__name__
        assert rule.__doc__, f"{rule_id} names its legal basis"
