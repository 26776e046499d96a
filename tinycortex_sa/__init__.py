"""SQLAlchemy access to the TinyCortex chunk DB, with the Rust core's guarantees."""

from __future__ import annotations

from .api import breaker_state, create_engine, db_path_for, invalidate, with_connection
from .connection.breaker import BreakerState
from .errors import (
    CheckoutError,
    CheckoutTimeoutError,
    CircuitOpenError,
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseMovedError,
    DiskFullError,
    ForkedInUseError,
    IrreversibleMigrationError,
    JournalModeBusyError,
    NestedCheckoutError,
    OpenError,
    OptionConflictError,
    OptionError,
    PragmaError,
    ReadOnlyError,
    SchemaBehindError,
    SchemaError,
    StatementBusyError,
    StatementDiskFullError,
    StatementMovedError,
    TinyCortexError,
    UnknownRevisionError,
)
from .options import Options

__all__ = [
    "BreakerState",
    "CheckoutError",
    "CheckoutTimeoutError",
    "CircuitOpenError",
    "CorruptDatabaseError",
    "DatabaseBusyError",
    "DatabaseMovedError",
    "DiskFullError",
    "ForkedInUseError",
    "IrreversibleMigrationError",
    "JournalModeBusyError",
    "NestedCheckoutError",
    "OpenError",
    "OptionConflictError",
    "OptionError",
    "Options",
    "PragmaError",
    "ReadOnlyError",
    "SchemaBehindError",
    "SchemaError",
    "StatementBusyError",
    "StatementDiskFullError",
    "StatementMovedError",
    "TinyCortexError",
    "UnknownRevisionError",
    "breaker_state",
    "create_engine",
    "db_path_for",
    "invalidate",
    "with_connection",
]
__version__ = "0.1.0"
