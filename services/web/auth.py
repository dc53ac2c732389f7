"""Bearer tokens of the HTTP API, bound to an actor or to an investigator's role.

Two kinds of credential (DESIGN §7: "investigation endpoints need a regulator or
auditor credential"; the gateway forwards only for actors it authenticated):

* an **actor** token lets its holder post that actor's signed envelopes to the
  gateway, and nothing else: the gateway refuses an envelope of another actor;
* an **investigator** token (role ``regulator`` or ``auditor``) opens the
  investigation endpoints (systems, status, timeline, search, bundles).

Public endpoints (checkpoints, entries, proofs, schemas, the trust policy) need
none. Tokens are issued by :func:`issue_token` (``ailedger web-token``), shown
once, and never stored: the ledger home keeps only the SHA-256 of each, in
``HOME/web/tokens.json`` (0600), with what it is bound to. A token is 32 random
bytes (``secrets.token_urlsafe``) behind the prefix ``alt_``, so a hash is
enough (nothing to guess). The file is re-read when it changes: issuing or
revoking a token needs no restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ledger.bus.auth import write_private
from ledger.bus.home import Home
from ledger.formats.errors import USAGE, LedgerError
from ledger.formats.keys import SLUG
from ledger.formats.timeutil import SystemClock, format_time
from services.web.problems import CredentialsInvalid, CredentialsMissing, NotPermitted

__all__ = [
    "INVESTIGATOR_ROLES",
    "Principal",
    "TokenError",
    "TokenStore",
    "issue_token",
    "list_tokens",
    "revoke_token",
    "tokens_path",
]

TOKEN_PREFIX: Final = "alt_"
INVESTIGATOR_ROLES: Final = ("regulator", "auditor")
#: A presented token longer than this is not one of ours (and is not hashed).
_MAX_TOKEN = 128

Need = Literal["actor", "investigator"]


class TokenError(LedgerError, ValueError):
    """An HTTP API token cannot be issued or revoked as asked (bad actor name or role,
    unknown token id, unreadable token file)."""

    code = "web_token"
    exit_status = USAGE


@dataclass(frozen=True)
class Principal:
    """Who a bearer token is: an actor (gateway) or an investigator with a role."""

    token_id: str
    kind: Need
    actor: str | None = None
    role: str | None = None
    label: str = ""

    def describe(self) -> str:
        if self.kind == "actor":
            return f"actor {self.actor}"
        return f"{self.role} {self.label}".strip()


def tokens_path(home: Home) -> Path:
    return home.path / "web" / "tokens.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise TokenError(f"cannot read the token file {path}: {e}") from None
    tokens = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(tokens, dict):
        raise TokenError(f"{path} is not a token file (no 'tokens' object)")
    return {k: v for k, v in tokens.items() if isinstance(k, str) and isinstance(v, dict)}


def _write(path: Path, tokens: Mapping[str, Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    text = json.dumps({"tokens": tokens}, indent=2, sort_keys=True) + "\n"
    write_private(path, text.encode())


def issue_token(
    home: Home, *, actor: str | None = None, role: str | None = None, label: str = ""
) -> tuple[str, Principal]:
    """A new token bound to ``actor`` (gateway) or to an investigator ``role``; only its
    hash is stored. Returns the token (shown once) and what it is bound to."""
    if (actor is None) == (role is None):
        raise TokenError("a token is bound either to an actor or to an investigator role")
    if actor is not None and not re.fullmatch(SLUG, actor):
        raise TokenError(f"{actor!r} is not an actor id")
    if role is not None and role not in INVESTIGATOR_ROLES:
        raise TokenError(f"role {role!r}: choose one of {', '.join(INVESTIGATOR_ROLES)}")
    if not home.exists():
        raise TokenError(f"{home.path} is not a ledger home")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = _digest(token)
    record: dict[str, Any] = {"issued": format_time(SystemClock().now()), "label": label}
    if actor is not None:
        record |= {"kind": "actor", "actor": actor}
    else:
        record |= {"kind": "investigator", "role": role}
    path = tokens_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tokens = _read(path)
        tokens[digest] = record
        _write(path, tokens)
    principal = _principal(digest, record)
    assert principal is not None
    return token, principal


def revoke_token(home: Home, token_id: str) -> int:
    """Forget every token whose id (the first hex digits of its hash, as listed) starts
    with ``token_id``; returns how many. An id shorter than 8 digits is refused."""
    if len(token_id) < 8 or not re.fullmatch(r"[0-9a-f]+", token_id):
        raise TokenError("give at least the first 8 hex digits of the token's id")
    path = tokens_path(home)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tokens = _read(path)
        gone = [d for d in tokens if d.startswith(token_id)]
        for d in gone:
            del tokens[d]
        if gone:
            _write(path, tokens)
    return len(gone)


def list_tokens(home: Home) -> list[tuple[Principal, str]]:
    """Every token of the home: what it is bound to, and when it was issued."""
    out = []
    for digest, record in sorted(_read(tokens_path(home)).items()):
        principal = _principal(digest, record)
        if principal is not None:
            out.append((principal, str(record.get("issued", ""))))
    return out


def _principal(digest: str, record: Mapping[str, Any]) -> Principal | None:
    kind, label = record.get("kind"), str(record.get("label", ""))
    if kind == "actor" and isinstance(record.get("actor"), str):
        return Principal(digest[:16], "actor", actor=record["actor"], label=label)
    if kind == "investigator" and record.get("role") in INVESTIGATOR_ROLES:
        return Principal(digest[:16], "investigator", role=record["role"], label=label)
    return None


class TokenStore:
    """The tokens of a ledger home, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._by_digest: dict[str, Principal] = {}

    def _load(self) -> dict[str, Principal]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        with self._lock:
            if stamp != self._stamp:
                tokens = _read(self.path) if stamp != (0, 0, 0) else {}
                found = {d: _principal(d, r) for d, r in tokens.items()}
                self._by_digest = {d: p for d, p in found.items() if p is not None}
                self._stamp = stamp
            return self._by_digest

    def principal(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN:
            return None
        return self._load().get(_digest(token))

    def authenticate(self, authorization: str | None, need: Need) -> Principal:
        """The principal of an ``Authorization: Bearer`` header value, if it may do what
        ``need`` names; else CredentialsMissing / CredentialsInvalid (401) or
        NotPermitted (403)."""
        if not authorization:
            raise CredentialsMissing(
                "this endpoint needs an 'Authorization: Bearer <token>' header "
                + ("(an actor's gateway token)" if need == "actor" else "(an investigator token)")
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CredentialsMissing("the Authorization header is not 'Bearer <token>'")
        principal = self.principal(token.strip())
        if principal is None:
            raise CredentialsInvalid("the bearer token is not one this ledger issued")
        if principal.kind != need:
            raise NotPermitted(
                f"a token of {principal.describe()} does not open this endpoint "
                + (
                    "(it needs an actor's gateway token)"
                    if need == "actor"
                    else "(it needs a regulator or auditor token)"
                )
            )
        return principal
