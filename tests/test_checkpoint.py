"""C2SP checkpoints, Ed25519 cosignatures and tlog-proofs: public vectors, round trips, errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.formats.checkpoint import (
    ALG_COSIGNATURE_V1,
    MAX_TIMESTAMP,
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    MalformedCheckpointError,
    MalformedTlogProofError,
    TlogProof,
    cosignature_timestamp,
    cosignature_verifier_key,
    format_tlog_proof,
    parse_checkpoint,
    parse_tlog_proof,
)
from ledger.formats.merkle import (
    MemoryHashStore,
    empty_root,
    leaf_hash,
    prove_record,
    verify_inclusion,
)
from ledger.formats.note import (
    MalformedKeyError,
    MalformedNoteError,
    Note,
    NoteError,
    Signature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    Verifiers,
    key_hash,
    open_note,
    sign_note,
    verifier_key,
)

NOTE_VECTORS = json.loads((Path(__file__).parent / "vectors" / "signed-note.json").read_text())

ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
T = 1679315147  # the time of the example in c2sp.org/tlog-cosignature

# A checkpoint of a public staging log (Google's arche2025h1 CT log), signed by the
# log (Ed25519 and an RFC 6962 signature) and cosigned by four public witnesses,
# from the tests of github.com/florolf/tlog-scales.
ARCHE = """\
arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
""".encode()  # noqa: E501
ARCHE_LOG_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
# The witnesses' published verifier keys (type 0x04); the signatures verifying is what
# authenticates them.
ARCHE_WITNESS_VKEYS = [
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
]


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def log_and_witness(clock_time: int = T) -> tuple[Signer, CosignatureSigner]:
    log = Signer("example.com/log", Ed25519PrivateKey.generate())
    witness = CosignatureSigner(
        "witness.example/w1", Ed25519PrivateKey.generate(), lambda: clock_time
    )
    return log, witness


def cosigned(checkpoint: Checkpoint, log: Signer, witness: CosignatureSigner) -> bytes:
    signed = sign_note(checkpoint.body(), log)
    return sign_note(open_note(signed, Verifiers(log.verifier())), witness)


# Checkpoint bodies.


def test_checkpoint_body_round_trip() -> None:
    cp = Checkpoint("example.com/log", 42, ROOT)
    assert cp.body() == f"example.com/log\n42\n{ROOT_B64}\n"
    assert parse_checkpoint(cp.body()) == cp
    ext = Checkpoint("example.com/log", 0, empty_root(), ("ext one", "— two"))
    assert ext.body().endswith("\next one\n— two\n")
    assert parse_checkpoint(ext.body()) == ext


def test_c2sp_example_and_vector_bodies_parse() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = parse_checkpoint(text)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.body() == text
    for vector in NOTE_VECTORS["notes"]:
        cp = parse_checkpoint(vector["text"])
        assert cp.root_hash == b"12345678901234567890123456789012"
        assert cp.body() == vector["text"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "o\n1\n",
        f"o\n1\n{ROOT_B64}",  # no final newline
        f"\n1\n{ROOT_B64}\n",  # empty origin
        f"o\n01\n{ROOT_B64}\n",
        f"o\n00\n{ROOT_B64}\n",
        f"o\n+1\n{ROOT_B64}\n",
        f"o\n-1\n{ROOT_B64}\n",
        f"o\n 1\n{ROOT_B64}\n",
        f"o\n1 \n{ROOT_B64}\n",
        f"o\n1_0\n{ROOT_B64}\n",
        f"o\n١\n{ROOT_B64}\n",  # an Arabic-Indic digit one, which int() accepts
        f"o\n0x1\n{ROOT_B64}\n",
        f"o\n{2**64}\n{ROOT_B64}\n",
        f"o\n\n{ROOT_B64}\n",
        "o\n1\n\n",
        f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"o\n1\n{base64.b64encode(ROOT + b'!').decode()}\n",
        f"o\n1\n{ROOT_B64[:-1]}\n",  # missing padding
        f"o\n1\n{ROOT_B64[:-2]}9=\n",  # non-zero padding bits
        f"o\n1\n{ROOT_B64.replace('A', '-')}\n",
        f"o\n1\n {ROOT_B64}\n",
        f"o\n1\n{ROOT_B64}\n\n",  # an empty extension line
        f"o\n1\n{ROOT_B64}\next\n\n",
        f"o\r\n1\n{ROOT_B64}\n",
        f"o\n1\r\n{ROOT_B64}\n",
        f"o\n1\n{ROOT_B64}\r\n",
        f"o\t\n1\n{ROOT_B64}\n",
        f"o\n1\n{ROOT_B64}\nex\x00t\n",
    ],
)
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(MalformedCheckpointError):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        ("o", -1, ROOT, ()),
        ("o", 2**64, ROOT, ()),
        ("o", True, ROOT, ()),
        ("o", 1, ROOT[:31], ()),
        ("o", 1, ROOT, ("",)),
        ("o", 1, ROOT, ("a\nb",)),
    ],
)
def test_invalid_checkpoints_cannot_be_built(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(MalformedCheckpointError):
        Checkpoint(origin, size, root, extensions)


def test_signed_checkpoint_round_trip() -> None:
    log, _ = log_and_witness()
    cp = Checkpoint("example.com/log", 7, ROOT)
    note = open_note(sign_note(cp.body(), log), Verifiers(log.verifier()))
    assert parse_checkpoint(note.text) == cp


# Cosignatures.


def test_cosignature_round_trip_and_timestamp() -> None:
    log, witness = log_and_witness()
    cp = Checkpoint("example.com/log", 7, ROOT)
    msg = cosigned(cp, log, witness)
    note = open_note(msg, Verifiers(log.verifier(), witness.verifier()))
    assert parse_checkpoint(note.text) == cp
    assert [s.name for s in note.sigs] == ["example.com/log", "witness.example/w1"]
    assert cosignature_timestamp(note.sigs[1]) == T
    # Only the witness trusted: the log's signature is kept unverified.
    note = open_note(msg, Verifiers(witness.verifier()))
    assert [s.name for s in note.unverified_sigs] == ["example.com/log"]


def test_cosignature_layout_follows_the_spec() -> None:
    private_key = Ed25519PrivateKey.generate()
    witness = CosignatureSigner("witness.example/w1", private_key, lambda: T)
    body = Checkpoint("example.com/behind-the-sofa", 20852163, ROOT).body().encode()
    sig = witness.sign(body)
    assert len(sig) == 8 + 64
    assert sig[:8] == T.to_bytes(8, "big")
    signed = b"cosignature/v1\ntime 1679315147\n" + body
    private_key.public_key().verify(sig[8:], signed)  # raises if the message differs
    assert witness.key_hash == key_hash("witness.example/w1", b"\x04" + raw_public(private_key))
    assert ALG_COSIGNATURE_V1 == 0x04


def test_cosignature_any_flipped_bit_is_rejected() -> None:
    log, witness = log_and_witness()
    msg = cosigned(Checkpoint("example.com/log", 7, ROOT, ("ext",)), log, witness)
    verifiers = Verifiers(witness.verifier())
    open_note(msg, verifiers)
    for i in range(len(msg)):
        for bit in range(8):
            try:
                open_note(msg[:i] + bytes([msg[i] ^ (1 << bit)]) + msg[i + 1 :], verifiers)
            except NoteError:
                continue
            # Flips inside the log's signature line are fine: the log is not trusted here.
            assert (
                msg.rfind(b"\n\xe2\x80\x94 example.com/log ") < i < msg.rfind(b"\n\xe2\x80\x94 w")
            )


def test_cosignature_keys() -> None:
    private_key = Ed25519PrivateKey.generate()
    raw = raw_public(private_key)
    vkey = cosignature_verifier_key("witness.example/w1", raw)
    verifier = CosignatureVerifier.from_vkey(vkey)
    assert verifier.vkey == vkey
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert verifier.key_hash == CosignatureSigner("witness.example/w1", private_key).key_hash
    # Type 0x01 and type 0x04 keys are not interchangeable.
    with pytest.raises(MalformedKeyError):
        CosignatureVerifier.from_vkey(verifier_key("witness.example/w1", raw))
    with pytest.raises(MalformedKeyError):
        Verifier.from_vkey(vkey)
    for witness_vkey in ARCHE_WITNESS_VKEYS:
        assert CosignatureVerifier.from_vkey(witness_vkey).vkey == witness_vkey
    with pytest.raises(MalformedKeyError):
        CosignatureVerifier.from_vkey(ARCHE_WITNESS_VKEYS[0].replace("da77ade7", "da77ade8"))


def test_plain_ed25519_key_does_not_verify_cosignatures() -> None:
    private_key = Ed25519PrivateKey.generate()
    witness = CosignatureSigner("witness.example/w1", private_key)
    msg = sign_note(Checkpoint("example.com/log", 7, ROOT).body(), witness)
    plain = Verifier(witness.name, private_key.public_key())
    with pytest.raises(UnverifiedNoteError):
        open_note(msg, Verifiers(plain))


def test_public_log_checkpoint_and_witness_cosignatures_verify() -> None:
    verifiers = Verifiers(
        Verifier.from_vkey(ARCHE_LOG_VKEY),
        *(CosignatureVerifier.from_vkey(v) for v in ARCHE_WITNESS_VKEYS),
    )
    note = open_note(ARCHE, verifiers)
    cp = parse_checkpoint(note.text)
    assert (cp.origin, cp.size) == ("arche2025h1.staging.ct.transparency.dev", 1432088532)
    assert [(s.name, s.key_hash) for s in note.sigs] == [
        ("arche2025h1.staging.ct.transparency.dev", 0xBA2F06C0),
        ("transparency.dev/DEV:witness-little-garden", 0xD8042A87),
        ("witness1.smartit.nu/witness1", 0xA48C820F),
        ("remora.n621.de", 0xDA77ADE7),
        ("witness.stagemole.eu", 0x67F7AEA0),
    ]
    # The RFC 6962 signature (type 0x05) has another key ID and stays unverified.
    assert [s.key_hash for s in note.unverified_sigs] == [0xCD333CB1]
    assert {cosignature_timestamp(s) for s in note.sigs[1:]} == {1779573024}
    # A different tree size under the same signatures fails.
    with pytest.raises(NoteError):
        open_note(ARCHE.replace(b"1432088532", b"1432088533"), verifiers)


@pytest.mark.parametrize(
    ("b64", "timestamp"),
    [
        # c2sp.org/tlog-cosignature example: "time 1679315147".
        (
            "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
            "qhf5nNo0xUe+mbIUBkBIfZ+qnA==",
            1679315147,
        ),
        # github.com/transparency-dev/formats note/note_cosigv1_test.go.
        (
            "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWW"
            "OworDcFiEBYJXORmnFBOBA==",
            1727964367,
        ),
        (
            "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=",
            None,
        ),
        ("5%/$!\n 2", None),
        (base64.b64encode(b"\0" * 4 + (2**63).to_bytes(8, "big") + b"\0" * 64).decode(), None),
    ],
)
def test_cosignature_timestamps(b64: str, timestamp: int | None) -> None:
    sig = Signature("witness.example/w1", 0, b64)
    if timestamp is None:
        with pytest.raises(MalformedNoteError):
            cosignature_timestamp(sig)
    else:
        assert cosignature_timestamp(sig) == timestamp


@pytest.mark.parametrize("clock_time", [-1, MAX_TIMESTAMP + 1])
def test_cosigner_refuses_out_of_range_times(clock_time: int) -> None:
    _, witness = log_and_witness(clock_time)
    with pytest.raises(ValueError):
        witness.sign(Checkpoint("o", 1, ROOT).body().encode())


def test_cosigner_max_time_is_accepted() -> None:
    log, witness = log_and_witness(MAX_TIMESTAMP)
    note = open_note(
        cosigned(Checkpoint("o", 1, ROOT), log, witness), Verifiers(witness.verifier())
    )
    assert cosignature_timestamp(note.sigs[0]) == MAX_TIMESTAMP


def test_cosignature_verifier_rejects_times_above_2_63_and_non_checkpoints() -> None:
    private_key = Ed25519PrivateKey.generate()
    verifier = CosignatureVerifier("witness.example/w1", private_key.public_key())
    body = Checkpoint("o", 1, ROOT).body().encode()
    for t in (0, MAX_TIMESTAMP, MAX_TIMESTAMP + 1, 2**64 - 1):
        sig = t.to_bytes(8, "big") + private_key.sign(b"cosignature/v1\ntime %d\n" % t + body)
        assert verifier.verify(body, sig) is (t <= MAX_TIMESTAMP)
    # Validly signed, but not over a checkpoint: not a cosignature.
    text = b"hello\n"
    sig = (5).to_bytes(8, "big") + private_key.sign(b"cosignature/v1\ntime 5\n" + text)
    assert not verifier.verify(text, sig)
    assert not verifier.verify(body, sig[:-1])


def test_cosigner_signs_only_checkpoints() -> None:
    _, witness = log_and_witness()
    with pytest.raises(MalformedCheckpointError):
        sign_note("hello\n", witness)


# tlog-proof.


def test_tlog_proof_end_to_end() -> None:
    log, witness = log_and_witness()
    store = MemoryHashStore()
    for i in range(11):
        store.append(b"entry %d" % i)
    cp = Checkpoint("example.com/log", store.size, store.root())
    proof_hashes = prove_record(store.size, 7, store.read_hashes)
    data = format_tlog_proof(7, proof_hashes, cosigned(cp, log, witness), extra=b"\x00hint")
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra AGhpbnQ=\nindex 7\n")
    proof = parse_tlog_proof(data)
    assert proof.index == 7 and proof.extra == b"\x00hint" and list(proof.proof) == proof_hashes
    assert format_tlog_proof(proof.index, proof.proof, proof.checkpoint, proof.extra) == data
    note = open_note(proof.checkpoint, Verifiers(log.verifier(), witness.verifier()))
    opened = parse_checkpoint(note.text)
    verify_inclusion(leaf_hash(b"entry 7"), proof.index, opened.size, proof.proof, opened.root_hash)


def test_tlog_proof_without_extra_or_hashes() -> None:
    checkpoint = sign_note(Checkpoint("o", 1, ROOT).body(), log_and_witness()[0])
    data = format_tlog_proof(0, [], checkpoint)
    assert data == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + checkpoint
    assert parse_tlog_proof(data) == TlogProof(0, (), checkpoint, None)


def test_c2sp_tlog_proof_example_parses() -> None:
    example = (
        "c2sp.org/tlog-proof@v1\n"
        "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
        "index 73894\n"
        "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
        "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
        "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
        "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
        "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
        "\n"
        "example.com/fancylog\n"
        "109482\n"
        "sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"
        "\n"
        "— example.com/fancylog hI2DJw[...]1roloI=\n"
        "— witness1.example mJirIklj[...]qY9v2B/5bg==\n"
    ).encode()
    proof = parse_tlog_proof(example)
    assert proof.index == 73894
    assert len(proof.proof) == 5
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert proof.checkpoint.startswith(b"example.com/fancylog\n109482\n")
    assert format_tlog_proof(proof.index, proof.proof, proof.checkpoint, proof.extra) == example
    with pytest.raises(MalformedNoteError):  # the spec elides the signatures
        open_note(proof.checkpoint, Verifiers())


H = base64.b64encode(ROOT).decode()
CP = "o\n1\n" + H + "\n\n— o AAAAAAA=\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "c2sp.org/tlog-proof@v1\nindex 0\n" + H + "\n" + CP,  # no empty line
        "c2sp.org/tlog-proof@v2\nindex 0\n\n" + CP,
        "c2sp.org/tlog-proof@v1 \nindex 0\n\n" + CP,
        "C2SP.org/tlog-proof@v1\nindex 0\n\n" + CP,
        "c2sp.org/tlog-proof@v1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex \n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 01\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex -1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1 \n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex  1\n\n" + CP,
        f"c2sp.org/tlog-proof@v1\nindex {2**64}\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nIndex 1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\r\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nextra \nindex 1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nextra AB==\nindex 1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nextra AA\nindex 1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nextra AA==\nextra AA==\nindex 1\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\nextra AA==\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\n" + H[:-4] + "\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\n" + H[:-2] + "9=\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\n" + H + " \n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\n" + (H + "\n") * 65 + "\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\n\n",
        "c2sp.org/tlog-proof@v1\nindex 1\n\n\n" + CP,
        "c2sp.org/tlog-proof@v1\nindex 1\n\n" + CP[:-1],
        "c2sp.org/tlog-proof@v1\nindex ١\n\n" + CP,
    ],
)
def test_malformed_tlog_proofs_are_rejected(text: str) -> None:
    with pytest.raises(MalformedTlogProofError):
        parse_tlog_proof(text.encode())


def test_tlog_proof_limits_accepted() -> None:
    data = f"c2sp.org/tlog-proof@v1\nindex {2**64 - 1}\n" + (H + "\n") * 64 + "\n" + CP
    proof = parse_tlog_proof(data.encode())
    assert proof.index == 2**64 - 1 and len(proof.proof) == 64


@pytest.mark.parametrize(
    ("index", "hashes", "checkpoint", "extra"),
    [
        (-1, [], CP.encode(), None),
        (2**64, [], CP.encode(), None),
        (0, [ROOT[:31]], CP.encode(), None),
        (0, [ROOT] * 65, CP.encode(), None),
        (0, [], b"", None),
        (0, [], b"\n" + CP.encode(), None),
        (0, [], CP.encode()[:-1], None),
        (0, [], CP.encode(), b""),
    ],
)
def test_format_tlog_proof_rejects_bad_input(
    index: int, hashes: list[bytes], checkpoint: bytes, extra: bytes | None
) -> None:
    with pytest.raises(ValueError):
        format_tlog_proof(index, hashes, checkpoint, extra)


def test_note_module_is_reused_unchanged() -> None:
    # Cosigning goes through note.sign_note, which keeps existing signatures.
    log, witness = log_and_witness()
    signed = sign_note(Checkpoint("o", 1, ROOT).body(), log)
    note = open_note(signed, Verifiers(log.verifier()))
    assert isinstance(note, Note)
    assert sign_note(note, witness).startswith(signed)
