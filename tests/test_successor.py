"""Admitting batch k+1 on top of batch k before k is recorded (ledger.state.successor).

Whatever is admitted that way must be exactly what admitting the same envelopes
one batch after the other gives: same verdicts, same entries, same state digest.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ledger.bus.home import init_home
from ledger.formats.dsse import parse_envelope
from ledger.law import events as ev
from ledger.law import rejections as errors
from ledger.state.application import Admitted, AlreadyIntegrated, Batch, LedgerState
from ledger.state.persistence import sqlite_env
from ledger.state.successor import begin_after
from tests.conftest import registration_fields
from tests.test_state import T0, World, deploy


def _admit(batch: Batch, envelopes: list[bytes], at: object) -> list[object]:
    out: list[object] = []
    for raw in envelopes:
        env = parse_envelope(raw)
        try:
            out.append(batch.admit(env, ev.decode_event(env.payload), at))  # type: ignore[arg-type]
        except (errors.Rejection, AlreadyIntegrated) as e:
            out.append(e)
    return out


def _outcome(x: object) -> object:
    if isinstance(x, Admitted):
        return ("admitted", x.entry.encoded)
    if isinstance(x, AlreadyIntegrated):
        return ("duplicate", x.record.index)
    assert isinstance(x, errors.Rejection), x
    return ("rejected", x.code)


def test_next_batch_admitted_before_the_previous_is_recorded(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    w = World(home)
    w.enrol("bank", ["owner"])
    t1 = T0 + timedelta(hours=1)
    register = w.event("bank", ev.SystemRegistered, t1, **registration_fields("bank", "scorer"))
    first = [register, deploy(w, "bank", "scorer", t1, version="1")]
    again = deploy(w, "bank", "scorer", t1, version="2")
    second = [
        deploy(w, "bank", "scorer", t1, version="3"),  # needs batch 1's registration
        register,  # an event of batch 1 again: its receipt, not a new entry
        w.event("bank", ev.SystemRegistered, t1, **registration_fields("bank", "scorer")),
        again,
        deploy(w, "bank", "ghost", t1),  # refused: rolled back inside the successor
        again,
    ]

    # one batch after the other, each recorded before the next
    serial = LedgerState(sqlite_env(tmp_path / "serial.sqlite"), trust=home.trust())
    serial.replay(w.stored)
    b1 = serial.begin()
    serial_out = _admit(b1, first, t1)
    serial.commit(b1)
    b2 = serial.begin()
    serial_out += _admit(b2, second, t1)
    serial.commit(b2)

    # the second admitted on top of the first, then both recorded in order
    piped = LedgerState(sqlite_env(tmp_path / "piped.sqlite"), trust=home.trust())
    piped.replay(w.stored)
    p1 = piped.begin()
    piped_out = _admit(p1, first, t1)
    p2 = begin_after(p1)
    assert (p2.first_sequence, p2.first_index) == (p1.last_sequence + 1, p1.next_index)
    piped_out += _admit(p2, second, t1)
    assert piped.position() == b1.first_sequence - 1  # nothing recorded yet
    piped.commit(p1)
    piped.commit(p2)

    assert [_outcome(x) for x in piped_out] == [_outcome(x) for x in serial_out]
    kinds = [_outcome(x)[0] for x in piped_out]
    assert kinds == ["admitted"] * 3 + ["duplicate", "rejected", "admitted", "rejected"] + [
        "duplicate"
    ]
    assert piped.digest() == serial.digest()
    system = piped.system("scorer")
    assert system is not None and system.chain_head == p2.admitted[-1].entry.index


def test_a_successor_of_a_batch_never_recorded_leaves_no_trace(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home", origin="state.ailedger.kz/test", at=T0)
    w = World(home)
    w.enrol("bank", ["owner"])
    state = w.state
    before = state.digest()
    t1 = T0 + timedelta(hours=1)
    p1 = state.begin()
    _admit(p1, [w.event("bank", ev.SystemRegistered, t1, **registration_fields("bank", "s"))], t1)
    p2 = begin_after(p1)
    _admit(p2, [deploy(w, "bank", "s", t1)], t1)
    assert len(p2.admitted) == 1
    # batch 1 never reached LEDGER: both are dropped, the state is as it was
    assert state.digest() == before
    assert state.system("s") is None
