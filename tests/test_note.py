"""C2SP signed notes: Go-produced vectors, Go's own test cases, strict rejection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.formats.note import (
    ALG_ED25519,
    MAX_SIGNATURES,
    AmbiguousVerifierError,
    InvalidSignatureError,
    MalformedKeyError,
    MalformedNoteError,
    Note,
    NoteError,
    Signature,
    Signer,
    UnknownVerifierError,
    UnverifiedNoteError,
    Verifier,
    Verifiers,
    b64decode_strict,
    generate_key,
    is_valid_name,
    key_hash,
    open_note,
    sign_note,
    signer_key,
    verifier_key,
)

VECTORS: list[dict[str, str]] = json.loads(
    (Path(__file__).parent / "vectors" / "signed-note.json").read_text()
)["notes"]

# From the documentation and tests of Go's golang.org/x/mod/sumdb/note.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
PETER = Signature("PeterNeumann", 0xC74F20A3, PETER_B64)
ENOCH = Signature("EnochRoot", 0xAF0CFE78, ENOCH_B64)


def peter() -> Verifier:
    return Verifier.from_vkey(PETER_VKEY)


def enoch() -> Verifier:
    return Verifier.from_vkey(ENOCH_VKEY)


def raw_public(v: Verifier) -> bytes:
    return v.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


# Vectors produced by Go.


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["vkey"].split("+")[0])
def test_vector_signing_is_exact(vector: dict[str, Any]) -> None:
    signer = Signer.from_skey(vector["skey"])
    assert sign_note(vector["text"], signer) == vector["note"].encode("utf-8")


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["vkey"].split("+")[0])
def test_vector_keys_round_trip(vector: dict[str, Any]) -> None:
    signer = Signer.from_skey(vector["skey"])
    verifier = Verifier.from_vkey(vector["vkey"])
    name, hash16, _ = vector["vkey"].split("+", 2)
    assert signer.name == verifier.name == name
    assert signer.key_hash == verifier.key_hash == int(hash16, 16)
    assert key_hash(name, bytes([ALG_ED25519]) + raw_public(verifier)) == int(hash16, 16)
    assert verifier.vkey == vector["vkey"]
    assert signer.verifier().vkey == vector["vkey"]
    assert verifier_key(name, raw_public(verifier)) == vector["vkey"]
    seed = b64decode_strict(vector["skey"].split("+")[4])[1:]
    assert signer_key(name, Ed25519PrivateKey.from_private_bytes(seed)) == vector["skey"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["vkey"].split("+")[0])
def test_vector_opens(vector: dict[str, Any]) -> None:
    verifier = Verifier.from_vkey(vector["vkey"])
    note = open_note(vector["note"].encode("utf-8"), Verifiers(verifier))
    assert note.text == vector["text"]
    assert [(s.name, s.key_hash) for s in note.sigs] == [(verifier.name, verifier.key_hash)]
    assert note.unverified_sigs == ()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["vkey"].split("+")[0])
def test_any_changed_byte_is_rejected(vector: dict[str, Any]) -> None:
    msg = vector["note"].encode("utf-8")
    verifiers = Verifiers(Verifier.from_vkey(vector["vkey"]))
    open_note(msg, verifiers)
    for i in range(len(msg)):
        for value in range(256):
            if value == msg[i]:
                continue
            try:
                open_note(msg[:i] + bytes([value]) + msg[i + 1 :], verifiers)
            except NoteError:
                continue
            pytest.fail(f"byte {i} changed to {value:#04x} accepted")


# Go's sumdb/note tests.


def test_go_sign() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    want = (TEXT + "\n" + PETER_SIG).encode("utf-8")
    assert sign_note(TEXT, signer) == want
    # An existing signature by the same key is replaced.
    bad = Signature("PeterNeumann", 0xC74F20A3, "BADSIGN=")
    assert sign_note(Note(TEXT, (bad,)), signer) == want
    with pytest.raises(MalformedNoteError):
        sign_note("abc", signer)
    with pytest.raises(MalformedNoteError):
        sign_note(Note(TEXT, (Signature("a+b", 0, "ABCD"),)))
    with pytest.raises(MalformedNoteError):
        sign_note(Note(TEXT, (Signature("PeterNeumann", 0xC74F20A3, "BADHASH="),)))


def test_go_open() -> None:
    msg = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode("utf-8")
    # One verified, one not.
    note = open_note(msg, Verifiers(peter()))
    assert note == Note(TEXT, (PETER,), (ENOCH,))
    # Both verified.
    assert open_note(msg, Verifiers(peter(), enoch())) == Note(TEXT, (PETER, ENOCH), ())
    # Neither verified: the error carries what was read.
    with pytest.raises(UnverifiedNoteError, match="no verifiable signatures") as unverified:
        open_note(msg, Verifiers())
    assert unverified.value.note == Note(TEXT, (), (PETER, ENOCH))
    # A verifier listed twice is ambiguous when used, harmless otherwise.
    with pytest.raises(AmbiguousVerifierError, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note((TEXT + "\n" + ENOCH_SIG).encode(), Verifiers(enoch(), peter(), enoch()))
    open_note((TEXT + "\n" + PETER_SIG).encode(), Verifiers(enoch(), peter(), enoch()))


def test_go_open_too_many_signatures() -> None:
    many = (TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode()
    with pytest.raises(MalformedNoteError):
        open_note(many, Verifiers(peter()))
    with pytest.raises(MalformedNoteError):
        open_note(many, Verifiers())
    enough = (TEXT + "\n" + PETER_SIG * MAX_SIGNATURES).encode()
    assert open_note(enough, Verifiers(peter())).sigs == (PETER,)


def test_go_open_invalid_signature() -> None:
    msg = (TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]).encode()
    with pytest.raises(InvalidSignatureError, match="PeterNeumann\\+c74f20a3") as e:
        open_note(msg, Verifiers(peter()))
    assert (e.value.name, e.value.key_hash) == ("PeterNeumann", 0xC74F20A3)


def test_go_open_duplicates() -> None:
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    msg = (TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd).encode()
    note = open_note(msg, Verifiers(peter()))
    assert note.sigs == (PETER,)
    assert note.unverified_sigs == (ENOCH, Signature("EnochRoot", 0xAF0CFE78, enoch_abcd[12:-1]))


def test_bad_duplicate_by_known_key_is_rejected() -> None:
    # Go skips repeated signatures of a known key unverified; the spec says verify them.
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignatureError):
        open_note((TEXT + "\n" + PETER_SIG + bad).encode(), Verifiers(peter()))


@pytest.mark.parametrize(
    "msg",
    [
        TEXT.encode(),
        (TEXT + "\n").encode(),
        (TEXT + "\n" + PETER_SIG[:-1]).encode(),
        ("\x01" + TEXT + "\n" + PETER_SIG).encode(),
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        (TEXT + "\n— Bad Name " + PETER_B64).encode(),
        (TEXT + "\n— Bad Name " + PETER_B64 + "\n").encode(),
        (TEXT + "\n" + PETER_SIG + "Unexpected line.\n").encode(),
        # Beyond Go's list: tabs, CR, spaces, dash variants, short or non-canonical base64.
        (TEXT.replace(" ", "\t", 1) + "\n" + PETER_SIG).encode(),
        (TEXT + "\n" + PETER_SIG.replace("\n", "\r\n")).encode(),
        (TEXT + "\n" + PETER_SIG.replace(" ", "  ", 1)).encode(),
        (TEXT + "\n" + PETER_SIG[:-1] + " \n").encode(),
        (TEXT + "\n" + PETER_SIG.replace("—", "-")).encode(),
        (TEXT + "\n" + PETER_SIG.replace("=\n", "\n")).encode(),
        (TEXT + "\n" + PETER_SIG.replace("AM=\n", "AN=\n")).encode(),
        (TEXT + "\n— PeterNeumann x08gow==\n").encode(),
        (TEXT + "\n— PeterNeumann \n").encode(),
        (TEXT + "\n\n" + PETER_SIG).encode() + b"\n",
        b"\xed\xa0\x80" + (TEXT + "\n" + PETER_SIG).encode(),  # a UTF-8 encoded surrogate
    ],
)
def test_malformed_notes(msg: bytes) -> None:
    with pytest.raises(MalformedNoteError):
        open_note(msg, Verifiers(peter()))


def test_text_may_contain_blank_lines() -> None:
    signer = Signer.from_skey(PETER_SKEY)
    for text in ("\n", "a\n\nb\n", "a\n\n", "a\n\n\n", "non-ASCII: é, ✓, U+2028\u2028.\n"):
        note = open_note(sign_note(text, signer), Verifiers(signer.verifier()))
        assert note.text == text


# Keys.


def test_go_key_manglings_are_rejected() -> None:
    Verifier.from_vkey(PETER_VKEY)
    Signer.from_skey(PETER_SKEY)
    for key, parse in ((PETER_VKEY, Verifier.from_vkey), (PETER_SKEY, Signer.from_skey)):
        for i in range(len(key) + 1):
            for j in range(i + 1, len(key) + 1):
                if (i, j) != (0, len(key)):
                    with pytest.raises(MalformedKeyError):
                        parse(key[i:j])
        for i in range(len(key)):
            with pytest.raises(MalformedKeyError):
                parse(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])
    # Wrong key length and unknown algorithm, each with a matching key ID.
    with pytest.raises(MalformedKeyError):
        Verifier.from_vkey(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(MalformedKeyError):
        Verifier.from_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_key_hash_hex_is_case_insensitive_like_go() -> None:
    assert Verifier.from_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3")).key_hash == 0xC74F20A3


def test_generate_key_round_trip() -> None:
    skey, vkey = generate_key("example.com/log")
    signer, verifier = Signer.from_skey(skey), Verifier.from_vkey(vkey)
    assert signer.key_hash == verifier.key_hash
    assert open_note(sign_note("hi\n", signer), Verifiers(verifier)).text == "hi\n"
    assert verifier.verify(b"hi\n", signer.sign(b"hi\n"))
    assert not verifier.verify(b"hi\n", signer.sign(b"ho\n"))
    assert not verifier.verify(b"hi\n", signer.sign(b"hi\n")[:-1])


def test_signer_from_private_key() -> None:
    private_key = Ed25519PrivateKey.generate()
    signer = Signer.from_private_key("example.com/log", private_key)
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert signer.verifier().vkey == verifier_key("example.com/log", raw)
    with pytest.raises(MalformedKeyError):
        verifier_key("example.com/log", raw[:31])


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com/log", True),
        ("PeterNeumann", True),
        ("é/✓", True),
        ("", False),
        ("a b", False),
        ("a+b", False),
        ("a\nb", False),
        ("a\u00a0b", False),
        ("a\u2003b", False),
        ("a\u3000b", False),
        ("a\x85b", False),
        ("a\x1cb", False),
        ("a\ud800b", False),
    ],
)
def test_key_names(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid
    if not valid:
        with pytest.raises(MalformedKeyError):
            Signer(name, Ed25519PrivateKey.generate())


def test_verifiers_lookup() -> None:
    verifiers = Verifiers(peter(), enoch(), enoch())
    assert verifiers.verifier("PeterNeumann", 0xC74F20A3).vkey == PETER_VKEY
    with pytest.raises(UnknownVerifierError, match="unknown key PeterNeumann\\+c74f20a4") as e:
        verifiers.verifier("PeterNeumann", 0xC74F20A4)
    assert (e.value.name, e.value.key_hash) == ("PeterNeumann", 0xC74F20A4)
    with pytest.raises(UnknownVerifierError, match="unknown key PeterNeuman\\+c74f20a3"):
        verifiers.verifier("PeterNeuman", 0xC74F20A3)
    with pytest.raises(AmbiguousVerifierError, match="ambiguous key EnochRoot\\+af0cfe78"):
        verifiers.verifier("EnochRoot", 0xAF0CFE78)


# Signing.


def test_sign_adds_to_existing_signatures() -> None:
    # A second signer keeps the first signature: how witnesses add cosignatures.
    first = Signer.from_skey(PETER_SKEY)
    second = Signer.from_private_key("EnochRoot", Ed25519PrivateKey.generate())
    note = open_note(sign_note(TEXT, first), Verifiers(first.verifier()))
    both = sign_note(note, second)
    assert both.startswith((TEXT + "\n" + PETER_SIG).encode())
    opened = open_note(both, Verifiers(first.verifier(), second.verifier()))
    assert [s.name for s in opened.sigs] == ["PeterNeumann", "EnochRoot"]
    # Unverified signatures are carried along as well.
    assert sign_note(open_note(both, Verifiers(first.verifier()))) == both


@pytest.mark.parametrize("text", ["no newline", "tab\there\n", "nul\x00\n", "lone \ud800\n"])
def test_sign_rejects_bad_text(text: str) -> None:
    with pytest.raises(MalformedNoteError):
        sign_note(text, Signer.from_skey(PETER_SKEY))


def test_sign_needs_a_signature() -> None:
    with pytest.raises(NoteError):
        sign_note(TEXT)


def test_error_hierarchy() -> None:
    for cls in (
        MalformedNoteError,
        MalformedKeyError,
        UnverifiedNoteError,
        InvalidSignatureError,
        UnknownVerifierError,
        AmbiguousVerifierError,
    ):
        assert issubclass(cls, NoteError)
    assert issubclass(NoteError, ValueError)


@pytest.mark.parametrize(
    ("encoded", "ok"),
    [("", True), ("AA==", True), ("AB==", False), ("AA=", False), ("AA", False), ("A A=", False)],
)
def test_b64decode_strict(encoded: str, ok: bool) -> None:
    if ok:
        assert b64decode_strict(encoded) == (b"\x00" if encoded else b"")
    else:
        with pytest.raises(ValueError):
            b64decode_strict(encoded)
