"""jaxcrop.input_pipeline on a tiny cropmap dataset built from synthetic zones."""
import os
import shutil

import ml_collections
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from jaxcrop import input_pipeline as ip  # noqa: E402

tf = ip.import_tf()
import jax  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from cropcontracts import zonefolder  # noqa: E402
from cropcontracts.errors import UserError
from tfds_builder.cropmap import cropmap_dataset_builder as cb  # noqa: E402
from tests import fixtures as testing  # noqa: E402


@pytest.fixture(scope="module")
def data(tiny_zones, tiny_dataset):
  """The session's tiny zones and their dataset `tiny` (16-px patches): (zones,
  data_dir, builder)."""
  return tiny_zones, tiny_dataset.data_dir, tiny_dataset.builder


def config(data_dir, **kw):
  c = dict(name="cropmap", builder_config=testing.TINY_BUILDER["name"], data_dir=str(data_dir),
           train_split="fold0+fold1", val_split="fold2", test_split="test",
           batch_size=4, eval_batch_size=5, shuffle_buffer=64, augment=True,
           cache=False, prefetch=2)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def take(it, n):
  return [next(it) for _ in range(n)]


def test_load_meta_stats_are_the_training_zones(data):
  zones, data_dir, builder = data
  meta = ip.load_meta(config(data_dir))
  ids = builder.info.metadata["zones_per_split"]
  zfs = [zonefolder.open_zone(zones / z) for z in ids["fold0"] + ids["fold1"]]
  x = np.concatenate([z.read_image().astype(np.float64) for z in zfs], axis=1)
  x[x == 0] = np.nan
  np.testing.assert_allclose(meta.mean, np.nanmean(x, axis=(1, 2)), rtol=1e-6)
  np.testing.assert_allclose(meta.std, np.nanstd(x, axis=(1, 2)), rtol=1e-5)
  labels = np.concatenate([z.read_labels().ravel() for z in zfs])   # zones whole
  np.testing.assert_array_equal(meta.class_pixel_counts,
                                np.bincount(labels[labels != 255], minlength=24))
  assert (meta.num_classes, meta.months[0], meta.version) == (24, "2023-01", str(cb.Builder.VERSION))
  assert meta.class_names[-1] == "non_agricultural" and meta.class_pixel_counts[-1] > 0
  back = ip.DatasetMeta.from_json(meta.to_json())
  np.testing.assert_array_equal(back.std, meta.std)
  assert back.std.dtype == np.float32 and back.class_names == meta.class_names
  other = ip.load_meta(config(data_dir, train_split="fold2"))
  assert not np.allclose(other.mean, meta.mean)


def test_normalize_numpy_and_tf_agree():
  image = np.array([0, 10, 30], np.uint16).reshape(1, 1, 3, 1)  # [T, H, W, C]
  mean, std = np.array([[10.0]]), np.array([[4.0]])
  expected = np.array([0.0, 0.0, 5.0], np.float32).reshape(1, 1, 3, 1)
  np.testing.assert_array_equal(ip.normalize(image, mean, std), expected)
  np.testing.assert_array_equal(ip.normalize(tf.constant(image), mean, std).numpy(),
                                expected)
  import jax  # the mapper normalizes in its jitted tile function
  jitted = jax.jit(lambda x: ip.normalize(x, mean, std))
  np.testing.assert_array_equal(jitted(image), expected)
  rng = np.random.default_rng(0)
  image = rng.integers(0, 4000, (3, 5, 5, 2), dtype=np.uint16)
  mean, std = rng.uniform(500, 2000, (3, 2)), rng.uniform(300, 900, (3, 2))
  np.testing.assert_allclose(jax.jit(lambda x: ip.normalize(x, mean, std))(image),
                             ip.normalize(image, mean, std),
                             rtol=1e-6, atol=1e-6)   # XLA may round the division by 1 ulp


def test_augment_moves_label_with_image():
  h = w = 16
  pos = np.arange(h * w).reshape(h, w)  # every pixel encodes its position
  image = np.broadcast_to((pos + 1)[None, :, :, None], (2, h, w, 3)).astype(np.float32)
  label = pos.astype(np.uint8)
  seen = set()
  for i in range(40):
    out_i, out_l = ip.augment(tf.constant(image), tf.constant(label),
                              tf.constant([7, i], tf.int64))
    out_i, out_l = out_i.numpy(), out_l.numpy()
    np.testing.assert_array_equal(out_i[1, ..., 2], out_i[0, ..., 0])
    np.testing.assert_array_equal(out_i[0, ..., 0] - 1, out_l)
    seen.add(out_l.tobytes())
  assert len(seen) == 8  # all symmetries of the square occur


def test_time_shift_reads_each_month_between_its_neighbours_by_hand():
  series = np.array([0., 10., 20., 30.], np.float32)[:, None, None, None]   # [T, 1, 1, 1]
  shifted = lambda s: ip.time_shift(tf.constant(series), tf.constant(s, tf.float32)
                                    ).numpy()[:, 0, 0, 0].tolist()
  assert shifted(0.0) == [0, 10, 20, 30]
  assert shifted(0.5) == [0, 5, 15, 25]        # later: month t reads t - 0.5; clamped
  assert shifted(-0.5) == [5, 15, 25, 30]      # earlier
  assert shifted(-0.25) == [2.5, 12.5, 22.5, 30]


def test_random_time_shift_is_keyed_by_the_example_and_bounded():
  ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None, None], (12, 2, 2, 1))
  draw = lambda i: ip.random_time_shift(tf.constant(ramp), 0.75,
                                        tf.constant([3, i], tf.int64)).numpy()
  shifts = [ramp[5, 0, 0, 0] - draw(i)[5, 0, 0, 0] for i in range(30)]  # mid-season months
  assert all(-0.75 <= s <= 0.75 for s in shifts) and len(set(np.round(shifts, 5))) == 30
  np.testing.assert_array_equal(draw(7), draw(7))      # the same example, the same shift


def test_train_iterator_is_deterministic_and_resumes(data):
  _, data_dir, _ = data
  cfg = config(data_dir)
  first = take(ip.train_iterator(cfg, seed=3), 10)  # 32 examples: 8 batches / epoch
  assert first[0]["image"].shape == (4, 12, 16, 16, 4)
  assert first[0]["image"].dtype == np.float32 and first[0]["label"].dtype == np.int32
  again = take(ip.train_iterator(cfg, seed=3), 10)
  resumed = take(ip.train_iterator(cfg, seed=3, start_step=4), 3)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(first[4:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  cached = take(ip.train_iterator(config(data_dir, cache=True), seed=3), 7)
  for a, b in zip(first, cached):
    np.testing.assert_array_equal(a["image"], b["image"])
  other = next(ip.train_iterator(cfg, seed=4))
  assert not np.array_equal(other["image"], first[0]["image"])
  assert not np.array_equal(first[0]["image"], first[8]["image"])  # reshuffled epoch


def _symmetries(image, label):
  for k in range(4):
    for flip in (False, True):
      i, l = np.rot90(image, k, axes=(1, 2)), np.rot90(label, k)
      yield (i[:, :, ::-1], l[:, ::-1]) if flip else (i, l)


@pytest.mark.parametrize("deterministic", [True, False])
def test_train_epoch_is_a_permutation_of_augmented_examples(data, deterministic):
  """Also with `deterministic=False` (order free, content the same)."""
  _, data_dir, builder = data
  cfg = config(data_dir, deterministic=deterministic)
  assert ip._options(tf, cfg).deterministic is deterministic
  meta = ip.load_meta(cfg)
  originals = [(ip.normalize(e["image"], meta.mean, meta.std), e["label"]) for e in
               tfds.as_numpy(builder.as_dataset("fold0+fold1", shuffle_files=False))]
  matched = []
  for b in take(ip.train_iterator(cfg, seed=0), 8):   # one epoch
    for image, label in zip(b["image"], b["label"]):
      hits = [n for n, (oi, ol) in enumerate(originals)
              if any(np.array_equal(si, image) and np.array_equal(sl, label)
                     for si, sl in _symmetries(oi, ol))]
      assert len(hits) == 1
      matched += hits
  assert sorted(matched) == list(range(32))


def test_eval_batches_pad_the_last_batch(data):
  _, data_dir, builder = data
  batches = list(ip.eval_batches(config(data_dir), "test"))
  assert [b["mask"].tolist() for b in batches][-1] == [1, 1, 1, 0, 0]
  assert len(batches) == 4 and all(b["image"].shape == (5, 12, 16, 16, 4) for b in batches)
  last = batches[-1]
  assert (last["image"][3:] == 0).all() and (last["label"][3:] == 255).all()
  assert last["zone_id"][3:].tolist() == [b"", b""] and last["parcels"].dtype == np.uint32
  keys = {(z, r, c) for b in batches for z, r, c, m in
          zip(b["zone_id"], b["row"], b["col"], b["mask"]) if m}
  expected = {(e["zone_id"], e["row"], e["col"]) for e in
              tfds.as_numpy(builder.as_dataset("test"))}
  assert keys == expected and len(keys) == 18


def test_eval_batches_normalize_with_the_given_statistics(data):
  """A checkpoint's mean/std, not the dataset's moments, when they are given."""
  _, data_dir, builder = data
  cfg = config(data_dir)
  own = ip.load_meta(cfg)
  ckpt = ip.DatasetMeta.from_json(own.to_json())
  ckpt.mean, ckpt.std = own.mean + 100, own.std * 3
  raw = next(iter(tfds.as_numpy(builder.as_dataset("test", shuffle_files=False).batch(5))))
  got = next(ip.eval_batches(cfg, "test", meta=ckpt))["image"]
  np.testing.assert_allclose(got, ip.normalize(raw["image"], ckpt.mean, ckpt.std), rtol=1e-6)
  default = next(ip.eval_batches(cfg, "test"))["image"]
  np.testing.assert_allclose(default, ip.normalize(raw["image"], own.mean, own.std), rtol=1e-6)
  assert not np.allclose(got, default)


def test_processes_share_batches_and_examples(data, monkeypatch):
  _, data_dir, _ = data
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  keys, lengths = [], []
  for index in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    batches = list(ip.eval_batches(config(data_dir, eval_batch_size=6), "fold2"))
    assert all(len(b["mask"]) == 3 for b in batches)
    lengths.append(len(batches))
    keys += [(z, r, c) for b in batches for z, r, c, m in
             zip(b["zone_id"], b["row"], b["col"], b["mask"]) if m]
    assert next(ip.train_iterator(config(data_dir), seed=0))["image"].shape[0] == 2
  assert lengths[0] == lengths[1] and len(keys) == len(set(keys)) == 16
  with pytest.raises(UserError, match="batch size 5 is not divisible by the 2 processes"):
    next(ip.train_iterator(config(data_dir, batch_size=5), seed=0))


def test_truncated_shard_names_file_and_rebuild(data, tmp_path):
  _, data_dir, _ = data
  copy = tmp_path / "data"
  shutil.copytree(data_dir / "cropmap", copy / "cropmap")
  shard = copy / "cropmap" / "tiny" / str(cb.Builder.VERSION) / "cropmap-fold1.tfrecord-00000-of-00001"
  raw = shard.read_bytes()
  shard.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(UserError, match=r"cropmap-fold1.tfrecord-00000-of-00001: "
                     r"damaged or truncated .* rebuild with `tfds build "
                     r"tfds_builder/cropmap --config=tiny"):
    take(ip.train_iterator(config(copy, augment=False), seed=0), 4)


def test_missing_dataset_says_how_to_build(tmp_path):
  with pytest.raises(UserError, match=r"no prepared cropmap dataset; build it with "
                     r"`tfds build tfds_builder/cropmap --config=tiny"):
    ip.load_meta(config(tmp_path))


def test_valid_count_delivered_when_asked_and_augmented_with_the_image(data):
  _, data_dir, builder = data
  cfg = config(data_dir, valid_count=True)
  meta = ip.load_meta(cfg)
  originals = [(np.concatenate([ip.normalize(e["image"], meta.mean, meta.std),
                                e["valid_count"][..., None].astype(np.float32)], -1), e["label"])
               for e in tfds.as_numpy(builder.as_dataset("fold0+fold1", shuffle_files=False))]
  assert any(o[0][..., -1].min() == 0 and o[0][..., -1].max() > 0 for o in originals)
  b = next(ip.train_iterator(cfg, seed=0))
  assert b["valid_count"].shape == (4, 12, 16, 16) and b["valid_count"].dtype == np.float32
  for image, count, label in zip(b["image"], b["valid_count"], b["label"]):
    both = np.concatenate([image, count[..., None]], -1)
    assert sum(any(np.array_equal(si, both) and np.array_equal(sl, label)
                   for si, sl in _symmetries(oi, ol)) for oi, ol in originals) == 1
  assert "valid_count" not in next(ip.train_iterator(config(data_dir), seed=0))
  e = next(ip.eval_batches(cfg, "test"))
  assert e["valid_count"].shape == (5, 12, 16, 16)
  assert "valid_count" not in next(ip.eval_batches(config(data_dir), "test"))


def test_tf_data_autotuning_is_off():
  """tf.data's autotuning thread slept up to a minute before a finished training's
  iterator could be destroyed (a gdb backtrace: ~RootDataset::Iterator waiting on
  Model::OptimizeLoop), 37–57 s at the end of every demo training (docs/benchmarks.md)."""
  from jaxcrop.input_pipeline import _options, import_tf
  opts = _options(import_tf(), {"deterministic": True})
  assert opts.autotune.enabled is False and opts.deterministic is True
