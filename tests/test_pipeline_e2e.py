"""The whole pipeline, end to end, on the small synthetic demo (what `./launch.sh demo`
runs, shrunk to CI size): prep demo → TFDS build → train → evaluate → predict → plots.

Every stage runs its real code path on the previous stage's real output; each test
asserts one contract boundary. The small demo has 2 regions × 2 zones of 48 px, so
the dataset is built with a builder config of 2 folds (index-1 zones: one fold each)
and 16-px patches: test = the two index-0 zones, train = fold0, validation = fold1.
Synthetic data: the scores are checked for consistency, never for quality.
"""
import json
import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from jaxcrop.input_pipeline import import_tf  # noqa: E402

import_tf()
import jax  # noqa: E402
import rasterio  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from jaxcrop import (calibrate, checkpoint, evaluate, input_pipeline, metrics, plots, predict,  # noqa: E402
                     train, validation)
from cropcontracts import nomenclature, zonefolder  # noqa: E402
from tests import fixtures  # noqa: E402

PATCH = 16
STEPS = 4
# The session's demo dataset (conftest.py) has a builder config of its own (own folder
# under data_dir): 2 folds, because the small demo has only 2 non-test zones (the stock
# configs deal zones into 3 folds).
BUILDER = fixtures.DEMO_BUILDER["name"]
TEST_ZONES = ["demo-north_0", "demo-south_0"]
K = nomenclature.load().num_classes          # v3: 23 crop classes and the background


def labelled(zf) -> int:
  return int((zf.read_labels() != zonefolder.NO_LABEL).sum())


@pytest.fixture(scope="module")
def zones_root(small_demo):
  return small_demo / "zones"


@pytest.fixture(scope="module")
def zones(zones_root):
  return {z.zone_id: z for z in zonefolder.find_zones(zones_root, require_labels=True)}


@pytest.fixture(scope="module")
def builder(demo_dataset):
  return demo_dataset.builder


@pytest.fixture(scope="module")
def config(demo_dataset):
  return fixtures.demo_train_config(demo_dataset.data_dir)


@pytest.fixture(scope="module")
def trained(demo_workdir):
  return demo_workdir


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
  """evaluate on a copy of the trained workdir (it writes eval/ there)."""
  workdir = fixtures.private_copy(trained[0], tmp_path_factory.mktemp("evaluated"))
  result = evaluate.evaluate(workdir)
  return workdir, result


@pytest.fixture(scope="module")
def maps(trained, zones_root, tmp_path_factory):
  workdir, _ = trained
  out = tmp_path_factory.mktemp("maps")
  # Tiles of 32 with an overlap of 8 cover a 48-px zone with 2 × 2 blended tiles.
  rc = predict.main(["--workdir", str(workdir), "--zone",
                     *[str(zones_root / z) for z in TEST_ZONES], "--out", str(out),
                     "--tile", "32", "--overlap", "8", "--batch", "2"])
  assert rc == 0
  return out


def test_demo_small_gives_two_regions_of_two_labelled_zones(zones):
  assert sorted(zones) == ["demo-north_0", "demo-north_1", "demo-south_0", "demo-south_1"]
  for zid, zf in zones.items():
    assert zf.zone.shape == (48, 48) and zf.zone.index == int(zid[-1])
    assert len(zf.months) == 12 and list(zf.bands) == list(zonefolder.BANDS)
    assert zf.nomenclature == nomenclature.VERSION and labelled(zf) > 0


def test_dataset_splits_are_whole_zones_test_is_index_0(builder, zones):
  md = builder.info.metadata
  assert md["zones_per_split"] == {"test": TEST_ZONES, "fold0": ["demo-north_1"],
                                   "fold1": ["demo-south_1"]}
  assert set(builder.info.splits) == {"test", "fold0", "fold1"}
  # 48 px = 3 × 3 patches of 16 per zone; the test split covers both test zones whole.
  assert builder.info.splits["test"].num_examples == 2 * 9
  for split, members in md["zones_per_split"].items():
    seen = {ex["zone_id"].decode() for ex in
            tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))}
    assert seen == set(members), split


def test_test_patch_is_the_zone_window_on_the_zone_grid(builder, zones):
  ex = next(ex for ex in tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False))
            if ex["row"] == 16 and ex["col"] == 32)
  zf = zones[ex["zone_id"].decode()]
  win = ((16, 32), (32, 48))
  assert ex["image"].dtype == np.uint16 and ex["image"].shape == (12, PATCH, PATCH, 4)
  np.testing.assert_array_equal(ex["image"], zf.read_image(win))
  np.testing.assert_array_equal(ex["label"], zf.read_labels(win))
  np.testing.assert_array_equal(ex["parcels"], zf.read_parcels(win).astype(np.int32))
  assert ex["epsg"] == zf.zone.epsg
  x, y = zf.zone.x0 + 32 * 10.0, zf.zone.y0 - 16 * 10.0   # 10 m pixels, north up
  np.testing.assert_allclose(ex["transform"], [10.0, 0.0, x, 0.0, -10.0, y])


def test_normalization_comes_from_the_training_fold_only(config, zones):
  meta = input_pipeline.load_meta(config.data)

  def nonzero_mean(zfs):
    img = np.concatenate([z.read_image().reshape(12, -1, 4) for z in zfs], 1).astype(np.float64)
    return np.nanmean(np.where(img > 0, img, np.nan), axis=1)

  # fold0 = demo-north_1: the moments of exactly that zone's valid pixels.
  np.testing.assert_allclose(meta.mean, nonzero_mean([zones["demo-north_1"]]), rtol=1e-5)
  all_zones = nonzero_mean(zones.values())
  assert np.abs(meta.mean - all_zones).max() > 10   # reflectance × 10⁴: far from all zones'
  counts = np.bincount(zones["demo-north_1"].read_labels().ravel(), minlength=256)[:K]
  np.testing.assert_array_equal(meta.class_pixel_counts, counts)


def test_train_batches_are_normalized_float_with_int_labels(config):
  batch = next(input_pipeline.train_iterator(config.data, seed=0))
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (4, 12, PATCH, PATCH, 4)
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (4, PATCH, PATCH)
  assert set(np.unique(batch["label"])) <= set(range(K)) | {255}
  assert abs(float(batch["image"].mean())) < 2 and np.isfinite(batch["image"]).all()


def test_training_writes_workdir_and_checkpoints_restore_the_model(trained, config):
  workdir, result = trained
  assert result["step"] == STEPS
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "val_macro_f1" in l] == [2, 4]
  assert all(np.isfinite(l["train_loss"]) for l in lines if "train_loss" in l)
  meta = input_pipeline.DatasetMeta.from_json((workdir / "dataset_meta.json").read_text())
  np.testing.assert_array_equal(meta.mean, input_pipeline.load_meta(config.data).mean)
  assert meta.builder_config == BUILDER == "e2e" and meta.train_split == "fold0"

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))

  def val_confusion(t):
    step = jax.jit(train.make_eval_step(t.model, t.meta.num_classes))
    return validation.evaluate_split(step, t.variables, input_pipeline.eval_batches(
        t.config.data, "fold1"), mesh, t.meta.num_classes)

  # `last` = the in-memory model at the end: its validation confusion is `result["val"]`.
  last = checkpoint.load_trained(workdir, "last")
  assert last.step == STEPS
  cm = val_confusion(last)
  # (train adds the tier-2 and tier-1 macro-F1 of the same confusion)
  assert metrics.summarize(cm, list(meta.class_names)) == {
      k: v for k, v in result["val"].items() if not k.startswith("tier")}
  # `best` = the model saved at its validation: same confusion matrix as recorded then.
  best = checkpoint.load_trained(workdir, "best")
  recorded = json.loads((workdir / "val_best.json").read_text())
  assert best.step == recorded["step"]
  np.testing.assert_array_equal(val_confusion(best), recorded["confusion_matrix"])
  x = next(input_pipeline.eval_batches(config.data, "test"))["image"]
  logits = best.model.apply(best.variables, x, train=False)
  assert logits.shape == (4, PATCH, PATCH, K) and logits.dtype == np.float32


def test_evaluate_metrics_match_a_recomputed_confusion(evaluated, zones):
  workdir, result = evaluated
  saved = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert saved["split"] == "test" and saved["dataset"] == "e2e"
  assert set(saved["pixel"]) == set(saved["parcel"]) == {"model", "baseline"}
  # Full coverage of the test zones: every labelled pixel counted exactly once.
  test_px = {z: labelled(zones[z]) for z in TEST_ZONES}
  for name in ("model", "baseline"):
    cm = np.array(saved["confusion_matrix"][f"pixel_{name}"])
    assert cm.shape == (K, K) and cm.sum() == sum(test_px.values())
    s = metrics.summarize(cm, background=nomenclature.load().background_id)
    for k in evaluate.HEADLINE:
      assert 0.0 <= saved["pixel"][name][k] <= 1.0
      assert saved["pixel"][name][k] == pytest.approx(s[k])
    assert saved["pixel"][name]["num_pixels"] == sum(test_px.values())
    for region, zid in (("demo-north", TEST_ZONES[0]), ("demo-south", TEST_ZONES[1])):
      assert saved["per_region"][region][name]["num_pixels"] == test_px[zid]
  # Parcels: those with a labelled pixel in each test zone.
  n_parcels = sum(len(np.unique(zones[z].read_parcels()[
      (zones[z].read_labels() != 255) & (zones[z].read_parcels() > 0)])) for z in TEST_ZONES)
  assert saved["parcel"]["model"]["num_parcels"] == n_parcels
  # The model's confusion from its own predictions on the test batches, by the function
  # evaluate maps with (the jitted model on whole batches: an eager call on the kept
  # examples rounds differently and flips the argmax of a near tie or two).
  best = checkpoint.load_trained(workdir, "best")
  cfg = best.config
  logits = calibrate.logits_fn_of(best)
  label, pred = [], []
  for b in input_pipeline.eval_batches(cfg.data, "test"):
    keep = b["mask"] > 0
    label.append(b["label"][keep])
    pred.append(np.asarray(logits(b["image"], {})).argmax(-1)[keep])
  cm = metrics.confusion_matrix_np(np.concatenate(label), np.concatenate(pred), K)
  np.testing.assert_array_equal(cm, saved["confusion_matrix"]["pixel_model"])
  assert (workdir / "eval" / "metrics.md").is_file()


def test_predict_writes_maps_on_the_zone_grid_and_parcels(maps, zones):
  import geopandas as gpd
  for zid in TEST_ZONES:
    zf = zones[zid]
    with rasterio.open(maps / zid / "classes.tif") as src:
      assert src.crs == zf.zone.crs and src.transform == zf.zone.transform
      assert src.shape == (48, 48) and src.dtypes[0] == "uint8" and src.nodata == 255
      classes = src.read(1)
    assert set(np.unique(classes)) <= set(range(K)) | {255}
    with rasterio.open(maps / zid / "confidence.tif") as src:
      conf = src.read(1)
    assert (conf[classes != 255] <= 100).all()
    table = zf.parcel_table()
    gdf = gpd.read_file(maps / zid / "parcels.gpkg")
    assert (table["n_pixels"] > 0).all()
    assert sorted(gdf["ID_PARCEL"].astype(str)) == sorted(table["ID_PARCEL"])
    assert gdf.crs == zf.zone.crs and gdf.geometry.notna().all()
    # The zone folder's parcel geometries (prep's cleaned RPG polygons): the area is
    # the one prep measured.
    np.testing.assert_allclose(gdf.set_index("ID_PARCEL").loc[table["ID_PARCEL"]].area,
                               table["area_m2"], rtol=1e-3)
    # The parcel vote is the majority of the map's pixels in the parcel.
    parcels = zf.read_parcels()
    big = table.loc[table["n_pixels"].idxmax()]
    votes = np.bincount(classes[(parcels == big["parcel_index"]) & (classes != 255)],
                        minlength=K)
    row = gdf.set_index("ID_PARCEL").loc[big["ID_PARCEL"]]
    assert row["pred_class"] == votes.argmax()


def test_plots_all_writes_every_figure(maps, evaluated, zones_root, tmp_path):
  workdir, _ = evaluated
  out = tmp_path / "figures"
  assert plots.main(["all", "--zones", str(zones_root), "--maps", str(maps),
                     "--metrics", str(workdir / "eval" / "metrics.json"), "--out", str(out)]) == 0
  expected = {"f1_per_class.png", "confusion_pixel.png", "confusion_parcel.png",
              "class_distribution.png"}
  for tier in ("tier1", "tier2"):             # the metrics file holds every tier
    expected |= {f"f1_per_class_{tier}.png", f"confusion_pixel_{tier}.png",
                 f"confusion_parcel_{tier}.png"}
  for zid in TEST_ZONES:
    expected |= {f"{zid}_composites.gif", f"{zid}_prediction.png", f"{zid}_errors.png"}
  assert {p.name for p in out.iterdir()} == expected
  from PIL import Image
  for p in out.iterdir():
    with Image.open(p) as im:
      assert im.size[0] > 50 and im.size[1] > 50


def test_parcel_product_from_the_zone_folder_equals_the_rpg(zones, zones_root):
  """A jaxcrop-zone/2 folder's parcels.gpkg gives predict the RPG's polygons without the
  RPG: the parcel product's geometries equal the RPG file's (read here, reprojected to
  the zone CRS), except the one invalid RPG polygon, which parcels.gpkg holds repaired
  as labels did (the same polygon up to rounding, 1 µm)."""
  import shapely
  from jaxcrop.maps.parcels import parcel_product
  from jaxcrop.maps.tiling import Prediction
  from prep import labels as labels_lib
  from cropcontracts import nomenclature
  rpg = zones_root.parent / "raw" / "rpg_demo.gpkg"
  nom = nomenclature.load()
  for zid, zf in zones.items():
    labels = zf.read_labels()                     # any map will do: labels as the map
    pred = Prediction(labels, np.where(labels == 255, 255, 100).astype(np.uint8))
    a = parcel_product(zf, pred, nom)
    assert a.crs == zf.zone.crs and len(a) == len(zf.parcel_table())
    raw = labels_lib.read_rpg(rpg, zf.zone).drop_duplicates("ID_PARCEL").set_index("ID_PARCEL")
    b = raw.geometry.to_crs(zf.zone.crs).reindex(a["ID_PARCEL"].astype(str).values).values
    b = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in b]
    valid = shapely.is_valid(b)
    assert shapely.equals_exact(a.geometry.values[valid], np.array(b)[valid], 1e-6).all()
    fixed, _, _ = labels_lib.repair_geometries(np.array(b)[~valid])
    assert shapely.equals_exact(a.geometry.values[~valid], fixed, 1e-6).all()


# --- the hazards of real data the demo carries, at the boundary where they matter ----

@pytest.fixture(scope="module")
def ground():
  """The generator's static rasters of the small demo (seed 0): kinds of land, parcels."""
  from prep.demo import parcels, region, sensor
  spec = region.SMALL
  return sensor.make_ground(spec, parcels.make_parcels(spec, seed=0), seed=0)


@pytest.fixture(scope="module")
def truth(ground):
  """What the generator knows: each acquisition's offset-free DNs and SCL on the scene grid."""
  from prep.demo import region, sensor
  spec = region.SMALL
  front = sensor.december_front(spec, seed=0)
  obs = [sensor.observe(ground, d, np.random.default_rng([0, 100 + i]), front)[:2]
         for i, d in enumerate(spec.scene_dates)]
  return spec, obs


def _truth_composite(truth, zone):
  """Monthly median [12, H, W, 4] and valid count [12, H, W] of the offset-free truth
  over `zone`, one observation per acquisition (what the zone folder must hold)."""
  from prep import composite
  from prep.demo import region
  spec, obs = truth
  win = region.zone_window(spec, zone)
  comp = np.zeros((12, 4, *zone.shape), np.uint16)
  count = np.zeros((12, *zone.shape), np.uint8)
  for m in range(12):
    idx = [i for i, d in enumerate(spec.scene_dates) if d.month == m + 1]
    dn = np.stack([obs[i][0][:, win[0], win[1]] for i in idx])
    scl = np.stack([np.repeat(np.repeat(obs[i][1], 2, 0), 2, 1)[win] for i in idx])
    valid = np.isin(scl, [4, 5, 6, 7]) & (dn > 0).all(1)
    comp[m], count[m] = composite.median_composite(dn, valid)
  return comp.transpose(0, 2, 3, 1), count


def _tile_cover(zone_root, zf, tile_name):
  """bool [H, W]: zone pixels inside the footprint of `tile_name`'s first product."""
  from prep import scenes
  from prep.demo import region
  raw = zone_root.parent / "raw" / "scenes"
  scene = next(s for s in scenes.discover_scenes(raw) if f"T{tile_name}" in s.scene_id
               or f"_{tile_name}_" in s.scene_id)
  import rasterio
  with rasterio.open(scene.bands[0]) as src:
    cover = scenes.warp_band(src, zf.zone, np.uint16) > 0
  return cover, scene


def test_overlapping_tiles_give_one_observation_per_acquisition(zones, zones_root, truth):
  """Zone pixels that two UTM-31 tiles deliver: valid_count = valid acquisitions, not tiles,
  and the composite = the median of the offset-free truth, exactly (no value off by 1000)."""
  from prep.demo import region
  zf = zones["demo-north_1"]                     # the 30U tile does not reach it
  north, _ = _tile_cover(zones_root, zf, region.TILE_NORTH)
  south, _ = _tile_cover(zones_root, zf, region.TILE_SOUTH)
  both = north & south
  assert both.mean() > 0.3 and (north | south).all()            # the hazard is there
  meta = json.loads((zf.path / "meta.json").read_text())["imagery"]
  assert meta["scenes_per_month"][0] == 2 * meta["acquisitions_per_month"][0]
  assert meta["harmonization_offsets"] == [-1000]
  comp, count = _truth_composite(truth, zf.zone)
  np.testing.assert_array_equal(zf.read_valid_count(), count)
  assert zf.read_valid_count()[:, both].max() == count[:, both].max() > 1
  seen = count > 0
  np.testing.assert_array_equal(zf.read_image()[seen], comp[seen])


def test_offset_products_composite_to_the_offset_free_truth(zones, zones_root, truth):
  """Every zone, wherever the zone's own tiles see it: equal to the truth; the raw files
  hold truth + 1000, from SAFE and from STAC products both."""
  from prep import scenes
  from prep.demo import region
  found = scenes.discover_scenes(zones_root.parent / "raw" / "scenes")
  assert {s.scene_id.endswith("_L2A") for s in found} == {True, False}
  safe = [s for s in found if s.bands[0].suffix == ".jp2"]
  assert len(safe) == 9 and all(s.offsets == (-1000,) * 4 for s in safe)
  assert all(s.offsets == (-1000,) * 4 for s in found)
  for zid, zf in zones.items():
    west, _ = _tile_cover(zones_root, zf, region.TILE_WEST)
    comp, count = _truth_composite(truth, zf.zone)
    img = zf.read_image()
    own = (count > 0) & ~west[None]
    np.testing.assert_array_equal(img[own], comp[own])
    # The 30U tile's pixels, reprojected by nearest neighbour, are a neighbour's
    # value at most: mostly the truth, never the truth + 1000 throughout.
    diff = np.abs(img.astype(int) - comp.astype(int))[(count > 0) & west[None]]
    assert diff.size == 0 or (diff <= 50).mean() > 0.7, zid


def test_neighbour_utm_tile_fills_only_what_the_zone_tiles_miss(zones, zones_root, truth):
  """The western strip of demo-north_0 lies in no UTM-31 tile: the EPSG:32630 tile,
  reprojected, gives it values; where a 31 tile has a valid pixel, the 30 tile is unused."""
  from prep import scenes
  from prep.demo import region
  zf = zones["demo-north_0"]
  north, _ = _tile_cover(zones_root, zf, region.TILE_NORTH)
  west, w_scene = _tile_cover(zones_root, zf, region.TILE_WEST)
  only30 = west & ~north
  assert only30[:, :5].all() and not north[:, :5].any()          # the hazard is there
  assert not scenes.in_zone_crs(w_scene, zf.zone)
  vc = zf.read_valid_count()
  _, count = _truth_composite(truth, zf.zone)
  seen = count[:, only30] > 0
  assert (vc[:, only30] > 0)[seen].mean() > 0.9     # before the 30U tile: 0 everywhere
  assert abs(int(vc[:, only30].sum()) - int(count[:, only30].sum())) < 0.1 * count[:, only30].sum()
  # One acquisition through the local route: the mosaic takes the 30 tile only where
  # the zone's own tiles have no valid pixel.
  raw = zones_root.parent / "raw" / "scenes"
  spec, obs = truth
  win = region.zone_window(spec, zf.zone)
  clear = [np.isin(np.repeat(np.repeat(scl, 2, 0), 2, 1)[win], [4, 5]).mean() for _, scl in obs]
  date = spec.scene_dates[int(np.argmax(clear))]               # the clearest acquisition
  tiles = scenes.acquisitions([s for s in scenes.discover_scenes(raw) if s.date == date],
                              zf.zone)[0]
  assert [scenes.in_zone_crs(t, zf.zone) for t in tiles] == [True, True, False]
  reads = [scenes.read_scene(t, zf.zone) for t in tiles]
  bands, valid = scenes.read_acquisition(tiles, zf.zone)
  own_valid = reads[0][1] | reads[1][1]
  np.testing.assert_array_equal(bands[:, own_valid & reads[0][1]],
                                reads[0][0][:, own_valid & reads[0][1]])
  from30 = valid & ~own_valid
  assert from30[only30].mean() > 0.3
  np.testing.assert_array_equal(bands[:, from30], reads[2][0][:, from30])


def test_water_woods_and_village_reach_the_composites_as_drawn(zones, ground):
  """SCL 6 is valid: water is observed as often as the fields, and stays dark in NIR;
  deciduous woods lose their NIR in winter, evergreens keep it; villages stay the same."""
  from scipy import ndimage
  from prep.demo import landcover as lc, region
  kinds = {k: [] for k in (lc.FIELD, lc.WATER, lc.DECIDUOUS, lc.EVERGREEN, lc.VILLAGE)}
  count = {k: [] for k in (lc.FIELD, lc.WATER)}
  for zf in zones.values():
    kind = ground.kind[region.zone_window(region.SMALL, zf.zone)]
    nir, vc = zf.read_image()[..., 3].astype(float), zf.read_valid_count()
    for k in kinds:
      inner = ndimage.binary_erosion(kind == k)        # off the half-pixel blur
      kinds[k].append(nir[:, inner])
      if k in count:
        count[k].append(vc[:, inner].sum(0))
  nir = {k: np.median(np.concatenate(v, 1), 1) for k, v in kinds.items()}   # [12] DN
  field_count = np.concatenate(count[lc.FIELD]).mean()
  assert np.concatenate(count[lc.WATER]).mean() > 0.8 * field_count > 0
  assert nir[lc.WATER].max() < 400                      # 0.04 reflectance
  jan, jul = 0, 6
  assert nir[lc.DECIDUOUS][jul] > 1.5 * nir[lc.DECIDUOUS][jan]
  assert 0.85 < nir[lc.EVERGREEN][jul] / nir[lc.EVERGREEN][jan] < 1.15
  assert nir[lc.VILLAGE].max() < 1.15 * nir[lc.VILLAGE].min()


def test_2023_codes_map_to_their_v2_classes(zones):
  expected = {"JAC": "fallow", "MCS": "spring_cereal", "CAH": "other_winter_cereal",
              "CPL": "ignore", "PPH": "permanent_grassland"}
  seen = {}
  for zf in zones.values():
    meta = json.loads((zf.path / "meta.json").read_text())["labels"]
    assert meta["rpg_edition"] == 2023 and meta["nomenclature"] == nomenclature.VERSION
    t = zf.parcel_table()
    for code, name in zip(t.CODE_CULTU, t.class_name):
      seen.setdefault(code, set()).add(name)
  assert {c: seen.get(c) for c in expected} == {c: {n} for c, n in expected.items()}


def test_a_parcel_straddling_the_zone_edge_is_clipped_in_labels_whole_in_parcels(zones):
  import geopandas as gpd
  import shapely
  for zf in zones.values():
    gdf = gpd.read_file(zf.path / "parcels.gpkg").set_index("ID_PARCEL")
    box = shapely.box(*zf.zone.bounds)
    t = zf.parcel_table().set_index("ID_PARCEL")
    out = ~shapely.within(gdf.geometry.values, box)
    assert out.sum() >= 3                                  # the hazard is there
    straddling = t.loc[gdf.index[out]]
    pid = straddling["n_pixels"].idxmax()
    row = t.loc[pid]
    assert row["n_pixels"] > 0 and row["area_m2"] > row["n_pixels"] * 100 * 1.05
    assert gdf.loc[pid].geometry.area == pytest.approx(row["area_m2"], rel=1e-3)
    labels, parcels = zf.read_labels(), zf.read_parcels()
    inside = parcels == row["parcel_index"]
    assert inside.sum() == row["n_pixels"] and (labels[inside] == row["class_id"]).all() \
        or row["class_name"] == "ignore"
