"""``tinycortex-sa sync WORKSPACE URL``: :func:`tinycortex_sa.postgres.sync`, or ``--check``.

On a terminal (stderr a TTY) one live line shows what the sync is doing and
is cleared at the end; elsewhere nothing but the summary is printed.  The
summary names what was sent, deleted and held back, table by table.
``--check`` compares both sides and exits 1 when they differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..errors import CliError
from .progress import LiveLine


class Differs(CliError):
    """``sync --check`` found differences: exit status 1."""

    exit_code = 1


def _summary(result: Any) -> list[str]:
    lines = [
        f"synced {result.db_path} into schema {result.schema}: {result.sent:,} rows sent, "
        f"{result.deleted:,} deleted, {result.held_back:,} held back ({result.seconds:.1f}s)"
    ]
    for t in result.tables:
        if t.sent or t.deleted or t.held_back:
            lines.append(
                f"  {t.table}: {t.rows:,} rows; sent {t.sent:,}, deleted {t.deleted:,}, "
                f"held back {t.held_back:,}"
            )
    if result.held_back:
        lines.append(
            "  held back: rows whose parent is not in the file (yet), with a NULL key, or with a value "
            "PostgreSQL cannot store (a NaN in a vector, a NUL in text); they are sent once they can be"
        )
    if not result.settled:
        lines.append("  the file changed during the sync: run it again to send the latest changes")
    lines.extend(f"  note: {note}" for note in result.notes)
    return lines


def _check_lines(result: Any) -> list[str]:
    lines = []
    for t in result.tables:
        state = "equal" if t.equal else "DIFFERS"
        line = (
            f"{t.table}: sqlite {t.sqlite_rows:,} rows ({t.sqlite_checksum}), postgres {t.postgres_rows:,} "
            f"rows ({t.postgres_checksum}): {state}"
        )
        lines.append(line)
        missing, extra, differing = t.counts
        for label, count, keys in (
            ("missing in PostgreSQL", missing, t.missing),
            ("only in PostgreSQL", extra, t.extra),
            ("with other values", differing, t.differing),
        ):
            if count:
                lines.append(f"  {count:,} {label}: {', '.join(keys)}{' …' if count > len(keys) else ''}")
    verdict = (
        "equal" if result.equal else "different: run `tinycortex-sa sync` to bring PostgreSQL up to date"
    )
    lines.append(f"{result.db_path} and schema {result.schema}: {verdict}")
    return lines


def cmd_sync(args: argparse.Namespace) -> int:
    from .. import postgres
    from ..options import parse

    timeout = parse({"busy_timeout": args.busy_timeout})["busy_timeout"] if args.busy_timeout else 5000
    if args.check:
        checked = postgres.check(args.workspace, args.url, schema=args.schema, busy_timeout=timeout)
        if args.json:
            print(json.dumps(dataclasses.asdict(checked), default=str, indent=2))
        else:
            print("\n".join(_check_lines(checked)))
        if not checked.equal:
            raise Differs(f"{checked.db_path} and its PostgreSQL copy (schema {checked.schema}) differ")
        return 0
    live = not args.no_progress and sys.stderr.isatty()
    line = LiveLine(sys.stderr) if live else None
    try:
        result = postgres.sync(
            args.workspace,
            args.url,
            schema=args.schema,
            adopt=args.adopt,
            progress=line,
            busy_timeout=timeout,
        )
    finally:
        if line is not None:
            line.clear()
    if args.json:
        print(json.dumps(dataclasses.asdict(result), default=str, indent=2))
    else:
        print("\n".join(_summary(result)))
    return 0
