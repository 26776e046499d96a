"""What to tell the user: each failure as a typed error that names the file and the fix."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

from ..errors import DatabaseBusyError, DiskFullError, KeptFileExistsError, OpenError
from . import codes


def not_a_file_message(path: Path, what: str) -> str:
    """What to say when something other than a regular file stands at the database's path."""
    return (
        f"cannot open {path}: it is {what}, not a database file. Nothing was opened, moved or "
        "changed; move it away, or point the workspace at another directory."
    )


def busy_message(path: Path, busy_timeout_ms: int, err: BaseException) -> str:
    """What to say when another process held the file's lock past ``busy_timeout``."""
    return (
        f"{path}: another process held a lock for longer than busy_timeout={busy_timeout_ms}ms "
        f"({err}); retry when it is done, or raise busy_timeout."
    )


def moved_message(path: Path) -> str:
    """What to say when a write found the open file renamed or replaced."""
    return (
        f"{path} was renamed or replaced while this process had it open (another process quarantined "
        "it as corrupt, or it was restored from a backup). SQLite refused the write, so nothing went "
        "into the moved file; the next call opens the database now at that path."
    )


def read_only_message(path: Path) -> str:
    """What to say when a read-only engine's statement tried to write."""
    return (
        f"{path}: this engine is read-only (read_only=True): its transactions never take the write "
        "lock, and SQLite refused the write before changing anything. Write through an engine made "
        "without read_only."
    )


def full_message(path: Path, err: BaseException) -> str:
    """What to say when a write to ``path`` failed for lack of space (or a file-size limit)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limited = (
        ""
        if limit == resource.RLIM_INFINITY
        else f" (this process may write files of at most {limit} bytes: RLIMIT_FSIZE, `ulimit -f`)"
    )
    name = getattr(err, "sqlite_errorname", codes.code(err))
    return (
        f"cannot write {path}: {err} ({name}). The disk is full or a "
        f"file-size limit was reached{limited}: free space or raise the limit, then retry. SQLite rolled "
        "the transaction back; nothing was changed."
    )


#: ``errno`` values of a full file system: no space, no free inodes (also ENOSPC), a quota.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: ``errno`` values of a process or system out of file descriptors.
DESCRIPTOR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


def os_errno(err: BaseException) -> int | None:
    """The ``errno`` of the first :class:`OSError` in ``err``'s chain of causes, or None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def out_of_descriptors() -> bool:
    """Whether this process cannot open one more file now (SQLite's CANTOPEN does not say why)."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as err:
        return err.errno in DESCRIPTOR_ERRNOS
    return False


def descriptors_message(path: Path, err: BaseException) -> str:
    """What to say when the process ran out of file descriptors while opening ``path``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"cannot open {path}: this process has run out of file descriptors ({err}; its limit is {soft}: "
        "RLIMIT_NOFILE, `ulimit -n`). Close files or connections that are no longer used, or raise "
        "the limit, then retry; nothing was changed."
    )


def file_system_full_message(path: Path, err: BaseException) -> str:
    """What to say when creating or renaming a file next to ``path`` failed for lack of space."""
    return (
        f"cannot create or rename files in {path.parent}: {err}. The file system is full (no free "
        "space, or no free inodes: see `df -h` and `df -i`) or a quota was reached: free some, then "
        "retry. Nothing was changed."
    )


def open_error(path: Path, busy_timeout_ms: int, err: BaseException) -> OpenError:
    """The typed error for a failure to open or initialise ``path``."""
    number = os_errno(err)
    if number in DESCRIPTOR_ERRNOS or (codes.is_io_open_error(err) and out_of_descriptors()):
        return OpenError(descriptors_message(path, err), path=path)
    if number in FULL_ERRNOS:
        return DiskFullError(file_system_full_message(path, err), path=path)
    if codes.is_busy(err):
        return DatabaseBusyError(busy_message(path, busy_timeout_ms, err), path=path)
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
    if isinstance(err, PermissionError) or codes.is_permission(err):
        return OpenError(
            f"cannot write {path}: {err}. Check the owner and mode of the file and of {path.parent}.",
            path=path,
        )
    if codes.is_write_failure(err):
        return DiskFullError(full_message(path, err), path=path)
    return OpenError(
        f"cannot open or initialise {path}: {err}. Check that {path.parent} is a writable "
        "directory and that the file is a TinyCortex chunk DB.",
        path=path,
    )
