"""Bad paths, bad options and exhausted limits get a typed error that says what happened.

Each case names the path and the fix and leaves every file as it was: a NUL
byte or a trailing slash in the URL, pool sizing arguments, a symbolic-link
loop, a dangling link (which would create the database wherever it points), a
full file system (space or inodes) while a damaged file is kept aside, a
process out of file descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import copy_fixture, db_file, file_digest

import tinycortex_sa
from tinycortex_sa import DiskFullError, NotAFileError, OpenError, OptionError, SchemaDamagedError
from tinycortex_sa.sqlite import files

pytestmark = pytest.mark.timeout(60)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "url",
    ["sqlite+tinycortex:///{root}/a\x00b/chunks.db", "sqlite+tinycortex:///{root}/a%00b/chunks.db"],
    ids=["NUL", "%00"],
)
def test_a_nul_byte_in_the_url_is_an_option_error(tmp_path: Path, url: str) -> None:
    url = url.format(root=tmp_path)
    if "\x00" not in (sa.engine.make_url(url).database or ""):
        pytest.skip("this SQLAlchemy does not decode %00 in a URL's path: the name is a literal, valid one")
    with pytest.raises(OptionError, match="NUL byte"):
        sa.create_engine(url)
    with pytest.raises(OptionError, match="NUL byte"):
        tinycortex_sa.create_engine(f"{tmp_path}/w\x00s")
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("argument", ["pool_size", "max_overflow", "pool_timeout", "pool_use_lifo"])
def test_pool_sizing_arguments_are_an_option_error_naming_checkout_timeout(
    tmp_path: Path, argument: str
) -> None:
    url = f"sqlite+tinycortex:///{db_file(tmp_path / 'ws')}"
    value = True if argument == "pool_use_lifo" else 5
    with pytest.raises(OptionError, match=f"{argument} does not apply") as refused:
        sa.create_engine(url, **{argument: value})
    assert "checkout_timeout" in str(refused.value)
    with pytest.raises(OptionError, match=argument):
        tinycortex_sa.create_engine(tmp_path / "ws", **{argument: value})
    assert _tree(tmp_path) == []


def test_a_url_ending_in_a_slash_names_a_directory_and_creates_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "ws" / "memory_tree"
    with pytest.raises(OptionError, match="names a directory") as refused:
        sa.create_engine(f"sqlite+tinycortex:///{directory}/")
    assert str(directory / "chunks.db") in str(refused.value)
    assert _tree(tmp_path) == []


def test_a_symbolic_link_loop_is_named_as_such(tmp_path: Path) -> None:
    path = db_file(tmp_path / "ws")
    path.parent.mkdir(parents=True)
    path.symlink_to(path.name)
    with pytest.raises(NotAFileError, match="Too many levels of symbolic links") as refused:
        tinycortex_sa.with_connection(tmp_path / "ws", lambda c: None)
    assert str(path) in str(refused.value) and "permission" not in str(refused.value).lower()
    assert _tree(tmp_path) == ["ws", "ws/memory_tree", "ws/memory_tree/chunks.db"]


@pytest.mark.parametrize("which", ["the database file", "its directory"])
def test_a_dangling_link_creates_nothing_where_it_points(tmp_path: Path, which: str) -> None:
    ws = tmp_path / "ws"
    path = db_file(ws)
    elsewhere = tmp_path / "elsewhere"
    if which == "the database file":
        path.parent.mkdir(parents=True)
        elsewhere.mkdir()
        path.symlink_to(elsewhere / "x.db")
        link, target = path, elsewhere / "x.db"
    else:
        ws.mkdir()
        (ws / "memory_tree").symlink_to(elsewhere)
        link, target = ws / "memory_tree", elsewhere
    before = _tree(tmp_path)
    with pytest.raises(NotAFileError, match="which does not exist") as refused:
        tinycortex_sa.with_connection(ws, lambda c: None)
    assert f"{link} is a symbolic link to {target}" in str(refused.value)
    with pytest.raises(NotAFileError):
        sa.create_engine(f"sqlite+tinycortex:///{path}")
    assert _tree(tmp_path) == before


def _corrupt_workspace(root: Path) -> Path:
    """A workspace whose chunk DB SQLite refuses as damaged (its page size), with a journal beside it."""
    ws = copy_fixture("rust-0.1.1-populated", root / "ws")
    path = db_file(ws)
    data = bytearray(path.read_bytes())
    data[16:18] = b"\x00\x03"  # a page size of 3 bytes: "file is not a database"
    path.write_bytes(bytes(data))
    files.side_file(path, "-journal").write_bytes(b"")
    return ws


def test_no_space_while_keeping_a_damaged_file_aside_is_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _corrupt_workspace(tmp_path)
    path = db_file(ws)
    digest, listing = file_digest(path), _tree(path.parent)

    def no_space(src: Path, dst: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(files, "rename_keeping", no_space)
    with pytest.raises(DiskFullError, match="no free inodes") as refused:
        tinycortex_sa.with_connection(ws, lambda c: c.execute("SELECT * FROM mem_tree_chunks").fetchall())
    assert str(path.parent) in str(refused.value) and "writable directory" not in str(refused.value)
    assert file_digest(path) == digest and _tree(path.parent) == listing


@contextlib.contextmanager
def _tmpfs(where: Path, inodes: int) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=8m,nr_inodes={inodes}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to run out of inodes ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs with few inodes needs root")
def test_inode_exhaustion_while_keeping_a_damaged_file_aside_is_disk_full(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", inodes=16) as root:
        ws = _corrupt_workspace(root)
        path = db_file(ws)
        n = 0
        with contextlib.suppress(OSError):
            while True:  # bounded by the file system's inode count
                (root / f"filler-{n}").touch()
                n += 1
        digest, listing = file_digest(path), _tree(path.parent)
        try:
            with pytest.raises(DiskFullError, match="no free inodes") as refused:
                tinycortex_sa.with_connection(ws, lambda c: c.execute("SELECT 1").fetchall())
        finally:
            tinycortex_sa.invalidate(ws)  # nothing of the file may stay open: the tmpfs is unmounted
        assert str(path.parent) in str(refused.value)
        assert file_digest(path) == digest and _tree(path.parent) == listing


DESCRIPTORS = textwrap.dedent(
    """
    import json, os, sys
    import tinycortex_sa, sqlalchemy, alembic.command  # what the open needs, imported first
    from tinycortex_sa import OpenError, with_connection  # (the package imports its names on first use)
    held = []
    while True:
        try:
            held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    for _ in range(int(sys.argv[2])):
        os.close(held.pop())
    try:
        with_connection(sys.argv[1], lambda c: None)
        result = {"ok": True}
    except Exception as err:
        library = isinstance(err, OpenError)
        result = {"ok": False, "type": type(err).__name__, "library": library, "message": str(err)}
    for fd in held:
        os.close(fd)
    print(json.dumps(result))
    """
)


@pytest.mark.parametrize("free", [0, 1, 3])
def test_running_out_of_file_descriptors_is_named_and_changes_nothing(tmp_path: Path, free: int) -> None:
    """With no descriptor free the open fails at once; with a few, in the middle of the migration."""
    import json

    ws = copy_fixture("rust-legacy-v0", tmp_path / "ws")
    digest = file_digest(db_file(ws))
    done = subprocess.run(
        [sys.executable, "-c", DESCRIPTORS, str(ws), str(free)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["ok"]:  # a descriptor freed by the interpreter let it through: it must have worked
        assert free > 0, "with no descriptor free, the open cannot have worked"
        assert (
            tinycortex_sa.with_connection(ws, lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == 2
        )
        return
    assert result["library"], result
    assert "run out of file descriptors" in result["message"] and "ulimit -n" in result["message"]
    assert "writable directory" not in result["message"]
    assert file_digest(db_file(ws)) == digest


def test_a_character_device_like_dev_null_leaves_no_journal(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    import stat

    path = db_file(tmp_path / "ws")
    path.parent.mkdir(parents=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    with pytest.raises(NotAFileError, match="character device") as refused:
        tinycortex_sa.with_connection(tmp_path / "ws", lambda c: None)
    assert isinstance(refused.value, OpenError) and "full" not in str(refused.value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["chunks.db"]


def test_a_database_at_head_with_a_table_missing_is_schema_damage_found_at_open(tmp_path: Path) -> None:
    ws = copy_fixture("rust-0.1.1-populated", tmp_path / "ws")
    tinycortex_sa.with_connection(ws, lambda c: None)  # at head
    tinycortex_sa.invalidate(ws)
    conn = sqlite3.connect(db_file(ws))
    conn.execute("DROP TABLE mem_tree_jobs")
    conn.commit()
    conn.close()
    digest = file_digest(db_file(ws))
    engine = tinycortex_sa.create_engine(ws)
    damaged = pytest.raises(SchemaDamagedError, match="mem_tree_jobs are missing")
    with damaged as refused, engine.connect() as connection:
        connection.execute(sa.text("SELECT count(*) FROM mem_tree_jobs"))
    engine.dispose()
    assert isinstance(refused.value, tinycortex_sa.SchemaError) and str(db_file(ws)) in str(refused.value)
    assert "recover" in str(refused.value) and "backup" in str(refused.value)
    assert file_digest(db_file(ws)) == digest
