"""The per-pixel model (jaxcrop/models/pixel.py): per pixel, any side, the hybrid's
encoder, trains and maps zones like the hybrid (configs/hybrid.py:pixel)."""
import jax
import numpy as np
import pytest
import rasterio

from configs.hybrid import get_config
from cropcontracts.errors import UserError
from jaxcrop import checkpoint, predict, train
from jaxcrop.input_pipeline import normalize
from jaxcrop.models import PixelModel, build_model
from prep.demo import zonefolders as zf
from tests import fixtures as pt

K, T, C = 5, 12, 4


def _model(variant="tiny,pixel", **fields):
  cfg = get_config(variant)
  cfg.model.update(fields)
  return build_model(cfg.model, K)


def test_each_pixel_on_its_own_at_any_side():
  model = _model()
  assert isinstance(model, PixelModel)
  v = model.init(jax.random.key(0), np.zeros((1, T, 1, 1, C), np.float32))
  x = np.random.default_rng(0).normal(size=(2, T, 3, 5, C)).astype(np.float32)
  out = np.asarray(model.apply(v, x))
  assert out.shape == (2, 3, 5, K)
  one = np.asarray(model.apply(v, x[1:, :, 2:3, 4:5]))     # a pixel as a 1 x 1 patch
  np.testing.assert_allclose(one[0, 0, 0], out[1, 2, 4], rtol=1e-5, atol=1e-6)
  y = x.copy()
  y[0, :, 1, 2] += 3.0                                     # another pixel changes
  changed = np.abs(np.asarray(model.apply(v, y)) - out).max(-1) > 1e-6
  assert changed.sum() == 1 and changed[0, 1, 2]


def test_the_encoder_is_the_hybrids_and_the_choices_are_checked():
  x = np.zeros((1, T, 4, 4, C), np.float32)
  for variant in ("tiny", "tiny,attention"):
    shapes = lambda m: jax.eval_shape(lambda: m.init(jax.random.key(0), x))["params"]
    pix, hyb = shapes(_model(variant + ",pixel")), shapes(_model(variant))
    assert set(pix) == {"temporal", "head"} and "unet" in hyb
    assert jax.tree.map(lambda a: a.shape, pix["temporal"]) == \
        jax.tree.map(lambda a: a.shape, hyb["temporal"])
  with pytest.raises(UserError, match=r"unknown model.arch 'unet'; expected one of"):
    _model("tiny", arch="unet")
  with pytest.raises(UserError, match=r"model.arch='pixel' has a flat head"):
    _model("tiny,pixel,hierarchical")
  with pytest.raises(UserError, match=r"config variant points .* needs the pixel model"):
    get_config("tiny,points")


def test_trains_on_patches_and_loads_as_the_pixel_model(tmp_path):
  cfg = pt.tiny_config(num_steps=2, eval_every=2, checkpoint_every=2)
  cfg.model.arch = "pixel"
  out = train.train_and_evaluate(cfg, tmp_path / "W", data=pt.FakeData())
  assert out["step"] == 2 and np.isfinite(out["best_val_macro_f1"])
  trained = checkpoint.load_trained(tmp_path / "W")
  assert isinstance(trained.model, PixelModel)


def test_predict_on_a_zone_writes_the_hybrids_outputs(tmp_path):
  zone = zf.write_zone(tmp_path / "z" / "testz_0")
  written = {}
  for name, variant in (("hybrid", "tiny"), ("pixel", "tiny,pixel")):
    model, v, meta = pt.write_workdir(tmp_path / name, variant)
    rc = predict.main(["--workdir", str(tmp_path / name), "--zone", str(zone.path),
                       "--out", str(tmp_path / f"maps_{name}"), "--tile", "16",
                       "--overlap", "4"])
    assert rc == 0
    written[name] = sorted(p.relative_to(tmp_path / f"maps_{name}").as_posix()
                           for p in (tmp_path / f"maps_{name}").rglob("*") if p.is_file())
  assert written["pixel"] == written["hybrid"] and "testz_0/classes.tif" in written["pixel"]
  # Per pixel, the map is the model's argmax on the whole zone at once.
  x = normalize(zone.read_image(), meta.mean, meta.std)[None]
  direct = np.asarray(model.apply(v, x, train=False))[0].argmax(-1)
  with rasterio.open(tmp_path / "maps_pixel" / "testz_0" / "classes.tif") as src:
    got = src.read(1)
  ok = got != 255
  assert ok.mean() > 0.9
  np.testing.assert_array_equal(got[ok], direct[ok])
