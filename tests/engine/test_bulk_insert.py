"""Bulk inserts through the sqlite+tinycortex dialect: multi-row VALUES batches, as an application
sees them (Core insert() and the ORM bulk insert with lists of dicts)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from benchmark.core import chunk_dicts
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa.models import Chunk

CHUNKS: sa.Table = Chunk.__table__  # type: ignore[assignment]


def statements(engine: sa.Engine) -> list[tuple[str, int]]:
    """Every INSERT handed to the driver: ("execute" or "executemany", parameters handed over)."""
    sent: list[tuple[str, int]] = []

    @sa.event.listens_for(engine, "do_execute")
    def execute(cursor: Any, statement: str, params: Any, context: Any) -> None:
        if statement.startswith("INSERT"):
            sent.append(("execute", len(params)))

    @sa.event.listens_for(engine, "do_executemany")
    def executemany(cursor: Any, statement: str, params: Any, context: Any) -> None:
        if statement.startswith("INSERT"):
            sent.append(("executemany", len(params)))

    return sent


def test_a_bulk_insert_is_sent_in_multi_row_batches_and_every_row_arrives(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    sent = statements(engine)
    rows = chunk_dicts("bulk", 2500)
    with engine.begin() as conn:
        result = conn.execution_options(preserve_rowcount=True).execute(sa.insert(CHUNKS), rows)
    assert result.rowcount == 2500
    columns = len(CHUNKS.c)
    assert sent == [("execute", 1000 * columns), ("execute", 1000 * columns), ("execute", 500 * columns)]
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Chunk)) == 2500
        last = session.get(Chunk, "bulk-002499")
        assert last is not None and last.tags_json == ["bench", "chunk"] and last.seq_in_source == 99
    engine.dispose()


def test_the_orm_bulk_insert_is_batched_too(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    sent = statements(engine)
    with Session(engine) as session:
        session.execute(sa.insert(Chunk), chunk_dicts("orm", 1200))
        session.commit()
        assert session.scalar(sa.select(sa.func.count()).select_from(Chunk)) == 1200
    assert [how for how, _ in sent] == ["execute", "execute"]  # 1000 + 200 rows
    engine.dispose()


def test_a_failing_row_leaves_nothing_once_the_transaction_rolls_back(workspace: Path) -> None:
    engine = tinycortex_sa.create_engine(workspace)
    rows = chunk_dicts("dup", 2500)
    with pytest.raises(sa.exc.IntegrityError, match="UNIQUE constraint failed"), engine.begin() as conn:
        conn.execute(sa.insert(CHUNKS), [*rows, rows[0]])
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(CHUNKS)) == 0
    engine.dispose()


def test_on_conflict_statements_keep_executemany_and_bind_their_own_parameters(workspace: Path) -> None:
    """SQLAlchemy before 2.0.47 batched these and lost the SET clause's parameters (#13130)."""
    engine = tinycortex_sa.create_engine(workspace)
    rows = chunk_dicts("up", 3)
    with engine.begin() as conn:
        conn.execute(sa.insert(CHUNKS), rows)
    sent = statements(engine)
    upsert = sqlite_insert(CHUNKS).on_conflict_do_update(
        index_elements=[CHUNKS.c.id], set_={"content": sa.bindparam("edited") + sa.literal(" (edited)")}
    )
    with engine.begin() as conn:
        conn.execute(upsert, [{**row, "edited": f"new {i}"} for i, row in enumerate(rows)])
    assert sent == [("executemany", 3)]
    with engine.connect() as conn:
        contents = conn.execute(sa.select(CHUNKS.c.content).order_by(CHUNKS.c.id)).scalars().all()
    assert contents == ["new 0 (edited)", "new 1 (edited)", "new 2 (edited)"]
    engine.dispose()


def test_batches_never_bind_more_parameters_than_sqlite_accepts(workspace: Path) -> None:
    """The batch size follows this connection's SQLITE_LIMIT_VARIABLE_NUMBER."""
    tinycortex_sa.with_connection(
        workspace, lambda conn: conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
    )
    engine = tinycortex_sa.create_engine(workspace)
    sent = statements(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(CHUNKS), chunk_dicts("small", 50))
        assert conn.scalar(sa.select(sa.func.count()).select_from(CHUNKS)) == 50
    per_batch = 100 // len(CHUNKS.c)
    assert sent == [("execute", per_batch * len(CHUNKS.c))] * (50 // per_batch)
    engine.dispose()
