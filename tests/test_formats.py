"""Keys, DSSE envelopes, the event catalogue, ledger entries, receipts, trust policies."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ailedger.schemas import generate as generate_schemas
from ledger.bus.client import sign_event
from ledger.formats.dsse import EnvelopeError, pae, parse_envelope, sign_envelope
from ledger.formats.entry import Entry, MalformedEntryError
from ledger.formats.keys import ActorKey, KeyFileError, fingerprint, generate, load_key, save_key
from ledger.formats.trust import TrustedKey, TrustError, TrustPolicy
from ledger.law import events as ev

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- keys -------------------------------------------------------------------


def test_key_file_is_private_names_its_actor_and_round_trips(tmp_path: Path) -> None:
    key = generate("bank")
    path = tmp_path / "keys" / "bank.pem"
    save_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key(path)
    assert loaded.actor == "bank" and loaded.public_key == key.public_key
    assert loaded.keyid == f"bank/{fingerprint(key.public_key)}"
    assert len(loaded.fingerprint) == 16
    with pytest.raises(KeyFileError, match="exists"):
        save_key(generate("bank"), path)


def test_bad_key_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_key(junk)
    with pytest.raises(KeyFileError, match="not a slug"):
        ActorKey("Bank!", generate("x").private_key)


# --- DSSE ---------------------------------------------------------------------


def test_pae_matches_the_dsse_specification() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_envelope_signature_covers_the_exact_payload_bytes() -> None:
    key = generate("bank")
    envelope = sign_envelope(b'{"a": 1}', key)
    parsed = parse_envelope(envelope)
    assert parsed.payload == b'{"a": 1}' and parsed.keyid == key.keyid
    assert parsed.verify(key.public_key)
    # The same JSON value in other bytes is another payload: it does not verify.
    doc = json.loads(envelope)
    doc["payload"] = base64.b64encode(b'{"a":1}').decode()
    assert not parse_envelope(json.dumps(doc).encode()).verify(key.public_key)
    assert not parsed.verify(generate("bank").public_key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(payloadType="application/json"), "payloadType"),
        (lambda d: d["signatures"].extend(d["signatures"] * 16), "one to 16 signatures"),
        (lambda d: d.update(signatures=[]), "one to 16 signatures"),
        (lambda d: d.update(payload="%%%"), "base64"),
        (lambda d: d["signatures"][0].update(sig="AAAA"), "64 bytes"),
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.pop("payload"), "missing required field"),
    ],
)
def test_malformed_envelopes_are_refused_with_the_reason(change: object, message: str) -> None:
    doc = json.loads(sign_envelope(b"{}", generate("bank")))
    change(doc)  # type: ignore[operator]
    with pytest.raises(EnvelopeError, match=message):
        parse_envelope(json.dumps(doc).encode())


def test_not_json_is_flagged_as_such() -> None:
    with pytest.raises(EnvelopeError) as e:
        parse_envelope(b"{not json")
    assert e.value.json_error


# --- event catalogue --------------------------------------------------------


def sample(**overrides: object) -> bytes:
    e = ev.IncidentReported(
        v=1,
        event_id="0b9f0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f",
        actor="transit",
        subject="system/traffic-optimiser",
        signed_at=T,
        incident_id="inc-1",
        occurred_at=T - timedelta(hours=2),
        aware_at=T - timedelta(hours=1),
        harm_category="critical_infrastructure",
        severity="serious",
        affected_count=0,
        description="All-red phase",
    )
    doc = json.loads(ev.encode_event(e))
    doc.update(overrides)
    return json.dumps(doc, separators=(",", ":")).encode()


def test_event_round_trip_is_compact_json_with_z_times() -> None:
    data = sample()
    event = ev.decode_event(data)
    assert isinstance(event, ev.IncidentReported)
    assert ev.encode_event(event) == data
    assert b'"signed_at":"2026-03-01T12:00:00Z"' in data
    assert data.startswith(b'{"type":"IncidentReported","v":1,"event_id"')


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (sample(type="IncidentDeleted"), "unknown event type"),
        (sample(extra="x"), "unknown field"),
        (sample(affected_count="3"), "Expected `int`"),
        (sample(affected_count=3.0), "floats are not allowed"),
        (sample(affected_count=-1), ">= 0"),
        (sample(v=2), "v"),
        (sample(actor="Transit"), "actor"),
        (sample(subject="actor/transit"), "subject"),
        (sample(signed_at="2026-03-01T12:00:00"), "RFC 3339 UTC"),
        (sample(signed_at="2026-03-01T17:00:00+05:00"), "RFC 3339 UTC"),
        (sample(signed_at="2026-03-01T12:00:00.1234567Z"), "RFC 3339 UTC"),
        (sample(event_id="not-a-uuid"), "event_id"),
        (sample(severity="catastrophic"), "severity"),
        (sample(aware_at="2026-03-01T09:00:00Z"), "aware_at is before occurred_at"),
        (sample().replace(b'"actor":"transit"', b'"actor":"transit","actor":"bank"'), "duplicate"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "UTF-8"),
        (sample().replace(b'"affected_count":0', b'"affected_count":NaN'), "NaN"),
    ],
)
def test_strict_decoding_rejects(raw: bytes, why: str) -> None:
    with pytest.raises(ev.SchemaError, match=why):
        ev.decode_event(raw)


def test_every_catalogue_type_has_a_schema_and_signers() -> None:
    from ledger.law.authority import SIGNERS

    assert len(ev.EVENT_TYPES) == 20
    assert set(SIGNERS) == set(ev.EVENT_TYPES), "every type says who may sign it"
    assert {"signed_at", "occurred_at", "aware_at", "effective_from"} <= ev.TIME_FIELDS


def test_naive_datetimes_are_refused_when_building_events() -> None:
    with pytest.raises(ValueError, match="naive"):
        ev.ActorSuspended(
            v=1,
            event_id=ev.new_event_id(),
            actor="regulator",
            subject="actor/bank",
            signed_at=datetime(2026, 1, 1),
            reason="r",
        )
    with pytest.raises(ValueError, match="UTC"):
        ev.ActorSuspended(
            v=1,
            event_id=ev.new_event_id(),
            actor="regulator",
            subject="actor/bank",
            signed_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5))),
            reason="r",
        )


def test_events_the_notary_would_refuse_fail_before_signing() -> None:
    key = generate("bank")
    fields = {
        "v": 1,
        "event_id": ev.new_event_id(),
        "actor": "bank",
        "signed_at": T,
        "reason": "r",
    }
    with pytest.raises(ValueError, match="subject"):
        ev.ActorSuspended(subject="actor/Bank", **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actor"):
        ev.ActorSuspended(subject="actor/bank", **{**fields, "actor": "bank\n"})  # type: ignore[arg-type]
    other = ev.ActorSuspended(subject="actor/bank", **{**fields, "actor": "media"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not the key's actor"):
        sign_event(other, key)


# --- ledger entries ---------------------------------------------------------


def test_entry_text_form_is_exact() -> None:
    entry = Entry(7, T, "system/scorer", 3, b'{"payloadType":"x"}')
    assert entry.encoded == (
        b"ailedger/entry/v1\nindex 7\nintegrated 2026-03-01T12:00:00Z\n"
        b'subject system/scorer\nprev 3\n\n{"payloadType":"x"}'
    )
    assert Entry.parse(entry.encoded) == entry
    first = Entry(0, T, "ledger/genesis", None, b"{}")
    assert b"prev none\n\n" in first.encoded


GOOD_ENTRY = (
    b"ailedger/entry/v1\nindex 7\nintegrated 2026-03-01T12:00:00Z\nsubject system/s\nprev 3\n\n{}"
)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"entry/v1", b"entry/v2"),
        (b"index 7", b"index 07"),
        (b"00:00Z", b"00:00+00:00"),
        (b"00:00Z", b"00:00.5Z"),  # parses, but is not the canonical form
        (b"system/s", b"system/S"),
        (b"prev 3", b"prev 7"),
        (b"prev 3", b"prev -1"),
        (b"prev 3\n\n", b"prev 3\n"),
        (b"\n\n{}", b"\n\n"),
        (b"subject", b"subj"),
    ],
)
def test_malformed_entries_are_refused(old: bytes, new: bytes) -> None:
    assert Entry.parse(GOOD_ENTRY).index == 7
    with pytest.raises(MalformedEntryError):
        Entry.parse(GOOD_ENTRY.replace(old, new))


@given(
    index=st.integers(min_value=1, max_value=10**12),
    seconds=st.integers(min_value=0, max_value=10**9),
    micros=st.integers(min_value=0, max_value=999_999),
    body=st.binary(min_size=1, max_size=200),
)
def test_entries_round_trip(index: int, seconds: int, micros: int, body: bytes) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micros)
    entry = Entry(index, t, "actor/bank", index // 2, body)
    assert Entry.parse(entry.encoded) == entry


def test_the_canonical_fast_parse_agrees_with_the_field_by_field_parse() -> None:
    """``Entry.parse`` takes a header in its canonical spelling at once and leaves the
    rest to the field-by-field parse: on every one-byte change, insertion and deletion
    in the header (and a few times), both give the same entry or the same error."""

    def judged(parse: Any, data: bytes) -> object:
        try:
            e = parse(data)
        except MalformedEntryError as x:
            return str(x)
        assert e.encoded == data
        return (e.index, e.integrated, e.subject, e.prev, e.envelope)

    base = Entry(12, T + timedelta(microseconds=120), "system/s", 3, b'{"a":1}\n').encoded
    cases = [base, base.replace(b".000120Z", b".00012Z"), base.replace(b".000120Z", b".000000Z")]
    head = base.index(b"\n\n") + 2
    for k in range(head + 2):
        for c in b"0 9\n.:-TZa/_\xff":
            cases += [base[:k] + bytes([c]) + base[k + 1 :], base[:k] + bytes([c]) + base[k:]]
        cases.append(base[:k] + base[k + 1 :])
    for data in cases:
        assert judged(Entry.parse, data) == judged(Entry._parse_fields, data), data


def test_envelope_base64_is_judged_as_the_validating_decoder_does() -> None:
    """The envelope's base64 (standard or URL-safe alphabet) decodes, or is refused,
    exactly as ``base64.b64decode(validate=True)`` does, on every string of up to 5
    characters over letters, padding, URL-safe and foreign characters."""
    import binascii
    import itertools

    from ledger.formats.dsse import _b64decode

    def reference(text: str) -> bytes | None:
        try:
            if "-" in text or "_" in text:
                text = text.translate(str.maketrans("-_", "+/"))
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None

    def judged(text: str) -> bytes | None:
        try:
            return _b64decode(text, "payload")
        except EnvelopeError:
            return None

    for n in range(6):
        for chars in itertools.product("AQw/+-_=.\né", repeat=n):
            text = "".join(chars)
            assert judged(text) == reference(text), text


def test_the_compact_envelope_reads_as_the_strict_parse_reads_it() -> None:
    """``parse_envelope`` takes an envelope as ``sign_envelope`` writes it at once and
    leaves every other spelling to the strict parse: on every one-byte change,
    insertion and deletion, both give the same envelope or the same error."""
    from ledger.formats.dsse import _parse_strictly

    def judged(parse: Any, data: bytes) -> object:
        try:
            return parse(data)
        except EnvelopeError as e:
            return str(e)

    key = generate("bank")
    signed = sign_envelope(b'{"a":"b"}', key)
    assert parse_envelope(signed) == _parse_strictly(signed)
    sig = signed.rsplit(b'"sig":"', 1)[1][:-4]
    cases = [
        signed,
        signed.replace(b'"}]}', b'"},{"keyid":"x","sig":"y"}]}'),
        signed.replace(sig, sig[4:]),  # 61 bytes, well encoded
        signed.replace(sig, b"AAAA" + sig),
    ]
    for k in range(len(signed)):
        for c in b' "\\=A/-_{}[],:\x01\xc3':
            cases += [
                signed[:k] + bytes([c]) + signed[k + 1 :],
                signed[:k] + bytes([c]) + signed[k:],
            ]
        cases.append(signed[:k] + signed[k + 1 :])
    for data in cases:
        assert judged(parse_envelope, data) == judged(_parse_strictly, data), data


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a":1,"b":{"c":[1,2,{"d":"e"}]}}', {"a": 1, "b": {"c": [1, 2, {"d": "e"}]}}),
        (b'{"a":1,"a":1}', "duplicate key 'a'"),
        (b'{"a":{"b":1,"c":2,"b":1},"a":2}', "duplicate key 'b'"),
        (b'{"a":1,"b":2,"c":3,"b":4,"a":5}', "duplicate key 'b'"),
        (b"\xef\xbb\xbf{}", "not JSON: Unexpected UTF-8 BOM"),
        (b"[1.0]", "floats are not allowed"),
        (b"[18446744073709551616]", "out of the 64-bit range"),
        (b"[-9223372036854775808, 18446744073709551615]", [-(2**63), 2**64 - 1]),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b"{} x", "not JSON: Extra data"),
    ],
)
def test_strict_json_without_a_check_judges_as_with_one(raw: bytes, expected: object) -> None:
    """Strict JSON without ``check`` (one shared decoder) and with one (a pair hook per
    call) give the same value or the same error."""
    from ledger.formats import strictjson

    seen: list[str] = []
    for check in (None, lambda key, _: seen.append(key)):
        try:
            got: object = strictjson.loads(raw, check)
        except strictjson.StrictJsonError as e:
            got = str(e)
        assert got == expected if not isinstance(expected, str) else expected in str(got)


# --- receipts -----------------------------------------------------------------


# Receipt v2 (entry lines, proof, seal): tests/test_seal.py.


# --- trust policy and schemas -----------------------------------------------------


def test_trust_policy_round_trips_and_rejects_nonsense(tmp_path: Path) -> None:
    key = generate("regulator")
    policy = TrustPolicy(
        origin="o",
        regulator="regulator",
        regulator_keys=[TrustedKey(key=key.public_key_b64, valid_until=T)],
        log_keys=[],
    )
    path = tmp_path / "trust.json"
    policy.save(path)
    again = TrustPolicy.load(path)
    assert again.regulator_key_valid(key.public_key, T - timedelta(days=1))
    assert not again.regulator_key_valid(key.public_key, T)  # valid_until is exclusive
    path.write_text('{"format": "ailedger/trust/v1"}')
    with pytest.raises(TrustError, match="missing required field"):
        TrustPolicy.load(path)


def test_schemas_directory_matches_the_code() -> None:
    directory = Path(__file__).resolve().parent.parent / "schemas"
    expected = generate_schemas()
    on_disk = {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*.schema.json")
    }
    stale = sorted(set(on_disk) ^ set(expected)) + sorted(
        name for name in expected if on_disk.get(name) != expected[name]
    )
    assert not stale, f"schemas/ drifted from the code: {stale}; run python -m ailedger.schemas"


def test_hand_written_parsers_agree_with_the_published_schemas(tmp_path: Path) -> None:
    """dsse and trust parse by hand (for the dependency-light verifier); the schemas
    come from msgspec mirrors. Real documents must satisfy both, bad ones neither."""
    from ailedger import schemas
    from ledger.bus.home import init_home

    home = init_home(tmp_path / "home", origin="o.example/log")
    policy_bytes = home.trust_path.read_bytes()
    msgspec.json.decode(policy_bytes, type=schemas.TrustPolicy)
    assert TrustPolicy.decode(policy_bytes) == home.trust()
    envelope = home.genesis()
    msgspec.json.decode(envelope, type=schemas.Envelope)
    parse_envelope(envelope)
    for bad in (
        envelope.replace(b'"signatures":[', b'"extra":1,"signatures":['),
        envelope.replace(b"vnd.ailedger.event", b"vnd.other.event"),
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=schemas.Envelope)
        with pytest.raises(EnvelopeError):
            parse_envelope(bad)
    bad_policy = policy_bytes.replace(b'"origin"', b'"origin2"')
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(bad_policy, type=schemas.TrustPolicy)
    with pytest.raises(TrustError):
        TrustPolicy.decode(bad_policy)
