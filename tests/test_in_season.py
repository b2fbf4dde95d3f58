"""In-season inputs (jaxcrop.in_season): the cut-off mask reaches the gap filling."""
import json

import numpy as np
import pytest

from cropcontracts.errors import UserError
from cropcontracts.gapfill import gap_fill
from jaxcrop import in_season

SEASON = [f"2023-{m:02d}" for m in range(1, 13)]


def _model_layout(composite):
  """uint16 [T, C, H, W] → [T, H, W, C], as the model sees a zone."""
  return np.moveaxis(composite, 1, -1)


def test_cut_off_fills_from_the_kept_months_only():
  # One pixel, one band: observed in months 0, 3, 4; prep filled 1, 2 from 0 and 3.
  raw = np.array([10, 0, 0, 40, 50], np.uint16).reshape(5, 1, 1, 1)
  valid = np.array([1, 0, 0, 2, 1], np.uint8).reshape(5, 1, 1)
  image = _model_layout(gap_fill(raw)[0])
  assert image.ravel().tolist() == [10, 20, 30, 40, 50]       # 20, 30 know month 3
  got, got_valid = in_season.cut_off(image, valid, 3)
  # Masking the later months alone would keep 20, 30: month 3 leaking into 1, 2.
  assert got.ravel().tolist() == [10, 10, 10, 0, 0]
  assert got_valid.ravel().tolist() == [1, 0, 0, 0, 0] and got_valid.dtype == np.uint8
  got, _ = in_season.cut_off(image, valid, 1)
  assert got.ravel().tolist() == [10, 0, 0, 0, 0]
  # Observed only after the cut-off: nothing before it (prep had filled 7, 7).
  image = _model_layout(gap_fill(np.array([0, 0, 7], np.uint16).reshape(3, 1, 1, 1))[0])
  got, _ = in_season.cut_off(image, np.array([0, 0, 1]).reshape(3, 1, 1), 2)
  assert image.ravel().tolist() == [7, 7, 7] and not got.any()


def test_cut_off_at_the_season_end_is_what_prep_wrote_and_batches_are_patches():
  rng = np.random.default_rng(0)
  raw = rng.integers(1, 3000, (3, 12, 4, 5, 6)).astype(np.uint16)    # [B, T, C, H, W]
  raw[rng.random((3, 12, 5, 6))[:, :, None].repeat(4, 2) < 0.5] = 0
  valid = (raw != 0).all(2).astype(np.uint8) * 3                       # [B, T, H, W]
  image = np.stack([_model_layout(gap_fill(r)[0]) for r in raw])       # [B, T, H, W, C]
  got, got_valid = in_season.cut_off(image, valid, 12)
  np.testing.assert_array_equal(got, image)
  np.testing.assert_array_equal(got_valid, valid)
  for b in range(3):                    # a batch is its patches, each cut alone
    for until in (4, 7):
      want = _model_layout(gap_fill(raw[b], until)[0])
      np.testing.assert_array_equal(in_season.cut_off(image, valid, until)[0][b], want)


@pytest.mark.parametrize("text, month", [("june", 6), ("Jun", 6), ("6", 6), ("12", 12),
                                         ("December", 12), (4, 4)])
def test_parse_month(text, month):
  assert in_season.parse_month(text) == month


@pytest.mark.parametrize("text", ["13", "0", "juin", "", "6.5"])
def test_a_month_that_is_not_one_is_a_one_line_error(text):
  with pytest.raises(UserError, match=rf"^--until {text}: not a month; pass a month name "
                                      rf"\(june\) or its number 1-12$"):
    in_season.parse_month(text)


def test_months_kept_and_a_cut_off_outside_the_season():
  assert in_season.months_kept(SEASON, 6) == 6
  assert in_season.months_kept(["2022-10", "2022-11", "2022-12", "2023-01"], 1) == 4
  with pytest.raises(UserError, match=r"^--until july: outside the season 2023-01..2023-03 "
                                      r"of the dataset the model was trained on; pass one "
                                      r"of its months$"):
    in_season.months_kept(SEASON[:3], 7)
  assert in_season.until_choices(SEASON, (4, "june", 12)) == [4, 6, 12]
  with pytest.raises(UserError, match=r"^data.cut_off_months july: outside the season"):
    in_season.until_choices(SEASON[:3], (1, 7))


def _pipeline_config(data_dir, **kw):
  import ml_collections
  from tests import fixtures
  c = dict(name="cropmap", builder_config=fixtures.TINY_BUILDER["name"],
           data_dir=str(data_dir), train_split="fold0+fold1", val_split="fold2",
           test_split="test", batch_size=4, eval_batch_size=5, shuffle_buffer=64,
           augment=True, cache=False, prefetch=2)
  return ml_collections.ConfigDict({**c, **kw})


def test_random_cut_offs_are_drawn_per_example_and_resume_exactly(tiny_dataset):
  """cut_off_months (2, 12): each example is `cut_off` of its uncut self (same order,
  same symmetry: the draw has a key of its own) after February or December, both
  occur, and a resumed run draws the same."""
  from jaxcrop import input_pipeline as ip
  take = lambda it, n: [next(it) for _ in range(n)]
  cfg = _pipeline_config(tiny_dataset.data_dir, cut_off_months=(2, 12))
  meta = ip.load_meta(cfg)
  cut = take(ip.train_iterator(cfg, seed=3), 8)
  plain = take(ip.train_iterator(_pipeline_config(tiny_dataset.data_dir, valid_count=True),
                                 seed=3), 8)
  mean, std = meta.mean[:, None, None], meta.std[:, None, None]
  kinds = []
  for a, b in zip(cut, plain):
    np.testing.assert_array_equal(a["label"], b["label"])
    for x, y, count in zip(a["image"], b["image"], b["valid_count"]):
      raw = np.where(y == 0, 0, np.rint(y * std + mean)).astype(np.uint16)  # undo normalize
      want = {u: ip.normalize(in_season.cut_off(raw, count, u)[0], meta.mean, meta.std)
              for u in (2, 12)}
      kinds += [u for u, w in want.items() if np.allclose(x, w, atol=1e-5)]
      assert not x[2:].any() or np.allclose(x, want[12], atol=1e-5)
  assert len(kinds) == 32 and 8 < kinds.count(2) < 24     # about half each
  for a, b in zip(cut[5:], take(ip.train_iterator(cfg, seed=3, start_step=5), 3)):
    np.testing.assert_array_equal(a["image"], b["image"])
  with pytest.raises(UserError, match=r"^data.cut_off_months 13: not a month"):
    ip.train_iterator(_pipeline_config(tiny_dataset.data_dir, cut_off_months=(13,)), seed=0)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_cut_off_rate_leaves_the_other_examples_their_whole_season(tiny_dataset, rate):
  """cut_off_rate: that share of the examples cut off after February, the others
  exactly as without cut-offs (rate 0: all of them); about half at 0.5."""
  from jaxcrop import input_pipeline as ip
  take = lambda it, n: [next(it) for _ in range(n)]
  cfg = _pipeline_config(tiny_dataset.data_dir, cut_off_months=(2,), cut_off_rate=rate)
  cut = take(ip.train_iterator(cfg, seed=3), 8)
  plain = take(ip.train_iterator(_pipeline_config(tiny_dataset.data_dir), seed=3), 8)
  whole = [np.array_equal(x, y) for a, b in zip(cut, plain)
           for x, y in zip(a["image"], b["image"])]
  masked = [not x[2:].any() for a in cut for x in a["image"]]
  assert all(w != m for w, m in zip(whole, masked))      # cut off, or the whole season
  assert sum(masked) == 0 if rate == 0.0 else 8 < sum(masked) < 24


def test_a_cut_off_rate_outside_0_1_is_one_line(tiny_dataset):
  from jaxcrop import input_pipeline as ip
  cfg = _pipeline_config(tiny_dataset.data_dir, cut_off_months=(2,), cut_off_rate=1.5)
  with pytest.raises(UserError, match=r"^data.cut_off_rate 1.5: the share of examples cut "
                                      r"off must be in \[0, 1\]$"):
    ip.train_iterator(cfg, seed=0)


def test_in_season_rows_are_labelled_in_the_year_scored():
  """A multi-year dataset's months are labelled in its first year; the rows of a
  2023 test split say 2023 (a season across the new year keeps its offset)."""
  from jaxcrop.in_season_eval import until_label
  season = [f"2022-{m:02d}" for m in range(1, 13)]
  assert until_label(season, 6) == "2022-06"
  assert until_label(season, 6, 2023) == "2023-06"
  across = [f"2021-{m:02d}" for m in (10, 11, 12)] + [f"2022-{m:02d}" for m in range(1, 10)]
  assert until_label(across, 2, 2023) == "2023-11"
  assert until_label(across, 9, 2023) == "2024-06"


def test_evaluate_scores_the_model_and_the_baseline_by_cut_off_month(demo_workdir, tmp_path):
  """On the small demo (prep's composites): the December cut-off is the full season,
  so its row equals the full-season scores (its baseline is the full-season one, not
  fitted again); the other baselines' fits are cached."""
  from jaxcrop import evaluate, in_season_eval
  workdir, _ = demo_workdir
  result = evaluate.evaluate(workdir, out_dir=tmp_path / "eval", baseline_dir=tmp_path,
                             in_season=True)
  months = result["in_season"]["months"]
  assert list(months) == ["April", "May", "June", "July", "August", "December"]
  assert [(r["until"], r["months_kept"]) for r in months.values()] == [
      ("2023-04", 4), ("2023-05", 5), ("2023-06", 6), ("2023-07", 7), ("2023-08", 8),
      ("2023-12", 12)]
  for level in ("pixel", "parcel"):
    for who in ("model", "baseline"):
      assert months["December"][level][who] == result[level][who]["macro_f1"]
      assert all(0 <= r[level][who] <= 1 for r in months.values())
  assert (tmp_path / "in_season" / "until_2023-06" / "baseline" / "model.pkl").exists()
  assert not (tmp_path / "in_season" / "until_2023-12").exists()   # the full-season fit
  md = (tmp_path / "eval" / "metrics.md").read_text()
  assert "## In season (macro-F1 by cut-off month)" in md
  assert in_season_eval.table(result["in_season"]) in md
  assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["in_season"] == \
      result["in_season"]
  settings = json.loads((tmp_path / "in_season" / "until_2023-06" / "baseline" /
                         "settings.json").read_text())               # what a rerun reuses
  assert settings["train_split"] == "fold0 until 2023-06"


def test_evaluate_in_season_flag_and_its_default():
  from configs.hybrid import get_config
  from jaxcrop import evaluate
  parse = lambda *a: evaluate.build_parser().parse_args(["--workdir", "W", *a]).in_season
  assert (parse(), parse("--in_season"), parse("--no-in_season")) == (None, True, False)
  assert not get_config("demo").data.cut_off_months
  assert get_config("demo,inseason").data.cut_off_months == tuple(range(4, 13))


def _zone_pair(root):
  """Two unlabelled zones (imagery only, as a season before its RPG) of 3 months
  that differ only in March; February is missing (valid count 0) over a block and
  was gap filled by prep's rule from January and March, so it differs too."""
  from cropcontracts import zonefolder
  from prep.demo import zonefolders as zf
  a = zf.write_zone(root / "inz_a", zf.synthetic_zone("inz_a"), labels=False)
  raw = np.moveaxis(a.read_image(), -1, 1)                       # [T, C, H, W]
  counts = a.read_valid_count()
  raw[1, :, 20:30, 30:40], counts[1, 20:30, 30:40] = 0, 0         # February unobserved
  for name, march in (("inz_a", 1.0), ("inz_b", 9.0)):
    comp = raw.copy()
    comp[2] = np.minimum(comp[2] * march, 60000).astype(np.uint16)
    comp[:, :, zf.HOLE[0], zf.HOLE[1]] = 0
    zone = zf.synthetic_zone(name)
    zonefolder.write_imagery(root / name, zone, gap_fill(comp)[0], counts, a.months,
                             {"source": "synthetic"})
  return root


def _read_maps(out, name):
  import rasterio
  with rasterio.open(out / name / "classes.tif") as c, \
      rasterio.open(out / name / "confidence.tif") as p:
    return c.read(1), p.read(1)


def test_predict_until_a_month_on_unlabelled_zones_never_sees_a_later_month(tmp_path, capsys):
  from jaxcrop import predict
  from tests import fixtures
  fixtures.write_workdir(tmp_path / "W")                          # 3 months: 2023-01..03
  zones = _zone_pair(tmp_path / "zones")
  runs = {}
  for until in ("february", None):
    out = tmp_path / f"maps_{until}"
    argv = ["--workdir", tmp_path / "W", "--zone", zones, "--out", out, "--tile", "16",
            "--overlap", "4", *(["--until", until] if until else [])]
    rc, stdout, err = fixtures.run(predict.main, argv, capsys)
    assert rc == 0, err
    assert "pixel accuracy" not in stdout and "macro-F1" not in stdout    # no labels
    assert f"inz_a: wrote classes.qml, classes.tif, confidence.tif, item.json, map.json, " \
           f"validity.tif in " \
           f"{out / 'inz_a'}" in stdout
    map_json = json.loads((out / "inz_b" / "map.json").read_text())
    assert map_json.get("until") == ("2023-02" if until else None)
    runs[until] = {z: _read_maps(out, z) for z in ("inz_a", "inz_b")}
  for x, y in zip(runs["february"]["inz_a"], runs["february"]["inz_b"]):
    np.testing.assert_array_equal(x, y)                  # March reaches no earlier month
  assert not np.array_equal(runs[None]["inz_a"][1], runs[None]["inz_b"][1])


def test_predict_resume_maps_again_a_zone_made_with_another_cut_off(tmp_path, capsys):
  """--resume keeps a finished map only when it has the cut-off asked for: a February
  map is replaced by --until march, then kept by the same command, and a
  whole-season run replaces it again."""
  from jaxcrop import predict
  from jaxcrop.maps import runner
  from tests import fixtures
  fixtures.write_workdir(tmp_path / "W")
  zones, out = _zone_pair(tmp_path / "zones"), tmp_path / "maps"
  base = ["--workdir", tmp_path / "W", "--zone", zones, "--out", out, "--tile", "16",
          "--overlap", "4", "--resume"]
  until = lambda: json.loads((out / "inz_a" / "map.json").read_text()).get("until")
  assert fixtures.run(predict.main, base + ["--until", "february"], capsys)[0] == 0
  assert until() == "2023-02" and runner.is_complete(out / "inz_a", until=2)
  assert not runner.is_complete(out / "inz_a", until=3)
  rc, _, err = fixtures.run(predict.main, base + ["--until", "march"], capsys)
  assert rc == 0 and until() == "2023-03"
  assert "2 to map (2 mapped before without the cut-off 3 asked for)" in err
  rc, _, err = fixtures.run(predict.main, base + ["--until", "march"], capsys)
  assert rc == 0 and "2 already complete, 0 to map" in err
  rc, _, err = fixtures.run(predict.main, base, capsys)
  assert rc == 0 and until() is None
  assert "without the cut-off none (whole season) asked for" in err


@pytest.mark.parametrize("until, expected", [
    ("july", "--until july: outside the season 2023-01..2023-03 of the dataset the model "
             "was trained on; pass one of its months"),
    ("13", "--until 13: not a month; pass a month name (june) or its number 1-12"),
])
def test_predict_until_a_month_outside_the_season_is_one_line(tmp_path, capsys, until,
                                                              expected):
  from jaxcrop import predict
  from prep.demo import zonefolders as zf
  from tests import fixtures
  if until == "july":
    fixtures.write_workdir(tmp_path / "W")
  zone = zf.write_zone(tmp_path / "z" / "inz_0", zf.synthetic_zone("inz_0"), labels=False)
  rc, out, err = fixtures.run(predict.main, ["--workdir", tmp_path / "W", "--zone", zone.path,
                                             "--out", tmp_path / "maps", "--until", until],
                              capsys)
  fixtures.assert_error(rc, err, expected)
  assert not (tmp_path / "maps").exists()
