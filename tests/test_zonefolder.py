"""The zone-folder contract: what prep writes is what later stages read."""
import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from cropcontracts import zonefolder as ZF
from prep import zones as Z
from cropcontracts.errors import UserError
from prep.demo.zonefolders import pixel_box


def _zone(zone_id="t_0", lon=1.489, px=20):
  return Z.zone_around(zone_id, "R", "T", 0, lon, 48.44, pixels=px)


def _write(folder, zone, T=3, seed=0):
  rng = np.random.default_rng(seed)
  comp = rng.integers(1, 5000, size=(T, 4, *zone.shape), dtype=np.uint16)
  counts = rng.integers(0, 300, size=(T, *zone.shape))
  months = [f"2023-{m:02d}" for m in range(1, T + 1)]
  ZF.write_imagery(folder, zone, comp, counts, months, {"source": "test"})
  parcels = np.zeros(zone.shape, np.uint32)
  parcels[2:6, 3:9] = 1
  parcels[10:15, 10:15] = 2
  class_of = np.array([255, 0, 5], np.uint8)
  table = pd.DataFrame({"parcel_index": [1, 2], "ID_PARCEL": ["0012", "77"],
                        "CODE_CULTU": ["BTH", "MIS"], "class_id": [0, 5]})
  ZF.write_labels(folder, zone, class_of[parcels], parcels, table,
                  {"nomenclature": "v1"}, geometries=[pixel_box(zone, 2, 6, 3, 9),
                                                      pixel_box(zone, 10, 15, 10, 15)])
  return comp, counts, months, parcels, class_of


def test_round_trip_arrays_grid_and_band_order(tmp_path):
  zone = _zone()
  comp, counts, months, parcels, class_of = _write(tmp_path / "z", zone)
  zf = ZF.open_zone(tmp_path / "z", require_labels=True)
  img = zf.read_image()
  assert img.shape == (3, 20, 20, 4) and img.dtype == np.uint16
  np.testing.assert_array_equal(img, comp.transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(zf.read_valid_count(), np.clip(counts, 0, 255))
  np.testing.assert_array_equal(zf.read_labels(), class_of[parcels])
  np.testing.assert_array_equal(zf.read_parcels(), parcels)
  assert zf.read_parcels().dtype == np.uint32          # contract 1: parcels.tif is uint32
  with rasterio.open(tmp_path / "z" / "parcels.tif") as src:
    assert src.dtypes[0] == "uint32"
  assert list(zf.parcel_table().ID_PARCEL) == ["0012", "77"]  # ids stay text
  with rasterio.open(tmp_path / "z" / "s2.tif") as src:
    assert src.crs.to_epsg() == zone.epsg
    assert src.transform == zone.transform
    assert src.count == 12 and src.dtypes[0] == "uint16" and src.nodata == 0
    assert src.descriptions[:5] == ("2023-01 B2", "2023-01 B3", "2023-01 B4",
                                    "2023-01 B8", "2023-02 B2")
    # band 6 is month 2, B3: time-major order.
    np.testing.assert_array_equal(src.read(6), comp[1, 1])
  win = rasterio.windows.Window(3, 2, 4, 5)  # col_off, row_off, width, height
  np.testing.assert_array_equal(zf.read_image(win), img[:, 2:7, 3:7])


def test_refuses_folder_of_another_zone(tmp_path):
  _write(tmp_path / "z", _zone("a_0"))
  with pytest.raises(UserError, match="already holds zone 'a_0'"):
    _write(tmp_path / "z", _zone("b_0", lon=1.6))


def test_missing_file_and_wrong_grid_are_named(tmp_path):
  zone = _zone()
  _write(tmp_path / "z", zone)
  (tmp_path / "z" / "parcels.csv").unlink()
  with pytest.raises(UserError, match=r"zone t_0: .*parcels.csv is missing"):
    ZF.open_zone(tmp_path / "z")
  _write(tmp_path / "y", zone)
  other = _zone(px=24)
  labels = np.zeros(other.shape, np.uint8)[None]
  with rasterio.open(tmp_path / "y" / "labels.tif", "w", driver="GTiff", count=1,
                     dtype="uint8", width=24, height=24, crs=other.crs,
                     transform=other.transform) as dst:
    dst.write(labels)
  with pytest.raises(UserError, match=r"labels.tif is on grid .* not the zone grid"):
    ZF.open_zone(tmp_path / "y")


def test_incomplete_stage_is_not_taken_for_complete(tmp_path):
  zone = _zone()
  _write(tmp_path / "z", zone)
  meta = json.loads((tmp_path / "z" / "meta.json").read_text())
  del meta["imagery"]
  (tmp_path / "z" / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(UserError, match="imagery incomplete"):
    ZF.open_zone(tmp_path / "z")
  assert not list((tmp_path / "z").glob("*.partial"))
  with pytest.raises(UserError, match="holds no zone folder"):
    ZF.find_zones(tmp_path / "z")


def test_truncated_raster_is_reported(tmp_path):
  zone = _zone(px=300)
  _write(tmp_path / "z", zone, T=1)
  p = tmp_path / "z" / "s2.tif"
  data = p.read_bytes()
  p.write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match="s2.tif"):
    zf = ZF.open_zone(tmp_path / "z")
    zf.read_image()


def test_interrupted_rerun_leaves_the_stage_incomplete(tmp_path, monkeypatch):
  """A rerun that dies after labels.tif must not leave the old `labels` section
  vouching for new labels.tif next to old parcels.tif / parcels.csv."""
  zone = _zone()
  _write(tmp_path / "z", zone)
  real = ZF._write_tif

  def dies_on_parcels(path, *args, **kwargs):
    if path.name == "parcels.tif":
      raise KeyboardInterrupt
    return real(path, *args, **kwargs)

  monkeypatch.setattr(ZF, "_write_tif", dies_on_parcels)
  with pytest.raises(KeyboardInterrupt):
    _write(tmp_path / "z", zone, seed=1)
  monkeypatch.setattr(ZF, "_write_tif", real)
  meta = json.loads((tmp_path / "z" / "meta.json").read_text())
  assert "imagery" in meta and "labels" not in meta
  ZF.open_zone(tmp_path / "z")                          # imagery is still whole
  with pytest.raises(UserError, match="labels"):
    ZF.open_zone(tmp_path / "z", require_labels=True)
  assert not list((tmp_path / "z").glob(".*partial"))


def test_files_are_tiled_compressed_and_not_private(tmp_path):
  import os
  zone = _zone(px=300)
  old = os.umask(0o022)
  try:
    _write(tmp_path / "z", zone, T=1)
  finally:
    os.umask(old)
  for name in ("s2.tif", "valid_count.tif", "labels.tif", "parcels.tif"):
    with rasterio.open(tmp_path / "z" / name) as src:
      assert src.profile["tiled"] and src.block_shapes[0] == (256, 256), name
      assert src.compression == rasterio.enums.Compression.deflate, name
  for p in (tmp_path / "z").iterdir():
    assert p.stat().st_mode & 0o777 == 0o644, p.name   # mkstemp alone gives 0600


def test_parcel_geometries_round_trip_in_the_zone_crs(tmp_path):
  zone = _zone()
  _write(tmp_path / "z", zone)
  zf = ZF.open_zone(tmp_path / "z", require_labels=True)
  assert zf.format == ZF.FORMAT == "jaxcrop-zone/3" and zf.has_parcel_geometries
  gdf = zf.read_parcel_geometries()
  assert list(gdf.columns) == [*ZF.PARCEL_FIELDS, "geometry"]
  assert gdf.crs.to_epsg() == zone.epsg
  assert gdf.parcel_index.tolist() == [1, 2] and gdf.ID_PARCEL.tolist() == ["0012", "77"]
  assert gdf.CODE_CULTU.tolist() == ["BTH", "MIS"]
  import shapely
  written = [pixel_box(zone, 2, 6, 3, 9), pixel_box(zone, 10, 15, 10, 15)]
  assert shapely.equals_exact(gdf.geometry.values,             # stored as MultiPolygons
                              [shapely.MultiPolygon([g]) for g in written]).all()
  assert (gdf.geometry.area == [24 * 100.0, 25 * 100.0]).all()   # 4 x 6 and 5 x 5 pixels


def _as_format_1(folder):
  """The folder as jaxcrop-zone/1 wrote it: no parcels.gpkg, format /1."""
  meta = json.loads((folder / "meta.json").read_text())
  (folder / "meta.json").write_text(json.dumps({**meta, "format": "jaxcrop-zone/1"}))
  (folder / "parcels.gpkg").unlink()


def test_format_1_folders_are_read_without_parcel_geometries(tmp_path):
  zone = _zone()
  _write(tmp_path / "z", zone)
  (tmp_path / "z" / "parcels.gpkg").unlink()
  with pytest.raises(UserError, match=r"zone t_0: .*parcels.gpkg is missing"):
    ZF.open_zone(tmp_path / "z")
  _write(tmp_path / "z", zone)
  _as_format_1(tmp_path / "z")
  zf = ZF.open_zone(tmp_path / "z", require_labels=True)
  assert zf.format == "jaxcrop-zone/1" and zf.has_labels and not zf.has_parcel_geometries
  np.testing.assert_array_equal(zf.read_parcels()[2:6, 3:9], 1)
  with pytest.raises(UserError, match=r"zone t_0: .* is a jaxcrop-zone/1 folder without "
                     r"parcels.gpkg; rerun `python -m prep labels` for this zone"):
    zf.read_parcel_geometries()
  _write(tmp_path / "z", zone)                    # labels rewritten: now format 2
  assert ZF.open_zone(tmp_path / "z").has_parcel_geometries


def test_unknown_format_is_refused(tmp_path):
  _write(tmp_path / "z", _zone())
  meta = json.loads((tmp_path / "z" / "meta.json").read_text())
  (tmp_path / "z" / "meta.json").write_text(json.dumps({**meta, "format": "jaxcrop-zone/9"}))
  with pytest.raises(UserError, match=r"zone t_0: .*meta.json has format 'jaxcrop-zone/9'; "
                     r"this code reads jaxcrop-zone/1, jaxcrop-zone/2, jaxcrop-zone/3"):
    ZF.open_zone(tmp_path / "z")


def test_synthetic_zones_have_background_by_prep_labels_rule(tmp_path):
  """`write_zone`: background (v3) on the strip's clean column, 255 on the sliver's
  (column 50 holds 2 m of a parcel: a mixed cell, never background); a v2 zone
  has none."""
  from cropcontracts import nomenclature
  from prep.demo import zonefolders as zf
  nom = nomenclature.load()
  z = zf.write_zone(tmp_path / "testz_0")
  lab, par = z.read_labels(), z.read_parcels()
  assert (zf.H, zf.W, zf.STRIP) == (40, 52, 2) and (par[:, 50:] == 0).all()
  assert (lab[:, 51] == nom.background_id).all() and (lab[:, 50] == 255).all()
  assert set(np.unique(lab[:, :50])) <= set(nom.crop_ids)
  labels = z.meta["labels"]
  assert labels["background_pixels"] == labels["class_pixel_counts"]["non_agricultural"] == 40
  assert (labels["margin"], labels["landcover"]) == (0, {"source": "none"})
  wide = zf.write_zone(tmp_path / "w_0", zf.synthetic_zone("w_0", width=36), margin=1)
  assert (wide.read_labels()[:, 34:] == [255, nom.background_id]).all()
  old = zf.write_zone(tmp_path / "old_0", zf.synthetic_zone("old_0"), version="v2")
  assert (old.read_labels()[:, 50:] == 255).all() and old.meta["labels"]["background_pixels"] == 0
