"""The architecture is a stack of layers: a lower layer never imports a higher
one, services never import each other, and the offline verifier needs only
``cryptography`` and the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Lowest first. A module may import its own layer and the layers before it.
LAYERS = [
    "ledger.formats",
    "ledger.law",
    "ledger.verify",
    "ledger.state",
    "ledger.views",
    "ledger.bus",
    "services",
    "ailedger",
]
#: Modules of ``services`` that are shared code, not services of their own.
SHARED_BY_SERVICES = {"httpserve"}
#: The verifier is audited by third parties: it may use these layers only.
VERIFIER_MAY_USE = {"ledger.formats", "ledger.law", "ledger.verify"}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _layer(module: str) -> str | None:
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def layering_violations(root: Path) -> list[str]:
    out = []
    sources = sorted(
        p for top in ("ledger", "services", "ailedger") for p in (root / top).rglob("*.py")
    )
    for path in sources:
        module = _module_name(path, root)
        layer = _layer(module)
        if module == "ledger":  # the package's map of the layers: it imports none of them
            layer = LAYERS[0]
        if layer is None:
            out.append(f"{module} belongs to no layer: put it in one of {LAYERS}")
            continue
        seen: set[tuple[str, str]] = set()
        for imported in sorted(_imports(path)):  # shortest first: one line per import
            target = _layer(imported)
            if target is None or (imported.rpartition(".")[0], target) in seen:
                continue
            seen.add((imported, target))
            if LAYERS.index(target) > LAYERS.index(layer):
                out.append(f"{module} ({layer}) imports {imported} ({target}), a higher layer")
            if layer == "services" and target == "services":
                mine, theirs = module.split(".")[1], imported.split(".")
                if len(theirs) > 1 and theirs[1] != mine and theirs[1] not in SHARED_BY_SERVICES:
                    out.append(f"service {module} imports another service: {imported}")
            if layer == "ledger.verify" and target not in VERIFIER_MAY_USE:
                out.append(f"the verifier {module} imports {imported}")
    return out


def test_no_layer_imports_a_higher_one() -> None:
    assert layering_violations(ROOT) == []


def test_the_layer_check_catches_violations(tmp_path: Path) -> None:
    """The check above must fail for the reasons it names: plant violations."""
    planted = {
        "ledger/formats/bad.py": "from ledger.bus.streams import connect\n",
        "ledger/law/lazy.py": "def f():\n    import services.notary\n",
        "ledger/verify/leak.py": "from ledger.state.domain import EventRecord\n",
        "services/one.py": "from services.two import thing\n",
        "ledger/stray.py": "x = 1\n",
        "ledger/formats/fine.py": "from ledger.formats.note import Note\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = "\n".join(layering_violations(tmp_path))
    assert "ledger.formats.bad (ledger.formats) imports ledger.bus.streams" in found
    assert "ledger.law.lazy (ledger.law) imports services.notary" in found
    assert "ledger.verify.leak (ledger.verify) imports ledger.state.domain" in found
    assert "service services.one imports another service: services.two" in found
    assert "ledger.stray belongs to no layer" in found
    assert "fine" not in found
    assert len(found.splitlines()) == 6  # the leak breaks two rules


@pytest.mark.parametrize(
    "modules",
    [
        "ledger.verify, ledger.formats.receipt, ledger.formats.trust, ledger.formats.entry",
        "ledger.formats.dsse, ledger.formats.checkpoint, ledger.law.rules, ledger.law.authority",
        "ledger.law.admission",
    ],
)
def test_the_verification_core_needs_only_cryptography(modules: str) -> None:
    """Third parties audit ledger.verify: it must import without msgspec,
    eventsourcing, nats-py or the CLI's libraries."""
    code = (
        "import sys\n"
        "for m in ('msgspec', 'eventsourcing', 'nats', 'typer', 'rich', 'psycopg'):\n"
        "    sys.modules[m] = None\n"
        f"import {modules}\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr
