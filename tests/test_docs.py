"""The documentation is checked like code.

- every event type of the catalogue has a ``### <Type>`` section in
  docs/events.md whose ```json example decodes strictly and equals the example
  payload shipped in the package;
- every ``ailedger <command>`` written in README.md and docs/*.md (in code
  spans and code blocks) names a command of the CLI;
- every relative link in README.md and docs/*.md points to a file that
  exists, and every ``#anchor`` to a heading of its target.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from ailedger.cli import app
from ailedger.resources import example
from ledger.law.events import EVENT_TYPES, decode_event

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.S | re.M)
_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_COMMAND = re.compile(r"[a-z][a-z0-9-]*")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _without_code(text: str) -> str:
    """The prose of a page: fenced blocks and inline code removed."""
    return _SPAN.sub("", _FENCE.sub("", text))


def _section(text: str, heading: str) -> str:
    """The body under ``heading`` (a full heading line), up to the next heading of its level or
    higher."""
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", text, re.M)
    assert match, f"no section {heading!r}"
    rest = text[match.end() :]
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"^#{{1,{level}}} ", _blank_fences(rest), re.M)
    return rest if following is None else rest[: following.start()]


def _blank_fences(text: str) -> str:
    """``text`` with every fenced block replaced by as many spaces (offsets kept)."""
    return _FENCE.sub(lambda m: " " * len(m.group(0)), text)


# --- (a) the event catalogue's examples --------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_has_its_example_in_events_md(event_type: str) -> None:
    body = _section(_text(DOCS / "events.md"), f"### {event_type}")
    blocks = re.findall(r"^```json\n(.*?)^```", body, re.S | re.M)
    assert len(blocks) == 1, f"### {event_type} needs exactly one ```json example"
    documented = decode_event(blocks[0].encode())
    assert documented == decode_event(example(event_type))
    assert documented.type_name == event_type


def test_events_md_documents_no_unknown_type() -> None:
    text = _blank_fences(_text(DOCS / "events.md"))
    section = _section(text, "## The types")
    headings = re.findall(r"^### (\S+)$", section, re.M)
    assert sorted(headings) == sorted(EVENT_TYPES)


# --- (b) the commands named in the documentation ------------------------------------


def _commands_named(text: str) -> set[str]:
    """``ailedger <command>`` in code blocks (lines, ``$ `` prompts allowed) and code spans."""
    found: set[str] = set()
    candidates: list[str] = []
    for block in _FENCE.finditer(text):
        candidates += block.group(0).splitlines()[1:-1]
    candidates += [m.group(2) for m in _SPAN.finditer(_FENCE.sub("", text))]
    for line in candidates:
        words = line.strip().removeprefix("$ ").split()
        # a command name is a word: `ailedger actor: bank` (a key file's header) is not one
        if len(words) >= 2 and words[0] == "ailedger" and _COMMAND.fullmatch(words[1]):
            found.add(words[1])
    return found


def test_commands_named_in_the_documentation_exist() -> None:
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    missing = {
        f"{page.relative_to(ROOT)}: ailedger {name}"
        for page in PAGES
        for name in _commands_named(_text(page))
        if name not in commands
    }
    assert not missing, f"commands the CLI does not have: {sorted(missing)}"


def test_the_command_scan_sees_commands() -> None:
    named = _commands_named(
        "`ailedger verify B --trust T`\n\n```console\n$ ailedger status --at 2026-08-31\n"
        "ailedger/entry/v1\n  ailedger export -o x\n```\n`ailedger`\n`ailedger actor: bank`\n"
        "`ailedger verfy x`\n"
    )
    assert named == {"verify", "status", "export", "verfy"}


# --- (c) links -------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, heading in _HEADING.findall(_blank_fences(_text(page))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(page: Path) -> list[str]:
    return _LINK.findall(_without_code(_text(page)))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_documentation_is_linked_from_the_readme() -> None:
    targets = {t.partition("#")[0] for t in _links(ROOT / "README.md")}
    assert {"docs/formats.md", "docs/events.md", "docs/time.md"} <= targets


def test_the_slugs_are_githubs() -> None:
    assert _slug("Freshness of `signed_at`") == "freshness-of-signed_at"
    assert _slug("The notary's invariants") == "the-notarys-invariants"
    assert _slug("Inclusion proof (C2SP tlog-proof)") == "inclusion-proof-c2sp-tlog-proof"
    assert _slug("R1: in operation without a risk classification") == (
        "r1-in-operation-without-a-risk-classification"
    )
