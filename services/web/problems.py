"""RFC 9457 problem details for every error of the HTTP API.

Each answer that is not a success is ``application/problem+json``::

    {"type": "/api/v1/problems/<code>", "title": "...", "status": 4xx|5xx,
     "detail": "...", "code": "<code>", ...extension members}

``code`` is the stable code of a :class:`~ledger.formats.errors.LedgerError`
(``docs/errors.md``): a reason code of the notary for a rejected submission,
the library's code for a failed check or bad input, or one of the codes of
this module for what only HTTP has (credentials, body size, routing).
``type`` is a relative URI that the API serves: ``GET /api/v1/problems/<code>``
names the code's meaning.

Bad input is never a 500: an exception that is not a :class:`LedgerError` nor
one of Litestar's own HTTP exceptions is a bug, answered as ``internal_error``
without its traceback, and logged.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from ledger.formats.errors import CHECK_FAILED, UNAVAILABLE, USAGE, LedgerError

__all__ = [
    "PROBLEM_JSON",
    "ActorMismatch",
    "BadRequest",
    "BodyTooLarge",
    "CredentialsInvalid",
    "CredentialsMissing",
    "GatewayUnavailable",
    "HttpNotFound",
    "NotPermitted",
    "Problem",
    "WebCannotRun",
    "handle_exception",
    "problem_meaning",
    "problem_response",
    "problem_responses",
    "status_of",
]

log = logging.getLogger("ailedger.web")

PROBLEM_JSON = "application/problem+json"
PROBLEMS_PATH = "/api/v1/problems"


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem details object, with ailedger's ``code``."""

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    #: The notary's signed rejection (``ailedger/rejection/v1``) of a rejected submission.
    rejection: str | None = None
    event_id: str | None = None


class CredentialsMissing(LedgerError, PermissionError):
    """An HTTP request without the bearer token the endpoint needs (401)."""

    code = "credentials_missing"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_401_UNAUTHORIZED


class CredentialsInvalid(LedgerError, PermissionError):
    """An HTTP bearer token that the ledger home does not know (revoked, mistyped) (401)."""

    code = "credentials_invalid"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_401_UNAUTHORIZED


class NotPermitted(LedgerError, PermissionError):
    """A valid HTTP credential that does not allow this request (an actor's gateway
    token on an investigation endpoint, an investigator's token on the gateway) (403)."""

    code = "not_permitted"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_403_FORBIDDEN


class ActorMismatch(LedgerError, PermissionError):
    """An envelope posted to the HTTP gateway whose payload's actor is not the actor
    the bearer token is bound to (403): the gateway forwards only its own actor's events."""

    code = "actor_mismatch"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_403_FORBIDDEN


class BodyTooLarge(LedgerError, ValueError):
    """An HTTP request body over the endpoint's limit (413)."""

    code = "body_too_large"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_413_REQUEST_ENTITY_TOO_LARGE


class BadRequest(LedgerError, ValueError):
    """An HTTP request that is not well formed: a bad parameter, path or body (400)."""

    code = "bad_request"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_400_BAD_REQUEST


class HttpNotFound(LedgerError, LookupError):
    """No such HTTP resource: an unknown path, schema, system or entry (404)."""

    code = "no_such_resource"
    exit_status = USAGE
    http_status: ClassVar[int] = HTTP_404_NOT_FOUND


class GatewayUnavailable(LedgerError, ConnectionError):
    """The HTTP gateway cannot reach the ledger's bus as ``_gateway`` now (503, with
    Retry-After): resubmit the same envelope; nothing was lost."""

    code = "gateway_unavailable"
    exit_status = UNAVAILABLE


class WebCannotRun(LedgerError, RuntimeError):
    """The web app cannot start: no ledger home, no NATS, or a port it cannot listen on."""

    code = "web_cannot_run"
    exit_status = USAGE


#: Library codes whose HTTP status is not the one of their exit status.
_STATUS_BY_CODE: dict[str, int] = {
    "proof_unavailable": HTTP_404_NOT_FOUND,
    "not_found": HTTP_404_NOT_FOUND,  # ledger.bus.investigate.NotFound
    "envelope_invalid": HTTP_400_BAD_REQUEST,
    "event_invalid": HTTP_400_BAD_REQUEST,
    "submission_timeout": HTTP_503_SERVICE_UNAVAILABLE,
    "verdict_unverified": 502,
    "submission_failed": 502,
}


def problem_meaning(code: str) -> str | None:
    """The meaning of a code: the first paragraph of its error class's docstring (every
    reason code of the notary, every error of the modules loaded), or None."""
    import ledger.law.rejections  # noqa: F401  (every reason code)

    stack: list[type[LedgerError]] = [LedgerError]
    while stack:
        cls = stack.pop()
        if vars(cls).get("code") == code:
            doc = (cls.__doc__ or "").strip().split("\n\n")[0]
            return " ".join(doc.split())
        stack.extend(cls.__subclasses__())
    return None


def status_of(error: LedgerError) -> int:
    """The HTTP status of a library error: its own, else by its code, else by its exit status
    (usage: 400, a failed check or a rejection: 422, unavailable: 503)."""
    own = getattr(error, "http_status", None)
    if isinstance(own, int):
        return own
    if error.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[error.code]
    return {
        USAGE: HTTP_400_BAD_REQUEST,
        CHECK_FAILED: HTTP_422_UNPROCESSABLE_ENTITY,
        UNAVAILABLE: HTTP_503_SERVICE_UNAVAILABLE,
    }.get(error.exit_status, HTTP_400_BAD_REQUEST)


_TITLES = {
    400: "Bad request",
    401: "Credentials required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Refused",
    500: "Internal error",
    502: "Bad answer from the notary",
    503: "Unavailable",
}

#: Litestar's own HTTP errors, by status, as codes.
_HTTP_CODES = {
    400: BadRequest.code,
    401: CredentialsMissing.code,
    403: NotPermitted.code,
    404: HttpNotFound.code,
    405: "method_not_allowed",
    413: BodyTooLarge.code,
    415: "unsupported_media_type",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[bytes]:
    problem = Problem(
        type=f"{PROBLEMS_PATH}/{code}",
        title=_TITLES.get(status, "Error"),
        status=status,
        code=code,
        detail=detail,
        **extra,
    )
    all_headers = {"content-type": PROBLEM_JSON, **(headers or {})}
    if status == HTTP_401_UNAUTHORIZED:
        all_headers.setdefault("www-authenticate", 'Bearer realm="ailedger"')
    return Response(msgspec.json.encode(problem), status_code=status, headers=all_headers)


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI: the problem details an endpoint may answer, by status."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_TITLES.get(status, "Error") + " (RFC 9457 problem details, with `code`)",
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every exception of a request, as problem details (the app's only handler)."""
    if isinstance(exc, LedgerError):
        extra: dict[str, Any] = {}
        for name in ("rejection", "event_id"):
            value = getattr(exc, name, None)
            if isinstance(value, str) and value:
                extra[name] = value
        status = status_of(exc)
        # unavailable (no verdict in time, NATS away): the same request may be retried
        retry = {"retry-after": "2"} if status == HTTP_503_SERVICE_UNAVAILABLE else None
        return problem_response(status, exc.code, _one_line(str(exc)), headers=retry, **extra)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, f"http_{status}")
        detail = exc.detail
        extra_info = getattr(exc, "extra", None)
        if status == HTTP_400_BAD_REQUEST and isinstance(extra_info, list) and extra_info:
            # Litestar's validation errors: which parameter, and why
            parts = []
            for item in extra_info[:5]:
                if isinstance(item, dict):
                    key = item.get("key") or item.get("source") or ""
                    parts.append(f"{key}: {item.get('message', '')}".strip(": "))
            if parts:
                detail = f"{detail}: " + "; ".join(parts)
        if status >= HTTP_500_INTERNAL_SERVER_ERROR:
            log.error("HTTP %s on %s: %s", status, request.url.path, exc.detail)
        return problem_response(
            status, code, _one_line(detail), headers=dict(getattr(exc, "headers", None) or {})
        )
    log.exception("bug answering %s %s", request.method, request.url.path)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "an error inside ailedger's web app (logged); this is a bug",
    )
