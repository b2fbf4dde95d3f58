"""Maps of thousands of zones: each JAX process its share, reading, model and writing
overlapped, finished zones skipped.

Zones. `zone_folders` finds the zone folders under `--zone`
(`zonefolder.zone_paths`, without opening them), only those of `--zones-csv`
when given (`cropcontracts.zonetable`).

Share. The zone ids (sorted) are dealt round-robin: process i of n takes ids
i, i + n, i + 2n, … (`jax.process_index()` / `jax.process_count()`, or the
`--process-index/--process-count` overrides), so the processes of a TPU VM, or
machines started by hand, cover every zone exactly once without talking to each
other, and a zone's owner does not depend on which zones are already done.

Overlap. One thread reads the next zones' imagery (a bounded queue of
`prefetch` zones: memory stays at prefetch + 2 zones), the calling thread runs the
model (whose device work is already asynchronous, `tiling.ZoneMapper`), one
thread writes the finished maps (COG encoding and the parcel product are CPU).

Resume. A zone's output folder is renamed into place only when complete and
holds `map.json` listing its files (`geotiff.write_outputs`); a zone whose
folder is complete is skipped, so a killed or preempted run, rerun with the
same command and `--resume`, does only the zones it had not finished. Complete
means: every file the command asks for (`expected_files`), so a zone mapped
without `--tiers` or `--probs` is mapped again (and replaced) when a rerun asks
for them.
"""
from __future__ import annotations

import json
import pathlib
import queue
import threading
from typing import Callable, Iterable, Sequence

from cropcontracts import zonefolder, zonetable
from cropcontracts.errors import UserError
from jaxcrop.maps.geotiff import MAP_JSON


def zone_folders(paths, zones_csv=None) -> dict[str, pathlib.Path]:
  """{zone_id: folder} of the zone folders (or folders of zone folders) in paths,
  only those of the zones table `zones_csv` when given, in its order; not
  opened (a process opens only its share)."""
  found = zonefolder.zone_paths(paths)
  if not zones_csv:
    return found
  ids = [z.zone_id for z in zonetable.read_zones(zones_csv)]
  missing = [i for i in ids if i not in found]
  if missing:
    raise UserError(f"{zones_csv}: {len(missing)} zone(s) have no folder under "
                    f"{' '.join(map(str, paths))} (first: {missing[0]}); run prep for them")
  return {i: found[i] for i in ids}


def share(zone_ids: Iterable[str], index: int, count: int) -> list[str]:
  """The ids process `index` of `count` maps: every count-th of the sorted ids."""
  if count < 1 or not 0 <= index < count:
    raise UserError(f"--process-index {index} must be in [0, --process-count {count})")
  return sorted(zone_ids)[index::count]


def expected_files(*, tiers: bool = False, probs: bool = False) -> list[str]:
  """The files a zone's map folder must hold for a command with these options
  (besides its styles and, for a labelled zone, parcels.gpkg)."""
  files = ["classes.tif", "confidence.tif", "validity.tif"]
  if tiers:
    files += ["classes_tier1.tif", "classes_tier2.tif"]
  if probs:
    files.append("probabilities.tif")
  if probs and tiers:
    files += ["probabilities_tier1.tif", "probabilities_tier2.tif"]
  return files


ANY = object()   # is_complete: a map of any cut-off


def is_complete(folder, required: Sequence[str] = (), until=ANY) -> bool:
  """True when folder holds map.json, every file it lists, and each of
  `required` is among them (a finished zone, with what this command asks for);
  `until`: also the cut-off this command asks for, a calendar month 1-12 (an
  in-season map's `until` in map.json, `YYYY-MM`) or None (a whole-season map,
  no `until`); ANY (default): whatever cut-off it was made with."""
  folder = pathlib.Path(folder)
  try:
    record = json.loads((folder / MAP_JSON).read_text(encoding="utf-8"))
    files = record["files"]
  except (OSError, ValueError, KeyError, TypeError):
    return False
  if until is not ANY and map_until(record) != until:
    return False
  return set(required) <= set(files) and all((folder / f).is_file() for f in files)


def map_until(record: dict) -> int | None:
  """The calendar month (1-12) an in-season map of map.json `record` was cut off
  after, None for a whole-season map."""
  label = record.get("until")
  return None if label is None else int(str(label).split("-")[1])


def missing_files(folders, required: Sequence[str]) -> list[str]:
  """The files of `required` that some of these finished map folders lack."""
  have = [set(json.loads((pathlib.Path(f) / MAP_JSON).read_text(encoding="utf-8"))["files"])
          for f in folders]
  return [r for r in required if any(r not in h for h in have)]


def other_cut_offs(folders, until: int | None) -> list[str]:
  """["the cut-off …"] when some of these finished maps were made with a cut-off
  other than `until` (a calendar month, None: the whole season), else []."""
  months = {map_until(json.loads((pathlib.Path(f) / MAP_JSON).read_text(encoding="utf-8")))
            for f in folders}
  if months <= {until}:
    return []
  return [f"the cut-off {'none (whole season)' if until is None else until} asked for"]


def process_share(index: int | None, count: int | None) -> tuple[int, int]:
  """(index, count): the overrides, else this JAX process's."""
  if index is None or count is None:
    import jax
    from jaxcrop import distributed
    distributed.initialize()                   # a TPU pod's workers, a coordinator
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
  return index, count


class _Stop:
  """End of a queue (with the error that ended it, if any)."""

  def __init__(self, error: BaseException | None = None):
    self.error = error


def _put(q: queue.Queue, value, stop: threading.Event) -> None:
  """q.put(value), waiting while q is full, unless `stop` is set meanwhile (the other
  side failed): a bounded queue then never blocks a thread for good."""
  while not stop.is_set():
    try:
      q.put(value, timeout=0.1)
      return
    except queue.Full:
      pass


def run_pipelined(items: Sequence, read: Callable, compute: Callable, write: Callable, *,
                  prefetch: int = 2) -> int:
  """For each item: read(item) on a reader thread (at most `prefetch` read ahead),
  compute(item, data) here, write(item, result) on a writer thread (at most 2
  queued). Returns the number of items written. On an error, what was already
  computed is still written, then the first error of any thread is raised here
  once the threads have stopped."""
  reads: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
  writes: queue.Queue = queue.Queue(maxsize=2)
  stop = threading.Event()
  errors: list[BaseException] = []

  def reader():
    try:
      for item in items:
        if stop.is_set():
          break
        _put(reads, (item, read(item)), stop)
      reads.put(_Stop())
    except BaseException as e:  # noqa: BLE001  (re-raised by the caller's thread)
      reads.put(_Stop(e))

  written = [0]
  write_failed = threading.Event()

  def writer():                    # writes what was computed, also after a model error
    while True:
      got = writes.get()
      if isinstance(got, _Stop):
        return
      if write_failed.is_set():
        continue
      try:
        write(*got)
        written[0] += 1
      except BaseException as e:  # noqa: BLE001
        errors.append(e)
        write_failed.set()
        stop.set()

  threads = [threading.Thread(target=reader, name="maps-read", daemon=True),
             threading.Thread(target=writer, name="maps-write", daemon=True)]
  for t in threads:
    t.start()
  try:
    while not stop.is_set():
      got = reads.get()
      if isinstance(got, _Stop):
        if got.error is not None:
          errors.append(got.error)
        break
      item, data = got
      _put(writes, (item, compute(item, data)), stop)
  except BaseException as e:
    errors.append(e)
  finally:
    writes.put(_Stop())
    threads[1].join()
    stop.set()
    while threads[0].is_alive():             # unblock a reader waiting on a full queue
      try:
        reads.get_nowait()
      except queue.Empty:
        threads[0].join(0.05)
  if errors:
    raise errors[0]
  return written[0]
