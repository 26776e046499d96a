"""``make demo``: a workspace brought to head, written and read through the ORM.

Run as ``python -m tinycortex_sa.demo [WORKSPACE]`` (default ``demo-workspace``).
It opens the workspace through two engines (they share one connection),
writes chunks with embeddings and scores and a tree with a summary in one
Session, reads them back with a join, and prints the revision,
``user_version``, the pragmas, the breaker state and the row counts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa.models import Base, Chunk, ChunkEmbedding, Score, Summary, Tree
from tinycortex_sa.sqlite import pragmas as sqlite_pragmas

DIM = 4


def _write(session: Session, now_ms: int) -> None:
    tree = Tree(id=f"tree-{now_ms}", kind="source", scope=f"demo:{now_ms}", created_at_ms=now_ms)
    for seq, text in enumerate(["Met Ada about the memory engine.", "Ada likes SQLite."]):
        chunk_id = f"chunk-{now_ms}-{seq}"
        session.add(
            Chunk(
                id=chunk_id,
                source_kind="chat",
                source_id="demo",
                owner="demo",
                timestamp_ms=now_ms,
                time_range_start_ms=now_ms,
                time_range_end_ms=now_ms,
                tags_json=["demo"],
                content=text,
                token_count=len(text.split()),
                seq_in_source=seq,
                created_at_ms=now_ms,
                embeddings=[
                    ChunkEmbedding(model_signature=f"demo@{DIM}", vector=[0.1 * seq, 0.2, 0.3, 0.4], dim=DIM)
                ],
            )
        )
        session.add(
            Score(
                chunk_id=chunk_id,
                total=0.5 + seq / 10,
                token_count_signal=0.1,
                unique_words_signal=0.1,
                metadata_weight=0.1,
                source_weight=0.1,
                interaction_weight=0.1,
                entity_density=0.1,
                computed_at_ms=now_ms,
            )
        )
    tree.summaries.append(
        Summary(
            id=f"summary-{now_ms}",
            tree_kind="source",
            level=0,
            content="Ada, the memory engine and SQLite.",
            token_count=6,
            time_range_start_ms=now_ms,
            time_range_end_ms=now_ms,
            sealed_at_ms=now_ms,
        )
    )
    session.add(tree)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    workspace = Path(args[0] if args else "demo-workspace").resolve()
    db_path = tinycortex_sa.db_path_for(workspace)

    engine = tinycortex_sa.create_engine(workspace)
    by_url = sa.create_engine(f"sqlite+tinycortex:///{db_path}")
    now_ms = int(time.time() * 1000)
    with Session(engine) as session:  # first checkout: pragmas, then Alembic head
        _write(session, now_ms)
        session.commit()
        rows = session.execute(
            sa.select(Chunk.id, Chunk.content, ChunkEmbedding.dim, Score.total)
            .join(Chunk.embeddings)
            .join(Score, Score.chunk_id == Chunk.id)
            .where(Chunk.created_at_ms == now_ms)
            .order_by(Chunk.seq_in_source)
        ).all()
        first: object = session.connection().connection.dbapi_connection
    with by_url.connect() as conn:
        shared = conn.connection.dbapi_connection is first
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        user_version = conn.exec_driver_sql("PRAGMA user_version").scalar()
        pragmas = sqlite_pragmas.read(conn.connection.dbapi_connection)  # type: ignore[arg-type]
        counts = {
            table: conn.execute(sa.select(sa.func.count()).select_from(Base.metadata.tables[table])).scalar()
            for table in sorted(Base.metadata.tables)
        }

    print(f"workspace       {workspace}")
    print(f"database        {db_path}")
    print(f"one connection  {shared} (two engines, one sqlite3 connection)")
    print(f"revision        {revision}")
    print(f"user_version    {user_version}")
    for name, value in pragmas.items():
        print(f"pragma          {name} = {value}")
    state = tinycortex_sa.breaker_state(workspace)
    print(f"breaker         {state.state}, {state.failures} failures")
    print("written and read back (chunk, content, embedding dim, score):")
    for row in rows:
        print(f"  {row.id}  {row.content!r}  dim={row.dim}  score={row.total:.2f}")
    print("row counts:")
    for table, count in counts.items():
        print(f"  {table:34s} {count}")
    engine.dispose()
    by_url.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
