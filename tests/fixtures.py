"""Fixtures shared by the tests: fake dataset metadata, stand-in models and data
(synthetic, never real data).

One fake checkpoint meta (`make_meta`) serves every stage's tests. The one
synthetic zone writer is `prep.demo.zonefolders` (`write_zone`, `write_zones`),
and the loopback STAC server `prep.demo.stac_server`: the benchmarks use them too,
and benchmarks import no test module. No test module imports another: what two
tests share lives here (and session fixtures in conftest.py).
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import typing

import flax.linen as nn
import jax
import numpy as np

from configs.hybrid import get_config
from cropcontracts import nomenclature, zonefolder
from cropcontracts.dataset_meta import DatasetMeta
from jaxcrop.input_pipeline import TF_IMPORT_NOISE
from prep.demo.zonefolders import T, months

# --- one fake checkpoint DatasetMeta

# The current nomenclature's classes (v3: 23 crops and the background): the fakes' default.
NUM_CLASSES = nomenclature.load().num_classes

# The training fakes' 3-class tree: (name, tier 2, tier 1, colour).
TRAIN_CLASSES = (("wheat", "cereal", "crop", "#ffff00"), ("maize", "cereal", "crop", "#ff8800"),
                 ("vines", "vines", "crop", "#880088"))


def make_meta(t=T, *, version=nomenclature.VERSION, bands=zonefolder.BANDS, classes=None,
              mean=1500.0, std=800.0, class_pixel_counts=None,
              builder_config="") -> DatasetMeta:
  """A checkpoint's DatasetMeta: t months of 2023, `bands`, constant moments.

  classes: None for the current nomenclature's classes (whatever `version`
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
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x, train=False):
    B, T_, H_, W_, C = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(B, H_, W_, T_ * C)
    return nn.Conv(self.num_classes, (1, 1))(x)


class ConvModel(nn.Module):
  """3x3 convolution: a receptive field of one pixel around each pixel."""
  num_classes: int = NUM_CLASSES

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
  """Stands in for jaxcrop.input_pipeline (`jaxcrop.train.Data`): deterministic
  batches per (seed, step); every split exists and no shard is damaged."""

  def __init__(self, sigterm_at=None):
    self.sigterm_at = sigterm_at

  def load_meta(self, cfg_data):
    return make_meta(**TRAIN_META)

  def check_split(self, cfg_data, builder, split):
    pass

  def check_shards(self, cfg_data, builder, split):
    pass

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


# --------------------------------------------------------------------------- #
# The session's shared datasets and workdirs (conftest.py builds them once)

# The builder configs (CropmapConfig fields) of the shared datasets: `tiny_dataset`
# on the tiny zones (8 zones, 3 folds) and `demo_dataset` on the small demo, which has
# only 2 non-test zones, so 2 folds (index-1 zones: one fold each).
TINY_BUILDER = dict(name="tiny", patch_size=16)
DEMO_BUILDER = dict(name="e2e", patch_size=16, num_folds=2)


class Dataset(typing.NamedTuple):
  """A built cropmap dataset: the TFDS data_dir and a Builder reading it."""
  data_dir: pathlib.Path
  builder: typing.Any


def private_copy(shared, parent) -> pathlib.Path:
  """A copy of a shared fixture's folder at parent/<its name>, for a test that
  damages or extends it (the shared fixtures are read-only)."""
  shared = pathlib.Path(shared)
  return pathlib.Path(shutil.copytree(shared, pathlib.Path(parent) / shared.name, symlinks=True))


def demo_train_config(data_dir):
  """`configs/hybrid.py:tiny` on the demo dataset at data_dir: train fold0, validate
  fold1, 4 steps, validation and checkpoints every 2 (`demo_workdir`)."""
  c = get_config("tiny")
  c.data.update(builder_config=DEMO_BUILDER["name"], data_dir=str(data_dir),
                train_split="fold0", val_split="fold1", shuffle_buffer=16)
  c.train.update(num_steps=4, eval_every=2, checkpoint_every=2, tensorboard=False,
                 calibrate=True)
  c.eval.baseline.update(max_iter=3)
  return c


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


# --------------------------------------------------------------------------- #
# STAC

def stac_core_errors(record: dict, kind: str) -> list[str]:
  """The STAC core schema errors of an Item or a Collection, offline: pystac's own
  copies of the core schemas (its LocalValidator), validated with jsonschema. The
  extensions' schemas are not shipped with pystac, so they are not checked here."""
  from jsonschema import Draft7Validator
  from pystac.validation.local_validator import get_local_schema_cache
  from referencing import Registry, Resource
  from referencing.jsonschema import DRAFT7
  cache = get_local_schema_cache()
  registry = Registry().with_resources(
      (uri, Resource.from_contents(schema, DRAFT7)) for uri, schema in cache.items())
  uri = (f"https://schemas.stacspec.org/v{record['stac_version']}/{kind}-spec/json-schema/"
         f"{kind}.json")
  validator = Draft7Validator(cache[uri], registry=registry)
  return [e.message for e in validator.iter_errors(record)]
