"""The typed errors tinycortex_sa raises itself.

Every one derives from :class:`TinyCortexError`, so an application can catch
the library's refusals in one place while SQLite's own errors (from the
caller's SQL) keep their usual SQLAlchemy / ``sqlite3`` types.
"""

from __future__ import annotations

from pathlib import Path


class TinyCortexError(Exception):
    """Base class of every error raised by tinycortex_sa itself."""


class OptionError(TinyCortexError, ValueError):
    """An option has an unknown name or a value that cannot be used."""


class OptionConflictError(OptionError):
    """A second caller asked for different file-level options than the first."""


class CheckoutError(TinyCortexError):
    """The shared connection could not be handed to this caller."""


class NestedCheckoutError(CheckoutError):
    """The calling thread already holds the connection for this file."""


class CheckoutTimeoutError(CheckoutError):
    """Another thread held the connection for longer than ``checkout_timeout``."""


class DatabaseMovedError(TinyCortexError):
    """The file was renamed or replaced while open (e.g. quarantined by another process)."""


class ForkedInUseError(CheckoutError):
    """This process was forked while the parent was using the file's connection."""


class CircuitOpenError(CheckoutError):
    """The circuit breaker refuses to open this file until its cooldown ends."""

    def __init__(self, message: str, *, path: Path, retry_in: float) -> None:
        super().__init__(message)
        self.path = path
        self.retry_in = retry_in


class OpenError(TinyCortexError):
    """The database file could not be opened or initialised."""

    path: Path
    """The database file."""

    def __init__(self, *args: object, path: Path | None = None) -> None:
        # positional arguments pass through: the statement errors of sql_errors also
        # derive from SQLAlchemy's OperationalError, whose __init__ chain reaches here
        super().__init__(*args)
        if path is not None:
            self.path = path


class DatabaseBusyError(OpenError):
    """Another process holds the database; retrying later is expected to work."""


class DiskFullError(OpenError):
    """A write failed because the disk is full or a file-size limit was reached."""


class PragmaError(OpenError):
    """SQLite did not accept a pragma value the chunk DB requires."""

    def __init__(self, message: str, *, path: Path, pragma: str, asked: str, got: str) -> None:
        super().__init__(message, path=path)
        self.pragma = pragma
        self.asked = asked
        self.got = got


class JournalModeBusyError(PragmaError, DatabaseBusyError):
    """``journal_mode`` stays ``wal`` because another process has the file open."""


class CorruptDatabaseError(OpenError):
    """The database file is damaged (confirmed by ``PRAGMA quick_check``)."""
