"""``python -m tests.reliability [--full] [--only NAME[,NAME]] [--seed N]``: run and print the table.

Exits 1 if any scenario lost data or broke a promise.  ``make reliability``
runs ``--full`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time

from . import SCENARIOS, run_scenario
from .common import Result

HEADER = ("scenario", "trials", "faults injected", "bad inputs tried", "lost", "result", "reproduce")


def table(results: list[Result]) -> str:
    rows = [HEADER, tuple("---" for _ in HEADER)]
    for r in results:
        rows.append(
            (
                r.title,
                str(r.trials),
                str(r.faults),
                str(r.bad_inputs),
                str(r.lost),
                (f"FAILED ({len(r.problems)})" if not r.ok else "ok")
                + (f", {len({g.rsplit(' -- ', 1)[-1] for g in r.gaps})} known gap(s)" if r.gaps else ""),
                f"`{r.reproduce}`",
            )
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--full", action="store_true", help="the large counts of make reliability")
    scale.add_argument("--quick", action="store_true", help="the small counts of the test suite (default)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every scenario's notes")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results = []
    start = time.monotonic()
    for name in names:
        print(f"-- {name} ...", flush=True)
        result = run_scenario(name, full=args.full, seed=args.seed)
        results.append(result)
        print(
            result.summary() if (args.verbose or not result.ok) else result.summary().splitlines()[0],
            flush=True,
        )
    print()
    print(table(results))
    print()
    gaps = [(r.name, g) for r in results for g in r.gaps]
    if gaps:
        print("Known gaps (left as they are; docs/reliability.md says why, and the fix each needs):")
        seen = set()
        for name, gap in gaps:
            fix = gap.rsplit(" -- ", 1)[-1]
            if (name, fix) not in seen:
                seen.add((name, fix))
                count = sum(1 for n, g in gaps if n == name and g.rsplit(" -- ", 1)[-1] == fix)
                print(f"  {name}: {count} case(s): {fix}")
        print()
    total_lost = sum(r.lost for r in results)
    print(
        f"{len(results)} scenarios, {sum(r.trials for r in results)} trials, "
        f"{sum(r.faults for r in results)} faults injected, {sum(r.bad_inputs for r in results)} bad inputs, "
        f"lost {total_lost}, {sum(r.log_lines for r in results)} log lines checked for chunk content, "
        f"{time.monotonic() - start:.0f}s (seed {args.seed}, {'full' if args.full else 'quick'})"
    )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
