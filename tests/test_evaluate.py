"""Evaluation (parcel votes by hand, outputs, baseline) and cross-validation, on fake data."""
import json
import pathlib

import numpy as np
import pytest

from jaxcrop import baseline, checkpoint, cv, evaluate, train
from tests.fixtures import FakeData, private_copy, tiny_config


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


def test_baseline_cache_is_reused_refit_and_never_stale(tmp_path, monkeypatch):
  """fit_or_load reads workdir/baseline/ back while its settings match, refits
  otherwise; a refit killed before its settings are written leaves no cache."""
  rng = np.random.default_rng(0)
  label = rng.integers(0, 2, (4, 2, 2))
  batch = {"image": (label[:, None, :, :, None] + rng.normal(0, 0.1, (4, 3, 2, 2, 2))
                     ).astype(np.float32), "label": label}
  reads = []
  fit = lambda **kw: baseline.fit_or_load(tmp_path, lambda: reads.append(1) or [batch],
                                          total_labelled=16, max_iter=5, **kw)
  first = fit(seed=0)
  assert len(reads) == 1 and sorted(p.name for p in (tmp_path / "baseline").iterdir()) == \
      [".lock", "model.pkl", "settings.json"]         # no temporary left beside them
  np.testing.assert_array_equal(baseline.predict(fit(seed=0), batch["image"]),
                                baseline.predict(first, batch["image"]))
  assert len(reads) == 1                              # read back, not refitted

  def killed(path, text):
    raise KeyboardInterrupt
  monkeypatch.setattr(baseline.atomic, "write_text", killed)
  with pytest.raises(KeyboardInterrupt):
    fit(seed=1)
  assert len(reads) == 2 and not (tmp_path / "baseline" / "settings.json").exists()
  monkeypatch.undo()
  fit(seed=0)
  assert len(reads) == 3                              # seed 0's cache is gone: refitted


@pytest.fixture(scope="module")
def trained_dir(tiny_workdir, tmp_path_factory):
  """A copy of the session's tiny_workdir (evaluate writes into it)."""
  return private_copy(tiny_workdir[0], tmp_path_factory.mktemp("eval"))


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
  # Which classes each macro average runs over: the rule and the list, at every level.
  for level in ("pixel", "parcel"):
    for name in ("model", "baseline"):
      s = saved[level][name]
      listed = [r["name"] for r in s["per_class"] if r["support"] + r["predicted"] > 0]
      assert s["macro_classes"] == listed and "vines" not in listed   # never true nor predicted
      assert s["macro_rule"] == "classes present in the truth or in the prediction"
      assert (f"Macro averages and mIoU of {name} run over the {len(listed)} classes present "
              f"in the truth or in the prediction of the test split: {', '.join(listed)}.") in md
  assert south["macro_classes"] and south["parcel"]["macro_classes"]
  assert (trained_dir / "baseline" / "model.pkl").exists()
  # Every tier, model and baseline side by side (fake tree: wheat, maize → cereal; vines).
  tiers = saved["tiers"]
  assert tiers["tier3"]["pixel"] == saved["pixel"] and tiers["tier1"]["class_names"] == ["crop"]
  assert set(tiers["tier2"]["pixel"]) == {"model", "baseline"}
  assert tiers["tier2"]["parcel"]["model"]["num_parcels"] == 7 * 16
  assert set(tiers["tier2"]["per_region"]) == {"north", "south"}
  assert tiers["tier1"]["pixel"]["model"]["overall_accuracy"] == 1.0    # one family
  assert "## Per tier" in md
  # The cross-validation's per-fold scores read the same result.
  scores = cv.eval_scores(result)
  assert scores["tier2/parcel/baseline/macro_f1"] == \
      tiers["tier2"]["parcel"]["baseline"]["macro_f1"] and \
      len([k for k in scores if "/f1/" not in k]) == 3 * 2 * 2 * 2


def test_hierarchical_attention_workdir_trains_reloads_and_evaluates(tmp_path):
  c = tiny_config()
  c.model.update(encoder="attention")
  c.model.head.kind = "hierarchical"
  train.train_and_evaluate(c, tmp_path, data=FakeData())
  t = checkpoint.load_trained(tmp_path)
  assert type(t.model).__name__ == "HierarchicalModel" and t.model.encoder == "attention"
  result = evaluate.evaluate(tmp_path, data=FakeData(), with_baseline=False,
                             out_dir=tmp_path / "eval_val")
  assert (tmp_path / "eval_val" / "metrics.json").exists()
  assert result["tiers"]["tier2"]["pixel"]["model"]["num_pixels"] == 7 * 14 * 16


class RebuiltData(FakeData):
  """The dataset rebuilt with other folds: its own moments (mean 3, std 2) are
  not the checkpoint's (fake_meta: mean 0, std 1). Images are the same raw
  values as FakeData's, normalized with the statistics eval_batches is given
  (its own when none)."""

  def __init__(self):
    super().__init__()
    self.given = []

  def load_meta(self, cfg_data):
    m = super().load_meta(cfg_data)
    m.mean, m.std = m.mean + 3, m.std * 2
    return m

  def eval_batches(self, cfg_data, split, meta=None):
    self.given.append(meta)
    use = self.load_meta(cfg_data) if meta is None else meta
    for b in super().eval_batches(cfg_data, split):
      raw = b["image"]                  # FakeData's images are raw values at mean 0, std 1
      yield {**b, "image": ((raw - use.mean[:, None, None]) / use.std[:, None, None]
                            ).astype(np.float32)}


def test_evaluate_normalizes_with_the_checkpoint_statistics(trained_dir):
  """A rebuilt dataset whose folds differ gives the metrics of the original
  one: evaluate hands eval_batches the checkpoint's mean and std."""
  want = evaluate.evaluate(trained_dir, data=FakeData(), with_baseline=False)
  rebuilt = RebuiltData()
  got = evaluate.evaluate(trained_dir, data=rebuilt, with_baseline=False)
  assert [m is not None for m in rebuilt.given] == [True]
  np.testing.assert_array_equal(rebuilt.given[0].mean, np.zeros((4, 4)))
  np.testing.assert_array_equal(rebuilt.given[0].std, np.ones((4, 4)))
  assert got["confusion_matrix"] == want["confusion_matrix"]
  # With the rebuilt dataset's own moments the inputs shift and the scores move.
  cfg, model = tiny_config().data, {"model": _model_of(trained_dir)}
  shifted = evaluate.collect(RebuiltData().eval_batches(cfg, "test"), model)
  base = evaluate.collect(FakeData().eval_batches(cfg, "test"), model)
  assert (shifted["model"] != base["model"]).any()


def _model_of(workdir):
  t = checkpoint.load_trained(workdir, "best")
  return lambda x: t.model.apply(t.variables, x, train=False).argmax(-1)


def test_cv_folds_scores_and_retrain(tmp_path, monkeypatch):
  """CV bookkeeping with training stubbed: score = lr·1000 + fold index (by hand)."""
  calls = []

  def fake_train(config, workdir, *, data=None):
    calls.append((config.data.train_split, config.data.val_split, config.optimizer.lr,
                  config.train.eval_every, str(workdir)))
    fold = int(config.data.val_split[-1])
    if fold < 2:     # the run's best validation, as train writes it (fold2: none recorded)
      workdir.mkdir(parents=True, exist_ok=True)
      (workdir / "val_best.json").write_text(json.dumps(
          {"macro_f1": 0.5, "macro_classes": ["wheat", "maize"][:fold + 1]}))
    return {"best_val_macro_f1": config.optimizer.lr * 1000 + fold, "step": config.train.num_steps}

  monkeypatch.setattr(cv.train, "train_and_evaluate", fake_train)
  c = tiny_config()
  c.cv.grid = dict(lr=(1e-3, 2e-3))
  c.cv.evaluate = False            # no checkpoint to evaluate: training is stubbed
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
  results_md = (tmp_path / "cv" / "results.md").read_text()
  assert "| lr=0.002 | 2.0000 | 3.0000 | 4.0000 | 3.0000 ± 0.8165 |" in results_md
  saved = json.loads((tmp_path / "cv" / "results.json").read_text())
  assert saved["macro_rule"] == "classes present in the truth or in the prediction"
  assert saved["best"]["val_macro_classes"] == [["wheat"], ["wheat", "maize"], None]
  assert ("Each validation macro-F1 averages over the classes present in the truth or in the "
          "prediction of its fold (best setting):\n- fold0: 1: wheat\n- fold1: 2: wheat, maize\n"
          "- fold2: not recorded\n") in results_md


def test_apply_setting_paths():
  c = cv.apply_setting(tiny_config(), {"kernel_size": 7, "model__unet__norm": "group"})
  assert c.model.temporal.kernel_size == 7 and c.model.unet.norm == "group"


def _table_widths(md: str) -> list[set]:
  """The cell counts of each markdown table's lines (one set per table)."""
  tables, current = [], []
  for line in md.splitlines() + [""]:
    if line.startswith("|"):
      current.append(line.count("|"))
    elif current:
      tables.append(set(current))
      current = []
  return tables


def test_cv_sigterm_in_a_run_stops_the_whole_cv_and_a_rerun_resumes(tmp_path, monkeypatch,
                                                                     capsys):
  """train returns `preempted` after a SIGTERM (its run saved): the CV runs nothing
  more, skips the retrain, writes the finished folds with "—" for the others in
  aligned tables, exits 143; the same command then finishes."""
  calls = []

  def fake_train(config, workdir, *, data=None, stop_at=1):
    calls.append(str(workdir))
    if len(calls) == stop_at + 1:
      return {"best_val_macro_f1": 0.0, "step": 2, "preempted": True}
    return {"best_val_macro_f1": 0.1 * len(calls), "step": config.train.num_steps,
            "preempted": False}

  monkeypatch.setattr(cv.train, "train_and_evaluate", fake_train)
  argv = ["--config", "configs/hybrid.py:tiny", "--workdir", str(tmp_path),
          "--config.cv.evaluate=False"]
  assert cv.main(argv) == 143
  assert len(calls) == 2 and not any(c.endswith("final") for c in calls)
  assert "cv: stopped (SIGTERM) at " in capsys.readouterr().err
  md = (tmp_path / "cv" / "results.md").read_text()
  assert md.startswith("**Stopped (SIGTERM) at ")
  assert "| kernel_size=3_lr=0.001 | 0.1000 | — | — | 0.1000 ± 0.0000 (1 of 3 folds) |" in md
  assert "| kernel_size=5_lr=0.001 | — | — | — | — |" in md
  assert all(len(w) == 1 for w in _table_widths(md))          # header and rows aligned
  saved = json.loads((tmp_path / "cv" / "results.json").read_text())
  assert saved["results"][0]["val_macro_f1"] == [pytest.approx(0.1), None, None]
  assert saved["stopped"].endswith("cv/kernel_size=3_lr=0.001/val_fold1")
  calls.clear()
  monkeypatch.setattr(cv.train, "train_and_evaluate",
                      lambda *a, **k: fake_train(*a, **k, stop_at=99))
  assert cv.main(argv) == 0
  assert len(calls) == 7 and calls[-1].endswith("final")      # 2 settings × 3 folds + final
  md = (tmp_path / "cv" / "results.md").read_text()
  assert "Stopped" not in md and "of 3 folds" not in md


def test_cv_sigterm_between_runs_stops_before_the_next_run(tmp_path, monkeypatch):
  """A SIGTERM outside train (e.g. during an evaluation) stops the CV before the
  next run; the run that finished is kept."""
  import os
  import signal
  calls = []

  def fake_train(config, workdir, *, data=None):
    calls.append(str(workdir))
    os.kill(os.getpid(), signal.SIGTERM)          # after the run: the CV's handler
    return {"best_val_macro_f1": 0.5, "step": 6}

  monkeypatch.setattr(cv.train, "train_and_evaluate", fake_train)
  c = tiny_config()
  c.cv.evaluate = False
  out = cv.run_cv(c, tmp_path)
  assert len(calls) == 1 and out["stopped"].endswith("val_fold1")
  assert out["results"][0]["val_macro_f1"] == [0.5, None, None]
  assert signal.getsignal(signal.SIGTERM) is not None        # handler restored


# --- the markdown outputs, byte for byte -------------------------------------
# tests/golden/*.md were written by the code before the tables had one helper
# (jaxcrop.tables.markdown_table): the files users read must not change.
GOLDEN = pathlib.Path(__file__).parent / "golden"


def _eval_result() -> dict:
  """evaluate.compute on 300 seeded pixels of the 3-class fake tree, 2 regions,
  model and baseline: every table of metrics.md (levels, regions, tiers)."""
  from jaxcrop import hierarchy
  from tests.fixtures import TRAIN_META, make_meta
  meta = make_meta(**TRAIN_META)
  rng = np.random.default_rng(7)
  n = 300
  label = rng.integers(0, 3, n).astype(np.uint8)
  label[::11] = 255
  pixels = {"label": label,
            "model": np.where(rng.random(n) < 0.7, label % 3, rng.integers(0, 3, n)
                              ).astype(np.uint8),
            "baseline": rng.integers(0, 3, n).astype(np.uint8),
            "parcel": rng.integers(0, 20, n).astype(np.uint32),
            "zone": rng.integers(0, 2, n).astype(np.int32),
            "region": rng.integers(0, 2, n).astype(np.int32),
            "zones": ["n_0", "s_0"], "regions": ["north", "south"]}
  out = evaluate.compute(pixels, ["model", "baseline"], list(meta.class_names),
                         hierarchy.Tree.of(meta),
                         {t: hierarchy.tier_names(meta, t) for t in (1, 2, 3)})
  return {"split": "test", "checkpoint": "best", **out}


def _cv_out(stopped: bool) -> dict:
  """A CV result by hand: 2 settings × 3 folds, tiers, evaluations; `stopped`:
  the second setting's folds 1 and 2 not run."""
  def stat(per_fold):
    done = [v for v in per_fold if v is not None]
    return {"per_fold": per_fold, "mean": float(np.mean(done)), "std": float(np.std(done))}
  rows = []
  for i, name in enumerate(("lr=0.001", "lr=0.003")):
    f1 = [0.5 + 0.1 * i + 0.01 * k for k in range(3)]
    if stopped and i == 1:
      f1 = [f1[0], None, None]
    done = [v for v in f1 if v is not None]
    rows.append({"setting": {"lr": 1e-3 * (1 + 2 * i)}, "name": name, "val_macro_f1": f1,
                 "val_macro_classes": [["wheat", "maize"], ["wheat"], None],
                 "mean": float(np.mean(done)), "std": float(np.std(done)),
                 "folds_done": len(done), "rare_classes": [2, 1],
                 "tiers": {"tier1_macro_f1": stat([0.9, 0.8, None]),
                           "rare2_f1": stat([x and x / 2 for x in f1])},
                 "eval": {"tier2/pixel/model/macro_f1": stat([0.7, 0.6, 0.65]),
                          "tier2/pixel/model/overall_accuracy": stat([0.8, 0.7, 0.75]),
                          "tier2/pixel/baseline/macro_f1": stat(f1)}})
  del rows[1]["eval"]["tier2/pixel/baseline/macro_f1"]     # a cell "—"
  out = {"folds": ["fold0", "fold1", "fold2"], "macro_rule": "classes present in the truth "
         "or in the prediction", "results": rows, "best": rows[1]}
  if stopped:
    out["stopped"] = "W/cv/lr=0.003/val_fold1"
  else:
    out["final"] = {"workdir": "W/final", "step": 10, "train_split": "fold0+fold1+fold2"}
  return out


@pytest.mark.parametrize("name, text", [
    ("metrics.md", lambda: evaluate.markdown(_eval_result(), "synthetic demo dataset")),
    ("results.md", lambda: cv.markdown(_cv_out(stopped=False))),
    ("results_stopped.md", lambda: cv.markdown(_cv_out(stopped=True))),
    ("results_none.md", lambda: cv.markdown({**_cv_out(stopped=True), "best": None}))])
def test_markdown_outputs_are_byte_identical(name, text):
  assert text() == (GOLDEN / name).read_text(encoding="utf-8")


# --- a background class (nomenclature v3: non_agricultural), by hand ---------
# 0 wheat, 1 maize → cereal → crops; 2 vines → vines → permanent; 3 non_agricultural,
# its own group and family (as in classes_v3.csv).
BG_TREE = dict(tier2_of=[0, 0, 1, 2], tier1_of=[0, 0, 1, 2])
BG_NAMES = {3: ["wheat", "maize", "vines", "non_agricultural"],
            2: ["cereal", "vines", "non_agricultural"],
            1: ["crops", "permanent", "non_agricultural"]}


def _background_pixels() -> dict:
  """11 pixels, 2 zones (one per region), the background outside the parcels.
  Zone 0 parcel 1: wheat, votes wheat 1, background 2; parcel 2: maize, votes
  maize 1, wheat 1. Zone 1 parcel 1: vines, votes vines 1, background 1; parcel 2:
  vines, voted background only."""
  return {"label": np.array([0, 0, 0, 1, 1, 3, 3, 3, 2, 2, 2], np.uint8),
          "model": np.array([0, 3, 3, 1, 0, 3, 2, 3, 2, 3, 3], np.uint8),
          "parcel": np.array([1, 1, 1, 2, 2, 0, 0, 0, 1, 1, 2], np.uint32),
          "zone": np.array([0] * 6 + [1] * 5, np.int32),
          "region": np.array([0] * 6 + [1] * 5, np.int32),
          "zones": ["n_0", "s_0"], "regions": ["north", "south"]}


def test_scores_with_a_background_by_hand():
  from jaxcrop import hierarchy
  out = evaluate.compute(_background_pixels(), ["model"], BG_NAMES[3],
                         hierarchy.Tree.from_parents(**BG_TREE), BG_NAMES)
  assert out["confusion_matrix"]["pixel_model"] == [[1, 0, 0, 2], [1, 1, 0, 0], [0, 0, 1, 2],
                                                   [0, 0, 1, 2]]
  pixel = out["pixel"]["model"]
  assert pixel["macro_f1"] == pytest.approx((0.4 + 2 / 3 + 0.4) / 3)   # crops only
  assert pixel["miou_all"] == pytest.approx((1 / 4 + 1 / 2 + 1 / 4 + 2 / 7) / 4)
  assert pixel["background"]["f1"] == pytest.approx(4 / 9)
  area = out["agricultural_area"]
  assert area["background_class"] == "non_agricultural"
  assert area["pixel"]["model"]["iou"] == pytest.approx(4 / 9)
  assert area["pixel"]["model"]["precision"] == pytest.approx(4 / 5)
  assert area["pixel"]["model"]["recall"] == pytest.approx(1 / 2)
  # north: 3 crop → crop, 2 crop → background, no background → crop; south: 1, 2, 1.
  north, south = (area["per_region"][r]["model"] for r in ("north", "south"))
  assert (north["iou"], north["precision"], north["recall"]) == (
      pytest.approx(3 / 5), 1.0, pytest.approx(3 / 5))
  assert (south["iou"], south["precision"], south["recall"]) == (
      pytest.approx(1 / 4), pytest.approx(1 / 2), pytest.approx(1 / 3))
  # Parcels: a parcel's class is a crop while any pixel votes one: wheat (not the
  # background majority), wheat (tie), vines, and background (no crop vote).
  assert out["confusion_matrix"]["parcel_model"] == [[1, 0, 0, 0], [1, 0, 0, 0],
                                                    [0, 0, 1, 1], [0, 0, 0, 0]]
  # Tiers carry the background as its own group and family, left out of their macro-F1:
  # tier 2 cereal [3, 0, 2], vines [0, 1, 2], background [0, 1, 2]: F1 0.75, 0.4.
  t2 = out["tiers"]["tier2"]
  assert t2["confusion_matrix"]["pixel_model"] == [[3, 0, 2], [0, 1, 2], [0, 1, 2]]
  assert t2["pixel"]["model"]["macro_f1"] == pytest.approx((0.75 + 0.4) / 2)
  assert t2["pixel"]["model"]["macro_classes"] == ["cereal", "vines"]
  assert t2["agricultural_area"] == area == out["tiers"]["tier1"]["agricultural_area"]


def test_metrics_files_and_summary_name_the_background_scores():
  from jaxcrop import hierarchy
  pixels = _background_pixels()
  pixels["baseline"] = pixels["label"].copy()                 # a perfect predictor
  result = {"split": "test", "checkpoint": "best", **evaluate.compute(
      pixels, ["model", "baseline"], BG_NAMES[3], hierarchy.Tree.from_parents(**BG_TREE),
      BG_NAMES)}
  md = evaluate.markdown(result)
  assert "| miou_all | 0.3214 | 1.0000 |" in md and "| background F1 | 0.4444 | 1.0000 |" in md
  assert ("## Agricultural area (any crop class vs non_agricultural, pixels)\n\n"
          "| region | model IoU | model precision | model recall | baseline IoU | baseline "
          "precision | baseline recall |\n|---|---|---|---|---|---|---|\n"
          "| all | 0.4444 | 0.8000 | 0.5000 | 1.0000 | 1.0000 | 1.0000 |\n"
          "| north | 0.6000 | 1.0000 | 0.6000 | 1.0000 | 1.0000 | 1.0000 |\n"
          "| south | 0.2500 | 0.5000 | 0.3333 | 1.0000 | 1.0000 | 1.0000 |") in md
  assert ("Macro averages and mIoU of model run over the 3 crop classes (non_agricultural "
          "excluded) present in the truth or in the prediction of the test split: wheat, "
          "maize, vines.") in md
  assert md.count("miou_all: every class present, non_agricultural included") == 2
  lines = evaluate.compact_table(result).splitlines()
  assert lines[2] == f"{'pixel macro_f1':24s}{22 / 45:12.4f}{1:12.4f}"    # kept, crops only
  assert f"{'agri-area iou':24s}{4 / 9:12.4f}{1:12.4f}" in lines
  assert f"{'agri-area precision':24s}{0.8:12.4f}{1:12.4f}" in lines
  assert f"{'agri-area recall':24s}{0.5:12.4f}{1:12.4f}" in lines
  assert lines[-1] == ("macro_f1, miou: crop classes (non_agricultural excluded); miou_all: "
                       "all classes; agri-area: any crop class vs non_agricultural")
  # The cross-validation's per-fold scores carry the agricultural area too.
  scores = cv.eval_scores(result)
  assert scores["agricultural_area/pixel/model/iou"] == pytest.approx(4 / 9)
  assert len(scores) == 3 * 2 * 2 * 2 + 2 * 3 + 2 * 4   # + tier-3 F1 of the 4 classes


def test_without_a_background_the_new_sections_are_null():
  result = _eval_result()                           # the 3-class fake tree of TRAIN_META
  assert result["agricultural_area"] is None
  assert result["tiers"]["tier2"]["agricultural_area"] is None
  pixel = result["pixel"]["model"]
  assert pixel["background"] is None and pixel["miou_all"] == pixel["miou"]
  assert "agri-area" not in evaluate.compact_table(result)


def test_cv_fold_scores_leave_the_background_out_and_score_the_agricultural_area():
  from jaxcrop import hierarchy, metrics, validation
  tree = hierarchy.Tree.from_parents(**BG_TREE)
  cm = np.array([[1, 0, 0, 2], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 1, 2]])
  s = cv.fold_scores(cm, tree, rare=[1, 2], class_names=BG_NAMES[3])
  assert s["tier3_macro_f1"] == pytest.approx(22 / 45)
  assert s["tier2_macro_f1"] == pytest.approx((0.75 + 0.4) / 2)
  assert s["rare2_f1"] == pytest.approx((2 / 3 + 0.4) / 2)
  assert s["agricultural_iou"] == pytest.approx(4 / 9) and s["background_f1"] == \
      pytest.approx(4 / 9)
  assert s["agricultural_precision"] == pytest.approx(0.8) and s["miou_all"] == \
      pytest.approx(9 / 28)
  assert validation.scores(cm, BG_NAMES[3], tree)["tier1_macro_f1"] == \
      pytest.approx((0.75 + 0.4) / 2)
  # without names, every class is averaged (the old behaviour), no background keys
  old = cv.fold_scores(cm, tree, rare=[1, 2])
  assert old["tier3_macro_f1"] == pytest.approx((0.4 + 2 / 3 + 0.4 + 4 / 9) / 4)
  assert "agricultural_iou" not in old
  # the background is never one of the rare classes, however few its pixels
  assert cv.rarest_classes([50, 9, 7, 1], 2, background=3) == [2, 1]
  # results.json's rule says so when the runs' classes hold a background
  assert cv._macro_rule([(0, 0, None), (0, 1, (cm, [], tree, BG_NAMES[3]))]) == \
      metrics.CROP_MACRO_RULE
  assert cv._macro_rule([(0, 0, (cm, [], tree, BG_NAMES[2][:2] + ["x", "y"]))]) == \
      metrics.MACRO_RULE


class BackgroundData(FakeData):
  """FakeData of a v3-like tree: wheat, vines, non_agricultural; the fake batches'
  second class (band mean 1) is the background, vines never occur."""

  def load_meta(self, cfg_data):
    from tests.fixtures import TRAIN_CLASSES, TRAIN_META, make_meta
    return make_meta(**{**TRAIN_META, "version": "v3", "class_pixel_counts": [400, 0, 100],
                        "classes": (TRAIN_CLASSES[0], TRAIN_CLASSES[2], (
                            "non_agricultural", "non_agricultural", "non_agricultural",
                            "#c8c8c8"))})

  @staticmethod
  def _background(batches):
    for b in batches:
      yield {**b, "label": np.where(b["label"] == 1, 2, b["label"])}

  def train_iterator(self, cfg_data, **kw):
    return self._background(super().train_iterator(cfg_data, **kw))

  def eval_batches(self, cfg_data, split, meta=None):
    return self._background(super().eval_batches(cfg_data, split, meta))


def test_a_model_with_a_background_trains_evaluates_and_prints_its_area_scores(tmp_path):
  """The real train → evaluate path (model and baseline) on a background class:
  the best checkpoint is chosen on the crops' macro-F1; metrics.json, metrics.md
  and the printed summary carry the agricultural area."""
  train.train_and_evaluate(tiny_config(), tmp_path, data=BackgroundData())
  best = json.loads((tmp_path / "val_best.json").read_text())
  assert best["macro_classes"] == ["wheat"] and best["background"]["name"] == "non_agricultural"
  result = evaluate.evaluate(tmp_path, data=BackgroundData())
  saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  area = saved["agricultural_area"]
  assert set(area["pixel"]) == {"model", "baseline"} and set(area["per_region"]) == {
      "north", "south"}
  cm = np.array(saved["confusion_matrix"]["pixel_baseline"])
  assert area["pixel"]["baseline"]["recall"] == pytest.approx(cm[:2, :2].sum() / cm[:2].sum())
  assert area["pixel"]["baseline"]["iou"] > 0.9                 # separable fake classes
  assert saved["pixel"]["model"]["macro_classes"] == ["wheat"]
  assert "## Agricultural area" in (tmp_path / "eval" / "metrics.md").read_text()
  table = evaluate.compact_table(result)
  assert "agri-area precision" in table and "background f1" in table


def test_cv_puts_the_model_beside_the_baseline_with_per_class_f1():
  """eval_scores keeps each present class's tier-3 pixel F1; versus_baseline lays the
  best setting's model and baseline side by side, mean ± std over folds (by hand)."""
  def result(model_f1, base_f1):
    pc = lambda f1s: [{"f1": f, "present": f is not None} for f in f1s]
    summ = lambda f1s, oa: {"macro_f1": float(np.mean([f for f in f1s if f is not None])),
                            "overall_accuracy": oa, "per_class": pc(f1s)}
    tier = {"class_names": ["wheat", "maize", "vines"],
            "pixel": {"model": summ(model_f1, 0.8), "baseline": summ(base_f1, 0.6)},
            "parcel": {}}
    return {"tiers": {"tier3": tier}}
  folds = [cv.eval_scores(result([0.9, 0.5, None], [0.7, 0.3, None])),
           cv.eval_scores(result([0.7, None, 0.4], [0.5, None, 0.2]))]
  assert folds[0]["tier3/pixel/model/f1/wheat"] == 0.9 and \
      "tier3/pixel/model/f1/vines" not in folds[0]
  keys = list(dict.fromkeys(k for e in folds for k in e))
  stat = lambda v: {"per_fold": v, **cv._mean_std(v)}   # pylint: disable=protected-access
  best = {"name": "lr=0.01", "eval": {k: stat([e.get(k) for e in folds]) for k in keys}}
  table = cv.versus_baseline({"folds": ["fold0", "fold1"], "best": best})
  assert "| macro-F1 | 0.6250 ± 0.0750 | 0.4250 ± 0.0750 |" in table
  assert "| overall accuracy | 0.8000 ± 0.0000 | 0.6000 ± 0.0000 |" in table
  assert "| F1 wheat | 0.8000 ± 0.1000 | 0.6000 ± 0.1000 |" in table
  assert "| F1 maize | 0.5000 ± 0.0000 (1 of 2 folds) | 0.3000 ± 0.0000 (1 of 2 folds) |" in table
  assert cv.versus_baseline({"folds": ["fold0"], "best": {"name": "x", "eval": {}}}) == ""
