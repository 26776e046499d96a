"""SQLAlchemy access to the TinyCortex chunk DB, with the Rust core's guarantees.

The names below are imported on first use (PEP 562), so that ``tinycortex-sa
--version`` and ``--help`` do not import SQLAlchemy and Alembic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        UpgradeResult,
        breaker_state,
        create_async_engine,
        create_engine,
        db_path_for,
        invalidate,
        upgrade,
        with_connection,
    )
    from .backups import BackupResult, backup
    from .connection.breaker import BreakerState
    from .errors import (
        BackupError,
        CheckoutError,
        CheckoutTimeoutError,
        CircuitOpenError,
        CorruptDatabaseError,
        DatabaseBusyError,
        DatabaseMovedError,
        DatabaseNotFoundError,
        DiskFullError,
        ForeignDatabaseError,
        ForkedInUseError,
        IrreversibleMigrationError,
        JournalModeBusyError,
        NestedCheckoutError,
        NonFiniteVectorError,
        NotAFileError,
        OpenError,
        OptionConflictError,
        OptionError,
        PostgresUnavailableError,
        PragmaError,
        QueryDimensionError,
        QueryVectorError,
        ReadOnlyError,
        SchemaBehindError,
        SchemaDamagedError,
        SchemaError,
        SearchUnavailableError,
        StatementBusyError,
        StatementDiskFullError,
        StatementMovedError,
        SyncError,
        TinyCortexError,
        UnknownRevisionError,
        VectorDimensionError,
        ZeroVectorError,
    )
    from .options import Options
    from .postgres import sync
    from .schema.filters import exclude_chunk_db_objects, include_chunk_db_objects
    from .search import nearest_chunks, nearest_summaries

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "nearest_chunks": ".search",
    "nearest_summaries": ".search",
    "sync": ".postgres",
    "PostgresUnavailableError": ".errors",
    "SyncError": ".errors",
    "NonFiniteVectorError": ".errors",
    "QueryDimensionError": ".errors",
    "QueryVectorError": ".errors",
    "SearchUnavailableError": ".errors",
    "VectorDimensionError": ".errors",
    "ZeroVectorError": ".errors",
    "BackupError": ".errors",
    "BackupResult": ".backups",
    "BreakerState": ".connection.breaker",
    "CheckoutError": ".errors",
    "CheckoutTimeoutError": ".errors",
    "CircuitOpenError": ".errors",
    "CorruptDatabaseError": ".errors",
    "DatabaseBusyError": ".errors",
    "DatabaseMovedError": ".errors",
    "DatabaseNotFoundError": ".errors",
    "DiskFullError": ".errors",
    "ForeignDatabaseError": ".errors",
    "ForkedInUseError": ".errors",
    "IrreversibleMigrationError": ".errors",
    "JournalModeBusyError": ".errors",
    "NestedCheckoutError": ".errors",
    "NotAFileError": ".errors",
    "OpenError": ".errors",
    "OptionConflictError": ".errors",
    "OptionError": ".errors",
    "Options": ".options",
    "PragmaError": ".errors",
    "ReadOnlyError": ".errors",
    "SchemaBehindError": ".errors",
    "SchemaDamagedError": ".errors",
    "SchemaError": ".errors",
    "StatementBusyError": ".errors",
    "StatementDiskFullError": ".errors",
    "StatementMovedError": ".errors",
    "TinyCortexError": ".errors",
    "UnknownRevisionError": ".errors",
    "UpgradeResult": ".api",
    "backup": ".backups",
    "breaker_state": ".api",
    "create_async_engine": ".api",
    "create_engine": ".api",
    "db_path_for": ".api",
    "exclude_chunk_db_objects": ".schema.filters",
    "include_chunk_db_objects": ".schema.filters",
    "invalidate": ".api",
    "upgrade": ".api",
    "with_connection": ".api",
}
#: Submodules reachable as attributes (``tinycortex_sa.models``) without importing them first.
_SUBMODULES = frozenset(
    {
        "api",
        "backups",
        "cli",
        "connection",
        "engine",
        "errors",
        "models",
        "options",
        "postgres",
        "schema",
        "search",
        "sqlite",
    }
)

__all__ = [
    "BackupError",
    "BackupResult",
    "BreakerState",
    "CheckoutError",
    "CheckoutTimeoutError",
    "CircuitOpenError",
    "CorruptDatabaseError",
    "DatabaseBusyError",
    "DatabaseMovedError",
    "DatabaseNotFoundError",
    "DiskFullError",
    "ForeignDatabaseError",
    "ForkedInUseError",
    "IrreversibleMigrationError",
    "JournalModeBusyError",
    "NestedCheckoutError",
    "NonFiniteVectorError",
    "NotAFileError",
    "OpenError",
    "OptionConflictError",
    "OptionError",
    "Options",
    "PostgresUnavailableError",
    "PragmaError",
    "QueryDimensionError",
    "QueryVectorError",
    "ReadOnlyError",
    "SchemaBehindError",
    "SchemaDamagedError",
    "SchemaError",
    "SearchUnavailableError",
    "StatementBusyError",
    "StatementDiskFullError",
    "StatementMovedError",
    "SyncError",
    "TinyCortexError",
    "UnknownRevisionError",
    "UpgradeResult",
    "VectorDimensionError",
    "ZeroVectorError",
    "backup",
    "breaker_state",
    "create_async_engine",
    "create_engine",
    "db_path_for",
    "exclude_chunk_db_objects",
    "include_chunk_db_objects",
    "invalidate",
    "nearest_chunks",
    "nearest_summaries",
    "sync",
    "upgrade",
    "with_connection",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
