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


def _years_config(data_dir):
  """`configs/hybrid.py:tiny,years` on the tiny multi-year dataset: train 2022 (fold0),
  validate 2022 (fold1), test the unseen 2023; 4 steps."""
  from configs.hybrid import get_config
  c = get_config("tiny,years")
  s = years_lib.heldout(YEARS, 2023, 2)
  c.data.update(builder_config=CONFIG["name"], data_dir=str(data_dir), shuffle_buffer=16,
                train_split=s["train"], val_split=s["val"], test_split=s["test"])
  c.years.update(same_year=s["same_year"], seen_space=s["seen_space"])
  c.train.update(num_steps=4, eval_every=2, checkpoint_every=2, tensorboard=False)
  c.eval.baseline.update(max_iter=3)
  return c


def test_the_years_variant_holds_out_2023():
  from configs.hybrid import get_config
  c = get_config("demo,years")
  assert (c.data.builder_config, c.data.train_split, c.data.val_split, c.data.test_split) == (
      "demo_years", "y2022_fold0+y2022_fold1", "y2022_fold2", "y2023_test")
  assert (c.years.same_year, c.years.seen_space) == (
      "y2022_test", "y2023_fold0+y2023_fold1+y2023_fold2")
  assert get_config("years").data.train_split.startswith("y2021_fold0+y2021_fold1+y2022_fold0")


def test_train_on_2022_and_evaluate_on_the_unseen_2023(years_dataset, tmp_path, capsys):
  from jaxcrop import evaluate, train
  from tests.fixtures import assert_error, run
  root, data_dir, _ = years_dataset
  cfg = _years_config(data_dir)
  bad = cfg.copy_and_resolve_references()
  bad.data.train_split = "y2022_fold0+y2023_fold0"
  with pytest.raises(UserError, match="holds test year 2023 of test_split 'y2023_test'"):
    train.train_and_evaluate(bad, tmp_path / "bad")
  assert not (tmp_path / "bad").exists()          # refused before anything is written
  train.train_and_evaluate(cfg, tmp_path / "w")
  rc, out, err = run(evaluate.main, ["--workdir", tmp_path / "w"], capsys)
  assert rc == 0, err
  metrics = json.loads((tmp_path / "w" / "eval" / "metrics.json").read_text())
  section = metrics["unseen_year"]
  assert (section["test_year"], section["train_years"]) == (2023, [2022])
  assert section["splits"] == dict(unseen_year="y2023_test", same_year="y2022_test",
                                   unseen_year_seen_space="y2023_fold0+y2023_fold1")
  for tier in ("tier1", "tier2", "tier3"):
    for p in ("model", "baseline"):
      m = section["tiers"][tier][p]["macro_f1"]
      assert m["unseen_year"] == metrics["tiers"][tier]["pixel"][p]["macro_f1"]
      assert m["drop"] == pytest.approx(m["same_year"] - m["unseen_year"])
      assert set(m) == {"same_year", "unseen_year", "unseen_year_seen_space", "drop"}
  wheat = section["tiers"]["tier3"]["model"]["per_class"]["winter_wheat"]
  assert wheat["drop"] == pytest.approx(wheat["same_year"] - wheat["unseen_year"])
  prev = section["previous_year_baseline"]
  assert (prev["year"], prev["previous_year"], prev["zones"]) == (2023, 2022,
                                                                  ["alpha_0", "beta_0"])
  # write_zones draws the same crops each year: last year's RPG is this year's truth
  assert prev["tiers"]["tier3"]["pixel"]["macro_f1"] == 1.0
  assert prev["parcels"]["unmatched"] == 0
  assert "unseen year\nmacro-F1 (pixel)" in out and "tier3 previous-year RPG" in out
  # season alignment (the years variant): one shift per year and region, in months
  shifts = metrics["season_shift"]["months"]
  assert set(shifts) == {"2023", "2022"}
  assert all(set(by) == {"Alpha", "Beta"} for by in shifts.values()), shifts
  assert all(-1.5 <= v <= 1.5 for by in shifts.values() for v in by.values())
  assert metrics["season_shift"]["reference"].startswith("training split's profile")
  reference = json.loads((tmp_path / "w" / "season_reference.json").read_text())
  assert set(reference["regions"]) == {"Alpha", "Beta", "*"}
  rc, _, err = run(evaluate.main, ["--workdir", tmp_path / "w", "--split",
                                   "y2022_test+y2023_test"], capsys)
  assert_error(rc, err, "split 'y2022_test+y2023_test' spans the years 2022, 2023: "
                        "data.align_season aligns one year at a time; evaluate each year's "
                        "split on its own (--split y2023_test)")
  md = (tmp_path / "w" / "eval" / "metrics.md").read_text()
  assert "## Unseen year" in md and "tier3 previous-year RPG" in md


def test_leave_one_year_out_cross_validation_folds():
  from configs.hybrid import get_config
  from jaxcrop import cv
  c = get_config("demo,years,loyo")
  assert c.cv.folds == ("y2022_fold0+y2022_fold1+y2022_fold2",
                        "y2023_fold0+y2023_fold1+y2023_fold2") and "years" not in c
  assert c.data.test_split == "y2022_test+y2023_test"
  assert not c.data.align_season              # `years` turned it on; nothing to align to
  for k, (train, val) in enumerate([(2023, 2022), (2022, 2023)]):
    f = cv.fold_config(c, list(c.cv.folds), k)
    assert years_lib.years_of(f.data.train_split) == [train]
    assert years_lib.years_of(f.data.val_split) == [val]
    assert years_lib.label(f.data.val_split) == f"y{val}"      # the run's folder: val_y2022


def test_leave_one_year_out_cv_mean_and_std_over_years(tmp_path, monkeypatch):
  """jaxcrop.cv with the :loyo folds, training stubbed: score = 0.5 + (year - 2022) / 10."""
  from configs.hybrid import get_config
  from jaxcrop import cv
  calls = []

  def fake_train(config, workdir, *, data=None):
    calls.append((config.data.train_split, config.data.val_split, str(workdir)))
    year = years_lib.years_of(config.data.val_split)[0]
    return {"best_val_macro_f1": 0.5 + (year - 2022) / 10, "step": 1}

  monkeypatch.setattr(cv.train, "train_and_evaluate", fake_train)
  c = get_config("tiny,years,loyo")
  c.cv.grid = dict(lr=(1e-3,))
  c.cv.evaluate = False
  out = cv.run_cv(c, tmp_path, retrain=False)
  g = {y: years_lib.year_group(y, 3) for y in (2021, 2022, 2023)}
  assert [call[:2] for call in calls] == [(f"{g[2022]}+{g[2023]}", g[2021]),
                                          (f"{g[2021]}+{g[2023]}", g[2022]),
                                          (f"{g[2021]}+{g[2022]}", g[2023])]
  assert calls[0][2].endswith("cv/lr=0.001/val_y2021")
  row = out["results"][0]
  assert row["val_macro_f1"] == pytest.approx([0.4, 0.5, 0.6])
  assert (row["mean"], row["std"]) == (pytest.approx(0.5), pytest.approx(np.std([.4, .5, .6])))
