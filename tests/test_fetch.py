"""The fetch layer of the remote routes (prep/fetch.py): the window cache and its
reader, its lock and the clean-up of killed runs' temporaries, the "zone done"
check, the pool's shared back-off and the first failure cancelling the rest.
The routes through it: tests/test_gee.py, tests/test_stac.py."""
import gc
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone
from prep import fetch

REPO = pathlib.Path(__file__).resolve().parents[1]
ZONE = Zone("t_0", "Test", "Town", 0, 32631, x0=400_000.0, y0=5_000_000.0,
            width=6, height=4)
KEY = {"source": "test", "year": 2023}


@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint16).reshape(4, 6),
                                   np.arange(60, dtype=np.uint8).reshape(5, 3, 4) % 7,
                                   np.array([7, 65535], np.uint16)])
def test_load_array_reads_what_np_save_wrote_and_nothing_else(array, tmp_path):
  path = tmp_path / "a.npy"
  np.save(path, array)
  got = fetch.load_array(path, array.shape, array.dtype)
  assert got.dtype == array.dtype and got.flags.writeable
  np.testing.assert_array_equal(got, array)
  assert fetch.load_array(path, array.shape, np.uint32) is None        # another dtype
  assert fetch.load_array(path, (*array.shape, 1), array.dtype) is None  # another shape
  assert fetch.load_array(tmp_path / "none.npy", array.shape, array.dtype) is None
  np.save(path, np.asfortranarray(array.T))                            # Fortran order
  assert array.ndim < 2 or fetch.load_array(path, array.T.shape, array.dtype) is None
  data = np.lib.format.magic(1, 0) + b"\x10\x00{'descr': '<u2'}  \n"
  for junk in (b"", b"junk", data, (tmp_path / "a.npy").read_bytes()[:-1]):
    path.write_bytes(junk)                                             # truncated, junk
    assert fetch.load_array(path, array.shape, array.dtype) is None


def test_threads_read_the_cache_at_once(tmp_path):
  """np.load parses each header with ast.literal_eval, which CPython 3.11 cannot
  run in several threads at once: with threads switching every microsecond and a
  collection (running finalizers) at every allocation, 16 threads x 300 np.load
  raise "SystemError: AST constructor recursion depth mismatch" in nearly every
  run. The cache's reader parses the header itself and must never fail."""
  cache = fetch.ZoneCache(tmp_path)
  window = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48)
  cache.save("item.B02", window)
  errors = []

  class Finalized:
    def __del__(self):
      sum(range(10))

  def read():
    try:
      for _ in range(300):
        junk = Finalized()
        junk.cycle = junk                        # collected by gc, __del__ runs
        if cache.load("item.B02", (48, 48), np.uint16) is None:
          errors.append("None")
    except Exception as e:  # pylint: disable=broad-except
      errors.append(repr(e))

  interval, threshold = sys.getswitchinterval(), gc.get_threshold()
  sys.setswitchinterval(1e-6)
  gc.set_threshold(1, 1, 1)
  try:
    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  finally:
    sys.setswitchinterval(interval)
    gc.set_threshold(*threshold)
  assert errors == []


def _partials(folder: pathlib.Path) -> list[str]:
  return sorted(p.name for p in folder.glob(".*.partial"))


HOLD = """
import sys
from cropcontracts import atomic
from prep import fetch
zone_folder, piece = sys.argv[1], sys.argv[2]
with fetch.claim_cache(zone_folder, ".c"):             # as cached_zone claims it
  cache = fetch.ZoneCache.open(f"{zone_folder}/.c", {"source": "test", "year": 2023})
  with atomic.atomic_path(cache.path(piece)) as tmp:   # a window being written
    tmp.write_bytes(b"half a window")
    print("writing", flush=True)
    sys.stdin.read()
"""


def _writer(zone_folder, piece) -> subprocess.Popen:
  """A child writing a window of the cache `<zone_folder>/.c`, stopped mid-write."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(zone_folder), piece], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  assert proc.stdout.readline() == "writing\n"
  return proc


def _cached_zone(folder, run, **kw):
  return fetch.cached_zone(folder, ZONE, name=".c", key=KEY, run=run, **{
      "expected": {"source": "test", "year": 2023}, "overwrite": False, **kw})


def test_a_killed_writers_temporary_is_removed_and_its_windows_kept(tmp_path):
  folder = tmp_path / "t_0"
  cache = fetch.ZoneCache.open(folder / ".c", KEY)
  cache.save("a", np.ones((4, 6), np.uint16))
  killed = _writer(folder, "b")
  killed.kill()                                  # SIGKILL: the lock goes with it
  killed.wait()
  [left] = _partials(folder / ".c")             # what a killed run leaves
  assert left.startswith(".b.npy.")
  seen = {}

  def run(cache):
    seen.update(partials=_partials(cache.folder), a=cache.load("a", (4, 6), np.uint16),
                b=cache.load("b", (4, 6), np.uint16))
    raise UserError("still failing")             # a rerun that stops again
  with pytest.raises(UserError, match="still failing"):
    _cached_zone(folder, run)
  assert seen["partials"] == [] and seen["b"] is None
  np.testing.assert_array_equal(seen["a"], np.ones((4, 6)))
  assert _partials(folder / ".c") == [] and (folder / ".c" / "a.npy").is_file()


def test_a_live_writers_temporary_is_never_removed(tmp_path):
  """A second run of the zone waits for the live one, then finds the zone done."""
  folder = tmp_path / "t_0"
  live = _writer(folder, "b")
  ran = []
  second = threading.Thread(target=lambda: ran.append(_cached_zone(folder, lambda c: {})))
  second.start()
  time.sleep(0.5)                                # it waits on the live run's lock
  assert not ran and len(_partials(folder / ".c")) == 1
  _write_done_zone(folder)                       # the live run completes the zone
  live.stdin.close()
  assert live.wait() == 0
  second.join()
  assert ran == [{"source": "test", "year": 2023, "months": ["2023-01"],
                  "bands": list(zonefolder.BANDS)}]


def _write_done_zone(folder):
  zonefolder.write_imagery(folder, ZONE, np.ones((1, 4, 4, 6), np.uint16),
                           np.ones((1, 4, 6), np.uint8), ["2023-01"],
                           {"source": "test", "year": 2023})


def test_zone_done_skips_runs_unless_overwrite(tmp_path):
  folder = tmp_path / "t_0"
  ran = []
  info = _cached_zone(folder, lambda cache: ran.append(cache.folder) or {"ran": 1})
  assert info == {"ran": 1} and not (folder / ".c").exists()   # the cache goes after
  _write_done_zone(folder)
  assert _cached_zone(folder, ran.append)["source"] == "test" and len(ran) == 1
  with pytest.raises(UserError, match="holds zone-year 2023, not 2024"):  # one zone-year
    fetch.zone_done(folder, ZONE, source="test", year=2024)                # per folder
  (folder / "valid_count.tif").unlink()                    # a file missing: not done
  assert fetch.zone_done(folder, ZONE, source="test") is None
  _write_done_zone(folder)
  assert _cached_zone(folder, lambda c: {"again": 1}, overwrite=True) == {"again": 1}
  other = Zone("o_0", "Test", "Town", 0, 32631, x0=500_000.0, y0=5_000_000.0,
               width=6, height=4)
  with pytest.raises(UserError, match="already holds zone 't_0'"):
    fetch.zone_done(folder, other, source="test")


class Flaky:
  """Raises fetch.Transient `fails` times, then answers `value`."""

  def __init__(self, fails, value="ok"):
    self.fails, self.value, self.calls = fails, value, 0

  def __call__(self):
    self.calls += 1
    if self.calls <= self.fails:
      raise fetch.Transient(f"503 try {self.calls}")
    return self.value


def test_pool_retries_with_jittered_exponential_delays():
  slept = []
  pool = fetch.Pool(2, retries=3, base_delay=2.0, sleep=slept.append, uniform=lambda: 0.5)
  flaky = Flaky(3)
  assert pool.call(flaky, "zone z tile 0") == "ok" and flaky.calls == 4
  assert slept == [2.0 * 1.125, 4.0 * 1.125, 8.0 * 1.125]   # base 2**k (1 + 0.25 u)
  with pytest.raises(UserError) as e:
    pool.call(Flaky(10), "zone z tile 1")
  assert str(e.value) == ("zone z tile 1: still failing after 3 retries (503 try 4); "
                          "rerun the same command later, it resumes where it stopped")
  with pytest.raises(ZeroDivisionError):                     # not Transient: at once
    pool.call(lambda: 1 / 0, "x")
  with pytest.raises(UserError, match="--workers 0 must be at least 1"):
    fetch.Pool(0)


def test_a_transient_error_holds_back_every_worker():
  """A's 503 sets the back-off; B, starting while A waits it out, waits too,
  though B never failed."""
  slept, asleep, go = [], threading.Event(), threading.Event()

  def sleep(seconds):
    slept.append((threading.current_thread().name, seconds))
    asleep.set()
    go.wait()

  pool = fetch.Pool(2, retries=1, base_delay=1.0, sleep=sleep, uniform=lambda: 0.0)
  a = threading.Thread(target=pool.call, args=(Flaky(1), "a"), name="A")
  a.start()
  asleep.wait()                             # A failed once and waits 1 s
  b = threading.Thread(target=pool.call, args=(Flaky(0), "b"), name="B")
  b.start()
  while len(slept) < 2 and b.is_alive():
    time.sleep(0.01)
  go.set()
  a.join()
  b.join()
  assert slept == [("A", 1.0), ("B", 1.0)]


def test_fetch_all_stops_at_the_first_failure():
  started = []

  def job(i):
    started.append(i)
    if i == 2:
      raise UserError("job 2 refused")
    return i * 10

  assert fetch.fetch_all(job, [0, 1, 3], 2, desc="t", unit="job", progress=False) == \
      [0, 10, 30]
  started.clear()
  with pytest.raises(UserError, match="job 2 refused"):
    fetch.fetch_all(job, list(range(10)), 1, desc="t", unit="job", progress=False)
  assert started == [0, 1, 2]               # one worker: nothing after the failure
