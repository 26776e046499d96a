"""Scenario 12 (numbered after coexistence, 11): files that are not ours, and side files kept.

Every trial draws one class (a shuffled schedule with the same number of
trials per class, from the seed: 2 in the test suite, 40 with ``--full``) and
random parameters for it (each class's main variants come up in turn, in
shuffled rounds), in a directory of its own:

* ``side-files-kept``: a ``chunks.db`` that is not a database (text or
  random bytes, 1 byte to 300 kB, modes 0600/0640/0644/0400) with a random
  set of ``-journal``, ``-wal`` and ``-shm`` side files (random bytes, bytes
  starting with SQLite's journal magic ``d9d505f920a163d7``, or empty), and
  sometimes the group of an earlier recovery beside it; then ``tinycortex-sa
  recover`` (in process).  Promised: exit 0, every side file kept under the
  kept name ``chunks.db.corrupt-<ts>`` + its suffix, byte for byte and mode
  for mode, none made up; a fresh 0600 database.
* ``not-a-file``: a FIFO, a unix socket, a directory (with a file in it), a
  character device (``/dev/full``, ``/dev/null``, ``/dev/zero`` numbers) or a
  block device node (as root), a symbolic link (or a chain of two, absolute
  or relative) to one of them, or a symbolic-link loop, at the database path;
  sometimes side files beside it, sometimes reached through a linked
  ``memory_tree``; opened through ``with_connection``, an engine, a URL, or
  ``recover`` (with and without ``--force``)/``status``/``doctor``/``upgrade``.
  Promised: ``NotAFileError`` saying what is there, naming the path (or
  where its links lead; the notes count those); the commands: a failure
  exit, one line on stderr saying so.  A FIFO is never opened: a thread
  keeps trying to open it for writing, which works only while a reader has
  it open (a reader found is fed zeros so that it goes on, and a call that
  has not returned after 20 s is reported and left behind).
* ``foreign-db``: another application's SQLite database (1-4 tables with
  random names and columns, random rows, sometimes an index, a view, an
  ``AUTOINCREMENT`` table, a ``user_version``; page size 1024/4096/8192) in
  journal mode DELETE, TRUNCATE, PERSIST or WAL (checkpointed, or with its
  rows still in a ``-wal`` left by a writer that never closed), opened
  through ``with_connection``, an engine or a URL.  Promised:
  ``ForeignDatabaseError`` naming the path and a table; a rollback-journal
  file and its ``-journal`` byte-identical; a WAL-mode file (checked after
  the pragmas) with every table's schema and rows intact.
* ``group-move``: a damaged group (not a database, random side files) is
  quarantined, through ``aside.quarantine(path, clock=...)`` with a random
  stamp, or through an open (``with_connection``), with names taken at the
  candidate kept names (``chunks.db.corrupt-<stamp>``, ``-2``, ``-3`` and
  their side-file names; for the open, for every stamp in a window around
  the trial) by dangling links, links to files, files, directories and
  FIFOs, and in 60 % of the trials one rename of the group (a random member)
  failing with ``FileExistsError``, ``ENOSPC``, ``EDQUOT``, ``EIO`` or
  ``EACCES``.  Promised: with no failure, the whole group under the first
  name free for all of its members (no link followed, replaced or moved);
  with one, the error (from an open: ``DiskFullError`` for a full file
  system, another ``OpenError`` else) and every file back at its own name; never split.
* ``inconclusive``: a hot ``-journal`` (a writer with spilled pages ended by
  ``SIGKILL`` or ``os._exit`` in mid-transaction).  Promised:
  ``quick_check`` says inconclusive (neither healthy nor damaged);
  ``recover`` exits 1 and changes nothing; ``recover --force`` exits 0 and
  keeps the database and its journal byte-identical under the kept name.
* ``bad-path``: a NUL byte in a workspace path or a URL (``\\x00``, ``%00``),
  a URL ending in ``/``, ``pool_size``/``max_overflow``/``pool_timeout``/
  ``pool_use_lifo`` (``OptionError``, nothing created); a dangling link at
  the database path or at ``memory_tree`` (``NotAFileError`` naming link and
  target, or a failure exit from ``recover``; nothing created where it
  points); ``ENOSPC``/``EDQUOT`` injected into a random rename while an open
  quarantines a damaged file (``DiskFullError``, files as they were).

Every trial compares every entry under its directory before and after: kind,
mode, sha256 of a file's bytes, a link's target, inode; everything must be
as it was except the moves and the new files the class allows.  A trial
after which a file's bytes are found nowhere (or, for a WAL-mode foreign
database, a row is missing) counts as ``lost``.  The notes give the trial
counts per class and variant.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import tinycortex_sa
from tinycortex_sa import cli, db_path_for
from tinycortex_sa.errors import KeptFileExistsError
from tinycortex_sa.sqlite import aside, files

from .common import EMPTY_SHA, Context, Result, forget, prepare_head, tree_state

CLASSES = ("side-files-kept", "not-a-file", "foreign-db", "group-move", "inconclusive", "bad-path")
SIDES = files.SIDE_SUFFIXES
#: The first bytes of a rollback journal SQLite wrote (its magic number).
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
KEPT = "chunks.db.corrupt-"
WORDS = (
    "invoices",
    "photos",
    "contacts",
    "settings",
    "events",
    "tracks",
    "orders",
    "ledger",
    "cache",
    "tags",
)
TEXT = "these are my notes, not a database; héllo wörld\n"

#: relative path -> (kind, mode, sha256 of a file / target of a link, inode)
Entry = tuple[str, int, str, int]
State = dict[str, Entry]


class Draw:
    """Draws among fixed options so that each comes up equally often: shuffled rounds, from the seed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.left: dict[tuple[str, ...], list[str]] = {}

    def __call__(self, options: tuple[str, ...]) -> str:
        left = self.left.setdefault(options, [])
        if not left:
            left.extend(options)
            self.rng.shuffle(left)
        return left.pop()


# -- snapshots and the verdict ---------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "link"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
    ):
        if test(mode):
            return name
    return "other"


def _snapshot(root: Path) -> State:
    """``tree_state`` of ``root`` (nothing but lstat and reads of regular files), with links and inodes."""
    state: State = {}
    for rel, (kind, mode, digest) in tree_state(root).items():
        p = root if rel == "." else root / rel
        st = p.lstat()
        if kind == "other":
            kind = _kind(st.st_mode)
            digest = os.readlink(p) if kind == "link" else ""
        state[rel] = (kind, mode, digest, st.st_ino)
    return state


def _show(e: Entry | None) -> str:
    return "absent" if e is None else f"{e[0]} {oct(e[1])} {e[2][:12]}"


def _fresh_db(e: Entry) -> bool:
    return e[0] == "file" and e[1] == 0o600


def _empty_file(e: Entry) -> bool:
    return e[0] == "file" and e[2] == EMPTY_SHA


class Trial:
    """One trial's directory, its state before, and the verdict on its state after."""

    def __init__(self, ctx: Context, result: Result, cls: str, t: int, draw: Draw) -> None:
        self.result = result
        self.draw = draw
        self.hung = False
        """A call of the trial did not return (and is left running): its workspace is not touched again."""
        self.cls = cls
        self.where = f"{cls} #{t}"
        self.root = ctx.tmp / f"{cls}-{t}"
        self.root.mkdir()
        self.ws = self.root / "ws"
        self.path = db_path_for(self.ws)
        self.mt = "ws/memory_tree/"
        self.before: State = {}
        result.trials += 1

    def problem(self, text: str) -> None:
        self.result.problem(f"{self.where}: {text}")

    def check(self, condition: object, text: str) -> bool:
        if not condition:
            self.problem(text)
        return bool(condition)

    def snap(self) -> None:
        self.before = _snapshot(self.root)

    def judge(
        self,
        moves: dict[str, str] | None = None,
        new: dict[str, Callable[[Entry], bool]] | None = None,
        changing: frozenset[str] = frozenset(),
    ) -> State:
        """Everything as before except ``moves`` (old -> new relative path), ``new`` entries that pass
        their test, and entries in ``changing`` (which may change, appear or vanish)."""
        after = _snapshot(self.root)
        expected = dict(self.before)
        for src, dst in (moves or {}).items():
            expected[dst] = expected.pop(src)
        changes = []
        for rel in sorted(set(expected) | set(after)):
            e, a = expected.get(rel), after.get(rel)
            if e == a or rel in changing:
                continue
            if e is None and a is not None and rel in (new or {}) and (new or {})[rel](a):
                continue
            changes.append(f"{rel}: {_show(e)} -> {_show(a)}")
        if changes:
            self.problem(f"{len(changes)} entries not as promised, e.g. {changes[:4]}")
        # nothing lost: the bytes of every file that was there, the inode of every other entry
        files_after = {a[2] for a in after.values() if a[0] == "file"}
        inodes_after = {a[3] for a in after.values()}
        gone = [
            rel
            for rel, b in self.before.items()
            if rel not in changing
            and ((b[2] not in files_after) if b[0] == "file" else (b[3] not in inodes_after))
        ]
        if gone:
            self.result.lost += 1
            self.problem(f"gone, found nowhere under the trial's directory: {gone[:4]}")
        return after


def _expect(
    trial: Trial, fn: Callable[[], Any], error: type[BaseException], words: tuple[str, ...]
) -> BaseException | None:
    """Run ``fn``: it must raise ``error`` with a message holding every one of ``words``."""
    try:
        fn()
    except Exception as err:
        text = str(err)
        trial.check(isinstance(err, error), f"{type(err).__name__} is not a {error.__name__}: {text[:300]}")
        missing = [w for w in words if w not in text]
        trial.check(not missing, f"the error does not say {missing}: {text[:300]}")
        return err
    trial.problem(f"no error (expected {error.__name__})")
    return None


def _cli(*argv: str) -> tuple[int, str, str]:
    """``tinycortex-sa ARGV`` in this process; exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    if len(argv) > 1:
        tinycortex_sa.invalidate(argv[1])
    return code, out.getvalue(), err.getvalue()


def _connect_engine(engine: sa.Engine) -> None:
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def _entry_points(ws: Path, path: Path) -> dict[str, Callable[[], Any]]:
    return {
        "with_connection": lambda: tinycortex_sa.with_connection(ws, lambda c: None),
        "engine": lambda: _connect_engine(tinycortex_sa.create_engine(ws)),
        "URL": lambda: _connect_engine(sa.create_engine(f"sqlite+tinycortex:///{path}")),
    }


@contextlib.contextmanager
def _failing_rename(member: Path | None, exc: Callable[[Path, Path], BaseException]) -> Iterator[list[Path]]:
    """``files.rename_keeping`` raising ``exc`` for the rename of ``member`` (from its own name)."""
    real = files.rename_keeping
    calls: list[Path] = []

    def rename(src: Path, dst: Path) -> None:
        calls.append(src)
        if member is not None and src == member:
            raise exc(src, dst)
        real(src, dst)

    files.rename_keeping = rename
    try:
        yield calls
    finally:
        files.rename_keeping = real


def _not_a_database(rng: random.Random) -> tuple[bytes, str]:
    size = rng.choice((rng.randrange(1, 100), rng.randrange(100, 5000), rng.randrange(5000, 300_000)))
    if rng.random() < 0.5:
        return (TEXT.encode() * (size // len(TEXT) + 1))[:size], "text"
    data = rng.randbytes(size)
    if data[:1] == b"S":  # never the start of the SQLite header
        data = b"s" + data[1:]
    return data, "random bytes"


def _side_bytes(rng: random.Random) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.1:
        return b"", "empty"
    size = rng.randrange(1, 20_000)
    if r < 0.55:
        return JOURNAL_MAGIC + rng.randbytes(size), "journal magic"
    return rng.randbytes(size), "random"


def _damaged_group(trial: Trial, rng: random.Random) -> tuple[list[str], list[str]]:
    """A damaged ``chunks.db`` with random side files and modes; the suffixes present, and labels."""
    trial.path.parent.mkdir(parents=True)
    data, label = _not_a_database(rng)
    trial.path.write_bytes(data)
    trial.path.chmod(rng.choice((0o600, 0o640, 0o644, 0o400)))
    present, labels = [], [label]
    for suffix in SIDES:
        if rng.random() < 0.6:
            side, what = _side_bytes(rng)
            p = files.side_file(trial.path, suffix)
            p.write_bytes(side)
            p.chmod(rng.choice((0o600, 0o640, 0o644)))
            present.append(suffix)
            labels.append(f"{suffix} ({what})")
    return present, labels


def _chunk_db_at(trial: Trial) -> None:
    """The fresh file at the database path is a chunk DB."""
    try:
        conn = sqlite3.connect(files.file_uri(trial.path, "ro"), uri=True)
        try:
            found = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'mem_tree_chunks'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        found = (str(err),)
    trial.check(found == (1,), f"the fresh file at the database path is not a chunk DB: {found}")


def _group_moves(trial: Trial, present: list[str], target: str) -> dict[str, str]:
    moves = {trial.mt + "chunks.db": trial.mt + target}
    for suffix in present:
        moves[trial.mt + "chunks.db" + suffix] = trial.mt + target + suffix
    return moves


def _new_kept_name(trial: Trial, after: State) -> str | None:
    """The one new ``chunks.db.corrupt-*`` main name under ``memory_tree`` (None if not exactly one)."""
    names = [
        rel[len(trial.mt) :]
        for rel in after
        if rel.startswith(trial.mt + KEPT) and rel not in trial.before and not rel.endswith(SIDES)
    ]
    if len(names) != 1:
        trial.problem(f"expected one new kept group, found {names}")
        return None
    return names[0]


def _fresh(trial: Trial) -> dict[str, Callable[[Entry], bool]]:
    """A fresh database (0600) and TRUNCATE mode's empty ``-journal`` may appear at the database's names."""
    return {trial.mt + "chunks.db": _fresh_db, trial.mt + "chunks.db-journal": _empty_file}


# -- 1. side files kept by recover -----------------------------------------------------------------


def _side_files_kept(trial: Trial, rng: random.Random, counts: Counter[str]) -> None:
    trial.result.faults += 1
    present, labels = _damaged_group(trial, rng)
    if rng.random() < 0.3:  # the group of an earlier recovery, left alone
        old = trial.path.with_name(KEPT + "20250101T000000Z")
        old.write_bytes(rng.randbytes(rng.randrange(1, 5000)))
        files.side_file(old, "-journal").write_bytes(JOURNAL_MAGIC + rng.randbytes(100))
        counts["with an earlier kept group beside it"] += 1
    counts[f"{len(present)} side file(s)"] += 1
    counts.update(labels)
    trial.snap()
    code, out, err = _cli("recover", str(trial.ws))
    trial.check(code == 0 and "kept, not deleted" in out, f"recover exited {code}: {err.strip()[:300]}")
    after = _snapshot(trial.root)
    target = _new_kept_name(trial, after)
    if target is None:
        trial.judge()
        return
    made_up = [s for s in SIDES if s not in present and trial.mt + target + s in after]
    trial.check(not made_up, f"side files made up under the kept name: {made_up}")
    trial.judge(_group_moves(trial, present, target), _fresh(trial))
    _chunk_db_at(trial)


# -- 2. anything but a regular file ----------------------------------------------------------------

WHAT = {
    "fifo": "a FIFO",
    "socket": "a socket",
    "directory": "a directory",
    "chardev": "a character device",
    "blockdev": "a block device",
    "loop": "Too many levels of symbolic links",
}


def _make_node(kind: str, where: Path, rng: random.Random) -> None:
    if kind == "fifo":
        os.mkfifo(where, 0o600)
    elif kind == "socket":
        here = os.getcwd()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(where.parent)  # a unix socket's path is limited to 108 bytes
            sock.bind(where.name)
        finally:
            os.chdir(here)
            sock.close()
    elif kind == "directory":
        where.mkdir()
        (where / "inside.txt").write_bytes(rng.randbytes(rng.randrange(0, 3000)))
    elif kind == "chardev":
        minor = rng.choice((3, 5, 7))  # /dev/null, /dev/zero, /dev/full
        os.mknod(where, stat.S_IFCHR | 0o600, os.makedev(1, minor))
    elif kind == "blockdev":
        os.mknod(where, stat.S_IFBLK | 0o600, os.makedev(7, 250))  # a loop device number nobody uses


def _can_mknod(tmp: Path) -> bool:
    probe = tmp / "mknod-probe"
    try:
        os.mknod(probe, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        return False
    probe.unlink()
    return True


BLOCKED_AFTER = 20.0


def _bounded(fn: Callable[[], None], seconds: float) -> bool:
    """Run ``fn`` on a daemon thread; False if it has not returned after ``seconds`` (it is left running)."""
    out, err = sys.stdout, sys.stderr
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        sys.stdout, sys.stderr = out, err  # should it hang inside a redirection
        return False
    return True


@contextlib.contextmanager
def _fifo_watch(fifo: Path | None) -> Iterator[list[str]]:
    """While the body runs, keep opening ``fifo`` for writing: that works only if a reader has it open.

    A reader found is fed zeros, so that it does not block for ever.
    """
    seen: list[str] = []
    if fifo is None:
        yield seen
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                stop.wait(0.005)
                continue
            if not seen:
                seen.append("the FIFO was opened for reading")
            try:  # feed a reader blocked on it, so that it goes on and the trial can say what it did
                os.write(fd, bytes(4096))
            except OSError:
                pass
            finally:
                os.close(fd)
            stop.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def _not_a_file(trial: Trial, rng: random.Random, counts: Counter[str], devices: bool) -> None:
    trial.result.bad_inputs += 1
    kinds = ("fifo", "socket", "directory", "loop") + (("chardev", "blockdev") if devices else ())
    kind = trial.draw(kinds)
    trial.ws.mkdir()
    mt = trial.ws / "memory_tree"
    if rng.random() < 0.2:  # memory_tree itself a link to a directory elsewhere
        real_dir = trial.root / "real-memory-tree"
        real_dir.mkdir()
        mt.symlink_to(real_dir if rng.random() < 0.5 else Path("..") / real_dir.name)
        counts["through a linked memory_tree"] += 1
    else:
        mt.mkdir()
    path = trial.path
    label = kind
    fifo: Path | None = None
    if kind == "loop":
        if rng.random() < 0.5:
            path.symlink_to(path.name)
            label = "link loop (itself)"
        else:
            other = path.with_name("other-link")
            path.symlink_to(other.name)
            other.symlink_to(path)
            label = "link loop (two links)"
    elif rng.random() < 0.4:  # a link (or two) to the thing, which lives elsewhere
        elsewhere = trial.root / "elsewhere"
        elsewhere.mkdir()
        node = elsewhere / rng.choice(("thing", "x.db", "chunks.db", "dev node"))
        _make_node(kind, node, rng)
        hops = rng.choice((1, 2))
        first: Path = node
        if hops == 2:
            first = trial.root / "hop"
            first.symlink_to(node)
        # relative to where the link really is (memory_tree may be a link itself)
        target = first if rng.random() < 0.5 else Path(os.path.relpath(first, path.parent.resolve()))
        path.symlink_to(target)
        label = f"link ({hops} hop(s)) to {kind}"
        fifo = node if kind == "fifo" else None
    else:
        _make_node(kind, path, rng)
        fifo = path if kind == "fifo" else None
    if rng.random() < 0.3:  # side files beside it, which must stay as they are
        for suffix in rng.sample(SIDES, rng.randint(1, 3)):
            files.side_file(path, suffix).write_bytes(rng.randbytes(rng.randrange(0, 4000)))
        counts["with side files beside it"] += 1
    counts[label] += 1
    trial.snap()
    entry = trial.draw(
        ("with_connection", "engine", "URL", "recover", "recover --force", "status", "doctor", "upgrade")
    )
    counts[f"via {entry}"] += 1

    def attempt() -> None:
        try:
            if entry not in ("with_connection", "engine", "URL"):
                command, *flags = entry.split()
                code, out, err = _cli(command, str(trial.ws), *flags)
                trial.check(code != 0, f"{entry} exited 0: {out[:200]}")
                trial.check(
                    err.count("\n") == 1, f"{entry} exited {code}, not one line: {err[:300]!r} {out[:300]!r}"
                )
                trial.check(WHAT[kind] in err, f"{entry} does not say {WHAT[kind]!r}: {err[:300]}")
                return
            refused = _expect(
                trial, _entry_points(trial.ws, path)[entry], tinycortex_sa.NotAFileError, (WHAT[kind],)
            )
            text, resolved = str(refused), os.path.realpath(path)
            if refused is None or str(path) in text:
                return
            if trial.check(resolved in text, f"the error names neither {path} nor {resolved}: {text[:300]}"):
                counts["the error names where the links lead, not the database path"] += 1
        except Exception as err:
            trial.problem(f"{entry} failed: {type(err).__name__}: {err}")

    with _fifo_watch(fifo) as opened:
        finished = _bounded(attempt, BLOCKED_AFTER)
    if not finished:
        trial.problem(f"{entry} had not returned after {BLOCKED_AFTER:.0f} s (left running)")
        trial.hung = True
        trial.judge()
        return
    for o in opened:
        trial.problem(o)
    forget(trial.ws)
    trial.judge()


# -- 3. another application's database -------------------------------------------------------------


def _foreign_tables(rng: random.Random) -> list[tuple[str, list[str]]]:
    tables: list[tuple[str, list[str]]] = []
    for i in range(rng.randint(1, 4)):
        name = rng.choice(WORDS) + rng.choice(("", f"_{rng.randrange(1000)}", " 2", "-x")) + f"_{i}"
        cols = [f"c{j}_{rng.choice(('a', 'b', 'z'))}" for j in range(rng.randint(1, 4))]
        tables.append((name, cols))
    return tables


def _value(rng: random.Random) -> Any:
    return rng.choice(
        (
            lambda: rng.randrange(-(2**40), 2**40),
            lambda: rng.random() * 1e6,
            lambda: "txt " * rng.randrange(0, 50),
            lambda: rng.randbytes(rng.randrange(0, 2000)),
            lambda: None,
        )
    )()


def _contents(conn: sqlite3.Connection) -> dict[str, Any]:
    master = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    rows = {}
    for _type, name, *_ in master:
        if _type == "table":
            rows[name] = sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"').fetchall()))
    return {"master": master, "rows": rows, "user_version": conn.execute("PRAGMA user_version").fetchone()[0]}


def _fill_foreign(conn: sqlite3.Connection, rng: random.Random, page_size: int) -> list[str]:
    conn.execute(f"PRAGMA page_size = {page_size}")
    names = []
    for name, cols in _foreign_tables(rng):
        names.append(name)
        auto = rng.random() < 0.2
        key = "id INTEGER PRIMARY KEY" + (" AUTOINCREMENT" if auto else "")
        conn.execute(f'CREATE TABLE "{name}" ({key}, {", ".join(cols)})')
        conn.execute("BEGIN")
        conn.executemany(
            f'INSERT INTO "{name}" ({", ".join(cols)}) VALUES ({", ".join("?" for _ in cols)})',
            [tuple(_value(rng) for _ in cols) for _ in range(rng.randrange(0, 200))],
        )
        conn.execute("COMMIT")
        if rng.random() < 0.3:
            conn.execute(f'CREATE INDEX "ix {name}" ON "{name}" ({cols[0]})')
        if rng.random() < 0.2:
            conn.execute(f'CREATE VIEW "v {name}" AS SELECT * FROM "{name}"')
    if rng.random() < 0.3:
        conn.execute(f"PRAGMA user_version = {rng.randrange(1, 1000)}")
    return names


def _foreign_db(trial: Trial, rng: random.Random, counts: Counter[str]) -> None:
    trial.result.bad_inputs += 1
    trial.path.parent.mkdir(parents=True)
    mode = trial.draw(("DELETE", "TRUNCATE", "PERSIST", "WAL", "WAL, rows in its -wal"))
    page_size = rng.choice((1024, 4096, 8192))
    counts[f"journal mode {mode}"] += 1
    if mode == "WAL, rows in its -wal":
        # a writer that has not closed: copy the file and its -wal as it leaves them if it dies now
        staging = trial.root / "staging.db"
        conn = sqlite3.connect(staging, isolation_level=None)
        conn.execute(f"PRAGMA page_size = {page_size}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        names = _fill_foreign(conn, rng, page_size)
        want = _contents(conn)
        trial.path.write_bytes(staging.read_bytes())
        files.side_file(trial.path, "-wal").write_bytes(files.side_file(staging, "-wal").read_bytes())
        conn.close()
        for p in trial.root.glob("staging.db*"):
            p.unlink()
    else:
        conn = sqlite3.connect(trial.path, isolation_level=None)
        conn.execute(f"PRAGMA page_size = {page_size}")
        conn.execute(f"PRAGMA journal_mode = {mode}")
        names = _fill_foreign(conn, rng, page_size)
        want = _contents(conn)
        conn.close()
    trial.path.chmod(rng.choice((0o600, 0o644)))
    wal = mode.startswith("WAL")
    trial.snap()
    entry = trial.draw(("with_connection", "engine", "URL"))
    counts[f"via {entry}"] += 1
    shown = sorted(set(names))[0]
    _expect(
        trial,
        _entry_points(trial.ws, trial.path)[entry],
        tinycortex_sa.ForeignDatabaseError,
        (str(trial.path), shown),
    )
    forget(trial.ws)
    db = trial.mt + "chunks.db"
    if wal:  # checked after the pragmas: the file's header may change, and its -wal be folded in
        trial.judge(new=_fresh(trial), changing=frozenset({db, db + "-wal", db + "-shm"}))
    else:
        trial.judge(new={db + "-journal": _empty_file})
    conn = sqlite3.connect(files.file_uri(trial.path, "ro"), uri=True)
    try:
        got = _contents(conn)
    finally:
        conn.close()
    if got != want:
        missing = sum(len(set(r) - set(got["rows"].get(t, []))) for t, r in want["rows"].items())
        if missing:
            trial.result.lost += 1
        trial.problem(f"its tables are not as they were ({missing} rows missing)")


# -- 4. the group moves as one ---------------------------------------------------------------------


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def _candidate(stamp: str, n: int) -> str:
    return f"{KEPT}{stamp}" + ("" if n == 1 else f"-{n}")


def _obstacles(trial: Trial, rng: random.Random, stamps: list[str], counts: Counter[str]) -> int:
    """Take random names among the first candidates of each stamp; return how many were taken."""
    directory = trial.path.parent
    taken = 0
    layout = [(n, s) for n in range(1, rng.randint(1, 4)) for s in ("", *SIDES) if rng.random() < 0.3]
    kinds = [rng.choice(("dangling link", "link to a file", "file", "directory", "fifo")) for _ in layout]
    for stamp in stamps:
        for (n, suffix), kind in zip(layout, kinds, strict=True):
            p = directory / (_candidate(stamp, n) + suffix)
            if kind == "dangling link":
                p.symlink_to(trial.root / f"nowhere-{taken}")
            elif kind == "link to a file":
                real = trial.root / f"real-{taken}"
                real.write_bytes(rng.randbytes(rng.randrange(1, 500)))
                p.symlink_to(real)
            elif kind == "file":
                p.write_bytes(rng.randbytes(rng.randrange(0, 500)))
            elif kind == "directory":
                p.mkdir()
            else:
                os.mkfifo(p)
            taken += 1
            counts[f"a name taken by a {kind}"] += 1
    return taken


FAILURES: dict[str, Callable[[Path, Path], BaseException]] = {
    "FileExistsError": lambda src, dst: KeptFileExistsError(str(dst)),
    "ENOSPC": lambda src, dst: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst)),
    "EDQUOT": lambda src, dst: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(src), None, str(dst)),
    "EIO": lambda src, dst: OSError(errno.EIO, os.strerror(errno.EIO), str(src), None, str(dst)),
    "EACCES": lambda src, dst: PermissionError(
        errno.EACCES, os.strerror(errno.EACCES), str(src), None, str(dst)
    ),
}


def _group_move(trial: Trial, rng: random.Random, counts: Counter[str]) -> None:
    trial.result.faults += 1
    present, _ = _damaged_group(trial, rng)
    how = trial.draw(("aside.quarantine", "an open"))
    if how == "aside.quarantine":
        when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 10**8))
        stamps = [_stamp(when)]
    else:
        now = datetime.now(UTC)
        stamps = [_stamp(now + timedelta(seconds=s)) for s in range(-1, 5)]
    taken = _obstacles(trial, rng, stamps, counts)
    member: Path | None = None
    failure = ""
    if rng.random() < 0.6:
        member = files.side_file(trial.path, rng.choice(["", *present]))
        failure = trial.draw(tuple(FAILURES))
        trial.result.faults += 1
        counts[f"the rename of {member.name} failing ({failure})"] += 1
    counts[f"via {how}" + (", a rename failing" if member else "")] += 1
    trial.snap()
    expected_name = _first_free_before(trial, stamps[0])
    with _failing_rename(member, FAILURES[failure] if failure else FAILURES["EIO"]) as calls:
        try:
            if how == "aside.quarantine":
                moved = aside.quarantine(trial.path, clock=lambda: when)
                trial.check(moved.name == expected_name, f"kept as {moved.name}, not {expected_name}")
            else:
                tinycortex_sa.with_connection(trial.ws, lambda c: None)
        except Exception as err:
            if member is None:
                trial.problem(f"failed with no failure injected: {type(err).__name__}: {err}")
            elif how == "aside.quarantine":
                want = FAILURES[failure](member, member)
                trial.check(type(err) is type(want), f"{type(err).__name__}, not the injected {failure}")
            else:
                error = (
                    tinycortex_sa.DiskFullError
                    if failure in ("ENOSPC", "EDQUOT")
                    else tinycortex_sa.OpenError
                )
                trial.check(isinstance(err, error), f"{type(err).__name__} is not a {error.__name__}: {err}")
                trial.check(str(trial.path) in str(err), f"the error does not name the file: {err}")
            notes = getattr(err, "__notes__", [])
            trial.check(not notes, f"a rename back failed: {notes}")
        else:
            trial.check(member is None, f"no error, with the rename of {member} failing")
        finally:
            forget(trial.ws)
    if member is not None and member not in calls:
        trial.problem(f"{member.name} was never renamed")
    if member is not None:
        trial.judge()
        return
    after = _snapshot(trial.root)
    target = _new_kept_name(trial, after)
    if target is None:
        trial.judge()
        return
    if how == "an open":
        stamp = target[len(KEPT) :].split("-")[0]
        trial.check(target == _first_free_before(trial, stamp), f"kept as {target}: not the first free name")
    if taken:
        counts["kept under a later name, past taken ones"] += target != _candidate(stamps[0], 1)
    trial.judge(_group_moves(trial, present, target), _fresh(trial) if how == "an open" else None)
    if how == "an open":
        _chunk_db_at(trial)
    else:
        trial.check(not trial.path.exists(), "quarantine left a file at the database path")


def _first_free_before(trial: Trial, stamp: str) -> str:
    """The first candidate of ``stamp`` none of whose names was taken before the trial."""
    n = 1
    while any(trial.mt + _candidate(stamp, n) + s in trial.before for s in ("", *SIDES)):
        n += 1
    return _candidate(stamp, n)


# -- 5. a check that cannot run: a hot journal ----------------------------------------------------

HOT = r"""
import os, sqlite3, sys
rows, size, kill = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=TRUNCATE"); c.execute("PRAGMA cache_size=2")
c.execute("CREATE TABLE t(x)")
c.execute("BEGIN"); c.executemany("INSERT INTO t VALUES (?)", [(os.urandom(size),) for _ in range(rows)])
c.execute("COMMIT"); c.execute("BEGIN"); c.execute("UPDATE t SET x = randomblob(?)", (size + 100,))
if kill == "exit":
    os._exit(9)
print("dirty", flush=True)
sys.stdin.read()
"""


def _hot_journal(path: Path, rng: random.Random) -> str:
    how = rng.choice(("exit", "SIGKILL"))
    args = [sys.executable, "-c", HOT, str(path), str(rng.randint(100, 400)), str(rng.randint(300, 900)), how]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if how == "SIGKILL":
        assert proc.stdout is not None
        proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return "os._exit" if how == "exit" else "SIGKILL"


def _inconclusive(trial: Trial, rng: random.Random, counts: Counter[str]) -> None:
    trial.result.faults += 1
    trial.path.parent.mkdir(parents=True)
    counts[f"writer ended by {_hot_journal(trial.path, rng)}"] += 1
    journal = files.side_file(trial.path, "-journal")
    if not trial.check(journal.exists() and journal.stat().st_size > 0, "the writer left no hot journal"):
        return
    trial.snap()
    check = aside.quick_check(trial.path, rng.choice((50, 100, 1000)))
    trial.check(
        check.inconclusive is not None and check.damage is None and "interrupted transaction" in str(check),
        f"quick_check of a hot journal is not inconclusive: {check}",
    )
    code, out, err = _cli("recover", str(trial.ws))
    trial.check(code == 1 and out == "", f"recover exited {code}: {out[:200]}")
    trial.check("could not run" in err and "--force" in err, f"recover does not say why and how: {err[:300]}")
    trial.judge()  # nothing changed
    code, out, err = _cli("recover", str(trial.ws), "--force")
    trial.check(code == 0 and "(--force)" in out, f"recover --force exited {code}: {err.strip()[:300]}")
    after = _snapshot(trial.root)
    target = _new_kept_name(trial, after)
    if target is None:
        trial.judge()
        return
    counts["kept by recover --force, journal beside it"] += 1
    trial.judge(_group_moves(trial, ["-journal"], target), _fresh(trial))
    _chunk_db_at(trial)


# -- 6. bad paths and limits -----------------------------------------------------------------------

POOL = ("pool_size", "max_overflow", "pool_timeout", "pool_use_lifo")
BAD_PATHS = (
    "NUL in path",
    "NUL in URL",
    "URL ending in /",
    "pool argument",
    "dangling link (file)",
    "dangling link (memory_tree)",
    "no space while quarantining",
)


def _bad_path(trial: Trial, rng: random.Random, counts: Counter[str], damaged: bytes) -> None:
    kind = trial.draw(BAD_PATHS)
    counts[kind] += 1
    if rng.random() < 0.5 and not kind.startswith(("dangling", "no space")):
        (trial.ws / "memory_tree").mkdir(parents=True)  # an existing workspace beside
    trial.result.bad_inputs += 1
    root = str(trial.root)
    if kind == "NUL in path":
        name = "w" * rng.randrange(0, 5) + "\x00" + "s" * rng.randrange(0, 5)
        call = rng.choice(
            (tinycortex_sa.create_engine, lambda p: tinycortex_sa.with_connection(p, lambda c: None))
        )
        trial.snap()
        _expect(trial, lambda: call(f"{root}/{name}"), tinycortex_sa.OptionError, ("NUL byte",))
    elif kind == "NUL in URL":
        nul = rng.choice(("\x00", "%00"))
        url = f"sqlite+tinycortex:///{root}/a{nul}b/chunks.db"
        trial.snap()
        _expect(trial, lambda: sa.create_engine(url), tinycortex_sa.OptionError, ("NUL byte",))
    elif kind == "URL ending in /":
        directory = trial.root.joinpath(
            *rng.sample(("ws", "memory_tree", "deeper", "é x"), rng.randint(1, 3))
        )
        trial.snap()
        url = f"sqlite+tinycortex:///{directory}/"
        _expect(trial, lambda: sa.create_engine(url), tinycortex_sa.OptionError, ("names a directory",))
    elif kind == "pool argument":
        argument = rng.choice(POOL)
        value: Any = rng.choice((True, False)) if argument == "pool_use_lifo" else rng.randrange(0, 50)
        if rng.random() < 0.5:
            url = f"sqlite+tinycortex:///{trial.path}"
            fn: Callable[[], Any] = lambda: sa.create_engine(url, **{argument: value})  # noqa: E731
        else:
            fn = lambda: tinycortex_sa.create_engine(trial.ws, **{argument: value})  # noqa: E731
        trial.snap()
        _expect(trial, fn, tinycortex_sa.OptionError, (argument,))
    elif kind.startswith("dangling"):
        elsewhere = trial.root / rng.choice(("elsewhere", "a place with spaces", "ünï"))
        if kind == "dangling link (file)":
            trial.path.parent.mkdir(parents=True)
            if rng.random() < 0.5:
                elsewhere.mkdir()
            link, target = trial.path, elsewhere / "x.db"
        else:
            trial.ws.mkdir()
            link, target = trial.ws / "memory_tree", elsewhere
        link.symlink_to(target if rng.random() < 0.5 else Path(os.path.relpath(target, link.parent)))
        entry = rng.choice(("with_connection", "engine", "URL", "recover"))
        counts[f"dangling link via {entry}"] += 1
        trial.snap()
        if entry == "recover":
            code, _out, _err = _cli("recover", str(trial.ws))
            trial.check(code != 0, "recover exited 0 through a dangling link")
        else:
            words = (f"{link} is a symbolic link to", "which does not exist")
            _expect(trial, _entry_points(trial.ws, trial.path)[entry], tinycortex_sa.NotAFileError, words)
        trial.check(not os.path.lexists(target), f"something was created where the link points: {target}")
    else:
        trial.result.faults += 1
        trial.path.parent.mkdir(parents=True)
        if rng.random() < 0.5:
            data, _ = _not_a_database(rng)
            trial.path.write_bytes(data)
            present = [s for s in SIDES if rng.random() < 0.5]
            for suffix in present:
                files.side_file(trial.path, suffix).write_bytes(_side_bytes(rng)[0])
        else:  # a chunk DB with a page size of 3 bytes: SQLite's "file is not a database"
            trial.path.write_bytes(damaged)
            present = ["-journal"]
            files.side_file(trial.path, "-journal").write_bytes(b"")
        member = files.side_file(trial.path, rng.choice(["", *present]))
        number = rng.choice((errno.ENOSPC, errno.EDQUOT))
        full = FAILURES["ENOSPC" if number == errno.ENOSPC else "EDQUOT"]
        counts[f"{errno.errorcode[number]} at the rename of {member.name}"] += 1
        trial.snap()
        with _failing_rename(member, full):
            _expect(
                trial,
                lambda: tinycortex_sa.with_connection(trial.ws, lambda c: c.execute("SELECT 1").fetchall()),
                tinycortex_sa.DiskFullError,
                (str(trial.path.parent),),
            )
    forget(trial.ws)
    trial.judge()


# -- the scenario -----------------------------------------------------------------------------------


def _damaged_chunk_db(ctx: Context) -> bytes:
    """The bytes of a chunk DB at head whose header says a page size of 3 bytes."""
    path = prepare_head(ctx.tmp / "base")
    data = bytearray(path.read_bytes())
    data[16:18] = b"\x00\x03"
    return bytes(data)


def run(ctx: Context) -> Result:
    result = Result("not-ours", "12. Files that are not ours; side files kept")
    rng = ctx.rng("not-ours")
    per_class = ctx.n(2, 40)
    schedule = [cls for cls in CLASSES for _ in range(per_class)]
    rng.shuffle(schedule)
    devices = os.geteuid() == 0 and _can_mknod(ctx.tmp)
    if not devices:
        result.notes.append("device nodes skipped: making one needs root")
    damaged = _damaged_chunk_db(ctx)
    counts: dict[str, Counter[str]] = {cls: Counter() for cls in CLASSES}
    draw = Draw(rng)
    trials: Counter[str] = Counter()
    for t, cls in enumerate(schedule):
        trial = Trial(ctx, result, cls, t, draw)
        trials[cls] += 1
        c = counts[cls]
        try:
            if cls == "side-files-kept":
                _side_files_kept(trial, rng, c)
            elif cls == "not-a-file":
                _not_a_file(trial, rng, c, devices)
            elif cls == "foreign-db":
                _foreign_db(trial, rng, c)
            elif cls == "group-move":
                _group_move(trial, rng, c)
            elif cls == "inconclusive":
                _inconclusive(trial, rng, c)
            else:
                _bad_path(trial, rng, c, damaged)
        except Exception as err:  # the trial itself broke: say where, and go on
            trial.problem(f"the trial failed: {type(err).__name__}: {err}")
        finally:
            if not trial.hung:
                forget(trial.ws)
    for cls in CLASSES:
        detail = ", ".join(f"{label} {n}" for label, n in sorted(counts[cls].items()) if n)
        result.notes.append(f"{cls}: {trials[cls]} trials ({detail})")
    return result
