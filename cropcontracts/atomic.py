"""Atomic file writes: an output appears whole or not at all, on local disk or gs://.

Every output is written under a temporary name in the destination folder and
renamed into place, so an interrupted run never leaves a half-written file that
a later stage could take as complete. Locally `os.replace` is atomic on one
filesystem; on object stores (`gs://…`, through `etils.epath`) the temporary
object is copied to its name, which readers see whole or not at all.

This module is the only tmp+rename writer of the project: stages call
`atomic_path` (a local path whose writer is a library such as rasterio),
`write_text` / `write_bytes` / `write_json` (any path, gs:// included) or
`atomic_folder` (a local folder of files that appear together).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import tempfile


def umask() -> int:
  """The process's umask (read without changing it for good)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask


def is_remote(path) -> bool:
  """True for object-store paths (`gs://…`, `s3://…`) that `os` cannot rename."""
  return "://" in os.fspath(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
  """Yields a temporary local path beside `path`; renames it to `path` on success.

  The file gets the permissions a plain `open(path, "w")` would give
  (`mkstemp` makes it private, 0600, which would hide outputs from the
  other users of a shared machine or bucket mount). For a remote `path` the
  temporary file is local and is uploaded whole when the block succeeds.
  """
  if is_remote(path):
    with tempfile.TemporaryDirectory() as tmpdir:
      tmp = pathlib.Path(tmpdir) / pathlib.PurePosixPath(os.fspath(path)).name
      yield tmp
      write_bytes(path, tmp.read_bytes())
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                             dir=path.parent)
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    if os.path.exists(tmp):
      os.chmod(tmp, 0o666 & ~umask())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path, data: bytes) -> None:
  """Writes `data` to `path` (local or gs://) under a temporary name, then renames."""
  if not is_remote(path):
    with atomic_path(path) as tmp:
      tmp.write_bytes(data)
    return
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.partial"
  tmp.write_bytes(data)
  tmp.replace(path)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> None:
  write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def remove_temporaries(folder) -> list[pathlib.Path]:
  """Removes the temporaries (`.NAME.*.partial`) that `atomic_path` leaves in
  `folder` (not below it) when its writer is killed; returns those removed.

  Call it only while holding the lock that every writer of `folder` holds while
  it writes (`file_lock`): then no live writer has a temporary there, and each
  one found belongs to a dead run.
  """
  removed = []
  for tmp in sorted(pathlib.Path(folder).glob(".*.partial")):
    if tmp.is_file():
      tmp.unlink(missing_ok=True)
      removed.append(tmp)
  return removed


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False):
  """Yields a temporary local folder beside `path`; renames it to `path` on success.

  For outputs whose files must appear together (a zone's maps: no classes.tif
  without its confidence.tif). The folder gets the permissions a plain
  `mkdir` would give. An existing `path` raises FileExistsError (before the
  block runs, and again at the rename if one appeared meanwhile) unless
  `overwrite`: then it is moved aside, the new folder renamed in, and only then
  the old one deleted. On failure the temporary folder is removed.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if path.exists() and not overwrite:
    raise FileExistsError(errno.EEXIST, "folder exists", str(path))
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial",
                                      dir=path.parent))
  try:
    os.chmod(tmp, 0o777 & ~umask())                # mkdtemp makes it private (0700)
    yield tmp
    old = tmp.with_name(tmp.name.replace(".partial", ".old")) if path.exists() else None
    if old and not overwrite:
      raise FileExistsError(errno.EEXIST, "folder exists", str(path))
    if old:
      os.replace(path, old)
    os.replace(tmp, path)
    if old:
      shutil.rmtree(old)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)


class LockHeld(BlockingIOError):
  """Another process holds the lock file (`file_lock(wait=False)`)."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True):
  """Holds an exclusive lock on `path` (created if absent) for the block.

  `fcntl.flock` on an open file: the kernel releases it when the process ends,
  however it ends, so a killed run never leaves a stale lock behind (the empty
  file stays; it is not the lock). wait=False raises BlockingIOError at once
  when another process holds it. Local filesystems only (no-op elsewhere is not
  offered: a bucket needs no such lock, as nothing writes there in place).
  """
  import fcntl  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a+b") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
      raise LockHeld(path) from None
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def keyed_folder(folder, key: dict) -> pathlib.Path:
  """`folder`, created, holding only what was made for `key` (a JSON-able dict).

  A cache of fetched pieces (Earth Engine tiles, STAC windows) must not mix
  pieces of another zone, year or catalogue: a folder stamped with another key
  (`key.json`), or with none, is emptied first.
  """
  folder = pathlib.Path(folder)
  stamp = folder / "key.json"
  text = json.dumps(key, sort_keys=True)
  if folder.exists() and (not stamp.is_file() or stamp.read_text(encoding="utf-8") != text):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(folder)
  if not folder.exists():
    folder.mkdir(parents=True)
    write_text(stamp, text)
  return folder
