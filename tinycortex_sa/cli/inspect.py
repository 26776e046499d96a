"""Read-only inspection of a chunk DB, for ``tinycortex-sa status`` and ``doctor``.

Nothing here goes through the connection core: the file is read with a plain
``sqlite3`` connection opened ``mode=ro``, so neither the automatic upgrade
nor recovery can run, and the database and its ``-journal``/``-wal`` keep
their bytes (beside a WAL-mode file SQLite may rebuild the ``-shm`` index and
create an empty ``-wal``, which hold no data).  A hot ``-journal`` is reported, not rolled back.
The schema is compared with the ORM models the same way, on its own
read-only connection.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..connection.registry import db_path_for
from ..engine import reflection
from ..errors import CliError
from ..options import Options
from ..schema import upgrade
from ..schema.version import HEAD, REVISIONS
from ..sqlite import codes, driver, files, pragmas

RevisionState = Literal["head", "behind", "unversioned", "unknown"]
#: The persistent journal mode the header records: ``wal``, or a rollback journal.
FileMode = Literal["wal", "rollback"]

#: Seconds a read waits for another process's write lock.
READ_TIMEOUT = 5.0
#: Pragmas stored in (or derived from) the file, as a plain read-only connection sees them.
FILE_PRAGMAS = ("page_size", "page_count", "freelist_count", "auto_vacuum", "encoding")
#: The journal mode every connection of tinycortex_sa (and of the Rust core) sets when it opens the file.
JOURNAL_MODE_IN_USE = str(pragmas.expected(Options())["journal_mode"])


@dataclass(frozen=True)
class FileInfo:
    """A file beside the database: its path, size in bytes and permission bits."""

    path: str
    size: int
    mode: str


@dataclass
class Status:
    """What ``status`` reports; every field is read without writing anything."""

    workspace: str
    database: str
    exists: bool
    file: FileInfo | None = None
    revision: str | None = None
    revision_state: RevisionState | None = None
    head: str = HEAD
    user_version: int | None = None
    journal_mode_in_use: str = JOURNAL_MODE_IN_USE
    """What the library and the Rust core run in, whatever the file's own mode."""
    file_mode: FileMode | None = None
    """The header's persistent mode; None when the file has no SQLite header."""
    pragmas: dict[str, object] = field(default_factory=dict)
    side_files: list[FileInfo] = field(default_factory=list)
    quarantined: list[FileInfo] = field(default_factory=list)
    tables: dict[str, int | None] | None = field(default_factory=dict)
    """Rows per model table (None for a missing table); None itself when not counted (``--fast``)."""
    error: str | None = None
    """Why the database could not be read (then the fields above it may be empty)."""


def file_info(path: Path) -> FileInfo:
    st = path.stat()
    return FileInfo(str(path), st.st_size, f"{stat.S_IMODE(st.st_mode):04o}")


def database_of(workspace: str | os.PathLike[str]) -> Path:
    """The workspace's chunk DB, refusing a workspace argument that names a file."""
    ws = Path(workspace)
    if ws.is_file():
        raise CliError(
            f"{ws} is a file; give the workspace directory (the one holding memory_tree/chunks.db)"
        )
    path = db_path_for(ws).absolute()
    what = files.not_regular(path)
    if what is not None:
        raise CliError(f"{path} is {what}, not a database file; nothing was read, moved or changed")
    return path


def quarantined(path: Path) -> list[FileInfo]:
    """Copies kept by earlier recoveries: ``<name>.corrupt-*`` (with their side files)."""
    if not path.parent.is_dir():
        return []
    return [file_info(p) for p in sorted(path.parent.glob(f"{path.name}.corrupt-*")) if p.is_file()]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain ``mode=ro`` connection on ``path`` (which must exist), closed afterwards."""
    conn = driver.open_uri(path, "ro", int(READ_TIMEOUT * 1000))
    try:
        yield conn
    finally:
        conn.close()


def read_error(path: Path, err: sqlite3.Error, ws: str) -> tuple[str, str]:
    """Why ``path`` could not be read, and what to do, for the workspace spelled ``ws``."""
    if codes.is_readonly_rollback(err):
        return (
            f"{path}-journal is a hot journal: an interrupted transaction must be rolled back "
            "before the file can be read.",
            f"run `tinycortex-sa upgrade {ws}` (SQLite rolls it back on open); never delete the -journal",
        )
    if codes.is_corruption(err):
        return f"{path} is corrupt ({err}).", f"run `tinycortex-sa recover {ws}`"
    if codes.is_busy(err):
        return f"{path} is locked by another process ({err}).", "retry when it is done"
    return f"cannot read {path}: {err}.", f"check that {path} is a chunk DB this user may read"


def revision_state(revisions: tuple[str, ...] | None) -> RevisionState:
    if not revisions:
        return "unversioned"
    if len(revisions) == 1 and revisions[0] in REVISIONS:
        return "head" if revisions[0] == HEAD else "behind"
    return "unknown"


def table_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(row[0]) for row in rows}


def model_tables() -> list[str]:
    from ..schema.models import Base

    return sorted(Base.metadata.tables)


def file_mode(path: Path) -> FileMode | None:
    """``wal`` or ``rollback`` as the header says (byte 19), None without a SQLite header."""
    header = files.read_header(path)
    if not header.is_sqlite:
        return None
    return "wal" if header.wal_mode else "rollback"


def collect_status(workspace: str | os.PathLike[str], count_rows: bool = True) -> Status:
    """Everything ``status`` shows; a database that cannot be read sets ``error``.

    Without ``count_rows`` the tables are not counted (``tables`` is None): on a large file
    the counts are what takes time.
    """
    path = database_of(workspace)
    status = Status(
        workspace=str(Path(workspace).absolute()),
        database=str(path),
        exists=path.is_file(),
        tables={} if count_rows else None,
    )
    status.side_files = [file_info(p) for p in files.side_files(path)]
    status.quarantined = quarantined(path)
    if not status.exists:
        status.error = f"no database at {path}" + (
            "" if Path(workspace).is_dir() else f" ({workspace} does not exist)"
        )
        return status
    status.file = file_info(path)
    status.file_mode = file_mode(path)
    try:
        with read_only(path) as conn:
            revisions = upgrade.read_revisions(conn)
            status.revision = ", ".join(revisions) if revisions else None
            status.revision_state = revision_state(revisions)
            status.user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            status.pragmas = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in FILE_PRAGMAS}
            if status.tables is not None:
                present = table_names(conn)
                for table in model_tables():  # fixed names from the models, never caller text
                    count = (
                        conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                        if table in present
                        else None
                    )
                    status.tables[table] = count
    except sqlite3.Error as err:
        status.error = " Fix: ".join(read_error(path, err, shlex.quote(os.fspath(workspace))))
    return status


@dataclass(frozen=True)
class Difference:
    """One difference between the file's schema and the models (Alembic's ``compare_metadata``)."""

    kind: str
    """Alembic's: ``add_table``, ``remove_index``, ``modify_type``, ... (``modify`` for a group)."""
    text: str
    name: str | None = None
    """The table or index, for a table or index difference."""
    table: str | None = None
    """The table it is on, for an index difference."""

    @classmethod
    def of(cls, diff: Any) -> Difference:
        if isinstance(diff, list):
            return cls("modify", describe_diff(diff))
        kind = str(diff[0])
        if kind in ("add_table", "remove_table"):
            return cls(kind, describe_diff(diff), diff[1].name, diff[1].name)
        if kind in ("add_index", "remove_index"):
            return cls(kind, describe_diff(diff), diff[1].name, diff[1].table.name)
        return cls(kind, describe_diff(diff))


def describe_diff(diff: Any) -> str:
    """One Alembic autogenerate difference, in words."""
    if isinstance(diff, list):  # modify_* differences come grouped per column
        return "; ".join(describe_diff(d) for d in diff)
    kind = str(diff[0])
    where = {
        "add": "in the models but not in the database",
        "remove": "in the database but not in the models",
    }
    verb, _, noun = kind.partition("_")
    if kind in ("add_table", "remove_table"):
        return f"table {diff[1].name} is {where[verb]}"
    if kind in ("add_column", "remove_column"):
        return f"column {diff[2]}.{diff[3].name} is {where[verb]}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        return f"{noun} {diff[1].name} on {diff[1].table.name} is {where[verb]}"
    if kind in ("add_fk", "remove_fk"):
        fk = diff[1]
        return f"foreign key {fk.parent.name}({', '.join(fk.column_keys)}) is {where[verb]}"
    if verb == "modify":
        return f"column {diff[2]}.{diff[3]}: {noun} is {diff[5]!r} in the database, {diff[6]!r} in the models"
    return repr(diff)


def schema_differences(path: Path) -> list[Difference]:
    """Alembic's ``compare_metadata`` between the file (read-only) and the ORM models."""
    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.pool import StaticPool

    from ..schema.models import Base

    with read_only(path) as conn:
        engine = sa.create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
        dialect: Any = engine.dialect  # see reflection.py: inline ON DELETE CASCADE, as env.py does
        dialect.get_foreign_keys = functools.partial(reflection.get_foreign_keys, dialect)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(
                    connection, opts={"compare_type": True, "compare_server_default": True}
                )
                return [Difference.of(d) for d in compare_metadata(context, Base.metadata)]
        finally:
            engine.dispose()
