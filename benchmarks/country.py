"""A country dry run: what mapping every zone would cost, projected from measured zones.

  python -m benchmarks --dry-run [--zones-csv zones_fr.csv] [--workers 1 8 64]
  python -m benchmarks.country --dry-run ...

Nothing is sent to Earth Engine and no country is read. The per-zone figures are
measured here on the small synthetic demo (48 x 48 px zones, 12 months): the
scenes route's composite time and bytes read, the zone folder's bytes, the
prediction time of the tiny config and the bytes of the maps; each is scaled by
the pixel count to the country's zones (1000 x 1000 px unless the zones table
says otherwise). Earth Engine's time per request cannot be measured offline: it
is the stated assumption `gee_s_per_request` (interactive computePixels of one
1000² zone-month, typically tens of seconds: pass yours with
--gee-s-per-request). Output: one JSON line `country_projection`, labelled a
projection; synthetic inputs: a cost estimate, not a measured run.
"""
from __future__ import annotations

import json
import math
import pathlib
import tempfile
import time

from benchmarks import load
from cropcontracts import cli

FRANCE_KM2 = 550_000
EE_CONCURRENT = 40              # interactive requests an Earth Engine account may have
MONTHS = 12


def _folder_bytes(p: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def measure_demo() -> dict:
  """Per-pixel figures of one small demo zone: seconds and bytes of each route."""
  from prep import demo as demo_lib
  from prep import scenes as scenes_lib
  from prep.zones import read_zones
  with tempfile.TemporaryDirectory() as d:
    d = pathlib.Path(d)
    demo_lib.make_demo(d, small=True, progress=False)
    zone = read_zones(d / "raw" / "zones.csv")[0]
    scene_dir = d / "raw" / "scenes"
    found = [s for s in scenes_lib.discover_scenes(scene_dir) if scenes_lib.covers(s, zone)]
    t0 = time.perf_counter()
    scenes_lib.composite_zone_from_scenes(scene_dir, zone, d / "again" / zone.zone_id,
                                          progress=False)
    composite_s = time.perf_counter() - t0
    zone_bytes = _folder_bytes(d / "again" / zone.zone_id)
    px = zone.width * zone.height
    # bytes the scenes route reads: each scene's 4 bands at 10 m + SCL at 20 m, uint16,
    # over the zone (windowed reads of COGs)
    scene_read = len(found) * px * (4 * 2 + 2 / 4)
    finish_s = _measure_finish(d / "again" / zone.zone_id, zone, d / "finish")
    predict_s, map_bytes = _measure_predict(d / "zones" / zone.zone_id, d / "maps")
  return dict(pixels=px, composite_s_per_px=composite_s / px, finish_s_per_px=finish_s / px,
              zone_bytes_per_px=zone_bytes / px, scene_bytes_per_px=scene_read / px,
              scenes_per_zone=len(found), predict_s_per_px=predict_s / px,
              map_bytes_per_px=map_bytes / px, measured_on="small demo zone "
              f"{zone.zone_id} ({zone.width}x{zone.height} px), tiny config, "
              f"{_device()}")


def _measure_finish(zone_path: pathlib.Path, zone, out: pathlib.Path) -> float:
  """Seconds of what the Earth Engine route does locally per zone: gap fill and write."""
  from cropcontracts import zonefolder
  from prep import composite as composite_lib
  z = zonefolder.open_zone(zone_path)
  comp = z.read_image().transpose(0, 3, 1, 2)             # [T, C, H, W]
  counts = z.read_valid_count()
  t0 = time.perf_counter()
  filled, _ = composite_lib.gap_fill(comp)
  zonefolder.write_imagery(out / zone.zone_id, zone, filled, counts, z.months,
                           {"source": "dry-run"})
  return time.perf_counter() - t0


def _device() -> str:
  import jax
  d = jax.devices()[0]
  return f"{d.platform} x{jax.local_device_count()}"


def _measure_predict(zone_path: pathlib.Path, out: pathlib.Path) -> tuple[float, int]:
  """Seconds (warm) and output bytes of one zone's maps with the tiny config."""
  import jax
  import numpy as np
  from configs.hybrid import get_config
  from cropcontracts import nomenclature
  from cropcontracts.dataset_meta import DatasetMeta
  from cropcontracts.zonefolder import open_zone
  from jaxcrop.maps import geotiff, tiling
  from jaxcrop.models import build_model
  zone = open_zone(zone_path)
  nom = nomenclature.load()
  K, T, C = nom.num_classes, len(zone.months), len(zone.bands)
  meta = DatasetMeta(
      num_classes=K, class_names=list(nom.tier3), tier2_names=list(nom.tier2_names),
      tier1_names=list(nom.tier1_names), tier2_of=nom.tier2_of(), tier1_of=nom.tier1_of(),
      colors=list(nom.colors), months=zone.months, bands=zone.bands,
      mean=np.full((T, C), 1500, np.float32), std=np.full((T, C), 800, np.float32),
      class_pixel_counts=np.ones(K, np.int64), nomenclature_version=nom.version,
      version="0.0.0")
  cfg = get_config("tiny")
  model = build_model(cfg.model, num_classes=K)
  tile = 32
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, T, tile, tile, C), np.float32),
                         train=False)
  apply_fn = lambda v, x: model.apply(v, x, train=False)
  mapper = tiling.ZoneMapper(apply_fn, variables, meta, tiling.MapSettings(tile=tile, overlap=8))
  run = lambda: mapper(tiling.read_imagery(zone, mapper.settings))
  run()                                                   # compile
  t0 = time.perf_counter()
  pred = run()
  seconds = time.perf_counter() - t0
  folder = geotiff.write_outputs(zone, pred, nom, out)
  return seconds, _folder_bytes(folder)


def project(measured: dict, *, zones: int, zone_pixels: int, workers, gee_s_per_request: float,
            gee_workers: int = 8, requests_per_zone_month: int = 1) -> dict:
  """The country's cost per route for each worker count, from per-pixel figures."""
  px = zones * zone_pixels
  requests = zones * MONTHS * requests_per_zone_month
  gee_bytes = px * MONTHS * 9                              # 4 uint16 bands + uint8 count
  zone_bytes = px * measured["zone_bytes_per_px"]
  routes = {}
  for n in workers:
    in_flight = min(n * gee_workers, EE_CONCURRENT)
    routes[str(n)] = dict(
        gee_s=round(requests * gee_s_per_request / in_flight
                    + px * measured["finish_s_per_px"] / n),     # gap fill + write, local
        gee_requests_in_flight=in_flight,
        scenes_s=round(px * measured["composite_s_per_px"] / n),
        predict_s=round(px * measured["predict_s_per_px"] / n))
  return dict(
      name="country_projection", projection=True, zones=zones, zone_pixels=zone_pixels,
      km2=round(px * 100 / 1e6), months=MONTHS,
      requests=dict(gee_compute_pixels=requests,
                    gee_concurrent_limit=EE_CONCURRENT,
                    gee_s_per_request_assumed=gee_s_per_request),
      bytes=dict(gee_fetched=int(gee_bytes),
                 scenes_read=int(px * measured["scene_bytes_per_px"]),
                 zone_folders_written=int(zone_bytes),
                 predict_read=int(zone_bytes),
                 maps_written=int(px * measured["map_bytes_per_px"])),
      wall_s_by_workers=routes,
      measured_per_zone=dict(
          composite_s=round(measured["composite_s_per_px"] * zone_pixels, 2),
          gee_local_s=round(measured["finish_s_per_px"] * zone_pixels, 2),
          predict_s=round(measured["predict_s_per_px"] * zone_pixels, 2),
          zone_folder_bytes=int(measured["zone_bytes_per_px"] * zone_pixels),
          scenes_per_zone=measured["scenes_per_zone"]),
      measured_on=measured["measured_on"],
      note="a projection from one small synthetic zone scaled by pixels (its fixed "
           "per-file and per-scene costs scale too: an upper bound), with an assumed "
           "Earth Engine time per request; not a measured country run")


def zones_of(zones_csv) -> tuple[int, int]:
  """(number of zones, pixels per zone) of a zones table, or France's 10 km squares."""
  if zones_csv is None:
    return math.ceil(FRANCE_KM2 / 100), 1000 * 1000
  from prep.zones import read_zones
  zones = read_zones(zones_csv)
  return len(zones), round(sum(z.width * z.height for z in zones) / max(len(zones), 1))


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m benchmarks.country", description=__doc__)
  ap.add_argument("--dry-run", action="store_true", required=True,
                  help="project the country's cost (the only mode: nothing is sent)")
  ap.add_argument("--zones-csv", default=None,
                  help="zones table (`prep zones --country`); default: 5,500 squares of 10 km")
  ap.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64])
  ap.add_argument("--gee-workers", type=int, default=8,
                  help="requests in flight per worker (capped at 40 per account)")
  ap.add_argument("--gee-s-per-request", type=float, default=20.0,
                  help="assumed seconds of one computePixels zone-month (default: %(default)s)")
  return cli.main(ap, _run, argv)


def _run(args) -> int:
  zones, zone_pixels = zones_of(args.zones_csv)
  start = load()
  line = project(measure_demo(), zones=zones, zone_pixels=zone_pixels, workers=args.workers,
                 gee_s_per_request=args.gee_s_per_request, gee_workers=args.gee_workers)
  print(json.dumps({**line, **start}), flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
