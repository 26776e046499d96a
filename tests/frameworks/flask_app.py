"""A Flask application on the chunk DB with a ``scoped_session``, as docs/frameworks.md writes it.

The same API as ``fastapi_app.py`` (see ``load_client.py``): one ``scoped_session(sessionmaker(engine))``
for the app, a Session per thread that the first query of a request opens, removed (closed) when
the request's app context ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import scoped_session, sessionmaker

import tinycortex_sa
from tinycortex_sa.models import Chunk

if TYPE_CHECKING or not __package__:  # pytest puts this folder on sys.path
    from chunk_rows import as_dict, new_chunk, newest
else:  # imported as tests.frameworks.flask_app
    from .chunk_rows import as_dict, new_chunk, newest


def create_app(workspace: Path) -> Flask:
    """The chunk API on ``workspace``; ``app.extensions["db"]`` is its ``scoped_session``."""
    engine = tinycortex_sa.create_engine(workspace)
    db = scoped_session(sessionmaker(engine))
    app = Flask(__name__)
    app.extensions["db"] = db

    @app.teardown_appcontext
    def remove_session(exc: BaseException | None) -> None:
        db.remove()  # closes this thread's Session: the connection goes back, a transaction is rolled back

    @app.post("/chunks")
    def add_chunk() -> ResponseReturnValue:
        payload = request.get_json()
        chunk = new_chunk(str(payload["source_id"]), str(payload["content"]))
        chunk_id = chunk.id  # read before the commit expires it
        db.add(chunk)
        db.commit()
        return {"id": chunk_id}, 201

    @app.get("/chunks/<chunk_id>")
    def read_chunk(chunk_id: str) -> ResponseReturnValue:
        chunk = db.get(Chunk, chunk_id)
        if chunk is None:
            abort(404)
        return as_dict(chunk)

    @app.get("/chunks")
    def list_chunks() -> ResponseReturnValue:
        source_id = request.args.get("source_id")
        limit = request.args.get("limit", 10, type=int)
        return jsonify([as_dict(chunk) for chunk in db.scalars(newest(source_id, limit))])

    return app
