"""The circuit breaker as an application meets it: trips, refuses without file access, recovers."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeClock
from scenario_support import (
    LOGGER,
    WAIT,
    Thread,
    canonical,
    records,
)
from sqlalchemy import exc as sa_exc

import tinycortex_sa
from tinycortex_sa import db_path_for, with_connection
from tinycortex_sa.connection import registry
from tinycortex_sa.sqlite import driver, files

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("init_counter")]


# -- 10. the circuit breaker ---------------------------------------------------------------------


@dataclass
class ConnectSpy:
    """Counts every DBAPI connect the recovery module makes; can hold one call on an Event."""

    real: Callable[..., sqlite3.Connection]
    calls: int = 0
    failing: bool = False
    """Fail every connect as SQLite does when it cannot open the file (SQLITE_CANTOPEN)."""
    hold_next: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    proceed: threading.Event = field(default_factory=threading.Event)

    def __call__(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        self.calls += 1
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            assert self.proceed.wait(WAIT)
        if self.failing:
            err = sqlite3.OperationalError("unable to open database file")
            err.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN  # type: ignore[attr-defined]
            raise err
        return self.real(*args, **kwargs)


def test_breaker_trips_refuses_without_io_lets_one_trial_through_and_recovers(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = db_path_for(workspace)
    path.parent.mkdir(parents=True)
    spy = ConnectSpy(driver.connect, failing=True)  # unopenable: SQLite cannot open the file
    monkeypatch.setattr(driver, "connect", spy)
    prepared: list[Path] = []
    real_prepare = files.prepare

    def counting_prepare(p: Path) -> None:
        prepared.append(p)
        real_prepare(p)

    monkeypatch.setattr(files, "prepare", counting_prepare)
    handle = registry.handle_for(path)
    clock = FakeClock()
    handle.breaker.clock = clock
    engine = tinycortex_sa.create_engine(workspace)
    name = str(canonical(workspace))

    for attempt in (1, 2, 3):
        with pytest.raises(tinycortex_sa.OpenError) as excinfo:
            with_connection(workspace, lambda c: None)
        assert name in str(excinfo.value)
        assert not isinstance(excinfo.value, tinycortex_sa.CircuitOpenError)
        state = tinycortex_sa.breaker_state(workspace)
        assert state.failures == attempt
        assert state.state == ("open" if attempt == 3 else "closed")
        assert len(records(caplog, logging.WARNING)) == (1 if attempt == 3 else 0)
        clock.now += 1.0
    assert handle.opens == 3
    warning = records(caplog, logging.WARNING)[0].getMessage()
    assert name in warning

    # open: refused at once, without touching the file system
    opens, connects, prepares = handle.opens, spy.calls, len(prepared)
    for _ in range(5):
        with pytest.raises(tinycortex_sa.CircuitOpenError) as refused:
            with_connection(workspace, lambda c: None)
        assert refused.value.path == canonical(workspace)
        with pytest.raises(tinycortex_sa.CircuitOpenError):
            engine.connect()
    assert (handle.opens, spy.calls, len(prepared)) == (opens, connects, prepares)
    assert tinycortex_sa.breaker_state(workspace).retry_in == pytest.approx(30.0 - 1.0)
    clock.now += 28.5
    with pytest.raises(tinycortex_sa.CircuitOpenError):
        with_connection(workspace, lambda c: None)
    assert (handle.opens, spy.calls) == (opens, connects)

    # after the cooldown exactly one caller tries; everyone else is refused meanwhile
    clock.now += 1.0
    spy.hold_next = True
    trial = Thread(lambda: with_connection(workspace, lambda c: None))
    trial.start()
    assert spy.entered.wait(WAIT)
    assert tinycortex_sa.breaker_state(workspace).state == "half_open"
    others = [Thread(lambda: with_connection(workspace, lambda c: None)) for _ in range(6)]
    for t in others:
        t.start()
    for t in others:
        t.join(WAIT)
    assert all(isinstance(t.error, tinycortex_sa.CircuitOpenError) for t in others), [t.error for t in others]
    with pytest.raises(tinycortex_sa.CircuitOpenError):
        engine.connect()
    assert handle.opens == opens + 1
    spy.proceed.set()
    trial.join(WAIT)
    assert isinstance(trial.error, tinycortex_sa.OpenError)
    assert not isinstance(trial.error, tinycortex_sa.CircuitOpenError)

    # the failed trial re-opened it with a fresh cooldown
    state = tinycortex_sa.breaker_state(workspace)
    assert state.state == "open"
    assert state.retry_in == pytest.approx(30.0)
    opens, connects = handle.opens, spy.calls
    with pytest.raises(tinycortex_sa.CircuitOpenError):
        with_connection(workspace, lambda c: None)
    assert (handle.opens, spy.calls) == (opens, connects)
    assert len(records(caplog, logging.WARNING)) == 1  # the trip is logged once

    # fix the cause; after the cooldown the trial succeeds and the breaker closes
    spy.failing = False
    clock.now += 30.5
    assert not records(caplog, logging.INFO)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v TEXT)")
        conn.exec_driver_sql("INSERT INTO t VALUES ('recovered')")
    state = tinycortex_sa.breaker_state(workspace)
    assert (state.state, state.failures, state.last_error) == ("closed", 0, None)
    infos = [r.getMessage() for r in records(caplog, logging.INFO) if "breaker" in r.getMessage()]
    assert len(infos) == 1 and name in infos[0]
    assert path.is_file()
    assert with_connection(workspace, lambda c: c.execute("SELECT v FROM t").fetchall()) == [("recovered",)]
    assert handle.opens == opens + 1


def test_caller_sql_errors_do_not_count_towards_the_breaker(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace, breaker_threshold=1)
    for _ in range(3):
        with pytest.raises(sa_exc.OperationalError), engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
        with pytest.raises(sqlite3.OperationalError):
            with_connection(workspace, lambda c: c.execute("SELECT * FROM no_such_table"))
    state = tinycortex_sa.breaker_state(workspace)
    assert (state.state, state.failures) == ("closed", 0)
