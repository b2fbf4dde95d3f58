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

A writer killed mid-write leaves its temporary behind (`.NAME.<random>.partial`).
Each writer writes inside `claim(folder)`, which holds the folder's lock
(`file_lock`, freed by the kernel when a process dies); so a run that holds it
alone knows every temporary it finds there to be a dead writer's, and removes
it first (`remove_temporaries`): a rerun after a kill leaves none.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
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


def read_record(path, fmt: str, fix: str) -> dict | None:
  """The JSON record at `path` (local or gs://) whose "format" is `fmt`, written
  whole by `write_text`; None when there is none; UserError "<path>: not a <fmt>
  record; <fix>" for a file of another format or not JSON."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from cropcontracts.errors import UserError  # pylint: disable=g-import-not-at-top
  path = epath.Path(os.fspath(path))
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
  except ValueError:
    record = {}
  if not isinstance(record, dict) or record.get("format") != fmt:
    raise UserError(f"{path}: not a {fmt} record; {fix}")
  return record


PARTIAL = ".*.partial"   # the temporaries of atomic_path (and of folders written whole)


def remove_temporaries(folder, patterns=(PARTIAL,)) -> list[pathlib.Path]:
  """Removes what matches `patterns` (globs relative to `folder`: `.*.partial`,
  `checkpoints/*/*.orbax-checkpoint-tmp*`), files or folders; returns them.

  Call it only while holding the lock that every writer of `folder` holds while
  its temporaries exist (`claim`): then each one found belongs to a dead run.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  removed = sorted({p for pattern in patterns for p in folder.glob(pattern)})
  for tmp in removed:
    if tmp.is_dir() and not tmp.is_symlink():
      shutil.rmtree(tmp, ignore_errors=True)
    else:
      tmp.unlink(missing_ok=True)
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


def _flock(f, how: int, wait: bool, path) -> None:
  try:
    fcntl.flock(f, how | (0 if wait else fcntl.LOCK_NB))
  except BlockingIOError:
    raise LockHeld(path) from None


@contextlib.contextmanager
def _lock_file(path: pathlib.Path):
  """The lock file `path`, open (created with its folder if absent); unlocked after."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a+b") as f:
    try:
      yield f
    finally:
      with contextlib.suppress(OSError):   # closing unlocks it too
        fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True):
  """Holds an exclusive lock on `path` (created if absent) for the block.

  `fcntl.flock` on an open file: the kernel releases it when the process ends,
  however it ends, so a killed run never leaves a stale lock behind (the empty
  file stays; it is not the lock). wait=False raises BlockingIOError at once
  when another process holds it. Local filesystems only (no-op elsewhere is not
  offered: a bucket needs no such lock, as nothing writes there in place).
  """
  with _lock_file(pathlib.Path(path)) as f:
    _flock(f, fcntl.LOCK_EX, wait, path)
    yield


@contextlib.contextmanager
def claim(folder, *, lock: str = ".lock", patterns=(PARTIAL,), shared: bool = False,
          wait: bool = True):
  """Holds `folder`'s lock (`folder/lock`) for the block, after removing the
  temporaries (`patterns`, see `remove_temporaries`) that killed writers left.

  Every writer of `folder` writes inside such a block. Exclusive (default):
  writers take turns (the stages of a zone folder), each first clears what dead
  ones left. shared: writers work side by side (the threads and processes writing
  the zones of one maps folder, the hosts of one training run); the one that finds
  no other there (it takes the lock exclusively without waiting) clears, then
  shares it. wait=False: LockHeld at once if another holds the lock exclusively.
  A folder in a bucket (gs://…) has no lock and holds no temporary of `atomic_path`:
  the block just runs; so do shared writers on a filesystem without flock (a
  bucket mounted by FUSE), clearing nothing.
  """
  if is_remote(folder):
    yield
    return
  folder = pathlib.Path(folder)
  with _lock_file(folder / lock) as f:
    if _take(f, shared, wait, folder / lock):
      remove_temporaries(folder, patterns)
    yield


_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _take(f, shared: bool, wait: bool, path) -> bool:
  """Takes `claim`'s lock on the open lock file `f`; True when no other writer
  held it (then this one clears the dead ones' temporaries)."""
  try:
    _flock(f, fcntl.LOCK_EX, wait and not shared, path)
    alone = True
  except LockHeld:
    if not shared:
      raise
    alone = False
  except OSError as e:
    if shared and e.errno in _NO_FLOCK:
      return False
    raise
  if shared:
    _flock(f, fcntl.LOCK_SH, wait, path)
  return alone


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
