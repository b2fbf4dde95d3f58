"""The fetch layer under the remote imagery routes (`prep.gee`, `prep.stac`): what
both do around their requests, written once.

  cached_zone  one zone folder's fetch: a zone already holding the route's
               imagery is skipped (`zone_done`); else, under the zone's cache
               lock, the route fills its `ZoneCache`, writes the zone folder,
               and the cache is removed.
  ZoneCache    `<zone folder>/<name>/<piece>.npy`: each fetched piece (a month's
               tile, an item's band window) saved atomically, so that a rerun
               after an interruption fetches only what is missing; stamped with
               the inputs it was made for (`key.json`: another key drops it).
  Pool         at most `workers` requests in flight and one back-off for them all.
  fetch_all    fn(job) for every job on the pool's workers; the first failure
               cancels the rest.

A route keeps what is its own: building its requests and classifying their
errors. Its request function raises `Transient` for an error a later try may not
meet (quota, server error, time-out, a truncated answer), which `Pool.call`
retries, and a `UserError` for one that only the user can fix.

One run fills a zone's cache at a time: it claims the cache (`claim_cache`:
`atomic.claim` of the zone folder on `<name>.lock`, exclusive, freed by the
kernel when the run dies, however it dies). A second run of the same zone waits
for it, then finds the zone done. So every temporary file in the cache when a
run claims it is a killed run's, and the claim removes it; a live run's never is.

The cached pieces are read by `load_array`, which parses the .npy header itself:
`np.load` parses it with `ast.literal_eval`, and CPython 3.11's ast module is not
safe from several threads at once ("SystemError: AST constructor recursion depth
mismatch", about once in twenty resumed STAC runs before this reader), while the
routes read their cache from worker threads.
"""
from __future__ import annotations

import concurrent.futures
import math
import pathlib
import random
import re
import shutil
import threading
import time
from typing import Callable, Sequence

import numpy as np

from cropcontracts import atomic, zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

JITTER = 0.25          # back-off delays are stretched by a random 0-25 %


class Transient(Exception):
  """A request error a later try may not meet; `Pool.call` retries it."""


def zone_done(folder, zone: Zone, **expected) -> dict | None:
  """The imagery info of a zone folder already holding `expected` imagery.

  Args:
    folder: the zone folder.
    zone: its zone.
    expected: the `imagery` fields of meta.json that make the folder done
      (e.g. source="stac", year=2023, catalog="earth-search").
  Returns:
    meta.json's `imagery` when it matches and its files are there, else None.
  Raises:
    UserError when the folder holds another zone or zone-year, before any
    request is spent.
  """
  folder = pathlib.Path(folder)
  info = zonefolder.check_folder(folder, zone, expected.get("year")).get("imagery") or {}
  ok = all(info.get(k) == v for k, v in expected.items())
  return info if ok and all((folder / f).is_file()
                            for f in zonefolder.IMAGERY_FILES) else None


def cached_zone(folder, zone: Zone, *, name: str, key: dict, expected: dict,
                overwrite: bool, run: Callable[["ZoneCache"], dict]) -> dict:
  """`run(cache)` for one zone folder, unless the folder is already done.

  Args:
    folder: the zone folder.
    zone: its zone (a folder of another zone is refused before anything runs).
    name: the cache folder inside it (`.gee_cache`, `.stac_cache`).
    key: what the cached pieces were made from (source, year, zone grid…).
    expected: the imagery fields of a folder this route completed (`zone_done`).
    overwrite: run even when the folder is done.
    run: fetches into the cache, writes the zone folder, returns its imagery info.
  Returns:
    the folder's imagery info (run's, or the one already there).
  """
  folder = pathlib.Path(folder)
  done = zone_done(folder, zone, **expected)
  if done is not None and not overwrite:
    return done
  with claim_cache(folder, name):
    done = zone_done(folder, zone, **expected)    # a run we waited for may have done it
    if done is not None and not overwrite:
      return done
    cache = ZoneCache.open(folder / name, key)
    info = run(cache)
    cache.remove()
  return info


def claim_cache(folder, name: str):
  """Holds the lock of the cache `<folder>/<name>/` (`<folder>/<name>.lock`,
  exclusive, waiting: one run fills a zone's cache at a time) after removing the
  temporaries that killed runs left in it (`atomic.claim`)."""
  return atomic.claim(folder, lock=f"{name}.lock", patterns=(f"{name}/{atomic.PARTIAL}",))


class ZoneCache:
  """Fetched pieces of one zone: `<folder>/<piece>.npy` (see `cached_zone`)."""

  def __init__(self, folder: pathlib.Path):
    self.folder = pathlib.Path(folder)

  @classmethod
  def open(cls, folder, key: dict) -> "ZoneCache":
    """The cache holding only pieces made for `key`; open it inside
    `claim_cache` (`cached_zone` does), which removed killed runs' temporaries."""
    return cls(atomic.keyed_folder(folder, key))

  def path(self, piece: str) -> pathlib.Path:
    """The file of a piece (characters other than letters, digits, `._-` become `_`)."""
    return self.folder / f"{re.sub(r'[^A-Za-z0-9._-]', '_', piece)}.npy"

  def load(self, piece: str, shape: Sequence[int], dtype) -> np.ndarray | None:
    """The cached piece, or None when absent, unreadable or not of shape and dtype."""
    return load_array(self.path(piece), shape, dtype)

  def save(self, piece: str, array: np.ndarray) -> None:
    """Saves a piece atomically (a killed run leaves a temporary, never a piece)."""
    with atomic.atomic_path(self.path(piece)) as tmp:
      with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)

  def remove(self) -> None:
    shutil.rmtree(self.folder, ignore_errors=True)


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': False, "
                         r"'shape': \(([\d, ]*)\), \} *\n")


def load_array(path, shape: Sequence[int], dtype) -> np.ndarray | None:
  """The array `np.save` wrote to `path`, or None when absent, unreadable, or not
  of `shape` and `dtype` (C order).

  The header is parsed by a regular expression, not by `np.load`'s
  `ast.literal_eval`, so that threads may read at once (module docstring).
  """
  dtype, shape = np.dtype(dtype), tuple(int(n) for n in shape)
  try:
    with open(path, "rb") as f:
      head = f.read(10)
      if len(head) < 10 or not head.startswith(_NPY_MAGIC) or head[6] not in (1, 2, 3):
        return None
      size = head[8:10] if head[6] == 1 else head[8:10] + f.read(2)
      match = _NPY_HEADER.fullmatch(f.read(int.from_bytes(size, "little")).decode("latin-1"))
      if (match is None or np.dtype(match[1]) != dtype
          or tuple(int(n) for n in match[2].split(",") if n.strip()) != shape):
        return None
      data = bytearray(f.read())          # a bytearray: the array is writable
  except (OSError, ValueError, TypeError):
    return None
  if len(data) != dtype.itemsize * math.prod(shape):
    return None
  return np.frombuffer(data, dtype).reshape(shape)


class Pool:
  """At most `workers` requests in flight, one back-off shared by all of them.

  `call(fn, what)` runs fn() on the caller's thread once a slot is free and any
  back-off has passed. When fn raises `Transient`, every worker's next request
  waits until base_delay * 2**k * (1 + jitter * u) s from now (k: this call's
  failed tries so far, u uniform in [0, 1)) instead of each worker hammering a
  quota on its own; the jitter keeps processes sharing a quota (Beam workers)
  from retrying in step. After `retries` retries: a UserError that says to rerun.

  Clock: the monotonic one with the real `time.sleep`; with an injected `sleep`
  (tests) a clock advanced only by the sleeps, so nothing waits and the delays
  are exact. `uniform` (the u above) is injectable too.
  """

  def __init__(self, workers: int = 1, *, retries: int = 4, base_delay: float = 1.0,
               jitter: float = JITTER, sleep: Callable[[float], None] = time.sleep,
               uniform: Callable[[], float] = random.random):
    if workers < 1:
      raise UserError(f"--workers {workers} must be at least 1")
    self.workers, self.retries, self.base_delay = workers, retries, base_delay
    self.jitter, self._uniform = jitter, uniform
    if sleep is time.sleep:
      self._clock, self._sleep = time.monotonic, time.sleep
    else:
      clock = _SleepClock(sleep)
      self._clock, self._sleep = clock, clock.sleep
    self._slots = threading.BoundedSemaphore(workers)
    self._lock = threading.Lock()
    self._not_before = -math.inf

  def call(self, fn: Callable, what: str):
    """fn(), retried on `Transient` (class docstring); `what` names it in the error."""
    for attempt in range(self.retries + 1):
      self._wait()
      with self._slots:
        try:
          return fn()
        except Transient as e:
          error = e
      if attempt == self.retries:
        raise UserError(f"{what}: still failing after {self.retries} retries ({error}); "
                        f"rerun the same command later, it resumes where it "
                        f"stopped") from None
      delay = self.base_delay * 2**attempt * (1 + self.jitter * self._uniform())
      with self._lock:
        self._not_before = max(self._not_before, self._clock() + delay)

  def _wait(self) -> None:
    while True:
      with self._lock:
        wait = self._not_before - self._clock()
      if wait <= 0:
        return
      self._sleep(wait)


class _SleepClock:
  """A clock advanced only by the sleeps of `sleep` (an injected test sleep)."""

  def __init__(self, sleep: Callable[[float], None]):
    self.now, self._sleep, self._lock = 0.0, sleep, threading.Lock()

  def __call__(self) -> float:
    return self.now

  def sleep(self, seconds: float) -> None:
    self._sleep(seconds)
    with self._lock:
      self.now += seconds


def fetch_all(fn: Callable, jobs: Sequence, workers: int, *, desc: str, unit: str,
              progress: bool = True, done: int = 0) -> list:
  """[fn(job) for job in jobs], on `workers` threads, with a progress bar.

  The first exception stops the rest: the jobs not started are dropped, those
  started end with their request, and it is raised. `done`: the jobs already
  done before (cached), counted in the bar.
  """
  from tqdm import tqdm
  stop = threading.Event()

  def one(job):
    if stop.is_set():
      return None
    try:
      return fn(job)
    except BaseException:
      stop.set()
      raise

  with tqdm(total=done + len(jobs), initial=done, desc=desc, unit=unit,
            disable=not progress) as bar, \
       concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fetch") as ex:
    futures = [ex.submit(one, job) for job in jobs]
    try:
      for future in concurrent.futures.as_completed(futures):
        future.result()
        bar.update(1)
    except BaseException:
      stop.set()
      ex.shutdown(wait=False, cancel_futures=True)
      raise
  return [f.result() for f in futures]
