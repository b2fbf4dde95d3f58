"""evaluate's `in_season` section: macro-F1 by cut-off month, the model and the baseline.

For each cut-off month of `jaxcrop.in_season.EVAL_MONTHS` in the season (April,
May, June, July, August, December), every test example is cut off there
(`jaxcrop.in_season.cut_off`: later months masked, earlier gaps filled again
without them), normalized with the checkpoint's statistics, and given to:

- the model, as trained (an `inseason` model has seen such inputs; any other
  has not, and the section then shows what it loses);
- the per-pixel baseline refitted on the training pixels cut off at that month
  (the best a pixel classifier does with data up to then): one sample of the
  training split's labelled pixels, drawn as `jaxcrop.baseline` draws its own
  (same seed, same share), then one fit per cut-off, cached in
  `<baseline_dir>/in_season/until_<YYYY-MM>/baseline/`.

With season alignment (`data.align_season`), each test zone-year is moved in time
after the cut-off, by the shift estimated from its months up to the cut-off only
(`jaxcrop.season_shift`, its valid observations: no later month reaches it).

Scores are those of the rest of evaluate: the crop classes' macro-F1 (the
background excluded), at pixel and parcel level. With the cut-off at the
season's last month the inputs are those prep wrote, so that row equals the
full-season scores of metrics.json (asserted by the tests).
"""
from __future__ import annotations

import functools

import numpy as np

from cropcontracts import years as years_lib
from jaxcrop import baseline, in_season, metrics
from jaxcrop.evaluate import collect, parcel_votes
from jaxcrop.input_pipeline import normalize
from jaxcrop.season_shift import shift_batch, shift_counts
from jaxcrop.tables import markdown_table


def cut_offs(season, months=in_season.EVAL_MONTHS) -> dict[str, int]:
  """{month name: until} of the cut-off months in the season (labels `YYYY-MM`);
  months outside it are left out."""
  calendar_months = {int(m.split("-")[1]) for m in season}
  return {in_season.month_name(m): in_season.months_kept(season, m)
          for m in months if m in calendar_months}


def cut_predictor(fn, until: int, meta, with_count: bool, column: int | None = None):
  """A predictor of `evaluate.collect` over raw batches: image uint16 [B, T, H, W, C]
  and valid_count [B, T, H, W] cut off after `until` months, (with `column`: each
  example moved by its shift `season_shift[:, column]`, `jaxcrop.season_shift`),
  normalized, then `fn(image float32, [valid_count=float32])` (the valid counts too
  when the model takes them)."""
  def predict(image, valid_count, season_shift=None):
    image, count = in_season.cut_off(image, valid_count, until)
    if column is not None:
      by = season_shift[:, column]
      image = shift_batch(image, by, until)
      count = shift_counts(count, by, until)
    inputs = {"valid_count": count.astype(np.float32)} if with_count else {}
    return fn(normalize(image, meta.mean, meta.std), **inputs)
  return predict


def _raw_sample(batches, meta, cfg):
  """(uint16 image [N, T, 1, 1, C], valid_count [N, T, 1, 1], labels [N]): the
  training pixels `baseline.sample_pixels` draws, with their valid counts (one
  more channel through its sampling)."""
  def with_count(batches):
    for b in batches:
      yield {**b, "image": np.concatenate([b["image"], b["valid_count"][..., None]], -1)}
  x, y = baseline.sample_pixels(with_count(batches), int(np.sum(meta.class_pixel_counts)),
                                cfg.eval.baseline.max_pixels, cfg.seed)
  x = x.reshape(len(y), len(meta.months), len(meta.bands) + 1)[:, :, None, None]
  return x[..., :-1].astype(np.uint16), x[..., -1], y


def fit_baselines(cfg, meta, train_batches_fn, folder, untils: dict, full=None) -> dict:
  """{month name: the baseline fitted on the training pixels cut off after `until`},
  each cached in folder/in_season/until_<last month kept>/ (`baseline.fit_or_load`);
  the pixels are read only when a fit is missing. `full`: evaluate's full-season
  baseline, used for a cut-off at the season's last month (the same pixels, the
  same inputs: the same fit)."""
  sample = functools.cache(lambda: _raw_sample(train_batches_fn(), meta, cfg))

  def pixels(until):
    image, count, y = sample()
    image, _ = in_season.cut_off(image, count, until)
    return [{"image": normalize(image, meta.mean, meta.std), "label": y[:, None, None]}]

  fits = {}
  for name, until in untils.items():
    if full is not None and until == len(meta.months):
      fits[name] = full
      continue
    last = meta.months[until - 1]
    fits[name] = baseline.fit_or_load(
        folder / "in_season" / f"until_{last}", functools.partial(pixels, until),
        total_labelled=1, max_pixels=cfg.eval.baseline.max_pixels,   # sampled already: keep all
        max_iter=cfg.eval.baseline.get("max_iter", 100), seed=cfg.seed,
        train_split=f"{cfg.data.train_split} until {last}", classes=list(meta.class_names))
  return fits


def evaluate(cfg, meta, data, split: str, model_fn, *, max_batches=None,
             baseline_folder=None, shifts=None, full_baseline=None) -> dict:
  """metrics.json's `in_season` of `jaxcrop.evaluate`: `section` over `split` read raw
  (`data`: `jaxcrop.input_pipeline` or a stand-in), with the baselines of
  `fit_baselines` cached in `baseline_folder` (None/False: no baseline); shifts:
  the split's `season_shift.ZoneShifts` (season alignment) or None; full_baseline:
  evaluate's full-season baseline (reused at the season's last month)."""
  baselines = baseline_folder and fit_baselines(
      cfg, meta, lambda: data.eval_batches(cfg.data, cfg.data.train_split, meta, raw=True),
      baseline_folder, cut_offs(meta.months), full_baseline)
  years = years_lib.years_of(split)
  return section(data.eval_batches(cfg.data, split, meta, raw=True), model_fn, meta,
                 with_count=bool(cfg.data.get("valid_count")), baselines=baselines,
                 max_batches=max_batches, shifts=shifts,
                 year=years[0] if len(years) == 1 else None)


def until_label(season, until: int, year: int | None = None) -> str:
  """The last month kept, `YYYY-MM`: the season's label (`season`: the dataset's
  months), moved to `year` when the evaluated split is of one year (a multi-year
  dataset's months are labelled in its first year)."""
  label = season[until - 1]
  if year is None:
    return label
  return f"{year + int(label[:4]) - int(season[0][:4])}-{label[5:]}"


def section(raw_batches, model_fn, meta, *, with_count=False, baselines=None,
            max_batches=None, shifts=None, year: int | None = None) -> dict:
  """metrics.json's `in_season`: {"months": {month name: {"until": last month kept
  (`YYYY-MM`, in `year` when given), "months_kept": n, "pixel": {predictor:
  macro-F1}, "parcel": {…}}}} (with `shifts`, also "season_shift": {zone: months}).

  raw_batches: `eval_batches(..., raw=True)` of the split; model_fn: evaluate's model
  predictor (normalized image → classes); baselines: {month name: fitted baseline}
  or None; shifts: the split's `season_shift.ZoneShifts` (each zone-year moved by
  the shift of its months up to the cut-off) or None.
  """
  untils = cut_offs(meta.months)
  predictors = {}
  for j, (name, until) in enumerate(untils.items()):
    column = None if shifts is None else j
    predictors[f"model {name}"] = cut_predictor(model_fn, until, meta, with_count, column)
    if baselines:
      predictors[f"baseline {name}"] = cut_predictor(
          functools.partial(baseline.predict, baselines[name]), until, meta, False, column)
  if shifts is not None:
    raw_batches = _with_shifts(raw_batches, shifts, list(untils.values()))
  pixels = collect(raw_batches, predictors, max_batches)
  names, k = list(meta.class_names), len(meta.class_names)
  background = metrics.background_id(names)
  out = {}
  for name, until in untils.items():
    row = {"until": until_label(meta.months, until, year), "months_kept": until,
           "pixel": {}, "parcel": {}}
    if shifts is not None:
      row["season_shift"] = shifts.summary(until)
    for who in ("model", "baseline") if baselines else ("model",):
      pred = pixels[f"{who} {name}"]
      cm = metrics.confusion_matrix_np(pixels["label"], pred, k)
      row["pixel"][who] = metrics.summarize(cm, names)["macro_f1"]
      truth, vote = parcel_votes(pixels["zone"], pixels["parcel"], pixels["label"], pred, k,
                                 background)
      row["parcel"][who] = metrics.summarize(metrics.confusion_matrix_np(truth, vote, k),
                                             names)["macro_f1"]
    out[name] = row
  return {"months": out}


def _with_shifts(raw_batches, shifts, untils):
  """The batches with `season_shift` float32 [B, len(untils)]: each example's zone
  shift estimated from its months up to each cut-off."""
  for b in raw_batches:
    yield dict(b, season_shift=np.stack([shifts.of(b["zone_id"], u) for u in untils], 1))


def table(in_season_result: dict) -> str:
  """The in-season table of metrics.md and of `python -m jaxcrop.evaluate`: one row
  per cut-off month, pixel / parcel macro-F1 of each predictor."""
  rows = in_season_result["months"]
  who = list(next(iter(rows.values()))["pixel"]) if rows else ["model"]
  return markdown_table(
      ["cut-off (last month kept)", *(f"{w} pixel / parcel macro-F1" for w in who)],
      ([f"{name} ({row['until']})",
        *(f"{row['pixel'][w]:.4f} / {row['parcel'][w]:.4f}" for w in who)]
       for name, row in rows.items()))


NOTE = ("In season: each test example cut off after the month shown (later months "
        "masked, earlier gaps filled again without them); the baseline refitted on the "
        "training pixels cut off there; macro-F1 over the crop classes, background "
        "excluded (docs/in-season.md).")
