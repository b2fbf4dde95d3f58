"""Calibration: temperature scaling, ECE and reliability by hand; the temperature
fitted at the end of training, applied by predict, measured by evaluate."""
import json

import numpy as np
import pytest

from cropcontracts.errors import UserError
from jaxcrop import calibrate, calibration, evaluate
from tests.fixtures import FakeData, private_copy


def test_ece_and_reliability_by_hand():
  conf = np.array([0.9, 0.9, 0.6, 0.2])
  correct = np.array([True, False, True, False])
  # bins (lo, hi] of 1/15: 0.9 -> 13, 0.6 -> 8, 0.2 -> 2
  assert calibration.bin_index(conf).tolist() == [13, 13, 8, 2]
  assert calibration.bin_index(np.array([0.0, 1 / 15, 1.0])).tolist() == [0, 0, 14]
  # 2/4 |0.5 - 0.9| + 1/4 |1 - 0.6| + 1/4 |0 - 0.2|
  assert calibration.ece(conf, correct) == pytest.approx(0.2 + 0.1 + 0.05)
  r = calibration.reliability(conf, correct)
  assert r["count"].sum() == 4 and r["count"][13] == 2
  assert r["accuracy"][13] == 0.5 and r["confidence"][8] == pytest.approx(0.6)
  assert np.isnan(r["accuracy"][0])
  assert calibration.ece(np.zeros(0), np.zeros(0, bool)) == 0.0
  assert calibration.ece(np.array([0.7, 0.7]), np.array([True, False]), bins=1) == \
      pytest.approx(0.2)


def test_fit_temperature_by_hand():
  """Every pixel has logits (4, 0) and 3 of 4 are class 0: the NLL is least where
  the tempered softmax gives class 0 probability 3/4, sigmoid(4 / T) = 3/4:
  T = 4 / ln 3."""
  logits = np.tile([4.0, 0.0], (4, 1))
  labels = np.array([0, 0, 0, 1])
  t = calibration.fit_temperature(logits, labels)
  assert t == pytest.approx(4 / np.log(3), rel=1e-6)
  p = np.exp(calibration.log_softmax(logits, t))
  assert p[0, 0] == pytest.approx(0.75)
  assert calibration.nll(logits, labels, t) < calibration.nll(logits, labels, 1.0)
  # An over-confident model is cooled (T > 1), an under-confident one sharpened.
  rng = np.random.default_rng(0)
  z = rng.normal(size=(2000, 5)) * 3
  y = np.array([rng.choice(5, p=np.exp(calibration.log_softmax(r, 1.0))) for r in z])
  assert calibration.fit_temperature(z * 4, y) == pytest.approx(4, rel=0.1)
  assert calibration.fit_temperature(z / 2, y) == pytest.approx(0.5, rel=0.1)
  assert calibration.fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0
  # a model always wrong is cooled as far as allowed
  assert calibration.fit_temperature(np.tile([0.0, 3.0], (3, 1)), np.zeros(3, int)) == \
      calibration.T_MAX


def test_tier_probabilities_and_confidence_by_hand():
  probs = np.array([[0.5, 0.1, 0.4],       # classes 0, 1 in group 0; class 2 in group 1
                    [0.2, 0.3, 0.5]])
  parents = np.array([0, 0, 1])
  np.testing.assert_allclose(calibration.tier_probs(probs, parents, 2),
                             [[0.6, 0.4], [0.5, 0.5]])
  # the tier map's class is the parent of the tier-3 argmax, as in tiling.tier_maps
  conf, correct = calibration.tier_confidence(probs, np.array([1, 0]), parents, 2)
  np.testing.assert_allclose(conf, [0.6, 0.5])
  assert correct.tolist() == [True, False]


def test_tap_keeps_an_even_sample_aligned_with_the_labels():
  seen = []

  def logits_fn(image, inputs):
    seen.append(image.shape[0])
    return np.eye(3, dtype=np.float32)[image[..., 0].astype(int) % 3]   # [B, 2, 2, 3]
  tap = calibrate.Tap(logits_fn, max_pixels=3)
  labels = []
  for i in range(5):                       # 5 batches of 1 example of 2 x 2 pixels
    image = np.arange(4 * i, 4 * i + 4).reshape(1, 2, 2, 1)
    assert tap(image).tolist() == (image[..., 0] % 3).tolist()
    index = np.arange(4 * i, 4 * i + 4)
    labels.append(np.where(index % 5 == 4, 255, index % 3))
  logits, got = tap.sample(np.concatenate(labels))
  # 20 pixels, memory bounded: every 4th kept (0, 4, 8, 12, 16), less the unlabelled 4
  assert got.tolist() == [0, 2, 0, 1] and (logits.argmax(-1) == got).all()


@pytest.fixture(scope="module")
def workdir(tiny_workdir, tmp_path_factory):
  return private_copy(tiny_workdir[0], tmp_path_factory.mktemp("calib"))


def test_fit_record_evaluate_and_predict_temperature(workdir, capsys):
  assert calibrate.read(workdir) is None and calibrate.temperature(workdir, 6) == 1.0
  record = calibrate.fit_and_record(workdir, data=FakeData())
  saved = json.loads((workdir / calibrate.FILE).read_text())
  assert saved == record and saved["format"] == "jaxcrop-calibration/1"
  assert saved["nll_after"] <= saved["nll_before"] + 1e-9
  assert calibrate.temperature(workdir, saved["step"]) == saved["temperature"]
  assert calibrate.temperature(workdir, saved["step"] + 1) == 1.0   # another checkpoint
  result = evaluate.evaluate(workdir, data=FakeData(), with_baseline=False)
  section = json.loads((workdir / "eval" / "metrics.json").read_text())["calibration"]
  assert section == json.loads(json.dumps(result["calibration"]))
  assert section["temperature"] == saved["temperature"] and section["bins"] == 15
  assert set(section["tiers"]) == {"tier1", "tier2", "tier3"}
  # tier 1 of the fake tree is one family: always right, confidence 1
  assert section["tiers"]["tier1"]["ece_before"] == pytest.approx(0, abs=1e-6)
  for t in (1, 2, 3):
    assert (workdir / "eval" / f"reliability_tier{t}.png").stat().st_size > 1000
  md = (workdir / "eval" / "metrics.md").read_text()
  assert "## Calibration (model, pixel level)" in md and "| 3 | " in md.split("## Calibration")[1]
  lines = calibrate.lines(section)
  assert lines[0].startswith("calibration (ECE, 15 bins") and lines[3].startswith("  tier3 ECE")
  (workdir / calibrate.FILE).write_text('{"temperature": 2}')
  with pytest.raises(UserError, match="not a jaxcrop-calibration/1 record; refit it with "
                                      "`python -m jaxcrop.calibrate --workdir"):
    calibrate.read(workdir)


def test_training_ends_by_fitting_the_best_checkpoints_temperature(demo_workdir):
  from jaxcrop import checkpoint
  workdir, summary = demo_workdir
  record = calibrate.read(workdir)
  assert summary["calibration"] == record
  assert record["checkpoint"] == "best" and record["split"] == "fold1"
  assert record["step"] == checkpoint.load_trained(workdir, "best").step
  assert record["pixels"] > 1000
  assert calibration.T_MIN <= record["temperature"] <= calibration.T_MAX


def test_the_calibrate_command_refits_a_workdir(demo_workdir, tmp_path, capsys):
  workdir = private_copy(demo_workdir[0], tmp_path)
  (workdir / calibrate.FILE).unlink()
  assert calibrate.main(["--workdir", str(workdir)]) == 0
  record = calibrate.read(workdir)
  assert record == demo_workdir[1]["calibration"]            # what training recorded
  out = capsys.readouterr().out
  assert out.startswith(f"temperature {record['temperature']:.4f} on {record['pixels']} "
                        f"pixels of fold1: ECE ")
