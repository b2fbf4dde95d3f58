"""Atomic file writes: a stage's outputs appear whole or not at all.

Every output is written under a temporary name in the destination folder and
renamed into place (`os.replace` is atomic on one filesystem), so an interrupted
run never leaves a half-written file that a later stage could take as complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile


def umask() -> int:
  """The process's umask (read without changing it for good)."""
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
  """Yields a temporary path beside `path`; renames it to `path` on success.

  The file gets the permissions a plain `open(path, "w")` would give
  (`mkstemp` makes it private, 0600, which would hide outputs from the
  other users of a shared machine or bucket mount).
  """
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


def write_json(path: str | os.PathLike, obj) -> None:
  with atomic_path(path) as tmp:
    pathlib.Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False)
                                 + "\n", encoding="utf-8")


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
