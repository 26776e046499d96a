"""The side-by-side benchmark: tinycortex_sa against raw sqlite3 and SQLAlchemy's own pools.

Run it on your own machine::

    python -m tests.benchmark                 # full run, a few minutes
    python -m tests.benchmark --quick         # tiny counts, seconds (checks it works)
    python -m tests.benchmark --write-docs docs/performance.md

Every figure is microseconds per operation, the median of several interleaved
repeats after a warm-up, with its ratio to the section's raw sqlite3 floor.
Databases are created in a temporary folder (``--dir`` chooses where: the
fsync-bound write figures depend on that file system).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from . import aio, cold, pgsync, reads, search, threads, webapp, writes
from .core import FULL, QUICK, Row, Settings, fill_ratios, new_workspace
from .report import judge, machine_info, render_markdown, render_text

Section = Callable[[], list[Row]]


def run(settings: Settings, root: Path, log: Callable[[str], None]) -> list[Row]:
    """Run every section in ``root``; rows in table order, ratios filled."""
    reads_ws = new_workspace(root, "reads", chunks=1000)
    template = new_workspace(root, "template")
    sections: list[tuple[str, Section]] = [
        ("reads", lambda: reads.run(root, reads_ws, settings)),
        ("bulk inserts", lambda: writes.run_bulk(root, settings)),
        ("single-row transactions", lambda: writes.run_single(root, settings)),
        ("threads", lambda: threads.run(root, settings)),
        ("cold start", lambda: cold.run_cold(root, reads_ws, settings)),
        ("scale", lambda: cold.run_scale(root, template, settings)),
        ("web app", lambda: webapp.run(root, settings)),
        ("asyncio", lambda: aio.run(root, reads_ws, settings)),
        ("similarity search", lambda: search.run(root, settings)),
        ("postgresql sync and search", lambda: pgsync.run(root, settings)),
    ]
    rows: list[Row] = []
    for name, section in sections:
        start = time.perf_counter()
        log(f"running {name}...")
        rows += section()
        log(f"  {name}: {time.perf_counter() - start:.1f}s")
    fill_ratios(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that it runs (seconds)")
    parser.add_argument("--write-docs", metavar="PATH", type=Path, help="write the results as Markdown")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write rows and targets as JSON")
    parser.add_argument("--dir", metavar="DIR", type=Path, help="where to create the databases (a temp dir)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinycortex-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        machine = machine_info(root)
        rows = run(settings, root, log)
    elapsed = time.perf_counter() - started
    verdicts = judge(rows)
    print(render_text(rows, verdicts, machine, elapsed, settings))
    if args.write_docs:
        args.write_docs.parent.mkdir(parents=True, exist_ok=True)
        args.write_docs.write_text(render_markdown(rows, verdicts, machine, elapsed, settings))
        log(f"wrote {args.write_docs}")
    if args.json:
        payload = {
            "machine": machine,
            "seconds": elapsed,
            "rows": [asdict(row) for row in rows],
            "targets": [
                {
                    "item": v.target.item,
                    "text": v.target.text,
                    "ratio": v.ratio,
                    "met": v.met,
                    "at_floor": v.at_floor,
                    "floor": v.floor,
                }
                for v in verdicts
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
