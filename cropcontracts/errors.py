"""User errors and the one error handler of every jaxcrop command line.

A `UserError` is a user mistake or a bad input, raised where it is detected: the
command prints its message on one line (`error: <message>`, naming the file and
the fix) and exits with status 2, never with a traceback. A path the user gave
that does not exist (an `OSError` with a file name) is treated the same way.
Anything else is a bug and keeps its traceback. Ctrl-C prints `interrupted`
and exits with 130. Warnings print as one line `warning: <message>`. What a
library prints itself on its way (C++ start-up logs on file descriptor 2) is
dropped where it happens: `native_noise_dropped`.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from typing import Callable

USER_EXIT = 2
INTERRUPT_EXIT = 130


class UserError(Exception):
  """An input or usage problem that the user can fix; the message says how."""


# OSErrors that mean "the path the user gave is wrong", not a bug.
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def one_line(text) -> str:
  """The message on one line (whitespace runs -> one space)."""
  return " ".join(str(text).split())


def message(e: BaseException) -> str:
  """What the user reads: the UserError's text, or `PATH: reason` for an OSError."""
  if isinstance(e, OSError) and e.filename:
    return f"{e.filename}: {e.strerror}"
  return str(e)


def print_error(text) -> None:
  print(f"error: {one_line(text)}", file=sys.stderr)


def _show_warning(msg, category, filename, lineno, file=None, line=None):
  print(f"warning: {one_line(msg)}", file=file or sys.stderr)


def run(fn: Callable[..., int | None], *args, **kwargs) -> int:
  """fn(*args, **kwargs) -> its exit status (None -> 0); user errors -> 2, Ctrl-C -> 130."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("default")
      warnings.showwarning = _show_warning
      rc = fn(*args, **kwargs)
  except (UserError,) + PATH_ERRORS as e:
    print_error(message(e))
    return USER_EXIT
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return INTERRUPT_EXIT
  return 0 if rc is None else rc


@contextlib.contextmanager
def native_noise_dropped(noise: re.Pattern):
  """For the block, the lines written to this process's stderr that match `noise`
  are dropped; the others are written when the block ends.

  C and C++ libraries write to file descriptor 2 directly (TensorFlow logs its
  start-up there whatever TF_CPP_MIN_LOG_LEVEL says), past `sys.stderr`; so the
  block's writes to descriptor 2 go to a temporary file, read back at the end.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
      kept = "".join(l for l in lines if not noise.match(l))
      if kept:
        os.write(2, kept.encode("utf-8"))
