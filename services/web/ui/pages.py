"""The page handlers: each reads the query layer, then renders one template."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_404_NOT_FOUND
from litestar.template.config import TemplateConfig

from ledger.formats.errors import LedgerError
from ledger.formats.timeutil import KZ, format_moment, format_time, parse_moment
from ledger.law.rules import VERDICTS
from ledger.views.compliance import ComplianceView
from services.web.ui import source
from services.web.ui.labels import DEFAULT_LANGUAGE, labels

__all__ = ["UI_PATHS", "Workbench", "template_config", "ui_router"]

_HERE = Path(__file__).resolve().parent.parent
TEMPLATES = _HERE / "templates"
STATIC = _HERE / "static"

#: Where the pages link to: the pages themselves and the API's documents.
UI_PATHS: dict[str, str] = {
    "dashboard": "/",
    "system": "/systems/{system}",
    "bundle": "/systems/{system}/bundle",
    "due": "/due",
    "entry": "/entries/{index}",
    "entry_proof": "/api/v1/entries/{index}/proof",
    "checkpoint": "/checkpoints/{size}",
    "latest_checkpoint": "/checkpoints",
    "api": "/schema",
}

DEFAULT_WITHIN = "48h"
_DURATION = re.compile(r"(\d{1,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass
class Workbench:
    """What the pages read: the compliance view, opened by whoever runs the app."""

    view: Callable[[], ComplianceView]
    language: str = DEFAULT_LANGUAGE
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class PageError(HTTPException):
    """A page that cannot be shown, with why (rendered by :func:`_error_page`)."""


def parse_within(text: str) -> timedelta:
    """``48h``, ``90m``, ``7d``, ``2w``."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (give 90m, 48h, 7d or 2w)")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _moment(bench: Workbench, at: str | None) -> tuple[datetime, str]:
    """The moment ``?at=`` names (default: now) and its text for the date control
    (UTC+5, to the second, as ``<input type=datetime-local>`` shows it)."""
    if at is None or not at.strip():
        return bench.clock(), ""
    try:
        when = parse_moment(at)
    except (LedgerError, ValueError) as e:
        raise PageError(status_code=HTTP_400_BAD_REQUEST, detail=str(e)) from None
    return when, when.astimezone(KZ).strftime("%Y-%m-%dT%H:%M:%S")


def _link(name: str, **values: object) -> str:
    return UI_PATHS[name].format(**values)


def _kz(t: datetime | None) -> str:
    """A moment for the tables: UTC+5, to the minute (the full RFC 3339 in the title)."""
    return "-" if t is None else t.astimezone(KZ).strftime("%Y-%m-%d %H:%M")


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
    env.filters["utc"] = format_time
    env.filters["moment"] = format_moment
    env.filters["left"] = _left
    env.globals["link"] = _link
    env.globals["VERDICTS"] = VERDICTS
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def _page(bench: Workbench, name: str, **context: Any) -> Template:
    return Template(
        template_name=name,
        context={"L": labels(bench.language), "lang": bench.language, **context},
    )


# --- pages ----------------------------------------------------------------------


@get("/", name="ui-dashboard", sync_to_thread=True)
def dashboard(bench: Workbench, at: str | None = None) -> Template:
    when, at_text = _moment(bench, at)
    rows = source.dashboard(bench.view(), when)
    counts = {v: 0 for v in VERDICTS}
    for r in rows:
        if r.verdict is not None:
            counts[r.verdict.verdict] += 1
    return _page(bench, "dashboard.html.j2", rows=rows, counts=counts, at=when, at_text=at_text)


@get("/systems/{system:str}", name="ui-system", sync_to_thread=True)
def system(bench: Workbench, system: str, at: str | None = None) -> Template:
    when, at_text = _moment(bench, at)
    try:
        verdict, timeline = source.system_page(bench.view(), system, when)
    except LookupError as e:
        raise PageError(status_code=HTTP_404_NOT_FOUND, detail=str(e)) from None
    return _page(
        bench,
        "system.html.j2",
        system=system,
        verdict=verdict,
        timeline=timeline,
        at=when,
        at_text=at_text,
    )


@get("/due", name="ui-due", sync_to_thread=True)
def due(bench: Workbench, at: str | None = None, within: str = DEFAULT_WITHIN) -> Template:
    when, at_text = _moment(bench, at)
    try:
        window = parse_within(within)
    except ValueError as e:
        raise PageError(status_code=HTTP_400_BAD_REQUEST, detail=str(e)) from None
    rows = source.due(bench.view(), when, window)
    return _page(bench, "due.html.j2", rows=rows, at=when, at_text=at_text, within=within.strip())


@get("/entries/{index:int}", name="ui-entry", sync_to_thread=True)
def entry(bench: Workbench, index: int) -> Template:
    view = bench.view()
    row = view.view.row(index)
    if row is None:
        raise PageError(status_code=HTTP_404_NOT_FOUND, detail=f"no entry {index}")
    fact = row.fact()
    signer = view.signer(index)
    return _page(
        bench,
        "entry.html.j2",
        index=index,
        fact=fact,
        payload=json.dumps(fact.payload, indent=2, ensure_ascii=False),
        signer=signer,
        key_status=signer.key_status(bench.clock()),
        proof=None,
    )


def ui_router(bench: Workbench, *, guards: list[Any] | None = None) -> Router:
    """The pages and their CSS, for the app's ``route_handlers``."""
    static = create_static_files_router(path="/static", directories=[STATIC], name="ui-static")
    return Router(
        path="/",
        route_handlers=[dashboard, system, due, entry, static],
        dependencies={"bench": Provide(lambda: bench, sync_to_thread=False)},
        include_in_schema=False,
        guards=guards,
        exception_handlers={PageError: _page_error, NotFoundException: _page_error},
    )


def _page_error(request: Request[Any, Any, State], exc: HTTPException) -> Template:
    bench = request.app.state.get("workbench")
    language = bench.language if isinstance(bench, Workbench) else DEFAULT_LANGUAGE
    return Template(
        template_name="error.html.j2",
        context={
            "L": labels(language),
            "lang": language,
            "status": exc.status_code,
            "detail": exc.detail,
        },
        status_code=exc.status_code,
    )
