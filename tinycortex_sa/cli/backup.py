"""``tinycortex-sa backup``: :func:`tinycortex_sa.backups.backup` with a progress line on a terminal.

On a terminal (stderr a TTY) one live line shows the pages copied so far and
the total, and is cleared at the end; elsewhere nothing but the result line
is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from .. import backups
from ..options import parse
from .inspect import database_of
from .progress import LiveLine


class PagesLine:
    """A live ``backing up SOURCE: copied/total pages`` line on ``stream``."""

    def __init__(self, stream: TextIO, source: Path) -> None:
        self.line = LiveLine(stream)
        self.source = source

    def __call__(self, copied: int, total: int) -> None:
        self.line(f"backing up {self.source}: {copied}/{total} pages")

    def clear(self) -> None:
        self.line.clear()


def run(workspace: str, dest: str, busy_timeout: str | None, stream: TextIO, live: bool) -> str:
    """Back the workspace's chunk DB up to ``dest``; return the line that says what was written."""
    source = database_of(workspace)  # refuses a file given as the workspace, as the other commands do
    options = parse({} if busy_timeout is None else {"busy_timeout": busy_timeout})
    line = PagesLine(stream, source) if live else None
    try:
        result = backups.backup(workspace, dest, progress=line, **options)
    finally:
        if line is not None:
            line.clear()
    return (
        f"backed up {result.source} to {result.dest} ({result.bytes} bytes, {result.pages} pages, "
        f"quick_check {result.quick_check}, {result.seconds:.1f}s)"
    )


def cmd_backup(args: argparse.Namespace) -> int:
    live = not args.no_progress and sys.stderr.isatty()
    print(run(args.workspace, args.dest, args.busy_timeout, sys.stderr, live))
    return 0
