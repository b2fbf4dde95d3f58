"""The host allocator, set for XLA:CPU's per-step buffers (Linux with glibc).

XLA:CPU allocates each execution's temporaries as one block (105 MB for the demo's
train step of batch 4, 64², on the CPU) from whichever pool thread runs it. glibc
serves a block that large from a thread's arena by `mmap` (a thread arena's heap
stops at 64 MB) and unmaps it when freed, so every step faulted its ~25,700 pages in
again: a quarter of the step's CPU time went to the kernel on the 2-core machine
(docs/benchmarks.md). `keep_freed_memory` makes glibc keep such blocks for reuse.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Callable, TypeVar

T = TypeVar("T")

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1),              # one arena: its heap grows with brk, unbounded
            (M_MMAP_MAX, 0),               # no block of its own mapping, however large
            (M_TRIM_THRESHOLD, 2**31 - 1))  # freed memory stays (up to 2 GiB at the top)


def keep_freed_memory() -> bool:
  """Has glibc's malloc keep what is freed for the next allocation (`SETTINGS`);
  returns whether it applied: False where there is no glibc `mallopt` (macOS,
  musl) or it refused a setting.

  Process-wide, and binding only threads that have not allocated yet: a command
  calls it first, before JAX or tf.data start their threads. The price is that
  memory freed stays with the process, which keeps its peak resident size.
  """
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name) if name else None
  except OSError:
    return False
  mallopt = getattr(libc, "mallopt", None)
  if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
    return False
  return all(mallopt(param, value) == 1 for param, value in SETTINGS)


def first(command: Callable[..., T]) -> Callable[..., T]:
  """`command` that calls `keep_freed_memory` before anything else: how the commands that
  run XLA:CPU apply it once their arguments are parsed (not on `--help` or a mistake)."""
  @functools.wraps(command)
  def run(*args, **kwargs):
    keep_freed_memory()
    return command(*args, **kwargs)
  return run
