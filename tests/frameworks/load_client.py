"""A bounded HTTP load on the chunk API the framework apps serve, and what it saw.

The API (the same for the FastAPI and the Flask app):

- ``POST /chunks`` ``{"source_id": ..., "content": ...}`` → 201 ``{"id": ...}``: one chunk, committed;
- ``GET /chunks/{id}`` → 200, the chunk (404 if absent: counted as an error, only ids the server
  acknowledged are asked for);
- ``GET /chunks?source_id=...&limit=...`` → 200, the newest chunks of a source.

:func:`run_load` sends a fixed number of requests (a fixed share of them ``POST``) over at most
``concurrency`` connections at once, with one deadline for the whole run, and reports every
response that is not a 200/201 (or not the chunk asked for) as an error.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SOURCES = ("inbox", "notes", "chat", "calendar")


@dataclass
class LoadResult:
    """What one load run sent and got back."""

    requests: int
    concurrency: int
    seconds: float
    posts: int = 0
    gets: int = 0
    acknowledged: list[str] = field(default_factory=list)
    """The id of every chunk a ``POST`` got a 201 for."""
    errors: list[str] = field(default_factory=list)
    """One line per failed request: method, path, status (or exception) and the start of the body."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def _load(base_url: str, requests: int, concurrency: int, write_share: float, seed: int) -> LoadResult:
    rng = random.Random(seed)
    posts = round(requests * write_share)
    kinds = ["POST"] * posts + ["GET"] * (requests - posts)
    rng.shuffle(kinds)
    plan = iter(enumerate(kinds))
    result = LoadResult(requests=requests, concurrency=concurrency, seconds=0.0)
    # an idle connection is dropped after 1 s, well before the server's keep-alive timeout (uvicorn:
    # 5 s): at the same expiry, a request sent as the server closes the connection gets no response
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=1.0
    )

    async def one(client: httpx.AsyncClient, n: int, kind: str) -> None:
        source = SOURCES[n % len(SOURCES)]
        if kind == "POST":
            result.posts += 1
            path = "/chunks"
            body = {"source_id": source, "content": f"request {n}: remember item {rng.randrange(10**6)}"}
            response = await client.post(path, json=body)
            if response.status_code == 201:
                result.acknowledged.append(response.json()["id"])
                return
        else:
            result.gets += 1
            wanted = rng.choice(result.acknowledged) if result.acknowledged and rng.random() < 0.6 else None
            path = f"/chunks/{wanted}" if wanted else f"/chunks?source_id={source}&limit=5"
            response = await client.get(path)
            if response.status_code == 200 and (wanted is None or response.json()["id"] == wanted):
                return
        result.errors.append(f"{kind} {path}: {response.status_code} {response.text[:300]!r}")

    async def worker(client: httpx.AsyncClient) -> None:
        for n, kind in plan:
            try:
                await one(client, n, kind)
            except httpx.HTTPError as err:
                result.errors.append(f"{kind} #{n}: {type(err).__name__}: {err}")

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def run_load(
    base_url: str,
    *,
    requests: int,
    concurrency: int,
    time_limit: float,
    write_share: float = 0.1,
    seed: int = 1,
) -> LoadResult:
    """Send ``requests`` requests, ``write_share`` of them ``POST``, ``concurrency`` at a time.

    Raises ``TimeoutError`` if the run takes longer than ``time_limit`` seconds.
    """

    async def bounded() -> LoadResult:
        return await asyncio.wait_for(_load(base_url, requests, concurrency, write_share, seed), time_limit)

    return asyncio.run(bounded())


def warm_up(base_url: str, timeout: float = 30.0) -> None:
    """Wait until the server answers ``GET /chunks?limit=1`` with a 200 (its database opened)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/chunks?limit=1", timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url} did not answer within {timeout:g}s")
        time.sleep(0.05)


def stored_ids(db: Path) -> set[str]:
    """Every chunk id in the database file, read with plain ``sqlite3`` (read-only)."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM mem_tree_chunks")}
    finally:
        conn.close()
