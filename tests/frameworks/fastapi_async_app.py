"""A FastAPI application on the chunk DB with ``async def`` endpoints, as docs/frameworks.md writes it.

:func:`create_app` is the application: one ``AsyncEngine``, made at startup by the lifespan and
disposed at shutdown, and an ``AsyncSession`` per request from a dependency with ``yield``
(:func:`get_session`).  The API and its pydantic models are those of ``fastapi_app.py``, so the
client of ``load_client.py`` drives both.

Run as a script, this module serves the app with uvicorn (one worker, 127.0.0.1, a free port) until
SIGTERM or SIGINT; :func:`serve` starts that process.  The script counts, through SQLAlchemy's pool
events, the checkouts and checkins of the file's connection, and writes them to ``--stats`` at
exit with the state the connection was left in.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
runtime, as in ``fastapi_app.py``.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import tinycortex_sa
from tinycortex_sa.connection import registry
from tinycortex_sa.models import Chunk

if TYPE_CHECKING or not __package__:  # pytest puts this folder on sys.path; a script has it there
    from chunk_rows import new_chunk, newest
    from fastapi_app import ChunkIn, ChunkOut, Created, Server, _stop_with_parent
else:  # imported as tests.frameworks.fastapi_async_app
    from .chunk_rows import new_chunk, newest
    from .fastapi_app import ChunkIn, ChunkOut, Created, Server, _stop_with_parent

# -- the application ------------------------------------------------------------------------------


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` for one request, closed (its connection given back) when the request ends."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


def create_app(workspace: Path) -> FastAPI:
    """The chunk API on ``workspace`` with ``async def`` endpoints and an ``AsyncSession`` per request.

    A request holds the file's connection from its first statement until its transaction ends: a
    ``POST`` gives it back at its commit, a ``GET`` when the dependency closes its Session.  Others
    wait for it on the event loop, which keeps serving meanwhile.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = tinycortex_sa.create_async_engine(workspace)
        async with engine.connect():  # open (and migrate) the database at startup, not at the first request
            pass
        app.state.sessions = async_sessionmaker(engine)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/chunks", status_code=201)
    async def add_chunk(payload: ChunkIn, session: DbSession) -> Created:
        chunk = new_chunk(payload.source_id, payload.content)
        chunk_id = chunk.id  # read before the commit expires it (reading it after would have to query)
        session.add(chunk)
        await session.commit()
        return Created(id=chunk_id)

    @app.get("/chunks/{chunk_id}")
    async def read_chunk(chunk_id: str, session: DbSession) -> ChunkOut:
        chunk = await session.get(Chunk, chunk_id)
        if chunk is None:
            raise HTTPException(status_code=404, detail="no such chunk")
        return ChunkOut.of(chunk)

    @app.get("/chunks")
    async def list_chunks(
        session: DbSession, source_id: str | None = None, limit: int = 10
    ) -> list[ChunkOut]:
        return [ChunkOut.of(chunk) for chunk in await session.scalars(newest(source_id, limit))]

    return app


# -- serving it: the script, and the process that runs it -----------------------------------------


class CheckoutCounts:
    """Counts, through the pool events of every engine, the checkouts and checkins of connections."""

    def __init__(self) -> None:
        self.checkouts = 0
        self.checkins = 0
        self._lock = threading.Lock()  # a checkin by the garbage collector may run on any thread
        sa.event.listen(sa.pool.Pool, "checkout", self._checkout)
        sa.event.listen(sa.pool.Pool, "checkin", self._checkin)

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        with self._lock:
            self.checkouts += 1

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            self.checkins += 1


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the async chunk API on 127.0.0.1 with uvicorn.")
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    parser.add_argument("--stats", type=Path, required=True, help="where to write the counts at exit")
    args = parser.parse_args(argv)

    counts = CheckoutCounts()
    app = create_app(args.workspace)
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets whose proto says TCP
    # (fastapi_app.py has the figures)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(sock.getsockname()[1]))
    tmp.rename(args.port_file)
    config = uvicorn.Config(app, workers=1, log_level="warning", access_log=False, lifespan="on")
    # uvicorn re-raises the signal that stopped it once it has shut down: make that one a no-op so
    # that the counts below are written and the exit status is 0
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server = uvicorn.Server(config)
    threading.Thread(target=_stop_with_parent, args=(server,), name="parent-watch", daemon=True).start()
    server.run(sockets=[sock])
    # after the lifespan's engine.dispose(): the last engine on the file closes its connection
    handle = registry.existing_handle(tinycortex_sa.db_path_for(args.workspace))
    stats = {
        "checkouts": counts.checkouts,
        "checkins": counts.checkins,
        "held_at_exit": int(handle is not None and handle.held),
        "open_at_exit": int(handle is not None and handle.conn is not None),
    }
    args.stats.write_text(json.dumps(stats))
    return 0


@contextlib.contextmanager
def serve(workspace: Path, *, start_timeout: float = 30.0) -> Iterator[Server]:
    """Run this module's server on ``workspace`` in a child process; stopped (killed if need be) on exit."""
    with tempfile.TemporaryDirectory(prefix="tinycortex-serve-async-") as tmp:
        run = Path(tmp)
        port_file, log = run / "port", run / "server.log"
        command = [sys.executable, os.fspath(Path(__file__)), os.fspath(workspace)]
        command += ["--port-file", os.fspath(port_file), "--stats", os.fspath(run / "stats.json")]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(process, "", log, run / "stats.json")
        try:
            deadline = time.monotonic() + start_timeout
            while not port_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{server.log_text()}")
                time.sleep(0.05)
            server.base_url = f"http://127.0.0.1:{int(port_file.read_text())}"
            yield server
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
