"""Zone labels from tiny hand-made RPG files (EPSG:2154) on a 40 x 40 zone."""
import json

import geopandas
import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import Polygon, box

from prep import labels as labels_lib
from cropcontracts import nomenclature
from cropcontracts.errors import UserError
from prep.labels import make_zone_labels
from cropcontracts.nomenclature import UnknownCodeError
from cropcontracts.zonefolder import NO_LABEL
from prep.zones import zone_around

ZONE = zone_around("chartres_test", "Paris Basin", "Chartres", 0, 1.4890, 48.4439,
                   pixels=40)  # 400 m x 400 m in EPSG:32631
NOM = nomenclature.load()


def pix(x, y):
  """Zone pixel coordinates (column x, row y, fractional) -> UTM metres."""
  return (ZONE.x0 + x * ZONE.res, ZONE.y0 - y * ZONE.res)


def rect(c0, r0, c1, r1):
  """Axis-aligned rectangle between pixel coordinates (columns c, rows r)."""
  return Polygon([pix(c0, r0), pix(c1, r0), pix(c1, r1), pix(c0, r1)])


def parcel(pid, code, geom, **extra):
  return dict(ID_PARCEL=str(pid), CODE_CULTU=code, CODE_GROUP="1", SURF_PARC=1.0,
              geometry=geom, **extra)


def write_rpg(path, rows, *, layer="PARCELLES_GRAPHIQUES", crs="EPSG:2154",
              driver="GPKG", drop=()):
  """Writes parcels given in the zone's UTM coordinates to an RPG-like file in `crs`."""
  gdf = geopandas.GeoDataFrame(rows, geometry="geometry", crs=ZONE.crs).to_crs(crs)
  gdf = gdf.drop(columns=list(drop))
  gdf.to_file(path, layer=layer, driver=driver)
  return path


def run(tmp_path, rows, name="rpg.gpkg", out="zone", **kw):
  rpg = write_rpg(tmp_path / name, rows)
  summary = make_zone_labels(rpg, ZONE, tmp_path / out, progress=False, **kw)
  with rasterio.open(tmp_path / out / "labels.tif") as src:
    lab = src.read(1)
  with rasterio.open(tmp_path / out / "parcels.tif") as src:
    par = src.read(1)
  import pandas as pd
  table = pd.read_csv(tmp_path / out / "parcels.csv", dtype={"ID_PARCEL": str})
  return summary, lab, par, table


def test_square_parcel_pixel_count_outputs_and_meta(tmp_path):
  # Edges at 2.2 and 9.8 pixels: centres 2.5 … 9.5 inside -> 8 x 8 = 64 pixels.
  summary, lab, par, table = run(tmp_path, [parcel(7, "BTH", rect(2.2, 2.2, 9.8, 9.8))])
  expect = np.zeros(ZONE.shape, bool)
  expect[2:10, 2:10] = True
  np.testing.assert_array_equal(par == 1, expect)
  np.testing.assert_array_equal(lab, np.where(expect, NOM.class_id("winter_wheat"), NO_LABEL))
  row = table.iloc[0]
  assert (row.parcel_index, row.ID_PARCEL, row.CODE_CULTU, row.class_id, row.class_name,
          row.tier2, row.tier1, row.n_pixels) == (
              1, "7", "BTH", 0, "winter_wheat", "small_grain_cereal", "field_crops", 64)
  assert row.area_m2 == pytest.approx(76.0 * 76.0, abs=0.05)
  assert row.surf_parc_ha == 1.0
  assert list(table.columns) == list(labels_lib.TABLE_COLUMNS)
  assert summary["class_pixel_counts"]["winter_wheat"] == 64
  assert summary["class_pixel_counts"]["maize"] == 0
  assert summary["unlabelled_pixels"] == 1600 - 64
  assert (summary["parcels"], summary["parcels_ignored"], summary["invalid_repaired"],
          summary["invalid_dropped"], summary["duplicates_dropped"],
          summary["drop_border"], summary["nomenclature"], summary["rpg_file"],
          summary["layer"]) == (1, 0, 0, 0, 0, False, "v1", "rpg.gpkg",
                                "PARCELLES_GRAPHIQUES")
  meta = json.loads((tmp_path / "zone" / "meta.json").read_text(encoding="utf-8"))
  assert meta["labels"] == summary
  for name, dtype, nodata in [("labels.tif", "uint8", 255), ("parcels.tif", "uint32", 0)]:
    with rasterio.open(tmp_path / "zone" / name) as src:
      assert src.crs.to_epsg() == 32631 and src.shape == (40, 40)
      assert src.transform == ZONE.transform
      assert src.dtypes[0] == dtype and src.nodata == nodata


def test_labels_follow_parcels_ignore_codes_and_optional_fields(tmp_path):
  rows = [parcel(1, "MIS", rect(0, 0, 10, 10), CULTURE_D1="MOT", CULTURE_D2=None),
          parcel(2, "BOR", rect(10, 0, 12, 10), CULTURE_D1=None, CULTURE_D2=None),
          parcel(3, "PPH", rect(0, 20, 40, 40), CULTURE_D1=None, CULTURE_D2=None),
          parcel(4, None, rect(30, 0, 40, 5), CULTURE_D1=None, CULTURE_D2=None)]
  summary, lab, par, table = run(tmp_path, rows)
  class_of = np.concatenate([[NO_LABEL], table.class_id.to_numpy()]).astype(np.uint8)
  np.testing.assert_array_equal(lab, class_of[par])
  assert table.CODE_CULTU.tolist() == ["MIS", "BOR", "PPH", "NR"]  # null code -> NR
  assert table.class_name.tolist() == ["maize", "ignore", "permanent_grassland", "ignore"]
  assert table.n_pixels.tolist() == [100, 20, 800, 50]
  assert table.CULTURE_D1.fillna("").tolist() == ["MOT", "", "", ""]
  assert summary["parcels_ignored"] == 2
  assert summary["class_pixel_counts"]["maize"] == 100
  assert summary["unlabelled_pixels"] == 1600 - 900
  assert (lab[(par == 2) | (par == 4)] == NO_LABEL).all()


def test_without_optional_fields(tmp_path):
  rpg = write_rpg(tmp_path / "r.gpkg", [parcel(1, "SOJ", rect(0, 0, 4, 4))],
                  drop=("CODE_GROUP", "SURF_PARC"))
  make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False)
  text = (tmp_path / "z" / "parcels.csv").read_text(encoding="utf-8").splitlines()
  assert text[1] == "1,1,SOJ,,9,soybean,grain_legume,field_crops,,1600.0,16"


def test_reprojection_puts_a_parcel_on_its_pixel(tmp_path):
  # A 4 m square around the centre of pixel (row 7, column 31), written in Lambert-93.
  cx, cy = pix(31.5, 7.5)
  _, lab, par, _ = run(tmp_path, [parcel(1, "TRN", box(cx - 2, cy - 2, cx + 2, cy + 2))])
  assert list(zip(*np.nonzero(par))) == [(7, 31)]
  assert lab[7, 31] == NOM.class_id("sunflower")


def test_bbox_read_filters_far_and_outside_parcels(tmp_path, monkeypatch):
  import pyogrio
  seen = {}
  real = pyogrio.read_dataframe

  def spy(*args, **kw):
    seen.update(kw)
    return real(*args, **kw)

  monkeypatch.setattr(pyogrio, "read_dataframe", spy)
  far = box(*pix(5000, 0), *pix(5004, 4))          # 50 km east
  near = rect(41, 10, 45, 14)                       # 10 m beyond the east edge
  _, _, _, table = run(tmp_path, [parcel(1, "BTH", far), parcel(2, "ORH", near),
                                  parcel(3, "CZH", rect(1, 1, 3, 3))])
  assert table.ID_PARCEL.tolist() == ["3"]
  assert seen["bbox"] == pytest.approx(ZONE.bounds_in("EPSG:2154"))


def test_overlap_smaller_parcel_wins_whatever_the_file_order(tmp_path):
  small, big = rect(5, 5, 10, 10), rect(0, 0, 20, 20)
  for order in ([parcel(1, "LUZ", small), parcel(2, "PTR", big)],
                [parcel(2, "PTR", big), parcel(1, "LUZ", small)]):
    _, lab, par, table = run(tmp_path, order)
    assert table.set_index("ID_PARCEL").n_pixels.to_dict() == {"1": 25, "2": 400 - 25}
    assert (lab[5:10, 5:10] == NOM.class_id("fodder_legumes")).all()


def test_duplicate_ids_within_and_across_files(tmp_path):
  rows = [parcel(1, "BTH", rect(0, 0, 5, 5)), parcel(1, "BTH", rect(0, 0, 5, 5)),
          parcel(2, "ORH", rect(5, 5, 9, 9))]
  summary, _, _, table = run(tmp_path, rows)
  assert summary["duplicates_dropped"] == 1 and table.ID_PARCEL.tolist() == ["1", "2"]
  # Two regional files sharing parcel 2 on their border.
  a = write_rpg(tmp_path / "a.gpkg", rows[:1] + rows[2:])
  b = write_rpg(tmp_path / "b.gpkg", rows[2:] + [parcel(3, "TRN", rect(20, 20, 22, 22))])
  s = make_zone_labels([a, b], ZONE, tmp_path / "ab", progress=False)
  assert (s["parcels"], s["duplicates_dropped"], s["rpg_file"]) == (3, 1, "a.gpkg, b.gpkg")


def test_bowtie_repaired_and_empty_dropped(tmp_path):
  # Edges chosen to miss every pixel centre, so the count below is unambiguous.
  bowtie = Polygon([pix(0.2, 0), pix(10.2, 10), pix(10.2, 0), pix(0.2, 10)])
  flat = Polygon([pix(1, 1), pix(3, 3), pix(1, 1), pix(1, 1)])  # a line: dropped
  # Null and empty geometries have no extent: the bbox read never returns them.
  rows = [parcel(1, "BTH", bowtie), parcel(2, "MIS", flat), parcel(3, "MIS", Polygon()),
          parcel(4, "MIS", None), parcel(5, "TRN", rect(20, 20, 24, 24))]
  summary, lab, par, table = run(tmp_path, rows)
  assert (summary["invalid_repaired"], summary["invalid_dropped"]) == (1, 1)
  assert table.ID_PARCEL.tolist() == ["1", "5"]
  # The repaired bow-tie is two triangles meeting at pixel point (5.2, 5).
  centres = shapely.points(*np.meshgrid(ZONE.x0 + 5 + 10 * np.arange(40),
                                        ZONE.y0 - 5 - 10 * np.arange(40)))
  fixed = shapely.make_valid(bowtie)
  assert table.n_pixels.iloc[0] == shapely.contains(fixed, centres).sum() > 0
  assert table.area_m2.iloc[0] == pytest.approx(5000.0, abs=0.05)


def test_repair_keeps_polygonal_parts_of_collections():
  spike = Polygon([(0, 0), (2, 0), (2, 2), (0, 2), (0, 0), (-1, -1), (0, 0)])
  line_only = Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])
  fixed, keep, n = labels_lib.repair_geometries(np.array([spike, line_only, box(0, 0, 1, 1)]))
  assert keep.tolist() == [True, False, True] and n == 1
  assert shapely.area(fixed[0]) == 4.0 and fixed[1] is None
  assert shapely.get_type_id(fixed[0]) in (3, 6)


def test_drop_border_unaligned_square(tmp_path):
  # Edges at 2.2 / 9.8 pixels: cells 3..8 lie whole inside (6 x 6), the ring around
  # them is cut by the boundary.
  s, lab, par, table = run(tmp_path, [parcel(1, "BTH", rect(2.2, 2.2, 9.8, 9.8))],
                           drop_border=True)
  expect = np.zeros(ZONE.shape, bool)
  expect[3:9, 3:9] = True
  np.testing.assert_array_equal(par == 1, expect)
  np.testing.assert_array_equal(lab != NO_LABEL, expect)
  assert table.n_pixels.tolist() == [36]
  assert (s["drop_border"], s["border_pixels_dropped"]) == (True, 64 - 36)


def test_drop_border_keeps_cells_whose_edge_is_the_boundary(tmp_path):
  # Edges on pixel edges (after a round trip through Lambert-93): nothing is cut.
  _, _, par, _ = run(tmp_path, [parcel(1, "BTH", rect(2, 2, 10, 10)),
                                parcel(2, "ORH", rect(10, 2, 14, 10))], drop_border=True)
  assert ((par == 1).sum(), (par == 2).sum()) == (64, 32)


def test_drop_border_matches_exact_cell_containment(tmp_path):
  # A rotated quadrilateral and two parcels sharing an oblique boundary.
  quad = Polygon([pix(20, 1.3), pix(38.6, 12), pix(27, 24.4), pix(15.2, 9)])
  left = Polygon([pix(1, 20), pix(13.3, 20), pix(8.7, 38), pix(1, 38)])
  right = Polygon([pix(13.3, 20), pix(19, 20), pix(19, 38), pix(8.7, 38)])
  _, lab, par, table = run(tmp_path, [parcel(1, "VRC", quad), parcel(2, "BTH", left),
                                      parcel(3, "MIS", right)], drop_border=True)
  cols, rows = np.meshgrid(np.arange(40), np.arange(40))
  cells = shapely.box(*pix(cols, rows + 1), *pix(cols + 1, rows))
  for i, geom in enumerate([quad, left, right], start=1):
    geom = geopandas.GeoSeries([geom], crs=ZONE.crs).to_crs(2154).to_crs(ZONE.crs)[0]
    inside = shapely.within(cells, shapely.buffer(geom, 1e-6))
    assert inside.sum() > 20
    np.testing.assert_array_equal(par == i, inside, err_msg=f"parcel {i}")
  assert (lab[par == 0] == NO_LABEL).all()


def test_rerun_and_folder_of_another_zone(tmp_path):
  rows = [parcel(1, "BTH", rect(0, 0, 5, 5))]
  first = run(tmp_path, rows)[0]
  again = run(tmp_path, rows)[0]
  assert first == again
  other = zone_around("chartres_other", "Paris Basin", "Chartres", 1, 1.4890, 48.4439,
                      pixels=40)
  with pytest.raises(UserError, match=r"already holds zone 'chartres_test'"):
    make_zone_labels(tmp_path / "rpg.gpkg", other, tmp_path / "zone", progress=False)


def test_regional_shapefile_and_layer_names(tmp_path):
  rows = [parcel(1, "BTH", rect(0, 0, 5, 5))]
  shp = write_rpg(tmp_path / "PARCELLES_GRAPHIQUES.shp", rows, driver="ESRI Shapefile",
                  layer=None)
  s = make_zone_labels(shp, ZONE, tmp_path / "z1", progress=False)
  assert s["parcels"] == 1 and s["class_pixel_counts"]["winter_wheat"] == 25
  lower = write_rpg(tmp_path / "lower.gpkg", rows, layer="parcelles_graphiques")
  assert make_zone_labels(lower, ZONE, tmp_path / "z2", progress=False)["layer"] == \
      "parcelles_graphiques"
  single = write_rpg(tmp_path / "single.gpkg", rows, layer="rpg_2023_r24")
  assert make_zone_labels(single, ZONE, tmp_path / "z3", progress=False)["parcels"] == 1
  assert make_zone_labels(single, ZONE, tmp_path / "z4", layer="RPG_2023_R24",
                          progress=False)["layer"] == "rpg_2023_r24"


def test_error_wrong_crs(tmp_path):
  rpg = write_rpg(tmp_path / "wgs.gpkg", [parcel(1, "BTH", rect(0, 0, 5, 5))],
                  crs="EPSG:4326")
  with pytest.raises(UserError) as e:
    make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False)
  msg = str(e.value)
  assert msg.startswith(f"{rpg}: CRS is EPSG:4326, expected EPSG:2154")
  assert "reproject" in msg and "ogr2ogr -t_srs EPSG:2154" in msg
  assert not (tmp_path / "z").exists()


def test_error_layers(tmp_path):
  rows = [parcel(1, "BTH", rect(0, 0, 5, 5))]
  path = write_rpg(tmp_path / "two.gpkg", rows, layer="alpha")
  write_rpg(path, rows, layer="beta")
  with pytest.raises(UserError, match=r"two.gpkg: layer 'PARCELLES_GRAPHIQUES' not found; "
                     r"layers found: alpha, beta; pass --layer"):
    make_zone_labels(path, ZONE, tmp_path / "z", progress=False)
  with pytest.raises(UserError, match=r"layer 'gamma' not found; layers found: alpha, beta"):
    make_zone_labels(path, ZONE, tmp_path / "z", layer="gamma", progress=False)


def test_error_missing_fields(tmp_path):
  rpg = write_rpg(tmp_path / "r.gpkg", [parcel(1, "BTH", rect(0, 0, 5, 5))],
                  drop=("CODE_CULTU",))
  with pytest.raises(UserError, match=r"r.gpkg \(layer PARCELLES_GRAPHIQUES\): missing "
                     r"field\(s\) CODE_CULTU; fields found: ID_PARCEL, CODE_GROUP, SURF_PARC;"):
    make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False)


def test_error_zone_without_parcel(tmp_path):
  rpg = write_rpg(tmp_path / "r.gpkg", [parcel(1, "BTH", rect(100, 100, 105, 105))])
  with pytest.raises(UserError) as e:
    make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False)
  assert str(e.value) == ("zone chartres_test has no RPG parcel in r.gpkg; is it the right "
                          "region/vintage?")


def test_error_unknown_codes_name_the_file(tmp_path):
  rpg = write_rpg(tmp_path / "r.gpkg", [parcel(1, "QQQ", rect(0, 0, 5, 5)),
                                        parcel(2, "BTH", rect(5, 5, 9, 9)),
                                        parcel(3, "XXZ", rect(100, 0, 101, 1))])
  with pytest.raises(UnknownCodeError) as e:
    make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False)
  assert e.value.codes == ["QQQ"]  # XXZ lies outside the zone
  assert str(e.value).startswith("r.gpkg: 1 RPG CODE_CULTU value(s) not in nomenclature v1: QQQ;")


def test_error_missing_or_unreadable_file(tmp_path):
  with pytest.raises(UserError, match=r"nope.gpkg: RPG file not found"):
    make_zone_labels(tmp_path / "nope.gpkg", ZONE, tmp_path / "z", progress=False)
  bad = tmp_path / "bad.gpkg"
  bad.write_text("not a geopackage")
  with pytest.raises(UserError, match=r"bad.gpkg: not a readable GeoPackage/Shapefile"):
    make_zone_labels(bad, ZONE, tmp_path / "z", progress=False)
  archive = tmp_path / "RPG_2023.7z"
  archive.write_bytes(b"7z")
  with pytest.raises(UserError, match=r"RPG_2023.7z: a 7-Zip archive; extract it first"):
    make_zone_labels(archive, ZONE, tmp_path / "z", progress=False)


def test_zone_folder_with_imagery_reads_back(tmp_path, capsys):
  from cropcontracts import zonefolder
  months = [f"2023-{m:02d}" for m in range(1, 3)]
  zonefolder.write_imagery(tmp_path / "zone", ZONE, np.ones((2, 4, 40, 40), np.uint16),
                           np.ones((2, 40, 40), np.uint8), months)
  rpg = write_rpg(tmp_path / "r.gpkg", [parcel("0042", "VRC", rect(0, 0, 3, 2)),
                                        parcel(9, "OLI", rect(3, 0, 4, 1))])
  make_zone_labels(rpg, ZONE, tmp_path / "zone", progress=True)
  assert "labels chartres_test" in capsys.readouterr().err
  z = zonefolder.open_zone(tmp_path / "zone", require_labels=True)
  assert z.nomenclature == "v1" and z.months == months
  table = z.parcel_table()
  assert table.ID_PARCEL.tolist() == ["9", "0042"]  # numeric order, text kept
  np.testing.assert_array_equal(z.read_parcels()[:2, :4], [[2, 2, 2, 1], [2, 2, 2, 0]])
  np.testing.assert_array_equal(z.read_labels()[:2, :4],
                                [[20, 20, 20, 22], [20, 20, 20, NO_LABEL]])


def test_numeric_id_and_group_fields_read_as_text(tmp_path):
  rows = [dict(ID_PARCEL=12.0, CODE_CULTU="BTH", CODE_GROUP=1.0, SURF_PARC=0.5,
               geometry=rect(0, 0, 2, 2)),
          dict(ID_PARCEL=3.0, CODE_CULTU="ORH", CODE_GROUP=3.0, SURF_PARC=None,
               geometry=rect(2, 0, 4, 2))]
  _, _, _, table = run(tmp_path, rows)
  assert table.ID_PARCEL.tolist() == ["3", "12"]
  assert table.CODE_GROUP.tolist() == [3, 1]  # read back by pandas without dtype
  assert np.isnan(table.surf_parc_ha.iloc[0]) and table.surf_parc_ha.iloc[1] == 0.5


def test_parcels_gpkg_holds_the_rasterized_geometries_in_the_zone_crs(tmp_path):
  """parcels.gpkg is what parcels.tif was drawn from: the cleaned parcels (the bow-tie
  repaired, whole, not clipped to the zone) in the zone CRS, one per parcels.csv row."""
  from cropcontracts import zonefolder
  bowtie = Polygon([pix(0.2, 0), pix(10.2, 10), pix(10.2, 0), pix(0.2, 10)])
  rows = [parcel(7, "BTH", bowtie), parcel(3, "MIS", rect(20, 20, 24, 24)),
          parcel(5, "TRN", rect(30, 30, 45, 36))]                  # crosses the zone edge
  _, _, par, table = run(tmp_path, rows)
  meta = json.loads((tmp_path / "zone" / "meta.json").read_text())   # labels, no imagery
  zf = zonefolder.ZoneFolder(tmp_path / "zone", meta, ZONE)
  gdf = zf.read_parcel_geometries()
  assert gdf.crs == ZONE.crs and zf.format == "jaxcrop-zone/2"
  assert gdf.parcel_index.tolist() == table.parcel_index.tolist() == [1, 2, 3]
  assert gdf.ID_PARCEL.tolist() == table.ID_PARCEL.tolist() == ["3", "5", "7"]
  assert gdf.CODE_CULTU.tolist() == ["MIS", "TRN", "BTH"]
  cleaned, _ = labels_lib.zone_parcels([tmp_path / "rpg.gpkg"], ZONE)
  multi = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g])
           for g in cleaned.geometry]                  # stored as MultiPolygons
  assert shapely.equals_exact(gdf.geometry.values, multi, 0).all()
  np.testing.assert_array_equal(labels_lib.rasterize_parcels(gdf.geometry.values, ZONE), par)
  assert gdf.geometry.iloc[1].area == pytest.approx(15 * 6 * 100.0, rel=1e-6)   # whole
  assert gdf.geometry.iloc[2].area == pytest.approx(shapely.make_valid(bowtie).area, rel=1e-6)
