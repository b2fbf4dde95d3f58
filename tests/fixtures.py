"""Fixtures shared by the tests: synthetic zone folders, fake dataset metadata,
stand-in models and data (synthetic, never real data).

The zone writers go through cropcontracts.zonefolder like any zone, so every
stage is tested on the real format. No test module imports another: what two
tests share lives here (and session fixtures in conftest.py).
"""
from __future__ import annotations

import os
import pathlib
import signal

import flax.linen as nn
import jax
import numpy as np
import pandas as pd

from configs.hybrid import get_config
from cropcontracts import nomenclature, zonefolder
from cropcontracts.dataset_meta import DatasetMeta
from cropcontracts.zone import Zone

# --- labelled zone folders for the builder and the input pipeline

MONTHS = tuple(zonefolder.month_labels(2023))


def synthetic_zone(region: str, town: str, index: int, height: int, width: int) -> Zone:
  return Zone(zone_id=f"{town}_{index}", region=region, town=town, index=index,
              epsg=32631, x0=500000.0 + 10_000 * index, y0=5_500_000.0,
              width=width, height=height, source="synthetic")


def write_zone(root, zone: Zone, *, seed: int, months=MONTHS, empty: int = 16,
               nomenclature: str = nomenclature.VERSION,
               num_classes: int = 23) -> pathlib.Path:
  """Writes one labelled zone folder under root; returns its path.

  Imagery: uint16 in [1, 3000) with ~5 % nodata zeros; labels: random classes,
  255 on ~20 % of pixels and on the [0:empty, 0:empty] corner; parcels: the four
  quadrants 1..4 (row-major), their geometries the quadrants' boxes.
  """
  import pandas as pd
  rng = np.random.default_rng(seed)
  T, (H, W) = len(months), zone.shape
  comp = rng.integers(1, 3000, (T, 4, H, W), dtype=np.uint16)
  comp[rng.random((T, 4, H, W)) < 0.05] = 0
  counts = rng.integers(0, 6, (T, H, W), dtype=np.uint8)
  labels = rng.integers(0, num_classes, (H, W)).astype(np.uint8)
  labels[rng.random((H, W)) < 0.2] = zonefolder.NO_LABEL
  labels[:empty, :empty] = zonefolder.NO_LABEL
  rr, cc = np.mgrid[:H, :W]
  parcels = (1 + 2 * (rr >= H // 2) + (cc >= W // 2)).astype(np.uint32)
  geometries = [pixel_box(zone, r0, r1, c0, c1) for r0, r1 in ((0, H // 2), (H // 2, H))
                for c0, c1 in ((0, W // 2), (W // 2, W))]
  table = pd.DataFrame(dict(parcel_index=[1, 2, 3, 4], ID_PARCEL=["a", "b", "c", "d"],
                            CODE_CULTU=["BTH"] * 4, CODE_GROUP=["1"] * 4,
                            class_id=[0] * 4, class_name=["x"] * 4, tier2=["x"] * 4,
                            tier1=["x"] * 4, surf_parc_ha=[1.0] * 4,
                            area_m2=[1e4] * 4, n_pixels=[1] * 4))
  folder = pathlib.Path(root) / zone.zone_id
  zonefolder.write_imagery(folder, zone, comp, counts, list(months), {"source": "synthetic"})
  zonefolder.write_labels(folder, zone, labels, parcels, table,
                          {"nomenclature": nomenclature}, geometries=geometries)
  return folder


def write_zones(root, *, regions=("Alpha", "Beta"), per_region: int = 4,
                height: int = 40, width: int = 36, months=MONTHS) -> pathlib.Path:
  """`per_region` zones (index 0..) in each region under root; returns root."""
  root = pathlib.Path(root)
  for r, region in enumerate(regions):
    for i in range(per_region):
      zone = synthetic_zone(region, region.lower(), i, height, width)
      write_zone(root, zone, seed=100 * r + i, months=months)
  return root


# --- zone folders, a checkpoint meta and stand-in models for predict and plots

H, W, T = 40, 52, 3
HOLE = (slice(5, 9), slice(10, 20))    # rows, cols with no observation at all


def months(t=T):
  return [f"2023-{m + 1:02d}" for m in range(t)]


def make_meta(t=T, version="v1", bands=zonefolder.BANDS) -> DatasetMeta:
  nom = nomenclature.load("v1")
  K = nom.num_classes
  return DatasetMeta(
      num_classes=K, class_names=list(nom.tier3), tier2_names=list(nom.tier2_names),
      tier1_names=list(nom.tier1_names), tier2_of=nom.tier2_of(), tier1_of=nom.tier1_of(),
      colors=list(nom.colors), months=months(t), bands=list(bands),
      mean=np.full((t, len(bands)), 1500, np.float32),
      std=np.full((t, len(bands)), 800, np.float32),
      class_pixel_counts=np.ones(K, np.int64), nomenclature_version=version,
      version="0.0.1")


def pixel_box(zone: Zone, r0: int, r1: int, c0: int, c1: int):
  """Polygon (zone CRS) covering pixel rows r0:r1 and columns c0:c1."""
  import shapely
  return shapely.box(zone.x0 + c0 * zone.res, zone.y0 - r1 * zone.res,
                     zone.x0 + c1 * zone.res, zone.y0 - r0 * zone.res)


def make_zone(folder, *, labels=True, seed=0, zone_id="testz_0", h=H, w=W,
              t=T, label_version="v1"):
  """A zone folder of h x w pixels, t months, a nodata hole, 10 x 10 parcels.

  The last two columns hold no parcel: a parcel whose block lies there keeps a
  2 m wide sliver there that holds no pixel centre (n_pixels 0), as in the RPG.
  """
  rng = np.random.default_rng(seed)
  zone = Zone(zone_id=zone_id, region="Testland", town="Testville", index=0,
              epsg=32631, x0=500000.0, y0=5000000.0, width=w, height=h, source="test")
  comp = rng.integers(100, 3000, (t, 4, h, w)).astype(np.uint16)
  comp[:, :, HOLE[0], HOLE[1]] = 0
  zonefolder.write_imagery(folder, zone, comp, np.ones((t, h, w), np.uint8), months(t))
  if labels:
    rr, cc = np.mgrid[:h, :w]
    parcels = ((rr // 10) * ((w + 9) // 10) + cc // 10 + 1).astype(np.uint32)
    parcels[:, -2:] = 0                                  # a strip without parcel
    n = int(parcels.max())
    cls = rng.integers(0, 23, n).astype(np.uint8)
    lab = np.where(parcels > 0, cls[np.maximum(parcels, 1) - 1], 255).astype(np.uint8)
    table = pd.DataFrame(dict(
        parcel_index=np.arange(1, n + 1), ID_PARCEL=[str(1000 + i) for i in range(n)],
        CODE_CULTU="BTH", CODE_GROUP="1", class_id=cls,
        class_name=[nomenclature.load().tier3[c] for c in cls], tier2="", tier1="",
        surf_parc_ha=1.0, area_m2=10000.0, n_pixels=np.bincount(parcels.ravel(),
                                                                minlength=n + 1)[1:]))
    pixels = np.bincount(lab.ravel(), minlength=256)
    zonefolder.write_labels(folder, zone, lab, parcels, table, dict(
        nomenclature=label_version,
        class_pixel_counts={n: int(pixels[k]) for k, n in enumerate(nomenclature.load().tier3)}),
        geometries=[_block(zone, i, h, w) for i in range(n)])
  return zonefolder.open_zone(folder)


def _block(zone: Zone, i: int, h: int, w: int):
  """The geometry of parcel i + 1 of make_zone: its 10 x 10 block left of the strip."""
  r0, c0 = divmod(i, (w + 9) // 10)
  r0, c0 = 10 * r0, 10 * c0
  r1, c1 = min(r0 + 10, h), min(c0 + 10, w - 2)
  if c1 > c0:
    return pixel_box(zone, r0, r1, c0, c1)
  import shapely
  x = zone.x0 + c0 * zone.res
  return shapely.box(x, zone.y0 - r1 * zone.res, x + 2.0, zone.y0 - r0 * zone.res)


class PixelModel(nn.Module):
  """1x1 convolution over the T*C values of each pixel (no spatial context)."""
  num_classes: int = 23

  @nn.compact
  def __call__(self, x, train=False):
    B, T_, H_, W_, C = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(B, H_, W_, T_ * C)
    return nn.Conv(self.num_classes, (1, 1))(x)


class ConvModel(nn.Module):
  """3x3 convolution: a receptive field of one pixel around each pixel."""
  num_classes: int = 23

  @nn.compact
  def __call__(self, x, train=False):
    B, T_, H_, W_, C = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(B, H_, W_, T_ * C)
    return nn.Conv(self.num_classes, (3, 3), padding="SAME")(x)


def init(model, t=T, size=16):
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, t, size, size, 4), np.float32))
  return (lambda v, x: model.apply(v, x)), variables


# --- training

# Training fakes: a 3-class problem on 16 x 16 patches of 4 months.
TRAIN_K, TRAIN_T, TRAIN_C, TRAIN_S = 3, 4, 4, 16
K, T_, C, S = TRAIN_K, TRAIN_T, TRAIN_C, TRAIN_S


def fake_train_meta():
  """The training fakes' DatasetMeta: 3 classes, T_ months, zero mean, unit std."""
  return DatasetMeta(
      num_classes=K, class_names=["wheat", "maize", "vines"], tier2_names=["cereal", "vines"],
      tier1_names=["crop"], tier2_of=np.array([0, 0, 1]), tier1_of=np.zeros(K, np.int32),
      colors=["#ffff00", "#ff8800", "#880088"], months=list(range(1, T_ + 1)),
      bands=["B2", "B3", "B4", "B8"], mean=np.zeros((T_, C), np.float32),
      std=np.ones((T_, C), np.float32), class_pixel_counts=np.array([400, 100, 0]),
      nomenclature_version="v1", version="1.0.0", builder_config="fake")


def fake_batch(rng, b):
  """Learnable patches: class k pixels have band mean k; a few unlabelled."""
  label = rng.integers(0, 2, (b, S, S)).astype(np.int32)
  image = rng.normal(size=(b, T_, S, S, C)).astype(np.float32) * 0.5
  image += label[:, None, :, :, None]
  label[:, :2] = 255
  return {"image": image, "label": label}


class FakeData:
  """Stands in for jaxcrop.input_pipeline: deterministic batches per (seed, step)."""

  def __init__(self, sigterm_at=None):
    self.sigterm_at = sigterm_at

  def load_meta(self, cfg_data):
    return fake_train_meta()

  def train_iterator(self, cfg_data, *, seed, start_step=0):
    step = start_step
    while True:
      if step == self.sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)   # preemption: the step in flight finishes
      yield fake_batch(np.random.default_rng([seed, step]), cfg_data.batch_size // jax.process_count())
      step += 1

  def eval_batches(self, cfg_data, split, meta=None):
    """Two batches, the second with one padding example; 4×4-pixel parcels.
    Images come normalized with fake_train_meta()'s statistics (mean 0, std 1)."""
    rng = np.random.default_rng(99)
    n = cfg_data.eval_batch_size
    blocks = (np.arange(S)[:, None] // 4) * (S // 4) + np.arange(S)[None, :] // 4 + 1
    for i in range(2):
      b = fake_batch(rng, n)
      b["mask"] = np.array([1.0] * (n - i) + [0.0] * i, np.float32)
      b["parcels"] = np.broadcast_to(blocks, (n, S, S)).astype(np.uint32)
      b["zone_id"] = np.array([f"z{i}{j}".encode() for j in range(n)])
      b["region"] = np.array([b"north", b"south"][i:i + 1] * n)
      yield b


def tiny_config(**train_overrides):
  c = get_config("tiny")
  c.model.temporal.dropout = 0.1        # exercises the per-step dropout rng
  c.train.tensorboard = False       # metrics.jsonl only: no TensorFlow import
  c.optimizer.lr = 3e-2
  c.train.update(train_overrides)
  return c


# --------------------------------------------------------------------------- #
# Command lines run in-process

def run(main, argv, capsys):
  """(exit status, stdout, stderr) of main(argv); argparse's SystemExit included."""
  try:
    rc = main([str(a) for a in argv])
  except SystemExit as e:
    rc = e.code
  out, err = capsys.readouterr()
  return rc, out, err


def assert_error(rc, err, expected):
  """Exit 2 and stderr is exactly the line `error: <expected>`."""
  assert "Traceback" not in err, err
  assert err.strip().splitlines() == [f"error: {expected}"], err
  assert rc == 2
