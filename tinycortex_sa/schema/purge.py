"""The retired summary folders of data migration 2: moved aside first, removed once the purge commits.

Revision ``0005_purge_retired_trees`` deletes the rows of the retired
``global``/``topic`` trees and the folders under
``<content root>/wiki/summaries`` named ``global*`` or ``topic-*``.  A folder
cannot be rolled back with a transaction, so the revision does not delete
them: :func:`move_aside` renames them, same names, into a new *batch* folder

    <content root>/wiki/.retired-summaries/0005-<UTC time>-<pid>/

and makes the renames durable, before the marker (``PRAGMA user_version = 2``)
commits.  :func:`settle` then finishes or undoes the move, by the marker the
database holds:

* ``user_version >= 2``: the purge committed, so every batch is removed
  (:func:`remove_aside`), and the holding folder with them;
* otherwise it did not: holding SQLite's write lock (``BEGIN IMMEDIATE``, the
  lock every migration holds, so that no other process is moving folders
  aside meanwhile), each batch's folders are renamed back into
  ``wiki/summaries``.  A name taken there meanwhile is never replaced: what
  could not go back stays in its batch, which is renamed into
  ``<content root>/wiki/.retired-summaries-kept/`` (never touched again by the
  library), and an error names both folders.

:func:`tinycortex_sa.schema.upgrade.initialise` calls :func:`settle` on every
first open of a file (one ``lstat`` when nothing is aside), and
:func:`settle_after_transaction` right after its upgrade transaction commits or
fails; ``migrations/env.py`` does the latter after a transaction of its own.
The end state is the on-disk contract's: no retired folder under
``wiki/summaries`` once the marker is 2, every folder where it was while it is not.

Only real directories directly under ``wiki/summaries`` are moved (never a
symbolic link, never followed), and only what a batch holds is ever removed.
The holding folder must be on the file system of ``wiki/summaries`` (a rename
does not cross file systems); otherwise the revision fails with the rename's
error, naming both paths, and nothing is removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ..sqlite.files import fsync_dir

log = logging.getLogger(__name__)

#: The holding folder under ``<content root>/wiki``: batches the library finishes or undoes itself.
ASIDE_DIR = ".retired-summaries"
#: Under ``<content root>/wiki``: batches holding folders that could not be moved back (names taken).
KEPT_DIR = ".retired-summaries-kept"
#: How a batch's name starts (the revision that makes it).
BATCH_PREFIX = "0005-"
#: What a retired folder's name starts with (``topical-notes`` is not one).
RETIRED_PREFIXES = ("global", "topic-")
#: The ``user_version`` the purge sets, in the transaction that deletes the rows.
PURGED = 2
#: ``config.attributes`` key revision 0005 sets to the batch it made, so that ``migrations/env.py``
#: settles after its own transaction only when this run moved something (never for ``alembic current``).
MOVED_KEY = "tinycortex_retired_batch"


def summaries_dir(content_root: Path) -> Path:
    """``<content root>/wiki/summaries``, where the retired folders are."""
    return content_root / "wiki" / "summaries"


def aside_dir(content_root: Path) -> Path:
    """``<content root>/wiki/.retired-summaries``, the holding folder of the batches."""
    return content_root / "wiki" / ASIDE_DIR


def kept_dir(content_root: Path) -> Path:
    """``<content root>/wiki/.retired-summaries-kept``, batches left for a person to look at."""
    return content_root / "wiki" / KEPT_DIR


def _is_real_dir(path: Path) -> bool:
    """A directory itself, not a symbolic link to one (``lstat``: never follows)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def retired_folders(content_root: Path) -> list[Path]:
    """Folders directly under ``wiki/summaries`` named ``global*`` or ``topic-*`` (not symlinks)."""
    summaries = summaries_dir(content_root)
    if not summaries.is_dir():
        return []
    return sorted(
        entry
        for entry in summaries.iterdir()
        if entry.name.startswith(RETIRED_PREFIXES) and _is_real_dir(entry)
    )


def _holding_folder(path: Path) -> None:
    """Create ``path`` (mode 0700) unless it is there; refuse anything there that is not a directory."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not _is_real_dir(path):
            raise FileExistsError(
                f"{path} exists and is not a directory (the library keeps retired summary folders "
                "there): move it away, then open the database again"
            ) from None
        return
    fsync_dir(path.parent)


def _new_batch(holding: Path) -> Path:
    """Create a batch folder no one else has (``mkdir`` fails on any existing name): never reused."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{BATCH_PREFIX}{stamp}-{os.getpid()}"
    n = 1
    while True:
        batch = holding / (base if n == 1 else f"{base}-{n}")
        try:
            batch.mkdir(mode=0o700)
        except FileExistsError:
            n += 1
            continue
        fsync_dir(holding)
        return batch


def move_aside(content_root: Path, folders: Sequence[Path]) -> Path | None:
    """Rename ``folders`` (directly under ``wiki/summaries``) into a new batch; return it (None if none).

    The renames are made durable (``fsync`` of both folders) before this
    returns, so a commit that follows never outlives them.  If one rename
    fails, those already done are renamed back before the error propagates
    (a rename back that fails is added to the error's notes, with both names).
    Something that is no longer a real directory when its turn comes is left
    where it is.
    """
    summaries = summaries_dir(content_root)
    chosen = [folder for folder in folders if folder.parent == summaries]
    if len(chosen) != len(folders):
        raise ValueError(f"only folders directly under {summaries} are moved aside")
    if not chosen:
        return None
    holding = aside_dir(content_root)
    _holding_folder(holding)
    batch = _new_batch(holding)
    moved: list[Path] = []
    try:
        for folder in chosen:
            if _is_real_dir(folder):  # checked again: replaced by a link since it was chosen, it stays
                os.rename(folder, batch / folder.name)  # a new, empty batch: no name in it is taken
                moved.append(folder)
        fsync_dir(summaries)
        fsync_dir(batch)
    except BaseException as err:
        for folder in reversed(moved):
            try:
                os.rename(batch / folder.name, folder)
            except OSError as back:
                err.add_note(f"{folder} is kept as {batch / folder.name}: moving it back failed ({back})")
        _remove_if_empty(batch)
        _remove_if_empty(holding)
        raise
    return batch


def remove_aside(batch: Path) -> None:
    """Remove one batch folder and everything in it (never following a symbolic link in it).

    Runs only once the purge committed; a module-level function, so that a
    test can replace it (for instance to kill the process between the commit
    and the removal).  Another process removing the same batch at the same
    time is no error.
    """
    try:
        shutil.rmtree(batch)
    except FileNotFoundError:
        if os.path.lexists(batch):  # another process removed part of it first
            shutil.rmtree(batch)


def _remove_if_empty(path: Path) -> None:
    """``rmdir`` ``path`` if it is an empty directory; anything else leaves it as it is."""
    try:
        path.rmdir()
    except OSError:
        return
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)


def _batches(holding: Path) -> tuple[list[Path], list[str]]:
    """The batch folders in ``holding``, and the names of anything else there (left alone)."""
    batches, others = [], []
    for entry in sorted(holding.iterdir()):
        if entry.name.startswith(BATCH_PREFIX) and _is_real_dir(entry):
            batches.append(entry)
        else:
            others.append(entry.name)
    return batches, others


def _marker(conn: sqlite3.Connection) -> int:
    """The database's ``PRAGMA user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _remove_batches(holding: Path, batches: list[Path]) -> None:
    """The purge committed: remove every batch (a failure is logged; the next open tries again)."""
    for batch in batches:
        try:
            remove_aside(batch)
        except OSError as err:
            log.warning(
                "%s: could not remove these retired summary folders, moved aside before the purge "
                "committed (%s); the next open tries again",
                batch,
                err,
            )
            continue
        log.info("%s: removed the retired summary folders moved aside here: the purge committed", batch)
    _remove_if_empty(holding)


def _keep(batch: Path, kept_root: Path) -> Path:
    """Rename ``batch`` into ``kept_root`` under a name not taken there; return its new path."""
    _holding_folder(kept_root)
    n = 1
    while True:
        target = kept_root / (batch.name if n == 1 else f"{batch.name}-{n}")
        if not os.path.lexists(target):
            os.rename(batch, target)  # a directory renamed over nothing
            fsync_dir(kept_root)
            fsync_dir(batch.parent)
            return target
        n += 1


def _restore(batch: Path, content_root: Path) -> None:
    """The purge did not commit: rename the batch's folders back into ``wiki/summaries``.

    Never over an existing name: what cannot go back stays in the batch, which
    is then kept under ``wiki/.retired-summaries-kept`` and named in an error.
    """
    summaries = summaries_dir(content_root)
    summaries.mkdir(mode=0o700, parents=True, exist_ok=True)
    restored, left = 0, []
    for entry in sorted(batch.iterdir()):
        target = summaries / entry.name
        if not _is_real_dir(entry) or os.path.lexists(target):
            left.append(entry.name)
            continue
        try:
            os.rename(entry, target)  # a directory: never over a file or a non-empty directory
        except OSError:
            if not os.path.lexists(entry):
                continue  # another process moved it back first
            if not os.path.lexists(target):
                raise
            left.append(entry.name)  # the name was taken just now
            continue
        restored += 1
    fsync_dir(summaries)
    fsync_dir(batch)
    if restored:
        log.info(
            "%s: moved %d retired summary folder(s) back to %s: the purge they were moved aside for "
            "did not commit",
            batch,
            restored,
            summaries,
        )
    if not left:
        _remove_if_empty(batch)
        return
    kept = _keep(batch, kept_dir(content_root))
    for name in left:
        log.error(
            "%s: this retired summary folder was moved aside by an interrupted purge and could not be "
            "moved back, because the name is taken again (made after the interruption); nothing is ever "
            "replaced. The moved-aside copy is kept as %s: compare the two and delete the one not needed",
            summaries / name,
            kept / name,
        )


def settle(conn: sqlite3.Connection, content_root: Path) -> None:
    """Finish or undo an interrupted move aside, by the marker of ``conn``'s database.

    One ``lstat`` when nothing is aside.  With the marker at 2 or more the
    batches are removed; below it they are moved back, holding ``BEGIN
    IMMEDIATE`` (waiting up to ``busy_timeout`` for it), which is rolled back:
    nothing is written.  Raises :class:`sqlite3.Error` when the lock or the
    marker cannot be had; a folder that cannot be moved back or removed is
    logged and left for the next open.  ``conn`` must be in autocommit and not
    in a transaction (:class:`RuntimeError` otherwise: an uncommitted marker
    must never decide a removal).
    """
    holding = aside_dir(content_root)
    try:
        st = os.lstat(holding)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:  # an unreadable content root: the upgrade, if one runs, says so
        log.debug("%s: not looked at (%s)", holding, err)
        return
    if conn.in_transaction:  # a marker read inside a transaction may not be committed yet
        raise RuntimeError("purge.settle needs a connection outside any transaction")
    try:
        _settle(conn, content_root, holding, st)
    except OSError as err:
        log.error(
            "%s: the retired summary folders moved aside there were not moved back or removed (%s); "
            "the next open tries again",
            holding,
            err,
        )


def _settle(conn: sqlite3.Connection, content_root: Path, holding: Path, st: os.stat_result) -> None:
    """:func:`settle` once the holding folder is known to exist (``st``: its ``lstat``)."""
    if not stat.S_ISDIR(st.st_mode):
        log.warning("%s is not a directory: left as it is (nothing of the library's is in it)", holding)
        return
    if _marker(conn) >= PURGED:  # committed, and for good: no migration moves anything aside again
        batches, others = _batches(holding)
        _remove_batches(holding, batches)
    else:
        conn.execute("BEGIN IMMEDIATE")  # no migration runs while this is held
        try:
            batches, others = _batches(holding)
            committed = _marker(conn) >= PURGED  # another process's purge committed meanwhile
            if not committed:
                for batch in batches:
                    _restore_logged(batch, content_root)
                _remove_if_empty(holding)
        finally:
            conn.execute("ROLLBACK")
        if committed:
            _remove_batches(holding, batches)
    if others:
        log.warning("%s: left as they are, not made by the library: %s", holding, ", ".join(others))


def _restore_logged(batch: Path, content_root: Path) -> None:
    """:func:`_restore`, logging a failure (the next open tries again) instead of raising it."""
    try:
        _restore(batch, content_root)
    except OSError as err:
        log.error(
            "%s: the retired summary folders moved aside here could not all be moved back to %s (%s); "
            "the next open tries again",
            batch,
            summaries_dir(content_root),
            err,
        )


def settle_after_transaction(conn: sqlite3.Connection, content_root: Path) -> None:
    """:func:`settle` right after the upgrade transaction committed or failed; never raises.

    After a commit the batches go; after a failure the folders come back before
    the caller's error propagates.  Whatever cannot be done now is logged and
    left to the next open's :func:`settle`.
    """
    if conn.in_transaction:  # a failed rollback: the lock is not ours to take again
        if not os.path.lexists(aside_dir(content_root)):
            return
        log.warning(
            "%s: retired summary folders may be moved aside there; the next open moves them back "
            "or removes them",
            aside_dir(content_root),
        )
        return
    try:
        settle(conn, content_root)
    except (OSError, sqlite3.Error) as err:
        log.warning(
            "%s: retired summary folders moved aside there were not moved back or removed yet (%s); "
            "the next open does it",
            aside_dir(content_root),
            err,
        )
