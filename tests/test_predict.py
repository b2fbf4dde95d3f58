"""Zone prediction: tiling, blending, nodata, outputs on the zone grid, parcels, errors."""
import json
import sys
import types

import numpy as np
import pytest
import rasterio

from jaxcrop import predict
from jaxcrop.maps import compatibility, geotiff, tiling
from jaxcrop.maps import parcels as maps_parcels
from jaxcrop.input_pipeline import normalize
from cropcontracts import atomic, nomenclature
from cropcontracts.errors import UserError
from prep.demo import zonefolders as zf
from tests import fixtures as pt

NOM = nomenclature.load()
TILE16 = tiling.MapSettings(tile=16, overlap=4)


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
  return zf.write_zone(tmp_path_factory.mktemp("z") / "testz_0")


@pytest.fixture(scope="module")
def pixel_model():
  return pt.init(pt.PixelModel())


def _direct(apply_fn, variables, zone, meta, rows, cols):
  """Softmax of the model on one window of the zone, no tiling: [h, w, K]."""
  import jax
  x = normalize(zone.read_image()[:, rows, cols], meta.mean, meta.std)[None]
  return np.asarray(jax.nn.softmax(apply_fn(variables, x), -1))[0]


def test_tile_starts_cover_the_zone_with_one_tile_shape():
  assert tiling.tile_starts(52, 16, 4).tolist() == [0, 12, 24, 36]   # 36 + 16 = 52
  assert tiling.tile_starts(40, 16, 4).tolist() == [0, 12, 24]
  assert tiling.tile_starts(41, 16, 4).tolist() == [0, 8, 17, 25]    # spread, overlap ≥ 4
  assert tiling.tile_starts(1000, 256, 32).tolist() == [0, 186, 372, 558, 744]
  assert tiling.tile_starts(1000, 512, 24).tolist() == [0, 488]
  assert tiling.tile_starts(10, 16, 4).tolist() == [0]               # caller pads to 16


def test_map_settings_that_cannot_work_are_one_line_errors():
  with pytest.raises(UserError, match=r"^--overlap 16 must be in \[0, --tile 16\)$"):
    tiling.MapSettings(tile=16, overlap=16)
  with pytest.raises(UserError, match=r"^--overlap -1 must be in \[0, --tile 16\)$"):
    tiling.MapSettings(tile=16, overlap=-1)
  with pytest.raises(UserError, match=r"^--tile 0 must be a positive number of pixels$"):
    tiling.MapSettings(tile=0)
  with pytest.raises(UserError, match=r"^--batch 0 must be at least 1 tile$"):
    tiling.MapSettings(batch=0)
  assert tiling.MapSettings() == tiling.MapSettings(512, 24, 1, False, False, False)


def test_blend_window_is_positive_smooth_and_symmetric():
  w = tiling.blend_window(16, 4)
  assert w.shape == (16, 16) and w.min() > 0 and w.max() == 1
  np.testing.assert_allclose(w, w[::-1, ::-1])
  np.testing.assert_allclose(w, w.T)
  assert (w[4:12, 4:12] == 1).all()
  assert np.all(np.diff(w[8, :5]) > 0)          # ramps up over the overlap
  assert (tiling.blend_window(16, 0) == 1).all()


def test_nodata_mask_where_every_month_and_band_is_0():
  image = np.zeros((3, 2, 2, 4), np.uint16)
  image[2, 0, 1, 3] = 1                         # one band of one month observed
  image[:, 1, 0] = 7
  expected = ~np.any(image != 0, axis=(0, 3))   # the definition
  np.testing.assert_array_equal(tiling.nodata_mask(image), expected)
  assert tiling.nodata_mask(image).tolist() == [[True, False], [False, True]]


def test_tile_batches_are_the_tiles_as_read_the_tile_function_normalizes(zone):
  tiles = tiling.cut_tiles(tiling.read_imagery(zone, TILE16), 16, 4)
  (chunk, x, inputs), *_ = tiling.tile_batches(tiles, 16, 2)
  r, c = chunk[1]
  assert x.dtype == np.uint16 and inputs == {}
  np.testing.assert_array_equal(x[1], tiles.image[:, r:r + 16, c:c + 16])
  meta, window = pt.make_meta(), tiling.blend_window(16, 4)
  fn = tiling.make_tile_fn(lambda v, x: x[:, 0], window, meta)   # month 0's bands as logits
  want = normalize(x, meta.mean, meta.std)[:, 0]
  want = np.exp(want) / np.exp(want).sum(-1, keepdims=True) * window[None, :, :, None]
  np.testing.assert_allclose(fn({}, x), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tile, overlap", [(16, 4), (24, 5), (64, 8)])  # 64: pads the zone
def test_pixelwise_model_map_equals_the_model_on_the_whole_zone(zone, pixel_model, tile,
                                                                overlap):
  apply_fn, variables = pixel_model
  meta = pt.make_meta()
  pred = tiling.predict_zone(apply_fn, variables, zone, meta,
                             tiling.MapSettings(tile=tile, overlap=overlap, batch=3, probs=True))
  p = _direct(apply_fn, variables, zone, meta, slice(None), slice(None))
  ok = pred.classes != 255
  assert pred.classes.shape == (zf.H, zf.W) and pred.classes.dtype == np.uint8
  np.testing.assert_array_equal(pred.classes[ok], p.argmax(-1)[ok])
  np.testing.assert_array_equal(pred.confidence[ok], np.rint(100 * p.max(-1))[ok])
  assert np.abs(pred.probabilities[:, ok].astype(int)
                - np.rint(100 * p).transpose(2, 0, 1)[:, ok]).max() <= 1


def test_no_seams_for_a_model_with_spatial_context(zone):
  """Blended map = the model run once on a window, away from the window's edge."""
  apply_fn, variables = pt.init(pt.ConvModel())
  meta = pt.make_meta()
  pred = tiling.predict_zone(apply_fn, variables, zone, meta,
                             tiling.MapSettings(tile=16, overlap=4, batch=4, probs=True))
  rows, cols = slice(10, 36), slice(8, 48)          # spans several tile seams
  p = _direct(apply_fn, variables, zone, meta, rows, cols)[1:-1, 1:-1]
  got = pred.probabilities[:, 11:35, 9:47].transpose(1, 2, 0).astype(float)
  ok = pred.classes[11:35, 9:47] != 255
  diff = np.abs(got - 100 * p)[ok]
  assert diff.max() <= 5 and diff.mean() < 0.5
  assert (pred.classes[11:35, 9:47][ok] == p.argmax(-1)[ok]).mean() > 0.97


def test_nodata_hole_is_nodata_in_every_output(zone, pixel_model):
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(),
                             tiling.MapSettings(tile=16, overlap=4, probs=True))
  hole = np.zeros((zf.H, zf.W), bool)
  hole[zf.HOLE] = True
  assert (pred.classes[hole] == 255).all() and (pred.confidence[hole] == 255).all()
  assert (pred.probabilities[:, hole] == 255).all()
  assert (pred.classes[~hole] < NOM.num_classes).all()
  assert (pred.confidence[~hole] <= 100).all()


@pytest.mark.parametrize("meta_kwargs, message", [
    (dict(t=2), "zone testz_0 ({path}) has 3 months, the checkpoint was trained on 2 "
                "(2023-01..2023-02); composite the zone with the same months"),
    (dict(bands=("B2", "B3", "B4", "B11")),
     "zone testz_0 ({path}) has bands ['B2', 'B3', 'B4', 'B8'], the checkpoint was "
     "trained on ['B2', 'B3', 'B4', 'B11']; composite the zone with the same bands"),
    (dict(version="v1"),    # the zone is labelled with the current nomenclature
     f"zone testz_0 ({{path}}) is labelled with nomenclature {nomenclature.VERSION}, the "
     f"checkpoint predicts nomenclature v1; relabel the zone (`python -m prep labels`) or "
     f"use a checkpoint trained on {nomenclature.VERSION}"),
])
def test_zone_checkpoint_mismatch_errors(zone, pixel_model, meta_kwargs, message):
  with pytest.raises(UserError) as e:
    tiling.predict_zone(*pixel_model, zone, pt.make_meta(**meta_kwargs), TILE16)
  assert str(e.value) == message.format(path=zone.path)


def test_a_zone_labelled_with_v2_is_refused_with_the_upgrade_command(tmp_path, pixel_model):
  old = zf.write_zone(tmp_path / "testz_0", version="v2")
  with pytest.raises(UserError) as e:
    tiling.predict_zone(*pixel_model, old, pt.make_meta(), TILE16)
  assert str(e.value) == (
      f"zone testz_0 ({old.path}) is labelled with nomenclature v2, the checkpoint predicts "
      f"nomenclature v3; relabel the zone (`python -m prep labels`) or use a checkpoint "
      f"trained on v2")


def test_outputs_on_the_zone_grid_with_colors_names_and_cog_layout(zone, pixel_model,
                                                                   tmp_path):
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(),
                             tiling.MapSettings(tile=16, overlap=4, probs=True))
  folder = geotiff.write_outputs(zone, pred, NOM, tmp_path)
  assert folder == tmp_path / "testz_0"
  assert folder.stat().st_mode & 0o777 == 0o777 & ~atomic.umask()
  assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "testz_0"]   # no temp left
  assert sorted(p.name for p in folder.iterdir()) == [
      "classes.qml", "classes.tif", "confidence.tif", "item.json", "map.json",
      "parcels.gpkg", "parcels.parquet", "probabilities.tif", "validity.tif"]
  assert json.loads((folder / "map.json").read_text())["files"] == [
      "classes.qml", "classes.tif", "confidence.tif", "item.json", "parcels.gpkg",
      "parcels.parquet", "probabilities.tif", "validity.tif"]
  with rasterio.open(folder / "classes.tif") as src:
    assert src.crs.to_epsg() == 32631 and src.transform == zone.zone.transform
    assert (src.dtypes[0], src.nodata, src.shape) == ("uint8", 255, (zf.H, zf.W))
    np.testing.assert_array_equal(src.read(1), pred.classes)
    cmap = src.colormap(1)
    assert cmap[7] == tuple(NOM.rgb()[7]) + (255,)
    assert json.loads(src.tags()["CLASS_NAMES"]) == list(NOM.tier3)
    assert src.tags()["CLASS_7"] == NOM.tier3[7]
    assert src.descriptions == ("tier-3 class",)
    assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
  with rasterio.open(folder / "confidence.tif") as src:
    np.testing.assert_array_equal(src.read(1), pred.confidence)
  with rasterio.open(folder / "probabilities.tif") as src:
    assert src.count == NOM.num_classes and src.descriptions == tuple(NOM.tier3)
    assert src.tags()["PROBABILITY_SCALE"] == "100" and src.nodata == 255
    np.testing.assert_array_equal(src.read(), pred.probabilities)


def test_large_zone_outputs_have_overviews(tmp_path, pixel_model):
  z = zf.write_zone(tmp_path / "big_0", zf.synthetic_zone("big_0", height=600, width=560),
                    months=zf.months(1), labels=False)
  pred = tiling.Prediction(np.full((600, 560), 3, np.uint8), np.full((600, 560), 90, np.uint8))
  folder = geotiff.write_outputs(z, pred, NOM, tmp_path / "out")
  assert sorted(p.name for p in folder.iterdir()) == ["classes.qml", "classes.tif",
                                                       "confidence.tif", "item.json",
                                                       "map.json", "validity.tif"]
  with rasterio.open(folder / "classes.tif") as src:
    assert src.overviews(1) == [2, 4]
    assert src.block_shapes[0] == (256, 256)


def test_existing_output_folder_is_refused_without_overwrite(zone, pixel_model, tmp_path):
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(), TILE16)
  geotiff.write_outputs(zone, pred, NOM, tmp_path)
  with pytest.raises(UserError, match=(
      r"testz_0: output folder already exists; pass --overwrite to replace it")):
    geotiff.write_outputs(zone, pred, NOM, tmp_path)
  pred.classes[:] = 2
  geotiff.write_outputs(zone, pred, NOM, tmp_path, overwrite=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "testz_0"]   # no .old/.partial
  with rasterio.open(tmp_path / "testz_0" / "classes.tif") as src:
    assert (src.read(1) == 2).all()


def test_map_folder_swap_keeps_what_another_writer_put_there(tmp_path):
  """cropcontracts.atomic.atomic_folder, write_outputs' swap: a folder that appears
  while ours is written is not replaced (without overwrite); a failed block
  leaves the old folder as it was and no temporary folder."""
  with pytest.raises(FileExistsError):
    with atomic.atomic_folder(tmp_path / "z_0") as tmp:
      (tmp / "a.txt").write_text("ours")
      (tmp_path / "z_0").mkdir()                   # another writer got there first
  assert [p.name for p in tmp_path.iterdir()] == ["z_0"] and not any(
      (tmp_path / "z_0").iterdir())
  with pytest.raises(RuntimeError):
    with atomic.atomic_folder(tmp_path / "z_0", overwrite=True) as tmp:
      (tmp / "a.txt").write_text("ours")
      raise RuntimeError("killed")
  assert [p.name for p in tmp_path.iterdir()] == ["z_0"]
  with atomic.atomic_folder(tmp_path / "z_0", overwrite=True) as tmp:
    (tmp / "a.txt").write_text("ours")
  assert [p.name for p in tmp_path.iterdir()] == ["z_0"]
  assert (tmp_path / "z_0" / "a.txt").read_text() == "ours"


def test_parcel_votes_by_hand():
  parcels = np.array([[1, 1, 1, 2], [1, 2, 2, 0], [3, 3, 0, 0]], np.uint32)
  classes = np.array([[4, 4, 0, 1], [255, 1, 2, 4], [255, 255, 0, 0]], np.uint8)
  conf = np.array([[90, 70, 50, 60], [10, 80, 40, 0], [0, 0, 0, 0]], np.uint8)
  v = maps_parcels.parcel_votes(parcels, classes, conf, num_classes=5, num_parcels=4)
  assert v["pred_class"].tolist() == [4, 1, 255, 255]      # parcel 3: only nodata
  np.testing.assert_allclose(v["pred_share"][:2], [2 / 3, 2 / 3])
  np.testing.assert_allclose(v["mean_confidence"][:2], [70, 60])
  assert v["n_pred_pixels"].tolist() == [3, 3, 0, 0]
  assert np.isnan(v["pred_share"][2:]).all()


def test_parcels_gpkg_majority_and_the_zone_folders_geometry(zone, pixel_model, tmp_path):
  import geopandas as gpd
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(), TILE16)
  folder = geotiff.write_outputs(zone, pred, NOM, tmp_path)
  gdf = gpd.read_file(folder / "parcels.gpkg")
  parcels, table = zone.read_parcels(), zone.parcel_table()
  assert len(gdf) == len(table) and gdf.crs.to_epsg() == 32631
  for i in (1, 2, 7, len(table)):                # hand majority of a few parcels
    c = pred.classes[(parcels == i) & (pred.classes != 255)]
    row = gdf[gdf.parcel_index == i].iloc[0]
    if c.size == 0:
      assert row.pred_class == 255
      continue
    counts = np.bincount(c, minlength=NOM.num_classes)
    assert row.pred_class == counts.argmax() and row.n_pred_pixels == c.size
    assert row.pred_share == pytest.approx(counts.max() / c.size)
    assert row.pred_name == NOM.tier3[counts.argmax()]
    assert row.class_id == table.class_id[i - 1] and row.ID_PARCEL == table.ID_PARCEL[i - 1]
    assert row.geometry.area == pytest.approx((parcels == i).sum() * 100.0)
  assert gdf.geometry.geom_equals_exact(zone.read_parcel_geometries().geometry, 0).all()


def _format_1_twin(zone, folder):
  """A copy of the zone folder as jaxcrop-zone/1 wrote it (no parcels.gpkg)."""
  import shutil
  from cropcontracts.zonefolder import open_zone
  shutil.copytree(zone.path, folder)
  (folder / "parcels.gpkg").unlink()
  meta = json.loads((folder / "meta.json").read_text())
  (folder / "meta.json").write_text(json.dumps({**meta, "format": "jaxcrop-zone/1"}))
  return open_zone(folder)


def test_a_format_1_folder_is_refused_a_format_2_one_gives_its_geometries(zone, pixel_model,
                                                                          tmp_path):
  import geopandas as gpd
  old = _format_1_twin(zone, tmp_path / "old" / zone.zone_id)
  pred = tiling.predict_zone(*pixel_model, old, pt.make_meta(), TILE16)
  with pytest.raises(UserError, match=(
      r"zone testz_0 \(.*old/testz_0\) is a jaxcrop-zone/1 folder without parcels.gpkg; "
      r"rerun `python -m prep labels` for it")):
    geotiff.write_outputs(old, pred, NOM, tmp_path / "out2")
  folder = geotiff.write_outputs(zone, pred, NOM, tmp_path / "out3")
  assert gpd.read_file(folder / "parcels.gpkg").geometry.area.max() == pytest.approx(1e4)


def test_cli_refuses_a_format_1_folder_before_loading(zone, tmp_path, capsys):
  old = _format_1_twin(zone, tmp_path / "old" / zone.zone_id)
  rc = predict.main(["--workdir", str(tmp_path / "nowhere"), "--zone", str(old.path),
                     "--out", str(tmp_path / "maps")])
  assert rc == 2
  assert capsys.readouterr().err == (
      f"error: zone testz_0 ({old.path}) is a jaxcrop-zone/1 folder without parcels.gpkg; "
      f"rerun `python -m prep labels` for it (it writes the parcel geometries into the "
      f"zone folder)\n")


def test_cli_refuses_existing_output_before_loading_a_checkpoint(zone, tmp_path, capsys):
  (tmp_path / "testz_0").mkdir()
  rc = predict.main(["--workdir", str(tmp_path / "nowhere"), "--zone", str(zone.path),
                     "--out", str(tmp_path)])
  assert rc == 2
  err = capsys.readouterr().err
  assert err == (f"error: {tmp_path / 'testz_0'}: output folder already exists; pass "
                 f"--overwrite to replace it or choose another --out\n")


def test_cli_writes_maps_and_scores(zone, pixel_model, tmp_path, capsys, monkeypatch):
  apply_fn, variables = pixel_model
  model = pt.PixelModel()
  trained = types.SimpleNamespace(config=types.SimpleNamespace(model={}, data={}), model=model,
                                  variables=variables, meta=pt.make_meta())
  fake = types.ModuleType("jaxcrop.checkpoint")
  fake.load_trained = lambda workdir, which="best": trained
  monkeypatch.setitem(sys.modules, "jaxcrop.checkpoint", fake)
  rc = predict.main(["--workdir", "W", "--zone", str(zone.path.parent), "--out",
                     str(tmp_path), "--tile", "16", "--overlap", "4", "--probs"])
  assert rc == 0
  out = capsys.readouterr().out
  assert (f"testz_0: wrote classes.qml, classes.tif, confidence.tif, item.json, map.json, "
          f"parcels.gpkg, parcels.parquet, probabilities.tif, validity.tif in "
          f"{tmp_path / 'testz_0'}") in out
  assert "testz_0: pixel accuracy " in out and "macro-F1" in out


_FRESH_PROCESS = r"""
import importlib, pkgutil, sys
import numpy as np, jax
import jaxcrop.maps, jaxcrop.models
from jaxcrop import mosaic, predict
for m in pkgutil.iter_modules(jaxcrop.maps.__path__):
  importlib.import_module("jaxcrop.maps." + m.name)
workdir, zone, out, probs = sys.argv[1:]
assert jax.local_device_count() == 2, jax.local_devices()
assert predict.main(["--workdir", workdir, "--zone", zone, "--out", out, "--tile", "16",
                     "--overlap", "4", "--batch", "3", "--tiers"]) == 0
from cropcontracts.zonefolder import open_zone
from jaxcrop.maps import tiling
from tests import fixtures as pt
pred = tiling.predict_zone(*pt.init(pt.ConvModel()), open_zone(zone), pt.make_meta(),
                           tiling.MapSettings(tile=16, overlap=4, batch=3, probs=True))
np.save(probs, pred.probabilities)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")
               or m == "jaxcrop.train" or m.startswith("jaxcrop.train."))
assert not heavy, f"the predict path imported {heavy}"
"""


def test_predict_path_in_a_fresh_process_two_devices_no_tensorflow_no_trainer(zone, tmp_path):
  """One child process (the process boundary is what is tested) with 2 forced CPU
  devices: the command maps a zone from a real checkpoint with batch 3 → 4 (a
  multiple of 2 devices, tiles split over the `data` axis) and predict_zone gives
  the one-device map; neither the model, the maps nor the command imported
  TensorFlow or the trainer (`sys.modules`)."""
  import os
  import subprocess
  pt.write_workdir(tmp_path / "W")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(tmp_path / "W"),
                        str(zone.path), str(tmp_path / "maps"), str(tmp_path / "p.npy")],
                       env=env, cwd=os.path.dirname(os.path.dirname(__file__)),
                       capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-2000:]
  assert {"classes.tif", "classes_tier1.tif", "classes_tier2.tif"} <= {
      p.name for p in (tmp_path / "maps" / "testz_0").iterdir()}
  pred = tiling.predict_zone(*pt.init(pt.ConvModel()), zone, pt.make_meta(),
                             tiling.MapSettings(tile=16, overlap=4, batch=3, probs=True))
  got = np.load(tmp_path / "p.npy")
  assert np.abs(got.astype(int) - pred.probabilities).max() <= 1


def test_tile_that_the_model_cannot_take_is_a_one_line_error():
  from configs import hybrid
  from jaxcrop.models import build_model
  cfg = hybrid.get_config("tiny")
  model = build_model(cfg.model, NOM.num_classes)
  import jax
  variables = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), np.zeros((1, zf.T, 16, 16, 4), np.float32)))
  apply_fn = lambda v, x: model.apply(v, x, train=False)
  compatibility.check_tile(apply_fn, variables, pt.make_meta(), TILE16)
  with pytest.raises(UserError, match=r"^--tile 15 does not fit the model: "
                                      r"patch sides 15x15 must be divisible by 2"):
    compatibility.check_tile(apply_fn, variables, pt.make_meta(),
                             tiling.MapSettings(tile=15, overlap=4))





def test_cli_with_a_real_checkpoint_equals_predict_zone(zone, tmp_path, capsys):
  model, v, meta = pt.write_workdir(tmp_path / "W")
  rc = predict.main(["--workdir", str(tmp_path / "W"), "--zone", str(zone.path),
                     "--out", str(tmp_path / "maps"), "--tile", "16", "--overlap", "4",
                     "--checkpoint", "best"])             # no best yet → last
  assert rc == 0, capsys.readouterr().err
  apply_fn = lambda v_, x: model.apply(v_, x, train=False)
  want = tiling.predict_zone(apply_fn, v, zone, meta, TILE16)
  with rasterio.open(tmp_path / "maps" / "testz_0" / "classes.tif") as src:
    assert src.crs.to_epsg() == zone.zone.epsg and src.transform == zone.zone.transform
    got = src.read(1)
  np.testing.assert_array_equal(got, want.classes)


def test_classes_tif_equals_the_model_run_directly_on_a_tile(zone, tmp_path, capsys):
  """The hybrid model (U-Net context) from a real checkpoint, default tiling: one
  512 tile holds the whole 40 x 52 zone (padded), so inside it the map file is
  exactly the model's argmax on that padded tile, computed here without predict."""
  import jax
  model, v, meta = pt.write_workdir(tmp_path / "W")
  rc = predict.main(["--workdir", str(tmp_path / "W"), "--zone", str(zone.path),
                     "--out", str(tmp_path / "maps")])
  assert rc == 0, capsys.readouterr().err
  image = np.pad(zone.read_image(), ((0, 0), (0, 512 - zf.H), (0, 512 - zf.W), (0, 0)),
                 mode="symmetric")
  x = normalize(image, meta.mean, meta.std)[None]
  direct = np.asarray(jax.jit(lambda x: model.apply(v, x, train=False))(x))[0]
  direct = direct[:zf.H, :zf.W].argmax(-1)
  with rasterio.open(tmp_path / "maps" / "testz_0" / "classes.tif") as src:
    assert src.crs.to_epsg() == 32631 and src.transform == zone.zone.transform
    got = src.read(1)
  ok = got != 255
  assert ok.sum() == zf.H * zf.W - 40                     # only the nodata hole
  np.testing.assert_array_equal(got[ok], direct[ok])


def test_qgis_style_names_every_class_with_its_colour(zone, pixel_model, tmp_path):
  import xml.etree.ElementTree as ET
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(), TILE16)
  folder = geotiff.write_outputs(zone, pred, NOM, tmp_path)
  root = ET.parse(folder / "classes.qml").getroot()
  renderer = root.find("pipe/rasterrenderer")
  assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
  entries = renderer.findall("colorPalette/paletteEntry")
  assert [e.get("label") for e in entries] == list(NOM.tier3)
  assert [int(e.get("value")) for e in entries] == list(range(NOM.num_classes))
  r, g, b = NOM.rgb()[5]
  assert entries[5].get("color") == f"#{r:02x}{g:02x}{b:02x}"


def test_checkpoint_classes_must_match_the_nomenclature_table(tmp_path):
  meta = pt.make_meta(version=NOM.version)
  assert compatibility.checkpoint_nomenclature(meta, "W").tier3 == NOM.tier3
  meta.class_names = list(NOM.tier3[:5]) + ["rice"] + list(NOM.tier3[6:])
  with pytest.raises(UserError, match=(
      rf"^--workdir W: the checkpoint's classes differ from nomenclature {NOM.version} of this code "
      r"from class 5 on \('rice' vs 'maize'\); the table was edited")):
    compatibility.checkpoint_nomenclature(meta, "W")
  with pytest.raises(UserError, match=(
      r"^--workdir W: the checkpoint predicts nomenclature v7, which this code does not "
      r"have \(nomenclature v7: .*classes_v7.csv not found\)")):
    compatibility.checkpoint_nomenclature(pt.make_meta(version="v7"), "W")


def test_cli_missing_workdir_is_a_one_line_error(zone, tmp_path, capsys):
  rc = predict.main(["--workdir", str(tmp_path / "W"), "--zone", str(zone.path),
                     "--out", str(tmp_path / "maps")])
  assert rc == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: --workdir {tmp_path / 'W'}: {tmp_path / 'W'}/config.json "
                        f"not found: not a training workdir") and err.count("\n") == 1


@pytest.mark.parametrize("extra, expected", [
    (["--tile", "x"], "argument --tile: invalid int value: 'x'"),
    (["--checkpoint", "bets"], "argument --checkpoint: invalid choice: 'bets' (choose from "
                               "'best', 'last')"),
    (["--zones", "z.csv"], "--zones: unknown flag (did you mean --zone?)"),  # no --zones-csv
    (["--tiers", "2"], "unexpected argument(s) 2: every option is a --flag (see --help)"),
    (["--out"], "argument --out: expected one argument"),
])
def test_cli_argument_mistake_is_one_line(zone, extra, expected, tmp_path, capsys):
  rc, out, err = pt.run(predict.main, ["--workdir", tmp_path / "W", "--zone", zone.path,
                                       "--out", tmp_path / "maps", *extra], capsys)
  pt.assert_error(rc, err, expected)
  assert out == "" and list(tmp_path.iterdir()) == []


def test_cli_missing_argument_and_help(capsys):
  rc, _, err = pt.run(predict.main, [], capsys)
  pt.assert_error(rc, err, "the following arguments are required: --workdir, --zone, --out")
  rc, out, err = pt.run(predict.main, ["--tile", "x", "--help"], capsys)   # help wins
  assert rc == 0 and err == "" and out.startswith("usage: python -m jaxcrop.predict")
  assert "--zones-csv CSV" in out and "default: 512" in out

def test_zone_without_labels_gets_maps_but_no_parcels_or_scores(tmp_path, pixel_model):
  z = zf.write_zone(tmp_path / "nolab_0", zf.synthetic_zone("nolab_0"), labels=False)
  pred = tiling.predict_zone(*pixel_model, z, pt.make_meta(version="v9"),
                             TILE16)                   # no labels → no version check
  assert tiling.score(z, pred, NOM.tier3) is None
  folder = geotiff.write_outputs(z, pred, NOM, tmp_path / "out")
  assert sorted(p.name for p in folder.iterdir()) == ["classes.qml", "classes.tif",
                                                       "confidence.tif", "item.json",
                                                       "map.json", "validity.tif"]


def test_score_counts_labelled_predicted_pixels_only(zone, pixel_model):
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(), TILE16)
  s = tiling.score(zone, pred, NOM.tier3)
  labels = zone.read_labels()
  scored = (labels != 255) & (pred.classes != 255)
  assert s["num_pixels"] == scored.sum()
  assert s["overall_accuracy"] == pytest.approx((labels == pred.classes)[scored].mean())


def _read(path):
  """(band 1, tags, colour table or None) of a GeoTIFF."""
  with rasterio.open(path) as src:
    try:
      cmap = src.colormap(1)
    except ValueError:                       # no colour table (confidence.tif)
      cmap = None
    return src.read(1), src.tags(), cmap


def test_tier_maps_of_a_flat_model_are_its_classes_mapped_up_the_tree(zone, pixel_model,
                                                                      tmp_path):
  from jaxcrop.hierarchy import to_tier
  meta = pt.make_meta()
  pred = tiling.predict_zone(*pixel_model, zone, meta,
                             tiling.MapSettings(tile=16, overlap=4, tiers=True))
  folder = geotiff.write_outputs(zone, pred, NOM, tmp_path)
  classes, _, _ = _read(folder / "classes.tif")
  for tier, table, names in ((2, NOM.tier2_of(), NOM.tier2_names),
                             (1, NOM.tier1_of(), NOM.tier1_names)):
    got, tags, cmap = _read(folder / f"classes_tier{tier}.tif")
    np.testing.assert_array_equal(got, to_tier(classes, table))
    assert (got[classes == 255] == 255).all() and (got[classes != 255] < len(names)).all()
    assert json.loads(tags["CLASS_NAMES"]) == list(names) and tags["TIER"] == str(tier)
    # a group's colour is its first tier-3 class's
    first = int(np.flatnonzero(table == 1)[0])
    assert cmap[1][:3] == tuple(int(v) for v in NOM.rgb()[first])
  import xml.etree.ElementTree as ET
  entries = ET.parse(folder / "classes_tier2.qml").getroot().findall(
      "pipe/rasterrenderer/colorPalette/paletteEntry")
  assert [e.get("label") for e in entries] == list(NOM.tier2_names)


def test_hierarchical_model_tier_maps_through_the_cli_are_its_consistent_decoding(
    zone, tmp_path, capsys):
  """One 512 tile holds the whole zone: the tier-2 / tier-1 files equal the tier
  heads' consistent decoding (heads.tier_outputs) of the model run directly, and
  no tier-3 pixel has a parent other than the tier-2 map's."""
  import jax
  from jaxcrop.hierarchy import Tree, to_tier
  from jaxcrop.models import heads
  model, v, meta = pt.write_workdir(tmp_path / "W", "tiny,hierarchical")
  rc = predict.main(["--workdir", str(tmp_path / "W"), "--zone", str(zone.path),
                     "--out", str(tmp_path / "maps"), "--tiers", "--probs"])
  assert rc == 0, capsys.readouterr().err
  out = tmp_path / "maps" / "testz_0"
  assert {"classes_tier1.tif", "classes_tier1.qml", "classes_tier2.tif",
          "classes_tier2.qml"} <= {p.name for p in out.iterdir()}
  image = np.pad(zone.read_image(), ((0, 0), (0, 512 - zf.H), (0, 512 - zf.W), (0, 0)),
                 mode="symmetric")
  scores = jax.jit(lambda x: model.apply(v, x, train=False))(
      normalize(image, meta.mean, meta.std)[None])
  decoded = {k: np.asarray(a)[0, :zf.H, :zf.W] for k, a in
             heads.tier_outputs(scores, Tree.of(meta)).items()}
  classes, _, _ = _read(out / "classes.tif")
  ok = classes != 255
  for tier in (1, 2):
    got, _, _ = _read(out / f"classes_tier{tier}.tif")
    np.testing.assert_array_equal(got[ok], decoded[f"tier{tier}"][ok])
  tier2, _, _ = _read(out / "classes_tier2.tif")
  assert (to_tier(classes, meta.tier2_of)[ok] == tier2[ok]).all()
  np.testing.assert_array_equal(classes[ok], decoded["tier3"][ok])
  # --probs: each tier's probabilities, a group's the sum of its classes' (percent)
  p3 = np.asarray(jax.nn.softmax(scores, -1))[0, :zf.H, :zf.W]
  for tier, parents, names in ((2, meta.tier2_of, NOM.tier2_names),
                               (1, meta.tier1_of, NOM.tier1_names)):
    with rasterio.open(out / f"probabilities_tier{tier}.tif") as src:
      assert src.descriptions == tuple(names) and src.tags()["PROBABILITY_SCALE"] == "100"
      got = src.read()
    want = np.stack([p3[..., np.asarray(parents) == g].sum(-1) for g in range(len(names))])
    np.testing.assert_allclose(got[:, ok], np.rint(100 * want[:, ok]), atol=1)
    assert (got[:, ~ok] == 255).all()


def test_probs_with_tiers_on_a_flat_model_is_a_one_line_error(zone, tmp_path, capsys):
  pt.write_workdir(tmp_path / "W", "tiny")
  rc = predict.main(["--workdir", str(tmp_path / "W"), "--zone", str(zone.path),
                     "--out", str(tmp_path / "maps"), "--tiers", "--probs"])
  pt.assert_error(rc, capsys.readouterr().err,
                  f"--probs with --tiers: the model of --workdir {tmp_path / 'W'} has no tier "
                  f"heads (model.head.kind=flat); pass --probs or --tiers alone, or train "
                  f"with configs/hybrid.py:hierarchical")
  assert not (tmp_path / "maps" / "testz_0").exists()


def test_valid_count_model_predicts_through_the_cli_with_the_zone_counts(tmp_path, capsys):
  """A model trained with model.valid_count='channel' is given the zone's
  valid_count.tif, tiled like the image (here random counts, one 512 tile)."""
  import jax
  from cropcontracts import zonefolder
  z = zf.write_zone(tmp_path / "z" / "testz_0")
  counts = np.random.default_rng(3).integers(0, 6, (zf.T, zf.H, zf.W)).astype(np.uint8)
  zonefolder.write_imagery(z.path, z.zone, z.read_image().transpose(0, 3, 1, 2), counts,
                           z.months)
  model, v, meta = pt.write_workdir(tmp_path / "W", valid_count="channel")
  rc = predict.main(["--workdir", str(tmp_path / "W"), "--zone", str(z.path),
                     "--out", str(tmp_path / "maps")])
  assert rc == 0, capsys.readouterr().err
  pad = lambda a, *rest: np.pad(a, ((0, 0), (0, 512 - zf.H), (0, 512 - zf.W)) + rest,
                                mode="symmetric")
  x = normalize(pad(z.read_image(), (0, 0)), meta.mean, meta.std)[None]
  run = jax.jit(lambda x, c: model.apply(v, x, train=False, valid_count=c))
  direct = np.asarray(run(x, pad(counts)[None].astype(np.float32)))[0, :zf.H, :zf.W]
  got, _, _ = _read(tmp_path / "maps" / "testz_0" / "confidence.tif")
  ok = got != 255
  np.testing.assert_array_equal(
      got[ok], np.rint(100 * np.asarray(jax.nn.softmax(direct, -1)).max(-1))[ok])
  without = np.asarray(run(x, np.zeros((1, zf.T, 512, 512), np.float32)))[0, :zf.H, :zf.W]
  assert not np.allclose(without, direct)          # the counts reach the model


# --- a model of nomenclature v3: the background (non_agricultural) on the zone grid

V3 = nomenclature.load("v3")


def _background_model():
  """A per-pixel stand-in of nomenclature v3 (24 classes): logit 4·x (first month,
  first band, normalized) for the background, 1 for maize, 0 for the rest: the
  background where that band is bright, maize elsewhere."""
  import jax.numpy as jnp
  bg = V3.background_id

  def apply_fn(variables, x):
    logits = jnp.zeros(x.shape[:1] + x.shape[2:4] + (V3.num_classes,), jnp.float32)
    return logits.at[..., bg].set(4 * x[:, 0, :, :, 0]).at[..., V3.class_id("maize")].set(1.0)
  meta = pt.make_meta(version="v3", classes=list(zip(V3.tier3, V3.tier2, V3.tier1, V3.colors)))
  return apply_fn, meta


def test_background_map_on_the_zone_grid_with_its_colour_legend_and_confidence(zone, tmp_path):
  import xml.etree.ElementTree as ET
  apply_fn, meta = _background_model()
  settings = tiling.MapSettings(tile=16, overlap=4, tiers=True)
  pred = tiling.ZoneMapper(apply_fn, {}, meta, settings)(tiling.read_imagery(zone, settings))
  # the map is the model run on the whole zone; confidence is the background's
  # probability where it wins
  a = 4 * normalize(zone.read_image(), meta.mean, meta.std)[0, :, :, 0]
  p_bg = np.exp(a) / (np.exp(a) + np.e + 22)
  p_maize = np.e / (np.exp(a) + np.e + 22)
  ok = (pred.classes != 255) & (np.abs(a - 1) > 1e-3)
  want = np.where(a > 1, V3.background_id, V3.class_id("maize"))
  np.testing.assert_array_equal(pred.classes[ok], want[ok])
  assert 0 < (pred.classes == V3.background_id).mean() < 1
  conf = np.rint(100 * np.maximum(p_bg, p_maize))
  assert np.abs(pred.confidence[ok].astype(int) - conf[ok]).max() <= 1
  folder = geotiff.write_outputs(zone, pred, V3, tmp_path)
  with rasterio.open(folder / "classes.tif") as src:
    assert src.transform == zone.zone.transform and src.crs == zone.zone.crs
    np.testing.assert_array_equal(src.read(1), pred.classes)
    assert src.colormap(1)[23] == (200, 200, 200, 255)               # #c8c8c8, neutral
    assert src.tags()["CLASS_23"] == "non_agricultural" and src.tags()["NOMENCLATURE"] == "v3"
  entries = ET.parse(folder / "classes.qml").getroot().findall(
      "pipe/rasterrenderer/colorPalette/paletteEntry")
  assert (entries[23].get("value"), entries[23].get("label"), entries[23].get("color")) == \
      ("23", "non_agricultural", "#c8c8c8")
  for tier in (1, 2):                       # the background is its own group and family
    got, tags, cmap = _read(folder / f"classes_tier{tier}.tif")
    last = len(json.loads(tags["CLASS_NAMES"])) - 1
    assert json.loads(tags["CLASS_NAMES"])[last] == "non_agricultural"
    assert cmap[last] == (200, 200, 200, 255)
    np.testing.assert_array_equal(got == last, pred.classes == V3.background_id)


def test_a_parcel_is_the_background_only_without_a_crop_vote(zone, tmp_path):
  import geopandas as gpd
  parcels = zone.read_parcels()
  classes = np.full(parcels.shape, V3.class_id("maize"), np.uint8)
  classes[parcels == 1] = V3.background_id                 # no crop vote
  classes[parcels == 2] = V3.background_id
  first = np.argwhere(parcels == 2)[0]
  classes[tuple(first)] = V3.class_id("rapeseed")          # one crop vote among 99
  pred = tiling.Prediction(classes, np.full(classes.shape, 80, np.uint8))
  gdf = gpd.read_file(geotiff.write_outputs(zone, pred, V3, tmp_path) / "parcels.gpkg")
  one, two, three = (gdf[gdf.parcel_index == i].iloc[0] for i in (1, 2, 3))
  assert (one.pred_class, one.pred_name, one.pred_share) == (23, "non_agricultural", 1.0)
  n = int((parcels == 2).sum())
  assert (two.pred_class, two.pred_name) == (V3.class_id("rapeseed"), "rapeseed")
  assert two.pred_share == pytest.approx(1 / n)             # the winner's share of all pixels
  assert (three.pred_class, three.pred_share) == (V3.class_id("maize"), 1.0)
  v = maps_parcels.parcel_votes(np.array([[1, 1, 2]], np.uint32), np.array([[4, 4, 4]], np.uint8),
                                np.zeros((1, 3), np.uint8), 5, background=4)
  assert v["pred_class"].tolist() == [4, 4]


def test_validity_bands_by_hand():
  from jaxcrop.maps import validity
  counts = np.array([[[0, 3]], [[2, 0]], [[0, 250]]], np.uint8)    # T=3, H=1, W=2
  out = validity.validity_bands(counts, np.array([[False, False]]))
  assert out.tolist() == [[[2, 253]], [[2, 1]]]
  out = validity.validity_bands(np.full((3, 1, 2), 200, np.uint8), np.array([[False, True]]))
  assert out.tolist() == [[[254, 255]], [[0, 255]]]                 # capped; nodata
  s = validity.summary(np.array([[[2, 4, 255]], [[0, 1, 255]]], np.uint8))
  assert s["pixels"] == 2 and s["share_with_gap_filled_month"] == 0.5
  assert s["clear_acquisitions"] == {"mean": 3.0, "min": 2, "p10": 2.2, "max": 4}


def test_validity_tif_beside_the_map_from_the_zone_counts(zone, pixel_model, tmp_path):
  from jaxcrop.maps import validity
  pred = tiling.predict_zone(*pixel_model, zone, pt.make_meta(), TILE16)
  folder = geotiff.write_outputs(zone, pred, NOM, tmp_path)
  counts = zone.read_valid_count()
  with rasterio.open(folder / "validity.tif") as src:
    assert src.descriptions == validity.BANDS and src.count == 2
    assert src.transform == zone.zone.transform and src.nodata == 255
    assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    band = src.read()
  ok = pred.classes != 255
  np.testing.assert_array_equal(band[0][ok], counts.sum(0)[ok])
  np.testing.assert_array_equal(band[1][ok], (counts == 0).sum(0)[ok])
  assert (band[:, ~ok] == 255).all() and (~ok).any()
  summary = json.loads((folder / "map.json").read_text())["validity"]
  assert summary["pixels"] == ok.sum()
  assert summary["clear_acquisitions"]["mean"] == pytest.approx(counts.sum(0)[ok].mean(),
                                                                abs=1e-3)
