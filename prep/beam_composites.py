"""Composites of a country's zones with Apache Beam: zone ids -> composites -> zone folders.

  python -m prep beam --source scenes --scenes DIR --zones-csv zones_fr.csv --all \\
      --out gs://BUCKET/zones [-- BEAM PIPELINE OPTIONS]
  python -m prep beam --source stac --catalog earth-search --zones-csv zones_fr.csv \\
      --all --out gs://BUCKET/zones [-- BEAM PIPELINE OPTIONS]

One element per zone (its zones-table row), reshuffled so that the runner spreads
the zones over its workers; one DoFn composites a zone with the route named by
`--source`, the same functions as the one-process commands, so the zone folders
are the same bit for bit:

  gee     `prep.gee.composite_zone_from_gee` (Earth Engine computePixels); each
          worker holds one `gee.make_pool` pool of `--gee-workers` requests in flight,
          so the account's concurrent requests are workers x gee-workers (keep it
          under 40, docs/prep-imagery.md).
  scenes  `prep.scenes.composite_zone_from_scenes` (SAFE or STAC/COG scene folders
          on a disk every worker reads, e.g. a mounted bucket).
  stac    `prep.stac.composite_zone_from_stac` (a STAC API: earth-search,
          planetary-computer, cdse or a URL; windows read over HTTP by each
          worker, `--stac-workers` at once; the window cache lives in the
          worker's local copy of the zone folder).

Outputs: OUT/<zone_id>/ locally, or on gs:// (the zone is written to a local
temporary folder, then its files are uploaded, meta.json last, so a zone folder
on the bucket is complete exactly when its meta.json has `imagery`). A zone whose
folder already holds imagery is skipped: a rerun (or a retried bundle) redoes only
the missing zones. Each zone's imagery info is written as one JSON line to
OUT/_beam/composites-*.jsonl.

Runners: DirectRunner by default (tests, a laptop); Dataflow with the options of
docs/prep-imagery.md (`--runner DataflowRunner --project … --region … --temp_location
gs://… --setup_file ./setup.py …`).

A user error that a DoFn raises in this process (DirectRunner; an unreachable
catalogue, a damaged scene) ends the command as the one line of that UserError,
not of Beam's copy of it (`[while running 'composite']` appended, logged with its
traceback: `_dofn_errors_unwrapped`); what Beam and the clients under it log or
warn on their way is dropped (`_quiet`). Workers in processes of their own
(Dataflow) report their errors in the runner's words.
"""
from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import shutil
import tempfile
import warnings
from typing import Sequence

from cropcontracts import atomic
from cropcontracts.errors import PATH_ERRORS, UserError
from cropcontracts.zone import Zone

SOURCES = ("gee", "scenes", "stac")


def has_imagery(folder) -> bool:
  """True when the zone folder (local or gs://) has a complete imagery stage."""
  from etils import epath
  p = epath.Path(str(folder)) / "meta.json"
  try:
    return "imagery" in json.loads(p.read_text())
  except (OSError, ValueError, FileNotFoundError):
    return False


def composite_one(zone: Zone, folder: pathlib.Path, source: str, options: dict,
                  pool=None) -> dict:
  """Composites one zone into a local folder with the route `source`."""
  if source == "scenes":
    from prep import scenes
    return scenes.composite_zone_from_scenes(options["scenes"], zone, folder,
                                             year=options["year"], progress=False)
  if source == "gee":
    from prep import gee
    return gee.composite_zone_from_gee(zone, folder, year=options["year"], progress=False,
                                       pool=pool)
  if source == "stac":
    from prep import stac
    return stac.composite_zone_from_stac(
        zone, folder, cat=stac.catalog(options["catalog"], options.get("collection")),
        year=options["year"], max_cloud=options.get("max_cloud"),
        workers=options.get("stac_workers", 4), progress=False)
  raise UserError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")


def upload(local: pathlib.Path, remote: str) -> None:
  """Copies a local zone folder's files to remote (gs://…), meta.json last."""
  names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != "meta.json")
  for name in names + ["meta.json"]:
    atomic.write_bytes(f"{remote.rstrip('/')}/{name}", (local / name).read_bytes())


def _dofn():
  import apache_beam as beam

  class CompositeZone(beam.DoFn):
    """Zone row -> the zone folder under `out` (skipped when complete) -> its info."""

    def __init__(self, out: str, source: str, options: dict):
      self.out, self.source, self.options = out, source, options
      self.pool = None

    def setup(self):
      if self.source == "gee":
        from prep import gee
        gee.initialize(self.options.get("project"))
        self.pool = gee.make_pool(self.options.get("gee_workers", 8))

    def process(self, row):
      zone = Zone.from_row(row)
      target = f"{self.out.rstrip('/')}/{zone.zone_id}"
      if has_imagery(target):
        yield dict(zone_id=zone.zone_id, skipped=True)
        return
      if atomic.is_remote(self.out):
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{zone.zone_id}."))
        try:
          info = composite_one(zone, tmp / zone.zone_id, self.source, self.options,
                               self.pool)
          upload(tmp / zone.zone_id, target)
        finally:
          shutil.rmtree(tmp, ignore_errors=True)
      else:
        info = composite_one(zone, pathlib.Path(target), self.source, self.options,
                             self.pool)
      yield dict(zone_id=zone.zone_id, skipped=False, **{
          k: v for k, v in info.items() if isinstance(v, (int, float, str))})

  return CompositeZone


def run(zones: Sequence[Zone], out, *, source: str, scenes=None, year: int = 2023,
        project: str | None = None, gee_workers: int = 8, catalog: str = "earth-search",
        collection: str | None = None, max_cloud: float | None = None,
        stac_workers: int = 4, pipeline_args: Sequence[str] = ()) -> None:
  """Runs the pipeline over `zones` (DirectRunner unless pipeline_args say otherwise)."""
  if source not in SOURCES:
    raise UserError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")
  if source == "scenes" and (scenes is None or not pathlib.Path(scenes).is_dir()):
    raise UserError(f"{scenes}: scene folder not found (--scenes)")
  if source == "stac":
    from prep import stac
    stac.catalog(catalog, collection)          # a bad name fails here, not on a worker
  for name, n in (("--gee-workers", gee_workers), ("--stac-workers", stac_workers)):
    if n < 1:
      raise UserError(f"{name} {n} must be at least 1")
  out = str(out)
  if not atomic.is_remote(out):
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
  options = dict(scenes=str(scenes) if scenes else None, year=year, project=project,
                 gee_workers=gee_workers, catalog=catalog, collection=collection,
                 max_cloud=max_cloud, stac_workers=stac_workers)
  with _quiet(), _dofn_errors_unwrapped():
    _pipeline(zones, out, source, options, pipeline_args)


def _pipeline(zones, out: str, source: str, options: dict, pipeline_args) -> None:
  """Builds and runs the pipeline (its `with` block runs it to the end)."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  CompositeZone = _dofn()
  with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as p:
    _ = (p
         | "zones" >> beam.Create([z.to_row() for z in zones])
         | "spread" >> beam.Reshuffle()
         | "composite" >> beam.ParDo(CompositeZone(out, source, options))
         | "json" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
         | "summary" >> beam.io.WriteToText(f"{out.rstrip('/')}/_beam/composites",
                                            file_name_suffix=".jsonl"))


# The modules whose warnings `_quiet` drops: Beam and the Google Cloud clients it
# imports (google.api_core's ImportWarning "Please install grpcio-status").
_LIBRARIES = r"(apache_beam|google|grpc)(\.|$)"


@contextlib.contextmanager
def _quiet():
  """For the block (Beam's import and its pipeline), what Beam and the clients
  under it log or warn is dropped; our own warnings still print.

  Beam configures the root logger itself when nothing did (`logging.basicConfig`
  in `Pipeline` and `PipelineOptions`, a bare `logging.warning` at import:
  "apitools not found"), which sends every library's records to stderr for the
  rest of the process: urllib3's retries, then Beam's ERROR with the traceback of
  a failed element. A handler on the root logger, which drops what reaches it,
  keeps it from doing so. A root logger the caller configured is left alone.
  """
  root = logging.getLogger()
  guard = logging.NullHandler() if not root.handlers else None
  if guard:
    root.addHandler(guard)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", module=_LIBRARIES)
      yield
  finally:
    if guard:
      root.removeHandler(guard)


@contextlib.contextmanager
def _dofn_errors_unwrapped():
  """A user error raised in a DoFn leaves the block as itself.

  A runner that runs the DoFns in this process (DirectRunner) re-raises what a
  DoFn raised as a copy with " [while running 'STEP']" appended to its message
  (a RuntimeError naming it when its type cannot be copied: an OSError), the
  original as its context. The original user error (UserError, a path the user
  gave, `errors.PATH_ERRORS`) is raised instead; anything else, a bug, goes on
  as Beam raised it, traceback and all.
  """
  try:
    yield
  except Exception as e:      # pylint: disable=broad-except
    original = _raised_in_dofn(e)
    if isinstance(original, (UserError,) + PATH_ERRORS):
      raise original from None
    raise


def _raised_in_dofn(e: BaseException) -> BaseException:
  """The exception under Beam's copies of it (`_tagged_with_step`): `e`'s first
  context that Beam did not make; `e` itself when Beam made none."""
  while getattr(e, "_tagged_with_step", False) and e.__context__ is not None:
    e = e.__context__
  return e


def read_summary(out) -> list[dict]:
  """The JSON lines of a finished run's OUT/_beam/composites-*.jsonl."""
  rows = []
  for p in sorted(pathlib.Path(out, "_beam").glob("composites-*.jsonl")):
    rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
  return sorted(rows, key=lambda r: r["zone_id"])

