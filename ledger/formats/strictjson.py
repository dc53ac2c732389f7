"""Strict JSON for signed data: one reading of the bytes, whoever reads them.

Parsers disagree on duplicate keys (first wins, last wins, error), so a
document with duplicates could mean different things to the notary and to a
verifier: refuse it. Floats have no exact meaning across languages and
NaN/Infinity are not JSON: refuse them too. Integers must fit in 64 bits
(signed or unsigned, as msgspec and other languages read them): a longer run
of digits is malformed, never a conversion error deep inside a parser.
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


#: The widest integer in signed data: int64 below zero, uint64 above.
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1


def _bounded_int(text: str) -> int:
    # 20 digits hold every uint64; checking the length first never converts a
    # huge digit string (Python refuses over 4,300 digits with a ValueError).
    if len(text.lstrip("-")) > 20:
        raise StrictJsonError(f"integer of {len(text)} characters is out of range", syntax=True)
    n = int(text)
    if not MIN_INT <= n <= MAX_INT:
        raise StrictJsonError(f"integer {text} is out of the 64-bit range", syntax=True)
    return n


def _no_constant(text: str) -> Any:
    raise StrictJsonError(f"{text} is not JSON")


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise StrictJsonError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


#: One decoder for every call without ``check`` (json.loads makes one per call).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_float=_no_float,
    parse_int=_bounded_int,
    parse_constant=_no_constant,
)


def loads(data: bytes, check: Callable[[str, Any], None] | None = None) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys, floats, NaN and integers beyond 64
    bits; ``check`` sees every pair."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJsonError("not UTF-8", syntax=True) from None
    try:
        if check is None:
            if text.startswith("\ufeff"):  # as json.loads says it
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
            return _DECODER.decode(text)
        return json.loads(
            text,
            object_pairs_hook=_checking_pairs(check),
            parse_float=_no_float,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as e:
        raise StrictJsonError(f"not JSON: {e}", syntax=True) from None
    except RecursionError:
        raise StrictJsonError("nested too deeply") from None
    except StrictJsonError:
        raise
    except ValueError as e:  # any other conversion the parser could not make
        raise StrictJsonError(f"not JSON: {e}", syntax=True) from None


def _checking_pairs(
    check: Callable[[str, Any], None],
) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                raise StrictJsonError(f"duplicate key {key!r}")
            check(key, value)
            obj[key] = value
        return obj

    return pairs
