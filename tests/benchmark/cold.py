"""Benchmark sections run in fresh processes: cold start, and 1,000 workspaces in one process.

The parent starts ``python -m tests.benchmark.cold CASE ARGS...`` (from the repository root) once per
sample.  The child imports everything first (imports are excluded from the
figures), then times the case and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from tinycortex_sa import api
from tinycortex_sa.schema.version import HEAD, USER_VERSION

from .core import LOOKUP_ID, LOOKUP_SQL, LOOKUP_TEXT, Row, Settings, raw_connect, sa_engine

REPO = Path(__file__).resolve().parents[2]
COLD = "Cold start in a fresh process (imports excluded)"
SCALE = "Scale: workspaces opened in one process, each kept open"
_KEY = (LOOKUP_ID,)


# -- children ----------------------------------------------------------------------------


def _fetch(conn: sqlite3.Connection) -> Any:
    return conn.execute(LOOKUP_SQL, _KEY).fetchone()


def _engine_first_query(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(LOOKUP_TEXT, {"id": LOOKUP_ID}).fetchone()


def _preimport(migrations: bool) -> None:
    """What the first engine or migration in a process imports lazily (imports are not timed)."""
    import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401

    from tinycortex_sa import models  # noqa: F401
    from tinycortex_sa.engine import dialect  # noqa: F401

    if migrations:
        import alembic.command
        import alembic.runtime.migration
        import alembic.script  # noqa: F401


def _cold(case: str, target: Path, ddl_file: str | None) -> float:
    _preimport(migrations=case == "create_with_connection")
    ddl = Path(ddl_file).read_text() if ddl_file else ""
    start = time.perf_counter()
    if case == "first_raw":
        _fetch(raw_connect(api.db_path_for(target)))
    elif case == "first_with_connection":
        api.with_connection(target, _fetch)
    elif case == "first_engine":
        _engine_first_query(api.create_engine(target))
    elif case == "first_sa_recipe":
        _engine_first_query(sa_engine(api.db_path_for(target), QueuePool, begin_recipe=True))
    elif case == "create_raw":
        db_path = api.db_path_for(target)
        db_path.parent.mkdir(mode=0o700, parents=True)
        raw_connect(db_path).executescript(ddl)
    elif case == "create_with_connection":
        api.with_connection(target, lambda conn: None)
    else:
        raise SystemExit(f"unknown case {case!r}")
    return time.perf_counter() - start


def _rss_kib() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1])
    except OSError:
        pass
    import resource

    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # peak, not current, off Linux
    return peak / 1024 if sys.platform == "darwin" else peak


def _open_fds() -> int:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0


def _raise_fd_limit(n: int) -> None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard)
        )


def _scale(case: str, root: Path, n: int) -> dict[str, float]:
    _raise_fd_limit(n)
    workspaces = [root / f"ws{i:04d}" for i in range(n)]
    kept: list[object] = []
    rss, fds = _rss_kib(), _open_fds()
    start = time.perf_counter()
    for workspace in workspaces:
        if case == "scale_raw":
            conn = raw_connect(api.db_path_for(workspace))
            _fetch(conn)
            kept.append(conn)
        elif case == "scale_with_connection":
            api.with_connection(workspace, _fetch)
        elif case == "scale_engine":
            engine = api.create_engine(workspace)
            _engine_first_query(engine)
            kept.append(engine)
        else:
            raise SystemExit(f"unknown case {case!r}")
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "rss_kib": _rss_kib() - rss, "fds": float(_open_fds() - fds)}


def main(argv: list[str]) -> int:
    case, target = argv[0], Path(argv[1])
    if case.startswith("scale_"):
        result = _scale(case, target, int(argv[2]))
    else:
        result = {"seconds": _cold(case, target, argv[2] if len(argv) > 2 else None)}
    print(json.dumps(result))
    return 0


# -- parent ------------------------------------------------------------------------------


def _child(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmark.cold", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {args[0]} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _schema_script(workspace: Path) -> str:
    """The DDL of an at-head database as one script, the way raw sqlite3 code would create it."""
    conn = sqlite3.connect(api.db_path_for(workspace))
    try:
        ddl = [
            sql
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
            )
            if not name.startswith("sqlite_")
        ]
    finally:
        conn.close()
    return ";\n".join(
        ["BEGIN IMMEDIATE", *ddl, f"INSERT INTO alembic_version VALUES ('{HEAD}')",
         f"PRAGMA user_version = {USER_VERSION}", "COMMIT", ""]
    )  # fmt: skip


def run_cold(root: Path, at_head: Path, settings: Settings) -> list[Row]:
    """First query on an at-head database, and creating a new one, each in a fresh process."""
    ddl_file = root / "schema.sql"
    ddl_file.write_text(_schema_script(at_head))
    counter = iter(range(1_000_000))

    def fresh() -> str:
        return str(root / f"cold-new-{next(counter)}")

    cases: dict[str, list[str]] = {
        "first_raw": [str(at_head)],
        "first_with_connection": [str(at_head)],
        "first_engine": [str(at_head)],
        "first_sa_recipe": [str(at_head)],
        "create_raw": ["NEW", str(ddl_file)],
        "create_with_connection": ["NEW"],
    }
    samples: dict[str, list[float]] = {case: [] for case in cases}
    for repeat in range(settings.cold_runs + (0 if settings.quick else 1)):
        for case, args in cases.items():
            argv = [fresh() if a == "NEW" else a for a in args]
            seconds = _child(case, *argv)["seconds"]
            if settings.quick or repeat > 0:  # the first round warms the OS caches
                samples[case].append(seconds)
    us = {case: statistics.median(values) * 1e6 for case, values in samples.items()}
    spec = [
        ("first_raw", "at head: raw sqlite3 open + pragmas + lookup", "first_raw", "the floor"),
        ("first_with_connection", "at head: tinycortex_sa with_connection lookup", "first_raw",
         "open, pragmas set & verified, schema check, lookup"),
        ("first_engine", "at head: tinycortex_sa create_engine + connect + execute", "first_raw",
         "includes SQLAlchemy's first-connect dialect initialisation"),
        ("first_sa_recipe", "at head: SQLAlchemy QueuePool + BEGIN recipe, same", "first_raw",
         "SQLAlchemy's own first-connect cost"),
        ("create_raw", "new database: raw sqlite3 pragmas + the same DDL", "create_raw", "the floor"),
        ("create_with_connection", "new database: tinycortex_sa with_connection (Alembic to head)",
         "create_raw", "runs the five revisions"),
    ]  # fmt: skip
    return [Row(key, COLD, label, us[key], floor, note) for key, label, floor, note in spec]


def run_scale(root: Path, at_head: Path, settings: Settings) -> list[Row]:
    """``scale_workspaces`` workspaces opened in one fresh process: time, memory, descriptors."""
    n = settings.scale_workspaces
    scale_root = root / "scale"
    source = api.db_path_for(at_head)
    for i in range(n):
        db_path = api.db_path_for(scale_root / f"ws{i:04d}")
        db_path.parent.mkdir(parents=True)
        shutil.copyfile(source, db_path)
    labels = {
        "scale_raw": "raw sqlite3: open + pragmas + lookup, connection kept",
        "scale_with_connection": "tinycortex_sa with_connection lookup (connection cached)",
        "scale_engine": "tinycortex_sa create_engine + connect + execute (engine kept)",
    }
    samples: dict[str, list[dict[str, float]]] = {case: [] for case in labels}
    for _ in range(settings.scale_runs):
        for case in labels:
            samples[case].append(_child(case, str(scale_root), str(n)))
    result = {
        case: {k: statistics.median(s[k] for s in runs) for k in ("seconds", "rss_kib", "fds")}
        for case, runs in samples.items()
    }
    floor = result["scale_raw"]
    rows = []
    for case, label in labels.items():
        r = result[case]
        mem = f"RSS +{r['rss_kib'] / n:,.0f} KiB/workspace ({_times(r['rss_kib'], floor['rss_kib'])} raw)"
        fds = f"{r['fds'] / n:.2f} fds/workspace ({_times(r['fds'], floor['fds'])} raw)"
        total = f"{n:,}: {r['rss_kib'] / 1024:,.1f} MiB, {r['fds']:,.0f} fds"
        rows.append(
            Row(case, f"{SCALE} ({n:,}; µs to open one)", label, r["seconds"] / n * 1e6, "scale_raw",
                f"{mem}; {fds}; {total}")
        )  # fmt: skip
    return rows


def _times(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor > 0 else "n/a"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
