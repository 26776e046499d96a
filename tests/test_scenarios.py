"""Scenario tests of the connection core (issue 2): real files, real threads, the public API.

Each test uses tinycortex_sa the way an application does (``tinycortex_sa.create_engine``,
``sqlalchemy.create_engine("sqlite+tinycortex:///...")``, ``with_connection``, Sessions)
on files under ``tmp_path``.  Schema initialisation is replaced by a stub that reads the
schema like the real one does first (so corruption is detected at initialisation) but
creates nothing: these tests are about the connection, not the migrations, which have
their own suite.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import copy_fixture
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import db_path_for, invalidate, with_connection
from tinycortex_sa.connection import handle, registry
from tinycortex_sa.options import Options
from tinycortex_sa.sqlite import driver, files

pytestmark = pytest.mark.timeout(30)  # a deadlock fails the test instead of stalling the suite

LOGGER = "tinycortex_sa"
WAIT = 5.0
"""Upper bound for Event waits that are expected to succeed at once."""


# -- fixtures and helpers -----------------------------------------------------------------


@dataclass
class InitCounter:
    """Records every schema initialisation the core runs."""

    calls: list[tuple[int, Path]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, conn: sqlite3.Connection, path: Path, options: Options) -> None:
        with self.lock:
            self.calls.append((threading.get_ident(), path))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


@pytest.fixture(autouse=True)
def init_counter(monkeypatch: pytest.MonkeyPatch) -> InitCounter:
    counter = InitCounter()
    monkeypatch.setattr(registry, "initialise", counter)
    return counter


def canonical(workspace: Path) -> Path:
    return Path(os.path.realpath(db_path_for(workspace)))


def dbapi(conn: sa.Connection) -> Any:
    """The DBAPI connection behind a SQLAlchemy Connection."""
    return conn.connection.dbapi_connection


def url_for(path: Path, query: str = "") -> str:
    return f"sqlite+tinycortex:///{path}" + (f"?{query}" if query else "")


def the_connection(workspace: Path | str, **options: Any) -> sqlite3.Connection:
    return with_connection(workspace, lambda conn: conn, **options)


def handle_of(workspace: Path) -> handle.FileHandle:
    handle = registry.existing_handle(db_path_for(workspace))
    assert handle is not None
    return handle


def make_table(workspace: Path) -> None:
    with_connection(
        workspace, lambda c: c.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    )


def rows_outside(workspace: Path) -> list[str]:
    """The committed values of ``t``, read through a separate plain sqlite3 connection."""
    conn = sqlite3.connect(db_path_for(workspace))
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")]
    finally:
        conn.close()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


class Thread(threading.Thread):
    """A thread that keeps its target's result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as err:
            self.error = err


def holder(workspace: Path, held: threading.Event, release: threading.Event) -> Thread:
    """A thread that takes the connection through with_connection and keeps it until ``release``."""

    def hold(conn: sqlite3.Connection) -> sqlite3.Connection:
        held.set()
        assert release.wait(WAIT)
        return conn

    return Thread(lambda: with_connection(workspace, hold))


# -- 1. aliases share one connection ---------------------------------------------------------


def test_spellings_of_one_file_share_one_connection(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "ws-link").symlink_to(workspace, target_is_directory=True)
    monkeypatch.chdir(sub)
    spellings: list[Path | str] = [
        workspace,
        str(workspace),
        Path("../ws"),
        workspace / ".." / "ws",
        tmp_path / "ws-link",
        "../ws-link",
    ]
    engines = [tinycortex_sa.create_engine(s) for s in spellings]
    engines += [
        sa.create_engine(url_for(db_path_for(workspace))),
        sa.create_engine("sqlite+tinycortex:///../ws/memory_tree/chunks.db"),
        sa.create_engine(url_for(tmp_path / "ws-link" / "memory_tree" / "chunks.db")),
    ]
    seen: list[Any] = []
    for engine in engines:
        raw = engine.raw_connection()
        seen.append(raw.dbapi_connection)
        raw.close()
    seen += [the_connection(s) for s in spellings]
    first = seen[0]
    assert isinstance(first, sqlite3.Connection)
    assert all(conn is first for conn in seen)
    assert len(registry._handles) == 1
    assert handle_of(workspace).opens == 1
    # a write through one spelling is read through every other
    with engines[2].begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('via ../ws')")
    with engines[-1].connect() as conn:
        assert conn.exec_driver_sql("SELECT v FROM t").scalar_one() == "via ../ws"


def test_symlinked_database_file_shares_the_connection(workspace: Path, tmp_path: Path) -> None:
    real = the_connection(workspace)
    other_ws = tmp_path / "other"
    (other_ws / "memory_tree").mkdir(parents=True)
    (other_ws / "memory_tree" / "chunks.db").symlink_to(db_path_for(workspace))
    engine = tinycortex_sa.create_engine(other_ws)
    raw = engine.raw_connection()
    try:
        via_engine: Any = raw.dbapi_connection
        assert via_engine is real
    finally:
        raw.close()
    assert the_connection(other_ws) is real
    url_engine = sa.create_engine(url_for(db_path_for(other_ws)))
    with url_engine.connect() as conn:
        assert dbapi(conn) is real
    assert handle_of(workspace).opens == 1
    assert registry.existing_handle(db_path_for(other_ws)) is handle_of(workspace)


# -- 2. a second thread waits, then proceeds; or times out -----------------------------------


def test_second_thread_waits_for_the_connection_then_proceeds(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    held, release = threading.Event(), threading.Event()
    released_at: list[float] = []
    got: list[tuple[float, sqlite3.Connection]] = []
    got_it = threading.Event()

    def hold() -> Any:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            held.set()
            assert release.wait(WAIT)
            released_at.append(time.monotonic())
            return dbapi(conn)

    def wait_for_it(conn: sqlite3.Connection) -> None:
        got.append((time.monotonic(), conn))
        got_it.set()

    first = Thread(hold)
    first.start()
    assert held.wait(WAIT)
    second = Thread(lambda: with_connection(workspace, wait_for_it))
    second.start()
    assert not got_it.wait(0.2), "the second thread got the connection while the first held it"
    assert second.is_alive()
    release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert first.error is None and second.error is None
    assert len(got) == 1
    assert got[0][0] >= released_at[0]
    assert got[0][1] is first.result


def test_waiting_thread_gets_checkout_timeout_naming_the_path(workspace: Path) -> None:
    the_connection(workspace)
    path = canonical(workspace)
    held, release = threading.Event(), threading.Event()
    first = holder(workspace, held, release)
    first.start()
    try:
        assert held.wait(WAIT)
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.CheckoutTimeoutError) as excinfo:
            with_connection(workspace, lambda c: None, checkout_timeout=0.2)
        waited = time.monotonic() - start
        assert 0.15 <= waited < 2.0
        assert str(path) in str(excinfo.value)
        assert isinstance(excinfo.value, tinycortex_sa.TinyCortexError)
        # the same through an engine whose checkout_timeout is 0.2 s
        engine = tinycortex_sa.create_engine(workspace, checkout_timeout=0.2)
        with pytest.raises(tinycortex_sa.CheckoutTimeoutError, match=re.escape(str(path))):
            engine.connect()
    finally:
        release.set()
        first.join(WAIT)
    assert first.error is None
    with engine.connect() as conn:  # once released, the impatient engine gets it
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


# -- 3. nested use fails fast -------------------------------------------------------------


def test_session_inside_session_on_the_same_file_fails_fast(workspace: Path) -> None:
    make_table(workspace)
    outer_engine = tinycortex_sa.create_engine(workspace)
    inner_engine = sa.create_engine(url_for(db_path_for(workspace)))
    with Session(outer_engine) as outer:
        outer.execute(sa.text("INSERT INTO t (v) VALUES ('outer')"))
        start = time.monotonic()
        with Session(inner_engine) as inner, pytest.raises(tinycortex_sa.NestedCheckoutError) as excinfo:
            inner.execute(sa.text("SELECT count(*) FROM t"))
        assert time.monotonic() - start < 1.0
        assert str(canonical(workspace)) in str(excinfo.value)
        # the outer session is untouched: its transaction is still open and commits
        assert outer.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
        outer.commit()
    assert rows_outside(workspace) == ["outer"]
    with Session(inner_engine) as later:
        assert later.execute(sa.text("SELECT v FROM t")).scalar_one() == "outer"


def test_engine_connect_inside_with_connection_fails_fast(workspace: Path) -> None:
    make_table(workspace)
    engine = tinycortex_sa.create_engine(workspace)

    def fn(conn: sqlite3.Connection) -> float:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES ('in fn')")
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.NestedCheckoutError):
            engine.connect()
        with pytest.raises(tinycortex_sa.NestedCheckoutError), Session(engine) as session:
            session.execute(sa.text("SELECT 1"))
        elapsed = time.monotonic() - start
        assert conn.in_transaction
        conn.execute("INSERT INTO t (v) VALUES ('still working')")
        conn.execute("COMMIT")
        return elapsed

    assert with_connection(workspace, fn) < 1.0
    assert rows_outside(workspace) == ["in fn", "still working"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2


def test_with_connection_inside_with_connection_fails_fast(workspace: Path, tmp_path: Path) -> None:
    make_table(workspace)
    (tmp_path / "alias").symlink_to(workspace, target_is_directory=True)

    def fn(conn: sqlite3.Connection) -> str:
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.NestedCheckoutError):
            with_connection(workspace, lambda c: None)
        with pytest.raises(tinycortex_sa.NestedCheckoutError):  # another spelling of the same file
            with_connection(tmp_path / "alias", lambda c: None)
        assert time.monotonic() - start < 1.0
        conn.execute("INSERT INTO t (v) VALUES ('outer ok')")
        return str(conn.execute("SELECT v FROM t").fetchone()[0])

    assert with_connection(workspace, fn) == "outer ok"
    assert rows_outside(workspace) == ["outer ok"]
    assert the_connection(workspace) is the_connection(tmp_path / "alias")


# -- 4. checkin rolls back ----------------------------------------------------------------


def test_connection_closed_without_commit_leaves_nothing(workspace: Path) -> None:
    make_table(workspace)
    writer = tinycortex_sa.create_engine(workspace)
    reader = tinycortex_sa.create_engine(workspace)
    conn = writer.connect()
    conn.exec_driver_sql("INSERT INTO t (v) VALUES ('never committed')")
    assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    conn.close()
    with reader.connect() as other:
        assert other.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    assert with_connection(workspace, lambda c: c.in_transaction) is False
    assert rows_outside(workspace) == []


def test_with_connection_returning_inside_a_transaction_is_rolled_back(workspace: Path) -> None:
    make_table(workspace)

    def fn(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (v) VALUES ('left open')")
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    assert with_connection(workspace, fn) == 1
    state = with_connection(
        workspace, lambda c: (c.in_transaction, c.execute("SELECT count(*) FROM t").fetchone())
    )
    assert state == (False, (0,))
    with tinycortex_sa.create_engine(workspace).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    assert rows_outside(workspace) == []


def test_with_connection_raising_propagates_the_same_exception_and_rolls_back(workspace: Path) -> None:
    make_table(workspace)

    class Boom(Exception):
        pass

    boom = Boom("from fn")

    def fn(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES ('raised')")
        raise boom

    with pytest.raises(Boom) as excinfo:
        with_connection(workspace, fn)
    assert excinfo.value is boom
    assert type(excinfo.value) is Boom
    with tinycortex_sa.create_engine(workspace).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    assert rows_outside(workspace) == []
    # and the connection is free and writable again
    with_connection(workspace, lambda c: c.execute("INSERT INTO t (v) VALUES ('after')"))
    assert rows_outside(workspace) == ["after"]


# -- 5. dispose -------------------------------------------------------------------------------


def test_dispose_of_one_engine_leaves_the_other_working(workspace: Path) -> None:
    make_table(workspace)
    first = tinycortex_sa.create_engine(workspace)
    second = sa.create_engine(url_for(db_path_for(workspace)))
    shared = the_connection(workspace)
    with first.connect() as conn:
        assert dbapi(conn) is shared
    with second.connect() as conn:
        assert dbapi(conn) is shared
    first.dispose()
    with second.begin() as conn:
        assert dbapi(conn) is shared
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('after dispose')")
    assert shared.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # still open
    assert handle_of(workspace).opens == 1
    assert rows_outside(workspace) == ["after dispose"]


def test_disposing_the_last_engine_closes_the_connection(workspace: Path) -> None:
    first = tinycortex_sa.create_engine(workspace)
    second = tinycortex_sa.create_engine(workspace)
    for engine in (first, second):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    handle = handle_of(workspace)
    shared = handle.conn
    assert shared is not None and handle.opens == 1
    first.dispose()
    assert handle.conn is shared
    second.dispose()
    # the last engine on the file is gone: the connection is closed ...
    assert handle.conn is None, "disposing the last engine left the shared connection open"
    with pytest.raises(sqlite3.ProgrammingError):
        shared.execute("SELECT 1")
    # ... and the next checkout opens a new one
    fresh = the_connection(workspace)
    assert fresh is not shared
    assert handle.opens == 2


# -- 6. initialisation runs once -----------------------------------------------------------


def test_sixteen_threads_first_call_initialises_once(
    workspace: Path, tmp_path: Path, init_counter: InitCounter
) -> None:
    (tmp_path / "ws-link").symlink_to(workspace, target_is_directory=True)
    n = 16
    barrier = threading.Barrier(n)

    def first_call(i: int) -> Any:
        ws = workspace if i % 2 else tmp_path / "ws-link"
        barrier.wait(WAIT)
        if i % 4 == 0:
            with tinycortex_sa.create_engine(ws).connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                return dbapi(conn)
        if i % 4 == 1:
            with Session(sa.create_engine(url_for(db_path_for(ws)))) as session:
                session.execute(sa.text("SELECT 1"))
                return dbapi(session.connection())
        return with_connection(ws, lambda c: c)

    threads = [Thread(functools.partial(first_call, i)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert [t.error for t in threads] == [None] * n
    assert len({id(t.result) for t in threads}) == 1
    assert len(init_counter.calls) == 1
    assert init_counter.calls[0][1] == canonical(workspace)
    assert handle_of(workspace).opens == 1
    assert len(registry._handles) == 1


# -- 7. pragmas -----------------------------------------------------------------------------


def _pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    return {
        name: conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("busy_timeout", "foreign_keys", "synchronous", "journal_mode")
    }


def test_pragmas_read_back_with_defaults(workspace: Path) -> None:
    expected = {"busy_timeout": 15000, "foreign_keys": 1, "synchronous": 2, "journal_mode": "truncate"}
    assert with_connection(workspace, _pragmas) == expected
    with Session(tinycortex_sa.create_engine(workspace)) as session:
        got = {
            name: session.execute(sa.text(f"PRAGMA {name}")).scalar()
            for name in ("busy_timeout", "foreign_keys", "synchronous", "journal_mode")
        }
    assert got == expected


def test_pragmas_read_back_with_busy_timeout_option(workspace: Path, tmp_path: Path) -> None:
    engine = sa.create_engine(url_for(db_path_for(workspace), "busy_timeout=4321"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
    assert with_connection(workspace, _pragmas) == {
        "busy_timeout": 4321,
        "foreign_keys": 1,
        "synchronous": 2,
        "journal_mode": "truncate",
    }
    other = tmp_path / "other"
    assert with_connection(other, _pragmas, busy_timeout=250)["busy_timeout"] == 250


# -- 8. the WAL fixture -------------------------------------------------------------------------


def _snapshot(conn: sqlite3.Connection) -> tuple[dict[str, int], str]:
    """Per-table row counts and one checksum over every row of every table."""
    tables = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    ]
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    for table in tables:
        rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
        counts[table] = len(rows)
        digest.update(table.encode())
        for line in sorted(repr(row) for row in rows):
            digest.update(line.encode())
    return counts, digest.hexdigest()


def _reference_snapshot(tmp_path: Path) -> tuple[dict[str, int], str]:
    """What the WAL fixture holds, read by plain sqlite3 from a copy of its own."""
    reference = copy_fixture("rust-legacy-wal", tmp_path / "reference")
    conn = sqlite3.connect(db_path_for(reference))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return _snapshot(conn)
    finally:
        conn.close()


def test_wal_fixture_is_switched_to_truncate_keeping_every_row(tmp_path: Path) -> None:
    counts, checksum = _reference_snapshot(tmp_path)
    assert counts["mem_tree_chunks"] == 40
    assert sum(counts.values()) > 40
    ws = copy_fixture("rust-legacy-wal", tmp_path / "wal")
    path = db_path_for(ws)
    wal = path.with_name("chunks.db-wal")
    assert wal.stat().st_size > path.stat().st_size  # the rows really are in the -wal
    engine = tinycortex_sa.create_engine(ws)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "truncate"
        assert conn.exec_driver_sql("SELECT count(*) FROM mem_tree_chunks").scalar() == 40
    assert with_connection(ws, _snapshot) == (counts, checksum)
    assert not wal.exists()
    assert not path.with_name("chunks.db-shm").exists()
    # the rows are in the main file itself now: a separate reader without the -wal sees them
    plain = sqlite3.connect(path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not WAL any more
        assert _snapshot(plain) == (counts, checksum)
    finally:
        plain.close()
    assert with_connection(ws, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"


_HOLDER_SCRIPT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()
print("ready", flush=True)
sys.stdin.readline()
conn.close()
"""


@pytest.mark.parametrize("other", ["connection", "process"])
def test_wal_fixture_held_open_elsewhere_fails_with_a_retryable_error(
    tmp_path: Path, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    counts, checksum = _reference_snapshot(tmp_path)
    ws = copy_fixture("rust-legacy-wal", tmp_path / "wal")
    path = db_path_for(ws)
    wal = path.with_name("chunks.db-wal")
    wal_bytes = wal.read_bytes()
    close_other: Callable[[], None]
    if other == "connection":
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0] == 40
        close_other = conn.close
    else:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER_SCRIPT, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"

        def close_other() -> None:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
            assert proc.wait(WAIT) == 0

    try:
        caplog.set_level(logging.DEBUG, logger=LOGGER)
        start = time.monotonic()
        with pytest.raises(tinycortex_sa.DatabaseBusyError) as excinfo:
            with_connection(ws, lambda c: None, busy_timeout=300)
        assert time.monotonic() - start < 5.0
        err = excinfo.value
        assert isinstance(err, tinycortex_sa.JournalModeBusyError), f"{type(err).__name__}: {err}"
        assert err.pragma == "journal_mode"
        assert err.asked.lower() == "truncate" and err.got.lower() == "wal"
        assert "journal_mode" in str(err)
        assert str(canonical(ws)) in str(err)
        assert wal.read_bytes() == wal_bytes
        assert tinycortex_sa.breaker_state(ws).state == "closed"
        assert tinycortex_sa.breaker_state(ws).failures == 0
    finally:
        close_other()
    with tinycortex_sa.create_engine(ws).connect() as after:
        assert after.exec_driver_sql("PRAGMA journal_mode").scalar() == "truncate"
    assert with_connection(ws, _snapshot) == (counts, checksum)
    assert tinycortex_sa.breaker_state(ws).state == "closed"
    assert not wal.exists()


_ARRIVING_SCRIPT = """
import sys, time
import tinycortex_sa
from tinycortex_sa.sqlite import driver
from tinycortex_sa.sqlite import files
from tinycortex_sa.connection import handle
from tinycortex_sa.connection import registry
from tinycortex_sa.schema import upgrade
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.0002)
try:
    n = tinycortex_sa.with_connection(
        sys.argv[1], lambda c: c.execute("SELECT count(*) FROM mem_tree_chunks").fetchone()[0]
    )
    print(n)
except Exception as err:
    print(type(err).__name__, err)
"""


def _arrive_at_once(ws: Path, processes: int) -> list[str]:
    """Start ``processes`` processes that open ``ws`` at the same moment; what each printed."""
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ARRIVING_SCRIPT, str(ws), str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    return [proc.communicate(timeout=25)[0].strip() for proc in procs]


@pytest.mark.parametrize("trial", range(3))
def test_processes_opening_a_wal_database_at_once_all_get_in(tmp_path: Path, trial: int) -> None:
    """Leaving WAL needs the only connection: openers arriving together refuse each other, then take turns."""
    counts, _ = _reference_snapshot(tmp_path)
    ws = copy_fixture("rust-legacy-wal", tmp_path / "wal")
    answers = _arrive_at_once(ws, 3)
    assert answers == [str(counts["mem_tree_chunks"])] * 3
    assert not db_path_for(ws).with_name("chunks.db-wal").exists()


def _stale_wal_beside_a_truncate_database(path: Path) -> bytes:
    """A rollback-mode database with a -wal from its WAL period put back beside it; the -wal's bytes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20)])
    wal = path.with_name(path.name + "-wal").read_bytes()
    conn.execute("PRAGMA journal_mode = TRUNCATE")  # checkpoints and deletes the -wal
    conn.close()
    path.with_name(path.name + "-wal").write_bytes(wal)
    return wal


@pytest.mark.parametrize("kind", ["garbage", "stale-wal"])
@pytest.mark.parametrize("trial", range(2))
def test_processes_finding_one_damaged_file_at_once_move_it_once(
    tmp_path: Path, kind: str, trial: int
) -> None:
    """Four processes open a damaged file (or one with a stale -wal) at the same moment: one moves it
    aside, with its bytes and mode; the others wait, see it done, and open the new file."""
    ws = tmp_path / "ws"
    path = db_path_for(ws)
    path.parent.mkdir(parents=True)
    if kind == "garbage":
        path.write_bytes(os.urandom(50_000))
        path.with_name("chunks.db-journal").write_bytes(b"journal" * 50)
        path.chmod(0o640)
        kept_suffix, originals = ".corrupt-", {"": path.read_bytes(), "-journal": b"journal" * 50}
    else:
        kept_suffix, originals = "-wal.stale-", {"": _stale_wal_beside_a_truncate_database(path)}
    answers = _arrive_at_once(ws, 4)
    assert all(a.isdigit() for a in answers), answers
    kept = sorted(p.name for p in path.parent.iterdir() if kept_suffix in p.name)
    assert len(kept) == len(originals), kept
    main = min(kept, key=len)
    for suffix, data in originals.items():
        assert (path.parent / (main + suffix)).read_bytes() == data
    if kind == "garbage":
        assert stat.S_IMODE((path.parent / main).stat().st_mode) == 0o640


# -- 9. quarantine -----------------------------------------------------------------------------

_STAMP = re.compile(r"^chunks\.db\.corrupt-(\d{8}T\d{6}Z)$")
GARBAGE = b"this is not a SQLite database, it is garbage\n" * 200


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _truncated_fixture(tmp_path: Path, name: str) -> Path:
    ws = copy_fixture("rust-0.1.1-populated", tmp_path / name)
    path = db_path_for(ws)
    with open(path, "r+b") as f:
        f.truncate(3 * 4096)
    return ws


def _garbage_workspace(tmp_path: Path, name: str) -> Path:
    ws = tmp_path / name
    (ws / "memory_tree").mkdir(parents=True)
    path = db_path_for(ws)
    path.write_bytes(GARBAGE)
    path.chmod(0o640)
    return ws


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_file_is_quarantined_and_a_fresh_database_built(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = _garbage_workspace(tmp_path, "ws") if kind == "garbage" else _truncated_fixture(tmp_path, "ws")
    path = db_path_for(ws)
    directory = path.parent
    before = _files(directory)
    mode = stat.S_IMODE(path.stat().st_mode)
    caplog.set_level(logging.INFO, logger=LOGGER)
    started = datetime.now(UTC).replace(microsecond=0)

    def use(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('fresh')")
        return conn.execute("SELECT v FROM t").fetchall()

    assert with_connection(ws, use) == [("fresh",)]
    moved = [p for p in directory.iterdir() if _STAMP.match(p.name)]
    assert len(moved) == 1, sorted(p.name for p in directory.iterdir())
    corrupt = moved[0]
    match = _STAMP.match(corrupt.name)
    assert match is not None
    stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert started <= stamp <= datetime.now(UTC)
    assert corrupt.read_bytes() == before["chunks.db"]
    assert stat.S_IMODE(corrupt.stat().st_mode) == mode
    for side, content in before.items():  # side files moved along, bytes intact
        if side != "chunks.db":
            assert (directory / (corrupt.name + side[len("chunks.db") :])).read_bytes() == content
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    assert with_connection(ws, lambda c: c.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert str(canonical(ws)) in message
    assert str(corrupt.resolve()) in message
    assert tinycortex_sa.breaker_state(ws).state == "closed"


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_file_with_on_corrupt_raise_is_left_alone(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = _garbage_workspace(tmp_path, "ws") if kind == "garbage" else _truncated_fixture(tmp_path, "ws")
    path = db_path_for(ws)
    before = _files(path.parent)
    mode = stat.S_IMODE(path.stat().st_mode)
    with pytest.raises(tinycortex_sa.CorruptDatabaseError) as excinfo:
        with_connection(ws, lambda c: None, on_corrupt="raise")
    assert str(canonical(ws)) in str(excinfo.value)
    with pytest.raises(tinycortex_sa.CorruptDatabaseError):
        tinycortex_sa.create_engine(ws, on_corrupt="raise").connect()
    assert _files(path.parent) == before
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert not records(caplog, logging.ERROR)


# -- 10. the circuit breaker ---------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class ConnectSpy:
    """Counts every DBAPI connect the recovery module makes; can hold one call on an Event."""

    real: Callable[..., sqlite3.Connection]
    calls: int = 0
    hold_next: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    proceed: threading.Event = field(default_factory=threading.Event)

    def __call__(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        self.calls += 1
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            assert self.proceed.wait(WAIT)
        return self.real(*args, **kwargs)


def test_breaker_trips_refuses_without_io_lets_one_trial_through_and_recovers(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    path = db_path_for(workspace)
    path.mkdir(parents=True)  # unopenable: a directory stands where the file should be
    spy = ConnectSpy(driver.connect)
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
    path.rmdir()
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


# -- 11. options ----------------------------------------------------------------------------------


def test_different_file_level_option_conflicts_until_invalidate(workspace: Path) -> None:
    path = db_path_for(workspace)
    first = tinycortex_sa.create_engine(workspace, busy_timeout=1000)
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        tinycortex_sa.create_engine(workspace, busy_timeout=2000)
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        sa.create_engine(url_for(path, "busy_timeout=2000"))
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        with_connection(workspace, lambda c: None, busy_timeout=2000)
    with pytest.raises(tinycortex_sa.OptionConflictError, match="on_corrupt"):
        tinycortex_sa.create_engine(workspace, on_corrupt="raise")
    # the same value, or leaving it out, works; engine-level checkout_timeout may differ
    same = tinycortex_sa.create_engine(workspace, busy_timeout=1000)
    by_url = sa.create_engine(url_for(path, "busy_timeout=1000"))
    default = tinycortex_sa.create_engine(workspace, checkout_timeout=5)
    for engine in (first, same, by_url, default):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1000
    assert with_connection(workspace, lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 1000
    invalidate(workspace)
    changed = tinycortex_sa.create_engine(workspace, busy_timeout=2000)
    with changed.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
    with first.connect() as conn:  # older engines stay usable, on the file's new options
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
    with pytest.raises(tinycortex_sa.OptionConflictError, match="busy_timeout"):
        tinycortex_sa.create_engine(workspace, busy_timeout=1000)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda ws: tinycortex_sa.create_engine(ws, bogus_option=1), "bogus_option"),
        (lambda ws: tinycortex_sa.create_engine(ws, busy_timeout="soon"), "busy_timeout"),
        (lambda ws: tinycortex_sa.create_engine(ws, busy_timeout=-1), "busy_timeout"),
        (lambda ws: tinycortex_sa.create_engine(ws, on_corrupt="delete"), "on_corrupt"),
        (lambda ws: tinycortex_sa.create_engine(ws, breaker_threshold=0), "breaker_threshold"),
        (lambda ws: tinycortex_sa.create_engine(ws, auto_migrate="maybe"), "auto_migrate"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "bogus_option=1")), "bogus_option"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "busy_timeout=soon")), "busy_timeout"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "breaker_cooldown=later")), "breaker_cooldown"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws), "checkout_timeout=-1")), "checkout_timeout"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws)), busy_timeout="soon"), "busy_timeout"),
        (lambda ws: sa.create_engine(url_for(db_path_for(ws)), on_corrupt="ignore"), "on_corrupt"),
        (lambda ws: with_connection(ws, lambda c: None, bogus_option=1), "bogus_option"),
        (lambda ws: with_connection(ws, lambda c: None, embedding_dim="wide"), "embedding_dim"),
    ],
)
def test_bad_option_is_rejected_by_name(workspace: Path, make: Callable[[Path], Any], name: str) -> None:
    with pytest.raises(tinycortex_sa.OptionError, match=re.escape(repr(name))):
        make(workspace)
    assert registry.existing_handle(db_path_for(workspace)) is None
    assert not db_path_for(workspace).exists()


def test_option_fixed_after_invalidate_honours_checkout_timeout(workspace: Path) -> None:
    """A thread that fixes the file's options after invalidate() must not wait past checkout_timeout."""
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        invalidate(workspace)  # from inside: the close is deferred to checkin
        held.set()
        assert release.wait(WAIT)

    first = Thread(lambda: with_connection(workspace, hold))
    first.start()
    waiter: Thread | None = None
    try:
        assert held.wait(WAIT)
        waiter = Thread(lambda: with_connection(workspace, lambda c: None, checkout_timeout=0.2))
        waiter.start()
        waiter.join(1.5)
        assert not waiter.is_alive(), "blocked beyond checkout_timeout=0.2 fixing options after invalidate()"
        assert isinstance(waiter.error, tinycortex_sa.CheckoutTimeoutError), waiter.error
    finally:
        release.set()
        first.join(WAIT)
        if waiter is not None:
            waiter.join(WAIT)
    assert first.error is None


def test_nested_use_after_invalidate_inside_with_connection_fails_fast(workspace: Path) -> None:
    """invalidate() inside with_connection, then the same thread asks again: an error, never a deadlock."""
    make_table(workspace)
    handle = handle_of(workspace)

    def fn(conn: sqlite3.Connection) -> None:
        invalidate(workspace)
        with_connection(workspace, lambda c: None, busy_timeout=1000)

    worker = Thread(lambda: with_connection(workspace, fn))
    worker.start()
    worker.join(1.0)
    deadlocked = worker.is_alive()
    if deadlocked:  # undo the self-deadlock so that the suite can go on (a Lock may be released by anyone)
        handle._lock.release()
        worker.join(WAIT)
    assert not deadlocked, "the thread deadlocked on its own connection lock after invalidate()"
    assert isinstance(worker.error, tinycortex_sa.NestedCheckoutError), worker.error
    assert rows_outside(workspace) == []
    assert with_connection(workspace, lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0


def test_concurrent_different_options_after_invalidate_conflict(workspace: Path) -> None:
    """Two callers racing to fix a file's options must not both win with different values."""
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        invalidate(workspace)
        held.set()
        assert release.wait(WAIT)

    first = Thread(lambda: with_connection(workspace, hold))
    first.start()
    assert held.wait(WAIT)

    def race(ms: int) -> Callable[[], Any]:
        return lambda: with_connection(
            workspace, lambda c: c.execute("PRAGMA busy_timeout").fetchone(), busy_timeout=ms
        )

    racers = [Thread(race(ms)) for ms in (1000, 2000)]
    for t in racers:
        t.start()
    time.sleep(0.1)  # both are now waiting for the connection
    release.set()
    first.join(WAIT)
    for t in racers:
        t.join(WAIT)
    assert first.error is None
    outcomes = sorted((type(t.error).__name__ if t.error else f"ok:{t.result}") for t in racers)
    winners = [t for t in racers if t.error is None]
    assert len(winners) == 1, f"both callers won with different busy_timeout values: {outcomes}"
    assert isinstance(next(t.error for t in racers if t.error), tinycortex_sa.OptionConflictError)


# -- 12. tinycortex_begin="deferred" ------------------------------------------------------------


@pytest.fixture
def reserved_elsewhere(workspace: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection holding a RESERVED lock (BEGIN IMMEDIATE) on the chunk DB."""
    engine = tinycortex_sa.create_engine(workspace, busy_timeout=100)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES ('one')")
    other = sqlite3.connect(db_path_for(workspace), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.close()


def test_deferred_begin_reads_under_another_writers_reserved_lock(
    workspace: Path, reserved_elsewhere: sqlite3.Connection
) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    deferred = engine.execution_options(tinycortex_begin="deferred")
    with Session(deferred) as session:
        assert session.execute(sa.text("SELECT v FROM t")).scalars().all() == ["one"]
        assert dbapi(session.connection()).in_transaction
    # the default session begins IMMEDIATE and waits busy_timeout=100 ms for the lock, in vain
    start = time.monotonic()
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), Session(engine) as session:
        session.execute(sa.text("SELECT v FROM t"))
    assert 0.05 <= time.monotonic() - start < 5.0
    # after the deferred connection went back, the next checkout is IMMEDIATE again, on every path
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), engine.connect() as conn:
        conn.exec_driver_sql("SELECT v FROM t")
    with Session(deferred) as session:  # and deferred still works when asked for
        assert session.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), Session(engine) as session:
        session.execute(sa.text("SELECT v FROM t"))
    reserved_elsewhere.execute("ROLLBACK")
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO t (v) VALUES ('two')"))
        session.commit()
    assert rows_outside(workspace) == ["one", "two"]


def test_deferred_begin_is_reset_even_when_the_reader_fails(
    workspace: Path, reserved_elsewhere: sqlite3.Connection
) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    deferred = engine.execution_options(tinycortex_begin="deferred")
    with pytest.raises(sa_exc.OperationalError), deferred.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    with pytest.raises(sa_exc.OperationalError, match="database is locked"), engine.connect() as conn:
        conn.exec_driver_sql("SELECT v FROM t")


def test_bad_tinycortex_begin_value_is_rejected_by_name(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    with (
        pytest.raises(tinycortex_sa.OptionError, match="tinycortex_begin"),
        engine.execution_options(tinycortex_begin="lazy").connect() as conn,
    ):
        conn.exec_driver_sql("SELECT 1")
    with engine.connect() as conn:  # the connection was handed back
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_invalidate_reopens_and_resets(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    old = the_connection(workspace)
    invalidate(workspace)
    with pytest.raises(sqlite3.ProgrammingError):
        old.execute("SELECT 1")
    with engine.connect() as conn:
        assert dbapi(conn) is not old
    assert handle_of(workspace).opens == 2
