"""Keeping files aside: a stale ``-wal``, a damaged database with its side files; and checking for damage.

Nothing here deletes a file or replaces one (:func:`~.files.rename_keeping`).
Moves happen under a directory lock (``lock``, by default
:func:`~.files.lock_directory`) and are checked again under it, so of two
processes finding the same file, one moves it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import DatabaseBusyError, NotAFileError
from ..options import DEFAULTS
from . import codes, driver
from .files import (
    free_name,
    fsync_dir,
    lock_directory,
    move_group,
    not_regular,
    read_header,
    side_file,
    side_files,
)

log = logging.getLogger("tinycortex_sa")

#: ``lock(directory, busy_timeout_ms, sleep)``: the directory lock held while files are moved.
MoveLock = Callable[[Path, int, Callable[[float], None]], contextlib.AbstractContextManager[Any]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(clock: Clock) -> str:
    return clock().strftime("%Y%m%dT%H%M%SZ")


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
    try:
        if side_file(path, "-wal").stat().st_size == 0:
            return None
    except FileNotFoundError:
        return None
    header = read_header(path)
    if header.empty:
        return "the database file is missing or empty, and SQLite would delete the -wal"
    if not header.is_sqlite:
        return None  # not a database: the corruption path quarantines it with its side files
    if header.wal_mode:
        return None  # a WAL database: its -wal holds committed data, fold it in
    return (
        "the database header says rollback-journal mode: this -wal was not written for its current contents"
    )


def set_aside_stale_wal(
    path: Path,
    busy_timeout_ms: int = DEFAULTS.busy_timeout,
    sleep: Callable[[float], None] = time.sleep,
    lock: MoveLock = lock_directory,
    clock: Clock = utc_now,
) -> Path | None:
    """Keep a stale ``-wal`` (and its ``-shm``) aside as ``<name>-wal.stale-<UTC ts>``; return the new name.

    Nothing is deleted and the bytes and mode are kept.  The header is read
    again after the ``-wal`` was seen, so a database switching into WAL mode
    meanwhile (header first, then the ``-wal``) is left alone; and again under
    the lock, so of two processes finding it, one moves it.
    """
    if stale_wal_reason(path) is None:
        return None
    with lock(path.parent, busy_timeout_ms, sleep):
        reason = stale_wal_reason(path)
        if reason is None or stale_wal_reason(path) is None:
            return None
        stamp = _stamp(clock)
        wal, shm = side_file(path, "-wal"), side_file(path, "-shm")

        def kept(side: Path, n: int) -> Path:
            return side.with_name(f"{side.name}.stale-{stamp}" + ("" if n == 1 else f"-{n}"))

        n = 1
        while os.path.lexists(kept(wal, n)) or os.path.lexists(kept(shm, n)):
            n += 1
        target = kept(wal, n)
        # the -shm first; if the -wal's rename fails, the -shm is moved back
        move_group([(shm, kept(shm, n))] * shm.exists() + [(wal, target)])
        fsync_dir(path.parent)
    log.error(
        "%s: kept a stale -wal aside as %s (%s); opening the database as its file holds it",
        path,
        target,
        reason,
    )
    return target


def fold_wal(path: Path, busy_timeout_ms: int, lock: MoveLock = lock_directory) -> None:
    """Checkpoint a leftover ``-wal`` into the main file; never delete it.

    Raises :class:`DatabaseBusyError` when another process holds the database
    so that the checkpoint cannot complete.  A stale ``-wal`` (see
    :func:`stale_wal_reason`) is kept aside instead of being folded in.
    """
    wal = side_file(path, "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return
    if set_aside_stale_wal(path, busy_timeout_ms, lock=lock) is not None:
        return
    try:
        conn = driver.open_uri(path, "rw", busy_timeout_ms)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            mode = str(conn.execute("PRAGMA journal_mode = TRUNCATE").fetchone()[0]).lower()
        finally:
            conn.close()
    except sqlite3.Error as err:
        if codes.is_busy(err):
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


@dataclass(frozen=True)
class Check:
    """What ``PRAGMA quick_check`` said about a file: healthy, damaged, or inconclusive.

    Exactly one of three answers: ``damage`` (what is wrong) when the check
    found damage; ``inconclusive`` (why not) when it could not run, e.g.
    another process held a write lock, or a hot ``-journal`` must be rolled
    back first, which a read-only connection may not do; neither when the
    file passed.  Inconclusive is never taken for healthy, nor for damaged.
    """

    damage: str | None = None
    inconclusive: str | None = None

    @property
    def healthy(self) -> bool:
        return self.damage is None and self.inconclusive is None

    def __str__(self) -> str:
        if self.damage is not None:
            return f"quick_check found: {' '.join(self.damage.split())}"
        if self.inconclusive is not None:
            return f"quick_check could not run ({self.inconclusive})"
        return "passed quick_check"


def _why_inconclusive(err: sqlite3.Error) -> str:
    if codes.is_readonly_rollback(err):
        return (
            f"{err}: a -journal beside it holds an interrupted transaction, which a read-only "
            "check may not roll back"
        )
    if codes.is_busy(err):
        return f"{err}: another process holds a lock on it"
    return str(err)


def quick_check(path: Path, busy_timeout_ms: int) -> Check:
    """Run ``PRAGMA quick_check(1)`` on ``path`` and say what it found (:class:`Check`).

    The header is looked at first; then SQLite checks through a read-only
    connection, which changes nothing on disk (it neither rolls back nor
    deletes a ``-journal``).  An error other than damage makes the answer
    inconclusive, with the reason.
    """
    found = read_header(path).problem
    if found is not None:
        return Check(damage=found)
    try:
        conn = driver.open_uri(path, "ro", busy_timeout_ms)
        try:
            result = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as err:
        if codes.is_corruption(err):
            return Check(damage=str(err))
        return Check(inconclusive=_why_inconclusive(err))
    return Check() if result == "ok" else Check(damage=result)


def quarantine(path: Path, clock: Clock = utc_now) -> Path:
    """Rename ``path`` and its side files to ``<name>.corrupt-<UTC timestamp>``; return the new name.

    Side files move first so that a journal is never left beside a new,
    unrelated database (SQLite would roll it back into it).  The group moves
    under one name that is free for all of them, or not at all
    (:func:`~.files.move_group`).  Nothing is deleted and modes are kept (a
    rename does not touch them); no existing file is replaced.  Callers hold
    the directory lock and have checked the file again under it.
    """
    what = not_regular(path)
    if what is not None:
        raise NotAFileError(
            f"{path} is {what}: only regular files are ever kept aside; nothing was moved", path=path
        )
    target = free_name(path, f"corrupt-{_stamp(clock)}")
    sides = side_files(path)
    move_group([(side, side_file(target, side.name[len(path.name) :])) for side in sides] + [(path, target)])
    fsync_dir(path.parent)
    return target
