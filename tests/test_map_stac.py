"""STAC metadata of the maps: the zone Items and the national Collection, read back
through pystac; a write into a folder that refuses it is one line."""
import errno
import json

import numpy as np
import pytest

from cropcontracts import nomenclature
from cropcontracts.errors import UserError
from jaxcrop.maps import geotiff, stac, tiling
from prep.demo import zonefolders as zf
from tests import fixtures

NOM = nomenclature.load()
MODEL = {"checkpoint": "best", "step": 42, "dataset": "demo", "dataset_version": "1.2.0",
         "nomenclature": NOM.version, "temperature": 1.5}


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
  """A zone's map folder with tier maps and probabilities (hand-made prediction)."""
  root = tmp_path_factory.mktemp("stac")
  zone = zf.write_zone(root / "zones" / "testz_0")
  shape = zone.zone.shape
  K = NOM.num_classes
  pred = tiling.Prediction(np.full(shape, 3, np.uint8), np.full(shape, 80, np.uint8),
                           np.full((K,) + shape, 4, np.uint8),
                           {1: np.zeros(shape, np.uint8), 2: np.ones(shape, np.uint8)})
  return zone, geotiff.write_outputs(zone, pred, NOM, root / "maps", model=MODEL)


def test_zone_item_round_trips_with_its_extensions_and_assets(mapped):
  import pystac
  zone, folder = mapped
  item = pystac.Item.from_file(str(folder / stac.ITEM))
  assert item.id == "testz_0" and item.datetime is None
  start, end = item.common_metadata.start_datetime, item.common_metadata.end_datetime
  assert start.strftime("%Y-%m-%d") == zone.months[0] + "-01"
  assert end > start and end.strftime("%Y-%m") == zone.months[-1]
  assert item.properties["jaxcrop:checkpoint_step"] == 42
  assert item.properties["jaxcrop:nomenclature"] == NOM.version
  assert item.properties["jaxcrop:dataset_version"] == "1.2.0"
  assert item.properties["jaxcrop:temperature"] == 1.5
  assert item.properties["proj:code"] == "EPSG:32631"
  assert item.properties["proj:shape"] == [zf.H, zf.W]
  assert item.properties["proj:transform"] == list(zone.zone.transform)[:6]
  schemas = " ".join(item.stac_extensions)
  for ext in ("projection/v2", "raster/v1", "classification/v2"):
    assert ext in schemas
  assert set(item.assets) == {"classes", "classes_tier1", "classes_tier2", "confidence",
                              "validity", "probabilities", "parcels", "parcels_parquet",
                              "map_json"}
  for key, asset in item.assets.items():
    assert asset.href.startswith("./") and (folder / asset.href[2:]).is_file(), key
  classes = item.assets["classes"].extra_fields["classification:classes"]
  assert [c["value"] for c in classes] == list(range(NOM.num_classes))
  assert [c["name"] for c in classes] == list(NOM.tier3)
  assert classes[7]["color_hint"] == NOM.colors[7].lstrip("#").upper()
  tier2 = item.assets["classes_tier2"].extra_fields["classification:classes"]
  assert [c["name"] for c in tier2] == list(NOM.tier2_names)
  bands = item.assets["validity"].extra_fields["raster:bands"]
  assert [b["name"] for b in bands] == ["clear_acquisitions", "gap_filled_months"]
  assert all(b["nodata"] == 255 and b["data_type"] == "uint8" for b in bands)
  probs = item.assets["probabilities"].extra_fields["raster:bands"]
  assert [b["name"] for b in probs] == list(NOM.tier3) and probs[0]["unit"] == "percent"
  # the Item is listed by map.json (written before it, inside the folder's temporary name)
  assert "item.json" in json.loads((folder / "map.json").read_text())["files"]
  # bbox: the zone's square in WGS 84
  w, s, e, n = zone.zone.bounds_in("EPSG:4326")
  assert item.bbox == pytest.approx([w, s, e, n])


def test_stac_write_refused_is_one_line(tmp_path, monkeypatch):
  from cropcontracts import atomic

  def refuse(path, text):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))
  monkeypatch.setattr(atomic, "write_text", refuse)
  with pytest.raises(UserError) as e:
    stac.write_json(tmp_path / "national" / stac.COLLECTION, {}, "Collection")
  assert str(e.value) == (f"{tmp_path / 'national'}: cannot write the STAC Collection "
                          f"collection.json (Permission denied); make the folder writable "
                          f"or choose another --out")


def test_items_and_the_collection_are_valid_stac_core(mapped, tmp_path):
  """item.json and the national collection.json pass STAC core's JSON schemas (1.1.0);
  a damaged Item does not (the check can fail)."""
  from jaxcrop.maps import national
  _, folder = mapped
  item = json.loads((folder / stac.ITEM).read_text())
  assert item["stac_version"] == "1.1.0" and fixtures.stac_core_errors(item, "item") == []
  collection = json.loads(stac.national_collection(
      national.zone_maps(folder.parent), tmp_path, national.PRODUCTS).read_text())
  assert fixtures.stac_core_errors(collection, "collection") == []
  broken = dict(item, assets={"classes": {"title": "no href"}}, bbox="0 0 1 1")
  assert any("href" in e for e in fixtures.stac_core_errors(broken, "item"))
  assert any("bbox" in e or "array" in e for e in fixtures.stac_core_errors(broken, "item"))


def test_the_mosaic_has_a_collection_of_the_zone_items(mapped, tmp_path):
  import pystac
  from jaxcrop.maps import national
  zone, folder = mapped
  maps = national.zone_maps(folder.parent)
  (tmp_path / "france_classes.tif").write_bytes(b"")      # a national COG stand-in
  path = stac.national_collection(maps, tmp_path, national.PRODUCTS)
  c = pystac.Collection.from_file(str(path))
  assert c.id == "jaxcrop-national" and set(c.assets) == {"classes"}
  items = list(c.get_items())
  assert [i.id for i in items] == ["testz_0"]
  assert items[0].assets["classes"].get_absolute_href() == str(folder / "classes.tif")
  assert c.extent.spatial.bboxes[0] == pytest.approx(items[0].bbox)
  assert stac.national_collection([(zone.zone, tmp_path)], tmp_path, ()) is None  # no Item


def test_parcels_geoparquet_1_1_with_fiboa_names_beside_the_geopackage(mapped):
  import geopandas as gpd
  import pyarrow.parquet as pq
  zone, folder = mapped
  got = gpd.read_parquet(folder / "parcels.parquet")
  gpkg = gpd.read_file(folder / "parcels.gpkg")
  meta = json.loads(pq.read_schema(folder / "parcels.parquet").metadata[b"geo"])
  assert meta["version"] == "1.1.0" and "covering" in meta["columns"]["geometry"]
  assert list(got.columns[:8]) == ["id", "area", "determination_datetime", "pred_class",
                                   "pred_name", "pred_tier2_name", "pred_tier1_name",
                                   "confidence"]
  assert got.crs == zone.zone.crs and len(got) == len(gpkg)
  assert got["id"].tolist() == gpkg["ID_PARCEL"].astype(str).tolist()
  np.testing.assert_allclose(got["area"], gpkg.geometry.area / 1e4)
  assert (got["determination_datetime"].dt.strftime("%Y-%m") == zone.months[-1]).all()
  # the hand-made prediction: class 3 everywhere, confidence 80
  voted = got["pred_class"] != 255
  assert voted.any() and (got.loc[voted, "pred_class"] == 3).all()
  assert (got.loc[voted, "pred_name"] == NOM.tier3[3]).all()
  assert (got.loc[voted, "pred_tier2_name"] == NOM.tier2_names[NOM.tier2_of()[3]]).all()
  assert (got.loc[voted, "pred_tier1_name"] == NOM.tier1_names[NOM.tier1_of()[3]]).all()
  assert (got.loc[voted, "confidence"] == 80).all()
  assert (got.loc[~voted, "pred_name"] == "").all()
  assert "class_id" in got                 # the RPG's class stays beside the prediction
