"""Exact cosine-similarity search over the embedding sidecars, through the ORM.

:func:`nearest_chunks` and :func:`nearest_summaries` rank every stored vector
of one model signature against a query vector (brute force, no index) and
return the ORM objects with their similarity, best first.

The decoded vectors are kept in memory, one float32 matrix per (file, table,
model signature), L2-normalised, and checked against the database at every
query: ``PRAGMA data_version`` and ``total_changes()`` tell at once whether
anything was committed since the last look; only then are the rows compared
(their count and rowids from the index, then a CRC-32 of every row), new rows
appended and any other change answered by decoding the rows again.
docs/search.md describes the design and its costs.

numpy is an optional dependency (``pip install tinycortex_sa[vectors]``),
imported on first use.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, SessionTransaction

from .errors import (
    NonFiniteVectorError,
    OptionError,
    QueryDimensionError,
    QueryVectorError,
    SearchUnavailableError,
    VectorDimensionError,
    ZeroVectorError,
)
from .schema.models import Chunk, Summary

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Matrix = NDArray[np.float32]
    VectorLike = Sequence[float] | NDArray[Any]

__all__ = [
    "DEFAULT_MODEL_SIGNATURE",
    "CacheInfo",
    "cache_info",
    "clear_cache",
    "nearest_chunks",
    "nearest_summaries",
]

#: The Rust core's default signature: model ``nomic-embed-text``, 768 dimensions.
DEFAULT_MODEL_SIGNATURE = "nomic-embed-text@768"
INSTALL = "pip install tinycortex_sa[vectors]"

#: Rows fetched and decoded at a time.
_BATCH = 4096
#: Ids per ``SELECT ... WHERE id IN (...)`` when loading the results.
_LOAD_BATCH = 500
#: The SQL function (registered on the connection) that the content check sums.
_CRC_FUNCTION = "tinycortex_search_crc"
#: Times the check is repeated when another connection commits in the middle of it (autocommit).
_ATTEMPTS = 5

M = TypeVar("M", Chunk, Summary)
_Ref = weakref.ref[SessionTransaction]


@dataclass(frozen=True)
class _Table:
    name: str
    id_column: str

    @property
    def structure_sql(self) -> str:
        # index-only: idx_*_model holds (model_signature, rowid)
        return (
            f"SELECT count(*), coalesce(sum(rowid), 0) FROM {self.name} "
            "WHERE model_signature = ? AND rowid <= ?"
        )

    @property
    def crc(self) -> str:
        """One row's CRC-32, of its rowid, id and vector bytes together."""
        return f"{_CRC_FUNCTION}(CAST(rowid || ' ' || {self.id_column} || vector AS BLOB))"

    @property
    def content_sql(self) -> str:
        return (
            f"SELECT coalesce(sum({self.crc}), 0) FROM {self.name} WHERE model_signature = ? AND rowid <= ?"
        )

    @property
    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {self.name} WHERE model_signature = ? AND rowid > ?"

    @property
    def rows_sql(self) -> str:
        return (
            f"SELECT rowid, {self.id_column}, vector, {self.crc} FROM {self.name} "
            "WHERE model_signature = ? AND rowid > ? ORDER BY rowid"
        )


_TABLES: dict[type[Any], _Table] = {
    Chunk: _Table("mem_tree_chunk_embeddings", "chunk_id"),
    Summary: _Table("mem_tree_summary_embeddings", "summary_id"),
}
_GATE_SQL = "SELECT data_version, total_changes() FROM pragma_data_version"


def _require_numpy() -> None:
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise SearchUnavailableError(
            f"similarity search needs numpy, which is not installed: {INSTALL}"
        ) from None


# -- the cache ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    """One cached matrix: what it holds and how often it was built, extended and checked."""

    path: str
    table: str
    model_signature: str
    rows: int
    """Vectors in the matrix (stored vectors that are all zeros or not finite are left out)."""
    dim: int | None
    nbytes: int
    """Bytes of the vectors held: ``rows * dim * 4``."""
    builds: int
    """Times every row was decoded (the first query, and after a change other than appends)."""
    appends: int
    """Times only the rows appended since the last look were decoded and added."""
    checks: int
    """Times the rows were compared with the database (after a commit anywhere on the file)."""
    rows_decoded: int
    """Rows decoded in all, by builds and appends."""


class _Entry:
    """The decoded vectors of one model signature in one table of one file, and their freshness."""

    def __init__(self, path: str, table: _Table, model_signature: str) -> None:
        self.path, self.table, self.model_signature = path, table, model_signature
        self.lock = threading.Lock()
        # the last look: the DBAPI connection (kept, so that its identity cannot be reused), its
        # (data_version, total_changes) then, and the session transaction when the matrix might hold
        # that transaction's own uncommitted rows (it is checked again once that transaction is over)
        self.conn: object = None
        self.gate: tuple[int, int] | None = None
        self.provisional: tuple[_Ref, _Ref | None] | None = None
        # what the rows up to ``hwm`` (the highest rowid read) summed to when they were read
        self.built = False
        self.count = self.rowid_sum = self.crc_sum = self.hwm = 0
        # the matrix: the first ``n`` rows of ``buf`` (which has room to grow), and their ids
        self.dim: int | None = None
        self.buf: Matrix | None = None
        self.n = 0
        self.ids: list[str] = []
        self.positions: dict[str, int] | None = None
        self.builds = self.appends = self.checks = self.rows_decoded = 0

    def info(self) -> CacheInfo:
        dim = self.dim or 0
        return CacheInfo(
            path=self.path,
            table=self.table.name,
            model_signature=self.model_signature,
            rows=self.n,
            dim=self.dim,
            nbytes=self.n * dim * 4,
            builds=self.builds,
            appends=self.appends,
            checks=self.checks,
            rows_decoded=self.rows_decoded,
        )

    def matrix(self) -> Matrix:
        import numpy as np

        return np.empty((0, 0), np.float32) if self.buf is None else self.buf[: self.n]

    def position_of(self) -> dict[str, int]:
        if self.positions is None:
            self.positions = {row_id: i for i, row_id in enumerate(self.ids)}
        return self.positions

    # -- refreshing --------------------------------------------------------------------------------

    def refresh(self, conn: sa.Connection) -> None:
        """Bring the matrix up to what ``conn`` sees: append new rows, or rebuild on any other change."""
        try:
            if self.built and self._unchanged(conn):
                if self._read(conn):
                    self.appends += 1
                return
            self._reset()
            self._read(conn)
            self.builds += 1
            self.built = True
        except BaseException:
            self._reset()  # half read (a stored row it refused, an interrupt): the next query starts over
            self.built = False
            raise

    def _unchanged(self, conn: sa.Connection) -> bool:
        """Whether the rows up to ``hwm`` are still those the matrix was read from."""
        self.checks += 1
        params = (self.model_signature, self.hwm)
        count, rowid_sum = conn.exec_driver_sql(self.table.structure_sql, params).one()
        if (count, rowid_sum) != (self.count, self.rowid_sum):
            return False
        return not count or conn.exec_driver_sql(self.table.content_sql, params).scalar_one() == self.crc_sum

    def _reset(self) -> None:
        self.count = self.rowid_sum = self.crc_sum = self.hwm = 0
        self.dim, self.buf, self.n, self.ids, self.positions = None, None, 0, [], None

    def _read(self, conn: sa.Connection) -> int:
        """Decode the rows after ``hwm`` (all of them after a reset), add them to the matrix; how many."""
        params = (self.model_signature, self.hwm)
        remaining = conn.exec_driver_sql(self.table.count_sql, params).scalar_one()
        if not remaining:
            return 0
        added = 0
        for part in conn.exec_driver_sql(self.table.rows_sql, params).partitions(_BATCH):
            rowids, row_ids, blobs, crcs = zip(*part, strict=True)
            self.count += len(part)
            self.rowid_sum += sum(rowids)
            self.crc_sum += sum(crcs)
            self.hwm = rowids[-1]
            added += self._decode(row_ids, blobs, remaining - added)
        return added

    def _decode(self, row_ids: Sequence[str], blobs: Sequence[Any], expected: int) -> int:
        """Decode one batch into the matrix (normalised; zero and non-finite rows left out)."""
        import numpy as np

        if self.dim is None:
            self.dim = _dim_of(self.table, row_ids[0], blobs[0], None)
        dim = self.dim
        if set(map(type, blobs)) != {bytes} or set(map(len, blobs)) != {4 * dim}:
            for row_id, blob in zip(row_ids, blobs, strict=True):
                _dim_of(self.table, row_id, blob, dim)  # raises at the first row that differs
        self._reserve(max(len(blobs), expected))
        assert self.buf is not None
        start = self.n
        block = self.buf[start : start + len(blobs)]
        block[:] = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)
        keep = _normalise(block)
        kept = list(row_ids)
        if keep is not None:
            block[: int(keep.sum())] = block[keep]
            kept = [row_id for row_id, k in zip(row_ids, keep.tolist(), strict=True) if k]
        self.n += len(kept)
        if self.positions is not None:
            self.positions.update((row_id, start + i) for i, row_id in enumerate(kept))
        self.ids.extend(kept)
        self.rows_decoded += len(blobs)
        return len(blobs)

    def _reserve(self, extra: int) -> None:
        """Room for ``extra`` more rows, growing by an eighth (pages not yet written are not resident)."""
        import numpy as np

        assert self.dim is not None
        need = self.n + extra
        if self.buf is not None and need <= len(self.buf):
            return
        grown = np.empty((need + need // 8 + 64, self.dim), np.float32)
        if self.buf is not None:
            grown[: self.n] = self.buf[: self.n]
        self.buf = grown


def _dim_of(table: _Table, row_id: object, blob: object, expected: int | None) -> int:
    if isinstance(blob, bytes) and blob and len(blob) % 4 == 0 and expected in (None, len(blob) // 4):
        return len(blob) // 4
    what = f"{len(blob)} bytes" if isinstance(blob, bytes) else f"a {type(blob).__name__}, not a BLOB"
    want = (
        "a non-empty multiple of 4 bytes" if expected is None else f"{expected} float32s like its other rows"
    )
    raise VectorDimensionError(
        f"{table.name} row {table.id_column}={row_id!r}: vector is {what}; need {want}"
    )


def _normalise(block: Matrix) -> NDArray[np.bool_] | None:
    """Scale each row to length 1 in place; the mask of rows to keep, or None when all are kept."""
    import numpy as np

    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    odd = ~np.isfinite(norms) | (norms == 0)
    if not odd.any():
        block /= norms[:, None]
        return None
    norms[odd] = 1.0
    block /= norms[:, None]
    keep: NDArray[np.bool_] = ~odd
    for i in np.flatnonzero(odd):  # overflow or underflow of float32 squares: again in float64
        row = block[i].astype(np.float64)
        norm = float(np.linalg.norm(row))
        if math.isfinite(norm) and norm > 0:
            block[i] = row / norm
            keep[i] = True
    return keep


def _register_crc(conn: sa.Connection) -> None:
    """Give the connection the CRC-32 function (zlib's, called by SQLite directly), once."""
    exists = conn.exec_driver_sql(
        "SELECT count(*) FROM pragma_function_list WHERE name = ?", (_CRC_FUNCTION,)
    ).scalar_one()
    if not exists:
        dbapi: Any = conn.connection.dbapi_connection
        dbapi.create_function(_CRC_FUNCTION, 1, zlib.crc32, deterministic=True)


_entries: dict[tuple[str, str, str], _Entry] = {}
_entries_lock = threading.Lock()


def _entry(path: str, table: _Table, model_signature: str) -> _Entry:
    key = (path, table.name, model_signature)
    with _entries_lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(path, table, model_signature)
        return entry


def cache_info() -> list[CacheInfo]:
    """Every matrix cached in this process."""
    with _entries_lock:
        entries = list(_entries.values())
    return [entry.info() for entry in entries]


def clear_cache() -> None:
    """Forget every cached matrix (the memory is freed once no query is using it)."""
    with _entries_lock:
        _entries.clear()


def _marker(session: Session) -> tuple[_Ref, _Ref | None] | None:
    """The session's transaction and savepoint now (weakly), or None outside a transaction."""
    root, nested = session.get_transaction(), session.get_nested_transaction()
    if root is None:
        return None
    return weakref.ref(root), None if nested is None else weakref.ref(nested)


def _same_transaction(marker: tuple[_Ref, _Ref | None], session: Session) -> bool:
    root, nested = session.get_transaction(), session.get_nested_transaction()
    then_root, then_nested = marker
    if then_root() is not root:
        return False
    return nested is None if then_nested is None else then_nested() is nested


def _current(entry: _Entry, raw: object, gate: tuple[int, int], session: Session) -> bool:
    if not entry.built or entry.conn is not raw or entry.gate != gate:
        return False
    return entry.provisional is None or _same_transaction(entry.provisional, session)


def _sync(entry: _Entry, conn: sa.Connection, session: Session) -> None:
    """Make ``entry`` match what ``conn`` sees now."""
    dbapi: Any = conn.connection.dbapi_connection
    raw = getattr(dbapi, "sqlite3_connection", dbapi)
    for _ in range(_ATTEMPTS):
        gate = _gate(conn)
        if _current(entry, raw, gate, session):
            return
        own_writes = entry.conn is not raw or entry.gate is None or entry.gate[1] != gate[1]
        if entry.conn is not raw:
            _register_crc(conn)
        entry.gate = None  # until the refresh completes
        entry.refresh(conn)
        if _gate(conn) == gate:  # nobody committed meanwhile: the refresh saw one state
            entry.conn, entry.gate = raw, gate
            # rows this connection wrote in a transaction that may still roll back: check again
            # once that transaction is over (the connection is this session's until then)
            entry.provisional = _marker(session) if own_writes and dbapi.in_transaction else None
            return
    # others kept committing (autocommit): this query uses the last refresh, the next one checks again


def _gate(conn: sa.Connection) -> tuple[int, int]:
    data_version, total_changes = conn.exec_driver_sql(_GATE_SQL).one()
    return int(data_version), int(total_changes)


# -- the query ---------------------------------------------------------------------------------------


def _query_vector(vector: VectorLike, dim: int | None) -> Matrix:
    import numpy as np

    try:
        q = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise QueryVectorError(f"the query vector must be a sequence of numbers: {err}") from None
    if q.ndim != 1:
        raise QueryVectorError(f"the query must be one vector (1-D), got an array of shape {q.shape}")
    if dim is not None and len(q) != dim:
        raise QueryDimensionError(f"the query vector has {len(q)} values, the model's vectors have {dim}")
    if not np.isfinite(q).all():
        bad = int(np.flatnonzero(~np.isfinite(q))[0])
        raise NonFiniteVectorError(f"the query vector holds {q[bad]} at index {bad}: values must be finite")
    scale = float(np.abs(q).max()) if len(q) else 0.0
    if scale == 0.0:
        raise ZeroVectorError("the query vector is all zeros: it has no direction to compare")
    q = q / scale
    return (q / np.linalg.norm(q)).astype(np.float32)


def _signature_dim(model_signature: str) -> int | None:
    tail = model_signature.rpartition("@")[2]
    return int(tail) if tail.isdigit() else None


def _top(scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Indices of the ``k`` highest scores, best first; equal scores in row (rowid) order."""
    import numpy as np

    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(len(scores))
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]


def _nearest(
    session: Session,
    model: type[M],
    vector: VectorLike,
    k: int,
    model_signature: str,
    where: sa.ColumnElement[bool] | None,
    exact: bool = False,
) -> list[tuple[M, float]]:
    _require_numpy()
    import numpy as np

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OptionError(f"k must be a positive integer, got {k!r}")
    if not isinstance(model_signature, str):
        raise OptionError(f"model_signature must be a string, got {model_signature!r}")
    if session.autoflush:
        session.flush()  # the session's pending rows count, as they would for any query
    conn = session.connection(bind_arguments={"mapper": model})
    if conn.dialect.name == "postgresql":  # pgvector does the ranking there
        from .postgres.vectors import embedding_model
        from .postgres.vectors import nearest as nearest_postgres

        table = embedding_model(model)
        stored = session.scalar(sa.select(table.dim).where(table.model_signature == model_signature).limit(1))
        q = _query_vector(vector, stored if stored is not None else _signature_dim(model_signature))
        return nearest_postgres(session, model, q.tolist(), k, model_signature, where, exact)
    database = conn.engine.url.database
    path = os.path.abspath(database) if database and database != ":memory:" else f"memory:{id(conn.engine)}"
    entry = _entry(path, _TABLES[model], model_signature)
    with entry.lock:
        _sync(entry, conn, session)
        q = _query_vector(vector, entry.dim if entry.n else _signature_dim(model_signature))
        matrix, ids = entry.matrix(), entry.ids  # later appends leave these rows as they are
        rows: NDArray[np.intp] | None = None
        if where is not None:
            wanted = session.scalars(sa.select(model.id).where(where)).all()
            positions = entry.position_of()
            rows = np.array(sorted(positions[i] for i in wanted if i in positions), dtype=np.intp)
    if not len(matrix) or (rows is not None and not len(rows)):
        return []
    if rows is None:
        scores = matrix @ q
    else:
        scores = matrix[rows] @ q if 4 * len(rows) < len(matrix) else (matrix @ q)[rows]
    return _load(session, model, ids, rows, scores, k)


def _load(
    session: Session,
    model: type[M],
    ids: list[str],
    rows: NDArray[np.intp] | None,
    scores: NDArray[np.float32],
    k: int,
) -> list[tuple[M, float]]:
    """The ``k`` best as ORM objects, best first (an embedding whose row is gone is passed over)."""
    want = k
    while True:
        order = _top(scores, want).tolist()
        picked = order if rows is None else rows[order].tolist()
        best = [ids[i] for i in picked]
        found: dict[str, M] = {}
        for first in range(0, len(best), _LOAD_BATCH):  # under SQLite's limit on bound parameters
            wanted = best[first : first + _LOAD_BATCH]
            found.update(
                (obj.id, obj) for obj in session.scalars(sa.select(model).where(model.id.in_(wanted)))
            )
        hits = [
            (found[row_id], min(1.0, max(-1.0, float(scores[i]))))
            for row_id, i in zip(best, order, strict=True)
            if row_id in found
        ]
        if len(hits) >= k or len(order) == len(scores):
            return hits[:k]
        want = len(order) + 2 * (k - len(hits))


def nearest_chunks(
    session: Session,
    vector: VectorLike,
    *,
    k: int = 10,
    model_signature: str = DEFAULT_MODEL_SIGNATURE,
    where: sa.ColumnElement[bool] | None = None,
    exact: bool = False,
) -> list[tuple[Chunk, float]]:
    """The ``k`` chunks whose embeddings under ``model_signature`` are most similar to ``vector``.

    Exact cosine similarity against every stored vector of that signature,
    best first, as ``(Chunk, similarity)`` pairs (similarity in [-1, 1]).
    ``where`` is a boolean clause on :class:`~tinycortex_sa.models.Chunk`'s
    columns (``Chunk.source_id == "slack:C000"``): only the chunks it selects
    are ranked.  Fewer than ``k`` pairs come back when fewer vectors qualify.

    ``session`` is a sync ORM ``Session`` on a tinycortex_sa engine; the search
    runs in its transaction and sees what it sees (its own flushed rows too).
    Raises :class:`~tinycortex_sa.errors.SearchUnavailableError` without numpy,
    :class:`~tinycortex_sa.errors.QueryDimensionError`,
    :class:`~tinycortex_sa.errors.NonFiniteVectorError` or
    :class:`~tinycortex_sa.errors.ZeroVectorError` for a query vector that
    cannot be compared, :class:`~tinycortex_sa.errors.OptionError` for ``k < 1``.

    On a PostgreSQL session (:mod:`tinycortex_sa.postgres`) pgvector ranks:
    through the model's HNSW index (approximate; ``hnsw.ef_search`` is set to
    100 for the transaction), or exactly with ``exact=True``.  On SQLite the
    search is always exact and ``exact`` changes nothing.
    """
    return _nearest(session, Chunk, vector, k, model_signature, where, exact)


def nearest_summaries(
    session: Session,
    vector: VectorLike,
    *,
    k: int = 10,
    model_signature: str = DEFAULT_MODEL_SIGNATURE,
    where: sa.ColumnElement[bool] | None = None,
    exact: bool = False,
) -> list[tuple[Summary, float]]:
    """:func:`nearest_chunks` for summaries: ``(Summary, similarity)`` pairs, best first.

    Soft-deleted summaries are ranked like the others; ``where=Summary.deleted == 0``
    leaves them out.
    """
    return _nearest(session, Summary, vector, k, model_signature, where, exact)
