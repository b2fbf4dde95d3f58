"""The cropmap `points` config (tfds_builder/cropmap/points.py): splits, examples, metadata."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from jaxcrop.input_pipeline import import_tf  # noqa: E402

import_tf()
import tensorflow_datasets as tfds  # noqa: E402

from cropcontracts import moments as moments_lib  # noqa: E402
from cropcontracts import pointfolder  # noqa: E402
from cropcontracts.errors import UserError  # noqa: E402
from tfds_builder.cropmap import cropmap_dataset_builder as cb  # noqa: E402
from tfds_builder.cropmap import points  # noqa: E402


def _folder(path, labels, groups=None, seed=0):
  rng = np.random.default_rng(seed)
  n = len(labels)
  image = rng.integers(1, 5000, (n, 12, 4)).astype(np.uint16)
  table = [dict(point_id=f"p{i}", lon=f"{1 + i / 100:.7f}", lat="48.0000000",
                group="" if groups is None else groups[i], class_id=int(labels[i]),
                class_name="x") for i in range(n)]
  meta = dict(year=2023, months=[f"2023-{m:02d}" for m in range(1, 13)],
              bands=["B2", "B3", "B4", "B8"], nomenclature="v3")
  return pointfolder.write_points(path, image, rng.integers(0, 4, (n, 12)),
                                  np.asarray(labels, np.uint8), table, meta)


def test_stratified_folds_are_disjoint_cover_every_point_and_balance_each_class():
  labels = np.repeat([0, 5, 7], [23, 11, 6])
  split = points.stratified_splits(labels, num_folds=3)
  assert set(split) == {"test", "fold0", "fold1", "fold2"}   # one split per point
  for c, n in ((0, 23), (5, 11), (7, 6)):
    here = split[labels == c]
    assert (here == "test").sum() == int(np.floor(n * 0.2 + 0.5))
    per_fold = [(here == f"fold{k}").sum() for k in range(3)]
    assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n - (here == "test").sum()
  totals = [(split == f"fold{k}").sum() for k in range(3)]
  assert max(totals) - min(totals) <= 1
  np.testing.assert_array_equal(split, points.stratified_splits(labels, num_folds=3))


def test_group_folds_keep_each_group_whole():
  rng = np.random.default_rng(1)
  groups = np.array([f"g{k}" for k in rng.integers(0, 12, 200)], object)
  split = points.group_splits(groups, num_folds=3)
  for g in set(groups):
    assert len(set(split[groups == g])) == 1
  shares = {s: (split == s).mean() for s in set(split)}
  assert set(shares) == {"test", "fold0", "fold1", "fold2"}


def test_too_few_points_for_the_folds_is_one_line(tmp_path):
  pf = pointfolder.open_points(_folder(tmp_path / "p", [0, 0, 5]))
  with pytest.raises(UserError, match=r"3 points are too few for a test split and 3 folds"):
    points.assign_splits(pf, 3)


def test_build_points_as_1x1_examples_with_fold_moments(tmp_path):
  labels = np.repeat([0, 5], [12, 8])
  folder = _folder(tmp_path / "pts", labels, groups=[f"g{i % 7}" for i in range(20)])
  builder = cb.Builder(config="points", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(folder)))
  pf = pointfolder.open_points(folder)
  md = builder.info.metadata
  seen = {}
  for split in ("test", "fold0", "fold1", "fold2"):
    for e in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
      i = pf.point_ids.index(e["zone_id"].decode())
      assert e["image"].shape == (12, 1, 1, 4) and e["label"].shape == (1, 1)
      np.testing.assert_array_equal(e["image"][:, 0, 0], pf.image[i])
      np.testing.assert_array_equal(e["valid_count"][:, 0, 0], pf.valid_count[i])
      assert e["label"][0, 0] == pf.label[i] and e["parcels"][0, 0] == i + 1
      seen.setdefault(pf.groups[i], set()).add(split)
    if split != "test":
      idx = [pf.point_ids.index(p) for p in md["zones_per_split"][split]]
      m = moments_lib.moments_of(pf.image[idx].transpose(1, 0, 2)[:, :, None, :])
      assert md["moments_per_fold"][split] == m.to_json()
  assert all(len(s) == 1 for s in seen.values())     # grouped: a group in one split
  assert sum(md["patches_per_split"].values()) == 20 and md["patch_size"] == 1
  assert md["nomenclature_version"] == "v3" and len(md["class_names"]) == 24
