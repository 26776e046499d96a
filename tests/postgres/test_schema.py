"""The chunk-DB models and revisions on PostgreSQL: built by Alembic, checked by Alembic, used by the ORM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import postgres
from tinycortex_sa.errors import OptionError, PostgresUnavailableError
from tinycortex_sa.models import Chunk, ChunkEmbedding, Job, McpWrite
from tinycortex_sa.schema.upgrade import alembic_config
from tinycortex_sa.schema.version import HEAD

from .conftest import raw_pg

REPO = Path(__file__).resolve().parents[2]


def _chunk(chunk_id: str, **kw: object) -> Chunk:
    values: dict[str, object] = dict(
        id=chunk_id,
        source_kind="chat",
        source_id="s-1",
        owner="me",
        timestamp_ms=1_700_000_000_000,
        time_range_start_ms=1,
        time_range_end_ms=2**40,
        content="hello",
        token_count=1,
        seq_in_source=0,
        created_at_ms=1,
    )
    values.update(kw)
    return Chunk(**values)


def test_upgrade_builds_the_schema_at_head_and_is_idempotent(pg_url: str, pg_schema: str) -> None:
    first = postgres.upgrade(pg_url, schema=pg_schema)
    assert (first.schema, first.before, first.after, first.changed) == (pg_schema, None, HEAD, True)
    again = tinycortex_sa.upgrade(pg_url, schema=pg_schema)  # the top-level name takes a URL too
    assert isinstance(again, postgres.PgUpgradeResult)
    assert (again.before, again.after, again.changed) == (HEAD, HEAD, False)
    with raw_pg(pg_url) as conn:  # type: ignore[attr-defined]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
            )
        }
    assert tables == {t.name for t in tinycortex_sa.models.Base.metadata.sorted_tables} | {"alembic_version"}


def test_column_types_follow_sqlite_storage_classes(pg_url: str, pg_schema: str) -> None:
    postgres.upgrade(pg_url, schema=pg_schema)
    with raw_pg(pg_url) as conn:  # type: ignore[attr-defined]
        types = {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                "SELECT table_name, column_name, udt_name FROM information_schema.columns "
                "WHERE table_schema = %s",
                (pg_schema,),
            )
        }
        storage = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'vector'",
            (f"{pg_schema}.mem_tree_chunk_embeddings",),
        ).fetchone()[0]
    assert types["mem_tree_chunks", "timestamp_ms"] == "int8"  # SQLite's INTEGER is 64-bit
    assert types["mem_tree_score", "total"] == "float8"  # and its REAL 8 bytes
    assert types["mem_tree_chunks", "tags_json"] == "text"  # the Rust core's JSON text, as written
    assert types["mem_tree_chunks", "embedding"] == "bytea"  # the legacy blob
    assert types["mem_tree_chunk_embeddings", "vector"] == "vector"
    assert types["mem_tree_summary_embeddings", "vector"] == "vector"
    assert types["mem_tree_trees", "ask"] == "text"  # revision 0003 ran there too
    assert storage == "e"  # uncompressed, out of line


def test_alembic_check_is_clean_on_postgresql(pg_url: str, pg_schema: str) -> None:
    postgres.upgrade(pg_url, schema=pg_schema)
    engine = postgres.create_engine(pg_url, schema=pg_schema)
    try:
        with engine.begin() as conn:
            command.check(alembic_config(connection=conn))  # raises on any difference
        # an index the models do not have is a difference: the check is live, not vacuous
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE INDEX extra_idx ON mem_tree_chunks (owner, content)")
        with engine.begin() as conn, pytest.raises(Exception, match="extra_idx"):
            command.check(alembic_config(connection=conn))
    finally:
        engine.dispose()


def test_alembic_command_line_with_a_postgresql_url(pg_url: str, pg_schema: str) -> None:
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    x = ["-x", f"url={pg_url}", "-x", f"schema={pg_schema}"]
    done = subprocess.run([*alembic, *x, "upgrade", "head"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    current = subprocess.run([*alembic, *x, "current"], capture_output=True, text=True, timeout=120)
    assert HEAD in current.stdout, current.stderr
    check = subprocess.run([*alembic, *x, "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "No new upgrade operations" in check.stdout + check.stderr


def test_orm_models_work_unchanged(pg_url: str, pg_schema: str) -> None:
    postgres.upgrade(pg_url, schema=pg_schema)
    engine = postgres.create_engine(pg_url, schema=pg_schema)
    try:
        with Session(engine) as session:
            chunk = _chunk("c-1", tags_json=["a", "ü"], timestamp_ms=2**53)
            chunk.embeddings.append(ChunkEmbedding(model_signature="m@3", vector=(0.5, -1.25, 3.0), dim=3))
            session.add_all([chunk, McpWrite(timestamp_ms=1, client_info="c", tool_name="t", success=1)])
            session.add(Job(id="j-1", kind="k", payload_json={"n": 1}, available_at_ms=1, created_at_ms=1))
            session.commit()
        with Session(engine) as session:
            got = session.get(Chunk, "c-1")
            assert got is not None
            assert (got.tags_json, got.timestamp_ms, got.lifecycle_status) == (["a", "ü"], 2**53, "admitted")
            assert got.embeddings[0].vector == (0.5, -1.25, 3.0)
            assert session.scalars(sa.select(McpWrite.id)).one() == 1  # autoincrement, as on SQLite
            assert session.get(Job, "j-1").payload_json == {"n": 1}  # type: ignore[union-attr]
            session.delete(got)  # ON DELETE CASCADE, done by PostgreSQL (passive_deletes)
            session.commit()
            assert session.scalar(sa.select(sa.func.count()).select_from(ChunkEmbedding)) == 0
    finally:
        engine.dispose()


def test_two_workspaces_share_a_database_without_mixing(pg_url: str, pg_schema: str) -> None:
    other = pg_schema + "_b"
    engines = [postgres.create_engine(pg_url, schema=s) for s in (pg_schema, other)]
    try:
        for engine in engines:
            postgres.upgrade(engine)
        with Session(engines[0]) as session:
            session.add(_chunk("only-in-a"))
            session.commit()
        counts = []
        for engine in engines:
            with Session(engine) as session:
                counts.append(session.scalars(sa.select(Chunk.id)).all())
        assert counts == [["only-in-a"], []]
    finally:
        for engine in engines:
            engine.dispose()
        with raw_pg(pg_url) as conn:  # type: ignore[attr-defined]
            conn.execute(f"DROP SCHEMA IF EXISTS {other} CASCADE")


def test_schema_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "notes", tmp_path / "b" / "notes"
    assert postgres.schema_for(a) == postgres.schema_for(a)
    assert postgres.schema_for(a) != postgres.schema_for(b)
    assert postgres.schema_for(a).startswith("tc_notes_")
    for bad in ("Bad-Name", "pg_catalog", "1abc", "x" * 64, 'a"; drop'):
        with pytest.raises(OptionError, match="lower-case"):
            postgres.create_engine("postgresql+psycopg://localhost/x", schema=bad)


def test_urls_that_are_not_postgresql_with_psycopg_are_refused() -> None:
    with pytest.raises(OptionError, match="not a postgresql"):
        postgres.create_engine("sqlite:///x.db")
    with pytest.raises(OptionError, match="psycopg 3"):
        postgres.create_engine("postgresql+psycopg2://localhost/x")


def test_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgvector.sqlalchemy", None)  # as if not installed
    with pytest.raises(PostgresUnavailableError, match=r"tinycortex_sa\[postgres\]"):
        postgres.create_engine("postgresql+psycopg://localhost/x")
    from sqlalchemy.dialects import postgresql

    with pytest.raises(PostgresUnavailableError, match=r"tinycortex_sa\[postgres\]"):
        sa.Column("v", tinycortex_sa.schema.types.Vector()).type.dialect_impl(postgresql.dialect())


def test_the_postgresql_parts_are_imported_only_when_used(tmp_path: Path) -> None:
    script = (
        "import sys, tinycortex_sa\n"
        "from tinycortex_sa import postgres\n"  # the package itself imports no driver
        f"engine = tinycortex_sa.create_engine({str(tmp_path / 'ws')!r})\n"
        "engine.connect().close()\n"
        "print(sorted(m for m in ('psycopg', 'pgvector', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_progress_is_reported_while_syncing(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    import io

    from tinycortex_sa.cli.progress import LiveLine

    tinycortex_sa.upgrade(tmp_path / "ws")
    stream = io.StringIO()
    line = LiveLine(stream)
    postgres.sync(tmp_path / "ws", pg_url, schema=pg_schema, progress=line)
    line.clear()
    painted = stream.getvalue()
    assert "\r\x1b[2Kscanning mem_tree_chunks" in painted
    assert painted.endswith("\r\x1b[2K")  # cleared at the end: the summary is printed on a clean line
