"""AsyncEngine and AsyncSession on the file's one shared connection, as an asyncio service uses them.

Every test runs its coroutine with ``asyncio.run`` (no plugin): a fresh loop per
test, closed at the end, as a service's lifetime would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from frameworks.chunk_rows import new_chunk
from helpers import chunk_ids, copy_fixture, db_file, lock_held_elsewhere, raw
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

import tinycortex_sa
from tinycortex_sa import (
    CheckoutTimeoutError,
    NestedCheckoutError,
    ReadOnlyError,
    StatementBusyError,
    models,
)
from tinycortex_sa.connection import registry

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


def run(coro: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro())  # type: ignore[arg-type]


def _handle(ws: Path) -> Any:
    handle = registry.existing_handle(db_file(ws))
    assert handle is not None
    return handle


def _descriptors_on(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself used
            n += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return n


class Ticker:
    """A task that wakes every ``period`` seconds and records how late each wake-up was."""

    def __init__(self, period: float = 0.002) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.lags.append(loop.time() - due)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)


def test_async_session_crud_on_a_copy_of_the_rust_fixture(tmp_path: Path) -> None:
    ws = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    before = chunk_ids(db_file(ws))

    async def main() -> tuple[set[str], str]:
        engine = tinycortex_sa.create_async_engine(ws)
        try:
            async with AsyncSession(engine) as session:
                chunks = (await session.scalars(sa.select(models.Chunk))).all()
                assert {c.id for c in chunks} == before
                added = new_chunk("async-test", "written through an AsyncSession")
                added_id, first_id = added.id, chunks[0].id
                session.add(added)
                chunks[0].content = chunks[0].content + " (edited)"
                await session.commit()
            async with AsyncSession(engine) as session:
                got = await session.get(models.Chunk, added_id)
                assert got is not None and got.content == "written through an AsyncSession"
                await session.delete(got)
                await session.commit()
            async with engine.connect() as conn:
                edited = (
                    await conn.execute(sa.select(models.Chunk.content).where(models.Chunk.id == first_id))
                ).scalar_one()
            return set(chunk_ids(db_file(ws))), edited
        finally:
            await engine.dispose()

    ids, edited = run(main)
    assert ids == before and edited.endswith(" (edited)")
    with raw(ws) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_url_form_migrates_a_legacy_file_off_the_event_loop(tmp_path: Path) -> None:
    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")

    async def main() -> tuple[int, float]:
        engine = sa_create_async_engine(f"sqlite+tinycortex:///{db_file(ws)}?busy_timeout=2000")
        try:
            with Ticker(0.005) as ticker:
                async with engine.connect() as conn:
                    version = (await conn.exec_driver_sql("PRAGMA user_version")).scalar_one()
            return int(version), ticker.worst
        finally:
            await engine.dispose()

    version, worst = run(main)
    assert version == 2
    assert worst < 0.25, f"the migration blocked the event loop for {worst:.3f}s"
    assert _handle(ws).options.busy_timeout == 2000


def test_sync_and_async_engines_and_with_connection_share_one_connection(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sync_engine = tinycortex_sa.create_engine(ws)

    async def main() -> list[object]:
        engine = tinycortex_sa.create_async_engine(ws)
        other = tinycortex_sa.create_async_engine(ws)
        try:
            seen: list[object] = []
            for eng in (engine, other):
                async with eng.connect() as conn:
                    seen.append((await conn.get_raw_connection()).driver_connection)
            await other.dispose()  # one engine's dispose leaves the others' connection open
            async with engine.connect() as conn:
                seen.append((await conn.get_raw_connection()).driver_connection)
                await conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks"))
            return seen
        finally:
            await engine.dispose()

    with sync_engine.connect() as conn:
        shared = conn.connection.dbapi_connection
    seen = run(main)
    seen.append(tinycortex_sa.with_connection(ws, lambda c: c))
    assert all(c is shared for c in seen)
    handle = _handle(ws)
    assert handle.opens == 1
    assert _descriptors_on(db_file(ws)) == 1
    sync_engine.dispose()


def test_nested_use_in_one_task_fails_fast_and_child_tasks_are_not_nested(tmp_path: Path) -> None:
    ws = tmp_path / "ws"

    async def main() -> tuple[float, str]:
        engine = tinycortex_sa.create_async_engine(ws, checkout_timeout=5)
        try:
            async with engine.connect() as outer:
                await outer.execute(sa.text("SELECT 1"))
                start = time.monotonic()
                with pytest.raises(NestedCheckoutError, match="already holds the connection"):
                    async with engine.connect():
                        pass
                fast = time.monotonic() - start

                async def child() -> str:  # a task started here copies this context, lease included
                    async with AsyncSession(engine) as session:
                        return str((await session.execute(sa.text("SELECT 'child'"))).scalar_one())

                task = asyncio.create_task(child())
                await asyncio.sleep(0.05)
                assert not task.done()  # waiting for the connection, not refused as nested
            return fast, await task
        finally:
            await engine.dispose()

    fast, child = run(main)
    assert fast < 0.5 and child == "child"


def test_checkout_timeout_is_honoured_while_the_loop_keeps_running(tmp_path: Path) -> None:
    ws = tmp_path / "ws"

    async def main() -> tuple[float, float, str]:
        engine = tinycortex_sa.create_async_engine(ws, checkout_timeout=0.3)
        try:
            held = asyncio.Event()
            release = asyncio.Event()

            async def holder() -> None:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
                    held.set()
                    await release.wait()

            task = asyncio.create_task(holder())
            await held.wait()
            with Ticker() as ticker:
                start = time.monotonic()
                with pytest.raises(CheckoutTimeoutError) as info:
                    async with engine.connect():
                        pass
                waited = time.monotonic() - start
            release.set()
            await task
            return waited, ticker.worst, str(info.value)

        finally:
            await engine.dispose()

    waited, worst, message = run(main)
    assert 0.25 <= waited < 2.0 and "checkout_timeout=0.3s" in message
    assert worst < 0.15, f"waiting blocked the loop for {worst:.3f}s"  # blocking would be the 0.3 s wait


def test_two_hundred_concurrent_tasks_every_row_present(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    n = 200

    async def main() -> tuple[list[str], list[int], float]:
        engine = tinycortex_sa.create_async_engine(ws, checkout_timeout=60)
        rng = random.Random(20261202)
        written: list[str] = []
        counts: list[int] = []
        try:

            async def one(i: int) -> None:
                if rng.random() < 0.5:
                    async with AsyncSession(engine, expire_on_commit=False) as session:
                        chunk = new_chunk(f"task-{i}", f"row {i}")
                        session.add(chunk)
                        await session.commit()
                        written.append(chunk.id)  # expire_on_commit=False below
                else:
                    async with engine.connect() as conn:
                        counts.append(
                            (await conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks"))).scalar_one()
                        )

            with Ticker() as ticker:
                await asyncio.gather(*(one(i) for i in range(n)))
            return written, counts, ticker.worst
        finally:
            await engine.dispose()

    written, counts, worst = run(main)
    assert len(written) + len(counts) == n
    assert set(written) <= chunk_ids(db_file(ws)) and len(chunk_ids(db_file(ws))) == len(written)
    assert counts == sorted(counts)  # first come, first served: each read sees every earlier write
    assert worst < 0.25, f"the loop stalled for {worst:.3f}s"


def test_cancelled_waiters_leave_no_lease_and_a_cancelled_holder_is_rolled_back(tmp_path: Path) -> None:
    ws = tmp_path / "ws"

    async def main() -> float:
        engine = tinycortex_sa.create_async_engine(ws)
        handle = None
        try:
            held = asyncio.Event()

            async def holder() -> None:
                async with AsyncSession(engine) as session:
                    session.add(new_chunk("cancelled", "never committed"))
                    await session.flush()  # inside a transaction now
                    held.set()
                    await asyncio.sleep(30)

            async def waiter() -> None:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))

            hold = asyncio.create_task(holder())
            await held.wait()
            waiters = [asyncio.create_task(waiter()) for _ in range(20)]
            await asyncio.sleep(0.05)
            handle = _handle(ws)
            assert len(handle._queue) == 20
            for task in waiters:
                task.cancel()
            hold.cancel()
            await asyncio.gather(hold, *waiters, return_exceptions=True)
            assert not handle.held and not handle._queue  # nothing left behind
            start = time.monotonic()
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.text("SELECT count(*) FROM mem_tree_chunks WHERE source_id = 'cancelled'")
                    )
                ).scalar_one()
            assert rows == 0
            return time.monotonic() - start
        finally:
            await engine.dispose()

    assert run(main) < 0.5  # the next checkout works at once


def test_cancelling_a_long_statement_interrupts_it_and_rolls_back(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    tinycortex_sa.with_connection(ws, lambda c: None)

    async def main() -> tuple[float, int]:
        engine = tinycortex_sa.create_async_engine(ws)
        try:

            async def long_write() -> None:
                async with engine.begin() as conn:
                    await conn.execute(sa.text("CREATE TABLE scratch(x)"))
                    await conn.execute(
                        sa.text(
                            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 50000000) "
                            "INSERT INTO scratch SELECT i FROM n"
                        )
                    )

            task = asyncio.create_task(long_write())
            await asyncio.sleep(0.3)
            start = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with engine.connect() as conn:
                tables = (
                    await conn.execute(sa.text("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'"))
                ).scalar_one()
            return time.monotonic() - start, int(tables)
        finally:
            await engine.dispose()

    took, tables = run(main)
    assert tables == 0  # the whole transaction rolled back
    assert took < 2.0, f"the cancelled statement ran on for {took:.2f}s"


def test_cancellation_storm_loses_nothing_acknowledged(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    rng = random.Random(7)

    async def main() -> tuple[set[str], int]:
        engine = tinycortex_sa.create_async_engine(ws, checkout_timeout=60)
        acknowledged: set[str] = set()
        cancelled = 0
        try:

            async def write(i: int) -> None:
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    chunk = new_chunk("storm", f"storm {i}")
                    session.add(chunk)
                    await session.commit()
                acknowledged.add(chunk.id)

            for _ in range(5):
                tasks = [asyncio.create_task(write(i)) for i in range(40)]
                for _ in range(15):
                    await asyncio.sleep(rng.random() * 0.004)
                    victim = rng.choice(tasks)
                    cancelled += victim.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            handle = _handle(ws)
            assert not handle.held and not handle._queue
            return acknowledged, cancelled
        finally:
            await engine.dispose()

    acknowledged, cancelled = run(main)
    on_disk = chunk_ids(db_file(ws))
    assert cancelled > 0 and acknowledged <= on_disk
    with raw(ws) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_read_only_and_busy_errors_are_the_same_types_as_sync(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    tinycortex_sa.with_connection(ws, lambda c: None, busy_timeout=200)

    async def main() -> float:
        reader = tinycortex_sa.create_async_engine(ws, read_only=True, busy_timeout=200)
        try:
            async with reader.connect() as conn:
                with pytest.raises(ReadOnlyError):
                    await conn.execute(sa.text("DELETE FROM mem_tree_chunks"))
            with lock_held_elsewhere(db_file(ws), "BEGIN EXCLUSIVE"), Ticker() as ticker:
                async with reader.connect() as conn:
                    with pytest.raises(StatementBusyError):
                        await conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks"))
            return ticker.worst
        finally:
            await reader.dispose()

    assert run(main) < 0.15  # busy_timeout's 0.2 s wait ran on the worker, not on the loop


EXITS = textwrap.dedent(
    """
    import asyncio, sys, threading
    import sqlalchemy as sa
    import tinycortex_sa

    async def main():
        engine = tinycortex_sa.create_async_engine(sys.argv[1])
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks"))
        # no dispose(), as many services end

    asyncio.run(main())
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    print("non-daemon:", left, flush=True)
    """
)


def test_a_process_that_used_an_async_engine_exits_at_once_without_dispose(tmp_path: Path) -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXITS, str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "non-daemon: []" in done.stdout
    assert took < 10, f"exit took {took:.1f}s"


def test_a_forked_child_uses_its_own_connection_through_an_async_engine(tmp_path: Path) -> None:
    ws = tmp_path / "ws"

    async def write(tag: str) -> int:
        engine: AsyncEngine = tinycortex_sa.create_async_engine(ws)
        try:
            async with AsyncSession(engine) as session:
                session.add(new_chunk(tag, f"from {tag}"))
                await session.commit()
            async with engine.connect() as conn:
                return int((await conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks"))).scalar_one())
        finally:
            await engine.dispose()

    assert asyncio.run(write("parent")) == 1
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = 0 if asyncio.run(write("child")) == 2 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert asyncio.run(write("parent-again")) == 3


def test_a_session_left_open_by_an_event_loop_shutting_down_is_reclaimed(tmp_path: Path) -> None:
    """A request cancelled as its server stops (uvicorn's --timeout-graceful-shutdown): the loop's end
    cancels SQLAlchemy's close task before it ever runs, so nothing gives the connection back. Its task
    is done and its loop closed: the next caller reclaims it and its transaction is rolled back."""
    ws = tmp_path / "ws"

    async def main() -> None:
        engine = tinycortex_sa.create_async_engine(ws)

        async def request() -> None:
            async with AsyncSession(engine) as session:
                session.add(new_chunk("cancelled", "never committed"))
                await session.flush()
                await asyncio.sleep(60)

        task = asyncio.create_task(request())
        await asyncio.sleep(0.3)
        task.cancel()
        await engine.dispose()  # the lifespan's shutdown, before the cancelled request has finished

    asyncio.run(main())
    start = time.monotonic()
    with tinycortex_sa.create_engine(ws, checkout_timeout=5).connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM mem_tree_chunks")).scalar_one()
    assert rows == 0 and time.monotonic() - start < 2.0


def test_the_breaker_and_open_errors_are_the_same_for_async_engines(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    path = db_file(ws)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # not a database file: refused before anything opens it, and counted by the breaker

    async def main() -> tuple[str, str]:
        engine = tinycortex_sa.create_async_engine(ws, breaker_threshold=1, breaker_cooldown=60)
        seen: list[str] = []
        try:
            for _ in range(2):
                try:
                    async with engine.connect():
                        pass
                except tinycortex_sa.TinyCortexError as err:
                    seen.append(type(err).__name__)
            return seen[0], seen[1]
        finally:
            await engine.dispose()

    first, second = run(main)
    assert (first, second) == ("NotAFileError", "CircuitOpenError")


def test_a_task_cancelled_during_the_first_open_keeps_the_lease_until_the_open_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open (and its migration) runs on the worker; a cancelled opener must not hand the lease
    to the next task while it runs, or that task would open the file a second time."""
    from tinycortex_sa.schema import upgrade

    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    real = upgrade.initialise

    def slow_initialise(*args: Any, **kw: Any) -> None:
        time.sleep(0.3)
        real(*args, **kw)

    monkeypatch.setattr(upgrade, "initialise", slow_initialise)

    async def main() -> tuple[int, bool]:
        engine = tinycortex_sa.create_async_engine(ws)
        try:

            async def use() -> object:
                async with engine.connect() as conn:
                    return (await conn.get_raw_connection()).driver_connection

            first = asyncio.create_task(use())
            await asyncio.sleep(0.1)  # the open is running on the worker
            second = asyncio.create_task(use())
            await asyncio.sleep(0.05)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            got = await second
            handle = _handle(ws)
            return handle.opens, got is handle.conn
        finally:
            await engine.dispose()

    opens, same = run(main)
    assert opens == 1 and same
    assert tinycortex_sa.with_connection(ws, lambda c: c.execute("PRAGMA user_version").fetchone()) == (2,)
