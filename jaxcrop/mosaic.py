"""The national product from the zone maps: the command line.

  python -m jaxcrop.mosaic --maps MAPS --out NATIONAL
  python -m jaxcrop.mosaic --maps MAPS --out NATIONAL --departements DEPARTEMENT.shp --gpkg

Writes NATIONAL/utm<NN>/{classes,confidence,validity}.vrt (one VRT per UTM zone over
the zone COGs), NATIONAL/collection.json (STAC Collection of the zone Items),
NATIONAL/france_{classes,confidence,validity}.tif (Lambert-93 COGs with
overviews), NATIONAL/areas.csv (hectares of each crop class per département,
the background excluded) and NATIONAL/parcels/departement=<code>/part-0.parquet
(GeoParquet of every parcel once; NATIONAL/parcels.gpkg with --gpkg). Zone overlaps: the zone
whose centre is nearest wins (`jaxcrop.maps.national`, docs/predict.md).
"""
from __future__ import annotations

import pathlib
import sys

from cropcontracts import cli, errors


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m jaxcrop.mosaic",
                               description=__doc__.split("\n\n")[0])
  ap.add_argument("--maps", required=True, help="folder of zone maps (jaxcrop.predict --out)")
  ap.add_argument("--out", required=True, help="folder of the national product")
  ap.add_argument("--departements", default=None,
                  help="polygon layer of the départements (e.g. IGN ADMIN EXPRESS "
                       "DEPARTEMENT.shp) to partition the parcels and the class areas "
                       "(areas.csv) by; else `unknown`")
  ap.add_argument("--departement-field", default="INSEE_DEP",
                  help="the département code field of --departements (default: %(default)s)")
  ap.add_argument("--gpkg", action="store_true", help="also write parcels.gpkg")
  ap.add_argument("--no-parcels", action="store_true", help="rasters only")
  ap.add_argument("--block", type=int, default=None,
                  help="side in pixels of the blocks the national COGs are assembled in "
                       "(memory: one block; default 4096)")
  ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
  return cli.main(ap, _run, argv)


def _run(args) -> int:
  from jaxcrop.maps import national
  if args.departements and not pathlib.Path(args.departements).exists():
    raise errors.UserError(f"{args.departements}: départements layer not found (--departements)")
  maps = national.zone_maps(args.maps)
  out = pathlib.Path(args.out)
  with national.claim(out):          # killed runs' temporaries go first
    _write(maps, out, args)
  return 0


def _write(maps, out: pathlib.Path, args) -> None:
  """The national product of `maps` into `out`: VRTs, COGs, the STAC Collection,
  then the parcels."""
  from jaxcrop.maps import national, stac
  products = national.products(maps)
  if "validity" not in products:
    print("notice: some zone maps have no validity.tif (mapped before it existed): the "
          "national product goes without it; rerun jaxcrop.predict --resume to add it",
          file=sys.stderr)
  for epsg, group in sorted(national.by_utm(maps).items()):
    for product in products:
      p = national.utm_vrt(group, product, out / f"utm{epsg % 100}" / f"{product}.vrt")
      print(f"wrote {p} ({len(group)} zones)")
  for product in products:
    p = national.national_cog(maps, product, out / f"france_{product}.tif",
                              block=args.block or national.BLOCK_PX, progress=not args.quiet)
    print(f"wrote {p}")
  rows = national.class_areas(out / "france_classes.tif", departements=args.departements,
                              field=args.departement_field,
                              block=args.block or national.BLOCK_PX)
  print(f"wrote {national.write_areas(rows, out / 'areas.csv')} (crop classes per "
        f"département, background excluded)")
  collection = stac.national_collection(maps, out, products)
  if collection is None:
    print(f"notice: no zone map holds {stac.ITEM} (mapped before STAC Items existed): no "
          f"STAC Collection; rerun jaxcrop.predict --overwrite on them", file=sys.stderr)
  else:
    print(f"wrote {collection} (STAC Collection of the zone Items)")
  if not args.no_parcels:
    gdf = national.national_parcels(maps, departements=args.departements,
                                    field=args.departement_field)
    paths = national.write_parcels(gdf, out, gpkg=args.gpkg)
    print(f"wrote {len(gdf)} parcels in {len(paths)} file(s) under {out}")


if __name__ == "__main__":
  sys.exit(main())
