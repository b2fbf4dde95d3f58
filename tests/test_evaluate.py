"""Evaluation (parcel votes by hand, outputs, baseline) and cross-validation, on fake data."""
import json

import numpy as np
import pytest

from jaxcrop import baseline, cv, evaluate, train
from tests.fixtures import FakeData, tiny_config


def test_parcel_votes_by_hand():
  zone = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0])
  parcel = np.array([1, 1, 1, 1, 1, 1, 1, 2, 0])     # parcel 1 of zone 0 ≠ parcel 1 of zone 1
  label = np.array([2, 2, 255, 2, 0, 0, 0, 255, 1])  # zone-0 parcel 2 has no label: left out
  pred = np.array([2, 1, 1, 1, 0, 2, 0, 1, 1])       # votes: zone0/p1 → 1 (3 of 4), zone1/p1 → 0
  truth, vote = evaluate.parcel_votes(zone, parcel, label, pred, num_classes=3)
  assert truth.tolist() == [2, 0] and vote.tolist() == [1, 0]


def test_baseline_sampling_and_features():
  image = np.arange(2 * 3 * 2 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 2, 4)
  f = baseline.pixel_features(image)
  assert f.shape == (8, 12)
  np.testing.assert_array_equal(f[1], image[0, :, 0, 1, :].ravel())  # pixel (0, 0, 1): months × bands
  batch = {"image": image, "label": np.array([[[0, 1], [255, 1]], [[2, 2], [2, 2]]]),
           "mask": np.array([1.0, 0.0])}                  # second example is padding
  x, y = baseline.sample_pixels([batch], total_labelled=3, max_pixels=10, seed=0)
  assert sorted(y.tolist()) == [0, 1, 1] and x.shape == (3, 12)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("eval")
  train.train_and_evaluate(tiny_config(), workdir, data=FakeData())  # compiled in test_train
  return workdir


def test_evaluate_writes_model_and_baseline_metrics(trained_dir):
  result = evaluate.evaluate(trained_dir, data=FakeData())
  saved = json.loads((trained_dir / "eval" / "metrics.json").read_text())
  assert saved["pixel"]["model"]["macro_f1"] == pytest.approx(result["pixel"]["model"]["macro_f1"])
  # 4 + 3 unpadded examples (4 batches of 4, one padding), 14 labelled rows of 16 px each.
  assert saved["pixel"]["model"]["num_pixels"] == 7 * 14 * 16
  assert saved["pixel"]["baseline"]["overall_accuracy"] > 0.9      # separable fake classes
  # 16 parcels (4×4 px) per example, one zone per example; every parcel has a labelled pixel.
  assert saved["parcel"]["model"]["num_parcels"] == 7 * 16
  assert set(saved["per_region"]) == {"north", "south"}
  south = saved["per_region"]["south"]["model"]
  assert south["num_pixels"] == 3 * 14 * 16
  assert south["parcel"]["num_parcels"] == 3 * 16 and len(south["per_class"]) == 3
  north = saved["per_region"]["north"]["model"]
  assert north["parcel"]["num_parcels"] + south["parcel"]["num_parcels"] == \
      saved["parcel"]["model"]["num_parcels"]
  assert saved["nomenclature_version"] == "v1"
  assert (trained_dir / "eval" / "confusion_pixel.png").stat().st_size > 1000
  md = (trained_dir / "eval" / "metrics.md").read_text()
  assert "| macro_f1 |" in md and "| region | model pixel | model parcel |" in md
  assert (trained_dir / "baseline" / "model.pkl").exists()


def test_cv_folds_scores_and_retrain(tmp_path, monkeypatch):
  """CV bookkeeping with training stubbed: score = lr·1000 + fold index (by hand)."""
  calls = []

  def fake_train(config, workdir, *, data=None):
    calls.append((config.data.train_split, config.data.val_split, config.optimizer.lr,
                  config.train.eval_every, str(workdir)))
    fold = int(config.data.val_split[-1])
    return {"best_val_macro_f1": config.optimizer.lr * 1000 + fold, "step": config.train.num_steps}

  monkeypatch.setattr(cv.train, "train_and_evaluate", fake_train)
  c = tiny_config()
  c.cv.grid = dict(lr=(1e-3, 2e-3))
  out = cv.run_cv(c, tmp_path)
  assert [call[:2] for call in calls[:3]] == [("fold1+fold2", "fold0"), ("fold0+fold2", "fold1"),
                                             ("fold0+fold1", "fold2")]
  assert [r["name"] for r in out["results"]] == ["lr=0.001", "lr=0.002"]
  assert out["results"][1]["val_macro_f1"] == pytest.approx([2, 3, 4])
  assert out["results"][1]["mean"] == pytest.approx(3) and \
      out["results"][1]["std"] == pytest.approx(np.std([2, 3, 4]))
  assert out["best"]["name"] == "lr=0.002"
  final = calls[-1]      # retrain: best lr, all folds, one evaluation at the end
  assert final[:4] == ("fold0+fold1+fold2", c.data.val_split, 2e-3, c.train.num_steps)
  assert final[4].endswith("final") and calls[3][4].endswith("cv/lr=0.002/val_fold0")
  assert "| lr=0.002 | 2.0000 | 3.0000 | 4.0000 | 3.0000 ± 0.8165 |" in \
      (tmp_path / "cv" / "results.md").read_text()


def test_apply_setting_paths():
  c = cv.apply_setting(tiny_config(), {"kernel_size": 7, "model__unet__norm": "group"})
  assert c.model.temporal.kernel_size == 7 and c.model.unet.norm == "group"
