"""A point table sampled from the demo region (`python -m prep demo --points N`).

N labelled points in the long shape of docs/points.md: one random pixel of each
of N distinct declared parcels (drawn among those whose RPG code has a class:
no parcel gives two points, so no fold shares a field with another), with the
value of every acquisition of the year at that pixel, as the demo's scenes
hold it (the same seeded draws as `stac.write_scene`, before the products'
BOA offset), 0 where the acquisition's SCL is not 4-7 (clouds, shadows, no
data); labels as `code_cultu` and `rpg_edition`. Synthetic: not a result.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from cropcontracts import atomic
from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import VALID_SCL
from prep.demo import landcover
from prep.demo.parcels import make_parcels
from prep.demo.region import EPSG, FULL, SMALL, scene_transform
from prep.demo.sensor import december_front, make_ground, observe
from prep.points import BAND_COLUMNS

FILE = "points.csv"


def sample_pixels(ground, parcels, n: int, seed: int, edition: int):
  """(rows [n], cols [n]): one random pixel in each of n random declared parcels
  whose code has a class in `edition`."""
  nom = nomenclature_lib.load()
  classed = np.array([r is not None and r.tier3 != nomenclature_lib.IGNORE_NAME
                      for r in (nom.row(c, edition) for c in parcels.code)])
  pid = ground.pid.ravel()
  field = np.flatnonzero((ground.kind.ravel() == landcover.FIELD)
                         & np.concatenate([[False], classed])[pid])
  rng = np.random.default_rng([seed, 23])
  field = rng.permutation(field)
  _, first = np.unique(pid[field], return_index=True)     # one pixel per parcel
  if n > len(first):
    raise UserError(f"--points {n}: the demo region has {len(first)} labelled parcels; "
                    f"ask for at most {len(first)} points (one per parcel)")
  chosen = field[rng.choice(first, n, replace=False)]
  return np.divmod(chosen, ground.pid.shape[1])


def point_table(n: int, *, seed: int = 0, small: bool = False) -> str:
  """The CSV text of N demo points (module doc), rows by date then point."""
  import pyproj  # pylint: disable=g-import-not-at-top
  spec = SMALL if small else FULL
  parcels = make_parcels(spec, seed)
  ground = make_ground(spec, parcels, seed)
  rows, cols = sample_pixels(ground, parcels, n, seed, spec.year)
  x, y = scene_transform(spec) @ (cols + 0.5, rows + 0.5)
  lon, lat = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True).transform(x, y)
  codes = parcels.code[ground.pid[rows, cols] - 1]
  front = december_front(spec, seed)
  text = io.StringIO()
  w = csv.writer(text, lineterminator="\n")
  w.writerow(["point_id", "lon", "lat", "date", *BAND_COLUMNS, "code_cultu", "rpg_edition"])
  valid_scl = np.array(sorted(VALID_SCL))
  for i, date in enumerate(spec.scene_dates):
    dn, scl, _ = observe(ground, date, np.random.default_rng([seed, 100 + i]), front)
    values = dn[:, rows, cols].T                                   # [n, 4]
    values[~np.isin(scl[rows // 2, cols // 2], valid_scl)] = 0     # a cloud: nodata
    for k in range(n):
      w.writerow([f"demo_{k:05d}", f"{lon[k]:.7f}", f"{lat[k]:.7f}", date.isoformat(),
                  *values[k].tolist(), codes[k], spec.year])
  return text.getvalue()


def write_point_table(path, n: int, *, seed: int = 0, small: bool = False) -> None:
  """Writes `point_table` to `path` whole."""
  atomic.write_text(path, point_table(n, seed=seed, small=small))
