"""``tinycortex-sa doctor``: read-only health checks, one finding per line with its fix.

Checks the file modes, stray side files, ``PRAGMA integrity_check``,
``PRAGMA foreign_key_check``, the Alembic revision and ``user_version``, and
(at head) the schema against the ORM models with Alembic's
``compare_metadata`` (:func:`~tinycortex_sa.cli.inspect.schema_differences`),
as ``alembic check`` does.  Like ``status`` it reads
through plain ``mode=ro`` connections and changes nothing.

Every finding has a level: a ``problem`` (the exit status is 1), a
``warning`` (1 only with ``--strict``) or a ``note``.  The objects the Rust
core's KV and entity-index stores create are the file's own and are not
reported; an application's own tables and indexes are notes.  Only damage
(``integrity_check`` errors) is sent to a backup.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from ..schema import upgrade
from ..schema.version import HEAD, RUST_STORE_INDEXES, RUST_STORE_TABLES, USER_VERSION
from ..sqlite import files
from .inspect import (
    database_of,
    quarantined,
    read_error,
    read_only,
    revision_state,
    schema_differences,
)

#: ``ok`` is a check that passed; a ``problem`` fails doctor, a ``warning`` only with ``--strict``.
Severity = Literal["ok", "note", "warning", "problem"]

#: A check of the open file (connection, database path, workspace as typed): its findings.
Check = Callable[[sqlite3.Connection, Path, str], list["Finding"]]
#: ``integrity_check`` errors that concern only an index's entries, which ``REINDEX`` rebuilds.
_INDEX_ONLY = re.compile(r"missing from index|wrong # of entries in index|non-unique entry in index")
#: How many ``integrity_check`` errors to read (the first ones say enough).
INTEGRITY_LIMIT = 20
#: SQLite VM steps between two calls of the progress handler, and seconds between two repaints.
PROGRESS_STEPS = 10_000
PROGRESS_INTERVAL = 0.1
_CLEAR = "\r\x1b[2K"
_LABELS: dict[Severity, str] = {"ok": "ok", "note": "note", "warning": "WARNING", "problem": "PROBLEM"}


@dataclass(frozen=True)
class Finding:
    """One line of ``doctor`` output, with its level first."""

    severity: Severity
    check: str
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{_LABELS[self.severity]:8} {self.check}: {self.message}{fix}"


def check_modes(path: Path) -> list[Finding]:
    """The chunk DB holds personal data: 0600 files (side files too) in a 0700 directory.

    Modes open to group or others are warnings (the Rust core leaves 0644 and 0755); a
    database this user cannot write is a problem, since it cannot be opened.
    """
    found: list[Finding] = []
    targets = [(path.parent, 0o700), (path, 0o600), *((side, 0o600) for side in files.side_files(path))]
    for target, wanted in targets:
        if not target.exists():
            continue
        mode = stat.S_IMODE(target.stat().st_mode)
        if mode & 0o077:
            found.append(
                Finding(
                    "warning",
                    "file modes",
                    f"{target} is {mode:04o}: other users can reach the personal data in it.",
                    f"chmod {wanted:o} {shlex.quote(str(target))}",
                )
            )
        if target in (path, path.parent) and not os.access(target, os.R_OK | os.W_OK):
            found.append(
                Finding(
                    "problem",
                    "file modes",
                    f"{target} is not writable by this user (uid {os.getuid()}), so it cannot be opened.",
                    f"run as its owner (uid {target.stat().st_uid}) or give this user write access",
                )
            )
    if not found and path.exists():
        found.append(
            Finding("ok", "file modes", f"{path.name}, its side files and {path.parent.name}/ are private")
        )
    return found


def check_side_files(path: Path, ws: str) -> list[Finding]:
    """WAL mode, a ``-wal`` with data, leftover ``-journal``/``-shm``: an open folds them, never delete."""
    found: list[Finding] = []
    wal = path.with_name(path.name + "-wal")
    wal_bytes = wal.stat().st_size if wal.is_file() else 0
    fold = f"run `tinycortex-sa upgrade {ws}`: opening switches it to TRUNCATE, checkpointing the -wal in"
    if files.read_header(path).wal_mode:
        held = f"; {wal} holds {wal_bytes} bytes not yet in the database" if wal_bytes else ""
        message = f"{path.name} is in WAL mode, left by an older release{held}."
        found.append(Finding("problem", "journal mode", message, f"{fold}; never delete the -wal"))
    elif wal_bytes:
        message = f"{wal} holds {wal_bytes} bytes that may be committed data not yet in the database."
        found.append(Finding("problem", "side files", message, f"{fold}; never delete it"))
    journal = path.with_name(path.name + "-journal")
    if journal.is_file() and journal.stat().st_size:
        message = (
            f"{journal} ({journal.stat().st_size} bytes) is left by an interrupted transaction or by a "
            "process that has the file open; if it is hot, the read check says so."
        )
        found.append(Finding("note", "side files", message))
    shm = path.with_name(path.name + "-shm")
    if shm.is_file() and not files.read_header(path).wal_mode:
        found.append(Finding("note", "side files", f"{shm} is a stale WAL index; it holds no data."))
    if not found:
        found.append(Finding("ok", "side files", "not in WAL mode, no -wal with data, no stray side files"))
    return found


class Spinner:
    """A live line on a terminal while a statement runs: a spinner and the seconds so far.

    Called as SQLite's progress handler every :data:`PROGRESS_STEPS` VM steps; it repaints at
    most every :data:`PROGRESS_INTERVAL` seconds and always lets the statement go on.
    """

    def __init__(self, stream: TextIO, label: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.label = label
        self.clock = clock
        self.started = self.painted = clock()
        self.frames = 0

    def paint(self) -> None:
        self.painted = self.clock()
        spin = "|/-\\"[self.frames % 4]
        self.frames += 1
        self.stream.write(f"{_CLEAR}{spin} {self.label}  {self.painted - self.started:.1f}s")
        self.stream.flush()

    def __call__(self) -> int:
        if self.clock() - self.painted >= PROGRESS_INTERVAL:
            with contextlib.suppress(OSError):  # a closed terminal must not interrupt the check
                self.paint()
        return 0  # non-zero would interrupt the statement


@contextlib.contextmanager
def progress_line(conn: sqlite3.Connection, stream: TextIO | None, label: str) -> Iterator[None]:
    """Show :class:`Spinner` on ``stream`` while the block runs, if it is a terminal; else nothing."""
    if stream is None or not stream.isatty():
        yield
        return
    spinner = Spinner(stream, label)
    spinner.paint()
    conn.set_progress_handler(spinner, PROGRESS_STEPS)
    try:
        yield
    finally:
        conn.set_progress_handler(None, 0)
        stream.write(_CLEAR)
        stream.flush()


def check_integrity(
    conn: sqlite3.Connection, path: Path, ws: str, progress: TextIO | None = None
) -> list[Finding]:
    """``PRAGMA integrity_check``: the first errors, and REINDEX or ``recover`` as the fix.

    On a terminal ``progress`` shows a live line while it runs (a large file takes a while).
    """
    with progress_line(conn, progress, f"integrity_check of {path}"):
        rows = [
            " ".join(str(r[0]).split()) for r in conn.execute(f"PRAGMA integrity_check({INTEGRITY_LIMIT})")
        ]
    if rows == ["ok"]:
        return [Finding("ok", "integrity_check", "ok")]
    more = "+" if len(rows) >= INTEGRITY_LIMIT else ""
    if all(_INDEX_ONLY.search(row) for row in rows):  # the rows are intact: rebuilding indexes repairs it
        fix = (
            f"stop the applications using it, run `sqlite3 {shlex.quote(str(path))} REINDEX` (only "
            "indexes are damaged), then run doctor again"
        )
    else:
        fix = (
            f"stop the applications using it and run `tinycortex-sa recover {ws}` (keeps the damaged "
            "file aside; --force if quick_check misses the damage), or restore a backup"
        )
    return [Finding("problem", "integrity_check", f"{len(rows)}{more} error(s), first: {rows[0]}.", fix)]


def check_foreign_keys(conn: sqlite3.Connection, path: Path, ws: str) -> list[Finding]:
    """``PRAGMA foreign_key_check``, one finding per (table, parent table)."""
    orphans = Counter((str(r[0]), str(r[2])) for r in conn.execute("PRAGMA foreign_key_check"))
    if not orphans:
        return [Finding("ok", "foreign_key_check", "no rows point at missing parents")]
    return [
        Finding(
            "problem",
            "foreign_key_check",
            f"{count} row(s) of {table} point at rows missing from {parent}.",
            f"list them with `PRAGMA foreign_key_check({table})` and delete or repair them",
        )
        for (table, parent), count in sorted(orphans.items())
    ]


def check_revision(conn: sqlite3.Connection, path: Path, ws: str) -> tuple[list[Finding], bool]:
    """The Alembic revision and ``user_version``; also says whether the models can be compared."""
    revisions = upgrade.read_revisions(conn)
    state = revision_state(revisions)
    shown = ", ".join(revisions or ())
    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if state == "unknown":
        return [
            Finding(
                "problem",
                "schema",
                f"stamped with {shown}, which this tinycortex_sa does not know (its head is {HEAD}): "
                "newer code wrote it.",
                "upgrade tinycortex_sa; leave the file as it is",
            )
        ], False
    if state == "unversioned":
        what = (
            "an empty database" if not tables else "tables but no Alembic revision (the Rust core wrote it)"
        )
        return [
            Finding(
                "problem", "schema", f"{what}.", f"run `tinycortex-sa upgrade {ws}` to bring it to {HEAD}"
            )
        ], False
    if state == "behind":
        return [
            Finding("problem", "schema", f"at {shown}, behind {HEAD}.", f"run `tinycortex-sa upgrade {ws}`")
        ], False
    found = [Finding("ok", "schema", f"at {HEAD} (head)")]
    if user_version < USER_VERSION:
        found.append(
            Finding(
                "problem",
                "user_version",
                f"{user_version} at head (expected {USER_VERSION}): the Rust core would run its data "
                "migrations again.",
                "stop the applications using it and set it back with "
                f"`sqlite3 {shlex.quote(str(path))} 'PRAGMA user_version = {USER_VERSION}'`: at head "
                "both data migrations have run (revisions 0004 and 0005)",
            )
        )
    elif user_version > USER_VERSION:
        found.append(Finding("note", "user_version", f"{user_version}: a newer Rust core migrated it"))
    return found, True


def _checked(name: str, check: Check, conn: sqlite3.Connection, path: Path, ws: str) -> list[Finding]:
    """Run one check; a SQLite error (corruption met on the way) becomes its finding."""
    try:
        return check(conn, path, ws)
    except sqlite3.Error as err:
        return [Finding("problem", name, *read_error(path, err, ws))]


def check_models(path: Path) -> list[Finding]:
    """The schema against the models: the Rust stores' objects pass, an application's are notes."""
    diffs = schema_differences(path)
    changed = {d.name for d in diffs if d.kind in ("add_table", "add_index")}
    found: list[Finding] = []
    rust_stores = False
    for diff in diffs:
        extra = diff.kind in ("remove_table", "remove_index") and diff.name not in changed
        if extra and diff.name in RUST_STORE_TABLES | RUST_STORE_INDEXES:
            rust_stores = True
        elif extra:
            what = (
                f"table {diff.name}" if diff.kind == "remove_table" else f"index {diff.name} on {diff.table}"
            )
            found.append(Finding("note", "models", f"{what} is not the chunk DB's; left alone."))
        else:
            fix = (
                "something other than the migrations changed the chunk DB's schema: find what did "
                "and undo that change"
            )
            found.append(Finding("problem", "models", f"{diff.text}.", fix))
    if not any(f.severity == "problem" for f in found):
        stores = " (with the Rust core's KV and entity-index stores)" if rust_stores else ""
        found.insert(0, Finding("ok", "models", f"the schema matches tinycortex_sa's models{stores}"))
    return found


def check_database(path: Path, ws: str, progress: TextIO | None = None) -> list[Finding]:
    """The checks that read the file, each on its own, then the models at head."""
    found: list[Finding] = []
    with read_only(path) as conn:
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as err:  # unreadable: the checks below would all say the same
            return [Finding("problem", "read", *read_error(path, err, ws))]
        integrity = functools.partial(check_integrity, progress=progress)
        found += _checked("integrity_check", integrity, conn, path, ws)
        found += _checked("foreign_key_check", check_foreign_keys, conn, path, ws)
        try:
            revision_findings, at_head = check_revision(conn, path, ws)
        except sqlite3.Error as err:
            revision_findings, at_head = [Finding("problem", "schema", *read_error(path, err, ws))], False
        found += revision_findings
    if at_head:
        found += check_models(path)
    return found


def diagnose(workspace: str | os.PathLike[str], progress: TextIO | None = None) -> list[Finding]:
    """Every finding about the workspace's chunk DB, in the order they are printed.

    ``progress`` (stderr, say) gets a live line during the integrity check if it is a terminal.
    """
    path = database_of(workspace)
    ws = shlex.quote(os.fspath(workspace))
    found: list[Finding] = []
    if not path.is_file():
        fix = f"check the path; `tinycortex-sa upgrade {ws}` creates a new database there"
        found.append(Finding("problem", "database", f"no database at {path}.", fix))
    found += check_modes(path)
    found += check_side_files(path, ws)
    if path.is_file():
        found += check_database(path, ws, progress)
    for kept in quarantined(path):
        message = f"{kept.path} ({kept.size} bytes) was kept by an earlier recovery."
        found.append(Finding("note", "quarantined", message))
    return found
