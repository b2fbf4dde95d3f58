"""Fixtures shared by the tests: synthetic zone folders, fake dataset metadata,
stand-in models and data (synthetic, never real data).

One zone writer (`write_zone`, and `write_zones` for a dataset's worth of
them) and one fake checkpoint meta (`make_meta`) serve every stage's tests. The
zone writer goes through cropcontracts.zonefolder like any zone, so every
stage is tested on the real format. No test module imports another: what two
tests share lives here (and session fixtures in conftest.py).
"""
from __future__ import annotations

import os
import pathlib
import re
import signal

import flax.linen as nn
import jax
import numpy as np
import pandas as pd

from configs.hybrid import get_config
from cropcontracts import nomenclature, zonefolder
from cropcontracts.dataset_meta import DatasetMeta
from cropcontracts.zone import Zone
from jaxcrop.input_pipeline import TF_IMPORT_NOISE

# --- synthetic zone folders

H, W, T = 40, 52, 3                    # the default zone: 40 x 52 px, 3 months
MONTHS = tuple(zonefolder.month_labels(2023))
HOLE = (slice(5, 9), slice(10, 20))    # rows, cols with no observation at all
BLOCK = 10                             # parcels are BLOCK x BLOCK squares
STRIP = 2                              # the last STRIP columns hold no parcel


def months(t=T):
  return list(MONTHS[:t])


def synthetic_zone(zone_id: str = "testz_0", *, region: str = "Testland", index: int = 0,
                   height: int = H, width: int = W) -> Zone:
  """A zone of the synthetic grid (EPSG:32631); zones of other indices lie 10 km apart."""
  return Zone(zone_id=zone_id, region=region, town=zone_id.rpartition("_")[0] or zone_id,
              index=index, epsg=32631, x0=500000.0 + 10_000 * index, y0=5_500_000.0,
              width=width, height=height, source="synthetic")


def write_zone(folder, zone: Zone | None = None, *, seed: int = 0, months=MONTHS[:T],
               labels: bool = True, nodata: float = 0.0, unlabelled: float = 0.0,
               empty: int = 0, version: str = nomenclature.VERSION) -> zonefolder.ZoneFolder:
  """Writes one synthetic zone folder at `folder` and opens it.

  zone: default `synthetic_zone()`. Imagery: uint16 in [100, 3000), T x 4
  bands, 0 (nodata) on every band of every month over HOLE and on a `nodata`
  fraction of the single values; valid_count 1..5, 0 over HOLE. With labels:
  parcels are the BLOCK x BLOCK squares (1-based, row-major), none in the last
  STRIP columns: a parcel whose block lies there keeps a 2 m wide sliver of
  geometry there that holds no pixel centre (n_pixels 0), as in the RPG. Each
  parcel has one random class of the `version` nomenclature; 255 (no label)
  outside parcels, on an `unlabelled` fraction of the pixels and on the
  [:empty, :empty] corner. meta.json records the class pixel counts.
  """
  zone = zone or synthetic_zone()
  rng = np.random.default_rng(seed)
  t, (h, w) = len(months), zone.shape
  comp = rng.integers(100, 3000, (t, 4, h, w)).astype(np.uint16)
  comp[rng.random(comp.shape) < nodata] = zonefolder.NODATA
  comp[:, :, HOLE[0], HOLE[1]] = zonefolder.NODATA
  counts = rng.integers(1, 6, (t, h, w)).astype(np.uint8)
  counts[:, HOLE[0], HOLE[1]] = 0
  zonefolder.write_imagery(folder, zone, comp, counts, list(months), {"source": "synthetic"})
  if labels:
    nom = nomenclature.load(version)
    per_row = (w + BLOCK - 1) // BLOCK
    rr, cc = np.mgrid[:h, :w]
    parcels = ((rr // BLOCK) * per_row + cc // BLOCK + 1).astype(np.uint32)
    parcels[:, w - STRIP:] = 0
    n = per_row * ((h + BLOCK - 1) // BLOCK)
    cls = rng.integers(0, nom.num_classes, n).astype(np.uint8)
    lab = np.where(parcels > 0, cls[np.maximum(parcels, 1) - 1],
                   zonefolder.NO_LABEL).astype(np.uint8)
    lab[rng.random((h, w)) < unlabelled] = zonefolder.NO_LABEL
    lab[:empty, :empty] = zonefolder.NO_LABEL
    table = pd.DataFrame(dict(
        parcel_index=np.arange(1, n + 1), ID_PARCEL=[str(1000 + i) for i in range(n)],
        CODE_CULTU="BTH", CODE_GROUP="1", class_id=cls,
        class_name=[nom.tier3[c] for c in cls], tier2="", tier1="",
        surf_parc_ha=1.0, area_m2=10000.0,
        n_pixels=np.bincount(parcels.ravel(), minlength=n + 1)[1:]))
    pixels = np.bincount(lab.ravel(), minlength=256)
    zonefolder.write_labels(folder, zone, lab, parcels, table, dict(
        nomenclature=version,
        class_pixel_counts={name: int(pixels[k]) for k, name in enumerate(nom.tier3)}),
        geometries=[_block(zone, i) for i in range(n)])
  return zonefolder.open_zone(folder)


def write_zones(root, *, regions=("Alpha", "Beta"), per_region: int = 4,
                height: int = 40, width: int = 36, months=MONTHS) -> pathlib.Path:
  """A dataset's zones under root: `per_region` zones (index 0..) per region,
  each with 5 % nodata values, 20 % unlabelled pixels and an unlabelled
  16 x 16 corner (one patch of 16 px without a label); returns root."""
  root = pathlib.Path(root)
  for r, region in enumerate(regions):
    for i in range(per_region):
      zone = synthetic_zone(f"{region.lower()}_{i}", region=region, index=i,
                            height=height, width=width)
      write_zone(root / zone.zone_id, zone, seed=100 * r + i, months=months,
                 nodata=0.05, unlabelled=0.2, empty=16)
  return root


def pixel_box(zone: Zone, r0: int, r1: int, c0: int, c1: int):
  """Polygon (zone CRS) covering pixel rows r0:r1 and columns c0:c1."""
  import shapely
  return shapely.box(zone.x0 + c0 * zone.res, zone.y0 - r1 * zone.res,
                     zone.x0 + c1 * zone.res, zone.y0 - r0 * zone.res)


def _block(zone: Zone, i: int):
  """The geometry of parcel i + 1 of write_zone: its block left of the strip."""
  h, w = zone.shape
  r0, c0 = divmod(i, (w + BLOCK - 1) // BLOCK)
  r0, c0 = BLOCK * r0, BLOCK * c0
  r1, c1 = min(r0 + BLOCK, h), min(c0 + BLOCK, w - STRIP)
  if c1 > c0:
    return pixel_box(zone, r0, r1, c0, c1)
  import shapely
  x = zone.x0 + c0 * zone.res
  return shapely.box(x, zone.y0 - r1 * zone.res, x + 2.0, zone.y0 - r0 * zone.res)


# --- one fake checkpoint DatasetMeta

# The training fakes' 3-class tree: (name, tier 2, tier 1, colour).
TRAIN_CLASSES = (("wheat", "cereal", "crop", "#ffff00"), ("maize", "cereal", "crop", "#ff8800"),
                 ("vines", "vines", "crop", "#880088"))


def make_meta(t=T, *, version=nomenclature.VERSION, bands=zonefolder.BANDS, classes=None,
              mean=1500.0, std=800.0, class_pixel_counts=None,
              builder_config="") -> DatasetMeta:
  """A checkpoint's DatasetMeta: t months of 2023, `bands`, constant moments.

  classes: None for the current nomenclature's 23 classes (whatever `version`
  says: so a checkpoint of an unknown version can be faked), else
  (name, tier2, tier1, colour) tuples such as TRAIN_CLASSES.
  """
  if classes is None:
    nom = nomenclature.load()
    names, t2, t1, colors = list(nom.tier3), list(nom.tier2_names), list(nom.tier1_names), \
        list(nom.colors)
    t2_of, t1_of = nom.tier2_of(), nom.tier1_of()
  else:
    names, colors = [c[0] for c in classes], [c[3] for c in classes]
    t2 = list(dict.fromkeys(c[1] for c in classes))
    t1 = list(dict.fromkeys(c[2] for c in classes))
    t2_of = np.array([t2.index(c[1]) for c in classes], np.int32)
    t1_of = np.array([t1.index(c[2]) for c in classes], np.int32)
  K = len(names)
  counts = np.ones(K, np.int64) if class_pixel_counts is None else np.asarray(class_pixel_counts)
  return DatasetMeta(
      num_classes=K, class_names=names, tier2_names=t2, tier1_names=t1, tier2_of=t2_of,
      tier1_of=t1_of, colors=colors, months=months(t), bands=list(bands),
      mean=np.full((t, len(bands)), mean, np.float32),
      std=np.full((t, len(bands)), std, np.float32), class_pixel_counts=counts,
      nomenclature_version=version, version="0.0.1", builder_config=builder_config)


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
TRAIN_K, TRAIN_T, TRAIN_C, TRAIN_S = len(TRAIN_CLASSES), 4, 4, 16
K, T_, C, S = TRAIN_K, TRAIN_T, TRAIN_C, TRAIN_S


# The training fakes' DatasetMeta: make_meta(**TRAIN_META), the 3-class tree on
# T_ months, zero mean, unit std (the fake batches come normalized).
TRAIN_META = dict(t=T_, version="v1", classes=TRAIN_CLASSES, mean=0.0, std=1.0,
                  class_pixel_counts=[400, 100, 0], builder_config="fake")


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
    return make_meta(**TRAIN_META)

  def train_iterator(self, cfg_data, *, seed, start_step=0):
    step = start_step
    while True:
      if step == self.sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)   # preemption: the step in flight finishes
      yield fake_batch(np.random.default_rng([seed, step]), cfg_data.batch_size // jax.process_count())
      step += 1

  def eval_batches(self, cfg_data, split, meta=None):
    """Two batches, the second with one padding example; 4×4-pixel parcels.
    Images come normalized with TRAIN_META's statistics (mean 0, std 1)."""
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


def write_workdir(path, variant="tiny", **model_fields):
  """A training workdir at `path` holding a tiny hybrid model's init as its `last`
  checkpoint (step 3): `variant` of configs/hybrid.py, `model_fields` set on
  config.model, make_meta()'s classes and months (it maps write_zone's zones).
  Returns (model, variables, meta)."""
  from jaxcrop import checkpoint
  from jaxcrop.hierarchy import Tree
  from jaxcrop.models import build_model, needs_valid_count
  cfg = get_config(variant)
  cfg.model.update(model_fields)
  meta = make_meta()
  model = build_model(cfg.model, meta.num_classes, tree=Tree.of(meta))
  x = np.zeros((1, T, 16, 16, 4), np.float32)
  inputs = {"valid_count": np.zeros(x.shape[:-1], np.float32)} if needs_valid_count(cfg.model) else {}
  v = model.init(jax.random.PRNGKey(1), x, **inputs)
  path.mkdir()
  (path / "config.json").write_text(cfg.to_json())
  (path / "dataset_meta.json").write_text(meta.to_json())
  last, _ = checkpoint.managers(path)
  checkpoint.save(last, 3, dict(v), {"step": np.int32(3)})
  last.wait_until_finished()
  return model, v, meta


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


# What the stock `tfds` command prints as it starts, before it loads the cropmap
# builder, and which the builder cannot silence (docs/errors.md): TensorFlow's C++
# start-up logs (jaxcrop.input_pipeline.TF_IMPORT_NOISE, and the CPU-instructions
# notice below TF_CPP_MIN_LOG_LEVEL=2) and Apache Beam's notice of a missing apitools.
TFDS_START_UP = re.compile(f"{TF_IMPORT_NOISE.pattern}|To enable the following instructions: |"
                           f"WARNING:root:apitools not found")


def assert_tfds_error(rc, err, expected):
  """Exit 2 and stderr is the line `tfds build cropmap: error: <expected>`, after
  nothing but the stock command's start-up (TFDS_START_UP)."""
  assert "Traceback" not in err and rc == 2, err
  *start_up, last = err.strip().splitlines()
  assert last == f"tfds build cropmap: error: {expected}", err
  assert all(TFDS_START_UP.match(line) for line in start_up), err
