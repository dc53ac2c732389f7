"""Strict JSON for signed data: one reading of the bytes, whoever reads them.

Parsers disagree on duplicate keys (first wins, last wins, error), so a
document with duplicates could mean different things to the notary and to a
verifier: refuse it. Floats have no exact meaning across languages and
NaN/Infinity are not JSON: refuse them too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ledger.formats.errors import USAGE, LedgerError

__all__ = ["StrictJsonError", "loads"]


class StrictJsonError(LedgerError, ValueError):
    """Bytes that are not strict JSON. ``syntax`` is set when they are not JSON at all."""

    code = "json_invalid"
    exit_status = USAGE

    def __init__(self, message: str, *, syntax: bool = False) -> None:
        super().__init__(message)
        self.syntax = syntax


def _no_float(text: str) -> Any:
    raise StrictJsonError(f"floats are not allowed in signed data: {text}")


def _no_constant(text: str) -> Any:
    raise StrictJsonError(f"{text} is not JSON")


def loads(data: bytes, check: Callable[[str, Any], None] | None = None) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys, floats and NaN; ``check`` sees every pair."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                raise StrictJsonError(f"duplicate key {key!r}")
            if check is not None:
                check(key, value)
            obj[key] = value
        return obj

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJsonError("not UTF-8", syntax=True) from None
    try:
        return json.loads(
            text, object_pairs_hook=pairs, parse_float=_no_float, parse_constant=_no_constant
        )
    except json.JSONDecodeError as e:
        raise StrictJsonError(f"not JSON: {e}", syntax=True) from None
    except RecursionError:
        raise StrictJsonError("nested too deeply") from None
