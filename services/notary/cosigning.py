"""The notary's side of c2sp.org/tlog-witness: have a checkpoint cosigned by witnesses.

:func:`collect_cosignatures` sends the checkpoint, with a consistency proof from
the size each witness last cosigned, to every witness's ``add-checkpoint`` at
once (tlog-witness "add-checkpoint"), checks every cosignature line that comes
back against the trust policy's witness keys (an answer is never trusted
unchecked: "The client MUST ignore any cosignatures from unknown keys"; a line
by a known key that does not verify discards that witness's answer), and
returns the checkpoint note with the valid cosignature lines appended after the
notary's signature once the quorum of distinct witness keys cosigned. Otherwise
it raises :class:`CosigningError`, naming each witness's answer, and the
notary does not publish that checkpoint.

A witness that answers ``409 Conflict`` with ``text/x.tlog.size`` remembers
another size than the one the notary sent (a lost answer, a fresh witness
state): the notary is asked for a proof from that size (``proof_from``) and the
witness is asked again, as the spec suggests ("If a client doesn't have
information on the latest cosigned checkpoint ...").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import httpx

from ledger.formats.checkpoint import parse_checkpoint
from ledger.formats.errors import UNAVAILABLE, LedgerError
from ledger.formats.note import (
    MAX_SIGNATURES,
    InvalidSignatureError,
    NoteError,
    Signature,
    UnverifiedNoteError,
    Verifiers,
    open_note,
)
from ledger.formats.witness import (
    CONTENT_TYPE_SIZE,
    MalformedWitnessResponse,
    encode_add_checkpoint,
    note_text,
    parse_size_response,
)

__all__ = ["MAX_ANSWER", "CosigningError", "ProofFrom", "WitnessRefused", "collect_cosignatures"]

#: A consistency proof from the given old size to the checkpoint's size.
ProofFrom = Callable[[int], Awaitable[list[bytes]]]

#: The largest answer read from a witness (a few cosignature lines are ~150 bytes each).
MAX_ANSWER = 64 * 1024
#: How many times one witness is asked again after a 409 with its size.
_RETRIES = 2


class CosigningError(LedgerError):
    """Fewer witnesses than the trust policy's quorum cosigned a checkpoint; it is not
    published (each witness's answer is named)."""

    code = "witness_quorum"
    exit_status = UNAVAILABLE

    def __init__(self, message: str, answers: dict[str, str]) -> None:
        super().__init__(message)
        #: Each witness endpoint with what it answered (``cosigned`` when it did).
        self.answers = answers


class WitnessRefused(LedgerError):
    """One witness did not give a valid cosignature (its answer is named); only
    :class:`CosigningError` leaves :func:`collect_cosignatures`."""

    code = "witness_refused"
    exit_status = UNAVAILABLE


async def _post(client: httpx.AsyncClient, url: str, body: bytes) -> tuple[int, str, bytes]:
    """POST; the status, the Content-Type and at most MAX_ANSWER bytes of the answer."""
    async with client.stream("POST", url, content=body) as response:
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > MAX_ANSWER:
                raise WitnessRefused(f"answer larger than {MAX_ANSWER} bytes")
        return response.status_code, response.headers.get("content-type", ""), bytes(data)


def _first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip().split("\n", 1)[0]
    return text[:200] or "(empty)"


def _cosignatures(text: bytes, answer: bytes, verifiers: Verifiers) -> list[Signature]:
    """The valid cosignatures by known witness keys in a 200 answer (tlog-witness: a
    sequence of note signature lines, checked as a note over the checkpoint's text)."""
    if not answer.endswith(b"\n") or not all(
        line.startswith("— ".encode()) for line in answer[:-1].split(b"\n")
    ):
        raise WitnessRefused(f"200 without cosignature lines: {_first_line(answer)!r}")
    try:
        opened = open_note(text + b"\n" + answer, verifiers)
    except UnverifiedNoteError:
        raise WitnessRefused("no cosignature by a witness key of the trust policy") from None
    except InvalidSignatureError as e:
        raise WitnessRefused(f"a cosignature that does not verify ({e})") from None
    except NoteError as e:
        raise WitnessRefused(f"malformed cosignature lines ({e})") from None
    return list(opened.sigs)


async def _ask(
    client: httpx.AsyncClient,
    endpoint: str,
    note: bytes,
    text: bytes,
    size: int,
    old_size: int,
    proof: list[bytes],
    verifiers: Verifiers,
    proof_from: ProofFrom | None,
) -> list[Signature]:
    url = endpoint.rstrip("/") + "/add-checkpoint"
    for _attempt in range(_RETRIES + 1):
        status, content_type, answer = await _post(
            client, url, encode_add_checkpoint(old_size, proof, note)
        )
        if status == 200:
            return _cosignatures(text, answer, verifiers)
        if status == 409 and content_type.split(";")[0].strip() == CONTENT_TYPE_SIZE:
            try:
                theirs = parse_size_response(answer)
            except MalformedWitnessResponse as e:
                raise WitnessRefused(f"409 {e}") from None
            if theirs > size:
                raise WitnessRefused(
                    f"409: the witness cosigned size {theirs}, above this checkpoint's {size}"
                )
            if proof_from is None or theirs == old_size:
                raise WitnessRefused(
                    f"409: the witness's latest cosigned size is {theirs}, not {old_size}"
                )
            try:
                proof = await proof_from(theirs)
            except LedgerError as e:
                raise WitnessRefused(f"409: no consistency proof from size {theirs}: {e}") from None
            old_size = theirs
            continue
        raise WitnessRefused(f"HTTP {status}: {_first_line(answer)}")
    raise WitnessRefused(f"409 again after {_RETRIES} retries with the witness's size")


async def _answer(ask: Awaitable[list[Signature]], timeout: float) -> list[Signature] | str:
    """The cosignatures of one witness, or why there are none."""
    try:
        async with asyncio.timeout(timeout):
            return await ask
    except WitnessRefused as e:
        return str(e)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        return f"unreachable ({type(e).__name__}: {e or 'no detail'})"
    except LedgerError as e:  # a request that cannot be encoded (a proof from proof_from)
        return f"not asked: {e}"


async def collect_cosignatures(
    note: bytes,
    old_size: int,
    proof: list[bytes],
    endpoints: Sequence[str],
    verifiers: Verifiers,
    quorum: int,
    *,
    timeout: float,
    proof_from: ProofFrom | None = None,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """The checkpoint ``note`` (signed by the notary) with the cosignatures of the
    witnesses at ``endpoints`` (their tlog-witness submission prefixes) appended.

    ``old_size`` and ``proof``: the size the witnesses last cosigned (as far as the
    notary knows) and the consistency proof from it to the checkpoint's size.
    ``verifiers``: the trust policy's witness cosignature keys; only cosignatures
    that verify with one of them count, each key once. All witnesses are asked at
    once and each is given ``timeout`` seconds (retries after a 409 included);
    ``proof_from(size)`` gives the proof from another size when a witness answers
    409 with its size. Raises :class:`CosigningError` when fewer than ``quorum``
    distinct witness keys cosigned.
    """
    try:
        text = note_text(note)
        size = parse_checkpoint(text.decode("utf-8")).size
    except (NoteError, ValueError) as e:
        raise CosigningError(f"not a checkpoint note: {e}", {}) from None
    http = client if client is not None else httpx.AsyncClient(timeout=timeout, trust_env=False)
    try:
        asks = [
            _ask(http, endpoint, note, text, size, old_size, list(proof), verifiers, proof_from)
            for endpoint in endpoints
        ]
        answers = await asyncio.gather(*(_answer(ask, timeout) for ask in asks))
    finally:
        if client is None:
            await http.aclose()
    lines: list[str] = []
    counted: set[tuple[str, int]] = set()
    report: dict[str, str] = {}
    for endpoint, answer in zip(endpoints, answers, strict=True):
        if isinstance(answer, str):
            report[endpoint] = answer
            continue
        names = []
        for sig in answer:
            names.append(f"{sig.name}+{sig.key_hash:08x}")
            if (sig.name, sig.key_hash) not in counted:
                counted.add((sig.name, sig.key_hash))
                lines.append(f"— {sig.name} {sig.base64}\n")
        report[endpoint] = "cosigned by " + ", ".join(names)
    if len(counted) < quorum:
        detail = "; ".join(f"{endpoint}: {answer}" for endpoint, answer in report.items())
        raise CosigningError(
            f"checkpoint of size {size}: {len(counted)} of the {quorum} witness cosignatures "
            f"the trust policy requires ({detail or 'no witness configured'})",
            report,
        )
    existing = note[len(text) + 1 :].decode("utf-8").splitlines(keepends=True)
    new = [line for line in lines if line not in existing]
    if len(existing) + len(new) > MAX_SIGNATURES:
        raise CosigningError(f"more than {MAX_SIGNATURES} signatures on one checkpoint", report)
    return note + "".join(new).encode("utf-8")
