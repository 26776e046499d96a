"""``tinycortex-sa upgrade`` and ``recover``: the commands that change the file.

Both open the database through the connection core
(:func:`tinycortex_sa.with_connection`), so the upgrade is the automatic
upgrade of :mod:`tinycortex_sa.schema.upgrade` (pragmas, WAL folding, one
``BEGIN IMMEDIATE`` transaction), and a rebuilt database is built exactly as a
first open builds one.  They open with ``on_corrupt="raise"``: moving a
corrupt file aside is ``recover``'s job alone, done with
:func:`tinycortex_sa.sqlite.aside.quick_check` and
:func:`tinycortex_sa.sqlite.aside.quarantine`.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import tinycortex_sa

from ..connection import registry
from ..errors import CliError, CorruptDatabaseError, DatabaseBusyError, Refused
from ..options import DEFAULTS
from ..schema import upgrade as schema_upgrade
from ..sqlite import aside, files
from .inspect import database_of, read_only
from .progress import reporting


def _read_head(conn: sqlite3.Connection) -> tuple[str, int]:
    revisions = schema_upgrade.read_revisions(conn) or ("no revision",)
    return ", ".join(revisions), int(conn.execute("PRAGMA user_version").fetchone()[0])


def _open(workspace: str, options: dict[str, Any]) -> tuple[str, int]:
    """Open (and so initialise) the database once through the library; return revision, user_version."""
    path = database_of(workspace)
    try:
        return tinycortex_sa.with_connection(workspace, _read_head, on_corrupt="raise", **options)
    except CorruptDatabaseError as err:
        raise CliError(
            f"{path} is corrupt, so nothing was changed; run `tinycortex-sa recover "
            f"{shlex.quote(workspace)}` to keep it aside and build a fresh database ({err.__cause__})"
        ) from err
    finally:
        tinycortex_sa.invalidate(workspace)


def _revision_before(path: Path) -> str | None:
    """The revision before the upgrade, read-only; None for a missing or unreadable file."""
    if not path.is_file():
        return None
    try:
        with read_only(path) as conn:
            return ", ".join(schema_upgrade.read_revisions(conn) or ("no revision",))
    except sqlite3.Error:
        return None  # the open below explains (hot journal, corruption, lock)


def upgrade(workspace: str, options: dict[str, Any], stream: TextIO, live: bool) -> list[str]:
    """Bring the workspace's chunk DB to head (:func:`tinycortex_sa.upgrade`); return what happened."""
    path = database_of(workspace)
    if not Path(workspace).is_dir():
        raise CliError(f"{workspace} is not a directory; give an existing workspace")
    try:
        with reporting(stream, live):
            done = tinycortex_sa.upgrade(workspace, **options)
    except CorruptDatabaseError as err:
        raise CliError(
            f"{path} is corrupt, so nothing was changed; run `tinycortex-sa recover "
            f"{shlex.quote(workspace)}` to keep it aside and build a fresh database ({err.__cause__})"
        ) from err
    after = f"{done.after} (user_version {done.user_version})"
    if done.created:
        return [f"created {path} at {after}"]
    if done.before is None:  # a hot journal (rolled back by the open) or a lock kept it from being read
        return [f"opened {path}, which could not be read read-only before; it is now at {after}"]
    if not done.changed:
        return [f"{path} is already at {after}; nothing to do"]
    return [f"upgraded {path} from {done.before} to {after}"]


def _still_damaged(path: Path, check: aside.Check, busy_timeout: int) -> None:
    """Under the move lock: refuse if another process repaired the file since the check."""
    if check.damage is not None and aside.quick_check(path, busy_timeout).healthy:
        raise Refused(f"{path} passed quick_check on a second look; nothing was moved")


def _still_the_same_file(path: Path, checked: os.stat_result) -> None:
    """Under the move lock and SQLite's: refuse if another process replaced the file since the check."""
    now = os.stat(path)
    if (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino):
        raise CliError(
            f"{path} was replaced while recover was starting (another process kept the damaged file "
            "aside and built a new database?). Nothing was moved; run recover again to check the new file"
        )


def recover(workspace: str, force: bool, options: dict[str, Any], say: Callable[[str], None]) -> None:
    """Quarantine a corrupt chunk DB (or, with ``force``, any) and build a fresh one, saying each step.

    SQLite never opens the file read-write before it is moved: that would roll
    back a ``-journal`` beside it, or delete it (beside a file that is not a
    database).  The check is read-only, and the file is locked as SQLite locks
    it (:func:`~tinycortex_sa.sqlite.files.sqlite_exclusive_lock`) without
    being read, so every side file is kept byte for byte.
    """
    path = database_of(workspace)
    ws = shlex.quote(workspace)
    if not path.is_file():
        raise CliError(f"no database at {path}: nothing to recover")
    busy_timeout = int(options.get("busy_timeout", DEFAULTS.busy_timeout))
    checked = os.stat(path)
    check = aside.quick_check(path, busy_timeout)
    if check.inconclusive is not None and not force:
        raise Refused(
            f"{path}: {check}, so it is neither known to be damaged nor known to be healthy; nothing "
            "was moved. If another process holds it, retry when it is done; if a -journal holds an "
            "interrupted transaction, opening the workspace read-write (any application, or "
            f"`tinycortex-sa upgrade {ws}`) rolls it back, then run recover again. To keep it aside as it "
            f"is and start an empty database, run `tinycortex-sa recover {ws} --force`"
        )
    if check.healthy and not force:
        raise Refused(
            f"{path} passed PRAGMA quick_check: it is not corrupt, so nothing was moved. To set it "
            f"aside anyway and start an empty database, run `tinycortex-sa recover {ws} --force`"
        )
    say(f"{path}: {check}" + ("" if check.damage is not None else "; moving it aside anyway (--force)"))
    try:
        with registry.move_lock(path.parent, busy_timeout):
            _still_the_same_file(path, checked)
            _still_damaged(path, check, busy_timeout)  # before the lock: the check takes SQLite's too
            with files.sqlite_exclusive_lock(path, busy_timeout):
                _still_the_same_file(path, checked)
                sides = files.side_files(path)
                target = aside.quarantine(path)
    except DatabaseBusyError as err:
        raise CliError(str(err)) from err
    for side in sides:
        say(f"moved {side} -> {files.side_file(target, side.name[len(path.name) :])}")
    say(f"moved {path} -> {target}")
    revision, user_version = _open(workspace, options)
    content = options.get("content_root") or path.parent / "content"
    say(f"built a fresh, empty database at {path} ({revision}, user_version {user_version})")
    say(
        f"kept, not deleted: {target}; `sqlite3 {shlex.quote(str(target))} .recover` may salvage rows "
        f"from it, or restore a backup (`tinycortex-sa backup` takes one; docs/recovery.md). Content "
        f"files under {content} were not touched."
    )


def run_demo(workspace: str | None) -> int:
    """``tinycortex-sa demo``: what ``make demo`` runs."""
    from . import demo

    return demo.main([] if workspace is None else [os.fspath(workspace)])
