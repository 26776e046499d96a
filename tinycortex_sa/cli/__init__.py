"""The ``tinycortex-sa`` command line (also ``python -m tinycortex_sa``).

A thin layer over the library: ``status`` and ``doctor`` read the file
read-only (:mod:`.inspect`, :mod:`.doctor`); ``upgrade`` and ``recover``
open it through the connection core (:mod:`.repair`, with :mod:`.progress`);
``demo`` is ``make demo`` (:mod:`.demo`).  Errors are one
line on stderr; ``--debug`` adds the traceback and the library's debug log.

Exit status: 0 success; 1 unhealthy, unreadable or refused (``doctor`` found
a problem, ``status`` could not read the file, ``recover`` was given a
healthy file); 2 bad usage; 3 the command failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..schema.version import HEAD

if TYPE_CHECKING:
    from .inspect import Status

# Everything else (SQLAlchemy and Alembic with it) is imported by the command that needs it, after
# the arguments are parsed: `--version` and `--help` stay fast.

PROG = "tinycortex-sa"


def format_status(status: Status) -> list[str]:
    """The human-readable ``status`` report."""
    lines = [f"workspace     {status.workspace}"]
    if status.file is None:
        lines.append(f"database      {status.database} (absent)")
    else:
        lines.append(f"database      {status.database} ({status.file.size} bytes, mode {status.file.mode})")
    if status.revision_state is not None:
        note = {
            "head": "head",
            "behind": f"behind head {HEAD}",
            "unversioned": "not under Alembic: new, or written by the Rust core",
            "unknown": f"unknown here, newer code wrote it; this version's head is {HEAD}",
        }[status.revision_state]
        lines.append(f"revision      {status.revision or 'none'} ({note})")
        lines.append(f"user_version  {status.user_version}")
        lines.append(
            f"journal mode  {status.journal_mode_in_use} (what tinycortex_sa and the Rust core run in)"
        )
        if status.file_mode is not None:
            wal = "; the next open switches it" if status.file_mode == "wal" else ""
            lines.append(f"file mode     {status.file_mode} (the header's persistent mode{wal})")
        lines.append("file pragmas  " + " ".join(f"{k}={v}" for k, v in status.pragmas.items()))
    sides = [f"{f.path} ({f.size} bytes)" for f in status.side_files]
    lines.append("side files    " + (", ".join(sides) or "none"))
    kept = [f"{f.path} ({f.size} bytes)" for f in status.quarantined]
    lines.append("quarantined   " + (", ".join(kept) or "none"))
    if status.tables is None:
        lines.append("rows          not counted (--fast)")
    elif status.tables:
        lines.append("rows")
        for table, count in status.tables.items():
            lines.append(f"  {table:34s} {'missing' if count is None else count}")
    if status.error:
        lines.append(f"error         {status.error}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from . import inspect

    status = inspect.collect_status(args.workspace, count_rows=not args.fast)
    if args.json:
        print(json.dumps(dataclasses.asdict(status), indent=2, default=str))
    else:
        print("\n".join(format_status(status)))
    return 0 if status.error is None else 1


def doctor_summary(problems: int, warnings: int, strict: bool) -> str:
    """The last line of ``doctor``: healthy, or what made it fail."""
    if not problems and not warnings:
        return "healthy"
    if not problems and not strict:
        return f"healthy, with {warnings} warning(s)"
    counts = [f"{problems} problem(s)"] if problems else []
    counts += [f"{warnings} warning(s)"] if warnings else []
    return " and ".join(counts) + " found" + (" (--strict: warnings fail)" if strict and warnings else "")


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose

    findings = diagnose(args.workspace, progress=sys.stderr)
    problems = sum(f.severity == "problem" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    healthy = not problems and not (args.strict and warnings)
    if args.json:
        report = {
            "healthy": healthy,
            "strict": args.strict,
            "problems": problems,
            "warnings": warnings,
            "findings": [dataclasses.asdict(f) for f in findings],
        }
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(f.line() for f in findings))
        print(doctor_summary(problems, warnings, args.strict))
    return 0 if healthy else 1


def _options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The library options given on the command line, validated by :func:`options.parse`."""
    from ..options import parse

    return parse({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})


def cmd_upgrade(args: argparse.Namespace) -> int:
    options = _options(args, ("busy_timeout", "embedding_model", "embedding_dim", "content_root", "create"))
    live = not args.no_progress and sys.stderr.isatty()
    from .repair import upgrade

    print("\n".join(upgrade(args.workspace, options, sys.stderr, live)))
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from .repair import recover

    recover(args.workspace, args.force, _options(args, ("busy_timeout",)), say=_say)
    return 0


def _say(line: str) -> None:
    """Print a step as it happens; a closed stdout must not stop a recovery half-way."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    # what the Python docs advise for SIGPIPE: point stdout at devnull so later writes are harmless
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def cmd_demo(args: argparse.Namespace) -> int:
    from .repair import run_demo

    return run_demo(args.workspace)


def cmd_backup(args: argparse.Namespace) -> int:
    from .backup import cmd_backup as run

    return run(args)


def cmd_sync(args: argparse.Namespace) -> int:
    from .sync import cmd_sync as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs"
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Inspect, check, upgrade and recover a TinyCortex chunk DB "
        "(WORKSPACE/memory_tree/chunks.db).",
        epilog="Exit status: 0 ok; 1 unhealthy, unreadable or refused; 2 bad usage; 3 failed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (schema head {HEAD})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    p = command(
        "status",
        cmd_status,
        "Show revision, user_version, journal modes, pragmas, side files and row counts (read-only).",
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--fast", action="store_true", help="skip the row counts (slow on a large file)")
    p = command(
        "doctor", cmd_doctor, "Check integrity, foreign keys, schema, side files and modes (read-only)."
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--strict", action="store_true", help="fail on warnings too, not only on problems")
    p = command(
        "upgrade", cmd_upgrade, "Bring the database to Alembic head (the automatic upgrade, run now)."
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument(
        "--busy-timeout", dest="busy_timeout", metavar="MS", help="wait for other processes' locks"
    )
    p.add_argument("--embedding-model", dest="embedding_model", metavar="NAME", help="for data migration 1")
    p.add_argument("--embedding-dim", dest="embedding_dim", metavar="N", help="for data migration 1")
    p.add_argument("--content-root", dest="content_root", metavar="PATH", help="for data migration 2")
    p.add_argument("--no-progress", action="store_true", help="plain step lines, even on a terminal")
    p.add_argument(
        "--no-create",
        dest="create",
        action="store_const",
        const=False,
        help="refuse a missing database instead of creating one (a deploy on an existing workspace)",
    )
    p = command(
        "recover", cmd_recover, "Keep a corrupt database aside as <name>.corrupt-<UTC time> and rebuild."
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--force", action="store_true", help="move the file aside even if quick_check passes")
    p.add_argument(
        "--busy-timeout", dest="busy_timeout", metavar="MS", help="wait for other processes' locks"
    )
    p = command(
        "backup",
        cmd_backup,
        "Copy the database to a new file, consistently, while other processes keep writing it.",
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("dest", metavar="DEST", help="a new file, or a directory: then DEST/chunks-<UTC time>.db")
    p.add_argument(
        "--busy-timeout", dest="busy_timeout", metavar="MS", help="wait for other processes' locks"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line, even on a terminal")
    p = command(
        "sync",
        cmd_sync,
        "Copy the database into PostgreSQL + pgvector, sending what changed since the last sync.",
    )
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("url", metavar="URL", help="postgresql://user@host/db (psycopg 3)")
    p.add_argument("--schema", metavar="NAME", help="default: tc_<workspace folder>_<8 hex of its path>")
    p.add_argument("--check", action="store_true", help="compare both sides instead (exit 1 if they differ)")
    p.add_argument("--adopt", action="store_true", help="let a schema synced from a moved file take this one")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--no-progress", action="store_true", help="no progress line, even on a terminal")
    p.add_argument(
        "--busy-timeout", dest="busy_timeout", metavar="MS", help="wait for other processes' locks"
    )
    p = command(
        "demo", cmd_demo, "Open a workspace through two engines, write and read (what `make demo` runs)."
    )
    p.add_argument("workspace", metavar="WORKSPACE", nargs="?", help="default: demo-workspace")
    return parser


def one_line(err: BaseException) -> str:
    """The error as one line: the library's messages already name the file and the fix."""
    from ..errors import CliError, TinyCortexError

    cause = getattr(err, "orig", None)  # SQLAlchemy's DBAPIError: the driver's message says it
    text = str(cause if isinstance(cause, BaseException) else err)
    if not isinstance(err, (CliError, TinyCortexError, OSError)):
        text = f"{type(cause if isinstance(cause, BaseException) else err).__name__}: {text}"
    return " ".join(text.split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    library_log = logging.getLogger("tinycortex_sa")
    level = library_log.level
    if debug:
        logging.basicConfig(format="%(levelname)s [%(name)s] %(message)s")
        library_log.setLevel(logging.DEBUG)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): the report was cut, say nothing more
        _silence_stdout()
        return 1
    except Exception as err:
        from ..errors import CliError, Refused, TinyCortexError

        if debug:
            traceback.print_exc()
        known = isinstance(err, (CliError, TinyCortexError, OSError))
        hint = "" if known or debug else " (run with --debug for the traceback)"
        label = "" if isinstance(err, Refused) else "error: "
        print(f"{PROG}: {label}{one_line(err)}{hint}", file=sys.stderr)
        return err.exit_code if isinstance(err, CliError) else 3
    finally:
        library_log.setLevel(level)


if __name__ == "__main__":
    raise SystemExit(main())
