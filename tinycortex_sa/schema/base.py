"""The declarative base of the chunk DB models and the column helpers they share.

Split from :mod:`tinycortex_sa.models` (which re-exports everything) only to
keep modules small; applications import from ``tinycortex_sa.models``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import REAL, BigInteger, Double, Integer, LargeBinary, Text, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import DeclarativeBase, Mapper

from ..errors import VectorDimensionError
from .types import JsonText

#: A ``*_json`` TEXT column holding a list (in-place changes are tracked).
LIST = MutableList.as_mutable(JsonText())
#: A ``*_json`` TEXT column holding an object (in-place changes are tracked).
DICT = MutableDict.as_mutable(JsonText())
#: Children that live and die with their parent (the schema's ON DELETE CASCADE sidecars).
CASCADE = "all, delete-orphan"


def default(sql: str) -> Any:
    """A server default, spelled as in the Rust core's DDL (``'[]'``, ``0``, ``0.0``…)."""
    return text(sql)


class Base(DeclarativeBase):
    """Declarative base of the chunk DB models (``Base.metadata`` is Alembic's target).

    Single-column text primary keys are declared ``nullable=True`` because that
    is what the Rust core's ``id TEXT PRIMARY KEY`` means in SQLite (``PRAGMA
    table_info`` reports ``notnull = 0``), and ``alembic check`` compares it.

    On PostgreSQL the same models map SQLite's 64-bit ``INTEGER`` to ``BIGINT``
    and its 8-byte ``REAL`` to ``DOUBLE PRECISION`` (PostgreSQL's ``integer``
    and ``real`` are 4 bytes): see ``docs/scaling.md``.
    """

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        str: Text,
        int: Integer().with_variant(BigInteger(), "postgresql"),
        float: REAL().with_variant(Double(), "postgresql"),
        bytes: LargeBinary,
    }


class HasVector:
    """What :func:`check_vector_dim` reads: a vector and the dimension its row declares."""

    vector: Any
    dim: Any


def check_vector_dim(mapper: Mapper[Any], connection: Connection, target: HasVector) -> None:
    """Refuse to write a vector whose length differs from its ``dim`` (the Rust core trusts ``dim``)."""
    if len(target.vector) != target.dim:
        raise VectorDimensionError(
            f"{type(target).__name__}: vector has {len(target.vector)} values but dim={target.dim}"
        )
