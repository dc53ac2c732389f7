"""The DOMAIN.md scenario as data (ailedger/scenario.toml): it decodes strictly,
every step builds into an event of the catalogue, and the bad submissions are
bad in the way they claim. (Played end to end in test_rules.py and by the demo.)"""

from __future__ import annotations

import msgspec
import pytest

from ailedger.scenario import START, Scenario, Submission, Tampered, load_story
from ledger.formats.dsse import parse_envelope
from ledger.formats.keys import generate
from ledger.law import events as ev
from ledger.law.rejections import REASON_CODES


def test_every_step_builds_an_event_of_the_catalogue_at_its_time() -> None:
    scenario = Scenario(generate("regulator"))
    assert [s.at for s in scenario.steps] == sorted(s.at for s in scenario.steps)
    assert scenario.steps[0].at > START
    for step in scenario.steps:
        made = scenario.build(step)
        event = made if isinstance(made, ev.Event) else None
        if isinstance(made, Submission):
            assert step.spec.bad is not None
            event = ev.decode_event(parse_envelope(made.envelope).payload)
            assert (made.event_id, made.event_type) == (event.event_id, event.type_name)
        assert event is not None and event.type_name == step.spec.type
        assert (event.actor, event.subject) == (step.actor, step.spec.subject)
        assert step.expect == "accepted" or step.expect in REASON_CODES, step.what


def test_the_bad_submissions_are_bad_as_named() -> None:
    scenario = Scenario(generate("regulator"))
    bad = {s.spec.bad.__class__.__name__: s for s in scenario.steps if s.spec.bad is not None}
    assert set(bad) == {"Forged", "Tampered", "ByOutsider"}

    forged = scenario.build(bad["Forged"])
    assert isinstance(forged, Submission)
    claimed = parse_envelope(forged.envelope).keyid_fingerprint
    assert claimed == scenario.keys[bad["Forged"].actor].fingerprint

    tampered_step = bad["Tampered"]
    assert isinstance(tampered_step.spec.bad, Tampered)
    tampered = scenario.build(tampered_step)
    assert isinstance(tampered, Submission)
    assert tampered_step.spec.bad.by.encode() in parse_envelope(tampered.envelope).payload

    outsider = scenario.build(bad["ByOutsider"])
    assert isinstance(outsider, Submission)
    assert parse_envelope(outsider.envelope).keyid_fingerprint == scenario.outsider.fingerprint


def test_the_data_file_is_decoded_strictly() -> None:
    story = msgspec.to_builtins(load_story())
    story["steps"][0]["colour"] = "blue"
    with pytest.raises(msgspec.ValidationError, match="colour"):
        msgspec.convert(story, type(load_story()))
    story["steps"][0].pop("colour")
    story["steps"][0]["type"] = "ActorPromoted"
    with pytest.raises(msgspec.ValidationError, match="not an event type"):
        msgspec.convert(story, type(load_story()))
