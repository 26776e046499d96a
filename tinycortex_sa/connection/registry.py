"""The only module that holds process-wide state, and the fork and exit hooks that keep it true.

What lives here, and nowhere else:

* the handles: one :class:`~.handle.FileHandle` per database file, found by
  any spelling of its path (``realpath`` once per spelling) or workspace;
* the descriptors of the directory locks held while files are moved aside
  (a ``flock`` belongs to the open file, which a forked child shares, so the
  child closes its copies at once);
* the lock around Alembic runs (Alembic's ``op`` and ``context`` are
  module-level proxies, so two threads must not run revisions at once, even
  on different files);
* per context (a ``ContextVar``, so per thread and per task): whether the
  automatic upgrade is switched off for opens in this block
  (:func:`external_migration`).

Lock order (take them in this order, never the other way):

1. the handle's lock (:meth:`FileHandle.checkout`), held for a checkout;
2. SQLite's write lock (``BEGIN IMMEDIATE``), inside a checkout;
3. :data:`_alembic_lock`, around nothing but an Alembic run, inside ``BEGIN IMMEDIATE``;
4. the directory ``flock`` (:func:`move_lock`), around moving files aside; during an open
   it is taken inside the handle's lock and before the connection exists.

The handle's small options lock and the breaker's lock guard memory only and
are never held while another is taken.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import NotAFileError, OptionError
from ..options import Options
from ..schema import upgrade
from ..sqlite import files, opening
from .handle import FileHandle

Workspace = str | os.PathLike[str]

_handles: dict[str, FileHandle] = {}
_aliases: dict[str, FileHandle] = {}
_by_workspace: dict[str, FileHandle] = {}
_registry_lock = threading.Lock()
_held_dir_locks: set[int] = set()
_held_dir_locks_lock = threading.Lock()
_alembic_lock = threading.Lock()
_fork_quiesced: list[FileHandle] = []
_external: contextvars.ContextVar[bool] = contextvars.ContextVar("tinycortex_sa_external", default=False)

FORK_GRACE = 0.25
"""Seconds a fork always waits for another thread to check a file's connection in."""


def db_path_for(workspace: Workspace) -> Path:
    """The chunk DB of ``workspace``: ``<workspace>/memory_tree/chunks.db``."""
    return Path(workspace) / "memory_tree" / "chunks.db"


# -- handles -----------------------------------------------------------------------------------


def _check_spelling(key: str) -> None:
    """Refuse a path that cannot name a chunk DB file, before anything is created for it."""
    if "\0" in key:
        raise OptionError(f"the database path {key!r} contains a NUL byte, which no file name can hold")
    if key.endswith(os.sep) or os.path.basename(key) in (".", ".."):
        raise OptionError(
            f"the database path {key!r} names a directory: give the database file, e.g. "
            f"{os.path.join(key, 'chunks.db')!r} (sqlite+tinycortex:////abs/workspace/memory_tree/chunks.db)"
        )
    dangling = files.dangling_link(key)
    if dangling is not None:
        link, target = dangling
        raise NotAFileError(
            f"cannot open {key}: {link} is a symbolic link to {target}, which does not exist, and "
            "opening it would create the database there. Nothing was created; fix or remove the link.",
            path=Path(key),
        )


def handle_for(db_path: str | os.PathLike[str], explicit: Mapping[str, Any] | None = None) -> FileHandle:
    """The handle of the file at ``db_path`` (any spelling), fixing its options on first use.

    Spellings are resolved (``realpath``) once per process and remembered.
    A spelling that cannot name a file (a NUL byte, a trailing slash) is an
    :class:`OptionError`, and one through a dangling symbolic link a
    :class:`NotAFileError`, before anything is created.
    """
    key = os.fspath(db_path)
    if not os.path.isabs(key):
        key = os.path.join(os.getcwd(), key)
    handle = _aliases.get(key)
    if handle is None:
        _check_spelling(key)
        with _registry_lock:
            canonical = os.path.realpath(key)
            handle = _handles.get(canonical)
            if handle is None:
                handle = _handles[canonical] = FileHandle(Path(canonical), open_file)
            _aliases[key] = handle
    handle.ensure_options(explicit or {})
    return handle


def handle_for_workspace(workspace: Workspace, explicit: Mapping[str, Any]) -> FileHandle:
    """:func:`handle_for` the workspace's chunk DB, with absolute workspace spellings cached."""
    key = os.fspath(workspace)
    handle = _by_workspace.get(key)  # only absolute spellings are ever stored
    if handle is None:
        handle = handle_for(db_path_for(workspace), explicit)
        if os.path.isabs(key):
            _by_workspace[key] = handle
    else:
        handle.ensure_options(explicit)
    return handle


def existing_handle(db_path: str | os.PathLike[str]) -> FileHandle | None:
    """The handle for ``db_path`` if this process has one, without creating it."""
    key = os.fspath(db_path)
    if "\0" in key:
        return None  # no file has that name (handle_for says so)
    key = os.path.realpath(os.path.abspath(key))
    return _handles.get(key)


def forget_unused(db_path: str | os.PathLike[str]) -> None:
    """Forget the handle of ``db_path`` if nothing uses it (an engine refused while it was made)."""
    key = os.path.realpath(os.path.abspath(os.fspath(db_path)))
    with _registry_lock:
        handle = _handles.get(key)
        if handle is None or handle.held or handle.conn is not None or handle.has_users:
            return
        del _handles[key]
        for alias in [a for a, h in _aliases.items() if h is handle]:
            del _aliases[alias]
        for ws in [w for w, h in _by_workspace.items() if h is handle]:
            del _by_workspace[ws]


def close_all() -> None:
    """Close every handle's connection and forget every handle (tests start each case clean)."""
    for handle in list(_handles.values()):
        handle.abandon()
    with _registry_lock:
        _handles.clear()
        _aliases.clear()
        _by_workspace.clear()


# -- opening -----------------------------------------------------------------------------------


def open_file(path: Path, options: Options, verify: bool) -> sqlite3.Connection:
    """The handles' opener: the open sequence with this process's locks and the schema upgrade."""
    return opening.open_initialised(
        path, options, initialise, verify=verify, lock=move_lock, inspect=upgrade.refuse_foreign
    )


def initialise(conn: sqlite3.Connection, path: Path, options: Options) -> None:
    """Bring a newly opened connection's schema to head (:func:`tinycortex_sa.schema.upgrade.initialise`).

    Nothing inside :func:`external_migration`.
    """
    if not _external.get():
        upgrade.initialise(conn, path, options, alembic_lock=_alembic_lock)


@contextlib.contextmanager
def external_migration() -> Iterator[None]:
    """Within this block (this thread or task), opening a file runs no automatic upgrade.

    ``migrations/env.py`` uses it while it opens the database it is about to
    migrate (or inspect: ``alembic current`` must not upgrade), and tests use
    it to start from an empty file.
    """
    token = _external.set(True)
    try:
        yield
    finally:
        _external.reset(token)


@contextlib.contextmanager
def move_lock(
    directory: Path, busy_timeout_ms: int, sleep: Callable[[float], None] = time.sleep
) -> Iterator[None]:
    """:func:`tinycortex_sa.sqlite.files.lock_directory`, with its descriptor known to the fork hook."""
    with files.lock_directory(directory, busy_timeout_ms, sleep) as fd:
        with _held_dir_locks_lock:
            _held_dir_locks.add(fd)
        try:
            yield
        finally:
            with _held_dir_locks_lock:
                _held_dir_locks.discard(fd)


# -- fork and exit -----------------------------------------------------------------------------


def _before_fork() -> None:
    for handle in list(_handles.values()):
        if handle.quiesce_for_fork(FORK_GRACE):
            _fork_quiesced.append(handle)
    _held_dir_locks_lock.acquire()  # last (held only for a set update); released on both sides


def _after_fork_in_parent() -> None:
    _held_dir_locks_lock.release()
    while _fork_quiesced:
        _fork_quiesced.pop().resume_after_fork()


def _after_fork_in_child() -> None:
    global _registry_lock, _alembic_lock, _held_dir_locks_lock
    _registry_lock = threading.Lock()
    _alembic_lock = threading.Lock()  # a parent thread may have been migrating
    # closing, unlike LOCK_UN, leaves the parent's flock alone; the child's copy would keep it held
    for fd in _held_dir_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_dir_locks.clear()
    _held_dir_locks_lock = threading.Lock()
    _fork_quiesced.clear()  # the child's handles get new locks
    for handle in _handles.values():
        handle.after_fork_in_child()


def _close_all_at_exit() -> None:
    for handle in list(_handles.values()):
        handle.close_at_exit()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
atexit.register(_close_all_at_exit)
