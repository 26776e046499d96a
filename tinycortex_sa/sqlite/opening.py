"""The open sequence of a chunk DB, step by step, with the contract's recovery rules.

:func:`open_initialised` is the whole sequence; each step is a function below it:

1. **check first** (only when a caller's statement already hit damage):
   ``PRAGMA quick_check`` before the open, so damage the open would not read
   is found too.
2. **open** (:func:`open_once`): create the directory and an empty file if
   missing, refuse a file whose header is not SQLite's (before SQLite sees it
   and deletes a ``-journal`` beside it), keep a stale ``-wal`` aside, connect
   with ``mode=rw`` (SQLite never creates the file), set and verify the
   pragmas, run the initialiser (the schema upgrade).
3. **take turns out of WAL** (:func:`open_taking_turns`): leaving WAL needs the
   only connection, so a refused switch closes, waits a random few ms and tries
   again, for up to ``busy_timeout`` of waiting.
4. **one retry after an I/O error** (:func:`open_retrying`): fold a leftover
   ``-wal`` in by a checkpoint (never delete it), then try once more.
5. **damage**: confirmed by ``quick_check`` on a separate read-only
   connection, the file and its side files are kept aside as
   ``<name>.corrupt-<UTC timestamp>`` (or, with ``on_corrupt="raise"``,
   reported without touching anything) and a fresh database is opened.

Every failure leaves as a :class:`~tinycortex_sa.errors.TinyCortexError`
subclass naming the path and the fix (:func:`.messages.open_error`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
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

from ..errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    JournalModeBusyError,
    NotAFileError,
    TinyCortexError,
)
from ..options import Options
from . import aside, codes, driver, files, messages, pragmas
from .aside import MoveLock

log = logging.getLogger("tinycortex_sa")

#: ``initialise(conn, path, options)``: run on every new connection after the pragmas.
Initialiser = Callable[[sqlite3.Connection, Path, Options], None]
#: ``inspect(conn, path)``: run on every new connection before the pragmas, to refuse a file early.
Inspector = Callable[[sqlite3.Connection, Path], None]


def _no_inspection(conn: sqlite3.Connection, path: Path) -> None:
    """The default: nothing to refuse."""


Sleep = Callable[[float], None]

#: Waits between attempts to take a WAL database out of WAL mode: random, growing, at most this long.
WAL_SWITCH_WAIT = wait_random_exponential(multiplier=0.002, max=0.1)


def open_initialised(
    path: Path,
    options: Options,
    initialise: Initialiser,
    sleep: Sleep = time.sleep,
    verify: bool = False,
    lock: MoveLock = files.lock_directory,
    inspect: Inspector = _no_inspection,
) -> sqlite3.Connection:
    """Open ``path``, set the pragmas and run ``initialise``, recovering as the contract says.

    With ``verify`` (a caller's statement already hit SQLITE_CORRUPT on this
    file), ``PRAGMA quick_check`` runs before the open (step 1).  ``lock`` is
    the directory lock held while files are moved aside.  Errors are
    :class:`TinyCortexError` subclasses naming the path and the fix.
    """
    what = files.not_regular(path)
    if what is not None:  # before anything opens it: a FIFO would block, a device is not ours to move
        raise NotAFileError(messages.not_a_file_message(path, what), path=path)
    before = _identity(path)
    try:
        try:
            check = aside.quick_check(path, options.busy_timeout) if verify and path.is_file() else None
            if check is None or check.damage is None:
                # healthy, or the check could not run (the open below finds damage if there is any)
                return open_retrying(path, options, initialise, sleep, lock, inspect)
            err: sqlite3.DatabaseError = codes.not_a_database(f"{path} is damaged: {check.damage}")
        except sqlite3.DatabaseError as raised:
            if not codes.is_corruption(raised):
                raise
            replaced = _identity(path) != before
            check = aside.Check() if replaced else aside.quick_check(path, options.busy_timeout)
            if check.healthy:
                # Healthy now: another process quarantined the file and built a new one while this
                # open was failing on the old one.  Open what is there now, once.
                log.info("%s changed while it was being checked (%s); opening it again", path, raised)
                return open_retrying(path, options, initialise, sleep, lock, inspect)
            err = raised
        keep_damaged_aside(path, options, check, err, sleep, lock, before)
        return open_retrying(path, options, initialise, sleep, lock, inspect)
    except TinyCortexError:
        raise
    except (sqlite3.Error, OSError) as err:
        raise messages.open_error(path, options.busy_timeout, err) from err


def open_once(
    path: Path,
    options: Options,
    initialise: Initialiser,
    sleep: Sleep,
    lock: MoveLock,
    inspect: Inspector = _no_inspection,
) -> sqlite3.Connection:
    """Step 2: prepare the file, connect, set the pragmas, initialise."""
    files.prepare(path)
    what = files.not_regular(path)
    if what is not None:  # replaced meanwhile
        raise NotAFileError(messages.not_a_file_message(path, what), path=path)
    header = files.read_header(path)
    found = header.problem
    if found is not None:  # before SQLite sees it, and deletes a -journal beside it
        raise codes.not_a_database(f"{path} is damaged: {found}")
    aside.set_aside_stale_wal(path, options.busy_timeout, sleep, lock)
    # mode=rw: SQLite must not create the file (with its own mode, not 0600) if it vanished since
    # prepare() made sure of it; it fails with CANTOPEN instead, which gets the one retry
    conn = driver.open_uri(path, "rw", options.busy_timeout, shared=True)
    try:
        # a rollback-mode file is inspected before the pragmas, so a refused one stays byte-identical;
        # a WAL-mode file after them: reading it first would keep its -wal open while processes
        # arriving together take turns leaving WAL mode
        if not header.wal_mode:
            inspect(conn, path)
        pragmas.apply(conn, path, options)
        if header.wal_mode:
            inspect(conn, path)
        initialise(conn, path, options)
    except BaseException:
        conn.close()  # rolls back whatever initialise left open
        raise
    return conn


def open_taking_turns(
    path: Path,
    options: Options,
    initialise: Initialiser,
    sleep: Sleep,
    lock: MoveLock,
    inspect: Inspector = _no_inspection,
) -> sqlite3.Connection:
    """Step 3: :func:`open_once`, tried again while another process keeps the database in WAL mode.

    Processes opening a WAL database at the same moment refuse each other.
    Each closes its connection (``open_once`` does), waits a random short
    while and tries again, up to ``busy_timeout`` of waiting in all: the first
    back alone folds the ``-wal`` in, the others then find a TRUNCATE
    database.  A process that keeps the file open longer gets
    :class:`JournalModeBusyError`.
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
    return retrying(open_once, path, options, initialise, sleep, lock, inspect)


def open_retrying(
    path: Path,
    options: Options,
    initialise: Initialiser,
    sleep: Sleep,
    lock: MoveLock,
    inspect: Inspector = _no_inspection,
) -> sqlite3.Connection:
    """Step 4: :func:`open_taking_turns`, once more after an I/O error, with a ``-wal`` folded in first."""

    def fold_before_retry(state: RetryCallState) -> None:
        try:
            aside.fold_wal(path, options.busy_timeout, lock)
        except DatabaseBusyError as busy:  # keep the I/O error that started it as the cause
            raise busy from (state.outcome.exception() if state.outcome else None)

    retrying = Retrying(
        stop=stop_after_attempt(2),
        retry=retry_if_exception(codes.is_io_open_error),
        wait=wait_none(),
        before_sleep=fold_before_retry,
        sleep=sleep,
        reraise=True,
    )
    return retrying(open_taking_turns, path, options, initialise, sleep, lock, inspect)


def _identity(path: Path) -> tuple[int, int] | None:
    """``path``'s (device, inode), or None: tells a file replaced meanwhile from the one that failed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def keep_damaged_aside(
    path: Path,
    options: Options,
    check: aside.Check,
    err: BaseException,
    sleep: Sleep,
    lock: MoveLock,
    failed: tuple[int, int] | None = None,
) -> None:
    """Step 5: quarantine the damaged file with its side files, or refuse with ``on_corrupt="raise"``.

    Only damage that ``quick_check`` confirmed moves a file: when the check
    could not run (inconclusive), the open fails with
    :class:`CorruptDatabaseError` saying so, and nothing is moved.
    """
    if check.damage is None:
        raise CorruptDatabaseError(unconfirmed_message(path, err, check), path=path) from err
    if options.on_corrupt == "raise":
        raise CorruptDatabaseError(
            f"{path} is corrupt ({check.damage}); nothing was changed because on_corrupt='raise'. "
            "Restore it from a backup, or open it with on_corrupt='quarantine' to keep it "
            "aside and start a fresh database.",
            path=path,
        ) from err
    with lock(path.parent, options.busy_timeout, sleep):
        # checked again under the lock: another process may have kept it aside meanwhile (and may be
        # building the new file now, which a check would find busy: it is not the one that failed)
        same = failed is None or _identity(path) == failed
        still = aside.quick_check(path, options.busy_timeout) if same and path.exists() else aside.Check()
        if still.inconclusive is not None:
            raise CorruptDatabaseError(unconfirmed_message(path, err, still), path=path) from err
        moved = aside.quarantine(path) if still.damage is not None else None
    if moved is None:
        log.info("%s was kept aside by another process meanwhile; opening the new file", path)
    else:
        log.error("%s is corrupt (%s): kept as %s; building a fresh database", path, check.damage, moved)


def unconfirmed_message(path: Path, err: BaseException, check: aside.Check) -> str:
    """What to say when SQLite reported damage that ``quick_check`` could neither confirm nor rule out."""
    return (
        f"{path}: SQLite reported damage ({err}), but {check}, so the file was neither kept aside "
        "nor changed. Retry once other processes are done with it; `tinycortex-sa recover` keeps "
        "it aside (with --force if its check stays inconclusive)."
    )
