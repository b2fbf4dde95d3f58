"""Zone labels from tiny hand-made RPG files (EPSG:2154) on a 40 x 40 zone."""
import json
import pathlib

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
BG = NOM.background_id   # non_agricultural: beyond the margin of every parcel
ROOT = pathlib.Path(__file__).resolve().parents[1]


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
  kw.setdefault("edition", 2023)
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
  want = np.full(ZONE.shape, BG)                  # background beyond a 1-px ring (margin 1)
  want[1:11, 1:11] = NO_LABEL
  want[expect] = NOM.class_id("winter_wheat")
  np.testing.assert_array_equal(lab, want)
  row = table.iloc[0]
  assert (row.parcel_index, row.ID_PARCEL, row.CODE_CULTU, row.class_id, row.class_name,
          row.tier2, row.tier1, row.n_pixels) == (
              1, "7", "BTH", 0, "winter_wheat", "small_grain_cereal", "field_crops", 64)
  assert row.area_m2 == pytest.approx(76.0 * 76.0, abs=0.05)
  assert row.surf_parc_ha == 1.0
  assert list(table.columns) == list(labels_lib.TABLE_COLUMNS)
  assert summary["class_pixel_counts"]["winter_wheat"] == 64
  assert summary["class_pixel_counts"]["maize"] == 0
  assert summary["unlabelled_pixels"] == 100 - 64
  assert summary["background_pixels"] == summary["class_pixel_counts"]["non_agricultural"] \
      == 1600 - 100
  assert (summary["parcels"], summary["parcels_ignored"], summary["invalid_repaired"],
          summary["invalid_dropped"], summary["duplicates_dropped"],
          summary["drop_border"], summary["nomenclature"], summary["rpg_file"],
          summary["layer"], summary["margin"], summary["landcover"]) == (
              1, 0, 0, 0, 0, False, "v3", "rpg.gpkg", "PARCELLES_GRAPHIQUES", 1,
              {"source": "none"})
  assert (summary["rpg_edition"], summary["rpg_edition_from"], summary["unknown_codes"],
          summary["unknown_codes_ignored"]) == (2023, "--rpg-year", "error", [])
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
  np.testing.assert_array_equal(lab[par > 0], class_of[par][par > 0])
  assert np.isin(lab[par == 0], (NO_LABEL, BG)).all()
  assert table.CODE_CULTU.tolist() == ["MIS", "BOR", "PPH", "NR"]  # null code -> NR
  assert table.class_name.tolist() == ["maize", "ignore", "permanent_grassland", "ignore"]
  assert table.n_pixels.tolist() == [100, 20, 800, 50]
  assert table.CULTURE_D1.fillna("").tolist() == ["MOT", "", "", ""]
  assert summary["parcels_ignored"] == 2
  assert summary["class_pixel_counts"]["maize"] == 100
  # Beyond the 1-px ring of every parcel, ignored ones included: rows 0-5 cols
  # 13-28, rows 6-10 cols 13-39, rows 11-18 all columns.
  assert summary["background_pixels"] == 16 * 6 + 27 * 5 + 8 * 40
  assert summary["unlabelled_pixels"] == 1600 - 900 - summary["background_pixels"]
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
  # The zone's square grown by the margin (1 px): parcels just outside count for it.
  assert seen["bbox"] == pytest.approx(labels_lib.grown(ZONE, 1).bounds_in("EPSG:2154"))


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
  np.testing.assert_array_equal((lab != NO_LABEL) & (lab != BG), expect)
  assert (lab[1:11, 1:11][~expect[1:11, 1:11]] == NO_LABEL).all()   # never background
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
  assert np.isin(lab[par == 0], (NO_LABEL, BG)).all()


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
    make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False, edition=2023)
  assert e.value.codes == ["QQQ"]  # XXZ lies outside the zone
  assert str(e.value).startswith("r.gpkg: 1 RPG CODE_CULTU value(s) not in nomenclature v3 "
                                 "for RPG edition 2023: QQQ (1 parcel, 0.25 ha); add them")
  assert not (tmp_path / "z" / "labels.tif").exists()


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
  summary = make_zone_labels(rpg, ZONE, tmp_path / "zone", progress=True)
  assert "labels chartres_test" in capsys.readouterr().err
  assert (summary["rpg_edition"], summary["rpg_edition_from"]) == (2023, "composites")
  z = zonefolder.open_zone(tmp_path / "zone", require_labels=True)
  assert z.nomenclature == "v3" and z.months == months
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


# --- RPG edition and unknown codes --------------------------------------------

def test_unknown_codes_error_lists_each_code_with_parcels_and_area(tmp_path):
  rows = [parcel(1, "QQQ", rect(0, 0, 5, 5)), parcel(2, "QQQ", rect(5, 0, 10, 10)),
          parcel(3, "J5M", rect(10, 10, 30, 30)), parcel(4, "BTH", rect(30, 30, 40, 40))]
  with pytest.raises(UnknownCodeError) as e:
    run(tmp_path, rows)
  # QQQ: 50 m x 50 m + 50 m x 100 m = 0.75 ha; J5M: 200 m x 200 m = 4 ha.
  assert str(e.value) == (
      "rpg.gpkg: 2 RPG CODE_CULTU value(s) not in nomenclature v3 for RPG edition 2023: "
      "J5M (1 parcel, 4.00 ha; valid in editions 2015–2022), QQQ (2 parcels, 0.75 ha); "
      "is the RPG edition right? (--rpg-year); add them to cropcontracts/data/rpg_codes_v3.csv "
      "(tier3 `ignore` to skip them) and bump the version, or pass --unknown-codes ignore "
      "to leave them unlabelled")
  assert e.value.details == {"J5M": (1, 4.0), "QQQ": (2, 0.75)}


def test_unknown_codes_ignore_leaves_them_unlabelled_warns_and_records(tmp_path):
  rows = [parcel(1, "QQQ", rect(0, 0, 5, 5)), parcel(2, "QQQ", rect(5, 0, 10, 10)),
          parcel(3, "JAC", rect(10, 10, 30, 30)), parcel(4, "XYZ", rect(30, 30, 40, 40))]
  with pytest.warns(UserWarning) as w:
    summary, lab, par, table = run(tmp_path, rows, unknown_codes="ignore")
  msg = [str(x.message) for x in w if "unlabelled" in str(x.message)]
  assert msg == ["rpg.gpkg: zone chartres_test: 3 parcel(s) left unlabelled (--unknown-codes "
                 "ignore), 2 RPG CODE_CULTU value(s) not in nomenclature v3 for RPG edition "
                 "2023: QQQ (2 parcels, 0.75 ha), XYZ (1 parcel, 1.00 ha); recorded in meta.json"]
  recorded = [dict(code="QQQ", parcels=2, area_ha=0.75), dict(code="XYZ", parcels=1, area_ha=1.0)]
  assert summary["unknown_codes"] == "ignore"
  assert summary["unknown_codes_ignored"] == recorded
  meta = json.loads((tmp_path / "zone" / "meta.json").read_text())
  assert meta["labels"]["unknown_codes_ignored"] == recorded
  assert table.class_name.tolist() == ["ignore", "ignore", "fallow", "ignore"]
  assert summary["parcels_ignored"] == 3
  assert (lab[(par != 3) & (par > 0)] == NO_LABEL).all()
  assert (lab[par == 3] == NOM.class_id("fallow")).all()
  assert summary["class_pixel_counts"]["fallow"] == 400


@pytest.mark.parametrize("edition,cpl,ges", [(2019, "other_winter_cereal", "fodder_legumes"),
                                             (2023, "ignore", "protein_legumes")])
def test_changed_meaning_codes_follow_the_edition(tmp_path, edition, cpl, ges):
  rows = [parcel(1, "CPL", rect(0, 0, 10, 10)), parcel(2, "GES", rect(10, 0, 20, 10)),
          parcel(3, "PPH", rect(0, 10, 20, 20))]
  summary, lab, par, table = run(tmp_path, rows, edition=edition)
  assert table.class_name.tolist() == [cpl, ges, "permanent_grassland"]
  assert summary["rpg_edition"] == edition


def test_prl_reads_in_2019_and_stops_2023(tmp_path):
  rows = [parcel(1, "PRL", rect(0, 0, 10, 10))]
  summary, _, _, table = run(tmp_path, rows, edition=2019)
  assert table.class_name.tolist() == ["permanent_grassland"]
  with pytest.raises(UnknownCodeError, match=r"PRL \(1 parcel, 1.00 ha; valid in editions "
                                             r"2015–2022\)"):
    run(tmp_path, rows, out="zone2023", edition=2023)


def test_edition_from_the_file_name_then_composites_then_default(tmp_path):
  from cropcontracts import zonefolder
  rows = [parcel(1, "CPL", rect(0, 0, 10, 10))]
  rpg = write_rpg(tmp_path / "RPG_2-0__GPKG_LAMB93_FXX_2022-01-01.gpkg", rows)
  summary = make_zone_labels(rpg, ZONE, tmp_path / "a", progress=False)
  assert (summary["rpg_edition"], summary["rpg_edition_from"]) == (2022, "file name")
  assert zonefolder_table(tmp_path / "a").class_name.tolist() == ["other_winter_cereal"]
  summary = make_zone_labels(rpg, ZONE, tmp_path / "b", progress=False, edition=2023)
  assert (summary["rpg_edition"], summary["rpg_edition_from"]) == (2023, "--rpg-year")
  plain = write_rpg(tmp_path / "parcels.gpkg", rows)
  zonefolder.write_imagery(tmp_path / "c", ZONE, np.ones((1, 4, 40, 40), np.uint16),
                           np.ones((1, 40, 40), np.uint8), ["2019-06"])
  summary = make_zone_labels(plain, ZONE, tmp_path / "c", progress=False)
  assert (summary["rpg_edition"], summary["rpg_edition_from"]) == (2019, "composites")
  with pytest.warns(UserWarning, match=r"^parcels.gpkg: no year in the file name and no "
                                       r"composites in the zone folder; codes read as RPG "
                                       r"edition 2023 \(pass --rpg-year"):
    summary = make_zone_labels(plain, ZONE, tmp_path / "d", progress=False)
  assert (summary["rpg_edition"], summary["rpg_edition_from"]) == (2023, "default")


@pytest.mark.parametrize("path,year", [
    ("RPG_2-2__GPKG_LAMB93_FXX_2023-01-01.gpkg", 2023),
    ("R24_2021.shp", 2021),
    ("RPG_2-0__SHP_LAMB93_R24_2020-01-01/RPG/1_DONNEES_LIVRAISON_2021-06-00169/"
     "RPG_2-0_SHP_LAMB93_R24-2020/PARCELLES_GRAPHIQUES.shp", 2020),
    ("data/2024/PARCELLES_GRAPHIQUES.gpkg", None),   # only folders named RPG… count
    ("rpg2022_sample/PARCELLES_GRAPHIQUES.gpkg", 2022),
    ("RPG_2-2__GPKG_LAMB93_FXX.gpkg", None)])
def test_edition_in_path(path, year):
  assert labels_lib.edition_in_path(path) == year


def test_edition_errors(tmp_path):
  with pytest.raises(UserError, match=r"the name 'RPG_2023_2024' holds several years "
                                      r"\(2023, 2024\); pass the RPG edition with --rpg-year"):
    labels_lib.edition_in_path("RPG_2023_2024.gpkg")
  a = write_rpg(tmp_path / "RPG_2022.gpkg", [parcel(1, "BTH", rect(0, 0, 4, 4))])
  b = write_rpg(tmp_path / "RPG_2023.gpkg", [parcel(2, "BTH", rect(4, 4, 8, 8))])
  with pytest.raises(UserError, match=r"RPG files of different editions: RPG_2022.gpkg "
                                      r"\(2022\), RPG_2023.gpkg \(2023\)"):
    make_zone_labels([a, b], ZONE, tmp_path / "z", progress=False)
  with pytest.raises(UserError, match=r"RPG edition 2012 \(--rpg-year\): the nomenclature "
                                      r"covers RPG 2.x editions from 2015 on"):
    make_zone_labels(a, ZONE, tmp_path / "z", progress=False, edition=2012)
  with pytest.raises(UserError, match=r"unknown_codes='skip'"):
    make_zone_labels(a, ZONE, tmp_path / "z", progress=False, unknown_codes="skip")


def _cli_zone(tmp_path, zones=(ZONE,)):
  from prep import zones as zones_lib
  zones_lib.write_zones(list(zones), tmp_path / "zones.csv")
  return ["--zones-csv", str(tmp_path / "zones.csv"), "--out", str(tmp_path / "out")]


def test_cli_unknown_codes_flags(tmp_path, capsys):
  from prep import cli
  rpg = write_rpg(tmp_path / "rpg.gpkg", [parcel(1, "QQQ", rect(0, 0, 10, 10)),
                                          parcel(2, "CPL", rect(10, 0, 20, 10))])
  base = ["-q", "labels", "--rpg", str(rpg), "--all", *_cli_zone(tmp_path)]
  assert cli.main(base + ["--rpg-year", "2023"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: rpg.gpkg: 1 RPG CODE_CULTU value(s) not in nomenclature v3 "
                        "for RPG edition 2023: QQQ (1 parcel, 1.00 ha); add them to ")
  assert err.count("\n") == 1
  assert cli.main(base + ["--rpg-year", "2019", "--unknown-codes", "ignore"]) == 0
  err = capsys.readouterr().err
  warn = [line for line in err.splitlines() if "unlabelled" in line]
  assert warn == ["warning: rpg.gpkg: zone chartres_test: 1 parcel(s) left unlabelled "
                  "(--unknown-codes ignore), 1 RPG CODE_CULTU value(s) not in nomenclature "
                  "v3 for RPG edition 2019: QQQ (1 parcel, 1.00 ha); recorded in meta.json"]
  meta = json.loads((tmp_path / "out" / "chartres_test" / "meta.json").read_text())
  assert meta["labels"]["unknown_codes_ignored"] == [dict(code="QQQ", parcels=1, area_ha=1.0)]
  assert (meta["labels"]["rpg_edition"], meta["labels"]["rpg_edition_from"]) == (2019,
                                                                               "--rpg-year")
  table = zonefolder_table(tmp_path / "out" / "chartres_test")
  assert table.class_name.tolist() == ["ignore", "other_winter_cereal"]  # CPL before 2023


def zonefolder_table(folder):
  import pandas as pd
  return pd.read_csv(folder / "parcels.csv", dtype={"ID_PARCEL": str})


# --- the real RPG 2022 sample (shared/real/rpg2022_sample) --------------------

from tests.real_samples import REAL, needs_real  # noqa: E402

SAMPLE = REAL / "rpg2022_sample" / "PARCELLES_GRAPHIQUES.gpkg"
# Zones on the 10 m UTM grid (1000 x 1000 px, each zone in its own UTM zone)
# around parcels of the sample; the sample has at most 2 parcels per 10 km square.
REAL_ZONES = [("nantes_vines", 32630, 625280.0, 5230240.0),
              ("prl_grass", 32630, 575970.0, 5237520.0),
              ("j5m_fallow", 32631, 352840.0, 5335130.0),
              ("mie_maize", 32630, 614180.0, 5444810.0),
              ("dty_grass", 32630, 409800.0, 5369830.0)]
# By hand from cropcontracts/data/rpg_codes_v3.csv, rows holding edition 2022.
BY_HAND_2022 = {"VRC": "vineyard", "PRL": "permanent_grassland", "J5M": "fallow",
                "MIE": "maize", "DTY": "temporary_grassland"}


def _prep(*args):
  """`python -m prep ARGS` in a process of its own, as a user runs it (a test
  process that imported TensorFlow first has a SQLite without R*Tree)."""
  import subprocess
  import sys
  return subprocess.run([sys.executable, "-m", "prep", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)



@needs_real
def test_real_rpg_2022_sample_through_prep_labels(tmp_path):
  import pandas as pd
  import pyogrio
  from cropcontracts.zone import Zone
  zones = [Zone(zone_id=z, region="real", town=z, index=i, epsg=e, x0=x, y0=y)
           for i, (z, e, x, y) in enumerate(REAL_ZONES)]
  res = _prep("-q", "labels", "--rpg", SAMPLE, "--all", *_cli_zone(tmp_path, zones))
  assert res.returncode == 0, res.stderr
  # The whole file, read independently of prep's bbox read (no spatial index).
  ref = pyogrio.read_dataframe(SAMPLE)
  # Every code of the sample is valid in 2022, with the group the table gives it.
  assert NOM.unknown_codes(ref.code_cultu.tolist(), 2022) == []
  assert [NOM.row(c, 2022).code_group for c in ref.code_cultu] == ref.code_group.tolist()
  for zone in zones:
    folder = tmp_path / "out" / zone.zone_id
    meta = json.loads((folder / "meta.json").read_text())["labels"]
    # The edition comes from the folder name `rpg2022_sample`.
    assert (meta["rpg_edition"], meta["rpg_edition_from"]) == (2022, "file name")
    assert meta["layer"] == "parcelles_graphiques"
    inside = ref.to_crs(zone.crs)
    inside = inside[shapely.intersects(inside.geometry.values, shapely.box(*zone.bounds))]
    table = pd.read_csv(folder / "parcels.csv", dtype={"ID_PARCEL": str, "CODE_GROUP": str})
    assert meta["parcels"] == len(inside) == len(table) >= 1
    assert sorted(table.ID_PARCEL) == sorted(inside.id_parcel)
    got = table.set_index("ID_PARCEL")
    with rasterio.open(folder / "parcels.tif") as src:
      parcels = src.read(1)
    cols, rows = np.meshgrid(np.arange(zone.width) + 0.5, np.arange(zone.height) + 0.5)
    for _, p in inside.iterrows():
      row = got.loc[p.id_parcel]
      assert (row.CODE_CULTU, row.CODE_GROUP) == (p.code_cultu, p.code_group)
      assert row.class_name == BY_HAND_2022[p.code_cultu]
      assert row.surf_parc_ha == pytest.approx(p.surf_parc)
      # Pixels whose centre lies in the parcel, counted with shapely on the grid.
      x, y = zone.x0 + cols * zone.res, zone.y0 - rows * zone.res
      n = int(shapely.contains_xy(p.geometry, x, y).sum())
      assert row.n_pixels == n == int((parcels == row.parcel_index).sum()) > 0
    _assert_background_by_geometry(folder, zone, inside.geometry.values, meta)
  # Read as the 2023 edition, the sample's pre-2023 codes are unknown, with counts
  # (the sample's parcels of one zone, copied without spatial index: in process).
  zone = zones[1]
  prl = ref.to_crs(zone.crs)
  prl = prl[shapely.intersects(prl.geometry.values, shapely.box(*zone.bounds))]
  copy = tmp_path / "prl.gpkg"
  pyogrio.write_dataframe(ref[ref.id_parcel.isin(prl.id_parcel)], copy,
                          layer="parcelles_graphiques", layer_options={"SPATIAL_INDEX": "NO"})
  with pytest.raises(UnknownCodeError) as e:
    make_zone_labels(copy, zone, tmp_path / "o23", progress=False, edition=2023)
  ha = prl.geometry.area.sum() / 1e4
  assert (f"prl.gpkg: 1 RPG CODE_CULTU value(s) not in nomenclature v3 for RPG edition 2023: "
          f"PRL (1 parcel, {ha:.2f} ha; valid in editions 2015–2022)") in str(e.value)


def _assert_background_by_geometry(folder, zone, geoms, meta):
  """Background exactly where the 3 x 3 cells around a pixel meet no parcel (margin
  1; shapely over a window around the parcels, background everywhere else)."""
  with rasterio.open(folder / "labels.tif") as src:
    lab = src.read(1)
  left, bottom, right, top = shapely.total_bounds(geoms)
  c0, c1 = int((left - zone.x0) // zone.res) - 3, int((right - zone.x0) // zone.res) + 4
  r0, r1 = int((zone.y0 - top) // zone.res) - 3, int((zone.y0 - bottom) // zone.res) + 4
  c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, zone.width), min(r1, zone.height)
  cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
  h = 1.5 * zone.res - labels_lib.BORDER_EPS
  x, y = zone.x0 + (cols + 0.5) * zone.res, zone.y0 - (rows + 0.5) * zone.res
  meets = shapely.intersects(shapely.box(x - h, y - h, x + h, y + h)[..., None], geoms).any(-1)
  window = lab[r0:r1, c0:c1].copy()
  np.testing.assert_array_equal(window == BG, ~meets)
  lab[r0:r1, c0:c1] = BG
  assert (lab == BG).all() and meets.sum() > 0
  assert (meta["margin"], meta["landcover"]) == (1, {"source": "none"})
  assert meta["background_pixels"] == zone.width * zone.height - int(meets.sum())


def test_spatial_index_unreadable_in_this_process_is_one_line(tmp_path, monkeypatch):
  import pyogrio
  rpg = write_rpg(tmp_path / "r.gpkg", [parcel(1, "BTH", rect(0, 0, 4, 4))])

  def no_rtree(*a, **k):
    raise pyogrio.errors.FeatureError('Failed to prepare SQL SELECT … JOIN "rtree_r_geom" '
                                      'r ON …: no such module: rtree')
  monkeypatch.setattr(pyogrio, "read_dataframe", no_rtree)
  with pytest.raises(UserError, match=r"r.gpkg: its spatial index cannot be read in this "
                                      r"process \(its SQLite lacks the R\*Tree module"):
    make_zone_labels(rpg, ZONE, tmp_path / "z", progress=False, edition=2023)


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
  assert gdf.crs == ZONE.crs and zf.format == "jaxcrop-zone/3"
  assert gdf.parcel_index.tolist() == table.parcel_index.tolist() == [1, 2, 3]
  assert gdf.ID_PARCEL.tolist() == table.ID_PARCEL.tolist() == ["3", "5", "7"]
  assert gdf.CODE_CULTU.tolist() == ["MIS", "TRN", "BTH"]
  cleaned, _, _ = labels_lib.zone_parcels([tmp_path / "rpg.gpkg"], ZONE)
  multi = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g])
           for g in cleaned.geometry]                  # stored as MultiPolygons
  assert shapely.equals_exact(gdf.geometry.values, multi, 0).all()
  np.testing.assert_array_equal(labels_lib.rasterize_parcels(gdf.geometry.values, ZONE), par)
  assert gdf.geometry.iloc[1].area == pytest.approx(15 * 6 * 100.0, rel=1e-6)   # whole
  assert gdf.geometry.iloc[2].area == pytest.approx(shapely.make_valid(bowtie).area, rel=1e-6)


# --- background: the margin, land cover ---------------------------------------

def _margin_rows():
  """A parcel with mixed cells, a sliver without pixel, an ignored parcel, and one
  just outside the zone (5 m beyond its east edge)."""
  return [parcel(1, "BTH", rect(5.6, 5.6, 9.3, 9.3)),      # centres 6..8; cells 5..9 hold it
          parcel(2, "BTH", rect(20.2, 20.2, 20.4, 25)),     # 2 m wide: no centre, column 20
          parcel(3, "BOR", rect(30, 5, 34, 8)),             # ignore code: still farmland
          parcel(4, "MIS", rect(40.5, 30, 44, 34))]         # outside: grown column 40


@pytest.mark.parametrize("margin", [0, 1, 2])
def test_background_beyond_the_margin_exact_pixels(tmp_path, margin):
  m = margin
  summary, lab, par, table = run(tmp_path, _margin_rows(), margin=m)
  assert table.ID_PARCEL.tolist() == ["1", "2", "3"] and table.n_pixels.tolist() == [9, 0, 12]
  near = np.zeros(ZONE.shape, bool)
  near[5 - m:10 + m, 5 - m:10 + m] = True        # rows and columns 5..9 hold part of parcel 1
  near[20 - m:25 + m, 20 - m:21 + m] = True      # the sliver's cells: column 20, rows 20..24
  near[5 - m:8 + m, 30 - m:34 + m] = True        # the ignored parcel's pixels
  near[30 - m:34 + m, 40 - m:] = True            # the parcel beyond the east edge
  want = np.where(near, NO_LABEL, BG).astype(np.uint8)
  want[6:9, 6:9] = NOM.class_id("winter_wheat")
  np.testing.assert_array_equal(lab, want)
  assert (summary["margin"], summary["background_pixels"]) == (m, int((~near).sum()))
  assert summary["class_pixel_counts"]["non_agricultural"] == int((~near).sum())
  assert summary["unlabelled_pixels"] == int(near.sum()) - 9
  meta = json.loads((tmp_path / "zone" / "meta.json").read_text())["labels"]
  assert (meta["margin"], meta["background_pixels"]) == (m, 1600 - int(near.sum()))


def test_margin_matches_the_cells_around_oblique_parcels(tmp_path):
  """Not background exactly where the (2 margin + 1)-cell square around the pixel
  meets a parcel (less the 1 mm of `border_mask`), checked with shapely."""
  quad = Polygon([pix(20, 1.3), pix(38.6, 12), pix(27, 24.4), pix(15.2, 9)])
  tri = Polygon([pix(1.2, 20.3), pix(13.7, 26.1), pix(3.3, 37.6)])
  _, lab, par, _ = run(tmp_path, [parcel(1, "VRC", quad), parcel(2, "NR", tri)], margin=2)
  geoms = labels_lib.zone_parcels([tmp_path / "rpg.gpkg"], ZONE)[0].geometry.values
  cols, rows = np.meshgrid(np.arange(40), np.arange(40))
  h = 2.5 - labels_lib.BORDER_EPS / ZONE.res
  squares = shapely.box(*pix(cols + 0.5 - h, rows + 0.5 + h), *pix(cols + 0.5 + h, rows + 0.5 - h))
  meets = shapely.intersects(squares[..., None], geoms).any(-1)
  np.testing.assert_array_equal(lab == BG, ~meets)
  assert (lab[meets & (par == 0)] == NO_LABEL).all() and (lab == BG).sum() > 500


def test_a_zone_without_pixel_outside_parcels_has_no_background(tmp_path):
  summary, lab, par, _ = run(tmp_path, [parcel(1, "BTH", rect(-5, -5, 20, 45)),
                                        parcel(2, "MIS", rect(20, -5, 45, 45))])
  assert (par > 0).all() and set(np.unique(lab)) == {0, NOM.class_id("maize")}
  assert summary["background_pixels"] == summary["class_pixel_counts"]["non_agricultural"] == 0
  assert summary["unlabelled_pixels"] == 0


def test_negative_margin_is_refused(tmp_path):
  with pytest.raises(UserError, match=r"^--margin -1: expected a whole number of pixels, "
                                      r"0 or more$"):
    run(tmp_path, _margin_rows(), margin=-1)
  assert not (tmp_path / "zone").exists()


def _utm_rule(x, y):
  """WorldCover class of a point (zone UTM metres): cropland west of column 20,
  grassland over rows 0..9, trees elsewhere, no data in the 5 x 5 corner."""
  cls = np.where(x < ZONE.x0 + 200, 40, np.where(y > ZONE.y0 - 100, 30, 10))
  return np.where((x > ZONE.x0 + 350) & (y < ZONE.y0 - 350), 0, cls)


def write_landcover(path, *, crs="EPSG:2154", res=5.0, pad=100.0, bounds=None, rule=_utm_rule):
  """A land-cover GeoTIFF in `crs` whose pixels take `rule` at their centres (UTM)."""
  import affine
  import pyproj
  left, bottom, right, top = bounds or ZONE.bounds_in(crs)
  left, bottom, right, top = left - pad, bottom - pad, right + pad, top + pad
  w, h = int((right - left) // res), int((top - bottom) // res)
  cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  to_utm = pyproj.Transformer.from_crs(crs, ZONE.crs, always_xy=True)
  x, y = to_utm.transform(left + cols * res, top - rows * res)
  with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                     crs=crs, transform=affine.Affine(res, 0, left, 0, -res, top), nodata=0) as dst:
    dst.write(rule(x, y).astype(np.uint8)[None])
  return path


def test_landcover_geotiff_in_another_crs_keeps_farmland_unlabelled(tmp_path):
  from prep import landcover
  cover = write_landcover(tmp_path / "wc.tif")
  got, record = landcover.read(cover, ZONE)
  cols, rows = np.meshgrid(np.arange(40), np.arange(40))
  want = _utm_rule(ZONE.x0 + (cols + 0.5) * ZONE.res, ZONE.y0 - (rows + 0.5) * ZONE.res)
  np.testing.assert_array_equal(got, want)          # nearest: every pixel its own class
  assert (got[20, 19], got[20, 20], got[9, 30], got[10, 30], got[36, 36]) == (40, 10, 30, 10, 0)
  assert record == dict(source="file", path=str(cover), crs="EPSG:2154")
  summary, lab, par, _ = run(tmp_path, _margin_rows()[:1], landcover=cover)
  away = np.ones(ZONE.shape, bool)
  away[4:11, 4:11] = False
  farmland = np.isin(want, (30, 40))
  np.testing.assert_array_equal(lab == BG, away & ~farmland & (want != 0))
  assert summary["landcover"] == dict(
      source="file", path=str(cover), crs="EPSG:2154",
      undeclared_farmland_pixels=int((away & farmland).sum()), no_data_pixels=25)
  assert summary["background_pixels"] == 20 * 30 - 25


def test_landcover_that_does_not_cover_the_zone_is_refused_in_one_line(tmp_path):
  from prep import landcover
  left, bottom, right, top = ZONE.bounds_in("EPSG:2154")
  half = write_landcover(tmp_path / "half.tif", bounds=(left, bottom, (left + right) / 2, top),
                         pad=0)
  with pytest.raises(UserError) as e:
    run(tmp_path, _margin_rows()[:1], landcover=half)
  msg = str(e.value)
  assert msg.startswith(f"{half}: the land-cover raster (EPSG:2154, bounds (") and "\n" not in msg
  assert msg.endswith(") in that CRS); pass a land-cover GeoTIFF (WorldCover's legend) "
                      "that covers the zone")
  assert "does not cover zone chartres_test (" in msg
  assert not (tmp_path / "zone" / "labels.tif").exists()
  junk = tmp_path / "junk.tif"
  junk.write_text("not a raster")
  with pytest.raises(UserError, match=rf"^{junk}: not a readable land-cover raster \("):
    landcover.read(junk, ZONE)
  legend = write_landcover(tmp_path / "oso.tif", rule=lambda x, y: 11 + (x > ZONE.x0 + 200))
  with pytest.raises(UserError, match=rf"^{legend}: values 11, 12 over zone chartres_test are "
                                      r"not ESA WorldCover classes \(10, 20, 30, 40, 50"):
    landcover.read(legend, ZONE)


@pytest.fixture
def ee_offline():
  """Earth Engine's algorithm list without network (expressions build and serialize)."""
  from ee import apitestcase
  case = apitestcase.ApiTestCase()
  case.setUp()
  yield
  case.tearDown()


def test_landcover_worldcover_is_one_earth_engine_request_on_the_zone_grid(
    tmp_path, monkeypatch, ee_offline):
  import ee
  from prep import cli, gee
  requests, inits = [], []

  def fake(request):
    requests.append(request)
    out = np.zeros(ZONE.shape, [("Map", np.uint8)])
    out["Map"][:, :20] = 40                  # cropland in the west, built-up in the east
    out["Map"][:, 20:] = 50
    return out
  monkeypatch.setattr(ee.data, "computePixels", fake)
  monkeypatch.setattr(gee, "initialize", lambda project=None: inits.append(project))
  write_rpg(tmp_path / "rpg.gpkg", _margin_rows()[:1])
  assert cli.main(["-q", "labels", "--rpg", str(tmp_path / "rpg.gpkg"), "--all",
                   *_cli_zone(tmp_path), "--rpg-year", "2023", "--landcover", "worldcover",
                   "--project", "p"]) == 0
  (request,) = requests
  assert inits == ["p"]
  text = json.dumps(ee.serializer.encode(request["expression"], for_cloud_api=True))
  for needle in ('"ESA/WorldCover/v200"', '"Map"', '"Image.unmask"', '"Image.toUint8"'):
    assert needle in text, needle
  assert request["fileFormat"] == "NUMPY_NDARRAY" and request["bandIds"] == ["Map"]
  assert request["grid"] == {
      "dimensions": {"width": 40, "height": 40}, "crsCode": "EPSG:32631",
      "affineTransform": {"scaleX": 10.0, "shearX": 0, "translateX": ZONE.x0,
                          "shearY": 0, "scaleY": -10.0, "translateY": ZONE.y0}}
  meta = json.loads((tmp_path / "out" / "chartres_test" / "meta.json").read_text())["labels"]
  assert meta["landcover"] == dict(source="worldcover", collection="ESA/WorldCover/v200",
                                   undeclared_farmland_pixels=20 * 40 - 7 * 7,
                                   no_data_pixels=0)        # the west less the ring 4..10
  assert meta["background_pixels"] == 20 * 40               # the built-up east


def test_cli_margin_and_a_missing_landcover_file(tmp_path, capsys):
  from prep import cli
  rpg = write_rpg(tmp_path / "rpg.gpkg", _margin_rows()[:1])
  base = ["-q", "labels", "--rpg", str(rpg), "--all", *_cli_zone(tmp_path), "--rpg-year", "2023"]
  assert cli.main(base + ["--landcover", str(tmp_path / "wc.tif")]) == 2
  assert capsys.readouterr().err == f"error: {tmp_path / 'wc.tif'}: land-cover raster not found\n"
  assert not (tmp_path / "out").exists()
  assert cli.main(base + ["--margin", "2"]) == 0
  meta = json.loads((tmp_path / "out" / "chartres_test" / "meta.json").read_text())["labels"]
  assert (meta["margin"], meta["background_pixels"]) == (2, 1600 - 9 * 9)
