"""Benchmark section: one primary-key lookup through every way of reaching the database."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool, SingletonThreadPool, StaticPool

from tinycortex_sa import api
from tinycortex_sa.connection import registry
from tinycortex_sa.engine.dialect import TinyCortexDialect
from tinycortex_sa.errors import CircuitOpenError, OpenError
from tinycortex_sa.models import Chunk
from tinycortex_sa.options import DEFAULTS

from .core import (
    LOOKUP_ID,
    LOOKUP_SQL,
    LOOKUP_TEXT,
    Op,
    Row,
    Settings,
    measure_ops,
    raw_connect,
    sa_engine,
)

SECTION = "Reads: one primary-key lookup"
POOLS: tuple[tuple[str, str, type[sa.pool.Pool]], ...] = (
    ("qp", "QueuePool", QueuePool),
    ("sp", "StaticPool", StaticPool),
    ("stp", "SingletonThreadPool", SingletonThreadPool),
)
_KEY = (LOOKUP_ID,)
_PARAMS = {"id": LOOKUP_ID}


class StaticPoolDialect(TinyCortexDialect):
    """tinycortex_sa's dialect (its BEGIN EXCLUSIVE) over a plain StaticPool.

    The comparator that isolates the pool's own cost; ``sqlite+tcbench://`` with ``creator=``.
    """

    supports_statement_cache = True

    def create_connect_args(self, url: sa.URL) -> Any:
        return [], {}

    @classmethod
    def engine_created(cls, engine: sa.Engine) -> None:
        """No pool check: this dialect runs on the pool it is given."""


sa.dialects.registry.register("sqlite.tcbench", __name__, "StaticPoolDialect")


def _fetch(conn: sqlite3.Connection) -> Any:
    return conn.execute(LOOKUP_SQL, _KEY).fetchone()


def _connect_execute(engine: sa.Engine) -> Op:
    def op() -> object:
        with engine.connect() as conn:
            return conn.execute(LOOKUP_TEXT, _PARAMS).fetchone()

    return op


def _checkout(engine: sa.Engine) -> Op:
    pool = engine.pool

    def op() -> object:
        pool.connect().close()
        return None

    return op


def _session_get(engine: sa.Engine) -> Op:
    def op() -> object:
        with Session(engine) as session:
            return session.get(Chunk, LOOKUP_ID)

    return op


def _tripped_workspace(root: Path) -> Path:
    """A workspace whose database cannot be created, with its breaker open."""
    broken = root / "broken-workspace"
    broken.mkdir()
    (broken / "memory_tree").write_text("a file where the database directory should be\n")
    log = logging.getLogger("tinycortex_sa")
    was_disabled, log.disabled = log.disabled, True  # the trip's warning is expected here
    try:
        for _ in range(DEFAULTS.breaker_threshold):
            with contextlib.suppress(OpenError):
                api.with_connection(broken, _fetch, breaker_cooldown=3600.0)
    finally:
        log.disabled = was_disabled
    if api.breaker_state(broken).state != "open":
        raise RuntimeError("the benchmark could not trip the circuit breaker")
    return broken


def run(root: Path, workspace: Path, settings: Settings) -> list[Row]:
    """Time every read comparator on ``workspace`` (which holds chunk ``LOOKUP_ID``)."""
    db_path = api.db_path_for(workspace)
    raw = raw_connect(db_path)
    lock = threading.Lock()

    def raw_lookup() -> object:
        return raw.execute(LOOKUP_SQL, _KEY).fetchone()

    def raw_locked() -> object:
        with lock:
            return raw.execute(LOOKUP_SQL, _KEY).fetchone()

    def raw_begin() -> object:
        raw.execute("BEGIN EXCLUSIVE")
        row = raw.execute(LOOKUP_SQL, _KEY).fetchone()
        raw.execute("ROLLBACK")
        return row

    def open_per_call() -> object:
        conn = registry.open_file(db_path, DEFAULTS, False)  # what a first checkout does, every call
        try:
            return _fetch(conn)
        finally:
            conn.close()

    tc_engine = api.create_engine(workspace)
    tc_read_only = api.create_engine(workspace, read_only=True)
    tc_deferred = tc_engine.execution_options(tinycortex_begin="deferred")
    broken = _tripped_workspace(root)

    def with_connection() -> object:
        return api.with_connection(workspace, _fetch)

    def refusal() -> object:
        try:
            api.with_connection(broken, _fetch)
        except CircuitOpenError:
            return None
        raise RuntimeError("the breaker let a call through")

    engines: list[sa.Engine] = [tc_engine, tc_read_only]
    cases: dict[str, Op] = {
        "raw": raw_lookup,
        "raw_lock": raw_locked,
        "raw_begin": raw_begin,
        "open_per_call": open_per_call,
    }
    for key, _name, poolclass in POOLS:
        plain = sa_engine(db_path, poolclass, begin_recipe=False)
        recipe = sa_engine(db_path, poolclass, begin_recipe=True)
        engines += [plain, recipe]
        cases[f"{key}_plain"] = _connect_execute(plain)
        cases[f"{key}_begin"] = _connect_execute(recipe)
        cases[f"{key}_checkout"] = _checkout(plain)
        if key == "qp":
            cases["qp_session_plain"] = _session_get(plain)
            cases["qp_session_begin"] = _session_get(recipe)
    # tinycortex_sa's own dialect (same connection set-up, same BEGIN EXCLUSIVE) on a StaticPool:
    # the difference to tc_connect is the pool alone (its lock and the per-file handle)
    conn = raw_connect(db_path)
    own_dialect = sa.create_engine("sqlite+tcbench://", creator=lambda: conn, poolclass=StaticPool)
    engines.append(own_dialect)
    cases["sp_tc_dialect"] = _connect_execute(own_dialect)
    cases["tc_with_connection"] = with_connection
    cases["tc_connect"] = _connect_execute(tc_engine)
    cases["tc_checkout"] = _checkout(tc_engine)
    cases["tc_session"] = _session_get(tc_engine)
    cases["tc_ro_connect"] = _connect_execute(tc_read_only)
    cases["tc_ro_session"] = _session_get(tc_read_only)
    cases["tc_deferred_connect"] = _connect_execute(tc_deferred)
    cases["tc_refusal"] = refusal
    try:
        us = measure_ops(cases, settings)
    finally:
        for engine in engines:
            engine.dispose()
        raw.close()
    return _rows(us)


def _rows(us: dict[str, float]) -> list[Row]:
    begin = "SQLAlchemy pysqlite BEGIN recipe (BEGIN EXCLUSIVE): same work"
    plain = "plain pysqlite: no BEGIN for a SELECT"
    spec: list[tuple[str, str, str]] = [
        ("raw", "raw sqlite3, held connection", "the floor"),
        ("raw_lock", "raw sqlite3, held connection behind a threading.Lock", ""),
        ("raw_begin", "raw sqlite3, held: BEGIN EXCLUSIVE + lookup + ROLLBACK", "cost of a real transaction"),
        ("open_per_call", "open + pragmas + schema check per call", "what the cache replaces"),
    ]
    for key, name, _poolclass in POOLS:
        safe = "not thread-safe" if key == "sp" else ""
        spec += [
            (f"{key}_plain", f"SQLAlchemy {name}: connect + execute + close", _join(plain, safe)),
            (f"{key}_begin", f"SQLAlchemy {name} + BEGIN recipe: connect + execute + close", begin),
            (f"{key}_checkout", f"SQLAlchemy {name}: raw checkout + checkin", safe),
        ]
    spec += [
        ("sp_tc_dialect", "SQLAlchemy StaticPool running tinycortex_sa's dialect: connect + execute + close",
         "same BEGIN EXCLUSIVE, no lock: isolates the pool; not thread-safe"),
        ("tc_with_connection", "tinycortex_sa with_connection", "autocommit connection, no BEGIN"),
        ("tc_connect", "tinycortex_sa engine.connect() + execute + close", "emits BEGIN EXCLUSIVE"),
        ("tc_ro_connect", "tinycortex_sa read_only=True engine: connect + execute + close",
         "BEGIN DEFERRED under PRAGMA query_only"),
        ("tc_deferred_connect", 'tinycortex_sa engine.execution_options(tinycortex_begin="deferred"): '
         "connect + execute + close", "BEGIN DEFERRED for one engine"),
        ("tc_checkout", "tinycortex_sa raw checkout + checkin", "thread-safe"),
        ("qp_session_plain", "SQLAlchemy QueuePool: Session.get", plain),
        ("qp_session_begin", "SQLAlchemy QueuePool + BEGIN recipe: Session.get", begin),
        ("tc_session", "tinycortex_sa Session.get", "emits BEGIN EXCLUSIVE"),
        ("tc_ro_session", "tinycortex_sa read_only=True engine: Session.get", "BEGIN DEFERRED"),
        ("tc_refusal", "tinycortex_sa breaker refusal (with_connection)", "CircuitOpenError raised, caught"),
    ]  # fmt: skip
    return [Row(key, SECTION, label, us[key], "raw", note) for key, label, note in spec]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
