"""One-way incremental sync of a workspace's chunk DB into its PostgreSQL schema, and its check.

Change detection reads the SQLite file only: no trigger, table or column is
added to it (``docs/scaling.md`` has the whole design).  In short:

0. if the file's identity, size, mtime and SQLite's file change counter equal
   what the last *settled* sync saw, nothing was committed since: done;
1. pass 1 reads each table in rowid order, in short read statements, and
   hashes each block of :data:`BLOCK` rowids whole (SHA-256 over the marshal
   of its rows); PostgreSQL keeps the digest of each block as last sent, so a
   block whose digest matches has not changed;
2. pass 2 reads the changed blocks again and fingerprints their rows one by
   one (primary key, SHA-256 of the values), diffing them with the state
   PostgreSQL keeps per key (rowid, block, digest): an ``UPDATE`` changes the
   digest, ``INSERT OR REPLACE`` moves the key to a new rowid (two blocks
   change), a delete leaves a key no changed block holds any more;
3. the changes are applied, deletes children first, then upserts parents
   first, each row re-read by rowid just before it is sent, :data:`BATCH`
   rows per transaction together with their state rows; a block's digest is
   written in the transaction that finishes it, and only if PostgreSQL then
   holds every row of the block exactly as pass 2 read it; the first
   transaction drops the digests of every block about to change.

Killed at any point, PostgreSQL holds whole transactions only, and a block
either has a digest that matches its content there or none and is examined
again: nothing is sent twice, nothing is missed.  A child whose parent is
not in PostgreSQL (an orphan, or a parent written between two reads) is held
back until the parent arrives, so PostgreSQL's foreign keys always hold.
"""

from __future__ import annotations

import hashlib
import marshal
import math
import os
import sqlite3
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..connection.registry import Workspace, db_path_for
from ..errors import DatabaseNotFoundError, NotAFileError, OptionError, SyncError
from ..schema.models import Base
from ..schema.types import Vector
from ..sqlite import driver, files
from .engine import create_engine, schema_for, schema_of

#: Rowids per block (the unit of change detection): small enough that 1% of rows changed at random
#: leaves most blocks untouched, large enough that a block's digest is one long hash.
BLOCK = 32
#: Rows read from SQLite per statement (one short read transaction each).
READ_BATCH = 2000
#: Rows sent per PostgreSQL transaction.
BATCH = 5000
#: The bookkeeping tables, in the workspace schema beside the copy.
STATE_TABLES = ("tcsa_sync_rows", "tcsa_sync_blocks", "tcsa_sync_source")
_STATE_DDL = (
    "CREATE TABLE IF NOT EXISTS tcsa_sync_source (id INT PRIMARY KEY CHECK (id = 1), db_path TEXT NOT NULL, "
    "synced_at TIMESTAMPTZ, fingerprint BYTEA, block_size INT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tcsa_sync_rows (tbl TEXT NOT NULL, key BYTEA NOT NULL, "
    "row_id BIGINT NOT NULL, block BIGINT NOT NULL, digest BYTEA NOT NULL, "
    "held BOOLEAN NOT NULL DEFAULT false, PRIMARY KEY (tbl, key))",
    "CREATE INDEX IF NOT EXISTS tcsa_sync_rows_block ON tcsa_sync_rows (tbl, block)",
    "CREATE TABLE IF NOT EXISTS tcsa_sync_blocks (tbl TEXT NOT NULL, block BIGINT NOT NULL, "
    "digest BYTEA NOT NULL, PRIMARY KEY (tbl, block))",
)
_OIDS = {"TEXT": 25, "BIGINT": 20, "DOUBLE PRECISION": 701, "BYTEA": 17}
_LITTLE = sys.byteorder == "little"

Progress = Callable[[str], None]


def row_digest(values: Sequence[Any]) -> bytes:
    """SHA-256 of a row's values (ints, floats, text, bytes, None): the same on both sides."""
    return hashlib.sha256(marshal.dumps(tuple(values), 2)).digest()[:16]


def row_key(values: Sequence[Any]) -> bytes:
    """A primary key's values as bytes (marshal version 2: stable, no references)."""
    return marshal.dumps(tuple(values), 2)


@dataclass(frozen=True)
class _Spec:
    """A chunk-DB table as the sync sees it (from the models' metadata)."""

    name: str
    columns: tuple[str, ...]
    pk: tuple[int, ...]
    pg_types: tuple[str, ...]
    vector: int | None
    # (parent table, the child's column positions, in the parent's key order)
    parents: tuple[tuple[str, tuple[int, ...]], ...]
    # what a file without the column reads as: its default's SQL, else NULL
    fill: tuple[str, ...]
    select: str = ""

    def key(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[i] for i in self.pk)

    def reading(self, present: set[str]) -> _Spec:
        """This spec with its SELECT for a file whose table has the columns ``present``."""
        parts = [
            f'"{c}"' if c in present else f'{fill} AS "{c}"'
            for c, fill in zip(self.columns, self.fill, strict=True)
        ]
        return replace(self, select=f"SELECT rowid, {', '.join(parts)} FROM {self.name}")


def _specs() -> list[_Spec]:
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    specs = []
    for table in Base.metadata.sorted_tables:  # parents before children
        columns = tuple(c.name for c in table.columns)
        types = tuple(
            "VECTOR" if isinstance(c.type, Vector) else c.type.compile(dialect=dialect) for c in table.columns
        )
        vector = types.index("VECTOR") if "VECTOR" in types else None
        pk = tuple(columns.index(c.name) for c in table.primary_key.columns)
        parents = []
        for fk in table.foreign_key_constraints:
            parent = fk.referred_table
            by_parent_col = {el.column.name: el.parent.name for el in fk.elements}
            order = [by_parent_col[c.name] for c in parent.primary_key.columns]
            parents.append((parent.name, tuple(columns.index(name) for name in order)))
        fill = tuple(
            str(c.server_default.arg.text) if c.server_default is not None else "NULL"  # type: ignore[attr-defined]
            for c in table.columns
        )
        specs.append(_Spec(table.name, columns, pk, types, vector, tuple(parents), fill))
    return specs


def _for_file(conn: sqlite3.Connection, db_path: Path, specs: list[_Spec]) -> list[_Spec]:
    """The specs with the SELECTs this file can answer (a file the Rust core wrote may lack columns)."""
    out = []
    for spec in specs:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({spec.name})")}
        if not present:
            if spec.name == "mem_tree_chunks":
                raise SyncError(f"{db_path} has no mem_tree_chunks table: it is not a TinyCortex chunk DB")
            out.append(spec)  # a table this file does not have (yet): it reads as empty
            continue
        out.append(spec.reading(present))
    return out


# ----------------------------------------------------------------------------- reading SQLite


def _read_batches(conn: sqlite3.Connection, spec: _Spec) -> Iterator[list[tuple[Any, ...]]]:
    if not spec.select:
        return
    last = -(2**63)
    sql = spec.select + " WHERE rowid > ? ORDER BY rowid LIMIT ?"
    while True:
        batch = conn.execute(sql, (last, READ_BATCH)).fetchall()  # one statement: a short read
        if not batch:
            return
        yield batch
        last = batch[-1][0]


def _read_blocks(conn: sqlite3.Connection, spec: _Spec) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    """Every block of the table as ``(block, rows)``, rows as read (rowid first), in rowid order."""
    pending: list[tuple[Any, ...]] = []
    for batch in _read_batches(conn, spec):
        rows = pending + batch
        start = 0
        for i in range(1, len(rows)):
            if rows[i][0] // BLOCK != rows[i - 1][0] // BLOCK:
                yield rows[start][0] // BLOCK, rows[start:i]
                start = i
        pending = rows[start:]  # the last block may go on in the next batch
    if pending:
        yield pending[0][0] // BLOCK, pending


def _block_hash(rows: list[tuple[Any, ...]]) -> bytes:
    """The digest of a block as read: all its rows' rowids and values, in one pass of C code.

    SHA-256 (first 16 bytes): where the CPU has SHA extensions it hashes twice as fast as BLAKE2b.
    """
    return hashlib.sha256(marshal.dumps(rows, 2)).digest()[:16]


def _scan(conn: sqlite3.Connection, spec: _Spec) -> dict[int, bytes]:
    """Pass 1: the digest of every block of the table."""
    return {block: _block_hash(rows) for block, rows in _read_blocks(conn, spec)}


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TableSync:
    """What one sync did to one table."""

    table: str
    rows: int
    """Rows in the SQLite file (as scanned)."""
    sent: int
    """Rows inserted or updated in PostgreSQL."""
    deleted: int
    held_back: int
    """Rows not in PostgreSQL: no parent yet, a NULL key, or a value PostgreSQL cannot store."""
    changed_blocks: int


@dataclass(frozen=True)
class SyncResult:
    """The summary of one :func:`sync`."""

    db_path: Path
    schema: str
    tables: tuple[TableSync, ...]
    seconds: float
    settled: bool
    """No other connection committed to the file during the sync: PostgreSQL equals the file as it is."""
    notes: tuple[str, ...] = ()

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.tables)

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables)

    @property
    def held_back(self) -> int:
        return sum(t.held_back for t in self.tables)


# ----------------------------------------------------------------------------- PostgreSQL side


def _vector_binary(blob: bytes) -> bytes | None:
    """pgvector's binary form of a float32 blob; None for one it cannot hold (length, NaN, infinity)."""
    if len(blob) % 4 or not 0 < len(blob) // 4 <= 16000:
        return None
    values = array("f")
    values.frombytes(blob)
    if not _LITTLE:  # the blob is little-endian
        values.byteswap()
    if not math.isfinite(sum(values)):
        return None
    if _LITTLE:
        values.byteswap()  # to the network order pgvector reads
    return struct.pack(">HH", len(values), 0) + values.tobytes()


_FITS: dict[str, Callable[[Any], bool]] = {
    "TEXT": lambda v: isinstance(v, str) and "\x00" not in v,
    "BIGINT": lambda v: isinstance(v, int) and -(2**63) <= v < 2**63,
    "DOUBLE PRECISION": lambda v: isinstance(v, (int, float)),
    "BYTEA": lambda v: isinstance(v, bytes),
    "VECTOR": lambda v: isinstance(v, bytes),
}


def _for_postgres(spec: _Spec, values: Sequence[Any]) -> list[Any] | None:
    """The row as the COPY sends it; None if a value does not fit its PostgreSQL column."""
    out = list(values)
    for i, (kind, value) in enumerate(zip(spec.pg_types, values, strict=True)):
        if value is None:
            continue
        if not _FITS[kind](value):
            return None
        if kind == "DOUBLE PRECISION":
            out[i] = float(value)
    if spec.vector is not None and out[spec.vector] is not None:
        packed = _vector_binary(out[spec.vector])
        if packed is None:
            return None
        out[spec.vector] = packed
    return out


class _Postgres:
    """The sync's PostgreSQL connection (psycopg 3), in the workspace schema."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sa_conn = engine.connect()
        self.conn: Any = self.sa_conn.connection.driver_connection
        assert self.conn is not None
        self.conn.rollback()  # SQLAlchemy's connection is idle: work on the driver's directly
        self.conn.autocommit = False
        self._register_vector_dumper()
        self._staged: set[str] = set()

    def _register_vector_dumper(self) -> None:
        from psycopg.adapt import Dumper
        from psycopg.pq import Format

        oid = self.conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]
        self.conn.rollback()

        class VectorBinary(Dumper):  # the bytes are pgvector's binary form already
            format = Format.BINARY

            def dump(self, obj: Any) -> bytes:
                return bytes(obj)

        VectorBinary.oid = oid
        self.conn.adapters.register_dumper(None, VectorBinary)
        self.vector_oid = oid

    def close(self) -> None:
        try:
            self.conn.rollback()
            self.conn.execute("SELECT pg_advisory_unlock_all()")  # the connection may go back to a pool
            self.conn.commit()
        finally:
            self.sa_conn.close()

    def oids(self, spec: _Spec) -> list[int]:
        return [self.vector_oid if t == "VECTOR" else _OIDS[t] for t in spec.pg_types]

    def stage(self, spec: _Spec) -> str:
        name = f"tcsa_stage_{spec.name}"
        if name not in self._staged:
            self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {spec.name}) ON COMMIT DELETE ROWS"
            )
            self.conn.commit()  # no later rollback may take it away
            self._staged.add(name)
        return name

    def copy_rows(self, table: str, columns: Sequence[str], oids: Sequence[int], rows: Iterable[Any]) -> None:
        names = ", ".join(f'"{c}"' for c in columns)
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(list(oids))
            for row in rows:
                copy.write_row(row)


def _prepare_state(pg: _Postgres, db_path: Path, schema: str, force: bool, lock_wait: float) -> None:
    # one sync per schema at a time: a session-level advisory lock, released by close().  A sync
    # killed a moment ago may hold it until its server process finishes the statement it was in.
    from psycopg import errors

    name = f"tcsa_sync:{schema}"
    try:
        if lock_wait > 0:
            pg.conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_wait * 1000)}ms",))
            pg.conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
            got = True
        else:
            got = pg.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()[0]
    except errors.LockNotAvailable:
        got = False
    if not got:
        pg.conn.rollback()
        raise SyncError(
            f"another sync into PostgreSQL schema {schema!r} is running (waited {lock_wait:g} s): nothing "
            "was sent. Run again when it has finished"
        )
    pg.conn.commit()
    for ddl in _STATE_DDL:
        pg.conn.execute(ddl)
    row = pg.conn.execute("SELECT db_path FROM tcsa_sync_source").fetchone()
    if row is None:
        pg.conn.execute(
            "INSERT INTO tcsa_sync_source (id, db_path, block_size) VALUES (1, %s, %s)", (str(db_path), BLOCK)
        )
    elif row[0] != str(db_path) and not force:
        pg.conn.rollback()
        raise SyncError(
            f"PostgreSQL schema {schema!r} holds the copy of {row[0]}, not of {db_path}: nothing was "
            "sent. Sync this workspace into a schema of its own (--schema NAME), or, if the file was "
            "moved, run again with --adopt to make this file the schema's source"
        )
    elif row[0] != str(db_path):
        pg.conn.execute("UPDATE tcsa_sync_source SET db_path = %s", (str(db_path),))
    size = pg.conn.execute("SELECT block_size FROM tcsa_sync_source").fetchone()[0]
    if size != BLOCK:  # state kept by a version with another block size: renumber, examine every block
        pg.conn.execute(  # floor division, as Python's // (rowids may be negative)
            "UPDATE tcsa_sync_rows SET block = (row_id - ((row_id %% %(b)s) + %(b)s) %% %(b)s) / %(b)s",
            {"b": BLOCK},
        )
        pg.conn.execute("DELETE FROM tcsa_sync_blocks")
        pg.conn.execute("UPDATE tcsa_sync_source SET block_size = %s, fingerprint = NULL", (BLOCK,))
    pg.conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tcsa_stage_rows (LIKE tcsa_sync_rows) ON COMMIT DELETE ROWS"
    )
    pg.conn.commit()


@dataclass
class _Plan:
    """One table's changes: its changed blocks as read now, diffed by key with their state rows."""

    spec: _Spec
    changed: list[int] = field(default_factory=list)
    # per changed block: (its digest as read, its rows' (rowid, key, digest)); None for NULL keys
    blocks: dict[int, tuple[bytes, list[tuple[int, bytes | None, bytes]]]] = field(default_factory=dict)
    upserts: list[tuple[int, bytes]] = field(default_factory=list)  # (rowid, key)
    moves: list[tuple[bytes, int]] = field(default_factory=list)  # same digest, new rowid
    deletes: list[bytes] = field(default_factory=list)
    known: set[bytes] = field(default_factory=set)  # keys PostgreSQL had in the changed blocks
    unsealable: set[int] = field(default_factory=set)  # blocks with a row not sent as read
    sent: int = 0
    null_keys: int = 0
    orphans: int = 0


def _ranges(blocks: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Runs of consecutive blocks as ``(first, last)``."""
    first = prev = blocks[0]
    for b in blocks[1:]:
        if b != prev + 1:
            yield first, prev
            first = b
        prev = b
    yield first, prev


def _plan(pg: _Postgres, conn: sqlite3.Connection, spec: _Spec) -> _Plan:
    name = spec.name
    current = _scan(conn, spec)
    plan = _Plan(spec)
    stored = dict(pg.conn.execute("SELECT block, digest FROM tcsa_sync_blocks WHERE tbl = %s", (name,)))
    pg.conn.rollback()
    plan.changed = sorted(b for b in set(current) | set(stored) if stored.get(b) != current.get(b))
    if not plan.changed:
        return plan
    # pass 2: the changed blocks again, row by row (they may have moved on since pass 1: fine)
    keys: set[bytes] = set()
    if spec.select:
        for first, last in _ranges(plan.changed):
            rows = conn.execute(
                spec.select + " WHERE rowid >= ? AND rowid < ? ORDER BY rowid",
                (first * BLOCK, (last + 1) * BLOCK),
            ).fetchall()
            by_block: dict[int, list[tuple[Any, ...]]] = {}
            for row in rows:
                by_block.setdefault(row[0] // BLOCK, []).append(row)
            for block, block_rows in by_block.items():
                fingerprints: list[tuple[int, bytes | None, bytes]] = []
                for row in block_rows:
                    values = row[1:]
                    key_values = spec.key(values)
                    key = None if None in key_values else row_key(key_values)
                    if key is not None:
                        keys.add(key)
                    fingerprints.append((row[0], key, row_digest(values)))
                plan.blocks[block] = (_block_hash(block_rows), fingerprints)
    state: dict[bytes, tuple[int, bytes]] = {}
    for first in range(0, len(plan.changed), 1000):
        for key, row_id, digest in pg.conn.execute(
            "SELECT key, row_id, digest FROM tcsa_sync_rows WHERE tbl = %s AND block = ANY(%s)",
            (name, plan.changed[first : first + 1000]),
        ):
            state[bytes(key)] = (row_id, bytes(digest))
    pg.conn.rollback()
    for block in plan.changed:
        for rowid, key, digest in plan.blocks.get(block, (b"", []))[1]:
            if key is None:
                plan.null_keys += 1  # PostgreSQL's primary keys are NOT NULL: said in the summary
                continue
            old = state.get(key)
            if old is None or old[1] != digest:
                plan.upserts.append((rowid, key))
            elif old[0] != rowid:
                plan.moves.append((key, rowid))
    plan.deletes = [key for key in state if key not in keys]
    plan.known = set(state)
    return plan


def _key_arrays(spec: _Spec, keys: Sequence[bytes]) -> list[list[Any]]:
    decoded = [marshal.loads(k) for k in keys]
    return [[k[i] for k in decoded] for i in range(len(spec.pk))]


def _delete(pg: _Postgres, plan: _Plan) -> None:
    spec = plan.spec
    pk_names = [spec.columns[i] for i in spec.pk]
    pk_types = [("text" if spec.pg_types[i] == "TEXT" else "bigint") for i in spec.pk]
    columns = ", ".join(f'"{c}"' for c in pk_names)
    unnest = ", ".join(f"%s::{t}[]" for t in pk_types)
    for first in range(0, len(plan.deletes), BATCH):
        keys = plan.deletes[first : first + BATCH]
        pg.conn.execute(
            f"DELETE FROM {spec.name} WHERE ({columns}) IN (SELECT * FROM unnest({unnest}))",
            _key_arrays(spec, keys),
        )
        pg.conn.execute("DELETE FROM tcsa_sync_rows WHERE tbl = %s AND key = ANY(%s)", (spec.name, keys))
        pg.conn.commit()


def _reread(conn: sqlite3.Connection, spec: _Spec, rowids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    found: dict[int, tuple[Any, ...]] = {}
    for first in range(0, len(rowids), 500):
        part = rowids[first : first + 500]
        marks = ",".join("?" * len(part))
        for row in conn.execute(spec.select + f" WHERE rowid IN ({marks})", part):
            found[row[0]] = row[1:]
    return found


def _upsert_sql(spec: _Spec, stage: str) -> str:
    names = ", ".join(f'"{c}"' for c in spec.columns)
    pk = ", ".join(f'"{spec.columns[i]}"' for i in spec.pk)
    others = [c for i, c in enumerate(spec.columns) if i not in spec.pk]
    action = (
        "DO UPDATE SET " + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in others) if others else "DO NOTHING"
    )
    return f"INSERT INTO {spec.name} ({names}) SELECT {names} FROM {stage} ON CONFLICT ({pk}) {action}"


def _seal(pg: _Postgres, plan: _Plan, blocks: Sequence[int]) -> None:
    """Write the digests of the ``blocks`` whose rows PostgreSQL now holds exactly as pass 2 read them.

    In the transaction that finished them; a block with a row that was not
    sent as read (changed since, gone, or waiting for its parent) gets no
    digest, so the next sync examines it again.
    """
    sealed = [
        (plan.spec.name, b, plan.blocks[b][0])
        for b in blocks
        if b in plan.blocks and b not in plan.unsealable
    ]
    pg.copy_rows("tcsa_sync_blocks", ("tbl", "block", "digest"), (25, 20, 17), sealed)


def _apply(
    pg: _Postgres, sqlite_conn: sqlite3.Connection, plan: _Plan, present: _Present, say: Progress
) -> None:
    """Send the upserts of ``plan`` block by block, sealing each group of blocks as it commits."""
    spec = plan.spec
    stage = pg.stage(spec)
    upsert = _upsert_sql(spec, stage)
    expected = {
        key: digest for block in plan.blocks.values() for _, key, digest in block[1] if key is not None
    }
    by_block: dict[int, list[tuple[int, bytes]]] = {}
    for rowid, key in plan.upserts:
        by_block.setdefault(rowid // BLOCK, []).append((rowid, key))
    moves_by_block: dict[int, list[tuple[bytes, int]]] = {}
    for key, rowid in plan.moves:
        moves_by_block.setdefault(rowid // BLOCK, []).append((key, rowid))
    parents = [(present.keys(name), cols) for name, cols in spec.parents] if plan.upserts else []
    oids = pg.oids(spec)
    done = 0

    def flush(group: list[int]) -> None:
        nonlocal done
        wanted = [item for b in group for item in by_block.get(b, ())]
        found = _reread(sqlite_conn, spec, [rowid for rowid, _ in wanted])
        data: list[Any] = []
        state: list[tuple[str, bytes, int, int, bytes, bool | None]] = []
        for rowid, key in wanted:
            values = found.get(rowid)
            digest = row_digest(values) if values is not None else b""
            if values is None or row_key(spec.key(values)) != key or digest != expected[key]:
                plan.unsealable.add(rowid // BLOCK)  # gone or changed since pass 2: the next sync sees it
                if values is None or row_key(spec.key(values)) != key:
                    continue
            if any(row_key(tuple(values[i] for i in cols)) not in keys for keys, cols in parents):
                plan.orphans += 1  # its parent is not in PostgreSQL (yet): held back
                plan.unsealable.add(rowid // BLOCK)
                continue
            row = _for_postgres(spec, values)
            if row is not None:
                data.append(row)
            state.append((spec.name, key, rowid, rowid // BLOCK, digest, row is None))
        for block in group:
            state.extend(
                (spec.name, key, rowid, block, b"", None) for key, rowid in moves_by_block.get(block, ())
            )
        if not (data and not any(s[1] in plan.known for s in state) and _insert(pg, spec, oids, data, state)):
            if data:
                pg.copy_rows(stage, spec.columns, oids, data)
                pg.conn.execute(upsert)
            _store_state(pg, state)
        _seal(pg, plan, group)
        pg.conn.commit()
        plan.sent += len(data)
        done += len(wanted)
        if wanted:
            say(f"{spec.name}: {done:,}/{len(plan.upserts):,} rows sent")

    group: list[int] = []
    pending = 0
    for block in plan.changed:
        group.append(block)
        pending += len(by_block.get(block, ()))
        if pending >= BATCH:
            flush(group)
            group, pending = [], 0
    if group:
        flush(group)


_STATE_COLUMNS = ("tbl", "key", "row_id", "block", "digest", "held")
_STATE_OIDS = (25, 17, 20, 20, 17, 16)


def _insert(pg: _Postgres, spec: _Spec, oids: Sequence[int], data: list[Any], state: list[Any]) -> bool:
    """COPY rows PostgreSQL does not have straight into their tables (no staging); False if one is there.

    Only tried for keys the state does not know; a key sent by an interrupted
    earlier pass of a torn read can still be there, and then the savepoint is
    rolled back and the rows go through the upsert.
    """
    from psycopg import errors

    try:
        with pg.conn.transaction():
            pg.copy_rows(spec.name, spec.columns, oids, data)
            pg.copy_rows("tcsa_sync_rows", _STATE_COLUMNS, _STATE_OIDS, state)
    except errors.UniqueViolation:
        return False
    return True


def _store_state(pg: _Postgres, state: list[tuple[Any, ...]]) -> None:
    """Upsert state rows; a row with ``held`` None only moves (same digest, new rowid)."""
    full = [s for s in state if s[5] is not None]
    moved = [s for s in state if s[5] is None]
    if full:
        pg.copy_rows("tcsa_stage_rows", _STATE_COLUMNS, _STATE_OIDS, full)
        pg.conn.execute(
            "INSERT INTO tcsa_sync_rows SELECT * FROM tcsa_stage_rows ON CONFLICT (tbl, key) DO UPDATE SET "
            "row_id = EXCLUDED.row_id, block = EXCLUDED.block, digest = EXCLUDED.digest, held = EXCLUDED.held"
        )
    for tbl, key, rowid, block, _, _ in moved:
        pg.conn.execute(
            "UPDATE tcsa_sync_rows SET row_id = %s, block = %s WHERE tbl = %s AND key = %s",
            (rowid, block, tbl, key),
        )


class _Present:
    """The keys of a parent table that PostgreSQL holds, loaded when a child first needs them."""

    def __init__(self, pg: _Postgres) -> None:
        self.pg = pg
        self._keys: dict[str, set[bytes]] = {}

    def keys(self, table: str) -> set[bytes]:
        if table not in self._keys:
            rows = self.pg.conn.execute(
                "SELECT key FROM tcsa_sync_rows WHERE tbl = %s AND NOT held", (table,)
            )
            self._keys[table] = {bytes(k) for (k,) in rows}
            self.pg.conn.rollback()
        return self._keys[table]

    def forget(self, table: str) -> None:
        self._keys.pop(table, None)


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def sync(
    workspace: Workspace,
    url: str | sa.URL | sa.Engine,
    *,
    schema: str | None = None,
    adopt: bool = False,
    progress: Progress | None = None,
    busy_timeout: int = 5000,
    lock_wait: float = 30.0,
) -> SyncResult:
    """Copy the workspace's chunk DB into PostgreSQL, sending only what changed since the last sync.

    The first run creates the schema (:func:`tinycortex_sa.postgres.upgrade`)
    and sends everything; later runs send the inserted, updated and replaced
    rows and delete the deleted ones.  The SQLite file is only read, through
    read-only connections, in short statements: the Rust core's writers wait
    for one batch of reads at most, and nothing is written to the file (a
    file at an older schema reads its missing columns as their defaults).
    Safe to kill at any moment: run it again.  ``schema`` defaults to
    :func:`~tinycortex_sa.postgres.schema_for` of the workspace; ``adopt``
    lets a schema that holds the copy of a file now elsewhere take this one
    as its source.  One sync per schema runs at a time: a second one waits up
    to ``lock_wait`` seconds for the first to finish, then is refused.  A missing file is
    :class:`~tinycortex_sa.DatabaseNotFoundError`; a schema that holds another
    workspace's copy, or a server without pgvector, :class:`~tinycortex_sa.errors.SyncError`.
    """
    from . import upgrade as pg_upgrade
    from .vectors import ensure_vector_indexes

    started = time.perf_counter()
    say = progress or (lambda _line: None)
    db_path = db_path_for(workspace)
    _check_source(db_path)
    engine, own = _engine(url, schema or schema_for(db_path.parent.parent), schema is not None)
    schema = schema_of(engine) or "public"
    try:
        conn = _open_read_only(db_path, busy_timeout)
        try:
            specs = _for_file(conn, db_path, _specs())
            pg_upgrade(engine)
            pg = _Postgres(engine)
            try:
                _prepare_state(pg, db_path, schema, adopt, lock_wait)
                tables, settled = _run(pg, conn, specs, say)
                notes = ensure_vector_indexes(pg.conn, say)
                pg.conn.execute("UPDATE tcsa_sync_source SET synced_at = now()")
                pg.conn.commit()
            finally:
                pg.close()
        finally:
            conn.close()
    finally:
        if own:
            engine.dispose()
    return SyncResult(db_path, schema, tables, time.perf_counter() - started, settled, tuple(notes))


def _check_source(db_path: Path) -> None:
    what = files.not_regular(db_path)
    if what is not None:  # never opened: a FIFO would block
        raise NotAFileError(
            f"{db_path} is {what}, not a database file; nothing was read or sent", path=db_path
        )
    if not db_path.is_file():
        raise DatabaseNotFoundError(
            f"no database at {db_path}: nothing to sync. Check the workspace path (the directory "
            "holding memory_tree/chunks.db)",
            path=db_path,
        )
    if files.read_header(db_path).wal_mode:  # even a read-only reader rewrites a WAL file's -shm
        raise SyncError(
            f"{db_path} is in WAL mode (an older release left it so): nothing was read or sent. Open it "
            f"once through the library (tinycortex-sa upgrade {db_path.parent.parent}), which checkpoints "
            "it and switches it to the Rust core's TRUNCATE journal; the sync then reads it without "
            "changing a byte"
        )


def _open_read_only(db_path: Path, busy_timeout: int) -> sqlite3.Connection:
    try:
        conn = driver.open_uri(db_path, "ro", busy_timeout)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as err:
        raise SyncError(
            f"{db_path}: cannot be read ({err}); nothing was sent. `tinycortex-sa doctor` says why"
        ) from err
    return conn


def _engine(url: str | sa.URL | sa.Engine, schema: str, asked: bool) -> tuple[sa.Engine, bool]:
    if isinstance(url, sa.Engine):
        if asked and schema_of(url) != schema:
            raise OptionError(
                f"schema={schema!r}, but the engine works in {schema_of(url) or 'the default schema'}: "
                "pass a URL with schema=, or an engine of postgres.create_engine(url, schema=...)"
            )
        return url, False
    return create_engine(url, schema=schema), True


def _run(
    pg: _Postgres, conn: sqlite3.Connection, specs: list[_Spec], say: Progress
) -> tuple[tuple[TableSync, ...], bool]:
    version = _data_version(conn)
    fingerprint = _fingerprint(conn)
    last = pg.conn.execute("SELECT fingerprint FROM tcsa_sync_source").fetchone()[0]
    if fingerprint is not None and last is not None and bytes(last) == fingerprint:
        # not one commit to the file since a sync that saw it whole: PostgreSQL holds it already
        pg.conn.rollback()
        return tuple(TableSync(s.name, _count(conn, s), 0, 0, _held(pg, s.name), 0) for s in specs), True
    plans: list[_Plan] = []
    for spec in specs:
        say(f"scanning {spec.name}")
        plans.append(_plan(pg, conn, spec))
    # invalidate every block about to change, and the file's fingerprint, before anything changes
    pg.conn.execute("UPDATE tcsa_sync_source SET fingerprint = NULL")
    for plan in plans:
        if plan.changed:
            pg.conn.execute(
                "DELETE FROM tcsa_sync_blocks WHERE tbl = %s AND block = ANY(%s)",
                (plan.spec.name, plan.changed),
            )
    pg.conn.commit()
    for plan in reversed(plans):  # children first
        if plan.deletes:
            say(f"{plan.spec.name}: deleting {len(plan.deletes):,} rows")
            _delete(pg, plan)
    present = _Present(pg)
    for plan in plans:  # parents first
        if plan.changed:
            _apply(pg, conn, plan, present, say)
            present.forget(plan.spec.name)  # its keys changed: load them again when a child asks
    settled = _data_version(conn) == version and not any(p.unsealable for p in plans)
    if settled and fingerprint is not None:
        pg.conn.execute("UPDATE tcsa_sync_source SET fingerprint = %s", (fingerprint,))
        pg.conn.commit()
    tables = tuple(
        TableSync(
            table=p.spec.name,
            rows=_count(conn, p.spec),
            sent=p.sent,
            deleted=len(p.deletes),
            held_back=p.orphans + p.null_keys + _held(pg, p.spec.name),
            changed_blocks=len(p.changed),
        )
        for p in plans
    )
    return tables, settled


def _count(conn: sqlite3.Connection, spec: _Spec) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {spec.name}").fetchone()[0]) if spec.select else 0


def _held(pg: _Postgres, table: str) -> int:
    count = pg.conn.execute(
        "SELECT count(*) FROM tcsa_sync_rows WHERE tbl = %s AND held", (table,)
    ).fetchone()[0]
    pg.conn.rollback()
    return int(count)


def _fingerprint(conn: sqlite3.Connection) -> bytes | None:
    """The file's identity, size, mtime and SQLite's file change counter, read under a shared lock.

    In rollback-journal mode (the chunk DB's; the sync refuses a WAL-mode
    file) every commit by any connection increments the counter in the
    header.  None if the header says otherwise (the file is then scanned).
    """
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the shared lock
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        with open(path, "rb") as f:
            header = f.read(100)
            st = os.fstat(f.fileno())
    finally:
        conn.execute("COMMIT")
    if len(header) < 100 or header[18] == 2:
        return None
    return struct.pack("<QQQQ", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) + header[24:28]


# ----------------------------------------------------------------------------- check


@dataclass(frozen=True)
class TableCheck:
    """One table on both sides: counts, an order-free checksum of the row digests, and what differs."""

    table: str
    sqlite_rows: int
    postgres_rows: int
    sqlite_checksum: str
    postgres_checksum: str
    missing: tuple[str, ...] = ()
    """Keys (up to ten) in SQLite and not in PostgreSQL."""
    extra: tuple[str, ...] = ()
    """Keys (up to ten) in PostgreSQL and not in SQLite."""
    differing: tuple[str, ...] = ()
    """Keys (up to ten) whose values differ."""
    counts: tuple[int, int, int] = (0, 0, 0)
    """How many keys are missing, extra and differing in all."""

    @property
    def equal(self) -> bool:
        return self.counts == (0, 0, 0)


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found, table by table."""

    db_path: Path
    schema: str
    tables: tuple[TableCheck, ...]

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)


def _checksum(digests: Iterable[bytes]) -> str:
    total = 0
    for digest in digests:
        total = (total + int.from_bytes(digest[:8], "little")) % 2**64
    return f"{total:016x}"


def _sqlite_digests(conn: sqlite3.Connection, spec: _Spec) -> dict[bytes, bytes]:
    out = {}
    for batch in _read_batches(conn, spec):
        for row in batch:
            values = row[1:]
            out[row_key(spec.key(values))] = row_digest(values)
    return out


def _from_vector_send(data: bytes | None) -> bytes | None:
    """pgvector's binary form (dimension, unused, big-endian float32s) as a little-endian blob."""
    if data is None:
        return None
    values = array("f")
    values.frombytes(bytes(data)[4:])
    if _LITTLE:
        values.byteswap()
    return values.tobytes()


def _postgres_digests(raw: Any, spec: _Spec) -> dict[bytes, bytes]:
    columns = [
        f'vector_send("{c}")' if t == "VECTOR" else f'"{c}"'
        for c, t in zip(spec.columns, spec.pg_types, strict=True)
    ]
    out = {}
    with raw.cursor(name=f"tcsa_check_{spec.name}") as cur:  # a server-side cursor: rows stream
        cur.itersize = READ_BATCH
        cur.execute(f"SELECT {', '.join(columns)} FROM {spec.name}")
        for row in cur:
            values = list(row)
            if spec.vector is not None:
                values[spec.vector] = _from_vector_send(values[spec.vector])
            for i, kind in enumerate(spec.pg_types):
                if kind == "BYTEA" and values[i] is not None:
                    values[i] = bytes(values[i])
            out[row_key(spec.key(values))] = row_digest(values)
    raw.rollback()
    return out


def _show(keys: Iterable[bytes]) -> tuple[str, ...]:
    shown = sorted(repr(marshal.loads(k)) for k in keys)
    return tuple(shown[:10])


def check(
    workspace: Workspace,
    url: str | sa.URL | sa.Engine,
    *,
    schema: str | None = None,
    busy_timeout: int = 5000,
) -> CheckResult:
    """Compare the workspace's chunk DB with its PostgreSQL copy, table by table, value by value.

    Reads every row on both sides (SQLite read-only, in short statements;
    PostgreSQL through a server-side cursor), independently of the sync's
    bookkeeping: counts, a checksum per table and the keys that differ.
    Rows the sync holds back (see :class:`TableSync`) show as missing.
    """
    db_path = db_path_for(workspace)
    _check_source(db_path)
    engine, own = _engine(url, schema or schema_for(db_path.parent.parent), schema is not None)
    try:
        conn = _open_read_only(db_path, busy_timeout)
        pg = _Postgres(engine)
        try:
            tables = []
            for spec in _for_file(conn, db_path, _specs()):
                left = _sqlite_digests(conn, spec)
                right = _postgres_digests(pg.conn, spec)
                missing = left.keys() - right.keys()
                extra = right.keys() - left.keys()
                differing = [k for k in left.keys() & right.keys() if left[k] != right[k]]
                tables.append(
                    TableCheck(
                        table=spec.name,
                        sqlite_rows=len(left),
                        postgres_rows=len(right),
                        sqlite_checksum=_checksum(left.values()),
                        postgres_checksum=_checksum(right.values()),
                        missing=_show(missing),
                        extra=_show(extra),
                        differing=_show(differing),
                        counts=(len(missing), len(extra), len(differing)),
                    )
                )
        finally:
            pg.close()
            conn.close()
        return CheckResult(db_path, schema_of(engine) or "public", tuple(tables))
    finally:
        if own:
            engine.dispose()
