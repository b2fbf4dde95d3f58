"""The demo region: synthetic inputs in the real formats, offline and seeded.

`make_demo` writes what the real inputs look like, for a small area of the
Beauce near Chartres (UTM 31N, EPSG:32631):

  raw/rpg_demo.gpkg     RPG-like parcels, layer PARCELLES_GRAPHIQUES, Lambert-93
                        (EPSG:2154), fields ID_PARCEL SURF_PARC CODE_CULTU
                        CODE_GROUP CULTURE_D1 CULTURE_D2, real RPG crop codes.
  raw/scenes/<item>/    Sentinel-2 L2A-like scenes: B02 B03 B04 B08 (uint16,
                        10 m, reflectance x 10000, 0 = nodata), SCL (uint8,
                        20 m) as tiled deflate GeoTIFFs, and `<item>.json`, a
                        minimal STAC item; one scene every ~5 days of 2023.
  raw/zones.csv         the demo zones (two regions x five zones).
  raw/landcover_demo.tif  the land cover in ESA WorldCover classes (10 m, the
                        scene grid): what `prep labels --landcover` reads.

then runs the ordinary prep routes on them (`prep.scenes` for the composites,
`prep.labels` for the labels) into `zones/<zone_id>/`. With several years
(`years=[2022, 2023]`), the same for each year on the same parcels, in
`raw/<year>/` and `zones/<year>/<zone_id>/` (`seasons.py`). Nothing here is real:
the parcels, crops, woods, villages, water and reflectances come from the
small model of the modules below, made so that crop classes are learnable but
not trivially separable, and so that 28-35 % of each zone is not farmland.
Demo numbers are never results.

  region.py   size and layout: DemoSpec (FULL, SMALL), the zones, the scene grid.
  crops.py    RPG codes, regional mixes, phenologies, the cover table.
  landcover.py  water, villages, woods, margins, undeclared farmland; the kinds'
              truth, its WorldCover raster and a picture of it.
  parcels.py  the parcels (recursive splits) and the RPG GeoPackage.
  sensor.py   reflectance, clouds, shadows, haze and SCL of one acquisition.
  stac.py     the scene files: COG bands and STAC items.
  seasons.py  the years: weather, clouds, crop rotations, RPG editions.

`make_demo` is the one entry point (the TFDS builder's demo config calls it);
`write_raw` writes the raw inputs only. Beside the region, for the tests and the
benchmarks (which import no test module), and imported by no stage:

  zonefolders.py   small synthetic zone folders (`write_zone`, `write_zones`).
  stac_server.py   a STAC API + COG server on 127.0.0.1 serving `raw/scenes/`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from cropcontracts import atomic
from prep.demo import landcover
from prep.demo import seasons
from prep.demo.parcels import make_parcels, write_rpg
from prep.demo.region import FULL, SMALL, demo_zones, zone_window
from prep.demo.sensor import december_front, make_ground
from prep.demo.stac import write_scene
from cropcontracts.errors import UserError
from prep.zones import write_zones

__all__ = ["make_demo", "write_raw"]


def write_raw(raw_dir, *, seed: int = 0, small: bool = False,
              progress: bool = True, year: int | None = None) -> dict:
  """Writes the demo's raw inputs (zones.csv, rpg_demo.gpkg, scenes/) once.

  year: None, the base year (2023); another year has its own season, crops
  and RPG edition (`prep.demo.seasons`), on the same parcels.
  Idempotent: `raw/demo.json` records the seed, size and year first
  (`complete` false) and is completed last; a rerun keeps what exists and
  refuses a folder begun with another seed, size or year. Returns the
  content of demo.json.
  """
  from tqdm import tqdm
  raw = pathlib.Path(raw_dir)
  spec = SMALL if small else FULL
  year = spec.year if year is None else int(year)
  spec = dataclasses.replace(spec, year=year)
  stamp = {"seed": seed, "small": small, "spec": dataclasses.asdict(spec),
           "complete": False}
  done = raw / "demo.json"
  if done.is_file():
    old = json.loads(done.read_text(encoding="utf-8"))
    old_year = old.get("spec", {}).get("year", seasons.BASE_YEAR)
    if ({k: old.get(k) for k in ("seed", "small")} != {"seed": seed, "small": small}
        or old_year != year):
      of_year = (f" year={old_year}", f" year={year}") if old_year != year else ("", "")
      raise UserError(f"{raw}: holds a demo made with seed={old.get('seed')} "
                      f"small={old.get('small')}{of_year[0]}, not seed={seed} "
                      f"small={small}{of_year[1]}; choose another output folder or delete it")
    if old.get("complete"):
      return old
  elif raw.exists() and any(raw.iterdir()):
    raise UserError(f"{raw}: exists and is not a demo folder; choose another output folder")
  else:
    atomic.write_json(done, stamp)
  zones = demo_zones(spec)
  parcels = seasons.parcels_of_year(make_parcels(spec, seed), year, seed)
  ground = make_ground(spec, parcels, seed)
  frac = [float((ground.kind[zone_window(spec, z)] == landcover.FIELD).mean()) for z in zones]
  write_zones([dataclasses.replace(z, cropland_fraction=round(f, 3))
               for z, f in zip(zones, frac)], raw / "zones.csv")
  if not (raw / "rpg_demo.gpkg").is_file():
    write_rpg(parcels, raw / "rpg_demo.gpkg", seed)
  if not (raw / "landcover_demo.tif").is_file():
    landcover.write_worldcover(raw / "landcover_demo.tif", spec, ground.kind, ground.pid,
                               parcels.code)
  streams, cloudiness = seasons.stream_seed(seed, year), seasons.season(year, seed).cloudiness
  front = december_front(spec, streams)
  dates = spec.scene_dates
  bar = tqdm(dates, desc=f"demo scenes {year}", unit="scene", disable=not progress)
  ids = [write_scene(raw / "scenes", ground, spec, i, d, streams, front, cloudiness)
         for i, d in enumerate(bar)]
  stamp.update(complete=True, n_parcels=int(parcels.declared.sum()),
               n_undeclared=int((~parcels.declared).sum()), n_acquisitions=len(ids),
               n_products=sum(map(len, ids)),
               n_safe_products=sum(n.endswith(".SAFE") for p in ids for n in p),
               scene_shape=list(spec.scene_shape),
               invalid_parcel=int(parcels.declared[:parcels.invalid].sum()))  # its RPG row
  atomic.write_json(done, stamp)
  return stamp


def make_demo(out_dir, *, seed: int = 0, progress: bool = True,
              small: bool = False, years=None) -> pathlib.Path:
  """Writes the demo region and its zone folders; returns `out_dir/zones`.

  years: None (the default), the single-year demo of 2023 as below; a list of
  years, one demo per year on the same parcels (`prep.demo.seasons`: its
  weather, clouds, rotated crops and RPG edition), raw inputs in
  `out_dir/raw/<year>/` and zone folders in `out_dir/zones/<year>/<zone_id>/`,
  the years written side by side in processes of their own (one per core).

  Raw inputs go to `out_dir/raw` (`write_raw`); then, per zone, the scenes route
  (`prep.scenes.composite_zone_from_scenes`) and the labels route
  (`prep.labels.make_zone_labels`, with the demo's land cover: undeclared
  fields stay unlabelled, as `prep labels --landcover` does) write
  `out_dir/zones/<zone_id>/`. A rerun
  skips whatever is complete. `small=True` makes a tiny variant for tests
  (2 x 2 zones of 48 x 48 pixels, 25 scenes).
  """
  out = pathlib.Path(out_dir)
  if years is not None:
    years = sorted(set(map(int, years)))
    jobs = [dict(raw=out / "raw" / str(y), root=out / "zones" / str(y), seed=seed,
                 progress=progress, small=small, year=y) for y in years]
    workers = min(len(jobs), len(os.sched_getaffinity(0)))
    if workers < 2:
      for job in jobs:
        make_demo_year(**job)
    else:       # the years are independent: one process each, as many as there are cores
      import concurrent.futures   # pylint: disable=g-import-not-at-top
      import multiprocessing      # pylint: disable=g-import-not-at-top
      with concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for done in [pool.submit(make_demo_year, **job) for job in jobs]:
          done.result()           # the first failure is raised, as in a loop
    return out / "zones"
  return make_demo_year(out / "raw", out / "zones", seed=seed, progress=progress,
                        small=small)


def make_demo_year(raw, root, *, seed: int, progress: bool, small: bool,
                   year: int | None = None) -> pathlib.Path:
  """One year of the demo: raw inputs in `raw`, zone folders in `root`; returns root."""
  from tqdm import tqdm
  from cropcontracts.zonefolder import check_folder
  from prep.labels import make_zone_labels
  from prep.scenes import composite_zone_from_scenes
  from prep.zones import read_zones
  raw, root = pathlib.Path(raw), pathlib.Path(root)
  stamp = write_raw(raw, seed=seed, small=small, progress=progress, year=year)
  given, year = year, stamp["spec"]["year"]
  for zone in tqdm(read_zones(raw / "zones.csv"), desc=f"demo zones {year}", unit="zone",
                   disable=not progress):
    folder = root / zone.zone_id
    meta = check_folder(folder, zone, year)
    if "imagery" not in meta:
      composite_zone_from_scenes(raw / "scenes", zone, folder, year=year, progress=False)
    if "labels" not in meta:
      make_zone_labels(raw / "rpg_demo.gpkg", zone, folder, progress=False, year=given,
                       landcover=raw / "landcover_demo.tif")   # undeclared fields: unlabelled
  return root

