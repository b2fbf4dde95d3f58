"""Benchmark of the STAC route: `python -m benchmarks.stac [--small] [--demo DIR]`.

stac_zone_year: one zone-year of the demo region through `prep stac` from a
  STAC API + COG server on 127.0.0.1 (prep/demo/stac_server.py: real pystac-client
  paging, real GDAL HTTP range reads) vs the local route on the same files;
  `identical` = both zone folders' s2.tif and valid_count.tif are the same
  bytes; `bytes_ratio` = bytes the server sent / size of the zone's items'
  files (B02 B03 B04 B08 SCL), the evidence that only the zone's window is
  read. The full demo (256-px zones in 1636 x 552 px scenes of 256-px tiles) is
  written first unless `--stac-demo DIR` holds one (`--stac-small`: the small
  demo, whose 20 kB files are read almost whole: GDAL's first request of a file
  is 16 kB). Loopback: no network latency, so the time ratio is the cost of
  HTTP + GDAL's /vsicurl/ over local files, not a forecast for a real archive.
"""
from __future__ import annotations

import json
import warnings

from benchmarks import best_of, load
from cropcontracts import cli


def bench_stac(demo_dir=None, *, small: bool = False, workers: int = 4) -> dict:
  """One zone-year, STAC route on the loopback server vs the local route."""
  start = load()
  import pathlib
  import tempfile
  from prep import demo, scenes, stac
  from prep.demo.stac_server import StacServer
  from prep.zones import read_zones
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    raw = pathlib.Path(demo_dir) / "raw" if demo_dir else tmp / "demo" / "raw"
    demo.write_raw(raw, small=small, progress=False)
    zone = read_zones(raw / "zones.csv")[0]
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)        # months gap filled
      local_s, _ = best_of(lambda: scenes.composite_zone_from_scenes(
          raw / "scenes", zone, tmp / "local" / zone.zone_id, progress=False), 1)
      with StacServer(raw / "scenes", page_size=20) as server:
        cat = stac.catalog(server.url)
        stac_s, info = best_of(lambda: stac.composite_zone_from_stac(
            zone, tmp / "stac" / zone.zone_id, cat=cat, workers=workers,
            progress=False), 1)
        sent = sum(server.bytes_sent.values())
        pages = server.requests["/search"]
    files = [*(raw / "scenes").glob("*/*.tif"),                     # COG items
             *(raw / "scenes").glob("*.SAFE/GRANULE/*/IMG_DATA/R*m/*.jp2")]   # SAFE
    size = sum(p.stat().st_size for p in files)
    same = all((tmp / "local" / zone.zone_id / f).read_bytes()
               == (tmp / "stac" / zone.zone_id / f).read_bytes()
               for f in ("s2.tif", "valid_count.tif"))
  rec = dict(name="stac_zone_year", ours_s=round(stac_s, 3),
             reference="local route on the same COG and SAFE files", reference_s=round(local_s, 3),
             ratio=round(local_s / stac_s, 2), identical=bool(same),
             zone=f"{zone.zone_id} {zone.width}x{zone.height}", items=info["scenes_used"],
             search_pages=pages, workers=workers, bytes_requested=sent,
             bytes_of_files=size, bytes_ratio=round(sent / size, 3),
             demo="small" if small else "full", **start)
  print(json.dumps(rec), flush=True)
  return rec


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m benchmarks.stac", description=__doc__)
  ap.add_argument("--small", action="store_true", help="the small demo (fast, files read whole)")
  ap.add_argument("--demo", default=None, metavar="DIR",
                  help="a demo folder (python -m prep demo --out DIR) to reuse")
  return cli.main(ap, lambda args: 0 if bench_stac(args.demo, small=args.small)["identical"]
                  else 1, argv)


if __name__ == "__main__":
  raise SystemExit(main())
