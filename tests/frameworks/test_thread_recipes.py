"""Threads sharing one engine, as applications write them: a pool of workers, a Session handed over, a leak.

The recipes of docs/frameworks.md without a web framework: a ``ThreadPoolExecutor`` whose tasks
each open ``with Session(engine) as session:``; a Session opened and used on one thread, then
finished and closed on another while a third waits its turn; and a thread that ends holding a
Session it never closed.
"""

from __future__ import annotations

import functools
import gc
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from chunk_rows import new_chunk
from load_client import stored_ids
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.models import Chunk

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
"""Upper bound for waits that are expected to end at once."""


def count(session: Session) -> int:
    return int(session.scalar(sa.select(sa.func.count()).select_from(Chunk)) or 0)


def opened(workspace: Path, **options: Any) -> sa.Engine:
    """An engine on ``workspace``, its database opened (and migrated) once."""
    engine = tinycortex_sa.create_engine(workspace, **options)
    with engine.connect():
        pass
    return engine


class Worker(threading.Thread):
    """A thread that keeps its target's exception (and result) for the test to check."""

    def __init__(self, target: Callable[[], Any], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None
        self.result: Any = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as err:
            self.error = err


@contextmanager
def collector_off() -> Iterator[None]:
    """Automatic garbage collection off: only an explicit ``gc.collect()`` frees a reference cycle."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@pytest.mark.slow
def test_thread_pool_tasks_each_with_their_own_session(workspace: Path) -> None:
    engine = opened(workspace)
    tasks = 400

    def task(n: int) -> str:
        with Session(engine) as session:
            chunk = new_chunk(f"task-{n % 8}", f"written by task {n}")
            chunk_id = chunk.id
            session.add(chunk)
            session.commit()
            # a read in the same Session: a new transaction, the connection checked out again
            assert session.get(Chunk, chunk_id) is not None
        return chunk_id

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="task") as pool:
        futures = [pool.submit(task, n) for n in range(tasks)]
        ids = [future.result(timeout=WAIT * 3) for future in futures]  # re-raises a task's error

    assert len(set(ids)) == tasks
    assert set(ids) <= stored_ids(tinycortex_sa.db_path_for(workspace))
    with Session(engine) as session:
        assert count(session) == tasks


def test_session_handed_to_another_thread(workspace: Path) -> None:
    """A reads (checking the connection out), hands the Session to B, which writes, commits and
    closes it; C, asking meanwhile, waits and gets the connection after B's commit; A then opens a
    new Session at once.  No NestedCheckoutError anywhere."""
    engine = opened(workspace, checkout_timeout=WAIT)
    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    assert handle is not None
    handoff: queue.Queue[Session] = queue.Queue()
    a_reading, c_asking, b_done, c_done = (threading.Event() for _ in range(4))
    times: dict[str, float] = {}

    def a() -> float:
        session = Session(engine)
        assert count(session) == 0  # the Session now holds the connection, checked out on A
        assert handle.held
        a_reading.set()
        handoff.put(session)
        assert b_done.wait(WAIT) and c_done.wait(WAIT)
        start = time.monotonic()
        with Session(engine) as again:
            assert count(again) == 1
        return time.monotonic() - start

    def b() -> None:
        session = handoff.get(timeout=WAIT)
        assert c_asking.wait(WAIT)
        time.sleep(0.3)  # C is queued by now
        session.add(new_chunk("handed", "written on B in A's Session"))
        times["b_commit"] = time.monotonic()
        session.commit()  # the end of the transaction gives the connection back, here on B
        session.close()
        times["b_closed"] = time.monotonic()
        b_done.set()

    def c() -> int:
        assert a_reading.wait(WAIT)
        c_asking.set()
        with Session(engine) as session:
            seen = count(session)  # waits for the connection
            times["c_got"] = time.monotonic()
        c_done.set()
        return seen

    threads = [Worker(a, "A"), Worker(b, "B"), Worker(c, "C")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    for thread in threads:
        assert not thread.is_alive(), f"thread {thread.name} is stuck"
        assert thread.error is None, f"thread {thread.name}: {thread.error!r}"
    thread_a, _, thread_c = threads
    assert times["c_got"] > times["b_commit"], "C got the connection while B's transaction was open"
    assert thread_c.result == 1, "C did not see B's committed row"
    assert thread_a.result < 1.0, f"A waited {thread_a.result:.2f}s for a connection nobody held"
    assert not handle.held


def test_a_handed_over_session_is_the_receivers_from_its_first_statement(workspace: Path) -> None:
    """Until the receiver runs a statement on it, nothing tells a handed-over Session from one its
    thread still uses: opening another fails fast then (waiting could deadlock).  From the
    receiver's first statement on, the thread that handed it over waits like any other."""
    engine = opened(workspace, checkout_timeout=WAIT)
    handoff: queue.Queue[Session] = queue.Queue()
    used, go = threading.Event(), threading.Event()

    def receiver() -> None:
        session = handoff.get(timeout=WAIT)
        count(session)  # the receiver's first statement
        used.set()
        assert go.wait(WAIT)
        time.sleep(0.3)
        session.add(new_chunk("handed", "written by the receiver"))
        session.commit()
        session.close()

    thread = Worker(receiver, "receiver")
    thread.start()
    session = Session(engine)
    count(session)  # checked out here
    with pytest.raises(tinycortex_sa.NestedCheckoutError):
        Session(engine).connection()  # still this thread's as far as anyone can tell
    handoff.put(session)
    assert used.wait(WAIT)
    go.set()
    try:
        started = time.monotonic()
        with Session(engine) as mine:  # not nested any more: it waits for the receiver
            assert count(mine) == 1
        assert time.monotonic() - started >= 0.2
    finally:
        thread.join(WAIT * 2)
    assert thread.error is None


@pytest.mark.filterwarnings("default::sqlalchemy.exc.SAWarning")
def test_thread_ending_with_an_unclosed_session(workspace: Path) -> None:
    """A Session left open in a reference cycle by a thread that ends: the next caller gets the
    connection within seconds (the handle runs the garbage collector once the holder's thread has
    ended), and new threads, one of which may reuse the ended thread's id, hold nothing."""
    engine = opened(workspace, checkout_timeout=WAIT)
    handle = registry.existing_handle(tinycortex_sa.db_path_for(workspace))
    assert handle is not None

    def leak() -> tuple[int, weakref.ref[Session]]:
        session = Session(engine)
        session.info["self"] = session  # a reference cycle: only the garbage collector frees it
        count(session)  # checks the connection out; never closed
        return threading.get_ident(), weakref.ref(session)

    # SQLAlchemy versions that warn when the collector returns a connection say so as an SAWarning,
    # which the suite turns into an error: shown instead (the mark), so the connection does come back
    with collector_off():
        leaker = Worker(leak, "leaker")
        leaker.start()
        leaker.join(WAIT)
        assert leaker.error is None and not leaker.is_alive()
        ended_ident, leaked = leaker.result
        assert leaked() is not None and handle.held, "the leaked Session holds the connection"

        def write(n: int) -> tuple[int, float]:
            start = time.monotonic()
            with Session(engine) as session:
                session.add(new_chunk("after-leak", f"write {n}"))
                session.commit()
            return threading.get_ident(), time.monotonic() - start

        after: list[Worker] = []
        for n in range(4):  # one after another: each new thread may get the ended thread's id
            worker = Worker(functools.partial(write, n), f"after-{n}")
            worker.start()
            worker.join(WAIT * 2)
            after.append(worker)

    for worker in after:
        assert not worker.is_alive(), f"{worker.name} is stuck"
        assert worker.error is None, f"{worker.name}: {worker.error!r}"
    waits = [worker.result[1] for worker in after]
    assert waits[0] < 5.0, f"the first caller after the leak waited {waits[0]:.1f}s"
    assert max(waits[1:]) < 1.0, f"later callers waited {waits}"
    assert leaked() is None, "the connection came back without the garbage collector freeing the Session"
    reused = [worker.name for worker in after if worker.result[0] == ended_ident]
    print(f"first wait {waits[0]:.2f}s; threads that reused the ended thread's id: {reused or 'none'}")
    with Session(engine) as session:
        assert count(session) == 4
    assert not handle.held
