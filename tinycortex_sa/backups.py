"""A consistent copy of a chunk DB, taken while other processes keep writing it: :func:`backup`.

SQLite's online backup API (``sqlite3.Connection.backup``) copies the file
page by page from a separate read-only connection, :data:`STEP_PAGES` pages
per step, holding the read lock for one step at a time; nothing is created or
migrated at the source.  A commit by another connection between two steps
makes SQLite restart the copy from the first page, so each restart here makes
the steps :data:`GROWTH` times larger: a file that is written all the time is
still copied, in the end in one step (docs/recovery.md#backup-and-restore
compares this with ``VACUUM INTO``).

The copy is written to ``DEST.partial-<pid>`` (created ``0600`` with
``O_EXCL`` beside DEST), checked (``PRAGMA quick_check``, the chunk DB's
tables, rollback-journal mode, no side file), fsynced, then linked to DEST by
:func:`~tinycortex_sa.sqlite.files.rename_keeping`, which never replaces a
file.  On any failure the partial copy is removed.
"""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import options as opts
from .connection.registry import Workspace, db_path_for
from .errors import (
    BackupError,
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseNotFoundError,
    KeptFileExistsError,
    NotAFileError,
    OpenError,
    OptionError,
    TinyCortexError,
)
from .schema.version import CHUNK_TABLES
from .sqlite import codes, driver, files

log = logging.getLogger("tinycortex_sa")

#: Pages per step of the online backup (4 MiB of 4 KiB pages): about the longest a writer waits.
STEP_PAGES = 1024
#: How many times larger the steps get each time another process's commit restarts the copy.
GROWTH = 4

#: ``progress(copied, total)``: pages copied so far and pages in the source, after each step.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackupResult:
    """What :func:`backup` wrote."""

    source: Path
    """The chunk DB that was copied."""
    dest: Path
    """The backup file."""
    bytes: int
    """Its size."""
    pages: int
    """Its page count."""
    seconds: float
    """How long the backup took, checks included."""
    quick_check: str
    """What ``PRAGMA quick_check`` said about the copy (always ``ok``: anything else is an error)."""


@dataclass(frozen=True)
class _Job:
    """One backup: what it reads and where it writes, for its steps and their error messages."""

    source: Path
    target: Path
    ws: str
    """The workspace as the caller spelled it, quoted for a shell (in the fixes the errors name)."""
    busy_timeout: int

    def refused(self, message: str) -> BackupError:
        return BackupError(message, source=self.source, dest=self.target)


def backup(
    workspace: Workspace,
    dest: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    **options: Any,
) -> BackupResult:
    """Copy ``<workspace>/memory_tree/chunks.db`` to the new file ``dest``, consistently, while others write.

    ``dest`` may be an existing directory: the file is then
    ``dest/chunks-<UTC time>.db``.  An existing file is never overwritten.
    ``progress(copied, total)`` is called after each step (``copied`` goes
    back when another process's commit restarts the copy).  The one option is
    ``busy_timeout``: how long each step waits for another process's write
    lock (default 15000 ms).

    Raises :class:`~tinycortex_sa.errors.DatabaseNotFoundError` (no database:
    nothing is created), :class:`~tinycortex_sa.errors.BackupError` (DEST
    exists or cannot be written, the copy failed its check), and for a source
    that cannot be read :class:`~tinycortex_sa.errors.DatabaseBusyError`,
    :class:`~tinycortex_sa.errors.CorruptDatabaseError` or
    :class:`~tinycortex_sa.errors.OpenError`; an exception raised by
    ``progress`` propagates as it is.  Whatever fails, nothing is left under
    DEST's name.
    """
    started = time.monotonic()
    busy_timeout = _busy_timeout(options)
    source = db_path_for(workspace).absolute()
    _check_source_file(source, workspace)
    target, named = _target(Path(dest).absolute(), source)
    job = _Job(source, target, shlex.quote(os.fspath(workspace)), busy_timeout)
    src = _connect(job, source, "ro")
    try:
        _check_tables(job, _tables(job, src), "it")
        partial = _create_partial(job)
        try:
            pages, check = _copy_into(job, src, partial, progress)
            final = _publish(job, partial, named)
        except BaseException as err:
            if not _remove_partial(partial):
                err.add_note(f"the partial copy {partial} could not be removed: delete it")
            raise
    finally:
        src.close()
    return BackupResult(source, final, final.stat().st_size, pages, time.monotonic() - started, check)


def _busy_timeout(options: dict[str, Any]) -> int:
    unknown = sorted(set(options) - {"busy_timeout"})
    if unknown:
        raise OptionError(f"backup() takes one option, busy_timeout; got {', '.join(map(repr, unknown))}")
    return int(opts.parse(options).get("busy_timeout", opts.DEFAULTS.busy_timeout))


def _check_source_file(source: Path, workspace: Workspace) -> None:
    what = files.not_regular(source)
    if what is not None:
        raise NotAFileError(
            f"{source} is {what}, not a database file; nothing was read or written", path=source
        )
    if not source.is_file():
        where = "" if Path(workspace).is_dir() else f" ({os.fspath(workspace)} does not exist)"
        raise DatabaseNotFoundError(
            f"no database at {source}{where}: nothing to back up, and nothing was created. "
            "Check the workspace path (the directory holding memory_tree/chunks.db)",
            path=source,
        )


def _target(dest: Path, source: Path) -> tuple[Path, bool]:
    """The backup's file name, and whether it was chosen here (DEST is a directory)."""
    if dest.is_dir():
        return dest / f"chunks-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.db", True
    if os.path.lexists(dest):
        raise BackupError(_exists(dest), source=source, dest=dest)
    return dest, False


def _exists(dest: Path, when: str = "") -> str:
    return (
        f"{dest} already exists{when}: it was not overwritten, and no backup was made. Give a new file "
        "name, or a directory (the backup is then named chunks-<UTC time>.db in it)"
    )


def _connect(job: _Job, path: Path, mode: str) -> sqlite3.Connection:
    try:
        return driver.open_uri(path, mode, job.busy_timeout)
    except sqlite3.Error as err:
        raise _failed(job, err, path) from err


def _failed(job: _Job, err: sqlite3.Error, partial: Path | None = None) -> TinyCortexError:
    """The typed error for SQLite's ``err`` while reading the source or writing ``partial``."""
    source, ws = job.source, job.ws
    if codes.is_readonly_rollback(err):
        return OpenError(
            f"{source}-journal is a hot journal: an interrupted transaction must be rolled back before "
            f"the file can be copied. Open the workspace read-write once (any application, or "
            f"`tinycortex-sa upgrade {ws}`) and retry; never delete the -journal. No backup was made",
            path=source,
        )
    if codes.is_busy(err):
        return DatabaseBusyError(
            f"another process held a lock on {source} for longer than busy_timeout={job.busy_timeout}ms "
            f"({err}). No backup was made; retry when it is done, or give a longer busy_timeout",
            path=source,
        )
    if codes.is_corruption(err):
        return CorruptDatabaseError(
            f"{source} cannot be read: {err}. No backup was made; run `tinycortex-sa doctor {ws}`, "
            f"and `tinycortex-sa recover {ws}` if it is damaged",
            path=source,
        )
    if partial is None:
        return OpenError(
            f"cannot read {source}: {err}. No backup was made; check that it is a chunk DB this user "
            "may read",
            path=source,
        )
    why = (
        "the disk is full or a file-size limit was reached"
        if codes.is_write_failure(err)
        else "SQLite failed"
    )
    return job.refused(
        f"copying {source} into {partial} failed: {why} ({err}). The partial copy was removed and "
        f"nothing was written at {job.target}"
    )


def _tables(job: _Job, conn: sqlite3.Connection, partial: Path | None = None) -> set[str]:
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as err:
        raise _failed(job, err, partial) from err
    return {str(row[0]) for row in rows}


def _check_tables(job: _Job, tables: set[str], what: str) -> None:
    missing = CHUNK_TABLES - tables
    if missing:
        raise job.refused(
            f"{job.source} is not a complete chunk DB: {what} lacks the table(s) "
            f"{', '.join(sorted(missing))}. No backup was made at {job.target}; check the workspace "
            f"path, or run `tinycortex-sa doctor {job.ws}`"
        )


def _create_partial(job: _Job) -> Path:
    """Create ``<target>.partial-<pid>`` (0600, ``O_EXCL``): from here on the file is ours to remove."""
    partial = job.target.with_name(f"{job.target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise job.refused(
            f"{partial} already exists (an interrupted backup left it?): it was not touched, and no backup "
            "was made. Delete it if no backup is running, and retry"
        ) from None
    except OSError as err:
        fix = {
            "FileNotFoundError": "create the directory first",
            "PermissionError": "give a directory this user may write, or run as its owner",
        }.get(type(err).__name__, "give another directory")
        raise job.refused(
            f"cannot create the backup in {job.target.parent}: {err.strerror or err}. Nothing was "
            f"written; {fix}"
        ) from err
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
    finally:
        os.close(fd)
    return partial


def _copy_into(
    job: _Job, src: sqlite3.Connection, partial: Path, progress: Progress | None
) -> tuple[int, str]:
    """Copy the source into ``partial``, check the copy and fsync it; return its page count and check."""
    dst = _connect(job, partial, "rw")
    try:
        _copy_pages(job, src, dst, partial, progress)
        try:
            # a header saying WAL (a source an older release left in WAL mode) goes back to rollback mode
            mode = str(dst.execute("PRAGMA journal_mode = DELETE").fetchone()[0]).lower()
            check = str(dst.execute("PRAGMA quick_check(1)").fetchone()[0])
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        except sqlite3.Error as err:
            raise _failed(job, err, partial) from err
        if check != "ok":
            raise job.refused(
                f"the copy of {job.source} failed PRAGMA quick_check ({' '.join(check.split())}), so it "
                f"was removed and nothing was written at {job.target}: the source is probably damaged; "
                f"run `tinycortex-sa doctor {job.ws}`"
            )
        _check_tables(job, _tables(job, dst, partial), "its copy")
    finally:
        dst.close()
    sides = files.side_files(partial)
    if mode != "delete" or files.read_header(partial).wal_mode or sides:
        raise job.refused(
            f"the copy of {job.source} is not a stand-alone rollback-journal file (journal_mode {mode}, "
            f"side files {[p.name for p in sides]}), so it was removed and nothing was written at "
            f"{job.target}"
        )
    try:
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise job.refused(
            f"writing the copy {partial} to disk failed: {err.strerror or err}. It was removed and "
            f"nothing was written at {job.target}"
        ) from err
    return pages, check


class _Restarted(Exception):
    """Another process's commit restarted a copy in steps: copy again with larger steps."""


class _Busy(Exception):
    """A step waited ``busy_timeout`` for another process's lock and did not get it."""


class _CallerFailed(Exception):
    """The caller's progress callback raised (:attr:`_Steps.caller_error`)."""


class _Steps:
    """The backup's progress callback: reports pages to the caller, notices restarts and lock timeouts."""

    def __init__(self, pages: int, report: Progress | None) -> None:
        self.pages = pages
        self.report = report
        self.copied = 0
        self.total = 0
        self.caller_error: Exception | None = None

    def __call__(self, status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise _Busy(status)  # SQLite's busy handler already waited busy_timeout
        copied = total - remaining
        restarted = 0 < copied <= self.copied and remaining > 0
        self.copied, self.total = copied, total
        if self.report is not None:
            try:
                self.report(copied, total)
            except Exception as err:
                self.caller_error = err
                raise _CallerFailed from None
        if restarted and self.pages > 0:
            raise _Restarted


def _copy_pages(
    job: _Job, src: sqlite3.Connection, dst: sqlite3.Connection, partial: Path, report: Progress | None
) -> None:
    """The online backup in steps of :data:`STEP_PAGES`, larger after each restart, at last in one step.

    Raises a typed error, or what the caller's ``report`` raised, unchanged.
    """
    pages = STEP_PAGES
    while True:
        steps = _Steps(pages, report)
        try:
            dst.execute("PRAGMA journal_mode = DELETE")  # the copy's own journal leaves nothing behind
            src.backup(dst, pages=pages, progress=steps, sleep=0)
            return
        except _Restarted:
            # nothing copied is lost: a restart begins again at the first page anyway
            pages = -1 if steps.total <= pages * GROWTH else pages * GROWTH
            continue
        except _CallerFailed:
            pass
        except _Busy as busy:
            raise DatabaseBusyError(
                f"another process held the write lock on {job.source} for longer than busy_timeout="
                f"{job.busy_timeout}ms during the copy (SQLite code {busy.args[0]}). No backup was made; "
                "retry when it is done, or give a longer busy_timeout",
                path=job.source,
            ) from None
        except sqlite3.Error as err:
            raise _failed(job, err, partial) from err
        assert steps.caller_error is not None
        raise steps.caller_error  # outside the handler: the caller's exception as it was raised


def _publish(job: _Job, partial: Path, named: bool) -> Path:
    """Give the checked copy its name, never over an existing file; return the name."""
    final, n = job.target, 1
    while True:
        try:
            files.rename_keeping(partial, final)
            break
        except KeptFileExistsError:
            if not named:
                raise job.refused(_exists(final, " (it was created while the backup ran)")) from None
            n += 1  # two backups into one directory within a second
            final = job.target.with_name(f"{job.target.stem}-{n}{job.target.suffix}")
        except OSError as err:
            raise BackupError(
                f"naming the copy {final} failed: {err.strerror or err}. It was removed and nothing was "
                f"written at {final}",
                source=job.source,
                dest=final,
            ) from err
    try:
        files.fsync_dir(final.parent)
    except OSError as err:  # the file is complete and fsynced: only its new name may not be durable yet
        log.warning(
            "backup %s: syncing its directory failed (%s); run `sync` before relying on it", final, err
        )
    return final


def _remove_partial(partial: Path) -> bool:
    """Remove the partial copy and any side file its connection left; False if one could not be."""
    removed = True
    for path in (partial, *(files.side_file(partial, s) for s in files.SIDE_SUFFIXES)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            removed = False
    return removed
