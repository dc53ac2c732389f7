"""The web UI in a real browser: Debian's chromium driven by Playwright (no downloaded
browser), on the demo scenario played through a real notary, nats-server and witness,
the app served by uvicorn on a free port with the notary stopped.

An investigator opens the dashboard, opens the non-compliant credit-scorer, moves the
date back to before its incident and sees the verdict change, opens an entry and sees
its inclusion proof verified, downloads the evidence bundle and verifies it with
``ailedger verify``. Screenshots are kept in the test's tmp directory (and the system
page's in docs/img/ for the README). With $CI set, a missing chromium fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ailedger.demo import play
from ailedger.scenario import START, Scenario
from ledger.bus.auth import GATEWAY, READER
from ledger.bus.home import Home, init_home
from ledger.bus.streams import connect
from ledger.formats.checkpoint import parse_tlog_proof
from ledger.formats.entry import Entry
from ledger.formats.timeutil import SimulatedClock
from ledger.state.persistence import store_envs
from services.projector import rebuild
from services.web.app import WebConfig, serve_web
from services.web.auth import issue_token
from services.witness.service import start_local_witness
from tests.conftest import authorized_server, running_notary, serving

CHROMIUM = Path(os.environ.get("AILEDGER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
#: The README's picture, rewritten only when asked (AILEDGER_README_SCREENSHOT=1): the
#: system page as of a fixed moment, so that it changes only when the page does.
README_SCREENSHOT = ROOT / "docs" / "img" / "workbench-system.png"
README_MOMENT = "2026-08-10T12:00:00"
SYSTEM = "credit-scorer"


def _browser_missing(why: str) -> None:
    """Without a browser the test cannot run: a failure in CI, a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI: `apt-get install -y chromium` and the test extra)")
    pytest.skip(why)


@dataclass
class Workbench:
    url: str
    url_nats: str
    home: Home
    regulator_token: str
    actor_token: str


def _play_scenario(home: Home, url: str) -> None:
    """The DOMAIN.md scenario through a notary on a simulated clock, cosigned by the
    home's local witness, one checkpoint at the end; then the notary and witness stop
    and the read model is rebuilt from LEDGER."""

    async def run() -> None:
        clock = SimulatedClock(START)
        stop = asyncio.Event()
        witness_url, witness_task = await start_local_witness(home, stop, clock)
        try:
            async with running_notary(
                url,
                home,
                clock,
                witnesses=[witness_url],
                checkpoint_interval=3600.0,
                checkpoint_every=100_000,
            ) as harness:
                outcomes = await play(
                    url, home, Scenario(home.regulator_key()), clock, notary=harness.notary
                )
                wrong = [o for o in outcomes if not o.as_expected]
                assert not wrong, wrong
                assert await harness.notary.checkpoint() is not None
        finally:
            stop.set()
            await witness_task
        nc = await connect(url, **home.bus_identity(READER))
        try:
            state_env, view_env = store_envs(home.state_dir)
            await rebuild(nc, home, state_env, view_env)
        finally:
            await nc.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def workbench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    tmp = tmp_path_factory.mktemp("webui")
    home = init_home(tmp / "home", origin="webui.ailedger.kz/test", at=START, local_witness=True)
    home.identities().ensure(GATEWAY)
    with serving(authorized_server(tmp / "nats", home), home) as server:
        _play_scenario(home, server.url)
        regulator_token, _ = issue_token(home, role="regulator", label="browser test")
        actor_token, _ = issue_token(home, actor="bank")
        # The web app alone (no notary): uvicorn on a free port, in its own thread.
        ready = threading.Event()
        state: dict[str, Any] = {}

        def on_ready(url: str) -> None:
            state["url"] = url
            ready.set()

        async def main() -> None:
            state["loop"] = asyncio.get_running_loop()
            state["stop"] = stop = asyncio.Event()
            await serve_web(WebConfig(home, server.url), stop, port=0, on_ready=on_ready)

        def thread() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:
                state["error"] = e
                ready.set()

        t = threading.Thread(target=thread, name="webui-server", daemon=True)
        t.start()
        assert ready.wait(60), "the web app did not start within 60 s"
        if "error" in state:
            raise state["error"]
        try:
            yield Workbench(state["url"], server.url, home, regulator_token, actor_token)
        finally:
            state["loop"].call_soon_threadsafe(state["stop"].set)
            t.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _browser_missing(f"no chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("the playwright package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_an_investigator_follows_a_non_compliant_system_in_the_browser(
    workbench: Workbench, browser: Any, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context = browser.new_context(
        viewport={"width": 1366, "height": 900}, locale="en-GB", accept_downloads=True
    )
    page = context.new_page()
    problems: list[str] = []  # console errors (a CSP violation, a missing stylesheet ...)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        # Investigation pages need a regulator's or auditor's token: to the login page,
        # where a mistyped token and an actor's gateway token are refused with the reason.
        page.goto(workbench.url + "/")
        page.wait_for_url(re.compile(r"/login\?next=%2F$"))
        for token, status, reason in [
            ("alt_not-a-token", 401, "not one this ledger issued"),
            (workbench.actor_token, 403, "does not open this endpoint"),
        ]:
            page.fill("#token", token)
            with page.expect_response(re.compile("/login$")) as answer:
                page.click("form.login button")
            assert answer.value.status == status
            assert reason in page.locator(".error-detail").inner_text()
        page.screenshot(path=str(shots / "0-login.png"), full_page=True)
        problems.clear()  # the two refusals above are the browser's console errors
        _sign_in(page, workbench)

        # The dashboard: counts by verdict, the systems worst first.
        page.wait_for_url(workbench.url + "/")
        assert page.title().startswith("AI systems by verdict")
        assert "regulator browser test" in page.locator(".who").inner_text()
        css = page.evaluate("getComputedStyle(document.querySelector('header.top')).display")
        assert css == "flex"  # the stylesheet applies under the page's CSP
        freshness = page.locator("#freshness").inner_text()
        assert freshness.startswith("Read model up to date: entries up to #")
        assert "No projector is running" in freshness  # the test runs none
        non_compliant = int(page.locator('[data-count="non_compliant"]').inner_text())
        assert non_compliant >= 1
        row = page.locator("table.data tbody tr", has=page.locator(f'a:text-is("{SYSTEM}")'))
        assert row.locator("[data-verdict]").get_attribute("data-verdict") == "non_compliant"
        page.screenshot(path=str(shots / "1-dashboard.png"), full_page=True)
        page.click("li.count.v-non_compliant a")  # only the non-compliant systems
        shown = page.locator("table.data tbody tr [data-verdict]")
        assert shown.count() == non_compliant
        assert set(shown.evaluate_all("els => els.map(e => e.dataset.verdict)")) == {
            "non_compliant"
        }
        page.click("#all-verdicts")

        # The system: non-compliant now, its R5 finding cites the incident and the law.
        page.click(f'a:text-is("{SYSTEM}")')
        page.wait_for_url(re.compile(f"/systems/{SYSTEM}"))
        assert _verdict(page) == "non_compliant"
        findings = page.locator("table.findings tbody tr")
        assert findings.count() >= 1
        r5 = findings.filter(has_text="R5")
        assert r5.count() == 1 and "Law No." in r5.locator("td.basis").inner_text()
        incident = page.locator("table.timeline tbody tr", has_text="IncidentReported")
        assert incident.count() == 1
        assert "verified" in incident.inner_text()
        page.screenshot(path=str(shots / "2-system-now.png"), full_page=True)
        page.emulate_media(media="print")  # printed for a file: findings, not controls
        assert not page.locator("form.moment").is_visible()
        assert page.locator("table.findings").is_visible()
        page.emulate_media(media="screen")
        if os.environ.get("AILEDGER_README_SCREENSHOT"):
            page.goto(f"{workbench.url}/systems/{SYSTEM}?at={README_MOMENT}")
            assert _verdict(page) == "non_compliant"
            page.screenshot(path=str(README_SCREENSHOT))
            page.goto(f"{workbench.url}/systems/{SYSTEM}")

        # Back to April 1st, before the incident: compliant, and no incident yet.
        page.fill("#at", "2026-04-01T12:00:00")
        page.click("form.moment button[type=submit]")
        page.wait_for_url(re.compile(r"at=2026-04-01T12"))
        assert _verdict(page) == "compliant"
        assert "2026-04-01 12:00:00 UTC+5" in page.locator("#as-of").inner_text()
        assert page.locator("table.timeline tbody tr", has_text="IncidentReported").count() == 0
        assert page.locator("table.findings").count() == 0
        page.screenshot(path=str(shots / "3-system-before-incident.png"), full_page=True)

        # Forward again; the incident's entry, with its proof verified under the checkpoint.
        page.click("a.button.secondary:text-is('Now')")
        assert _verdict(page) == "non_compliant"
        page.locator("table.timeline tbody tr", has_text="IncidentReported").locator(
            "td.num a"
        ).click()
        page.wait_for_url(re.compile(r"/entries/\d+$"))
        assert "IncidentReported" in page.locator("h1").inner_text()
        status = page.locator("#proof-status")
        assert "proof-ok" in (status.get_attribute("class") or ""), status.inner_text()
        assert status.inner_text().startswith("✔ Verified")
        assert page.locator("ol.hashes li").count() >= 1
        assert page.locator("#key-status").inner_text() == "valid"
        page.screenshot(path=str(shots / "4-entry.png"), full_page=True)
        proof_href = page.locator("a:text-is('Download tlog-proof')").get_attribute("href")
        proof = parse_tlog_proof(page.request.get(workbench.url + str(proof_href)).body())
        shown = page.locator("ol.hashes li").all_inner_texts()
        assert [base64.b64encode(h).decode() for h in proof.proof] == shown
        raw_href = page.locator('a:text-is("Download the entry\'s bytes")').get_attribute("href")
        raw = page.request.get(workbench.url + str(raw_href)).body()
        assert Entry.parse(raw).index == int(page.url.rsplit("/", 1)[1])

        # Everything the bank signed: the search the signer's name links to.
        entry_url = page.url
        page.click("a[title='Every entry this actor signed']")
        page.wait_for_url(re.compile(r"/search\?actor=bank$"))
        results = page.locator("table.results tbody tr")
        assert results.count() >= 5
        assert results.filter(has=page.locator("td.num a:text-is('30')")).count() == 1
        actors = {results.nth(i).locator("td").nth(3).inner_text() for i in range(results.count())}
        assert actors == {"bank"}
        page.screenshot(path=str(shots / "4b-search.png"), full_page=True)
        page.goto(entry_url)

        # The checkpoint the proof is under: its witness counted by the trust policy.
        page.locator("#proof-status a").click()
        page.wait_for_url(re.compile(r"/checkpoints/\d+$"))
        assert int(page.locator("#counted").inner_text()) >= 1
        size = page.url.rsplit("/", 1)[1]
        assert page.locator("ul.history li strong").inner_text() == size
        link = page.locator("a:text-is('Download the signed note')").get_attribute("href")
        note = page.request.get(workbench.url + str(link))
        shown = page.locator("pre.note").inner_text()
        assert note.ok and note.text().strip() == shown.strip() and "— " in shown
        page.screenshot(path=str(shots / "5-checkpoint.png"), full_page=True)

        # Due soon: on Mar 3 at 11:00 UTC the traffic optimiser's measure after its
        # incident falls due in an hour and a half (due, not yet overdue); once the
        # measure is recorded (next day) it is no longer due.
        page.goto(workbench.url + "/due?at=2026-03-03T11:00:00Z&within=48h")
        r5 = page.locator("table.due tbody tr", has_text="traffic-optimiser").filter(has_text="R5")
        assert r5.count() == 1
        assert "due-due" in (r5.get_attribute("class") or "")
        assert r5.locator("td.left").inner_text() == "1h 30m"
        assert int(page.locator("#due-count").inner_text().split()[0]) >= 1
        page.screenshot(path=str(shots / "6-due.png"), full_page=True)
        page.fill("#at", "2026-03-04T12:00:00")
        page.click("form.moment button[type=submit]")
        page.wait_for_url(re.compile(r"at=2026-03-04T12"))
        later = page.locator("table.due tbody tr", has_text="traffic-optimiser")
        assert later.filter(has_text="R5").count() == 0

        # The evidence bundle, downloaded from the system page and verified offline.
        page.goto(f"{workbench.url}/systems/{SYSTEM}")
        with page.expect_download() as download:
            page.click("#download-bundle")
        bundle = tmp_path / download.value.suggested_filename
        download.value.save_as(bundle)
        assert bundle.name.startswith(SYSTEM) and bundle.name.endswith(".bundle.json")
        verified = subprocess.run(
            [
                sys.executable,
                "-m",
                "ailedger",
                "verify",
                str(bundle),
                "--trust",
                str(workbench.home.trust_path),
                "--no-pin",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stderr
        assert "VERIFIED" in verified.stdout
        assert f"{SYSTEM}: non_compliant" in verified.stdout

        for link in page.locator("nav a").evaluate_all("els => els.map(e => e.href)"):
            assert page.request.get(link).ok, link  # every link of the header answers
        assert not problems, problems

        # Signed out: the investigation pages and the bundle are closed again.
        page.click("form.logout button")
        page.wait_for_url(re.compile("/login$"))
        for path in ("/", f"/systems/{SYSTEM}", f"/systems/{SYSTEM}/bundle", "/due", "/search"):
            response = page.goto(workbench.url + path)
            assert response is not None and response.status == 200
            assert re.search(r"/login\?next=", page.url), path
            assert page.locator("#token").count() == 1
    finally:
        context.close()
        print(f"screenshots: {shots}")


def test_pages_answer_bad_input_with_a_reason_not_a_500(workbench: Workbench, browser: Any) -> None:
    page = browser.new_page()
    try:
        login = page.goto(f"{workbench.url}/login")
        assert login is not None
        headers = login.headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        _sign_in(page, workbench)
        for path, status, reason in [
            ("/?at=yesterday", 400, "not a date or time"),
            ("/systems/no-such-system", 404, "no system no-such-system"),
            ("/due?within=soon", 400, "is not a window"),
            ("/entries/100000", 404, "no entry 100000"),
            ("/checkpoints/999999", 404, "no checkpoint of size 999999"),
            ("/systems/no-such-system/bundle", 404, "no system no-such-system"),
            ("/entries/99999999999999999999999", 404, "no entry 99999999999999999999999"),
            ("/checkpoints/99999999999999999999999", 404, "no checkpoint of size"),
            ("/?at=0001-01-01", 400, "nothing is recorded before"),
            ("/?verdict=fine", 400, "verdict 'fine'"),
            ("/due?at=9999-12-31T23:59:59&within=2w", 400, None),
            ("/due?within=99999999999999999999w", 400, None),
            ("/due?within=0h", 200, None),
            ("/systems/credit-scorer?at=9999-12-31T23:59:59", 200, None),
            ("/systems/credit-scorer?at=2026-04-01T12:00:00%2B14:00", 200, None),
            ("/due?at=9999-12-31T23:59:59&within=0m", 200, None),
            ("/?at=9999-12-31T23:59:59", 200, None),
            ("/systems/%3Cscript%3Ex", 404, "no system <script>x"),
            ("/systems/credit-scorer?at=2026-13-01", 400, "not a date or time"),
            ("/systems/credit-scorer/bundle?checkpoint=5", 404, "no checkpoint of size 5"),
            ("/search?actor=bank&after=x", 400, "after"),
            ("/search?actor=bank&after=-5", 400, "after -5"),
        ]:
            response = page.goto(workbench.url + path)
            assert response is not None and response.status == status, path
            if reason is not None:
                assert reason in page.locator(".error-detail").inner_text(), path
    finally:
        page.close()


def _sign_in(page: Any, workbench: Workbench) -> None:
    page.fill("#token", workbench.regulator_token)
    page.click("form.login button")


def _verdict(page: Any) -> str:
    verdict = page.locator("#verdict [data-verdict]").get_attribute("data-verdict")
    assert isinstance(verdict, str)
    return verdict


def test_an_entry_whose_proof_does_not_verify_is_said_so(
    workbench: Workbench, browser: Any
) -> None:
    """A stored hash of the tree flipped on disk (the sibling of entry 30): its page says
    the proof does not verify, never "Verified"; restored, it verifies again."""
    from ledger.formats.merkle import stored_hash_index

    tree = workbench.home.tree_path
    offset = stored_hash_index(0, 31) * 32
    original = tree.read_bytes()[offset : offset + 32]
    page = browser.new_page()
    try:
        with tree.open("r+b") as f:
            f.seek(offset)
            f.write(bytes(b ^ 0xFF for b in original))
        response = page.goto(f"{workbench.url}/entries/30")
        assert response is not None and response.status == 422
        assert "does NOT verify" in page.locator(".error-detail").inner_text()
        assert page.locator("#proof-status").count() == 0
    finally:
        with tree.open("r+b") as f:
            f.seek(offset)
            f.write(original)
    try:
        page.goto(f"{workbench.url}/entries/30")
        assert page.locator("#proof-status").inner_text().startswith("✔ Verified")
    finally:
        page.close()


def test_search_results_come_a_page_at_a_time(
    workbench: Workbench, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.web.ui import pages

    monkeypatch.setattr(pages, "SEARCH_PAGE", 3)
    page = browser.new_page()
    try:
        page.goto(f"{workbench.url}/login?next=%2Fsearch%3Factor%3Dbank")
        _sign_in(page, workbench)
        page.wait_for_url(re.compile(r"/search\?actor=bank$"))
        seen: list[int] = []
        while True:
            cells = page.locator("table.results tbody tr td.num")
            seen += [int(t) for t in cells.all_inner_texts()]
            if page.locator("#next-page").count() == 0:
                break
            page.click("#next-page")
        assert len(seen) >= 5 and seen == sorted(set(seen))
        assert 30 in seen
    finally:
        page.close()


def test_a_long_timeline_shows_its_newest_entries_first_then_all(
    workbench: Workbench, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.web.ui import pages

    monkeypatch.setattr(pages, "TIMELINE_ROWS", 4)
    page = browser.new_page()
    try:
        page.goto(f"{workbench.url}/login?next=%2Fsystems%2F{SYSTEM}")
        _sign_in(page, workbench)
        page.wait_for_url(re.compile(f"/systems/{SYSTEM}$"))
        rows = page.locator("table.timeline tbody tr td.num a").all_inner_texts()
        total = int(page.locator("#timeline-cut").inner_text().split(" of ")[1].split()[0])
        assert len(rows) == 4 and total > 4
        page.click("#timeline-full")
        every = page.locator("table.timeline tbody tr td.num a").all_inner_texts()
        assert len(every) == total and every[-4:] == rows
        assert page.locator("#timeline-cut").count() == 0
    finally:
        page.close()


def test_a_read_model_behind_ledger_is_said_so(workbench: Workbench, browser: Any) -> None:
    """An entry integrated while no projector runs: the pages say the verdicts miss it.
    (Last of the browser tests: it adds an entry to the module's ledger.)"""

    async def enrol_one() -> None:
        async with running_notary(workbench.url_nats, workbench.home) as harness:
            await harness.enrol("latecomer", ["auditor"])

    # (Playwright's sync API runs an event loop in this thread: the notary in another.)
    t = threading.Thread(target=asyncio.run, args=(enrol_one(),))
    t.start()
    t.join(120)
    assert not t.is_alive()
    page = browser.new_page()
    try:
        page.goto(f"{workbench.url}/login")
        _sign_in(page, workbench)
        page.wait_for_url(workbench.url + "/")
        stale = page.locator("p.stale#freshness")
        assert stale.count() == 1
        assert "behind LEDGER by 1 entries" in stale.inner_text()
    finally:
        page.close()


# --- without a browser ---------------------------------------------------------------


def test_every_label_a_template_uses_is_in_the_english_labels() -> None:
    """Labels live in one dict per language (services/web/ui/labels.py): a template
    naming a missing one would fail when rendered; a translation may only use keys
    English has. Computed names (``L['verdict_' ~ v]``) cover every value the library
    can give."""
    from typing import get_args

    from ledger.bus.investigate import DueState
    from ledger.law.rules import Severity, Status, Verdict
    from services.web.ui.labels import LABELS
    from services.web.ui.pages import TEMPLATES

    values = {
        "verdict_": get_args(Verdict),
        "status_": get_args(Status),
        "severity_": get_args(Severity),
        "key_": ("valid", "not_yet", "rotated", "revoked", "unknown"),
        "due_state_": get_args(DueState),
    }
    used: set[str] = set()
    prefixes: set[str] = set()
    for template in TEMPLATES.glob("*.j2"):
        text = template.read_text()
        used |= set(re.findall(r"\bL\.(\w+)", text))
        prefixes |= set(re.findall(r"L\['(\w+)' ~", text))
    assert prefixes == set(values)
    used |= {prefix + v for prefix in prefixes for v in values[prefix]}
    english = LABELS["en"]
    assert used <= set(english), sorted(used - set(english))
    for language, labels in LABELS.items():
        assert set(labels) <= set(english), (language, sorted(set(labels) - set(english)))


def test_pages_escape_what_they_show() -> None:
    """Autoescape is on: text from the ledger or the request is shown, never run."""
    from services.web.ui.labels import labels
    from services.web.ui.pages import template_config

    engine = template_config().instance
    assert engine is not None
    html = engine.get_template("error.html.j2").render(
        L=labels(), lang="en", languages=["en"], status=400, detail='<script>alert("x")</script>'
    )
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_after_sign_in_only_a_path_of_this_app() -> None:
    from services.web.ui.pages import _local_path

    assert _local_path("/systems/x?at=2026-04-01") == "/systems/x?at=2026-04-01"
    for hostile in (None, "", "https://evil.example/", "//evil.example/", "/\\evil", "x"):
        assert _local_path(hostile) == "/", hostile


def test_a_language_added_to_the_labels_is_offered_and_used(
    workbench: Workbench, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kazakh and Russian are dicts added to LABELS: the browser's Accept-Language picks
    one, ?lang= switches (and is remembered), a key it lacks falls back to English."""
    from services.web.ui.labels import LABELS

    monkeypatch.setitem(LABELS, "ru", {"language_name": "Русский", "nav_due": "Сроки"})
    context = browser.new_context(locale="ru-RU")
    page = context.new_page()
    try:
        page.goto(f"{workbench.url}/checkpoints")
        assert page.locator("html").get_attribute("lang") == "ru"
        assert page.locator("nav a[href='/due']").inner_text() == "Сроки"
        assert page.locator("nav a[href='/api/v1/openapi.json']").inner_text() == "API"  # English's
        page.click("nav .languages a[hreflang=en]")
        assert page.locator("html").get_attribute("lang") == "en"
        page.goto(f"{workbench.url}/checkpoints")  # the choice is remembered
        assert page.locator("nav a[href='/due']").inner_text() == "Due soon"
    finally:
        context.close()
