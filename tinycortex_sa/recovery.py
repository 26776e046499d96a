"""Opening a chunk DB safely: stale side files, corrupt files, clear errors.

Rules (from the on-disk contract):

* An I/O error at open gets exactly one retry, after any ``-wal`` has been
  folded into the main file by a checkpoint.  A ``-wal`` or ``-journal`` may
  hold committed data, so it is never deleted or renamed; a hot ``-journal``
  is rolled back by SQLite itself.  If the ``-wal`` cannot be folded because
  another process holds the file, the open fails with a retryable
  :class:`DatabaseBusyError`.
* A corrupt file (SQLITE_CORRUPT / SQLITE_NOTADB), confirmed by
  ``PRAGMA quick_check`` on a separate connection, is renamed with its side
  files to ``<name>.corrupt-<UTC timestamp>`` and a fresh database is built,
  or, with ``on_corrupt="raise"``, reported without touching anything.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_none

from . import pragmas
from .errors import CorruptDatabaseError, DatabaseBusyError, OpenError, TinyCortexError
from .options import Options

log = logging.getLogger("tinycortex_sa")

Initialiser = Callable[[sqlite3.Connection, Path, Options], None]

#: CANTOPEN, IOERR_TRUNCATE, IOERR_SHMOPEN, IOERR_SHMSIZE, IOERR_SHMMAP, IOERR_IN_PAGE
IO_OPEN_CODES = frozenset({14, 1546, 4618, 4874, 5386, 8714})
IO_OPEN_MESSAGES = ("disk i/o error", "unable to open database file")
CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes, low byte)
SIDE_SUFFIXES = ("-journal", "-wal", "-shm")

#: The DBAPI connect function; tests replace it with one that fails on command.
connect = sqlite3.connect


def _code(err: BaseException) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


def is_io_open_error(err: BaseException) -> bool:
    """The I/O error family that earns one retry after side-file handling."""
    if not isinstance(err, sqlite3.Error):
        return False
    code = _code(err)
    if code is not None and (code in IO_OPEN_CODES or code & 0xFF == 14):  # any CANTOPEN variant
        return True
    return any(m in str(err).lower() for m in IO_OPEN_MESSAGES)


def is_corruption(err: BaseException) -> bool:
    code = _code(err)
    return isinstance(err, sqlite3.DatabaseError) and code is not None and code & 0xFF in CORRUPT_CODES


def is_busy(err: BaseException) -> bool:
    code = _code(err)
    return isinstance(err, sqlite3.Error) and code is not None and code & 0xFF in BUSY_CODES


def side_files(path: Path) -> list[Path]:
    """The side files SQLite may have left beside ``path`` (existing ones only)."""
    return [p for p in (path.with_name(path.name + s) for s in SIDE_SUFFIXES) if p.exists()]


def fold_wal(path: Path, busy_timeout_ms: int) -> None:
    """Checkpoint a leftover ``-wal`` into the main file; never delete it.

    Raises :class:`DatabaseBusyError` when another process holds the database
    so that the checkpoint cannot complete.
    """
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return
    try:
        conn = connect(str(path), timeout=busy_timeout_ms / 1000, isolation_level=None)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            mode = str(conn.execute("PRAGMA journal_mode = TRUNCATE").fetchone()[0]).lower()
        finally:
            conn.close()
    except sqlite3.Error as err:
        if is_busy(err):
            busy, mode = 1, "wal"
        else:
            log.warning("could not fold %s into %s: %s", wal, path, err)
            return
    if busy or mode != "truncate":
        raise DatabaseBusyError(
            f"{wal} holds data not yet in {path}, and another process has the database open so it "
            "cannot be checkpointed now. Nothing was deleted; retry once the other process has "
            "closed the database.",
            path=path,
        )
    log.info("folded leftover %s into %s", wal, path)


def quick_check(path: Path, busy_timeout_ms: int) -> str | None:
    """Return what ``PRAGMA quick_check(1)`` finds wrong with ``path``, or None if healthy."""
    try:
        conn = connect(str(path), timeout=busy_timeout_ms / 1000, isolation_level=None)
        try:
            result = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return str(err) if is_corruption(err) else None
    return None if result == "ok" else result


def quarantine(path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Path:
    """Rename ``path`` and its side files to ``<name>.corrupt-<UTC timestamp>``; return the new name.

    Side files move first so that a journal is never left beside a new,
    unrelated database (SQLite would roll it back into it).  Nothing is
    deleted and modes are kept (a rename does not touch them).
    """
    stamp = clock().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or any(target.with_name(target.name + s).exists() for s in SIDE_SUFFIXES):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for side in side_files(path):
        os.rename(side, target.with_name(target.name + side.name[len(path.name) :]))
    os.rename(path, target)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def _prepare(path: Path) -> None:
    """Create the database directory (0700) and an empty database file (0600) if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _open_once(path: Path, options: Options, initialise: Initialiser) -> sqlite3.Connection:
    _prepare(path)
    conn = connect(
        str(path),
        timeout=options.busy_timeout / 1000,
        isolation_level=None,  # the library, not the driver, emits BEGIN
        check_same_thread=False,  # callers are serialised by the per-file lock
    )
    try:
        pragmas.apply(conn, path, options)
        initialise(conn, path, options)
    except BaseException:
        conn.close()  # rolls back whatever initialise left open
        raise
    return conn


def _open_retrying(
    path: Path, options: Options, initialise: Initialiser, sleep: Callable[[float], None]
) -> sqlite3.Connection:
    retrying = Retrying(
        stop=stop_after_attempt(2),
        retry=retry_if_exception(is_io_open_error),
        wait=wait_none(),
        before_sleep=lambda _state: fold_wal(path, options.busy_timeout),
        sleep=sleep,
        reraise=True,
    )
    return retrying(_open_once, path, options, initialise)


def _explain(path: Path, options: Options, err: BaseException) -> OpenError:
    code = _code(err)
    if is_busy(err):
        return DatabaseBusyError(
            f"{path}: another process held a lock for longer than busy_timeout={options.busy_timeout}ms "
            f"({err}); retry when it is done, or raise busy_timeout.",
            path=path,
        )
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return OpenError(
            f"cannot create {path.parent}: a file stands where a directory is needed ({err}). "
            "Point the workspace at a directory.",
            path=path,
        )
    if isinstance(err, PermissionError) or (code is not None and code & 0xFF == 8):
        return OpenError(
            f"cannot write {path}: {err}. Check the owner and mode of the file and of {path.parent}.",
            path=path,
        )
    if code is not None and code & 0xFF == 13:
        return OpenError(f"{path}: the disk is full ({err}); free space and retry.", path=path)
    if path.is_dir():
        return OpenError(f"cannot open {path}: it is a directory, not a database file.", path=path)
    return OpenError(
        f"cannot open or initialise {path}: {err}. Check that {path.parent} is a writable "
        "directory and that the file is a TinyCortex chunk DB.",
        path=path,
    )


def open_initialised(
    path: Path,
    options: Options,
    initialise: Initialiser,
    sleep: Callable[[float], None] = time.sleep,
) -> sqlite3.Connection:
    """Open ``path``, set the pragmas and run ``initialise``, recovering as the contract says.

    Errors are :class:`TinyCortexError` subclasses naming the path and the fix.
    """
    try:
        try:
            return _open_retrying(path, options, initialise, sleep)
        except sqlite3.DatabaseError as err:
            if not is_corruption(err):
                raise
            found = quick_check(path, options.busy_timeout)
            if found is None:
                raise
            if options.on_corrupt == "raise":
                raise CorruptDatabaseError(
                    f"{path} is corrupt ({found}); nothing was changed because on_corrupt='raise'. "
                    "Restore it from a backup, or open it with on_corrupt='quarantine' to keep it "
                    "aside and start a fresh database.",
                    path=path,
                ) from err
            moved = quarantine(path)
            log.error("%s is corrupt (%s): kept as %s; building a fresh database", path, found, moved)
            return _open_retrying(path, options, initialise, sleep)
    except TinyCortexError:
        raise
    except (sqlite3.Error, OSError) as err:
        raise _explain(path, options, err) from err
