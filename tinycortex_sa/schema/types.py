"""Column types for the chunk DB's BLOB vectors and ``*_json`` TEXT columns.

Both store exactly what the Rust core reads: vectors as little-endian float32
bytes, JSON as compact UTF-8 text (``serde_json`` style, no spaces).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from sqlalchemy import LargeBinary, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..errors import PostgresUnavailableError, VectorDimensionError

#: What to install for the PostgreSQL parts (psycopg 3 and pgvector's package).
POSTGRES_EXTRA = "pip install 'tinycortex_sa[postgres]'"


def pgvector_type(dim: int | None = None) -> TypeEngine[Any]:
    """pgvector's SQLAlchemy ``VECTOR`` type, imported on first use (the ``postgres`` extra)."""
    try:
        from pgvector.sqlalchemy import VECTOR
    except ImportError as err:
        raise PostgresUnavailableError(
            f"the PostgreSQL parts of tinycortex_sa need pgvector's package ({err}): {POSTGRES_EXTRA}"
        ) from err
    return VECTOR(dim)


def pack_vector(values: Sequence[float]) -> bytes:
    """Encode floats as little-endian float32 bytes."""
    return struct.pack(f"<{len(values)}f", *values)


def unpack_vector(blob: bytes) -> tuple[float, ...]:
    """Decode little-endian float32 bytes; the length must be a multiple of 4."""
    if len(blob) % 4:
        raise VectorDimensionError(f"a float32 vector needs a multiple of 4 bytes, got {len(blob)}")
    return struct.unpack(f"<{len(blob) // 4}f", blob)


class Vector(TypeDecorator[Sequence[float]]):
    """A BLOB of little-endian float32 values, seen from Python as a tuple of floats.

    The dimension is checked against the row's ``dim`` column by the models
    (a type cannot see other columns).  On PostgreSQL the column is pgvector's
    ``vector`` (float32 too, no fixed dimension: one table holds every model's
    vectors; the per-model HNSW indexes cast to ``vector(dim)``), through the
    ``pgvector`` package of the ``postgres`` extra.
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(pgvector_type())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("Vector columns take a sequence of floats, not bytes")
        if dialect.name == "postgresql":
            return [float(x) for x in value]
        return pack_vector(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[float, ...] | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return tuple(float(x) for x in value)  # pgvector's type decodes to float32 values
        return unpack_vector(bytes(value))


#: ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` builds this encoder anew at every
#: call (only the all-defaults call reuses one); built once, the same text costs ~0.6 µs less per value.
# allow_nan=False: NaN/Infinity are not JSON, and the Rust core (serde_json) rejects them
_encode_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dump_json(value: object) -> str:
    """Compact JSON, as the Rust core writes and parses it."""
    return _encode_compact(value)


class JsonText(TypeDecorator[Any]):
    """A TEXT column holding JSON (a list or a dict), written compactly."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dump_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)
