"""A sync killed with SIGKILL at random moments, again and again, while a writer keeps changing the file.

After the storm one sync runs to its end: PostgreSQL must then equal the file
row for row (no row missing, none twice, none stale), and the sync's
bookkeeping must describe exactly what PostgreSQL holds.
"""

from __future__ import annotations

import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tinycortex_sa
from tinycortex_sa import postgres

from .common import CHUNK_INSERT, assert_same, chunk_row, fill, rust_writer
from .conftest import raw_pg

pytestmark = pytest.mark.slow

_SYNC = """
import sys
from tinycortex_sa import postgres
postgres.sync(sys.argv[1], sys.argv[2], schema=sys.argv[3])
"""


def _write_some(db: Path, rng: random.Random, round_: int) -> None:
    """A Rust-pattern transaction: inserts, an update, a replace, deletes (with their cascades)."""
    with rust_writer(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM mem_tree_chunks")]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            CHUNK_INSERT, [chunk_row(round_ * 100 + i, "storm") for i in range(rng.randint(0, 40))]
        )
        for chunk_id in rng.sample(ids, 30):
            conn.execute("UPDATE mem_tree_chunks SET token_count = token_count + 1 WHERE id = ?", (chunk_id,))
        for chunk_id in rng.sample(ids, 20):
            conn.execute(
                "INSERT OR REPLACE INTO mem_tree_chunk_embeddings VALUES (?, 'test@16', ?, 16, ?)",
                (chunk_id, struct.pack("<16f", *(rng.gauss(0, 1) for _ in range(16))), float(round_)),
            )
        for chunk_id in rng.sample(ids, 10):
            conn.execute("DELETE FROM mem_tree_chunks WHERE id = ?", (chunk_id,))
        conn.execute("COMMIT")


def test_sigkill_storm_during_sync(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    rng = random.Random(20261202)
    workspace = tmp_path / "ws"
    tinycortex_sa.upgrade(workspace)
    db = workspace / "memory_tree" / "chunks.db"
    fill(db, 6000, 16)
    interrupted = 0
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _SYNC, str(workspace), pg_url, pg_schema])
        time.sleep(rng.uniform(0.3, 2.5))  # the import takes ~0.3 s; a full sync here ~2 s
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            interrupted += 1
        assert proc.wait(timeout=60) in (0, -signal.SIGKILL)
        _write_some(db, rng, round_ + 1)
    assert interrupted >= 6, "the storm must interrupt syncs in progress"
    result = postgres.sync(workspace, pg_url, schema=pg_schema)
    assert result.settled and result.held_back == 0
    counts = assert_same(db, pg_url, pg_schema)
    assert postgres.check(workspace, pg_url, schema=pg_schema).equal
    with raw_pg(pg_url) as conn:  # type: ignore[attr-defined]
        state = dict(
            conn.execute(f"SELECT tbl, count(*) FROM {pg_schema}.tcsa_sync_rows WHERE NOT held GROUP BY tbl")
        )
    assert {t: n for t, n in counts.items() if n} == state  # one state row per row sent, no more
    assert postgres.sync(workspace, pg_url, schema=pg_schema).sent == 0
