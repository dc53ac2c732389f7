"""One error base: every error has its own code, exit status and meaning, the table
in docs/errors.md is generated from them, and the ``ailedger`` command reports each
kind of user error as one line with its code and documented exit status."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from ailedger.cli import error_line, one_line_errors
from ailedger.errortable import DOC_PATH, error_classes, generate, import_all, meaning
from ledger.bus.home import Home, init_home
from ledger.bus.natsserver import EmbeddedNats
from ledger.bus.streams import connect, ensure_streams
from ledger.formats.errors import BUG, EXIT_STATUSES, LedgerError
from ledger.law import rejections
from ledger.law.rejections import REASON_CODES, Rejection

ROOT = Path(__file__).resolve().parent.parent

#: Exception classes of the project that are deliberately not LedgerErrors.
NOT_ERRORS = {
    # Control flow inside the notary (answer a resubmission with its receipt);
    # it never reaches a user.
    "ledger.state.application.AlreadyIntegrated",
    # Control flow inside the state's JSON writer (msgspec cannot write this value
    # as the standard library does: the standard library writes it); caught there.
    "ledger.state.transcoding._Fallback",
    # The state worker's protocol (a request it cannot answer, an error that cannot be
    # pickled): a bug between two of ailedger's own processes, reported as one.
    "ledger.state.worker.WorkerError",
    # Control flow of `ailedger up`: Ctrl-C while the parts are being started.
    "ailedger.supervisor.Stopped",
    # Control flow of the workbench: an investigation page without a token goes to
    # the sign-in page; a page that cannot be shown is an HTTP error page with its
    # reason (Litestar's HTTPException), never a command's error.
    "services.web.ui.pages.LoginRequired",
    "services.web.ui.pages.PageError",
}

#: The notary's reason codes as first published: a contract, never renamed or reused.
PUBLISHED_REASON_CODES = {
    "actor_already_enrolled", "actor_suspended", "bad_signature", "clock_skew",
    "duplicate_event_id", "duplicate_incident", "genesis", "incident_closed", "intake_subject",
    "internal_error", "key_in_use", "key_not_valid", "key_revoked", "malformed_envelope",
    "malformed_json", "not_policy_insurer", "not_system_party", "oversize",
    "party_not_enrolled", "policy_retroactive", "role_not_allowed", "schema",
    "signer_not_actor", "system_already_registered", "system_not_registered",
    "system_retired", "unknown_actor", "unknown_incident", "unknown_key",
}  # fmt: skip

CODE = re.compile(r"^[a-z][a-z0-9_]*$")


# --- the classes -------------------------------------------------------------------


def test_every_error_has_its_own_code_exit_status_and_docstring() -> None:
    problems = []
    for cls in error_classes():
        name = f"{cls.__module__}.{cls.__qualname__}"
        if "code" not in vars(cls) or not CODE.match(cls.code):
            problems.append(f"{name} has no code of its own")
        # Every rejection is a rejected submission: the status of Rejection, declared once.
        declares_status = "exit_status" in vars(cls) or issubclass(cls, Rejection)
        if not declares_status or cls.exit_status not in EXIT_STATUSES:
            problems.append(f"{name} has no exit status of its own from {sorted(EXIT_STATUSES)}")
        if not meaning(cls):
            problems.append(f"{name} has no docstring")
    assert not problems, "\n".join(problems)


def test_no_two_errors_share_a_code_or_a_name() -> None:
    by_code: dict[str, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for cls in error_classes():
        by_code.setdefault(cls.code, []).append(f"{cls.__module__}.{cls.__qualname__}")
        by_name.setdefault(cls.__qualname__, []).append(cls.__module__)
    assert {c: v for c, v in by_code.items() if len(v) > 1} == {}
    assert {n: v for n, v in by_name.items() if len(v) > 1} == {}


def test_every_exception_class_of_the_project_is_a_ledger_error() -> None:
    import_all()
    strays = []
    for name, module in sorted(sys.modules.items()):
        if name.partition(".")[0] not in ("ledger", "services", "ailedger"):
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            qualified = f"{cls.__module__}.{cls.__qualname__}"
            if (
                cls.__module__ == name
                and issubclass(cls, BaseException)
                and not issubclass(cls, LedgerError)
                and qualified not in NOT_ERRORS
            ):
                strays.append(qualified)
    assert strays == []


def test_errors_keep_their_other_bases() -> None:
    """Existing ``except ValueError`` (etc.) clauses still catch what they caught."""
    from ledger.bus.home import HomeExists
    from ledger.bus.streams import BusError
    from ledger.formats.errors import MissingExtra
    from ledger.formats.keys import KeyFileError
    from ledger.formats.merkle import InclusionProofError
    from ledger.formats.note import UnknownVerifierError
    from ledger.formats.trust import TrustError
    from ledger.law.events import SchemaError
    from services.notary import NotaryError

    for cls, base in [
        (KeyFileError, ValueError),
        (TrustError, ValueError),
        (InclusionProofError, ValueError),
        (UnknownVerifierError, ValueError),
        (SchemaError, ValueError),
        (BusError, RuntimeError),
        (NotaryError, RuntimeError),
        (HomeExists, FileExistsError),
        (MissingExtra, ImportError),
    ]:
        assert issubclass(cls, base) and issubclass(cls, LedgerError), cls


def test_reason_codes_are_the_rejections_and_none_was_renamed() -> None:
    codes = {c.code for c in error_classes() if issubclass(c, Rejection) and c is not Rejection}
    assert codes == set(REASON_CODES)
    assert codes >= PUBLISHED_REASON_CODES
    assert all(c.exit_status == 1 for c in error_classes() if issubclass(c, Rejection))


def test_docs_errors_md_matches_the_code() -> None:
    text = (ROOT / DOC_PATH).read_text() if (ROOT / DOC_PATH).exists() else ""
    assert text == generate(), "docs/errors.md drifted from the code: python -m ailedger.errortable"
    for cls in error_classes():
        assert f"| `{cls.code}` |" in text


# --- the one line ------------------------------------------------------------------


def test_a_rejection_is_reported_without_its_code_twice() -> None:
    line = error_line(rejections.SystemRetired("system s is retired"))
    assert line == "error: system s is retired [system_retired]"


def test_anything_else_is_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AILEDGER_DEBUG", raising=False)

    @one_line_errors
    def broken() -> None:
        raise KeyError("oops")

    with pytest.raises(typer.Exit) as e:
        broken()
    assert e.value.exit_code == BUG == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: a bug in ailedger: KeyError")
    assert "AILEDGER_DEBUG=1" in err


# --- the command line, run as a user runs it --------------------------------------


def _closed_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTGRES_", "PERSISTENCE", "AILEDGER_"))
    }
    # The working tree, not an installed copy.
    return {**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra}


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ailedger", *args]
    if prelude:  # set something up in the interpreter, then run `python -m ailedger`
        run_module = "import runpy; runpy.run_module('ailedger', run_name='__main__')"
        command = [sys.executable, "-c", f"{prelude}; {run_module}", *args]
    return subprocess.run(
        command, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=60
    )


#: Every name of an error class: none may show in what the user reads.
CLASS_NAMES = re.compile(
    r"\b(Traceback|OperationalError|\w+Error|\w+Exception|"
    + "|".join(sorted({c.__qualname__ for c in error_classes()}))
    + r")\b"
)


def assert_one_line(
    result: subprocess.CompletedProcess[str], code: str, status: int, *, prefix: str = "error: "
) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(prefix), line
    assert line.endswith(f" [{code}]"), line
    assert result.returncode == status, (result.returncode, line)
    assert not CLASS_NAMES.search(line), line
    classes = {c.code: c for c in error_classes()}
    assert classes[code].exit_status == status  # the documented one
    return line


@pytest.fixture
def ledger_home(tmp_path: Path) -> Home:
    return init_home(tmp_path / "home", origin="errors.ailedger.kz/test")


def test_missing_key_file(tmp_path: Path) -> None:
    result = run("submit", "x.json", "--key", "missing.pem", cwd=tmp_path)
    line = assert_one_line(result, "key_file", 2)
    assert "missing.pem" in line


def test_bad_key_file(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nnonsense\n")
    result = run("submit", "x.json", "--key", "bad.pem", cwd=tmp_path)
    assert "bad.pem is not" in assert_one_line(result, "key_file", 2)


def test_bad_trust_policy(tmp_path: Path) -> None:
    (tmp_path / "trust.json").write_text('{"format": "ailedger/trust/v1"}')
    result = run("verify", "bundle.json", "--trust", "trust.json", cwd=tmp_path)
    assert "missing required field" in assert_one_line(result, "trust_policy", 2)


def test_missing_file(tmp_path: Path, ledger_home: Home) -> None:
    trust = str(ledger_home.trust_path)
    result = run("verify", "nowhere.json", "--trust", trust, cwd=tmp_path)
    assert "cannot read nowhere.json" in assert_one_line(result, "file_unreadable", 2)


def test_bad_bundle(tmp_path: Path, ledger_home: Home) -> None:
    (tmp_path / "b.json").write_text('{"format": "ailedger/bundle/v1"}')
    result = run("verify", "b.json", "--trust", str(ledger_home.trust_path), cwd=tmp_path)
    assert_one_line(result, "verify_failed", 1, prefix="b.json: FAILED ")


def test_bad_argument(tmp_path: Path, ledger_home: Home) -> None:
    result = run("export", "--home", str(ledger_home.path), "--range", "3-4", cwd=tmp_path)
    assert "--range wants FIRST..LAST" in assert_one_line(result, "usage", 2)


def test_init_over_an_existing_home(tmp_path: Path, ledger_home: Home) -> None:
    result = run("init", str(ledger_home.path), cwd=tmp_path)
    assert "already holds a ledger" in assert_one_line(result, "home_exists", 2)


def test_typer_usage_errors_stay_exit_2(tmp_path: Path) -> None:
    result = run("verify", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_unreachable_nats_fails_fast_naming_the_url(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    result = run("log", "--nats", url, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert f"cannot connect to NATS at {url}" in assert_one_line(result, "nats_unreachable", 3)
    assert elapsed < 15, elapsed


def _postgres(port: int, **extra: str) -> dict[str, str]:
    return _env(
        PERSISTENCE_MODULE="eventsourcing.postgres",
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(port),
        POSTGRES_DBNAME="ailedger",
        POSTGRES_USER="ailedger",
        POSTGRES_PASSWORD="secret",
        **extra,
    )


def test_unreachable_postgres_fails_fast_naming_host_and_port(
    tmp_path: Path, ledger_home: Home
) -> None:
    port = _closed_port()
    nats = f"nats://127.0.0.1:{_closed_port()}"  # never reached: the database is checked first
    started = time.monotonic()
    result = run(
        "rebuild", "--home", str(ledger_home.path), "--nats", nats,
        cwd=tmp_path, env=_postgres(port),
    )  # fmt: skip
    elapsed = time.monotonic() - started
    line = assert_one_line(result, "database_unreachable", 3)
    assert f"PostgreSQL at 127.0.0.1:{port}" in line
    assert "secret" not in line
    assert elapsed < 10, elapsed


def test_postgres_settings_missing(tmp_path: Path, ledger_home: Home) -> None:
    env = _postgres(_closed_port())
    del env["POSTGRES_HOST"]
    result = run(
        "rebuild", "--home", str(ledger_home.path), "--nats", "nats://x", cwd=tmp_path, env=env
    )
    assert "POSTGRES_HOST" in assert_one_line(result, "database_settings", 2)


def test_missing_postgres_extra_names_the_install_command(
    tmp_path: Path, ledger_home: Home
) -> None:
    result = run(
        "rebuild", "--home", str(ledger_home.path), "--nats", "nats://127.0.0.1:1",
        cwd=tmp_path, env=_postgres(_closed_port()),
        prelude="import sys; sys.modules['psycopg'] = None",  # as if not installed
    )  # fmt: skip
    line = assert_one_line(result, "missing_extra", 2)
    assert "pip install 'ai-compliance-ledger[postgres]'" in line


def test_nothing_to_prove_yet(tmp_path: Path, ledger_home: Home, nats_server: EmbeddedNats) -> None:
    """ledger.bus.proofs' error (once a second ProofError) is a user error, not a bug."""

    async def streams() -> None:
        nc = await connect(nats_server.url)
        try:
            await ensure_streams(nc)
        finally:
            await nc.drain()

    asyncio.run(streams())
    result = run(
        "checkpoint", "--home", str(ledger_home.path), "--nats", nats_server.url, cwd=tmp_path
    )
    assert "no checkpoint" in assert_one_line(result, "proof_unavailable", 2)


def test_a_closed_stdout_exits_0_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailedger", "keygen", "bank", "--out", str(tmp_path / "k.pem")],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes a byte
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
    assert (tmp_path / "k.pem").exists()
