"""The multi-year dataset: zone-years split by zone and by year (cropcontracts.years)."""
import json

import ml_collections
import numpy as np
import pytest

from cropcontracts import moments as moments_lib
from cropcontracts import years as years_lib
from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from prep.demo import zonefolders
from tfds_builder.cropmap import patching

YEARS = (2022, 2023)
CONFIG = dict(name="tiny_years", patch_size=16, num_folds=2, years=YEARS)


def _zone_years(root):
  for y in YEARS:
    zonefolders.write_zones(root / str(y), per_region=3, months=zonefolder.month_labels(y))
  return root


@pytest.fixture(scope="module")
def years_dataset(tmp_path_factory):
  """The tiny multi-year dataset: 2 regions x 3 zones x 2 years, 16-px patches, 2 folds."""
  import tensorflow_datasets as tfds
  from tfds_builder.cropmap import cropmap_dataset_builder as cb
  root = _zone_years(tmp_path_factory.mktemp("zone_years"))
  data_dir = tmp_path_factory.mktemp("data")
  builder = cb.Builder(config=cb.CropmapConfig(**CONFIG), data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(root)))
  return root, data_dir, builder


def test_every_zone_year_is_in_exactly_one_split(years_dataset):
  _, _, builder = years_dataset
  md = builder.info.metadata
  splits = md["zones_per_split"]
  assert sorted(splits) == sorted(years_lib.all_splits(YEARS, ["test", "fold0", "fold1"]))
  assert sorted(builder.info.splits) == sorted(splits)
  zone_years = [(years_lib.parse(s)[0], z) for s, zs in splits.items() for z in zs]
  assert len(zone_years) == len(set(zone_years)) == 2 * 2 * 3      # none in two splits
  spatial = {}
  for s, zs in splits.items():
    for z in zs:
      spatial.setdefault(z, set()).add(years_lib.parse(s)[1])
  assert all(len(v) == 1 for v in spatial.values())                # a zone's split every year
  assert splits["y2023_test"] == ["alpha_0", "beta_0"] == splits["y2022_test"]
  assert md["years"] == list(YEARS) and sorted(md["moments_per_fold"]) == [
      "y2022_fold0", "y2022_fold1", "y2023_fold0", "y2023_fold1"]


def test_moments_come_from_the_training_years_only(years_dataset):
  from jaxcrop import input_pipeline
  _, data_dir, builder = years_dataset
  md = builder.info.metadata
  split = years_lib.heldout(YEARS, 2023, 2)
  assert split == dict(train="y2022_fold0", val="y2022_fold1", test="y2023_test",
                       seen_space="y2023_fold0+y2023_fold1", same_year="y2022_test")
  cfg = ml_collections.ConfigDict(dict(name="cropmap", builder_config="tiny_years",
                                       data_dir=str(data_dir), train_split=split["train"]))
  meta = input_pipeline.load_meta(cfg, builder)
  mean, _ = moments_lib.mean_std(moments_lib.Moments.from_json(
      md["moments_per_fold"]["y2022_fold0"]))
  np.testing.assert_allclose(meta.mean, mean)
  assert not np.allclose(meta.mean, md["normalization"]["mean"])   # all years' folds


def test_heldout_splits_and_a_test_year_in_training(years_dataset):
  three = years_lib.heldout((2021, 2022, 2023), 2023, 3, validation="previous")
  assert three["train"] == "y2021_fold0+y2021_fold1+y2021_fold2"
  assert three["val"] == "y2022_fold0+y2022_fold1+y2022_fold2"
  years_lib.check_heldout(three["train"], three["val"], three["test"])
  with pytest.raises(UserError, match=(
      r"^config.data.train_split 'y2022_fold0\+y2023_fold0' holds test year 2023 of "
      r"test_split 'y2023_test'; train and validate on the other years")):
    years_lib.check_heldout("y2022_fold0+y2023_fold0", "y2022_fold1", "y2023_test")
  with pytest.raises(UserError, match="test year 2020 is not a year of the dataset"):
    years_lib.heldout(YEARS, 2020, 2)


def test_a_zone_year_with_other_months_is_refused_naming_the_folder(tmp_path):
  root = _zone_years(tmp_path)
  bad = root / "2023" / "beta_2"
  zonefolders.write_zone(bad, zonefolder.open_zone(bad).zone,
                         months=zonefolder.month_labels(2023)[:11])
  by_year = {y: patching.find_labelled_zones(root / str(y)) for y in YEARS}
  with pytest.raises(UserError, match=(
      rf"^zone-year {bad}: months 2023-01..2023-11 \(11\) differ from the dataset's "
      rf"\(2022-01..2022-12 in {root / '2022' / 'alpha_0'}, 12 months of each year\); "
      rf"composite it with the same months of 2023$")):
    patching.check_zone_years(by_year, "v3")
  misplaced = {2022: by_year[2022], 2023: by_year[2023][:1] + by_year[2022][1:2]}
  with pytest.raises(UserError, match=rf"^zone-year {root / '2022' / 'alpha_1'}: holds 2022, "
                                      rf"not 2023; move it to"):
    patching.check_zone_years(misplaced, "v3")
