"""Facts about SQLite files and the operations on them, below SQLAlchemy.

Nothing here holds process-wide state or knows about handles, engines or the
schema: :mod:`.codes` names SQLite's error codes, :mod:`.files` reads headers,
builds URIs and moves files without ever replacing one, :mod:`.pragmas` is
the chunk DB's pragma list, :mod:`.aside` keeps damaged files and stale
``-wal`` files aside, :mod:`.messages` turns failures into errors that name the
file and the fix, and :mod:`.opening` is the open sequence as named steps.
"""
