"""The ORM models (issue 3, items 11-12): names, relationships, vectors and JSON columns.

Vectors and JSON are checked byte for byte in the file, not only through the ORM.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import TABLES, columns_of, copy_fixture, raw
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa.models import (
    Base,
    Buffer,
    Chunk,
    ChunkEmbedding,
    ChunkReembedSkipped,
    Job,
    Score,
    Summary,
    SummaryEmbedding,
    Tree,
)
from tinycortex_sa.schema.types import VectorDimensionError, dump_json, pack_vector, unpack_vector

SIGNALS = (
    "token_count_signal",
    "unique_words_signal",
    "metadata_weight",
    "source_weight",
    "interaction_weight",
    "entity_density",
)
VECTOR = [i / 8 for i in range(768)]  # exactly representable as float32


@pytest.fixture
def engine(workspace: Path) -> Iterator[sa.Engine]:
    engine = tinycortex_sa.create_engine(workspace)
    yield engine
    engine.dispose()


def chunk(id: str, **kw: object) -> Chunk:
    values: dict[str, object] = dict(
        source_kind="chat",
        source_id="c1",
        owner="me",
        timestamp_ms=1,
        time_range_start_ms=1,
        time_range_end_ms=2,
        content="hello",
        token_count=1,
        seq_in_source=0,
        created_at_ms=3,
    )
    values.update(kw)
    return Chunk(id=id, **values)


def tree_with_summary() -> tuple[Tree, Summary]:
    tree = Tree(id="t1", kind="source", scope="slack:C1", created_at_ms=1)
    summary = Summary(
        id="s1",
        tree=tree,
        tree_kind="source",
        level=0,
        content="sum",
        token_count=1,
        time_range_start_ms=1,
        time_range_end_ms=2,
        sealed_at_ms=3,
    )
    return tree, summary


def test_every_table_has_a_model_with_columns_under_their_own_names(tmp_path: Path) -> None:
    assert set(Base.metadata.tables) == set(TABLES)
    ws = copy_fixture("rust-0.1.1-empty", tmp_path / "ws")
    with raw(ws) as conn:
        for mapper in Base.registry.mappers:
            table = mapper.local_table
            assert isinstance(table, sa.Table)
            expected = columns_of(conn, table.name) + (["ask"] if table.name == "mem_tree_trees" else [])
            assert [c.name for c in table.columns] == expected
            assert {a.key for a in mapper.column_attrs} == set(expected)


def test_vectors_are_little_endian_float32_checked_against_dim(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(chunk("c1", embeddings=[ChunkEmbedding(model_signature="m@768", vector=VECTOR, dim=768)]))
        session.commit()
        stored = session.execute(sa.text("SELECT vector, dim FROM mem_tree_chunk_embeddings")).one()
        assert stored == (struct.pack("<768f", *VECTOR), 768)
        session.expire_all()
        assert tuple(session.get_one(ChunkEmbedding, ("c1", "m@768")).vector) == tuple(VECTOR)

        session.add(ChunkEmbedding(chunk_id="c1", model_signature="m@4", vector=[1.0, 2.0], dim=4))
        with pytest.raises(VectorDimensionError, match="2 values but dim=4"):
            session.flush()
    with pytest.raises(VectorDimensionError):
        unpack_vector(b"\x00\x00\x80")
    assert unpack_vector(pack_vector([0.5, -2.0])) == (0.5, -2.0)


def test_json_columns_are_lists_and_dicts_written_compactly(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(chunk("c1", tags_json=["work", "é"], raw_refs_json=[{"path": "a.eml"}]))
        session.add(
            Job(
                id="j1",
                kind="embed",
                payload_json={"n": 1, "ids": [1, 2]},
                available_at_ms=1,
                created_at_ms=1,
            )
        )
        session.commit()
        got = session.execute(sa.text("SELECT tags_json, raw_refs_json FROM mem_tree_chunks")).one()
        assert got == ('["work","é"]', '[{"path":"a.eml"}]')
        assert (
            session.execute(sa.text("SELECT payload_json FROM mem_tree_jobs")).scalar()
            == '{"n":1,"ids":[1,2]}'
        )

        loaded, job = session.get_one(Chunk, "c1"), session.get_one(Job, "j1")
        loaded.tags_json.append("q3")  # in-place changes are tracked
        job.payload_json["n"] = 2
        session.commit()
        assert (
            session.execute(sa.text("SELECT tags_json FROM mem_tree_chunks")).scalar() == '["work","é","q3"]'
        )
        assert (
            session.execute(sa.text("SELECT payload_json FROM mem_tree_jobs")).scalar()
            == '{"n":2,"ids":[1,2]}'
        )
    assert dump_json({"a": [1, "b"]}) == '{"a":[1,"b"]}'


def test_server_defaults_fill_in_what_the_model_leaves_out(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, "
            "time_range_start_ms, time_range_end_ms, content, token_count, seq_in_source, created_at_ms) "
            "VALUES ('raw', 'chat', 'c', 'me', 1, 1, 1, 'x', 1, 0, 1)"
        )
    with Session(engine) as session:
        loaded = session.get_one(Chunk, "raw")
        assert (loaded.tags_json, loaded.lifecycle_status, loaded.raw_refs_json) == ([], "admitted", None)


def test_deleting_a_chunk_deletes_its_embeddings_and_skips(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(chunk("c1", embeddings=[ChunkEmbedding(model_signature="m@2", vector=[1.0, 2.0], dim=2)]))
        session.add(
            ChunkReembedSkipped(chunk_id="c1", model_signature="m@2", reason="too long", skipped_at_ms=1)
        )
        signals = dict.fromkeys(SIGNALS, 0.0)
        session.add(Score(chunk_id="c1", total=0.5, computed_at_ms=1, **signals))
        session.commit()
        loaded = session.get_one(Chunk, "c1")
        assert [e.dim for e in loaded.embeddings] == [2] and len(loaded.reembed_skipped) == 1
        assert loaded.score is not None and loaded.score.total == 0.5
        session.delete(loaded)
        session.commit()
        for table in ("mem_tree_chunk_embeddings", "mem_tree_chunk_reembed_skipped"):
            assert session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0


def test_deleting_a_chunk_in_sql_cascades_too(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(chunk("c1", embeddings=[ChunkEmbedding(model_signature="m@2", vector=[1.0, 2.0], dim=2)]))
        session.commit()
        session.execute(sa.delete(Chunk).where(Chunk.id == "c1"))
        session.commit()
        assert session.scalar(sa.select(sa.func.count()).select_from(ChunkEmbedding)) == 0


def test_tree_summaries_buffers_and_summary_embeddings(engine: sa.Engine) -> None:
    with Session(engine) as session:
        tree, summary = tree_with_summary()
        summary.embeddings.append(SummaryEmbedding(model_signature="m@2", vector=[0.5, 0.25], dim=2))
        tree.buffers.append(Buffer(level=0, item_ids_json=["c1"], updated_at_ms=1))
        session.add(tree)
        session.commit()
        session.expire_all()
        loaded = session.get_one(Tree, "t1")
        assert [s.id for s in loaded.summaries] == ["s1"] and [b.item_ids_json for b in loaded.buffers] == [
            ["c1"]
        ]
        assert tuple(loaded.summaries[0].embeddings[0].vector) == (0.5, 0.25)

        session.delete(loaded.summaries[0])
        session.commit()
        assert session.scalar(sa.select(sa.func.count()).select_from(SummaryEmbedding)) == 0


def test_a_tree_with_summaries_cannot_be_deleted(engine: sa.Engine) -> None:
    """No ON DELETE on ``mem_tree_summaries.tree_id``: SQLite refuses, the ORM does not null it."""
    with Session(engine) as session:
        tree, _ = tree_with_summary()
        session.add(tree)
        session.commit()
        session.delete(tree)
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            session.commit()


def test_models_read_every_row_the_rust_core_wrote(tmp_path: Path) -> None:
    ws = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    engine = tinycortex_sa.create_engine(ws, read_only=True)  # reads beside the plain sqlite3 reader below
    try:
        with Session(engine) as session:
            loaded = {
                m.class_.__name__: len(session.scalars(sa.select(m.class_)).all())
                for m in Base.registry.mappers
            }
            with raw(ws) as conn:
                counts = {
                    m.class_.__name__: conn.execute(
                        f"SELECT count(*) FROM {m.class_.__tablename__}"
                    ).fetchone()[0]
                    for m in Base.registry.mappers
                }
            assert loaded == counts and sum(counts.values()) > 200
            vectors = session.scalars(sa.select(ChunkEmbedding)).all()
            assert all(len(e.vector) == e.dim == 768 for e in vectors)
            summaries = session.scalars(sa.select(Summary)).all()
            assert all(isinstance(s.child_ids_json, list) for s in summaries)
            joined = session.execute(
                sa.select(Chunk.id, ChunkEmbedding.dim, Score.total)
                .join(Chunk.embeddings)
                .join(Score, Score.chunk_id == Chunk.id)
            ).all()
            assert joined
    finally:
        engine.dispose()


def test_json_columns_refuse_nan_which_the_rust_core_cannot_parse() -> None:
    from tinycortex_sa.schema.types import dump_json

    assert dump_json({"a": [1.5, "é"]}) == '{"a":[1.5,"é"]}'
    with pytest.raises(ValueError, match="JSON compliant"):
        dump_json({"score": float("nan")})
