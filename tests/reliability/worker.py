"""Worker processes of the reliability scenarios: ``python worker.py ROLE JSON-ARGS``.

A standalone script (no package imports), so that it runs the way an
application does: a fresh interpreter that imports tinycortex_sa.  Progress
goes to stdout one line at a time (flushed, so that a SIGKILL loses at most
the line being written); the final report is one JSON line.  Every record of
the ``tinycortex_sa`` loggers goes to the file named by ``log`` (flushed per
record), so the parent can check that no log line carries chunk content.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import signal
import sqlite3
import sys
import threading
import time
import traceback
from typing import Any

# Everything a privilege-dropped worker needs is imported before it drops them: the
# interpreter and the virtualenv live under /root, which uid 65534 cannot read.
import alembic.command
import alembic.config  # noqa: F401
import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa import models


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def report(data: dict[str, Any]) -> None:
    out(json.dumps(data))


def setup_logging(path: str | None) -> None:
    if not path:
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("tinycortex_sa")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)


def content(token: str, n: object) -> str:
    return f"private note {token} #{n}: met Alice at the clinic about the results"


def chunk(i: object, token: str, source: str, seq: int = 0, size: int = 1) -> models.Chunk:
    now = int(time.time() * 1000)
    return models.Chunk(
        id=f"chunk-{i}",
        source_kind="chat",
        source_id=source,
        owner="user",
        timestamp_ms=now,
        time_range_start_ms=now,
        time_range_end_ms=now,
        content=content(token, i),
        token_count=size,
        seq_in_source=seq,
        created_at_ms=now,
    )


def describe(err: BaseException) -> str:
    return f"{type(err).__module__}.{type(err).__name__}: {err}"


# -- roles ---------------------------------------------------------------------------------------


def writer(a: dict[str, Any]) -> None:
    """Commit small transactions through a Session forever; print ``C txn first last`` after each."""
    rng = random.Random(a["seed"])
    engine = tinycortex_sa.create_engine(a["ws"])
    txn, next_id = a["first_txn"], a["first_id"]
    out("S")
    while True:
        size = rng.choice((1, 1, 1, 2, 5, 20))
        first = next_id
        with Session(engine) as session:
            for k in range(size):
                c = chunk(next_id, a["token"], f"txn-{txn}", seq=k, size=size)
                c.embeddings.append(
                    models.ChunkEmbedding(
                        model_signature="reliability@4", vector=(1.0, 2.0, 3.0, float(k)), dim=4
                    )
                )
                session.add(c)
                next_id += 1
            session.commit()
        out(f"C {txn} {first} {next_id - 1}")
        txn += 1


def migrate(a: dict[str, Any]) -> None:
    """Open a workspace (running its automatic upgrade); print O before and D after."""
    engine = tinycortex_sa.create_engine(a["ws"])
    out("O")
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    out("D")


def contender(a: dict[str, Any]) -> None:
    """Read-then-write transactions through Sessions, counting waits and errors."""
    engine = tinycortex_sa.create_engine(a["ws"], busy_timeout=a["busy_timeout"])
    reader = engine.execution_options(tinycortex_begin="deferred")
    rng = random.Random(a["seed"])
    name = a["name"]
    done, errors, locked, waits, reads = 0, [], 0, [], 0
    out("S")
    deadline = time.monotonic() + a.get("start_in", 0)
    while time.monotonic() < deadline:
        time.sleep(0.001)
    for i in range(a["n"]):
        start = time.monotonic()
        try:
            if rng.random() < 0.25:  # a read-only transaction under a deferred BEGIN
                with Session(reader) as session:
                    session.execute(sa.text("SELECT count(*) FROM mem_tree_chunks")).scalar()
                reads += 1
            with Session(engine) as session:
                seen = session.execute(
                    sa.text("SELECT count(*) FROM mem_tree_chunks WHERE source_id = :s"), {"s": name}
                ).scalar_one()
                session.add(chunk(f"{name}-{i}", a["token"], name, seq=int(seen)))
                if a.get("hold_ms"):
                    time.sleep(rng.uniform(0, a["hold_ms"]) / 1000)
                session.commit()
            done += 1
        except Exception as err:
            text = describe(err)
            locked += "locked" in text or "busy" in text.lower()
            errors.append(text[:300])
        waits.append(time.monotonic() - start)
    report(
        {"done": done, "reads": reads, "errors": errors, "locked": locked, "max_wait": max(waits, default=0)}
    )


def rustlike(a: dict[str, Any]) -> None:
    """A plain sqlite3 process standing in for the Rust core: its pragmas, BEGIN IMMEDIATE, busy timeout."""
    conn = sqlite3.connect(a["path"], timeout=a["busy_timeout"] / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(a['busy_timeout'])}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA journal_mode = TRUNCATE")
    rng = random.Random(a["seed"])
    done, errors, locked, waits = 0, [], 0, []
    name = a["name"]
    out("S")
    for i in range(a["n"]):
        start = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            seen = conn.execute(
                "SELECT count(*) FROM mem_tree_chunks WHERE source_id = ?", (name,)
            ).fetchone()[0]
            now = int(time.time() * 1000)
            conn.execute(
                "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, "
                "time_range_start_ms, time_range_end_ms, content, token_count, seq_in_source, created_at_ms) "
                "VALUES (?, 'chat', ?, 'user', ?, ?, ?, ?, 1, ?, ?)",
                (f"chunk-{name}-{i}", name, now, now, now, content(a["token"], f"{name}-{i}"), seen, now),
            )
            if a.get("hold_ms"):
                time.sleep(rng.uniform(0, a["hold_ms"]) / 1000)
            conn.execute("COMMIT")
            done += 1
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            text = describe(err)
            locked += "locked" in text or "busy" in text.lower()
            errors.append(text[:300])
        waits.append(time.monotonic() - start)
    conn.close()
    report({"done": done, "errors": errors, "locked": locked, "max_wait": max(waits, default=0)})


def holder(a: dict[str, Any]) -> None:
    """Hold a lock (BEGIN IMMEDIATE or EXCLUSIVE) until a line arrives on stdin."""
    conn = sqlite3.connect(a["path"], isolation_level=None)
    conn.execute(f"BEGIN {a['mode']}")
    if a["mode"] == "EXCLUSIVE":
        conn.execute("CREATE TABLE IF NOT EXISTS holder_probe (x)")
    out("held")
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
    out("released")


def hotjournal(a: dict[str, Any]) -> None:
    """Write a big transaction with a tiny page cache (pages spill into the file); wait for SIGKILL."""
    conn = sqlite3.connect(a["path"], isolation_level=None)
    conn.execute("PRAGMA journal_mode = TRUNCATE")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = 4")
    conn.execute("BEGIN IMMEDIATE")
    now = int(time.time() * 1000)
    for i in range(a["rows"]):
        conn.execute(
            "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, "
            "time_range_start_ms, time_range_end_ms, content, token_count, seq_in_source, created_at_ms) "
            "VALUES (?, 'chat', 'uncommitted', 'user', ?, ?, ?, ?, 1, ?, ?)",
            (f"uncommitted-{i}", now, now, now, content(a["token"], f"u{i}") * 8, i, now),
        )
    conn.execute(
        "UPDATE mem_tree_chunks SET content = 'overwritten, never committed' WHERE source_id != 'uncommitted'"
    )
    out("dirty")
    time.sleep(600)


def walcrash(a: dict[str, Any]) -> None:
    """Commit rows in WAL mode, then die without a checkpoint: every row is only in the -wal."""
    conn = sqlite3.connect(a["path"], isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    now = int(time.time() * 1000)
    for i in range(a["rows"]):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO mem_tree_chunks (id, source_kind, source_id, owner, timestamp_ms, "
            "time_range_start_ms, time_range_end_ms, content, token_count, seq_in_source, created_at_ms) "
            "VALUES (?, 'chat', 'wal', 'user', ?, ?, ?, ?, 1, ?, ?)",
            (f"wal-{a['tag']}-{i}", now, now, now, content(a["token"], f"w{i}"), i, now),
        )
        conn.execute("COMMIT")
    out("committed")
    os._exit(0)  # no close: no checkpoint, the -wal stays


def opener(a: dict[str, Any]) -> None:
    """Arrive while another process may be recovering the file: open, write rows, report which committed."""
    deadline = a["start_at"]
    while time.time() < deadline:
        time.sleep(0.0005)
    committed, errors = [], []
    for i in range(a["n"]):
        try:
            engine = tinycortex_sa.create_engine(a["ws"])
            with Session(engine) as session:
                session.add(chunk(f"{a['name']}-{i}", a["token"], a["name"]))
                session.commit()
            committed.append(f"chunk-{a['name']}-{i}")
        except Exception as err:
            # prefixed with the write's key, so the scenario can look for the write after it
            errors.append(f"{a['name']}-{i}: " + describe(err)[:300])
            if not isinstance(err, tinycortex_sa.DatabaseMovedError):
                tinycortex_sa.invalidate(a["ws"])  # a moved file must recover without it: the promise
            time.sleep(0.05)
    report({"committed": committed, "errors": errors})


def stayer(a: dict[str, Any]) -> None:
    """Open the file and write (the connection stays open), then on each stdin line write once more.

    Stands for another application process that has the file open while this
    one finds damage and quarantines it.  Prints ``ready`` after the first write
    and one JSON line per later write; exits at end of input.
    """
    engine = tinycortex_sa.create_engine(a["ws"])
    with Session(engine) as session:
        session.add(chunk(f"{a['name']}-open", a["token"], a["name"]))
        session.commit()
    out("ready")
    for n, _ in enumerate(sys.stdin):
        key = f"{a['name']}-{n}"
        try:
            with Session(engine) as session:
                session.add(chunk(key, a["token"], a["name"]))
                session.commit()
            report({"id": f"chunk-{key}", "ok": True})
        except Exception as err:
            code = getattr(getattr(err, "orig", err), "sqlite_errorcode", None)
            report({"id": f"chunk-{key}", "ok": False, "error": describe(err)[:300], "code": code})


def _import_everything() -> None:
    """Import every module of the library (its public names are otherwise imported on first use)."""
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(tinycortex_sa.__path__, "tinycortex_sa."):
        if not module.name.startswith(("tinycortex_sa.migrations", "tinycortex_sa.cli.demo")):
            importlib.import_module(module.name)
    for name in tinycortex_sa.__all__:
        getattr(tinycortex_sa, name)


def badenv(a: dict[str, Any]) -> None:
    """Run one bad-environment case, optionally as another user or under a file-size limit."""
    if a.get("fsize") is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (a["fsize"], resource.RLIM_INFINITY))
    if a.get("uid") is not None:
        _import_everything()  # the interpreter and the package live under /root: unreadable afterwards
        os.setgroups([])
        os.setgid(a["uid"])
        os.setuid(a["uid"])
    outcome: dict[str, Any] = {"uid": os.getuid()}
    try:
        if a["action"] == "open":
            tinycortex_sa.with_connection(a["ws"], lambda c: c.execute("SELECT 1").fetchone())
        elif a["action"] == "write":
            engine = tinycortex_sa.create_engine(a["ws"])
            with Session(engine) as session:
                for i in range(a.get("rows", 1)):
                    session.add(
                        chunk(f"bad-{i}", a["token"], "bad") if a.get("small") else _big(i, a["token"])
                    )
                session.commit()
        outcome["ok"] = True
    except Exception as err:
        outcome.update(
            ok=False,
            type=type(err).__name__,
            mro=[c.__name__ for c in type(err).__mro__],
            message=str(err),
        )
    if a.get("snapshot"):  # the database directory as the failed call left it, before anything else runs
        outcome["files_after_error"] = files_state(os.path.join(a["ws"], "memory_tree"))
    if a.get("then_free") and a.get("fsize") is not None:  # free the space, then the next call must work
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        try:
            engine = tinycortex_sa.create_engine(a["ws"])
            with Session(engine) as session:
                session.add(chunk("after-free", a["token"], "bad"))
                session.commit()
            outcome["after_free"] = "ok"
        except Exception as err:
            outcome["after_free"] = describe(err)
    outcome["breaker"] = tinycortex_sa.breaker_state(a["ws"]).state
    report(outcome)


def purgekill(a: dict[str, Any]) -> None:
    """Open a legacy workspace (its upgrade runs) and die by SIGKILL at one point of revision 0005.

    ``at="moved"``: right after the retired summary folders were moved aside,
    before the marker is set and the transaction commits.  ``at="committed"``:
    after the commit, where the moved-aside folders would be removed.  Prints
    ``{"dying": at}`` first.
    """
    from tinycortex_sa.schema import purge

    def die(*args: Any) -> None:
        report({"dying": a["at"]})
        os.kill(os.getpid(), signal.SIGKILL)

    if a["at"] == "committed":
        purge.remove_aside = die
    elif a["at"] == "moved":
        move_aside = purge.move_aside

        def move_then_die(*args: Any, **kwargs: Any) -> Any:
            move_aside(*args, **kwargs)
            die()

        purge.move_aside = move_then_die
    else:
        raise ValueError(f"unknown point {a['at']!r}")
    tinycortex_sa.with_connection(a["ws"], lambda c: c.execute("SELECT 1").fetchone())
    report({"dying": None})


def files_state(directory: str) -> dict[str, list[Any]]:
    """The files directly in ``directory``: name -> [mode, sha256] (as tree_state of common.py)."""
    import hashlib
    import stat

    state: dict[str, list[Any]] = {}
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        st = os.lstat(full)
        if stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                state[name] = [stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest()]
    return state


def _big(i: int, token: str) -> models.Chunk:
    c = chunk(f"big-{i}", token, "bad")
    c.content = content(token, i) + "x" * 200_000
    return c


class Paced:
    """``ready``, then ``go`` on stdin; over at ``stop`` (or end of input), after ``seconds`` or ``n``.

    The same protocol as the processes of ``plain_sqlite.py``, so that a
    scenario starts and stops both kinds together.
    """

    def __init__(self, a: dict[str, Any]) -> None:
        self.n = int(a["n"])
        self.stop = threading.Event()
        out("ready")
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go on stdin")
        self.deadline = time.monotonic() + float(a["seconds"])
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        sys.stdin.readline()
        self.stop.set()

    def going(self, done: int) -> bool:
        return done < self.n and not self.stop.is_set() and time.monotonic() < self.deadline

    def pace(self, next_at: float, period: float) -> float:
        delay = next_at - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)
        return max(next_at + period, time.monotonic())


def coreader(a: dict[str, Any]) -> None:
    """Read transactions in a loop (Session.get and a SELECT) beside another process's writes.

    ``read_only`` chooses the engine: ``read_only=True`` (BEGIN DEFERRED under
    ``PRAGMA query_only``) or the default engine (BEGIN EXCLUSIVE, reads included).
    ``begin`` (optional) is the engine's ``tinycortex_begin`` execution option.
    """
    engine = tinycortex_sa.create_engine(a["ws"], read_only=bool(a["read_only"]))
    if a.get("begin"):
        engine = engine.execution_options(tinycortex_begin=a["begin"])
    rng = random.Random(a["seed"])
    ids = [f"chunk-{a['prefix']}-{k}" for k in range(a["rows"])]
    missing, errors, failures = 0, [], 0

    def read() -> bool:
        key = rng.choice(ids)
        with Session(engine) as session:
            found = session.get(models.Chunk, key)
            totals = session.execute(sa.select(models.Score.total).where(models.Score.chunk_id == key)).all()
        return found is not None and len(totals) == 1

    read()
    run = Paced(a)
    reads = 0
    while run.going(reads):
        reads += 1
        try:
            missing += not read()
        except Exception as err:
            failures += 1
            if len(errors) < 5:
                errors.append(describe(err)[:300])
    report({"reads": reads, "missing": missing, "failures": failures, "errors": errors})


def cowriter(a: dict[str, Any]) -> None:
    """Small write transactions through Sessions at a fixed rate: one new chunk, then commit.

    ``begin`` (optional) is the engine's ``tinycortex_begin`` execution option.
    """
    engine = tinycortex_sa.create_engine(a["ws"])
    if a.get("begin"):
        engine = engine.execution_options(tinycortex_begin=a["begin"])
    name, token, period = a["name"], a["token"], a["period_ms"] / 1000
    committed: list[str] = []
    errors: list[str] = []

    def write(key: str, seq: int) -> None:
        with Session(engine) as session:
            session.add(chunk(key, token, name, seq=seq))
            session.commit()
        committed.append(f"chunk-{key}")

    write(f"{name}-warm", -1)
    run = Paced(a)
    i = 0
    next_at = time.monotonic()
    while run.going(i):
        next_at = run.pace(next_at, period)
        if not run.going(i):
            break
        try:
            write(f"{name}-{i}", i)
        except Exception as err:
            if len(errors) < 5:
                errors.append(describe(err)[:300])
        i += 1
    report({"attempted": i, "committed": committed, "errors": errors})


ROLES = {
    f.__name__: f
    for f in (
        writer,
        migrate,
        contender,
        rustlike,
        holder,
        hotjournal,
        walcrash,
        opener,
        stayer,
        badenv,
        purgekill,
        coreader,
        cowriter,
    )
}


def main() -> None:
    role, args = sys.argv[1], json.loads(sys.argv[2])
    setup_logging(args.get("log"))
    try:
        ROLES[role](args)
    except Exception as err:
        report({"fatal": describe(err), "traceback": traceback.format_exc()})
        sys.exit(2)


if __name__ == "__main__":
    main()
