"""Published files shipped inside the package: JSON Schemas and example payloads.

The schemas are generated into the repository's ``schemas/`` (``python -m
ailedger.schemas``) and installed as the package ``ailedger.published`` (see
``pyproject.toml``); example payloads, one per event type, live in
``ailedger/examples/``. From a source checkout the schemas are read from
``schemas/`` beside the package.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["example", "example_types", "schema", "schema_names"]


def _schemas() -> Traversable:
    try:
        return importlib.resources.files("ailedger.published")
    except ModuleNotFoundError:  # a source checkout: the generated directory itself
        return Path(__file__).resolve().parent.parent / "schemas"


def _examples() -> Traversable:
    return importlib.resources.files("ailedger") / "examples"


def schema_names() -> list[str]:
    """Names such as ``event``, ``bundle`` or ``events/IncidentReported``."""
    root = _schemas()
    names = [p.name for p in root.iterdir() if p.name.endswith(".schema.json")]
    names += [f"events/{p.name}" for p in (root / "events").iterdir()]
    return sorted(n.removesuffix(".schema.json") for n in names)


def schema(name: str) -> bytes:
    """The published schema ``name`` (see :func:`schema_names`), or KeyError."""
    if name not in schema_names():
        raise KeyError(name)
    return (_schemas() / f"{name}.schema.json").read_bytes()


def example_types() -> list[str]:
    return sorted(
        p.name.removesuffix(".json") for p in _examples().iterdir() if p.name.endswith(".json")
    )


def example(event_type: str) -> bytes:
    """The example payload of ``event_type`` (a complete, valid event), or KeyError."""
    if event_type not in example_types():
        raise KeyError(event_type)
    return (_examples() / f"{event_type}.json").read_bytes()
