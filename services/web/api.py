"""The HTTP API, version 1 (``/api/v1``): public reads, the gateway, investigation.

Public (no credential; DESIGN §7: checkpoints, proofs, schemas and the trust
policy are public):

- ``GET /checkpoint``: the newest cosigned checkpoint, a C2SP signed note (``text/plain``);
- ``GET /checkpoints``: the history, one object per tree size; ``GET /checkpoints/{size}``;
- ``GET /entries/{index}``: the entry decoded (JSON); ``/entries/{index}/raw``: its exact
  bytes (the leaf hashed into the tree); ``/entries/{index}/proof``: its C2SP tlog-proof;
- ``GET /proofs/consistency?old=A&new=B``: RFC 9162 consistency proof, as text
  (``old``, ``new``, the hashes in base64, an empty line, the checkpoint of size B);
- ``GET /trust``: the trust policy; ``GET /schemas``, ``GET /schemas/{name}``: JSON Schemas.

Gateway (an actor's bearer token): ``POST /submissions`` with a DSSE envelope.

Every error is RFC 9457 problem details (:mod:`services.web.problems`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_200_OK

from ledger.bus.proofs import consistency
from ledger.bus.streams import INTAKE_MAX_MSG_SIZE, Verdict
from ledger.formats.dsse import EnvelopeError, parse_envelope
from ledger.formats.heads import HeadsLeaf
from ledger.formats.timeutil import format_time
from services.web.app import WebContext
from services.web.gateway import Rejected
from services.web.problems import (
    ActorMismatch,
    BadRequest,
    GatewayUnavailable,
    HttpNotFound,
    problem_meaning,
    problem_response,
    problem_responses,
)

__all__ = ["GATEWAY_MAX_BODY", "api_router"]

TEXT = "text/plain; charset=utf-8"
#: The gateway's body limit: INTAKE's largest message, so that a slightly oversize
#: envelope still reaches the notary and gets its signed ``oversize`` rejection.
GATEWAY_MAX_BODY = INTAKE_MAX_MSG_SIZE

_MAX_INDEX = (1 << 63) - 1


def _text(data: bytes, status: int = HTTP_200_OK) -> Response[bytes]:
    return Response(data, status_code=status, media_type=TEXT)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _index(value: int, what: str = "index") -> int:
    if not 0 <= value <= _MAX_INDEX:
        raise BadRequest(f"{what} must be between 0 and 2^63-1, not {value}")
    return value


# -- public ---------------------------------------------------------------------------


class CheckpointInfo(msgspec.Struct):
    """One signed checkpoint: its tree size, root and the signed note itself."""

    origin: str
    size: int
    root: str
    note: str


class CheckpointHistory(msgspec.Struct):
    origin: str
    checkpoints: list[CheckpointInfo]
    #: The next page starts after this size (None: no more).
    next_after: int | None = None


class SignatureInfo(msgspec.Struct):
    keyid: str
    sig: str


class EntryInfo(msgspec.Struct):
    """A sealed leaf, decoded: an entry (a signed event) or a heads leaf of the notary."""

    index: int
    kind: Literal["entry", "heads"]
    sequence: int
    leaf_hash: str
    #: The exact leaf bytes (``ailedger/entry/v1`` or ``ailedger/heads/v1``), base64.
    raw: str
    integrated: str | None = None
    subject: str | None = None
    prev: int | None = None
    event_id: str | None = None
    type: str | None = None
    signer: str | None = None
    payload_type: str | None = None
    signatures: list[SignatureInfo] | None = None
    payload: dict[str, Any] | None = None
    heads_size: int | None = None
    heads_subjects: int | None = None
    heads_root: str | None = None


@get(
    "/checkpoint",
    summary="The newest cosigned checkpoint (C2SP signed note)",
    responses=problem_responses(400, 404, 503),
)
async def newest_checkpoint(web: NamedDependency[WebContext]) -> Response[bytes]:
    return _text((await web.latest_checkpoint()).note)


@get(
    "/checkpoints",
    summary="Checkpoint history, oldest first",
    responses=problem_responses(400, 404, 503),
)
async def checkpoint_history(
    web: NamedDependency[WebContext],
    after: Annotated[int | None, QueryParameter(description="Sizes above this one")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> CheckpointHistory:
    sizes = sorted(s for s in await web.checkpoint_sizes() if after is None or s > after)
    page, more = sizes[:limit], len(sizes) > limit
    out = []
    for size in page:
        signed = await web.checkpoint(size)
        c = signed.checkpoint
        out.append(CheckpointInfo(c.origin, c.size, _b64(c.root_hash), signed.note.decode()))
    return CheckpointHistory(web.trust.origin, out, page[-1] if more and page else None)


@get(
    "/checkpoints/{size:int}",
    summary="The checkpoint of one tree size (C2SP signed note)",
    responses=problem_responses(400, 404, 503),
)
async def checkpoint_of_size(
    web: NamedDependency[WebContext], size: FromPath[int]
) -> Response[bytes]:
    return _text((await web.checkpoint(_index(size, "size"))).note)


def _entry_info(leaf: Any, sequence: int) -> EntryInfo:
    if isinstance(leaf, HeadsLeaf):
        return EntryInfo(
            leaf.index,
            "heads",
            sequence,
            _b64(leaf.leaf_hash),
            _b64(leaf.encoded),
            heads_size=leaf.size,
            heads_subjects=leaf.subjects,
            heads_root=_b64(leaf.root),
        )
    info = EntryInfo(
        leaf.index,
        "entry",
        sequence,
        _b64(leaf.leaf_hash),
        _b64(leaf.encoded),
        integrated=format_time(leaf.integrated),
        subject=leaf.subject,
        prev=leaf.prev,
    )
    try:
        envelope = parse_envelope(leaf.envelope)
        payload = json.loads(envelope.payload)
    except (EnvelopeError, ValueError):
        return info  # sealed, yet not readable: shown raw only
    info.payload_type = envelope.payload_type
    info.signatures = [SignatureInfo(k, _b64(sig)) for k, sig in envelope.signatures]
    if isinstance(payload, dict):
        info.payload = payload
        for name in ("event_id", "type", "actor"):
            value = payload.get(name)
            if isinstance(value, str):
                setattr(info, "signer" if name == "actor" else name, value)
    return info


@get(
    "/entries/{index:int}", summary="An entry, decoded", responses=problem_responses(400, 404, 503)
)
async def entry_decoded(web: NamedDependency[WebContext], index: FromPath[int]) -> EntryInfo:
    leaf, sequence = await web.entry(_index(index))
    return _entry_info(leaf, sequence)


@get(
    "/entries/{index:int}/raw",
    summary="An entry's exact bytes (the leaf hashed into the tree)",
    responses=problem_responses(400, 404, 503),
)
async def entry_raw(web: NamedDependency[WebContext], index: FromPath[int]) -> Response[bytes]:
    leaf, _ = await web.entry(_index(index))
    return Response(leaf.encoded, media_type="application/octet-stream")


@get(
    "/entries/{index:int}/proof",
    summary="An entry's inclusion proof (C2SP tlog-proof)",
    responses=problem_responses(400, 404, 503),
)
async def entry_proof(
    web: NamedDependency[WebContext],
    index: FromPath[int],
    size: Annotated[
        int | None, QueryParameter(description="Under the checkpoint of this size")
    ] = None,
) -> Response[bytes]:
    if size is not None:
        _index(size, "size")
    return _text(await web.tlog_proof(_index(index), size))


@get(
    "/proofs/consistency",
    summary="RFC 9162 consistency proof between two checkpoints",
    responses=problem_responses(400, 404, 503),
)
async def consistency_proof(
    web: NamedDependency[WebContext], old: FromQuery[int], new: FromQuery[int]
) -> Response[bytes]:
    _index(old, "old")
    _index(new, "new")
    if old > new:
        raise BadRequest(f"old ({old}) must not be larger than new ({new})")
    signed = await web.checkpoint(new)
    tree = await web.proof_tree(signed)
    hashes = consistency(tree, old, new)
    lines = [f"old {old}", f"new {new}", *(_b64(h) for h in hashes)]
    return _text(("\n".join(lines) + "\n\n").encode() + signed.note)


@get("/trust", summary="The trust policy (what verifiers need)")
async def trust_policy(web: NamedDependency[WebContext]) -> Response[bytes]:
    return Response(web.home.trust_path.read_bytes(), media_type="application/json")


def _schemas_dir() -> Path:
    """The published JSON Schemas: installed beside this package as ``ailedger/published``
    (pyproject's package-dir), or the source checkout's ``schemas/``. Read as files: the
    web app sits below ``ailedger`` and does not import it."""
    top = Path(__file__).resolve().parent.parent.parent
    installed = top / "ailedger" / "published"
    return installed if installed.is_dir() else top / "schemas"


def _schema_names() -> list[str]:
    root = _schemas_dir()
    names = [p.name for p in root.glob("*.schema.json")]
    names += [f"events/{p.name}" for p in (root / "events").glob("*.schema.json")]
    return sorted(n.removesuffix(".schema.json") for n in names)


@get("/schemas", summary="The names of the published JSON Schemas")
async def schema_list() -> list[str]:
    return _schema_names()


@get(
    "/schemas/{name:path}",
    summary="One published JSON Schema",
    responses=problem_responses(400, 404, 503),
)
async def schema_doc(name: FromPath[str]) -> Response[bytes]:
    wanted = name.strip("/").removesuffix(".schema.json")
    if wanted not in _schema_names():  # names only: never a path taken from the request
        raise HttpNotFound(f"no schema {wanted!r} (GET /api/v1/schemas)")
    data = (_schemas_dir() / f"{wanted}.schema.json").read_bytes()
    return Response(data, media_type="application/schema+json")


# -- gateway --------------------------------------------------------------------------


@post(
    "/submissions",
    summary="Submit a signed DSSE envelope (an actor's gateway token)",
    request_max_body_size=GATEWAY_MAX_BODY,
    status_code=HTTP_200_OK,
    response_description="The notary's receipt (a Verdict with status accepted)",
    responses={
        200: ResponseSpec(
            data_container=Verdict,
            description="Accepted: the receipt proves the exact entry under a signed seal",
            generate_examples=False,
        ),
        **problem_responses(400, 401, 403, 409, 413, 422, 502, 503),
    },
)
async def submit(
    request: Request[Any, Any, Any], web: NamedDependency[WebContext]
) -> Response[bytes]:
    """The body is the DSSE envelope, byte for byte as signed. The answer is the
    notary's verdict: 200 with ``{"status": "accepted", "receipt": ...}`` (the same
    receipt for the same envelope, however often it is posted; with ``Accept:
    text/plain``, the receipt text alone), or 422 problem details whose ``code`` is the
    reason code and ``rejection`` the signed note."""
    principal = web.tokens.authenticate(request.headers.get("authorization"), "actor")
    body = await request.body()
    if not body:
        raise BadRequest("the body must be a DSSE envelope (JSON), not empty")
    gateway = await web.ensure_gateway()
    if gateway is None:
        raise GatewayUnavailable(
            "the gateway cannot reach the ledger's bus as _gateway (see the web app's log)"
        )
    head = gateway.head(body)  # EnvelopeError / SchemaError: 400 with their code
    if head.actor != principal.actor:
        raise ActorMismatch(
            f"the envelope is signed as actor {head.actor!r}; this token is bound to "
            f"{principal.actor!r}"
        )
    answer = await gateway.submit(body)
    if isinstance(answer, Rejected):
        status = 409 if answer.rejection is None else 422
        return problem_response(
            status,
            answer.code,
            answer.detail or f"the notary refused event {answer.event_id}",
            event_id=answer.event_id,
            rejection=answer.rejection,
        )
    if request.accept.best_match(["application/json", "text/plain"]) == "text/plain":
        # `Accept: text/plain`: the receipt itself, e.g. for curl -o receipt.txt
        return _text(answer.note)
    verdict = Verdict(
        status="accepted",
        event_id=answer.event_id,
        index=answer.index,
        receipt=answer.note.decode(),
        envelope_sha256=hashlib.sha256(body).hexdigest(),
    )
    return Response(verdict.encode(), media_type="application/json")


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI document of this API, at a stable path."""
    document = request.app.openapi_schema.to_schema()
    return Response(json.dumps(document).encode(), media_type="application/vnd.oai.openapi+json")


# -- problems -------------------------------------------------------------------------


@get("/problems/{code:str}", summary="What a problem code means")
async def problem_type(code: FromPath[str]) -> dict[str, str]:
    meaning = problem_meaning(code)
    if meaning is None:
        raise HttpNotFound(f"no problem code {code!r}")
    return {"code": code, "meaning": meaning}


def api_router(max_body: int) -> Router:
    """Every endpoint of /api/v1."""
    return Router(
        path="/api/v1",
        route_handlers=[
            newest_checkpoint,
            checkpoint_history,
            checkpoint_of_size,
            entry_decoded,
            entry_raw,
            entry_proof,
            consistency_proof,
            trust_policy,
            schema_list,
            schema_doc,
            submit,
            problem_type,
            openapi_document,
        ],
        request_max_body_size=max_body,
    )
