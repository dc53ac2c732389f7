"""The investigation endpoints of /api/v1: a regulator's or auditor's bearer token.

They answer what ``ailedger status``, ``timeline``, ``search``, ``due`` and
``export`` answer, from the same query layer (:mod:`ledger.bus.investigate`):
the projector's read model and LEDGER, with the ``_reader`` bus identity only,
so they work while the notary is down.

- ``GET /systems[?at=T|at_index=N|checkpoint=N]``: every system with its verdict;
- ``GET /systems/{system}[?at=...]``: one system's verdict and findings;
- ``GET /systems/{system}/timeline[?until=T]``: who did what, in ledger order;
- ``GET /systems/{system}/bundle[?checkpoint=N]``: its evidence bundle
  (``ailedger/bundle/v1``, with the claimed verdict) as of a checkpoint;
- ``GET /search?actor=&subject=&type=&key=[&after=&limit=]``: entries, paged;
- ``GET /due?within=48h[&at=T&system=S]``: open obligations and their deadlines.

Times (``at``, ``until``) are what the CLI takes: RFC 3339 with Z or an offset, a
date-time (UTC+5) or a date (the end of that day, UTC+5).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from ledger.bus import investigate as iq
from ledger.formats.errors import LedgerError
from ledger.formats.timeutil import parse_moment
from services.web.app import WebContext
from services.web.problems import BadRequest, problem_responses

__all__ = ["HDR_READ_MODEL", "HDR_READ_MODEL_INDEX", "investigation_router", "system_bundle"]

Query = Annotated[str | None, QueryParameter()]
#: An entry index or a tree size: at most 2^63-1 (what SQLite and the formats hold).
IndexQuery = Annotated[int | None, QueryParameter(ge=0, le=(1 << 63) - 1)]


def _investigator(request: Request[Any, Any, Any], web: WebContext) -> None:
    web.tokens.authenticate(request.headers.get("authorization"), "investigator")


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except (LedgerError, ValueError) as e:
        raise BadRequest(f"{name}: {e}") from None


#: Response headers of every answer from the read model: whether a projector keeps it
#: current (``live``) or nobody does (``stale``: as the stores stand), and the newest
#: entry it holds. The web app never writes the read model (ledger.views.store.writing).
HDR_READ_MODEL = "Ailedger-Read-Model"
HDR_READ_MODEL_INDEX = "Ailedger-Read-Model-Index"


async def _json(web: WebContext, answer: msgspec.Struct | list[Any]) -> Response[bytes]:
    live = await asyncio.to_thread(iq.writer_active, web.home.state_dir)
    newest = await web.read(lambda view: view.last_index())
    headers = {HDR_READ_MODEL: "live" if live else "stale"}
    if newest is not None:
        headers[HDR_READ_MODEL_INDEX] = str(newest)
    return Response(msgspec.json.encode(answer), media_type="application/json", headers=headers)


@get(
    "/systems",
    summary="Every system with its verdict at a moment (investigator)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def systems(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebContext],
    at: Query = None,
    at_index: IndexQuery = None,
    checkpoint: IndexQuery = None,
) -> Response[bytes]:
    _investigator(request, web)
    when = _moment(at, "at")
    answer = await web.read(
        lambda view: iq.systems(view, at=when, at_index=at_index, checkpoint_size=checkpoint)
    )
    return await _json(web, answer)


@get(
    "/systems/{system:str}",
    summary="One system's verdict and findings (investigator)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def system_status(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebContext],
    system: FromPath[str],
    at: Query = None,
    at_index: IndexQuery = None,
    checkpoint: IndexQuery = None,
) -> Response[bytes]:
    _investigator(request, web)
    when = _moment(at, "at")
    answer = await web.read(
        lambda view: iq.system_status(
            view, system, at=when, at_index=at_index, checkpoint_size=checkpoint
        )
    )
    return await _json(web, answer)


@get(
    "/systems/{system:str}/timeline",
    summary="Who did what to a system (investigator)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def timeline(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebContext],
    system: FromPath[str],
    until: Query = None,
) -> Response[bytes]:
    _investigator(request, web)
    when = _moment(until, "until")
    return await _json(web, await web.read(lambda view: iq.timeline(view, system, until=when)))


@get(
    "/systems/{system:str}/bundle",
    summary="A system's evidence bundle as of a checkpoint (investigator)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def bundle(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebContext],
    system: FromPath[str],
    checkpoint: IndexQuery = None,
) -> Response[bytes]:
    _investigator(request, web)
    name, data = await system_bundle(web, system, checkpoint)
    return Response(
        data,
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


async def system_bundle(
    web: WebContext, system: str, checkpoint: int | None = None
) -> tuple[str, bytes]:
    """A system's evidence bundle (``ailedger/bundle/v1`` with the claimed verdict) as of
    the newest checkpoint or the one of size ``checkpoint``: its file name and bytes
    (the API's download and the UI's; whoever calls it has checked the credential)."""
    if system not in await web.read(lambda view: view.systems()):
        raise iq.NotFound(f"no system {system}")
    signed = await web.checkpoint(checkpoint)
    tree = await web.proof_tree(signed)  # brought up to the checkpoint, root checked
    data = await iq.export_bundle(
        web.nc, tree, web.trust, system=system, checkpoint_size=signed.checkpoint.size
    )
    return f"{system}.{signed.checkpoint.size}.bundle.json", data


@get(
    "/search",
    summary="Entries by signer, subject, type or key (investigator)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def search(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebContext],
    actor: Query = None,
    subject: Query = None,
    type: Query = None,
    key: Query = None,
    after: Annotated[int, QueryParameter(ge=-1, le=(1 << 63) - 1)] = -1,
    limit: Annotated[int, QueryParameter(ge=1, le=iq.MAX_PAGE)] = 100,
) -> Response[bytes]:
    _investigator(request, web)
    answer = await web.read(
        lambda view: iq.search(
            view, actor=actor, subject=subject, type=type, key=key, after=after, limit=limit
        )
    )
    return await _json(web, answer)


@get(
    "/due",
    summary="Open obligations with their deadlines (investigator)",
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def due(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebContext],
    within: Annotated[str, QueryParameter()] = "48h",
    at: Query = None,
    system: Query = None,
) -> Response[bytes]:
    _investigator(request, web)
    try:
        window = iq.parse_window(within)
        when = _moment(at, "at")
        (when or datetime.now(UTC)) + window  # a window past the calendar's end
    except OverflowError:
        raise BadRequest(f"within {within!r} from {at or 'now'} is past the year 9999") from None
    return await _json(
        web, await web.read(lambda view: iq.due(view, window, at=when, system=system))
    )


def investigation_router() -> Router:
    return Router(
        path="/api/v1",
        route_handlers=[systems, system_status, timeline, bundle, search, due],
        tags=["investigation"],
    )
