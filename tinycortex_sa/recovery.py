"""Opening a chunk DB safely: stale side files, corrupt files, clear errors.

Rules (from the on-disk contract):

* An I/O error at open gets exactly one retry, after any ``-wal`` has been
  folded into the main file by a checkpoint.  A ``-wal`` or ``-journal`` may
  hold committed data, so it is never deleted or renamed; a hot ``-journal``
  is rolled back by SQLite itself.  If the ``-wal`` cannot be folded because
  another process holds the file, the open fails with a retryable
  :class:`DatabaseBusyError`.
* Leaving WAL mode needs the only connection to the file: an open refused
  that way closes, waits a random few milliseconds and tries again, for up
  to ``busy_timeout`` of waiting, so processes arriving together take turns.
* A corrupt file (SQLITE_CORRUPT / SQLITE_NOTADB), confirmed by
  ``PRAGMA quick_check`` on a separate connection, is renamed with its side
  files to ``<name>.corrupt-<UTC timestamp>`` and a fresh database is built,
  or, with ``on_corrupt="raise"``, reported without touching anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import resource
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_none,
    wait_random_exponential,
)

from . import pragmas
from .errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    DiskFullError,
    JournalModeBusyError,
    OpenError,
    TinyCortexError,
)
from .options import DEFAULTS, Options

log = logging.getLogger("tinycortex_sa")

Initialiser = Callable[[sqlite3.Connection, Path, Options], None]

#: CANTOPEN, IOERR_TRUNCATE, IOERR_SHMOPEN, IOERR_SHMSIZE, IOERR_SHMMAP, IOERR_IN_PAGE
IO_OPEN_CODES = frozenset({14, 1546, 4618, 4874, 5386, 8714})
IO_OPEN_MESSAGES = ("disk i/o error", "unable to open database file")
CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
#: IOERR_WRITE, IOERR_FSYNC, IOERR_TRUNCATE: what a full disk or a file-size limit (EFBIG) gives
WRITE_FAILURE_CODES = frozenset({778, 1034, 1546})
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


def is_moved(err: BaseException) -> bool:
    """SQLITE_READONLY_DBMOVED: the file was renamed or replaced under an open connection."""
    return _code(err) == 1032


def moved_message(path: Path) -> str:
    """What to say when a write found the open file renamed or replaced."""
    return (
        f"{path} was renamed or replaced while this process had it open (another process quarantined "
        "it as corrupt, or it was restored from a backup). SQLite refused the write, so nothing went "
        "into the moved file; the next call opens the database now at that path."
    )


def is_busy(err: BaseException) -> bool:
    code = _code(err)
    return isinstance(err, sqlite3.Error) and code is not None and code & 0xFF in BUSY_CODES


def side_files(path: Path) -> list[Path]:
    """The side files SQLite may have left beside ``path`` (existing ones only)."""
    return [p for p in (path.with_name(path.name + s) for s in SIDE_SUFFIXES) if p.exists()]


WAL_HEADER_MODE = 2
"""Bytes 18 and 19 of the database header: 2 in WAL mode, 1 with a rollback journal."""


def stale_wal_reason(path: Path) -> str | None:
    """Why the non-empty ``-wal`` beside ``path`` must not be read by SQLite, or None.

    SQLite reads a ``-wal`` it finds beside any database whose file is not
    empty, whatever the header says, and deletes one beside an empty file.
    But SQLite itself never leaves a ``-wal`` beside a database in rollback
    mode: leaving WAL mode checkpoints and deletes the ``-wal`` before the
    header changes.  So a ``-wal`` beside a database whose header says
    rollback mode (the chunk DB's TRUNCATE) is stale, e.g. left over when the
    file was restored or synced without it: replaying it would overwrite
    pages with older versions and lose everything committed since.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        if wal.stat().st_size == 0:
            return None
    except FileNotFoundError:
        return None
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        header = b""
    if not header:
        return "the database file is missing or empty, and SQLite would delete the -wal"
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None  # not a database: the corruption path quarantines it with its side files
    if header[18] == WAL_HEADER_MODE or header[19] == WAL_HEADER_MODE:
        return None  # a WAL database: its -wal holds committed data, fold it in
    return (
        "the database header says rollback-journal mode: this -wal was not written for its current contents"
    )


def set_aside_stale_wal(
    path: Path,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    busy_timeout_ms: int = DEFAULTS.busy_timeout,
    sleep: Callable[[float], None] = time.sleep,
) -> Path | None:
    """Keep a stale ``-wal`` (and its ``-shm``) aside as ``<name>-wal.stale-<UTC ts>``; return the new name.

    Nothing is deleted and the bytes and mode are kept.  The header is read
    again after the ``-wal`` was seen, so a database switching into WAL mode
    meanwhile (header first, then the ``-wal``) is left alone; and again under
    :func:`moving_aside`, so of two processes finding it, one moves it.
    """
    if stale_wal_reason(path) is None:
        return None
    with moving_aside(path.parent, busy_timeout_ms, sleep):
        reason = stale_wal_reason(path)
        if reason is None or stale_wal_reason(path) is None:
            return None
        stamp = clock().strftime("%Y%m%dT%H%M%SZ")
        wal = path.with_name(path.name + "-wal")
        shm = path.with_name(path.name + "-shm")

        def kept(side: Path, n: int) -> Path:
            return side.with_name(f"{side.name}.stale-{stamp}" + ("" if n == 1 else f"-{n}"))

        n = 1
        while os.path.lexists(kept(wal, n)) or os.path.lexists(kept(shm, n)):
            n += 1
        if shm.exists():
            rename_keeping(shm, kept(shm, n))
        target = kept(wal, n)
        rename_keeping(wal, target)
        _fsync_dir(path.parent)
    log.error(
        "%s: kept a stale -wal aside as %s (%s); opening the database as its file holds it",
        path,
        target,
        reason,
    )
    return target


@contextlib.contextmanager
def moving_aside(
    directory: Path, busy_timeout_ms: int, sleep: Callable[[float], None] = time.sleep
) -> Iterator[None]:
    """Hold the lock that serialises moving files aside in ``directory`` between processes.

    Two processes that find the same damaged file (or stale ``-wal``) at once
    must not both move it: the second would move the first one's new database,
    or its kept file.  The lock is ``flock`` on the directory itself (no lock
    file is created), released when the block ends or the process dies.  It is
    waited for up to ``busy_timeout``, then :class:`DatabaseBusyError`.
    Whoever holds it checks again before moving anything.
    """
    fd = os.open(directory, os.O_RDONLY)
    with _moving_fds_lock:
        _moving_fds.add(fd)
    try:
        waited = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited >= busy_timeout_ms / 1000:
                    raise DatabaseBusyError(
                        f"{directory}: another process has been moving a damaged database or a stale "
                        f"-wal aside for longer than busy_timeout={busy_timeout_ms}ms. Nothing was "
                        "moved here; retry when it is done.",
                        path=directory,
                    ) from None
                sleep(MOVE_LOCK_POLL)
                waited += MOVE_LOCK_POLL
        yield
    finally:
        with _moving_fds_lock:
            _moving_fds.discard(fd)
            os.close(fd)  # releases the lock


#: How often a process waiting for :func:`moving_aside` looks again, in seconds.
MOVE_LOCK_POLL = 0.005

#: The descriptors :func:`moving_aside` has open in this process.  A ``flock``
#: belongs to the open file, which a forked child shares: a child keeping its
#: copy would keep the lock after the parent released it, so the child closes
#: them at once (closing, unlike ``LOCK_UN``, leaves the parent's lock alone).
_moving_fds: set[int] = set()
_moving_fds_lock = threading.Lock()


def _close_inherited_moving_fds() -> None:
    global _moving_fds_lock
    for fd in _moving_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _moving_fds.clear()
    _moving_fds_lock = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_close_inherited_moving_fds)


class KeptFileExistsError(FileExistsError):
    """A file was not moved aside because its new name is already taken; nothing was replaced."""


def rename_keeping(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` but never over an existing ``dst`` (``os.rename`` would replace it).

    A hard link then an unlink: the link fails with :class:`FileExistsError`
    if ``dst`` exists, so a file another process has just kept under that
    name is never lost.  Where the file system has no hard links, a checked
    rename is the fallback.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError as err:
        raise KeptFileExistsError(errno.EEXIST, "will not replace this existing file", str(dst)) from err
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(dst):
            raise KeptFileExistsError(errno.EEXIST, "will not replace this existing file", str(dst)) from err
        os.rename(src, dst)
        return
    os.unlink(src)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fold_wal(path: Path, busy_timeout_ms: int) -> None:
    """Checkpoint a leftover ``-wal`` into the main file; never delete it.

    Raises :class:`DatabaseBusyError` when another process holds the database
    so that the checkpoint cannot complete.  A stale ``-wal`` (see
    :func:`stale_wal_reason`) is kept aside instead of being folded in.
    """
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return
    if set_aside_stale_wal(path, busy_timeout_ms=busy_timeout_ms) is not None:
        return
    try:
        conn = connect(file_uri(path, "rw"), uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None)
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


SQLITE_MAGIC = b"SQLite format 3\x00"


def header_problem(path: Path) -> str | None:
    """What is wrong with ``path`` that its first bytes already show (not a SQLite file), or None.

    Checked before SQLite opens a file, because SQLite deletes a ``-journal``
    it finds beside a file it cannot read: a damaged file is then quarantined
    with its side files exactly as they were.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    if head and head != SQLITE_MAGIC:
        return "file is not a database"  # SQLite's own words for SQLITE_NOTADB
    return None


def _not_a_database(path: Path, found: str) -> sqlite3.DatabaseError:
    err = sqlite3.DatabaseError(f"{path} is damaged: {found}")
    err.sqlite_errorcode = 26  # SQLITE_NOTADB
    err.sqlite_errorname = "SQLITE_NOTADB"
    return err


def file_uri(path: Path, mode: str) -> str:
    """A SQLite ``file:`` URI for ``path`` with ``?mode=`` (the path's bytes, so any name works).

    An absolute path gets an empty authority (``file:///...``), so that one
    spelled with a leading ``//`` is not read as a host name.
    """
    prefix = "file://" if path.is_absolute() else "file:"
    return f"{prefix}{urllib.parse.quote(os.fsencode(path))}?mode={mode}"


def quick_check(path: Path, busy_timeout_ms: int) -> str | None:
    """Return what ``PRAGMA quick_check(1)`` finds wrong with ``path``, or None if healthy.

    The header is looked at first; then SQLite checks through a read-only
    connection, which changes nothing on disk (it neither rolls back nor
    deletes a ``-journal``).
    """
    found = header_problem(path)
    if found is not None:
        return found
    try:
        uri = file_uri(path, "ro")
        conn = connect(uri, timeout=busy_timeout_ms / 1000, isolation_level=None, uri=True)
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
    deleted and modes are kept (a rename does not touch them); no existing
    file is replaced (:func:`rename_keeping`).  Callers hold
    :func:`moving_aside` and have checked the file again under it.
    """
    stamp = clock().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or any(target.with_name(target.name + s).exists() for s in SIDE_SUFFIXES):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for side in side_files(path):
        rename_keeping(side, target.with_name(target.name + side.name[len(path.name) :]))
    rename_keeping(path, target)
    _fsync_dir(path.parent)
    return target


def _writable(path: Path, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)  # pragma: no cover - platforms without effective-id access()


def _prepare(path: Path) -> None:
    """Create the database directory (0700) and an empty database file (0600) if missing.

    Then make sure this process can write them: SQLite opens a file it may not
    write read-only without a word, and the first write would fail later, far
    from the cause.  The directory must be writable too unless the ``-journal``
    (which TRUNCATE mode keeps) already exists and is writable.  A file that
    disappears meanwhile (another process kept a damaged one aside) is created
    again.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass
        else:
            os.close(fd)
        if path.is_dir():
            return  # SQLite's own refusal is explained by _explain
        if _writable(path, os.R_OK | os.W_OK):
            break
        if os.path.lexists(path):
            raise PermissionError(
                errno.EACCES, "this user may not read and write the database file", str(path)
            )
    else:
        raise FileNotFoundError(errno.ENOENT, "the database file keeps disappearing", str(path))
    journal = path.with_name(path.name + "-journal")
    if not (journal.exists() and _writable(journal, os.W_OK)) and not _writable(
        path.parent, os.W_OK | os.X_OK
    ):
        raise PermissionError(
            errno.EACCES, "this user may not create SQLite's -journal in the directory", str(path.parent)
        )


def _open_prepared(path: Path, options: Options, sleep: Callable[[float], None]) -> None:
    _prepare(path)
    found = header_problem(path)
    if found is not None:  # before SQLite sees it, and deletes a -journal beside it
        raise _not_a_database(path, found)
    set_aside_stale_wal(path, busy_timeout_ms=options.busy_timeout, sleep=sleep)


def _open_once(
    path: Path, options: Options, initialise: Initialiser, sleep: Callable[[float], None]
) -> sqlite3.Connection:
    _open_prepared(path, options, sleep)
    conn = connect(
        # mode=rw: SQLite must not create the file (with its own mode, not 0600) if it vanished since
        # _prepare made sure of it; it fails with CANTOPEN instead, which gets the one retry
        file_uri(path, "rw"),
        uri=True,
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


#: Waits between attempts to take a WAL database out of WAL mode: random, growing, at most this long.
WAL_SWITCH_WAIT = wait_random_exponential(multiplier=0.002, max=0.1)


def _open_leaving_wal(
    path: Path, options: Options, initialise: Initialiser, sleep: Callable[[float], None]
) -> sqlite3.Connection:
    """:func:`_open_once`, tried again while another process keeps the database in WAL mode.

    Leaving WAL needs the only connection to the file, so processes opening a
    WAL database at the same moment refuse each other.  Each closes its
    connection (``_open_once`` does), waits a random short while and tries
    again, up to ``busy_timeout`` of waiting in all: the first back alone
    folds the ``-wal`` in, the others then find a TRUNCATE database.  A
    process that keeps the file open longer gets :class:`JournalModeBusyError`.
    """
    limit = options.busy_timeout / 1000

    def waited_long_enough(state: RetryCallState) -> bool:
        return state.idle_for >= limit  # the waits themselves, so an injected sleep sees the same policy

    retrying = Retrying(
        stop=waited_long_enough,
        retry=retry_if_exception_type(JournalModeBusyError),
        wait=WAL_SWITCH_WAIT,
        sleep=sleep,
        reraise=True,
    )
    return retrying(_open_once, path, options, initialise, sleep)


def _open_retrying(
    path: Path, options: Options, initialise: Initialiser, sleep: Callable[[float], None]
) -> sqlite3.Connection:
    def fold_before_retry(state: RetryCallState) -> None:
        try:
            fold_wal(path, options.busy_timeout)
        except DatabaseBusyError as busy:  # keep the I/O error that started it as the cause
            raise busy from (state.outcome.exception() if state.outcome else None)

    retrying = Retrying(
        stop=stop_after_attempt(2),
        retry=retry_if_exception(is_io_open_error),
        wait=wait_none(),
        before_sleep=fold_before_retry,
        sleep=sleep,
        reraise=True,
    )
    return retrying(_open_leaving_wal, path, options, initialise, sleep)


def busy_message(path: Path, busy_timeout_ms: int, err: BaseException) -> str:
    """What to say when another process held the file's lock past ``busy_timeout``."""
    return (
        f"{path}: another process held a lock for longer than busy_timeout={busy_timeout_ms}ms "
        f"({err}); retry when it is done, or raise busy_timeout."
    )


def is_write_failure(err: BaseException) -> bool:
    """SQLITE_FULL, or the I/O errors a full disk or a file-size limit (EFBIG) gives."""
    code = _code(err)
    return code is not None and (code & 0xFF == 13 or code in WRITE_FAILURE_CODES)


def full_message(path: Path, err: BaseException) -> str:
    """What to say when a write to ``path`` failed for lack of space (or a file-size limit)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limited = (
        ""
        if limit == resource.RLIM_INFINITY
        else f" (this process may write files of at most {limit} bytes: RLIMIT_FSIZE, `ulimit -f`)"
    )
    return (
        f"cannot write {path}: {err} ({getattr(err, 'sqlite_errorname', _code(err))}). The disk is full or a "
        f"file-size limit was reached{limited}: free space or raise the limit, then retry. SQLite rolled "
        "the transaction back; nothing was changed."
    )


def _explain(path: Path, options: Options, err: BaseException) -> OpenError:
    code = _code(err)
    if is_busy(err):
        return DatabaseBusyError(busy_message(path, options.busy_timeout, err), path=path)
    if isinstance(err, KeptFileExistsError):
        return OpenError(
            f"{path}: could not keep a damaged or stale file aside as {err.filename}: a file of that name "
            "appeared meanwhile (another program moving files here?). Nothing was overwritten or deleted; "
            "retry.",
            path=path,
        )
    if isinstance(err, IsADirectoryError) or (path.is_dir() and not isinstance(err, PermissionError)):
        return OpenError(
            f"cannot open {path}: it is a directory, not a database file. Move it away, or point the "
            "workspace at another directory.",
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
    if is_write_failure(err):
        return DiskFullError(full_message(path, err), path=path)
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
    verify: bool = False,
) -> sqlite3.Connection:
    """Open ``path``, set the pragmas and run ``initialise``, recovering as the contract says.

    With ``verify`` (a caller's statement already hit SQLITE_CORRUPT on this
    file), ``PRAGMA quick_check`` runs before the open, so that damage the open
    itself would not read is quarantined too.  Errors are
    :class:`TinyCortexError` subclasses naming the path and the fix.
    """
    try:
        try:
            found = quick_check(path, options.busy_timeout) if verify and path.is_file() else None
            if found is None:
                return _open_retrying(path, options, initialise, sleep)
            err: sqlite3.DatabaseError = _not_a_database(path, found)
        except sqlite3.DatabaseError as raised:
            if not is_corruption(raised):
                raise
            found = quick_check(path, options.busy_timeout)
            if found is None:
                # Healthy now: another process quarantined the file and built a new one while this
                # open was failing on the old one.  Open what is there now, once.
                log.info("%s changed while it was being checked (%s); opening it again", path, raised)
                return _open_retrying(path, options, initialise, sleep)
            err = raised
        if options.on_corrupt == "raise":
            raise CorruptDatabaseError(
                f"{path} is corrupt ({found}); nothing was changed because on_corrupt='raise'. "
                "Restore it from a backup, or open it with on_corrupt='quarantine' to keep it "
                "aside and start a fresh database.",
                path=path,
            ) from err
        with moving_aside(path.parent, options.busy_timeout, sleep):
            # checked again under the lock: another process may have kept it aside meanwhile
            still = quick_check(path, options.busy_timeout) if path.exists() else None
            moved = quarantine(path) if still is not None else None
        if moved is None:
            log.info("%s was kept aside by another process meanwhile; opening the new file", path)
        else:
            log.error("%s is corrupt (%s): kept as %s; building a fresh database", path, found, moved)
        return _open_retrying(path, options, initialise, sleep)
    except TinyCortexError:
        raise
    except (sqlite3.Error, OSError) as err:
        raise _explain(path, options, err) from err
