"""cropmap shards -> batches of numpy arrays for training and evaluation.

Batches are channels-last and time-major, `image` float32 [B, T, H, W, C]:
XLA's convolutions on TPU and GPU prefer NHWC, and with T ahead of H, W the
temporal encoder folds H, W into the batch with one reshape.

Readers need only the prepared data, never the builder code: the dataset is
opened with `tfds.builder_from_directory(<data_dir>/cropmap/<config>/<latest
version>)`, so a TPU VM that reads `gs://…` needs no zone folders or prep
imports.

Training is deterministic given a seed, and cheap to resume: epoch e is the
split shuffled with a seed derived from (seed, e), augmentations draw from
stateless random ops keyed by (seed, example index), and `start_step=k` starts
at epoch k*B // N and skips only the examples already seen in that epoch.
TensorFlow runs on the CPU only (`import_tf`): the accelerator belongs to JAX.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Iterator

import numpy as np

from cropcontracts.errors import UserError, native_noise_dropped
from cropcontracts.zonefolder import NO_LABEL
from cropcontracts.dataset_meta import DatasetMeta
from jaxcrop import in_season

_SEED_STRIDE = 1_000_003  # epoch seeds: seed * stride + epoch


# What TensorFlow 2.21 logs on import, past TF_CPP_MIN_LOG_LEVEL (its C++ logging
# starts before absl's is set up): absl's notice of it, then INFO lines
# (`I0000 00:00:… port.cc:153] oneDNN custom operations are on…`).
TF_IMPORT_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|"
                              r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] ")


def import_tf():
  """TensorFlow, quiet and confined to the CPU (call before any TF/TFDS use)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
    with native_noise_dropped(TF_IMPORT_NOISE):
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialized, or no such kind
      pass
  return tf


def normalize(image, mean, std):
  """(x - mean) / std per month and band; 0 where x is nodata (0).

  Args:
    image: uint16 [..., T, H, W, C], numpy array, jax array (traced too: the mapper
      normalizes its tiles in its jitted tile function) or tf.Tensor.
    mean, std: float [T, C].
  Returns:
    float32 [..., T, H, W, C], of the same kind as `image`.
  """
  mean = np.asarray(mean, np.float32)[:, None, None, :]
  std = np.asarray(std, np.float32)[:, None, None, :]
  if isinstance(image, np.ndarray):
    x = (image.astype(np.float32) - mean) / std
    return np.where(image == 0, np.float32(0), x).astype(np.float32)
  if type(image).__module__.startswith("jax"):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    x = (image.astype(jnp.float32) - mean) / std
    return jnp.where(image == 0, jnp.float32(0), x)
  tf = import_tf()
  x = (tf.cast(image, tf.float32) - mean) / std
  return tf.where(tf.equal(image, 0), tf.zeros_like(x), x)


# --------------------------------------------------------------------------- #
# Opening the prepared dataset.

def _data_dir(cfg_data) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return cfg_data.get("data_dir") or os.environ.get("TFDS_DATA_DIR") or \
      tfds.core.constants.DATA_DIR


def _rebuild_hint(cfg_data) -> str:
  return (f"tfds build tfds_builder/cropmap --config={cfg_data.builder_config} "
          f"--data_dir={_data_dir(cfg_data)} --overwrite")


def dataset_dir(cfg_data) -> str:
  """<data_dir>/<name>/<builder_config>/<latest version> (may be gs://)."""
  import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  root = epath.Path(_data_dir(cfg_data)) / cfg_data.name / cfg_data.builder_config
  versions = []
  if root.exists():
    for p in root.iterdir():
      if re.fullmatch(r"\d+\.\d+\.\d+", p.name) and (p / "dataset_info.json").exists():
        versions.append(tfds.core.Version(p.name))
  if not versions:
    raise UserError(f"{root}: no prepared {cfg_data.name} dataset; build it with "
                       f"`{_rebuild_hint(cfg_data)}`")
  latest = max(versions)
  if latest.major != DATASET_MAJOR:
    raise UserError(f"{root / str(latest)}: {cfg_data.name} dataset version {latest}, "
                       f"this code reads {DATASET_MAJOR}.x.x; rebuild it with "
                       f"`{_rebuild_hint(cfg_data)}` (or use the jaxcrop version that built "
                       f"it)")
  return os.fspath(root / str(latest))


# The major version of the cropmap dataset this code reads (a new major changes the
# examples; tests tie it to tfds_builder's Builder.VERSION).
DATASET_MAJOR = 3
# Bytes a TFRecord adds to each record: length (8) and two CRC32C (4 + 4).
_RECORD_OVERHEAD = 16


def check_shards(cfg_data, builder, split: str) -> None:
  """Raises UserError naming a TFRecord shard of `split` that is missing or
  truncated, before anything is trained: the shard files must add up to the bytes
  and records dataset_info.json recorded (one stat per shard; the records are
  read only to find which shard is damaged)."""
  tf = import_tf()
  builder = builder or _builder(cfg_data)
  for name in _fold_names(split):
    with warnings.catch_warnings():   # TFDS's split info calls a deprecated protobuf API
      warnings.simplefilter("ignore", DeprecationWarning)
      info = builder.info.splits[name]
      lengths = list(info.shard_lengths)
    files = [os.fspath(p) for p in info.filepaths]
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
      raise UserError(f"{missing[0]}: TFRecord shard missing; rebuild with "
                         f"`{_rebuild_hint(cfg_data)}`")
    expected = info.num_bytes + _RECORD_OVERHEAD * info.num_examples
    if info.num_bytes and sum(tf.io.gfile.stat(f).length for f in files) != expected:
      bad = _corrupt_shards(files, lengths) or files
      raise UserError(f"{', '.join(bad)}: damaged or truncated TFRecord shard (not the "
                         f"size dataset_info.json records); rebuild with "
                         f"`{_rebuild_hint(cfg_data)}`")


def _builder(cfg_data):
  import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():   # TFDS reads dataset_info with a deprecated protobuf API
    warnings.simplefilter("ignore", DeprecationWarning)
    return tfds.builder_from_directory(dataset_dir(cfg_data))


def _fold_names(split: str) -> list[str]:
  """`fold0+fold1[:50%]` -> ['fold0', 'fold1'] (slices are ignored)."""
  return [re.sub(r"\[.*\]$", "", s.strip()) for s in split.split("+")]


def load_meta(cfg_data, builder=None) -> DatasetMeta:
  """DatasetMeta of the prepared dataset; moments merged over cfg_data.train_split."""
  from cropcontracts import moments as moments_lib  # pylint: disable=g-import-not-at-top
  builder = builder or _builder(cfg_data)
  md = builder.info.metadata
  folds = _fold_names(cfg_data.train_split)
  unknown = [f for f in folds if f not in md["moments_per_fold"]]
  if unknown:
    raise UserError(f"train_split {cfg_data.train_split!r}: {unknown} are not "
                       f"training folds of {dataset_dir(cfg_data)} (folds: "
                       f"{sorted(md['moments_per_fold'])})")
  moments = moments_lib.merge_all(moments_lib.Moments.from_json(md["moments_per_fold"][f])
                            for f in folds)
  mean, std = moments_lib.mean_std(moments)
  counts = np.sum([md["class_pixel_counts"][f] for f in folds], 0).astype(np.int64)
  return DatasetMeta(
      num_classes=len(md["class_names"]), class_names=list(md["class_names"]),
      tier2_names=list(md["tier2_names"]), tier1_names=list(md["tier1_names"]),
      tier2_of=np.asarray(md["tier2_of"], np.int32),
      tier1_of=np.asarray(md["tier1_of"], np.int32), colors=list(md["colors"]),
      months=list(md["months"]), bands=list(md["bands"]), mean=mean, std=std,
      class_pixel_counts=counts, nomenclature_version=md["nomenclature_version"],
      version=str(builder.info.version), builder_config=cfg_data.builder_config,
      patch_size=int(md["patch_size"]), train_split=cfg_data.train_split)


def _process_share(global_batch: int) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  n = jax.process_count()
  if global_batch % n:
    raise UserError(f"batch size {global_batch} is not divisible by the "
                      f"{n} processes")
  return global_batch // n


def _process_split(split: str, index: int | None = None, count: int | None = None):
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  count = jax.process_count() if count is None else count
  index = jax.process_index() if index is None else index
  return split if count == 1 else tfds.even_splits(split, count)[index]


def _options(tf, cfg_data):
  """tf.data options. `deterministic` (default True) keeps the element order
  fixed under parallel maps, which resume and the multi-device equality rely
  on; False lets parallel maps hand out whatever is ready first (faster when
  the host is busy; the data seen per epoch is unchanged). Autotuning is off:
  its model thread sleeps up to a minute between two passes, and destroying a
  finished iterator waited for it (37–57 s at the end of each demo training,
  docs/benchmarks.md); `AUTOTUNE` maps then run as many calls as there are cores."""
  opts = tf.data.Options()
  opts.deterministic = bool(cfg_data.get("deterministic", True))
  opts.experimental_optimization.map_parallelization = True
  opts.autotune.enabled = False
  return opts


def _numpy(ds, builder, split, cfg_data) -> Iterator[dict]:
  """Iterates a tf.data pipeline; a damaged shard becomes a UserError (a
  corrupt record, or fewer records than the dataset info counts: a shard cut
  at a record boundary)."""
  errors = import_tf().errors  # bound now: usable at shutdown
  try:
    yield from ds.as_numpy_iterator()
  except (errors.DataLossError, errors.FailedPreconditionError) as e:
    if (isinstance(e, errors.FailedPreconditionError)
        and "was expected to contain" not in e.message):
      raise
    files = [os.fspath(p) for p in builder.info.splits[split].filepaths]
    bad = _corrupt_shards(files) or files
    raise UserError(f"{', '.join(bad)}: damaged or truncated TFRecord shard "
                       f"({e.message.splitlines()[0]}); rebuild with "
                       f"`{_rebuild_hint(cfg_data)}`") from None


def _corrupt_shards(files, lengths=None) -> list[str]:
  """The shards that fail to read whole, or hold another number of records
  than `lengths` (the shard lengths of dataset_info.json) says."""
  tf = import_tf()
  bad = []
  for i, f in enumerate(files):
    n = 0
    try:
      for _ in tf.data.TFRecordDataset(f):
        n += 1
    except tf.errors.DataLossError:
      bad.append(f)
      continue
    if lengths is not None and i < len(lengths) and n != lengths[i]:
      bad.append(f)
  return bad


# --------------------------------------------------------------------------- #
# Training.

def augment(image, label, key):
  """One of the 8 symmetries of the square, the same for image and label.

  Args:
    image: [T, H, W, C] (H == W); label: [H, W]; key: int64 [2] stateless seed.
  """
  tf = import_tf()
  k = tf.random.stateless_uniform([], key, 0, 4, dtype=tf.int32)
  flip = tf.random.stateless_uniform([], key + [0, 1]) < 0.5
  image = tf.image.rot90(image, k)
  label = tf.image.rot90(label[..., None], k)[..., 0]
  image = tf.cond(flip, lambda: tf.reverse(image, [2]), lambda: image)
  label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
  return image, label


def time_shift(image, shift):
  """The season moved later by `shift` months (earlier when < 0): month t of the
  result is the series read at t - shift, linearly between the two months around
  it, clamped to the first and last month. A phenology 2-3 weeks early or late
  (another year's weather) is a shift of about ±0.5-0.75.

  Args:
    image: float32 [T, H, W, C]; shift: float32 scalar (months).
  Returns:
    float32 [T, H, W, C].
  """
  tf = import_tf()
  t = tf.shape(image)[0]
  last = tf.cast(t - 1, tf.float32)
  pos = tf.clip_by_value(tf.range(tf.cast(t, tf.float32)) - shift, 0.0, last)
  lo = tf.floor(pos)
  w = (pos - lo)[:, None, None, None]
  lo = tf.cast(lo, tf.int32)
  hi = tf.minimum(lo + 1, t - 1)
  return (1.0 - w) * tf.gather(image, lo) + w * tf.gather(image, hi)


def random_time_shift(image, max_shift: float, key):
  """`time_shift` by a shift drawn uniformly from [-max_shift, max_shift] months by a
  stateless op keyed by the example (`key`, folded apart from the other draws), so
  a resumed run draws the same. image: float32 [T, H, W, C]."""
  tf = import_tf()
  shift = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(key, 2),
                                      -max_shift, max_shift)
  return time_shift(image, shift)


def random_cut_off(image, count, untils, key, rate: float = 1.0):
  """In-season training: `jaxcrop.in_season.cut_off` of one example after `until`
  months, drawn uniformly from `untils` by a stateless op keyed by the example
  (`key`, folded apart from the augmentation's), so a resumed run draws the same;
  with `rate` < 1, only that share of the examples (another keyed draw), the
  others keep their whole season.

  Args:
    image: uint16 [T, H, W, C]; count: valid_count [T, H, W]; untils: [int];
    key: int64 [2] the example's stateless seed; rate: in [0, 1].
  Returns:
    image and count cut off (same shapes and dtypes).
  """
  tf = import_tf()
  fold = tf.random.experimental.stateless_fold_in
  i = tf.random.stateless_uniform([], fold(key, 1), 0, len(untils), dtype=tf.int32)
  until = tf.gather(tf.constant(untils, tf.int32), i)

  def cut():
    out, out_count = tf.numpy_function(in_season.cut_off, [image, count, until],
                                       [tf.uint16, count.dtype], stateful=False)
    out.set_shape(image.shape)
    out_count.set_shape(count.shape)
    return out, out_count
  if rate >= 1.0:
    return cut()
  chosen = tf.random.stateless_uniform([], fold(key, 3)) < rate
  return tf.cond(chosen, cut, lambda: (image, count))


def _training_example(tf, meta, *, seed: int, untils, cut_off_rate: float, max_shift: float,
                      with_count: bool, augmented: bool):
  """(index, (image, label, count)) → a training example {image, label[, valid_count]}:
  the in-season cut-off, normalization, the season shift and the augmentation of
  `train_iterator`, each drawn from the key (seed, index)."""
  @tf.autograph.experimental.do_not_convert
  def prepare(index, example):
    image, label, count = example
    key = tf.stack([tf.constant(seed, tf.int64), index])
    if untils:
      image, count = random_cut_off(image, count, untils, key, cut_off_rate)
    image = normalize(image, meta.mean, meta.std)
    if max_shift:
      image = random_time_shift(image, max_shift, key)
    if with_count:   # one more channel through the same symmetry, then split off
      image = tf.concat([image, tf.cast(count, tf.float32)[..., None]], -1)
    if augmented:
      image, label = augment(image, label, key)
    out = {"image": image, "label": tf.cast(label, tf.int32)}
    if with_count:
      out["image"], out["valid_count"] = image[..., :-1], image[..., -1]
    return out
  return prepare


def train_iterator(cfg_data, *, seed: int, start_step: int = 0) -> Iterator[dict]:
  """Infinite batches of this process's training examples.

  Yields dicts of numpy arrays: `image` float32 [B, T, H, W, C] normalized,
  `label` int32 [B, H, W] (255 = ignore), B = cfg_data.batch_size // processes;
  with `cfg_data.valid_count`, also `valid_count` float32 [B, T, H, W] (valid
  observations per month, 0 = a gap-filled month; augmented like the image).
  With `cfg_data.cut_off_months` (in-season training), each example is cut off
  after one of those calendar months, drawn per example (`random_cut_off`; only the
  share `cfg_data.cut_off_rate` of the examples when < 1); with
  `cfg_data.time_shift` > 0, its season is moved by up to that many months, earlier
  or later (`random_time_shift`: another year's phenology).
  The batches from start_step=k equal batches k, k+1, … of start_step=0.
  """
  tf = import_tf()
  builder = _builder(cfg_data)
  meta = load_meta(cfg_data, builder)
  batch = _process_share(cfg_data.batch_size)
  split = _process_split(cfg_data.train_split)
  n = builder.info.splits[split].num_examples
  if n < batch:
    raise UserError(f"{dataset_dir(cfg_data)}: split {split} has {n} examples, "
                       f"fewer than one batch of {batch}")
  with_count = bool(cfg_data.get("valid_count", False))
  untils = in_season.until_choices(meta.months, cfg_data.get("cut_off_months", ()))
  max_shift = float(cfg_data.get("time_shift", 0.0))
  cut_off_rate = float(cfg_data.get("cut_off_rate", 1.0))
  if not 0.0 <= cut_off_rate <= 1.0:
    raise UserError(f"data.cut_off_rate {cut_off_rate}: the share of examples cut off "
                    "must be in [0, 1]")
  base = builder.as_dataset(split=split, shuffle_files=False)
  base = base.map(tf.autograph.experimental.do_not_convert(
      lambda ex: (ex["image"], ex["label"],
                  ex["valid_count"] if with_count or untils else 0)))
  if cfg_data.get("cache", False):
    base = base.cache()
  buffer = max(1, min(int(cfg_data.shuffle_buffer), n))
  first_epoch, offset = divmod(start_step * batch, n)

  def epoch(e):
    return base.shuffle(buffer, seed=seed * _SEED_STRIDE + e,
                        reshuffle_each_iteration=False)

  prepare = _training_example(tf, meta, seed=seed, untils=untils, cut_off_rate=cut_off_rate,
                              max_shift=max_shift, with_count=with_count,
                              augmented=cfg_data.get("augment", True))
  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
  ds = ds.enumerate(start=first_epoch * n).skip(offset)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=True).prefetch(cfg_data.get("prefetch", 2))
  return _numpy(ds.with_options(_options(tf, cfg_data)), builder, split, cfg_data)


# --------------------------------------------------------------------------- #
# Evaluation.

_EVAL_KEYS = ("image", "label", "parcels", "zone_id", "region", "row", "col",
              "epsg", "transform")


def eval_batches(cfg_data, split: str, meta: DatasetMeta | None = None,
                 raw: bool = False) -> Iterator[dict]:
  """Every example of `split` for this process once, in fixed-shape batches.

  Images are normalized with `meta.mean` / `meta.std`: pass a checkpoint's
  DatasetMeta to evaluate it with the statistics it was trained with, whatever
  the dataset read now (a rebuilt one may have other folds, hence other
  moments). Default: the dataset's own, merged over cfg_data.train_split.

  Yields dicts: `image` float32 [B, T, H, W, C], `label` int32 [B, H, W],
  (`valid_count` float32 [B, T, H, W] when `cfg_data.valid_count`),
  `parcels` uint32 [B, H, W], `zone_id`, `region` bytes [B], `row`, `col`,
  `epsg` int32 [B], `transform` float64 [B, 6], `mask` float32 [B] (0 on
  padding). With `raw`, `image` stays uint16 [B, T, H, W, C] as stored and
  `valid_count` comes as uint8 [B, T, H, W]: what `jaxcrop.in_season.cut_off`
  takes. B = cfg_data.eval_batch_size // processes. The last batch is padded
  (zeros; label 255) and every process yields the same number of batches, so
  collective ops in a multi-host evaluation never wait on a finished host.
  """
  builder = _builder(cfg_data)   # opened here: a wrong split fails before any progress bar
  check_split(cfg_data, builder, split)
  return _eval_batches(cfg_data, builder, split, meta, raw)


def split_names(cfg_data) -> list[str]:
  """The names of the prepared dataset's splits (`test`, `fold0`, `y2023_test`, …)."""
  return list(_builder(cfg_data).info.splits)


def check_split(cfg_data, builder, split: str) -> None:
  """Raises UserError when `split` names a split the dataset does not have."""
  known = list((builder or _builder(cfg_data)).info.splits)
  unknown = [s for s in _fold_names(split) if s not in known]
  if unknown:
    raise UserError(f"split {split!r}: {', '.join(unknown)} not in "
                       f"{dataset_dir(cfg_data)} (splits: {', '.join(known)})")


def _eval_batches(cfg_data, builder, split: str, meta=None, raw=False) -> Iterator[dict]:
  tf = import_tf()
  import jax  # pylint: disable=g-import-not-at-top
  meta = load_meta(cfg_data, builder) if meta is None else meta
  batch = _process_share(cfg_data.eval_batch_size)
  count = jax.process_count()
  per_process = [builder.info.splits[_process_split(split, i, count)].num_examples
                 for i in range(count)]
  num_batches = -(-max(per_process) // batch)
  own = _process_split(split)

  @tf.autograph.experimental.do_not_convert
  def prepare(ex):
    out = {k: ex[k] for k in _EVAL_KEYS}
    if raw:
      out["valid_count"] = ex["valid_count"]
    elif cfg_data.get("valid_count", False):
      out["valid_count"] = tf.cast(ex["valid_count"], tf.float32)
    if not raw:
      out["image"] = normalize(ex["image"], meta.mean, meta.std)
    out["label"] = tf.cast(ex["label"], tf.int32)
    out["parcels"] = tf.cast(ex["parcels"], tf.uint32)
    return out

  ds = builder.as_dataset(split=own, shuffle_files=False)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
  ds = ds.prefetch(cfg_data.get("prefetch", 2)).with_options(_options(tf, cfg_data))
  done, template = 0, None
  for b in _numpy(ds, builder, own, cfg_data):
    template = template or b
    done += 1
    yield _pad_batch(b, batch)
  if template is None:
    raise UserError(f"{dataset_dir(cfg_data)}: split {own} is empty")
  for _ in range(num_batches - done):
    yield _pad_batch({k: v[:0] for k, v in template.items()}, batch)


def _pad_batch(b: dict, size: int) -> dict:
  """Pads every array of a batch to `size` examples; adds `mask` [size]."""
  n = len(b["label"])
  out = {}
  for k, v in b.items():
    fill = NO_LABEL if k == "label" else (b"" if v.dtype.kind in "OSU" else 0)
    pad = np.full((size - n,) + v.shape[1:], fill, v.dtype)
    out[k] = np.concatenate([v, pad]) if n < size else v
  out["mask"] = (np.arange(size) < n).astype(np.float32)
  return out
