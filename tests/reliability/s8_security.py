"""Security items 8-10.

8. Files: a database file and its ``memory_tree`` directory created by
   tinycortex_sa are 0600 and 0700 under any umask, and so is SQLite's
   ``-journal`` beside it; a quarantined copy keeps the original's mode
   (0600, 0640, 0644 tried) and the fresh file that replaces it is 0600; a
   stale ``-wal`` kept aside keeps its mode.
9. SQL: the audit of :mod:`.sql_audit` (every SQL call site in the package
   and the migrations traced to a literal, a fixed list or a reviewed site);
   option values shaped like SQL are refused by type before use; an
   embedding model name full of quotes reaches the data migration only as a
   bound parameter (stored verbatim, every table intact).
10. Logs: every scenario captures all ``tinycortex_sa`` log records (this
   process's and its workers') and fails on any that contains chunk content;
   here a migration whose chunks hold the content token runs at DEBUG.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import tinycortex_sa
from tinycortex_sa import db_path_for

from .common import TOKEN, Context, Result, content, copy_fixture, forget, prepare_head, sha256
from .sql_audit import audit


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def run(ctx: Context) -> Result:
    result = Result("security", "8-10. Security: file modes, SQL audit, typed options, logs")
    _modes(ctx, result)
    _audit(result)
    _typed(ctx, result)
    return result


def _modes(ctx: Context, result: Result) -> None:
    for umask in (0o000, 0o022, 0o077, 0o002):
        old = os.umask(umask)
        try:
            ws = ctx.tmp / f"umask-{umask:03o}"
            path = prepare_head(ws)
            tinycortex_sa.with_connection(
                ws,
                lambda c: (
                    c.execute("BEGIN IMMEDIATE"),
                    c.execute("PRAGMA user_version = 2"),
                    c.execute("COMMIT"),
                ),
            )
            forget(ws)
        finally:
            os.umask(old)
        result.trials += 1
        journal = path.with_name("chunks.db-journal")
        result.check(_mode(path) == 0o600, f"umask {umask:03o}: database file is {oct(_mode(path))}")
        result.check(
            _mode(path.parent) == 0o700, f"umask {umask:03o}: memory_tree is {oct(_mode(path.parent))}"
        )
        result.check(
            not journal.exists() or _mode(journal) == 0o600,
            f"umask {umask:03o}: -journal is {oct(_mode(journal))}",
        )
    for mode in (0o600, 0o640, 0o644):
        ws = ctx.tmp / f"quarantine-{mode:o}"
        (ws / "memory_tree").mkdir(parents=True, mode=0o700)
        path = db_path_for(ws)
        path.write_bytes(b"not a database " * 50)
        path.chmod(mode)
        digest = sha256(path)
        tinycortex_sa.with_connection(ws, lambda c: None)
        forget(ws)
        moved = [
            p for p in path.parent.iterdir() if ".corrupt-" in p.name and not p.name.endswith("-journal")
        ]
        result.trials += 1
        result.faults += 1
        if result.check(
            len(moved) == 1,
            f"mode {oct(mode)}: quarantine left {sorted(p.name for p in path.parent.iterdir())}",
        ):
            result.check(
                _mode(moved[0]) == mode, f"quarantined copy of a {oct(mode)} file is {oct(_mode(moved[0]))}"
            )
            result.check(sha256(moved[0]) == digest, f"quarantined copy of a {oct(mode)} file changed")
        result.check(
            _mode(path) == 0o600, f"the fresh file replacing a {oct(mode)} one is {oct(_mode(path))}"
        )
    # a stale -wal kept aside keeps its mode
    ws = ctx.tmp / "stale-wal-mode"
    path = prepare_head(ws)
    wal = path.with_name("chunks.db-wal")
    wal.write_bytes(b"\x37\x7f\x06\x82" + os.urandom(4092))
    wal.chmod(0o640)
    tinycortex_sa.with_connection(ws, lambda c: None)
    forget(ws)
    kept = [p for p in path.parent.iterdir() if p.name.startswith("chunks.db-wal.stale-")]
    result.trials += 1
    result.faults += 1
    result.check(
        len(kept) == 1 and _mode(kept[0]) == 0o640,
        f"stale -wal kept aside: {[(p.name, oct(_mode(p))) for p in kept]}",
    )


def _audit(result: Result) -> None:
    sites = audit()
    result.trials += len(sites)
    for site in sites:
        if site.verdict == "UNREVIEWED":
            result.problem(
                f"SQL built from a non-constant at {site.file}:{site.line} "
                f"({site.call} with {site.expression}): "
                "trace it to a fixed list or add it, with the reason it is safe, to REVIEWED in "
                "tests/reliability/sql_audit.py"
            )
    kinds: dict[str, int] = {}
    for site in sites:
        kind = site.verdict.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    result.notes.append(
        f"SQL audit: {len(sites)} non-literal SQL sites: "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    )


INJECTIONS = [
    ("busy_timeout", "0; DROP TABLE mem_tree_chunks"),
    ("busy_timeout", "1000 -- "),
    ("breaker_threshold", "1) OR (1=1"),
    ("embedding_dim", "768; ATTACH DATABASE '/tmp/x' AS x"),
    ("on_corrupt", "quarantine'; --"),
    ("auto_migrate", "true; DELETE FROM alembic_version"),
    ("checkout_timeout", "1e3; VACUUM"),
]


def _typed(ctx: Context, result: Result) -> None:
    ws = ctx.tmp / "typed"
    ws.mkdir()
    for name, value in INJECTIONS:
        result.bad_inputs += 1
        try:
            tinycortex_sa.with_connection(ws, lambda c: None, **{name: value})
            result.problem(f"option {name}={value!r} was accepted")
        except tinycortex_sa.OptionError as err:
            result.check(
                repr(name) in str(err), f"option {name}={value!r}: the error does not name it: {err}"
            )
        except Exception as err:
            result.problem(f"option {name}={value!r}: {type(err).__name__} instead of OptionError: {err}")
    result.check(not (ws / "memory_tree").exists(), "an option refused by type still created files")
    # a model name full of SQL reaches the data migration as a bound parameter only
    ws = copy_fixture("rust-legacy-v0", ctx.tmp / "quoted-model")
    path = db_path_for(ws)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE mem_tree_chunks SET content = ? || content", (content(TOKEN, "legacy") + " ",))
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    model = "evil'); DROP TABLE mem_tree_chunks; --\"x"
    result.bad_inputs += 1
    tinycortex_sa.with_connection(ws, lambda c: None, embedding_model=model)
    forget(ws)
    conn = sqlite3.connect(path)
    after = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    signatures = {
        r[0] for r in conn.execute("SELECT DISTINCT model_signature FROM mem_tree_chunk_embeddings")
    }
    check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    result.check(set(tables) <= after, f"a quoted embedding_model changed the tables: {set(tables) - after}")
    result.check(f"{model}@768" in signatures, f"the quoted model name was not stored verbatim: {signatures}")
    result.check(check == "ok", f"integrity_check after the quoted model: {check}")
