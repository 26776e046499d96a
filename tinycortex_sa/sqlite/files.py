"""The database file and its side files as files: header, names, URIs, moves, locks, creation.

The library creates, renames or replaces only regular files it owns, and a
rename here never replaces an existing file (:func:`rename_keeping`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatabaseBusyError, KeptFileExistsError

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
#: The side files SQLite may keep beside a database, in the order they are moved.
SIDE_SUFFIXES = ("-journal", "-wal", "-shm")
#: Header byte 19, the *read* version: 2 means the database is in WAL mode, 1 a rollback journal.
#: It is the byte SQLite itself tests when it opens a file (``lockBtree`` in btree.c); byte 18,
#: the write version, is set with it by ``PRAGMA journal_mode`` but not consulted for the mode.
READ_VERSION_OFFSET = 19
WAL_READ_VERSION = 2


@dataclass(frozen=True)
class Header:
    """The first bytes of a file, as far as the library needs them."""

    data: bytes

    @property
    def empty(self) -> bool:
        return not self.data

    @property
    def is_sqlite(self) -> bool:
        """A complete SQLite header (the magic string and all 100 bytes)."""
        return len(self.data) >= HEADER_SIZE and self.data.startswith(SQLITE_MAGIC)

    @property
    def wal_mode(self) -> bool:
        """The header says WAL mode (SQLite's own test: the read version is 2)."""
        return self.is_sqlite and self.data[READ_VERSION_OFFSET] == WAL_READ_VERSION

    @property
    def problem(self) -> str | None:
        """What the first bytes already show is wrong (not a SQLite file), or None (also when empty)."""
        if self.data and self.data[: len(SQLITE_MAGIC)] != SQLITE_MAGIC:
            return "file is not a database"  # SQLite's own words for SQLITE_NOTADB
        return None


def not_regular(path: Path) -> str | None:
    """What stands at ``path`` if it is not a regular file (symbolic links followed), else None.

    None also when nothing is there.  Looked at with ``stat`` only: a FIFO is
    never opened (that would block), a device never read.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"a path that cannot be followed ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def dangling_link(path: str) -> tuple[str, str] | None:
    """The first symbolic link on the way to ``path`` (absolute) whose target is missing, with it.

    ``(link, target)``, or None.  Following such a link would create the
    database (or its directory) wherever the link points.
    """
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        step = os.path.join(*parts[:i])
        if not os.path.islink(step):
            continue
        try:
            os.stat(step)
        except FileNotFoundError:
            return step, os.readlink(step)
        except OSError:
            return None  # a loop, or no permission: not_regular() names it at the open
    return None


def read_header(path: Path) -> Header:
    """The header of ``path``; empty if the file is missing, unreadable or a directory."""
    try:
        with open(path, "rb") as f:
            return Header(f.read(HEADER_SIZE))
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError):
        return Header(b"")


def side_file(path: Path, suffix: str) -> Path:
    """``chunks.db`` + ``-wal`` -> ``chunks.db-wal``."""
    return path.with_name(path.name + suffix)


def side_files(path: Path) -> list[Path]:
    """The side files SQLite may have left beside ``path`` (existing ones only)."""
    return [p for p in (side_file(path, s) for s in SIDE_SUFFIXES) if p.exists()]


def free_name(path: Path, tag: str) -> Path:
    """``<name>.<tag>``, or ``<name>.<tag>-2``, ...: the first name under which neither ``path``'s
    name nor any of its side-file names is taken, by anything (``lexists``: a dangling
    symbolic link takes a name too)."""
    n = 1
    while True:
        target = path.with_name(f"{path.name}.{tag}" + ("" if n == 1 else f"-{n}"))
        if not any(os.path.lexists(p) for p in (target, *(side_file(target, s) for s in SIDE_SUFFIXES))):
            return target
        n += 1


def move_group(moves: list[tuple[Path, Path]]) -> None:
    """Rename each ``(src, dst)`` with :func:`rename_keeping`, in order, all or none.

    If one rename fails, the ones already done are renamed back (in reverse
    order) before the error propagates, so a database is never split from its
    journal.  A rename back that fails too is added to the error's notes with
    both names: nothing is deleted either way.
    """
    done: list[tuple[Path, Path]] = []
    try:
        for src, dst in moves:
            rename_keeping(src, dst)
            done.append((src, dst))
    except BaseException as err:
        for src, dst in reversed(done):
            try:
                rename_keeping(dst, src)
            except OSError as back:
                err.add_note(f"{src} is kept as {dst}: moving it back failed too ({back})")
        raise


def file_uri(path: Path, mode: str) -> str:
    """A SQLite ``file:`` URI for ``path`` with ``?mode=`` (the path's bytes, so any name works).

    An absolute path gets an empty authority (``file:///...``), so that one
    spelled with a leading ``//`` is not read as a host name.
    """
    prefix = "file://" if path.is_absolute() else "file:"
    return f"{prefix}{urllib.parse.quote(os.fsencode(path))}?mode={mode}"


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
        raise KeptFileExistsError(str(dst)) from err
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(dst):
            raise KeptFileExistsError(str(dst)) from err
        os.rename(src, dst)
        return
    os.unlink(src)


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: How often a process waiting for a lock looks again, in seconds.
LOCK_POLL = 0.005

#: SQLite's lock bytes (os_unix.c): PENDING, then RESERVED, then the 510-byte SHARED range.
SQLITE_PENDING_BYTE = 0x40000000
SQLITE_LOCK_BYTES = 2 + 510


def _sqlite_lock_request(kind: int) -> bytes:
    """A ``struct flock`` over SQLite's lock bytes (l_type, l_whence, l_start, l_len, l_pid = 0)."""
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, SQLITE_PENDING_BYTE, SQLITE_LOCK_BYTES, 0)


@contextlib.contextmanager
def sqlite_exclusive_lock(
    path: Path, busy_timeout_ms: int, sleep: Callable[[float], None] = time.sleep
) -> Iterator[None]:
    """Hold what SQLite's EXCLUSIVE lock holds on ``path``, without SQLite opening the file.

    An open by SQLite would read the database and roll back (and delete) a
    ``-journal`` beside it; taking the same byte-range locks directly never
    reads a byte.  Any process in a transaction on the file (SQLite's locks
    are POSIX record locks) keeps this from being granted, and while it is
    held their next transaction waits (SQLITE_BUSY).  Open-file-description
    locks where the platform has them, so closing another descriptor of the
    file in this process does not drop the lock.  Waited for up to
    ``busy_timeout``, then :class:`DatabaseBusyError`.
    """
    command = getattr(fcntl, "F_OFD_SETLK", fcntl.F_SETLK)
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        waited = 0.0
        while True:
            try:
                fcntl.fcntl(fd, command, _sqlite_lock_request(fcntl.F_WRLCK))
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if waited >= busy_timeout_ms / 1000:
                    raise DatabaseBusyError(
                        f"another process is using {path} (it held a lock for longer than "
                        f"busy_timeout={busy_timeout_ms}ms); stop the applications using the workspace "
                        "and retry. Nothing was moved",
                        path=path,
                    ) from None
                sleep(LOCK_POLL)
                waited += LOCK_POLL
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def lock_directory(
    directory: Path, busy_timeout_ms: int, sleep: Callable[[float], None] = time.sleep
) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``directory`` itself (no lock file); yield its descriptor.

    Waited for up to ``busy_timeout``, then :class:`DatabaseBusyError`.  The
    lock belongs to the open file description, which a forked child shares:
    :func:`tinycortex_sa.connection.registry.move_lock` tracks the descriptor
    so that a child closes its copy at once.
    """
    fd = os.open(directory, os.O_RDONLY)
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
                sleep(LOCK_POLL)
                waited += LOCK_POLL
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _writable(path: Path, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)  # pragma: no cover - platforms without effective-id access()


def prepare(path: Path) -> None:
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
            return  # SQLite's own refusal is explained by messages.explain
        if _writable(path, os.R_OK | os.W_OK):
            break
        if os.path.lexists(path):
            raise PermissionError(
                errno.EACCES, "this user may not read and write the database file", str(path)
            )
    else:
        raise FileNotFoundError(errno.ENOENT, "the database file keeps disappearing", str(path))
    journal = side_file(path, "-journal")
    if not (journal.exists() and _writable(journal, os.W_OK)) and not _writable(
        path.parent, os.W_OK | os.X_OK
    ):
        raise PermissionError(
            errno.EACCES, "this user may not create SQLite's -journal in the directory", str(path.parent)
        )
