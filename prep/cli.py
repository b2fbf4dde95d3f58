"""`python -m prep`: inputs -> zone folders, one subcommand per route.

  zones      list the study zones, re-select them from ESA WorldCover (Earth Engine),
             or grid a whole country from the RPG (--country)
  gee        monthly composites of zones through Earth Engine
  composite  monthly composites of zones from local Sentinel-2 L2A scenes (SAFE or STAC/COG)
  stac       monthly composites of zones from a STAC catalogue's COGs (zone windows only)
  beam       composites of many zones with Apache Beam (DirectRunner, Dataflow)
  labels     parcel and class rasters of zones from the RPG
  points     labelled point tables -> a points folder (monthly composites per point)
  demo       a synthetic demo region, raw inputs and zone folders, offline

A user mistake (UserError, a missing file, a bad argument) prints one line
`error: …` on stderr and exits with status 2; a bug keeps its traceback.
Warnings (e.g. a month without any scene, gap filled) print `warning: …`.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import textwrap

from cropcontracts import cli
from cropcontracts.errors import UserError


def _doc(text: str) -> str:
  return textwrap.dedent(text).strip()


def _catalog_args(p, only: str = "") -> None:
  """--catalog, --collection, --max-cloud: the STAC options of `prep stac` and
  `prep beam --source stac` (`only` prefixes their help there)."""
  p.add_argument("--catalog", default="earth-search", metavar="NAME|URL",
                 help=f"{only}earth-search, planetary-computer, cdse or a STAC API URL "
                      "(default: %(default)s)")
  p.add_argument("--collection", default=None,
                 help=f"{only}collection id (default: sentinel-2-l2a)")
  p.add_argument("--max-cloud", type=float, default=None, metavar="PERCENT",
                 help=f"{only}skip items whose tile eo:cloud_cover exceeds PERCENT before "
                      "reading them. A speed knob only: the figure is the whole "
                      "110 km tile's, so a cloudy tile may be clear over the zone "
                      "and months with few acquisitions lose them (default: no "
                      "filter)")


def _zone_args(p: argparse.ArgumentParser) -> None:
  """--zones ID… | --all, and --zones-csv: which rows of which zones table."""
  g = p.add_mutually_exclusive_group(required=True)
  g.add_argument("--zones", nargs="+", metavar="ID",
                 help="zone ids, e.g. chartres_0 chartres_1")
  g.add_argument("--all", action="store_true", help="every zone of the zones table")
  p.add_argument("--zones-csv", type=pathlib.Path, default=None, metavar="PATH",
                 help="zones table (default: the study zones, prep/data/zones.csv)")


def _out_arg(p: argparse.ArgumentParser, help: str = "folder of zone folders",
             **kw) -> None:
  """--out DIR (required; a local path unless kw says otherwise)."""
  p.add_argument("--out", **{"type": pathlib.Path, "required": True, "metavar": "DIR",
                             "help": help, **kw})


def _year_arg(p: argparse.ArgumentParser) -> None:
  p.add_argument("--year", type=int, default=2023,
                 help="year of the composites (default: %(default)s); a zone folder "
                      "holds one zone-year: give each year its folder of zone folders, "
                      "e.g. --out data/zones/2022 (zone folders of another year are "
                      "refused)")


def _project_arg(p: argparse.ArgumentParser, only: str = "") -> None:
  """--project (`only` prefixes its help where one route of several needs it)."""
  p.add_argument("--project", default=None,
                 help=f"{only}Google Cloud project for Earth Engine "
                      "(default: $JAXCROP_EE_PROJECT)")


def _workers_arg(p: argparse.ArgumentParser, default: int, help: str,
                 flag: str = "--workers") -> None:
  """--workers N: requests in flight at once (`prep.fetch.Pool`)."""
  p.add_argument(flag, type=int, default=default, help=f"{help} (default: %(default)s)")


def _command(sub, name: str, help: str, description: str, examples: str,
             run) -> cli.ArgumentParser:
  """A subcommand: its one-line help, description, examples and what runs it."""
  p = sub.add_parser(name, help=help, description=_doc(description),
                     epilog="examples:\n" + textwrap.indent(_doc(examples), "  "))
  p.set_defaults(run=run)
  return p


def build_parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog="python -m prep",
      description=_doc(__doc__.split("A user mistake")[0]),
      epilog=_doc("""
          examples:
            python -m prep zones
            python -m prep demo --out /tmp/demo
            python -m prep composite --scenes scenes/ --all --out data/zones
            python -m prep stac --catalog earth-search --all --out data/zones
            python -m prep labels --rpg RPG_2023.gpkg --all --out data/zones
          Run `python -m prep <command> --help` for each command."""))
  parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
  sub = parser.add_subparsers(dest="command", required=True, metavar="command")
  for add in (_zones_parser, _gee_parser, _composite_parser, _stac_parser, _beam_parser,
              _labels_parser, _points_parser, _demo_parser):
    add(sub)
  return parser


def _zones_parser(sub) -> None:
  p = _command(
      sub, "zones", "list or select the study zones", """
          List the zones table (id, region, EPSG, centre, cropland fraction,
          source), or with --select re-derive the 40 study zones from ESA
          WorldCover through Earth Engine and write the table: per region the
          5 most cultivated 10 km squares, at least 1 km apart; the test zone
          (index 0) is a seeded draw among them (--seed), not always the
          most cultivated.""", """
            python -m prep zones
            python -m prep zones --zones-csv /tmp/demo/raw/zones.csv
            python -m prep zones --select --out prep/data/zones.csv   # needs Earth Engine
            python -m prep zones --country --rpg RPG_FXX_2023.gpkg --out zones_fr.csv""",
      run_zones)
  g = p.add_mutually_exclusive_group()
  g.add_argument("--list", action="store_true", help="list the zones (the default)")
  g.add_argument("--select", action="store_true",
                 help="select the zones from ESA WorldCover (Earth Engine) and write --out")
  g.add_argument("--country", action="store_true",
                 help="every 10 km square of each UTM zone's grid holding RPG parcels "
                      "(coverage from the RPG itself, bbox reads; no Earth Engine); "
                      "writes --out")
  p.add_argument("--rpg", type=pathlib.Path, nargs="+", default=None, metavar="FILE",
                 help="--country: RPG GeoPackage or Shapefile(s) (Lambert-93)")
  p.add_argument("--layer", default=None, help="--country: RPG layer name")
  p.add_argument("--pixels", type=int, default=1000,
                 help="--country: side of a square in 10 m pixels (default: %(default)s)")
  p.add_argument("--min-fraction", type=float, default=0.0,
                 help="--country: keep squares whose parcel area fraction is above this "
                      "(default: %(default)s, any parcel)")
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("prep/data/zones.csv"),
                 help="where --select writes the zones table (default: %(default)s)")
  p.add_argument("--zones-csv", type=pathlib.Path, default=None, metavar="PATH",
                 help="zones table to list (default: prep/data/zones.csv)")
  _project_arg(p)
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the draw of each region's test zone among its squares "
                      "(default: %(default)s)")


def _gee_parser(sub) -> None:
  p = _command(
      sub, "gee", "composites through Earth Engine", """
          Monthly median composites (B2 B3 B4 B8, SCL 4-7 valid, gap filled) of
          COPERNICUS/S2_SR_HARMONIZED for each zone, computed by Earth Engine,
          into OUT/<zone_id>/. Needs Earth Engine credentials: `earthengine
          authenticate`, or JAXCROP_EE_KEY=<service-account key JSON>; and a
          Cloud project (--project or JAXCROP_EE_PROJECT). Fetched tiles are
          cached in OUT/<zone_id>/.gee_cache, so an interrupted run resumes.
          Months, tiles and zones are fetched concurrently (--workers).""", """
            python -m prep gee --zones chartres_0 chartres_1 --out data/zones
            python -m prep gee --all --out data/zones --year 2023""",
      run_gee)
  _zone_args(p)
  _out_arg(p)
  _year_arg(p)
  _project_arg(p)
  p.add_argument("--overwrite", action="store_true",
                 help="recompute zones that already hold this year's Earth Engine composites")
  _workers_arg(p, 8, "computePixels requests in flight at once, shared by the zones, with "
                     "one back-off on quota errors; an account gets 40 concurrent "
                     "interactive requests")


def _composite_parser(sub) -> None:
  p = _command(
      sub, "composite", "composites from local scenes", """
          Monthly median composites of each zone from local Sentinel-2 L2A
          scenes: DIR/<item_id>/<item_id>.json (STAC item) with B02 B03 B04 B08
          (10 m) and SCL (20 m) GeoTIFF/COG assets (or Earth Search's blue green
          red nir scl), or *.SAFE products; into OUT/<zone_id>/.""", """
            python -m prep composite --scenes /tmp/demo/raw/scenes \\
                --zones-csv /tmp/demo/raw/zones.csv --all --out /tmp/zones
            python -m prep composite --scenes scenes/ --zones chartres_0 --out data/zones""",
      run_composite)
  p.add_argument("--scenes", type=pathlib.Path, required=True, metavar="DIR",
                 help="folder of scene folders (one per STAC item)")
  _zone_args(p)
  _out_arg(p)
  _year_arg(p)


def _stac_parser(sub) -> None:
  p = _command(
      sub, "stac", "composites from a STAC catalogue's COGs", """
          Monthly median composites of each zone from a public STAC catalogue
          of Sentinel-2 L2A Cloud-Optimized GeoTIFFs, without downloading whole
          tiles: the items intersecting the zone in the year are searched
          (pystac-client, all pages) and only the zone's window of B02 B03 B04
          B08 and SCL is read from each (GDAL HTTP range requests), then the
          local route's masking, harmonization, median, gap filling and zone
          folder, into OUT/<zone_id>/. Fetched windows are cached in
          OUT/<zone_id>/.stac_cache, so an interrupted run resumes; a zone
          already composited from the same catalogue and year is skipped.
          Items lacking an asset, or whose asset answers 404 or is not a
          raster, are skipped with a warning and listed in meta.json.

          catalogues:
            earth-search        Earth Search (AWS), public, no account
            planetary-computer  Microsoft Planetary Computer; URLs signed by the
                                planetary-computer package (optional
                                PC_SDK_SUBSCRIPTION_KEY), re-signed once on 403
            cdse                Copernicus Data Space; its S3 keys in
                                CDSE_S3_ACCESS_KEY and CDSE_S3_SECRET_KEY
            <URL>               any STAC API serving the collection""", """
            python -m prep stac --catalog earth-search --zones chartres_0 --out data/zones
            python -m prep stac --catalog planetary-computer --all --year 2023 --out data/zones
            CDSE_S3_ACCESS_KEY=… CDSE_S3_SECRET_KEY=… \\
                python -m prep stac --catalog cdse --all --out data/zones""",
      run_stac)
  _zone_args(p)
  _catalog_args(p)
  _out_arg(p)
  _year_arg(p)
  _workers_arg(p, 4, "remote windows read at once, with one back-off on transient errors")
  p.add_argument("--overwrite", action="store_true",
                 help="recompute zones already composited from this catalogue and year")


def _beam_parser(sub) -> None:
  p = _command(
      sub, "beam", "composites of many zones with Apache Beam", """
          Composites of every selected zone with an Apache Beam pipeline: one
          element per zone, the route of --source (gee: Earth Engine; scenes: local
          SAFE/STAC scenes; stac: a STAC API) as in `prep gee` / `prep composite` /
          `prep stac`, zone folders in
          OUT (local or gs://); zones already composited are skipped. Arguments
          after `--` go to Beam (default DirectRunner); the Dataflow command is in
          docs/prep-imagery.md.""", """
            python -m prep beam --source scenes --scenes /tmp/demo/raw/scenes \\
                --zones-csv /tmp/demo/raw/zones.csv --all --out /tmp/zones_beam
            python -m prep beam --source gee --zones-csv zones_fr.csv --all \\
                --out gs://BUCKET/zones -- --runner DataflowRunner --project P ...
            python -m prep beam --source stac --catalog earth-search \\
                --zones-csv zones_fr.csv --all --out gs://BUCKET/zones -- ...""",
      run_beam)
  p.add_argument("--source", choices=("gee", "scenes", "stac"), required=True,
                 help="the composite route: gee (Earth Engine), scenes (local scenes) or "
                      "stac (a STAC API)")
  p.add_argument("--scenes", type=pathlib.Path, default=None, metavar="DIR",
                 help="--source scenes: folder of scene folders every worker can read")
  _zone_args(p)
  _out_arg(p, "folder of zone folders (or gs://)", type=str)
  _year_arg(p)
  _project_arg(p, "--source gee: ")
  _workers_arg(p, 8, "--source gee: requests in flight per Beam worker", "--gee-workers")
  _catalog_args(p, "--source stac: ")
  _workers_arg(p, 4, "--source stac: remote windows read at once per zone",
               "--stac-workers")
  p.add_argument("beam_args", nargs="*", metavar="-- BEAM_OPTION",
                 help="Beam pipeline options, after --")


def _labels_parser(sub) -> None:
  from prep.labels import DEFAULT_MARGIN
  p = _command(
      sub, "labels", "labels from the RPG", """
          Parcel raster, tier-3 class raster and parcel table of each zone from
          the RPG (GeoPackage or regional Shapefiles, Lambert-93), into
          OUT/<zone_id>/. Several files (neighbouring regions) may be given.
          Codes are read with their meaning in the RPG edition: --rpg-year,
          else the year in the file's name (or in a folder above it named
          RPG…), else --year, else the year of the zone's composites, else
          2023 (with a warning). The edition must be the zone-year (--year,
          and the year of the folder's composites): one folder of zone
          folders per year, e.g. --out data/zones/2022 for RPG_2022. A code the nomenclature lacks for that edition stops the
          run, listing each code with its parcels and area, unless
          --unknown-codes ignore.

          Outside the parcels: a pixel whose 10 m cell holds no part of any
          parcel (ignored codes included) and lies more than --margin pixels
          from every cell that does gets the background class
          (non_agricultural); the pixels in between stay unlabelled. Without
          --landcover that is all such land, so undeclared farmland (fields
          outside the RPG) is labelled background too; with --landcover, the
          pixels it calls cropland or grassland (WorldCover 40, 30) stay
          unlabelled instead.""", """
            python -m prep labels --rpg RPG_2-2__GPKG_LAMB93_FXX_2023.gpkg --all --out data/zones
            python -m prep labels --rpg RPG_2-0__GPKG_LAMB93_FXX_2022.gpkg --year 2022 \
                --all --out data/zones/2022
            python -m prep labels --rpg R24.shp R28.shp --zones chartres_0 --out data/zones \\
                --drop-border
            python -m prep labels --rpg PARCELLES_GRAPHIQUES.gpkg --rpg-year 2024 \\
                --all --out data/zones --unknown-codes ignore
            python -m prep labels --rpg RPG_2023.gpkg --all --out data/zones \\
                --landcover ESA_WorldCover_10m_2021_v200_N48E000_Map.tif
            python -m prep labels --rpg RPG_2023.gpkg --all --out data/zones \\
                --landcover worldcover --project my-gcp-project""",
      run_labels)
  p.add_argument("--rpg", type=pathlib.Path, nargs="+", required=True, metavar="FILE",
                 help="RPG GeoPackage or Shapefile(s)")
  _zone_args(p)
  _out_arg(p)
  p.add_argument("--layer", default=None,
                 help="layer name (default: PARCELLES_GRAPHIQUES, or the only layer)")
  p.add_argument("--drop-border", action="store_true",
                 help="leave unlabelled the pixels crossed by a parcel boundary")
  p.add_argument("--rpg-year", type=int, default=None, metavar="YEAR",
                 help="RPG edition (declaration year) of the files (default: the year "
                      "in their name, else the composites' year, else 2023)")
  p.add_argument("--year", type=int, default=None,
                 help="the zone-year: an RPG of another edition (by --rpg-year or its "
                      "file name), or zone folders holding another year's composites, "
                      "stop the run (default: the composites' year)")
  p.add_argument("--unknown-codes", choices=("error", "ignore"), default="error",
                 help="codes the nomenclature lacks for the edition: stop (error, the "
                      "default) or leave their parcels unlabelled with a warning, "
                      "recorded in meta.json (ignore)")
  p.add_argument("--margin", type=int, default=DEFAULT_MARGIN, metavar="PIXELS",
                 help="pixels around the parcels left unlabelled before the background "
                      "class starts; the cells a parcel edge crosses are never background "
                      "(default: %(default)s)")
  p.add_argument("--landcover", default=None, metavar="FILE|worldcover",
                 help="a land-cover GeoTIFF in ESA WorldCover's legend (any CRS and grid; "
                      "reprojected, nearest) or `worldcover` (ESA/WorldCover/v200 through "
                      "Earth Engine): its cropland and grassland outside the RPG stay "
                      "unlabelled instead of background (default: none, every pixel "
                      "beyond the margin is background)")
  _project_arg(p, "--landcover worldcover: ")


def _points_parser(sub) -> None:
  p = _command(
      sub, "points", "labelled point tables to a points folder", """
          Monthly composites of labelled points from a point table (CSV or
          Parquet, long: one row per point and date, or wide: 12 monthly
          columns per band; labels as class_name, or code_cultu with
          rpg_edition; optional year and group columns: docs/points.md), with
          the zones' masking and gap filling: per month the median of the
          observations whose bands are all > 0, empty months interpolated.
          Points without any valid value, or of an `ignore` code, are dropped
          and counted. Writes the points folder OUT (points.npz, points.csv,
          meta.json; cropcontracts/pointfolder.py) for `tfds build
          tfds_builder/cropmap --config=points --manual_dir=OUT`.""", """
            python -m prep points --table /tmp/demo/raw/points.csv --year 2023 --out /tmp/points
            python -m prep points --table survey.parquet --year 2022 --out data/points""",
      run_points)
  p.add_argument("--table", type=pathlib.Path, required=True, metavar="FILE",
                 help="point table, .csv or .parquet (docs/points.md)")
  _year_arg(p)
  _out_arg(p, "the points folder to write (replaced if there)")


def _demo_parser(sub) -> None:
  p = _command(
      sub, "demo", "synthetic demo region, offline", """
          Write a synthetic demo region near Chartres in the real input formats
          (RPG 2023-like GeoPackage, Sentinel-2 L2A-like products of baseline
          05.09 with the BOA offset: SAFE and STAC/COG, each acquisition on two
          overlapping UTM-31 tiles and a UTM-30 tile; a land-cover raster in ESA
          WorldCover classes; zones table) under OUT/raw: fields, undeclared
          farmland, woods, villages, water and margins (28-35 % of each zone
          not farmland). Then run the composite and labels routes into
          OUT/zones/<zone_id>/ (2 regions x 5 zones of 256 x 256 pixels; --small:
          2 x 2 zones of 48 x 48). A rerun skips what is complete. With
          --points N, also OUT/raw/points.csv: a point table (docs/points.md,
          long shape) of N labelled points, one pixel of each of N parcels,
          every acquisition's values there, clouds as 0. Synthetic data: not a
          result.""", """
            python -m prep demo --out /tmp/demo
            python -m prep demo --out /tmp/demo_small --small --seed 1
            python -m prep demo --out /tmp/demo_years --years 2022,2023
            python -m prep demo --out /tmp/demo --points 1000""",
      run_demo)
  _out_arg(p, "output folder (raw/ and zones/ are written in it)")
  p.add_argument("--seed", type=int, default=0,
                 help="random seed of the region (default: %(default)s)")
  p.add_argument("--small", action="store_true",
                 help="tiny variant for tests: 2 x 2 zones of 48 x 48 pixels")
  p.add_argument("--years", type=_years, default=None, metavar="Y1,Y2,…",
                 help="several years on the same parcels, each its weather, clouds, "
                      "rotated crops and RPG edition: OUT/raw/<year>/ and "
                      "OUT/zones/<year>/<zone_id>/ (default: the single-year demo, 2023)")
  p.add_argument("--points", type=int, default=0, metavar="N",
                 help="also write OUT/raw/points.csv, a point table of N labelled points "
                      "sampled from the region, one per parcel (default: none)")


def _years(text: str) -> list[int]:
  """`2022,2023` -> [2022, 2023]: years of the RPG editions the nomenclature covers."""
  from cropcontracts.nomenclature import FIRST_EDITION
  try:
    years = sorted({int(y) for y in text.split(",") if y.strip()})
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: expected years like 2022,2023") from None
  if not years or years[0] < FIRST_EDITION or years[-1] > 2100:
    raise argparse.ArgumentTypeError(f"{text!r}: expected years from {FIRST_EDITION} on, "
                                     f"like 2022,2023")
  return years


def _read_table(path) -> list:
  """The zones of a zones table; a table without any zone row is a user error."""
  from prep import zones as zones_lib
  path = path or zones_lib.ZONES_CSV
  table = zones_lib.read_zones(path)
  if not table:
    raise UserError(f"{path}: zones table has no zone row (expected a CSV with columns "
                    f"zone_id, region, town, index, epsg, x0, y0, width, height, res, …)")
  return table


def _zones(args) -> list:
  """The zones named by --zones/--all in the --zones-csv table."""
  from prep import zones as zones_lib
  table = _read_table(args.zones_csv)
  return zones_lib.select(table, None if getattr(args, "all", False) else args.zones)


def _each_zone(args, desc: str, fn, *, check=None) -> list:
  """Runs fn(zone, folder) for the selected zones, with a progress bar.

  `check(zone, table)` runs first on every selected zone, so that a bad row
  stops the run before any zone is processed.
  """
  from prep import zones as zones_lib
  from tqdm import tqdm
  zones = _zones(args)
  for zone in zones if check else ():
    check(zone, args.zones_csv or zones_lib.ZONES_CSV)
  with tqdm(zones, desc=desc, unit="zone", disable=args.quiet) as bar:
    for zone in bar:
      fn(zone, args.out / zone.zone_id)
  print(f"{desc}: {len(zones)} zone folder(s) under {args.out}")
  return zones


def _need(path: pathlib.Path, what: str, *, folder: bool = False) -> None:
  ok = path.is_dir() if folder else path.exists()
  if not ok:
    raise UserError(f"{path}: {what} not found")


def run_zones(args) -> None:
  from prep import zones as zones_lib
  if args.country:
    run_country_zones(args)
    return
  if args.select:
    from prep import select_zones
    zones = select_zones.select_zones(progress=not args.quiet, project=args.project,
                                      seed=args.seed)
    zones_lib.write_zones(zones, args.out)
    print(f"wrote {len(zones)} zones to {args.out}")
    return
  zones = _read_table(args.zones_csv)
  print(format_zones(zones))
  provisional = sum(z.source == PROVISIONAL for z in zones)
  if provisional:
    print(f"\n{provisional} of {len(zones)} zones are provisional ({PROVISIONAL}: the 10 km "
          f"squares W, E, S, N and NE of each town, 11 km from its centre, not yet chosen "
          f"from ESA WorldCover); `python -m prep zones --select` (Earth Engine) replaces "
          f"them, and their ids and test/fold membership may change then.")


PROVISIONAL = "fallback-cross"


def run_country_zones(args) -> None:
  import json
  from prep import country, zones as zones_lib
  if not args.rpg:
    raise UserError("zones --country needs --rpg FILE (the RPG PARCELLES_GRAPHIQUES file)")
  if args.out == pathlib.Path("prep/data/zones.csv"):
    raise UserError("zones --country: pass --out FILE (not the study zones table "
                    "prep/data/zones.csv)")
  zones, summary = country.country_zones(args.rpg, layer=args.layer, pixels=args.pixels,
                                         min_fraction=args.min_fraction,
                                         progress=not args.quiet)
  if not zones:
    raise UserError(f"{', '.join(map(str, args.rpg))}: no parcel in any square; "
                    f"pass the RPG file(s) of the country")
  zones_lib.write_zones(zones, args.out)
  print(json.dumps(dict(summary, out=str(args.out))))


def format_zones(zones) -> str:
  """The zones as an aligned text table."""
  rows = [("id", "region", "EPSG", "centre (lat, lon)", "cropland", "source")]
  for z in zones:
    crop = "" if math.isnan(z.cropland_fraction) else f"{z.cropland_fraction:.2f}"
    rows.append((z.zone_id, z.region, str(z.epsg),
                 f"{z.center_lat:.4f}, {z.center_lon:.4f}", crop, z.source))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                   for r in rows)


def run_gee(args) -> None:
  from prep import gee, s2_products
  from prep import zones as zones_lib
  zones = _zones(args)
  for zone in zones:     # a bad row stops the run before any request
    s2_products.check_zone_grid(zone, args.zones_csv or zones_lib.ZONES_CSV)
  gee.composite_zones_from_gee(zones, args.out, workers=args.workers, year=args.year,
                               project=args.project, overwrite=args.overwrite,
                               progress=not args.quiet)
  print(f"gee composites: {len(zones)} zone folder(s) under {args.out}")


def run_composite(args) -> None:
  _need(args.scenes, "scene folder", folder=True)
  from prep import s2_products, scenes
  _each_zone(args, "composites", lambda zone, folder: scenes.composite_zone_from_scenes(
      args.scenes, zone, folder, year=args.year, progress=False),
      check=s2_products.check_zone_grid)


def run_stac(args) -> None:
  from prep import s2_products, stac
  cat = stac.catalog(args.catalog, args.collection)
  stac.open_catalog(cat)              # an unusable catalogue: one line, before any progress
  _each_zone(args, "stac composites", lambda zone, folder: stac.composite_zone_from_stac(
      zone, folder, cat=cat, year=args.year, max_cloud=args.max_cloud,
      workers=args.workers, overwrite=args.overwrite, progress=False),
      check=s2_products.check_zone_grid)


def run_beam(args) -> None:
  from prep import beam_composites
  zones = _zones(args)
  beam_composites.run(zones, args.out, source=args.source, scenes=args.scenes,
                      year=args.year, project=args.project, gee_workers=args.gee_workers,
                      catalog=args.catalog, collection=args.collection,
                      max_cloud=args.max_cloud, stac_workers=args.stac_workers,
                      pipeline_args=args.beam_args)
  print(f"beam composites: {len(zones)} zone(s) under {args.out} "
        f"(summary: {args.out}/_beam/composites-*.jsonl)")


def run_labels(args) -> None:
  from prep import labels, landcover
  for p in args.rpg:
    _need(p, "RPG file")
  rpg = args.rpg[0] if len(args.rpg) == 1 else args.rpg
  if args.landcover == landcover.WORLDCOVER_SOURCE:
    from prep import gee
    gee.initialize(args.project)
  elif args.landcover is not None:
    _need(pathlib.Path(args.landcover), "land-cover raster")
  _each_zone(args, "labels", lambda zone, folder: labels.make_zone_labels(
      rpg, zone, folder, layer=args.layer, drop_border=args.drop_border,
      progress=False, edition=args.rpg_year, unknown_codes=args.unknown_codes,
      margin=args.margin, landcover=args.landcover, year=args.year))


def run_points(args) -> None:
  from prep import points
  meta = points.make_points(args.table, args.year, args.out)
  c = meta["counts"]
  print(f"points folder: {args.out} ({c['kept']} of {c['points']} points; dropped "
        f"{c['dropped_no_valid']} without any valid value, {c['dropped_unlabelled']} "
        f"unlabelled; {c['other_years']} row(s) of other years left out)")


def run_demo(args) -> None:
  from prep import demo
  if args.points < 0:
    raise UserError(f"--points {args.points}: a number of points, 0 or more")
  root = demo.make_demo(args.out, seed=args.seed, progress=not args.quiet,
                        small=args.small, years=args.years)
  roots = [root / str(y) for y in args.years] if args.years else [root]
  n = sum(1 for r in roots for p in r.iterdir() if (p / "meta.json").is_file())
  where = f" of {', '.join(map(str, args.years))}" if args.years else ""
  print(f"demo zone folders: {root} ({n} {'zone-years' if args.years else 'zones'}{where})\n"
        f"raw inputs:        {args.out / 'raw'} (rpg_demo.gpkg, landcover_demo.tif, scenes/, "
        f"zones.csv{'; one folder per year' if args.years else ''})\n"
        f"synthetic data: the numbers it gives are not results")
  if args.points:
    from prep.demo import points
    table = args.out / "raw" / points.FILE
    points.write_point_table(table, args.points, seed=args.seed, small=args.small)
    print(f"point table:       {table} ({args.points} points; `python -m prep points "
          f"--table {table} --year 2023 --out DIR`)")


def main(argv=None) -> int:
  """Entry point; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
  return cli.main(build_parser(), lambda args: args.run(args), argv)
