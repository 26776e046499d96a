"""Errors about the schema version of a chunk DB.

They derive from :class:`~tinycortex_sa.errors.OpenError` (an open fails with
them) or directly from :class:`~tinycortex_sa.errors.TinyCortexError` (a
refused downgrade), so applications catch them with the library's other errors.
"""

from __future__ import annotations

from pathlib import Path

from .errors import OpenError, TinyCortexError


class SchemaError(OpenError):
    """The database's schema revision does not let this version open it."""

    def __init__(self, message: str, *, path: Path, revision: str | None) -> None:
        super().__init__(message, path=path)
        self.revision = revision


class SchemaBehindError(SchemaError):
    """The database is behind head and ``auto_migrate`` is off: run ``alembic upgrade head``."""


class UnknownRevisionError(SchemaError):
    """The database is stamped with a revision this version does not know (newer code wrote it)."""


class IrreversibleMigrationError(TinyCortexError):
    """A data migration was asked to run backwards; the data it replaced is gone."""
