"""Issue 9, the verifier and the rules: malformed numbers, freshness, key windows,
``integrated`` inside a bundle, m-of-n regulator roots, policies the rules read."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest

from ledger.bus.client import LedgerClient, SubmissionRejected, sign_event
from ledger.bus.home import Home
from ledger.bus.natsserver import EmbeddedNats
from ledger.formats import strictjson
from ledger.formats.dsse import sign_envelope
from ledger.formats.keys import ActorKey
from ledger.formats.trust import TrustError, TrustPolicy
from ledger.law import events as ev
from tests.conftest import Harness, now, registration_fields, running_notary

HUGE = b"1" * 5000


def registration(key: ActorKey, system: str, **kw: object) -> ev.SystemRegistered:
    fields = {"v": 1, "event_id": ev.new_event_id(), "actor": key.actor, "signed_at": now()}
    fields |= registration_fields(key.actor, system, name="Scorer", purpose="credit scoring")
    fields |= kw
    return ev.SystemRegistered(**fields)


async def rejected(client: LedgerClient, data: bytes, event_type: str) -> str:
    with pytest.raises(SubmissionRejected) as r:
        await client.submit_envelope(data, ev.new_event_id(), event_type, timeout=20)
    return r.value.code


# --- numbers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": ' + HUGE + b"}",
        b"[-" + HUGE + b"]",
        b"[18446744073709551616]",  # 2**64
        b"[-9223372036854775809]",  # -(2**63) - 1
        b"[000000000000000000000001]",
    ],
)
def test_integers_beyond_64_bits_are_malformed_json_not_a_conversion_error(data: bytes) -> None:
    with pytest.raises(strictjson.StrictJsonError) as e:
        strictjson.loads(data)
    assert e.value.syntax


def test_integers_within_64_bits_and_duplicate_keys_keep_their_meaning() -> None:
    assert strictjson.loads(b"[18446744073709551615,-9223372036854775808]") == [
        2**64 - 1,
        -(2**63),
    ]
    with pytest.raises(strictjson.StrictJsonError) as e:
        strictjson.loads(b'{"a":1,"a":2}')
    assert not e.value.syntax  # a schema problem, not a syntax one


async def test_huge_integers_at_intake_are_malformed_json(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    size = await ledger.ledger_size()
    good = json.loads(sign_event(registration(bank, "one"), bank))
    in_envelope = json.dumps(good)[:-1].encode() + b', "n": ' + HUGE + b"}"
    payload = ev.encode_event(registration(bank, "two")).replace(b'"v":1', b'"v":' + HUGE)
    in_payload = sign_envelope(payload, bank)
    small_payload = ev.encode_event(registration(bank, "three")).replace(
        b'"v":1', b'"v":99999999999999999999999'
    )
    assert await rejected(client, in_envelope, "SystemRegistered") == "malformed_json"
    assert await rejected(client, in_payload, "SystemRegistered") == "malformed_json"
    assert (
        await rejected(client, sign_envelope(small_payload, bank), "SystemRegistered")
        == "malformed_json"
    )
    await client.submit(registration(bank, "four"))  # the notary keeps serving
    assert await ledger.ledger_size() == size + 1


# --- freshness ----------------------------------------------------------------------


async def test_a_stale_envelope_is_refused_within_the_window_accepted(ledger: Harness) -> None:
    bank, client = await ledger.enrol("bank", ["owner"])
    old = registration(bank, "old", signed_at=now() - timedelta(hours=24, minutes=1))
    assert await rejected(client, sign_event(old, bank), "SystemRegistered") == "stale"
    # the same envelope, later again: still stale, never accepted
    assert await rejected(client, sign_event(old, bank), "SystemRegistered") == "stale"
    recent = registration(bank, "recent", signed_at=now() - timedelta(hours=23))
    await client.submit(recent)


def _set_trust(home: Home, **changes: object) -> TrustPolicy:
    trust = dataclasses.replace(home.trust(), **changes)  # type: ignore[arg-type]
    trust.save(home.trust_path)
    return trust


async def test_the_freshness_window_is_the_trust_policys(
    nats_server: EmbeddedNats, home: Home
) -> None:
    _set_trust(home, freshness_seconds=3600)
    async with running_notary(nats_server.url, home) as h:
        bank, client = await h.enrol("bank", ["owner"])
        two_hours = registration(bank, "a", signed_at=now() - timedelta(hours=2))
        assert await rejected(client, sign_event(two_hours, bank), "SystemRegistered") == "stale"
        await client.submit(registration(bank, "b", signed_at=now() - timedelta(minutes=50)))


def test_trust_policy_freshness_and_root_quorum_are_checked(home: Home) -> None:
    doc = home.trust().to_json()
    assert doc["freshness_seconds"] == 24 * 3600 and doc["root_quorum"] == 1
    for name, value in [
        ("freshness_seconds", 0),
        ("freshness_seconds", "1h"),
        ("freshness_seconds", 10**9),
        ("root_quorum", 0),
        ("root_quorum", 2),  # one regulator key
        ("root_quorum", True),
    ]:
        with pytest.raises(TrustError):
            TrustPolicy.decode(json.dumps(doc | {name: value}).encode())
    huge = json.dumps(doc).encode().replace(b'"root_quorum": 1', b'"root_quorum": ' + HUGE)
    with pytest.raises(TrustError):
        TrustPolicy.decode(huge)
    legacy = {k: v for k, v in doc.items() if k not in ("freshness_seconds", "root_quorum")}
    assert TrustPolicy.decode(json.dumps(legacy).encode()).freshness == timedelta(hours=24)


_unused = (Path, base64)
