"""A FastAPI application on the chunk DB with sync endpoints, as docs/frameworks.md writes it.

:func:`create_app` is the application: one read-write engine for the ``POST``, one
``read_only=True`` engine for the ``GET`` endpoints, and a Session per request, either from a
dependency with ``yield`` (``depends=True``, the documented recipe: FastAPI runs the dependency's
exit, and so the Session's close, on another threadpool thread than the endpoint) or opened inside
the endpoint (``depends=False``).

Run as a script, this module serves the app with uvicorn (one worker, 127.0.0.1, a free port) until
SIGTERM or SIGINT; :func:`serve` starts that process, :func:`measure` times a bounded load on it.
The script also counts, through SQLAlchemy's pool events, the checkouts whose connection came back
on another thread than the one that checked it out, and writes the counts to ``--stats`` at exit.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
runtime, and those of endpoints defined inside :func:`create_app` refer to its local names.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy.orm import Session

import tinycortex_sa
from tinycortex_sa.models import Chunk

if TYPE_CHECKING or not __package__:  # pytest puts this folder on sys.path; a script has it there
    import load_client
    from chunk_rows import as_dict, new_chunk, newest
else:  # imported as tests.frameworks.fastapi_app (the benchmark)
    from . import load_client
    from .chunk_rows import as_dict, new_chunk, newest

# -- the application ------------------------------------------------------------------------------


class ChunkIn(BaseModel):
    source_id: str
    content: str


class ChunkOut(BaseModel):
    id: str
    source_id: str
    content: str
    created_at_ms: int

    @classmethod
    def of(cls, chunk: Chunk) -> "ChunkOut":
        return cls(**as_dict(chunk))


class Created(BaseModel):
    id: str


def create_app(workspace: Path, *, depends: bool = True, worker_threads: int | None = None) -> FastAPI:
    """The chunk API on ``workspace``: a Session per request, from a dependency or in the endpoint.

    With ``depends=True`` a request holds the file's connection from its first query until FastAPI
    has validated the response (on a worker thread) and run the dependency's exit; with more
    requests in flight than worker threads, the holder can wait for a thread that every other
    request holds while waiting for the connection.  ``worker_threads`` raises the worker-thread
    limit (AnyIO's default: 40) at startup; docs/frameworks.md has the figures.
    """
    engine = tinycortex_sa.create_engine(workspace)
    reader = tinycortex_sa.create_engine(workspace, read_only=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if worker_threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads
        with engine.connect():  # open (and migrate) the database at startup, not at the first request
            pass
        yield
        reader.dispose()
        engine.dispose()

    app = FastAPI(lifespan=lifespan)

    if depends:

        def get_session() -> Iterator[Session]:
            with Session(engine) as session:
                yield session

        def get_read_session() -> Iterator[Session]:
            with Session(reader) as session:
                yield session

        WriteSession = Annotated[Session, Depends(get_session)]
        ReadSession = Annotated[Session, Depends(get_read_session)]

        @app.post("/chunks", status_code=201)
        def add_chunk(payload: ChunkIn, session: WriteSession) -> Created:
            chunk = new_chunk(payload.source_id, payload.content)
            chunk_id = chunk.id  # read before the commit expires it (reading it after would query again)
            session.add(chunk)
            session.commit()
            return Created(id=chunk_id)

        @app.get("/chunks/{chunk_id}")
        def read_chunk(chunk_id: str, session: ReadSession) -> ChunkOut:
            chunk = session.get(Chunk, chunk_id)
            if chunk is None:
                raise HTTPException(status_code=404, detail="no such chunk")
            return ChunkOut.of(chunk)

        @app.get("/chunks")
        def list_chunks(
            session: ReadSession, source_id: str | None = None, limit: int = 10
        ) -> list[ChunkOut]:
            return [ChunkOut.of(chunk) for chunk in session.scalars(newest(source_id, limit))]

    else:

        @app.post("/chunks", status_code=201)
        def add_chunk_here(payload: ChunkIn) -> Created:
            with Session(engine) as session:
                chunk = new_chunk(payload.source_id, payload.content)
                chunk_id = chunk.id
                session.add(chunk)
                session.commit()
            return Created(id=chunk_id)

        @app.get("/chunks/{chunk_id}")
        def read_chunk_here(chunk_id: str) -> ChunkOut:
            with Session(reader) as session:
                chunk = session.get(Chunk, chunk_id)
                if chunk is None:
                    raise HTTPException(status_code=404, detail="no such chunk")
                return ChunkOut.of(chunk)

        @app.get("/chunks")
        def list_chunks_here(source_id: str | None = None, limit: int = 10) -> list[ChunkOut]:
            with Session(reader) as session:
                return [ChunkOut.of(chunk) for chunk in session.scalars(newest(source_id, limit))]

    return app


# -- serving it: the script, and the process that runs it -----------------------------------------


class CheckinThreads:
    """Counts, through the pool events of every engine, checkins on another thread than the checkout."""

    def __init__(self) -> None:
        self.checkouts = 0
        self.elsewhere = 0
        self._lock = threading.Lock()
        sa.event.listen(sa.pool.Pool, "checkout", self._checkout)
        sa.event.listen(sa.pool.Pool, "checkin", self._checkin)

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        record.info["checkout_thread"] = threading.get_ident()
        with self._lock:
            self.checkouts += 1

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        if record.info.pop("checkout_thread", None) not in (None, threading.get_ident()):
            with self._lock:
                self.elsewhere += 1

    def as_dict(self) -> dict[str, int]:
        return {"checkouts": self.checkouts, "checkins_on_another_thread": self.elsewhere}


def _stop_with_parent(server: Any) -> None:
    """Stop serving if the process that started this one ends (a killed test run leaves no server)."""
    parent = os.getppid()
    while not server.should_exit:
        if os.getppid() != parent:
            server.should_exit = True
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the chunk API on 127.0.0.1 with uvicorn.")
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--in-endpoint", action="store_true", help="Sessions opened in the endpoints")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    parser.add_argument("--stats", type=Path, required=True, help="where to write the counts at exit")
    parser.add_argument("--worker-threads", type=int, help="the worker-thread limit (default: AnyIO's)")
    args = parser.parse_args(argv)

    threads = CheckinThreads()
    app = create_app(args.workspace, depends=not args.in_endpoint, worker_threads=args.worker_threads)
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
    # proto says TCP; with proto 0 every response waited ~40 ms for the client's delayed ACK
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
    args.stats.write_text(json.dumps(threads.as_dict()))
    return 0


@dataclass
class Server:
    """A running server process: its address, and where its log and counts go."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    stats_file: Path

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """Stop it (SIGTERM, uvicorn's graceful shutdown) and return its counts."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise RuntimeError(f"the server did not stop within {timeout:g}s:\n{self.log_text()}") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_text()}")
        return dict(json.loads(self.stats_file.read_text()))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextlib.contextmanager
def serve(
    workspace: Path, *, depends: bool, worker_threads: int | None = None, start_timeout: float = 30.0
) -> Iterator[Server]:
    """Run this module's server on ``workspace`` in a child process; stopped (killed if need be) on exit."""
    with tempfile.TemporaryDirectory(prefix="tinycortex-serve-") as tmp:
        run = Path(tmp)
        port_file, log = run / "port", run / "server.log"
        command = [sys.executable, os.fspath(Path(__file__)), os.fspath(workspace)]
        command += ["--port-file", os.fspath(port_file), "--stats", os.fspath(run / "stats.json")]
        command += [] if depends else ["--in-endpoint"]
        command += [] if worker_threads is None else ["--worker-threads", str(worker_threads)]
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


def measure(workspace: Path, *, depends: bool, requests: int, concurrency: int) -> float:
    """Requests per second of the app on ``workspace`` under a bounded load, 90 % of it ``GET``.

    Starts the server, waits until it answers, sends ``requests`` requests ``concurrency`` at a
    time (at most 10 minutes), stops the server and returns the rate; raises ``RuntimeError`` if a
    request failed.
    """
    with serve(workspace, depends=depends) as server:
        load_client.warm_up(server.base_url)
        result = load_client.run_load(
            server.base_url, requests=requests, concurrency=concurrency, time_limit=600.0
        )
        server.stop()
    if result.errors:
        raise RuntimeError(
            f"{len(result.errors)} of {requests} requests failed, the first: {result.errors[0]}"
        )
    return result.rps


if __name__ == "__main__":
    raise SystemExit(main())
