"""The page handlers: each reads the query layer, then renders one template."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie, ResponseHeader, State
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, FromPath, FromQuery
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.status_codes import (
    HTTP_303_SEE_OTHER,
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_422_UNPROCESSABLE_ENTITY,
)
from litestar.template.config import TemplateConfig

from ledger.bus import investigate
from ledger.bus.proofs import ProofUnavailable
from ledger.formats.errors import LedgerError
from ledger.formats.heads import HeadsLeaf
from ledger.formats.merkle import ProofError
from ledger.formats.timeutil import KZ, format_moment, format_time, parse_moment, parse_time
from ledger.law.rules import VERDICTS
from ledger.verify.bundle import VerificationError, _open_checkpoint, _witness_times
from ledger.views.compliance import ComplianceView
from services.web.app import WebContext
from services.web.auth import Principal
from services.web.investigation import system_bundle
from services.web.problems import CredentialsInvalid, CredentialsMissing, status_of
from services.web.ui.labels import DEFAULT_LANGUAGE, LABELS, labels

__all__ = ["UI_PATHS", "mount", "template_config", "ui_router"]

_HERE = Path(__file__).resolve().parent.parent
TEMPLATES = _HERE / "templates"
STATIC = _HERE / "static"

#: Where the pages link to: the pages themselves and the API's documents.
UI_PATHS: dict[str, str] = {
    "dashboard": "/",
    "system": "/systems/{system}",
    "bundle": "/systems/{system}/bundle",
    "due": "/due",
    "search": "/search",
    "entry": "/entries/{index}",
    "entry_proof": "/api/v1/entries/{index}/proof",
    "entry_raw": "/api/v1/entries/{index}/raw",
    "checkpoint": "/checkpoints/{size}",
    "latest_checkpoint": "/checkpoints",
    "consistency": "/api/v1/proofs/consistency?old={old}&new={new}",
    "checkpoint_note": "/api/v1/checkpoints/{size}",
    "login": "/login",
    "logout": "/logout",
    "api": "/api/v1/openapi.json",
}

DEFAULT_WITHIN = "48h"


@dataclass(frozen=True)
class Cosignature:
    name: str
    key_hash: str
    at: datetime | None
    counted: bool


@dataclass(frozen=True)
class Freshness:
    """How far the read model (the projector's view) is behind LEDGER."""

    view_last: int  # the last entry the view holds (-1: none)
    ledger_size: int  # sealed leaves in LEDGER (entries and the notary's heads leaves)
    behind: int  # entries (not heads leaves) in LEDGER the view does not hold yet
    projector: bool  # a projector keeps the view current (holds the writer's lock)


#: Beyond this many leaves past the view's last entry, the view is behind (not looked at).
_FRESHNESS_LOOKAHEAD = 16


async def _freshness(web: WebContext) -> Freshness:
    """The view's last entry against LEDGER's sealed leaves: leaves after it that are
    heads leaves (the notary's, never rows of the view) do not count as missing."""
    size = await web.catch_up()
    last = await web.read(lambda view: view.last_index())
    last = -1 if last is None else last
    behind = 0
    for index in range(last + 1, size):
        if index > last + _FRESHNESS_LOOKAHEAD:
            behind += size - index
            break
        try:
            leaf, _ = await web.entry(index)
        except ProofUnavailable:  # not readable as a sealed leaf: counted as missing
            behind += 1
            continue
        behind += not isinstance(leaf, HeadsLeaf)
    projector = await asyncio.to_thread(investigate.writer_active, web.home.state_dir)
    return Freshness(last, size, behind, projector)


def _now() -> datetime:
    return datetime.now(UTC)


#: The investigator's token, once signed in (HttpOnly, SameSite=Strict: never sent
#: by another site's page, never read by a script).
SESSION_COOKIE = "ailedger_investigator"


class LoginRequired(Exception):
    """An investigation page asked without a valid investigator token: to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _local_path(text: str | None) -> str:
    """Where to go after signing in: a path of this app, never another site."""
    if not text or not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text


def investigator(request: Request[Any, Any, State], web: WebContext) -> Principal:
    """Who reads an investigation page: the regulator's or an auditor's token from the
    session cookie, judged as the API judges a bearer token (``web.tokens``). No token,
    or one the ledger no longer knows: :class:`LoginRequired`; another kind of token
    (an actor's gateway token): NotPermitted (403)."""
    token = request.cookies.get(SESSION_COOKIE)
    try:
        return web.tokens.authenticate(f"Bearer {token}" if token else None, "investigator")
    except (CredentialsMissing, CredentialsInvalid):
        query = request.url.query
        raise LoginRequired(request.url.path + (f"?{query}" if query else "")) from None


class PageError(HTTPException):
    """A page that cannot be shown, with why (rendered by :func:`_page_error`)."""


def _moment(at: str | None) -> tuple[datetime, str]:
    """The moment ``?at=`` names (default: now) and its text for the date control
    (UTC+5, to the second, as ``<input type=datetime-local>`` shows it)."""
    if at is None or not at.strip():
        return _now(), ""
    try:
        when = parse_moment(at)
    except (LedgerError, ValueError) as e:
        raise PageError(status_code=HTTP_400_BAD_REQUEST, detail=str(e)) from None
    return when, when.astimezone(KZ).strftime("%Y-%m-%dT%H:%M:%S")


def _link(name: str, **values: object) -> str:
    return UI_PATHS[name].format(**values)


def _time(t: datetime | str) -> datetime:
    """A moment as the query layer gives it (RFC 3339 UTC text) or as a datetime."""
    return parse_time(t) if isinstance(t, str) else t


def _kz(t: datetime | str | None) -> str:
    """A moment for the tables: UTC+5, to the minute (the full RFC 3339 in the title)."""
    return "-" if t is None else _time(t).astimezone(KZ).strftime("%Y-%m-%d %H:%M")


def _utc(t: datetime | str) -> str:
    return format_time(_time(t))


def _moment_text(t: datetime | str) -> str:
    return format_moment(_time(t))


def _until(t: datetime | str, at: datetime) -> timedelta:
    """How long from ``at`` until ``t`` (negative: past)."""
    return _time(t) - at


def _left(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{sign}{days}d {hours}h" if days else f"{sign}{hours}h {rest // 60:02d}m"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 on services/web/templates, autoescaped, undefined names an error."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["kz"] = _kz
    env.filters["utc"] = _utc
    env.filters["moment"] = _moment_text
    env.filters["left"] = _left
    env.globals["until"] = _until
    env.globals["link"] = _link
    env.globals["VERDICTS"] = VERDICTS
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


LANGUAGE_COOKIE = "ailedger_lang"


def language(request: Request[Any, Any, State]) -> str:
    """The language of the pages: ``?lang=`` (kept in a cookie), else the cookie, else the
    browser's Accept-Language, among the languages :data:`LABELS` has; else English."""
    asked = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    if asked in LABELS:
        return str(asked)
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()
        for candidate in (code, code.split("-")[0]):
            if candidate in LABELS:
                return candidate
    return DEFAULT_LANGUAGE


def _page(
    request: Request[Any, Any, State], name: str, *, status_code: int = 200, **context: Any
) -> Template:
    lang = language(request)
    asked = request.query_params.get("lang")
    cookies = []
    if asked in LABELS:
        cookies.append(Cookie(key=LANGUAGE_COOKIE, value=lang, path="/", samesite="lax"))
    return Template(
        template_name=name,
        context={"L": labels(lang), "lang": lang, "languages": sorted(LABELS), **context},
        status_code=status_code,
        cookies=cookies,
    )


# --- pages ----------------------------------------------------------------------

#: Indexes are below 2^63 (SQLite's and PostgreSQL's integers).
_MAX_INDEX = 1 << 63

#: Every page: no script, no inline style, nothing from elsewhere, never in a frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

#: Timeline rows on a system's page unless the whole timeline is asked for (the newest).
TIMELINE_ROWS = 500

#: Checkpoints listed on a checkpoint's page (the newest ones).
CHECKPOINT_HISTORY = 20

#: Entries on one page of search results.
SEARCH_PAGE = 50

#: Worst verdict first on the dashboard.
_RANK: dict[str, int] = {v: i for i, v in enumerate(reversed(VERDICTS))}


@get("/", name="ui-dashboard")
async def dashboard(
    request: Request[Any, Any, State],
    web: NamedDependency[WebContext],
    at: FromQuery[str | None] = None,
    verdict: FromQuery[str | None] = None,
) -> Template:
    """Every system's verdict then, worst first, with counts; ``?verdict=`` shows one."""
    who = investigator(request, web)
    when, at_text = _moment(at)
    if verdict is not None and verdict not in VERDICTS:
        raise investigate.BadQuery(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    rows = await web.read(investigate.systems, at=when)
    rows.sort(key=lambda r: (_RANK.get(r.verdict, len(_RANK)), r.system))
    counts: dict[str, int] = {v: 0 for v in VERDICTS}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return _page(
        request,
        "dashboard.html.j2",
        who=who,
        rows=[r for r in rows if verdict is None or r.verdict == verdict],
        verdict=verdict,
        counts=counts,
        at=when,
        at_text=at_text,
        fresh=await _freshness(web),
    )


def _system_page(
    view: ComplianceView, system: str, when: datetime
) -> tuple[investigate.SystemStatus | None, list[investigate.TimelineItem]]:
    """The system's verdict then (None: not registered yet) and its timeline up to then."""
    if system not in view.systems():
        raise investigate.NotFound(f"no system {system}")
    try:
        status: investigate.SystemStatus | None = investigate.system_status(view, system, at=when)
    except investigate.NotFound:  # registered later
        status = None
    try:
        timeline = investigate.timeline(view, system, until=when)
    except investigate.NotFound:
        timeline = []
    return status, timeline


@get("/systems/{system:str}", name="ui-system")
async def system(
    request: Request[Any, Any, State],
    web: NamedDependency[WebContext],
    system: FromPath[str],
    at: FromQuery[str | None] = None,
    full: FromQuery[bool] = False,
) -> Template:
    """The system's verdict, findings and timeline then; a long timeline shows its newest
    :data:`TIMELINE_ROWS` entries unless ``?full=true``."""
    who = investigator(request, web)
    when, at_text = _moment(at)
    status, timeline = await web.read(_system_page, system, when)
    total = len(timeline)
    if not full and total > TIMELINE_ROWS:
        timeline = timeline[-TIMELINE_ROWS:]
    return _page(
        request,
        "system.html.j2",
        fresh=await _freshness(web),
        who=who,
        system=system,
        verdict=status,
        timeline=timeline,
        timeline_total=total,
        at=when,
        at_text=at_text,
    )


@get("/systems/{system:str}/bundle", name="ui-bundle")
async def bundle(
    request: Request[Any, Any, State],
    web: NamedDependency[WebContext],
    system: FromPath[str],
    checkpoint: FromQuery[int | None] = None,
) -> Response[bytes]:
    """The system's evidence bundle as of the newest checkpoint (or ``?checkpoint=N``),
    with the claimed verdict, as ``ailedger export --system S --claim`` writes it."""
    investigator(request, web)
    name, data = await system_bundle(web, system, checkpoint)
    return Response(
        data,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@get("/due", name="ui-due")
async def due(
    request: Request[Any, Any, State],
    web: NamedDependency[WebContext],
    at: FromQuery[str | None] = None,
    within: FromQuery[str] = DEFAULT_WITHIN,
) -> Template:
    who = investigator(request, web)
    when, at_text = _moment(at)
    window = investigate.parse_window(within.strip())  # BadQuery: a 400 page
    report = await web.read(investigate.due, window, at=when)
    return _page(
        request,
        "due.html.j2",
        fresh=await _freshness(web),
        who=who,
        report=report,
        at=when,
        at_text=at_text,
        within=within.strip(),
    )


@get("/search", name="ui-search")
async def search(
    request: Request[Any, Any, State],
    web: NamedDependency[WebContext],
    actor: FromQuery[str | None] = None,
    subject: FromQuery[str | None] = None,
    type: FromQuery[str | None] = None,
    key: FromQuery[str | None] = None,
    after: FromQuery[int] = -1,
) -> Template:
    """Entries by signer, subject, event type and/or key (:func:`investigate.search`),
    a page at a time; an empty form shows only the form."""
    who = investigator(request, web)
    asked = {
        name: value.strip()
        for name, value in (("actor", actor), ("subject", subject), ("type", type), ("key", key))
        if value is not None and value.strip()
    }
    if not -1 <= after < _MAX_INDEX:
        raise investigate.BadQuery(f"after {after}: an entry index or -1")
    found = (
        await web.read(investigate.search, **asked, after=after, limit=SEARCH_PAGE)
        if asked
        else None
    )
    return _page(
        request,
        "search.html.j2",
        who=who,
        asked=asked,
        found=found,
        next_query=urlencode({**asked, "after": found.next_after})
        if found is not None and found.next_after is not None
        else None,
    )


@get("/entries/{index:int}", name="ui-entry")
async def entry(
    request: Request[Any, Any, State], web: NamedDependency[WebContext], index: FromPath[int]
) -> Template:
    """The entry decoded, its signer and key, its batch's seal, and its inclusion proof
    under the newest checkpoint, verified (:func:`ledger.bus.investigate.entry`)."""
    if not 0 <= index < _MAX_INDEX:  # beyond any ledger (and any database integer)
        raise investigate.NotFound(f"no entry {index}")
    await web.catch_up()  # the tree file up to LEDGER's end: the proof appends nothing
    try:
        detail = await investigate.entry(
            web.view(), web.nc, web._tree(), web.trust, index, call=web.call
        )
    except ProofError as e:  # the tree's hashes do not lead to the signed root
        text = labels(language(request))["proof_does_not_verify"]
        raise PageError(
            status_code=HTTP_422_UNPROCESSABLE_ENTITY, detail=text % (index, e)
        ) from None
    return _page(
        request,
        "entry.html.j2",
        e=detail,
        payload=json.dumps(detail.payload, indent=2, ensure_ascii=False),
    )


@get("/checkpoints", name="ui-latest-checkpoint")
async def latest_checkpoint(
    request: Request[Any, Any, State], web: NamedDependency[WebContext]
) -> Template:
    """The newest checkpoint with its witnesses."""
    return await _checkpoint_page(request, web, None)


@get("/checkpoints/{size:int}", name="ui-checkpoint")
async def checkpoint(
    request: Request[Any, Any, State], web: NamedDependency[WebContext], size: FromPath[int]
) -> Template:
    """A checkpoint with its witnesses."""
    return await _checkpoint_page(request, web, size)


async def _checkpoint_page(
    request: Request[Any, Any, State], web: WebContext, size: int | None
) -> Template:
    """A checkpoint with its witnesses: each cosignature, and whether the trust policy
    counts it (its key, within its validity window), as ``ailedger verify`` counts them."""
    try:
        signed = await web.checkpoint(size)
    except ProofUnavailable as e:
        raise PageError(status_code=HTTP_404_NOT_FOUND, detail=str(e)) from None
    try:
        cp, note = _open_checkpoint(signed.note, web.trust, "checkpoint")
        counted = {name: when for name, when in _witness_times(note, web.trust)}
        error = ""
    except VerificationError as e:
        cp, note, counted, error = signed.checkpoint, None, {}, str(e)
    log_names = {k.split("+")[0] for k in web.trust.log_vkeys()}
    cosignatures = []
    if note is not None:
        for sig in (*note.sigs, *note.unverified_sigs):
            if sig.name in log_names:
                continue
            when = counted.get(sig.name)
            cosignatures.append(
                Cosignature(sig.name, f"{sig.key_hash:08x}", when, sig.name in counted)
            )
    sizes = sorted(await web.checkpoint_sizes())
    older = [n for n in sizes if n < cp.size]
    newer = [n for n in sizes if n > cp.size]
    return _page(
        request,
        "checkpoint.html.j2",
        checkpoint=cp,
        root=base64.b64encode(cp.root_hash).decode(),
        previous=older[-1] if older else None,
        following=newer[0] if newer else None,
        history=sizes[-CHECKPOINT_HISTORY:][::-1],
        note=signed.note.decode(),
        cosignatures=cosignatures,
        quorum=web.trust.witness_quorum,
        error=error,
    )


@get("/login", name="ui-login")
async def login_form(
    request: Request[Any, Any, State], next: FromQuery[str | None] = None
) -> Template:
    return _page(request, "login.html.j2", next=_local_path(next), error="")


@post("/login", name="ui-login-post", status_code=HTTP_303_SEE_OTHER)
async def login(
    request: Request[Any, Any, State],
    web: NamedDependency[WebContext],
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    """Sign in with an investigator token (``ailedger web-token issue --role regulator``):
    checked as the API checks it, then kept in an HttpOnly, SameSite=Strict cookie."""
    token = data.get("token", "").strip()
    target = _local_path(data.get("next"))
    try:
        web.tokens.authenticate(f"Bearer {token}" if token else None, "investigator")
    except LedgerError as e:
        status = status_of(e)
        return _page(request, "login.html.j2", status_code=status, next=target, error=str(e))
    return Redirect(
        path=target,
        status_code=HTTP_303_SEE_OTHER,
        cookies=[
            Cookie(
                key=SESSION_COOKIE,
                value=token,
                httponly=True,
                samesite="strict",
                path="/",
                secure=False,  # localhost by default; behind TLS the proxy sets Secure
            )
        ],
    )


@post("/logout", name="ui-logout", status_code=HTTP_303_SEE_OTHER)
async def logout() -> Response[Any]:
    return Redirect(
        path=UI_PATHS["login"],
        status_code=HTTP_303_SEE_OTHER,
        cookies=[Cookie(key=SESSION_COOKIE, value="", max_age=0, path="/", httponly=True)],
    )


def _to_login(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    assert isinstance(exc, LoginRequired)
    return Redirect(
        path=f"{UI_PATHS['login']}?next={quote(exc.next_path, safe='')}",
        status_code=HTTP_303_SEE_OTHER,
    )


def ui_router() -> Router:
    """The pages and their CSS, for the app's ``route_handlers`` (each handler takes the
    app's ``web`` dependency)."""
    static = create_static_files_router(path="/static", directories=[STATIC], name="ui-static")
    return Router(
        path="/",
        route_handlers=[
            dashboard,
            system,
            bundle,
            due,
            search,
            entry,
            latest_checkpoint,
            checkpoint,
            login_form,
            login,
            logout,
            static,
        ],
        include_in_schema=False,
        response_headers=[ResponseHeader(name=k, value=v) for k, v in SECURITY_HEADERS.items()],
        exception_handlers={
            HTTPException: _page_error,
            LedgerError: _page_error,
            LoginRequired: _to_login,
        },
    )


def mount(web: WebContext) -> tuple[list[Router], TemplateConfig[JinjaTemplateEngine]]:
    """What :func:`services.web.app.create_app` adds: the pages and the templates."""
    return [ui_router()], template_config()


def _page_error(request: Request[Any, Any, State], exc: Exception) -> Template:
    if isinstance(exc, LedgerError):
        status, detail = status_of(exc), str(exc)
    elif isinstance(exc, HTTPException):
        status, detail = exc.status_code, exc.detail
    else:  # pragma: no cover - registered for the two above only
        raise exc
    return _page(request, "error.html.j2", status_code=status, status=status, detail=detail)
