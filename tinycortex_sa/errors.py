"""Every exception tinycortex_sa defines, in one place.

Each public one derives from :class:`TinyCortexError`, so an application can
catch the library's refusals in one place while SQLite's own errors (from the
caller's SQL) keep their usual SQLAlchemy / ``sqlite3`` types.  The statement
errors are *also* SQLAlchemy ``OperationalError``\\ s, so code that catches
either type keeps working.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError


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
        # positional arguments pass through: the statement errors below also
        # derive from SQLAlchemy's OperationalError, whose __init__ chain reaches here
        super().__init__(*args)
        if path is not None:
            self.path = path


class DatabaseBusyError(OpenError):
    """Another process holds the database; retrying later is expected to work."""


class DatabaseNotFoundError(OpenError):
    """``create=False`` and the database (or its workspace) does not exist: nothing was created."""


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


class NotAFileError(OpenError):
    """Something other than a regular file stands at the database's path (a device, FIFO, socket,
    directory or a link that cannot be followed): the library never opens, moves or replaces it."""


class CorruptDatabaseError(OpenError):
    """The database file is damaged (confirmed by ``PRAGMA quick_check``)."""


# -- schema version ------------------------------------------------------------------------------


class SchemaError(OpenError):
    """The database's schema revision does not let this version open it."""

    def __init__(self, message: str, *, path: Path, revision: str | None) -> None:
        super().__init__(message, path=path)
        self.revision = revision


class SchemaBehindError(SchemaError):
    """The database is behind head and ``auto_migrate`` is off: run ``alembic upgrade head``."""


class ForeignDatabaseError(SchemaError):
    """The file is another application's SQLite database (tables, none of the chunk DB's): left as it was."""


class SchemaDamagedError(SchemaError):
    """Stamped at head but chunk-DB tables are missing: damage, found at open; the file is left as it was."""


class UnknownRevisionError(SchemaError):
    """The database is stamped with a revision this version does not know (newer code wrote it)."""


class IrreversibleMigrationError(TinyCortexError):
    """A data migration was asked to run backwards; the data it replaced is gone."""


class BackupError(TinyCortexError):
    """No backup was made: the destination exists or cannot be written, or the copy failed its check.

    Nothing is left under the destination's name and nothing was overwritten;
    the partial copy was removed.
    """

    def __init__(self, message: str, *, source: Path, dest: Path) -> None:
        super().__init__(message)
        self.source = source
        self.dest = dest


# -- the caller's statements ----------------------------------------------------------------------


class _Explained(OperationalError):
    """A SQLAlchemy ``OperationalError`` with the file and the fix in its message."""

    path: Path

    @classmethod
    def wrap(cls, err: DBAPIError, orig: BaseException, path: Path, explanation: str) -> _Explained:
        new = cls(err.statement, err.params, orig, err.hide_parameters, err.connection_invalidated)
        new.path = path
        new.add_detail(explanation)
        return new

    def __reduce__(self) -> Any:
        reduced: tuple[Any, Any, dict[str, Any]] = super().__reduce__()  # type: ignore[assignment]
        cls, args, state = reduced
        return cls, args, {**state, "path": self.path}


class StatementBusyError(_Explained, DatabaseBusyError):
    """Another process held the file's lock past ``busy_timeout`` during the caller's statement."""


class StatementDiskFullError(_Explained, DiskFullError):
    """The caller's write failed because the disk is full or a file-size limit was reached."""


class ReadOnlyError(_Explained, TinyCortexError):
    """A read-only engine's statement tried to write (``PRAGMA query_only`` refused it at once)."""


class StatementMovedError(_Explained, DatabaseMovedError):
    """The caller's write found the file renamed or replaced under the open connection."""


# -- values -----------------------------------------------------------------------------------------


class VectorDimensionError(TinyCortexError, ValueError):
    """A vector's length does not match its row's ``dim``, or its bytes are not float32s.

    Also raised by :mod:`tinycortex_sa.search` when the stored vectors of one model
    signature do not all have the same length (the message names a row).
    """


# -- similarity search ------------------------------------------------------------------------------


class SearchUnavailableError(TinyCortexError, ImportError):
    """Similarity search needs numpy, an optional extra: ``pip install tinycortex_sa[vectors]``."""


class PostgresUnavailableError(TinyCortexError, ImportError):
    """The PostgreSQL parts need the ``postgres`` extra: ``pip install 'tinycortex_sa[postgres]'``."""


class SyncError(TinyCortexError):
    """A sync to PostgreSQL was refused or could not finish; nothing half-applied stays behind."""


class QueryVectorError(TinyCortexError, ValueError):
    """The query vector of a similarity search cannot be compared (the subclasses say why)."""


class QueryDimensionError(QueryVectorError, VectorDimensionError):
    """The query vector's length differs from the dimension of the model's stored vectors."""


class NonFiniteVectorError(QueryVectorError):
    """The query vector holds a NaN or an infinity."""


class ZeroVectorError(QueryVectorError):
    """The query vector is all zeros: it has no direction, so no cosine similarity."""


# -- internal: caught and translated before they reach an application ------------------------------


class KeptFileExistsError(FileExistsError):
    """A file was not moved aside because its new name is already taken; nothing was replaced."""

    def __init__(self, filename: str) -> None:
        super().__init__(errno.EEXIST, "will not replace this existing file", filename)


class CliError(Exception):
    """A failure the command line reports as one line, with exit status :attr:`exit_code`."""

    exit_code = 3


class Refused(CliError):
    """The command declined to act (a healthy file given to ``recover``): exit status 1."""

    exit_code = 1
