"""Evaluate a trained model on the test split, at pixel and parcel level, per region,
side by side with the per-pixel baseline.

  python -m jaxcrop.evaluate --workdir W [--which best] [--split test] [--no-baseline]
                             [--in_season | --no-in_season]

Writes W/eval/metrics.json, W/eval/metrics.md, W/eval/confusion_<level>.png and
W/eval/reliability_tier<t>.png (`calibration` in metrics.json: ECE per tier before
and after the temperature of W/calibration.json, `jaxcrop.calibrate`).
Parcel level: each parcel (zone_id, parcel index ≠ 0) gets the majority class
of its predicted pixels (ties → the lowest class id; the background only when no
pixel of it is predicted a crop: `metrics.parcel_class`) and is compared with the
majority of its labelled pixels (its RPG class); parcels without a labelled
pixel are left out. Patches do not overlap, so every pixel votes once.
With a background class (nomenclature v3 on): macro_f1 and miou are the crop
classes' (background excluded), miou_all every class's, and `agricultural_area`
scores any crop class vs background, overall and per region (jaxcrop.metrics).
Images are normalized with the checkpoint's stored mean and std (as in
predict), never with moments recomputed from the dataset read.
In season (`--in_season`, the default for models trained with
`configs/hybrid.py:inseason`): metrics.json's `in_season` holds the model's and
the baseline's macro-F1 by cut-off month (`jaxcrop.in_season_eval`).
Season alignment (`data.align_season`, configs/hybrid.py:years): each zone-year of
an evaluated split is moved in time onto the training years' calendar before the
model and the baseline see it (`jaxcrop.season_shift`); metrics.json's
`season_shift` gives each zone's shift in months.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

from absl import logging
import jax
import numpy as np
import tqdm

from jaxcrop import baseline, calibrate, checkpoint, cli, hierarchy, metrics, train
from jaxcrop.figures import reliability
from jaxcrop.hierarchy import Tree
from jaxcrop.tables import markdown_table
from cropcontracts import atomic
from cropcontracts import years as years_lib
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL

HEADLINE = ("overall_accuracy", "macro_f1", "macro_precision", "macro_recall", "miou")


def collect(batches, predict_fns: dict, max_batches=None) -> dict:
  """Flat per-pixel arrays over the unpadded examples of `batches`.

  Returns dict: label uint8 [N], parcel uint32 [N], zone int32 [N] (index into
  `zones`), region int32 [N] (index into `regions`), one uint8 [N] prediction
  per entry of predict_fns (each maps image [B,T,H,W,C] → classes [B,H,W]; it
  is also given `valid_count=` [B,T,H,W] and `season_shift=` [B, …] when the
  batches carry them).
  """
  parts = {k: [] for k in ("label", "parcel", "zone", "region", *predict_fns)}
  zones, regions = {}, {}
  for i, batch in enumerate(tqdm.tqdm(batches, desc="eval", leave=False)):
    if max_batches is not None and i >= max_batches:
      break
    keep = np.asarray(batch["mask"]) > 0
    if not keep.any():
      continue
    image = np.asarray(batch["image"])[keep]
    inputs = {k: np.asarray(batch[k])[keep] for k in ("valid_count", "season_shift")
              if k in batch}
    label = np.asarray(batch["label"])[keep]
    hw = label.shape[1:]
    parts["label"].append(label.astype(np.uint8).ravel())
    parts["parcel"].append(np.asarray(batch["parcels"])[keep].astype(np.uint32).ravel())
    for key, table in (("zone", zones), ("region", regions)):
      names = [v.decode() if isinstance(v, bytes) else str(v)
               for v in np.asarray(batch["zone_id" if key == "zone" else "region"])[keep]]
      ids = np.array([table.setdefault(n, len(table)) for n in names], np.int32)
      parts[key].append(np.repeat(ids, np.prod(hw)))
    for name, fn in predict_fns.items():
      parts[name].append(np.asarray(fn(image, **inputs)).astype(np.uint8).ravel())
  if not parts["label"]:
    raise UserError("the evaluation split yielded no example; pass another --split")
  out = {k: np.concatenate(v) for k, v in parts.items()}
  out["zones"], out["regions"] = list(zones), list(regions)
  return out


def parcel_votes(zone, parcel, label, pred, num_classes: int, background: int | None = None):
  """(true class [G], voted class [G]) for the G parcels with a labelled pixel,
  each the parcel's class of its pixels (`metrics.parcel_class`).

  Vectorized: one bincount over (parcel group, class) keys.
  """
  inside = parcel > 0
  key = (zone[inside].astype(np.int64) << 32) | parcel[inside].astype(np.int64)
  _, group = np.unique(key, return_inverse=True)
  g = int(group.max()) + 1 if group.size else 0
  votes = np.bincount(group * num_classes + pred[inside], minlength=g * num_classes)
  lab = label[inside]
  labelled = lab != NO_LABEL
  truth = np.bincount(group[labelled] * num_classes + lab[labelled], minlength=g * num_classes)
  votes, truth = votes.reshape(g, num_classes), truth.reshape(g, num_classes)
  has_truth = truth.sum(1) > 0
  return (metrics.parcel_class(truth, background)[has_truth],
          metrics.parcel_class(votes, background)[has_truth])


def headline(summary: dict) -> dict:
  """The headline scores of a `metrics.summarize` dict, with the classes its macro
  averages run over (they differ from region to region)."""
  return {k: summary[k] for k in HEADLINE + ("miou_all", "background", "num_pixels",
                                             "macro_rule", "macro_classes")}


def macro_lines(result: dict, level: str, split: str) -> list[str]:
  """Which classes enter the macro averages of `level`, per predictor: the rule
  and the class list, so a macro-F1 can be compared with another study's."""
  out = []
  for name, summary in result[level].items():
    classes = summary["macro_classes"]
    out.append(f"Macro averages and mIoU of {name} run over the {len(classes)} "
               f"{summary['macro_rule']} of the {split} split: "
               f"{', '.join(classes) or 'none'}.")
  return out


def compute(pixels: dict, predictors, class_names, tree=None, names_by_tier=None) -> dict:
  """metrics.json content (without metadata) from `collect` output.

  The top-level pixel / parcel / per_region / confusion_matrix are tier 3 (the
  classes). With `tree` (jaxcrop.hierarchy.Tree) and `names_by_tier`
  {1: [K1 names], 2: […], 3: […]}, `tiers` = {"tier1": {…}, "tier2": {…},
  "tier3": {…}} holds the same content at each tier plus its `class_names`:
  labels and every predictor's pixels mapped to their tier-t parent, then
  scored and voted per parcel at that tier (a parcel's tier-2 vote is the
  majority of its pixels' groups, not the group of its tier-3 vote).
  """
  out = compute_tier(pixels, predictors, class_names)
  if tree is not None:
    out["tiers"] = {}
    for tier in (1, 2, 3):
      mapped = dict(pixels)
      for key in ("label", *predictors):
        mapped[key] = hierarchy.to_tier(pixels[key], tree.parents(tier))
      names = list(names_by_tier[tier])
      out["tiers"][f"tier{tier}"] = {"class_names": names,
                                     **compute_tier(mapped, predictors, names)}
  return out


def compute_tier(pixels: dict, predictors, class_names) -> dict:
  """pixel / parcel / per_region / confusion_matrix / agricultural_area of the
  classes in `pixels`."""
  k = len(class_names)
  background = metrics.background_id(class_names)
  out = {"pixel": {}, "parcel": {}, "per_region": {}, "confusion_matrix": {}}
  for name in predictors:
    cm = metrics.confusion_matrix_np(pixels["label"], pixels[name], k)
    out["pixel"][name] = metrics.summarize(cm, class_names)
    out["confusion_matrix"][f"pixel_{name}"] = cm.tolist()
    truth, vote = parcel_votes(pixels["zone"], pixels["parcel"], pixels["label"], pixels[name],
                               k, background)
    pcm = metrics.confusion_matrix_np(truth, vote, k)
    out["parcel"][name] = {**metrics.summarize(pcm, class_names), "num_parcels": int(len(truth))}
    out["confusion_matrix"][f"parcel_{name}"] = pcm.tolist()
    for r, region in enumerate(pixels["regions"]):
      here = pixels["region"] == r
      rcm = metrics.confusion_matrix_np(pixels["label"][here], pixels[name][here], k)
      rsum = metrics.summarize(rcm, class_names)
      rtruth, rvote = parcel_votes(pixels["zone"][here], pixels["parcel"][here],
                                   pixels["label"][here], pixels[name][here], k, background)
      rpsum = metrics.summarize(metrics.confusion_matrix_np(rtruth, rvote, k), class_names)
      out["per_region"].setdefault(region, {})[name] = {
          **headline(rsum), "per_class": rsum["per_class"],
          "parcel": {**headline(rpsum), "num_parcels": int(len(rtruth))}}
  out["agricultural_area"] = agricultural_area(pixels, predictors, class_names)
  return out


def agricultural_area(pixels: dict, predictors, class_names) -> dict | None:
  """metrics.json's `agricultural_area`: any crop class vs the background
  (`metrics.agricultural_area`) of each predictor's pixels, overall (`pixel`) and
  per region (`per_region`); None when the classes have no background."""
  background = metrics.background_id(class_names)
  if background is None:
    return None
  def scores(here):
    return {name: metrics.agricultural_area(metrics.confusion_matrix_np(
        pixels["label"][here], pixels[name][here], len(class_names)), background)
        for name in predictors}
  return {"background_class": class_names[background],
          "pixel": scores(np.ones(len(pixels["label"]), bool)),
          "per_region": {region: scores(pixels["region"] == r)
                         for r, region in enumerate(pixels["regions"])}}


def markdown(result: dict, note: str = "") -> str:
  """metrics.md: the headline scores per level, region and tier, then the model's
  per-class scores (one markdown table each, `jaxcrop.tables`)."""
  names = list(result["pixel"])
  lines = [f"# Evaluation: {result['split']} split, {result['checkpoint']} checkpoint", ""]
  if note:
    lines += [f"> {note}", ""]
  area = result.get("agricultural_area")
  for level in ("pixel", "parcel"):
    lines += [f"## {level.capitalize()} level", "", _level_table(result[level], names, level == "pixel"),
              "", *macro_lines(result, level, result["split"]), ""]
    if area:
      lines += [BACKGROUND_NOTE.format(background=area["background_class"]), ""]
  if area:
    lines += [f"## Agricultural area (any crop class vs {area['background_class']}, pixels)",
              "", _area_table(area, names), ""]
  lines += ["## Per region (macro-F1 / overall accuracy)", "", _region_table(result, names)]
  if "tiers" in result:
    lines += ["", "## Per tier (1: families, 2: groups, 3: classes)", "",
              *_tier_tables(result, names)]
  if "in_season" in result:
    from jaxcrop import in_season_eval   # pylint: disable=g-import-not-at-top
    lines += ["", "## In season (macro-F1 by cut-off month)", "",
              in_season_eval.table(result["in_season"]), "", in_season_eval.NOTE]
  lines += ["", "Per region, the macro averages run over the classes present in that region's "
            "truth or prediction (`macro_classes` of each region in metrics.json).",
            "", "## Per class (pixel level, model)", "",
            metrics.per_class_table(result["pixel"]["model"]), ""]
  if result.get("calibration"):
    lines += calibrate.markdown(result["calibration"], result["split"])
  return "\n".join(lines)


BACKGROUND_NOTE = (
    "macro_f1, macro_precision, macro_recall and miou: the crop classes, {background} "
    "excluded (comparable with runs of nomenclatures without it); miou_all: every class "
    "present, {background} included (PASTIS-style); background F1 / IoU: {background}'s.")


def _level_table(by: dict, names, pixels: bool) -> str:
  """The headline scores of each predictor at one level; at pixel level with a
  background, miou_all and the background's F1 and IoU too (no parcel is
  background in the truth: at parcel level they would say nothing)."""
  rows = [[m, *(f"{by[n][m]:.4f}" for n in names)] for m in HEADLINE]
  if pixels and by[names[0]].get("background") is not None:
    rows += [["miou_all", *(f"{by[n]['miou_all']:.4f}" for n in names)]]
    rows += [[f"background {m}", *(f"{by[n]['background'][key]:.4f}" for n in names)]
             for m, key in (("F1", "f1"), ("IoU", "iou"))]
  return markdown_table(["metric", *names], rows)


def _area_table(area: dict, names) -> str:
  """IoU, precision and recall of the agricultural area per predictor, all regions
  then each region."""
  cells = lambda by: [f"{by[n][m]:.4f}" for n in names for m in ("iou", "precision", "recall")]
  return markdown_table(
      ["region", *(f"{n} {m}" for n in names for m in ("IoU", "precision", "recall"))],
      [["all", *cells(area["pixel"])],
       *([region, *cells(by)] for region, by in area["per_region"].items())])


def _region_table(result: dict, names) -> str:
  """Per region: pixel and parcel macro-F1 / overall accuracy of each predictor."""
  both = lambda s: f"{s['macro_f1']:.4f} / {s['overall_accuracy']:.4f}"
  return markdown_table(
      ["region", *(f"{n} {level}" for n in names for level in ("pixel", "parcel"))],
      ([region, *(cell for n in names for cell in (both(by[n]), both(by[n]["parcel"])))]
       for region, by in result["per_region"].items()))


def _tier_tables(result: dict, names) -> list[str]:
  """Per tier: macro-F1 and overall accuracy of each predictor at each level;
  then per region and tier: pixel / parcel macro-F1."""
  tiers = result["tiers"]
  per_tier = markdown_table(
      ["tier", *(f"{n} {level} {m}" for n in names for level in ("pixel", "parcel")
                 for m in ("macro-F1", "OA"))],
      ([f"{tier[-1]} ({len(by['class_names'])} classes)",
        *(f"{by[level][n][m]:.4f}" for n in names for level in ("pixel", "parcel")
          for m in ("macro_f1", "overall_accuracy"))] for tier, by in tiers.items()))
  per_region = markdown_table(
      ["region", "tier", *names],
      ([region, tier[-1], *(f"{by['per_region'][region][n]['macro_f1']:.4f} / "
                            f"{by['per_region'][region][n]['parcel']['macro_f1']:.4f}"
                            for n in names)]
       for region in result["per_region"] for tier, by in tiers.items()))
  return [per_tier, "", "Per region and tier (pixel macro-F1 / parcel macro-F1):", "",
          per_region]


def check_same_layout(trained, current, workdir) -> None:
  """Raises UserError when the dataset's classes, months or bands are not the ones the
  checkpoint was trained on (e.g. a rebuilt dataset of another version)."""
  diffs = trained.compatible_with(current)
  if diffs:
    raise UserError(f"dataset {current.builder_config} {current.version} is not the layout "
                    f"{workdir} was trained on ({trained.version}): {'; '.join(diffs)}; pass "
                    f"the data_dir it was trained on (--data_dir) or retrain")


def evaluate(workdir, *, which="best", split=None, with_baseline=True, data=None,
             max_batches=None, data_dir=None, baseline_dir=None, out_dir=None,
             in_season=None) -> dict:
  """Evaluate `workdir`'s checkpoint; writes workdir/eval/*; returns metrics.json content.

  baseline_dir: where the baseline is cached (default: workdir; cross-validation
  shares one per fold between its settings). out_dir: instead of workdir/eval.
  in_season: also the `in_season` section (None: when the model was trained with
  random cut-offs, `data.cut_off_months`).
  """
  if data is None:
    from jaxcrop import input_pipeline as data  # pylint: disable=g-import-not-at-top
  workdir = checkpoint.workdir_path(workdir)   # local or gs://
  trained = checkpoint.load_trained(workdir, which)
  cfg = train.with_data_inputs(trained.config)   # valid_count when the model takes it
  if data_dir:
    cfg.data.data_dir = data_dir
  split = split or cfg.data.test_split
  meta = trained.meta
  check_same_layout(meta, data.load_meta(cfg.data), workdir)
  class_names = list(meta.class_names)
  tap = calibrate.Tap(calibrate.logits_fn_of(trained))   # the model's classes; logits kept
  predictors, clf = {"model": tap}, None
  if with_baseline:
    clf = _baseline(cfg, data, meta, baseline_dir or workdir)
    predictors["baseline"] = lambda x, **_: baseline.predict(clf, x)
  # The checkpoint's statistics, as predict uses: a rebuilt dataset's own
  # moments (other folds, other zones) would shift every input the model sees.
  shifts = alignment(cfg, workdir)           # season alignment, when the model has it
  pixels = collect(split_batches(cfg, data, split, meta, shifts), predictors, max_batches)
  result = {"split": split, "checkpoint": which, "step": trained.step,
            "dataset": cfg.data.builder_config,
            "nomenclature_version": meta.nomenclature_version,
            **compute(pixels, predictors, class_names, Tree.of(meta),
                      {t: hierarchy.tier_names(meta, t) for t in (1, 2, 3)})}
  # The model's logits sampled by its Tap during `collect` (before the sections
  # below call the model again on other inputs).
  result["calibration"] = calibrate.evaluation(
      *tap.sample(pixels["label"]), calibrate.temperature(workdir, trained.step),
      Tree.of(meta), {t: hierarchy.tier_names(meta, t) for t in (1, 2, 3)})
  if cfg.data.get("cut_off_months") if in_season is None else in_season:
    from jaxcrop import in_season_eval   # pylint: disable=g-import-not-at-top
    result["in_season"] = in_season_eval.evaluate(
        cfg, meta, data, split, predictors["model"], max_batches=max_batches,
        baseline_folder=with_baseline and checkpoint.workdir_path(baseline_dir or workdir),
        shifts=year_shifts(cfg, data, split, meta, shifts) if shifts else None,
        full_baseline=clf)
  if cfg.get("years") and split == cfg.data.test_split:    # a year-held-out run
    result["unseen_year"] = _unseen_year(cfg, data, meta, predictors, max_batches, pixels,
                                         result, shifts)
  if shifts:
    result["season_shift"] = season_shift_section(shifts)
  note = ("synthetic demo dataset: these numbers test the pipeline, they are not "
          "real-world results" if cfg.data.builder_config.startswith("demo") else "")
  out = checkpoint.workdir_path(out_dir) if out_dir else workdir / "eval"
  write_outputs(out, result, note, class_names)
  reliability.write_figures(out, result["calibration"], result["split"])
  return result


def _baseline(cfg, data, meta, folder):
  """The per-pixel baseline of `cfg`'s training split, fitted once and cached in `folder`
  (`baseline.fit_or_load`)."""
  base_cfg = cfg.eval.baseline
  return baseline.fit_or_load(
      folder, lambda: data.eval_batches(cfg.data, cfg.data.train_split, meta),
      total_labelled=int(np.sum(meta.class_pixel_counts)), max_pixels=base_cfg.max_pixels,
      max_iter=base_cfg.get("max_iter", 100), seed=cfg.seed, train_split=cfg.data.train_split,
      classes=list(meta.class_names))


def alignment(cfg, workdir) -> dict:
  """The season alignment state of an evaluation (`data.align_season`): {"reference":
  workdir's `season_shift.read_reference` record or None}, to which `year_shifts`
  adds the zone-years' shifts by year; {} for a model that does not align."""
  if not cfg.data.get("align_season", False):
    return {}
  from jaxcrop import season_shift  # pylint: disable=g-import-not-at-top
  return {"reference": season_shift.read_reference(workdir)}


def season_shift_section(shifts: dict) -> dict:
  """metrics.json's `season_shift`: the months each region was moved, by year."""
  return {
      "months": {y: z.summary() for y, z in shifts.items() if y != "reference"},
      "reference": "training split's profile per region (season_reference.json)"
                   if shifts["reference"] else "the checkpoint's mean (no "
                   "season_reference.json)",
      "note": "each zone-year moved in time by this many months (later when > 0) onto "
              "the training years' calendar before the model and the baseline saw it: "
              "one shift per region and year, from the valid observations of all the "
              "year's zones (data.align_season, jaxcrop.season_shift)"}


def split_batches(cfg, data, split: str, meta, shifts: dict | None = None):
  """`data.eval_batches` of `split` normalized with the checkpoint's `meta`; with
  `cfg.data.align_season`, each zone-year's season first moved onto the training
  years' calendar (`jaxcrop.season_shift`), by the shift of its region in its
  year: every zone-year of the split's years in the dataset pools its valid
  observations (`year_shifts`, kept in `shifts` by year for the next splits and
  metrics.json)."""
  if not cfg.data.get("align_season", False):
    return data.eval_batches(cfg.data, split, meta)
  from jaxcrop import season_shift  # pylint: disable=g-import-not-at-top
  from jaxcrop.input_pipeline import normalize  # pylint: disable=g-import-not-at-top
  zones = year_shifts(cfg, data, split, meta, {} if shifts is None else shifts)
  with_count = bool(cfg.data.get("valid_count", False))

  def aligned():
    for b in data.eval_batches(cfg.data, split, meta, raw=True):
      by = zones.of(b["zone_id"])
      b = dict(b, image=normalize(season_shift.shift_batch(b["image"], by), meta.mean,
                                  meta.std))
      count = b.pop("valid_count")
      if with_count:
        b["valid_count"] = season_shift.shift_counts(count, by).astype(np.float32)
      yield b
  return aligned()


def year_shifts(cfg, data, split: str, meta, shifts: dict):
  """The `season_shift.ZoneShifts` of `split`'s zone-years: built from every split of
  the same years (a multi-year dataset's `y<year>_*`; the split alone otherwise),
  their zones pooled by region, against the checkpoint's moments; cached in
  `shifts` under the years' label (`2023`, or the split's name); `shifts["reference"]`:
  the training workdir's `season_shift.read_reference` record, or None."""
  from jaxcrop import season_shift  # pylint: disable=g-import-not-at-top
  years = years_lib.years_of(split)
  if len(years) > 1:      # zone ids repeat across years: the profiles would mix
    raise UserError(f"split {split!r} spans the years {', '.join(map(str, years))}: "
                    f"data.align_season aligns one year at a time; evaluate each year's "
                    f"split on its own (--split y{years[-1]}_test)")
  key = "+".join(map(str, years)) or split
  if key not in shifts:
    parts = ([s for s in data.split_names(cfg.data)
              if (p := years_lib.parse(s)) and p[0] in years] if years else [split])
    shifts[key] = season_shift.from_batches(
        data.eval_batches(cfg.data, "+".join(parts), meta, raw=True), meta.mean, meta.std,
        shifts.get("reference"))
  return shifts[key]


def _unseen_year(cfg, data, meta, predictors, max_batches, pixels, result,
                 shifts=None) -> dict:
  """metrics.json's `unseen_year` (`jaxcrop.unseen_year`): the same-year and
  seen-space splits scored like the test split, the previous-year baseline."""
  from jaxcrop import previous_year, unseen_year  # pylint: disable=g-import-not-at-top
  names_by_tier = {t: hierarchy.tier_names(meta, t) for t in (1, 2, 3)}
  score = lambda s: compute(collect(split_batches(cfg, data, s, meta, shifts), predictors,
                                    max_batches), predictors, list(meta.class_names),
                            Tree.of(meta), names_by_tier)
  previous = None
  if cfg.years.get("previous_year", True):
    root = unseen_year.zones_root(cfg, data.dataset_dir(cfg.data))
    previous = lambda year, zones: previous_year.evaluate(root, year, zones, meta)
  return unseen_year.run(cfg, result, score, previous, pixels["zones"])


def _unseen_year_md(result: dict) -> str:
  """metrics.md's unseen-year section (`unseen_year.table`), "" for other runs."""
  if "unseen_year" not in result:
    return ""
  from jaxcrop import unseen_year  # pylint: disable=g-import-not-at-top
  return f"\n\n## Unseen year\n\n```\n{unseen_year.table(result['unseen_year'])}\n```\n"


def write_outputs(out, result: dict, note: str, class_names) -> None:
  """Writes out/metrics.{json,md} and out/confusion_{pixel,parcel}.png (the
  model's confusion matrices), each whole; the temporaries of runs killed in `out`
  go first (`atomic.claim`, shared with the other writers of `out`)."""
  from jaxcrop.figures.scores import plot_confusion  # one confusion figure for every caller
  with atomic.claim(out, shared=True), tempfile.TemporaryDirectory() as tmp:
    atomic.write_text(out / "metrics.json", json.dumps(result, indent=1))
    atomic.write_text(out / "metrics.md", markdown(result, note) + _unseen_year_md(result))
    for level in ("pixel", "parcel"):   # matplotlib writes local files; out may be gs://
      name = f"confusion_{level}.png"
      plot_confusion(result["confusion_matrix"][f"{level}_model"], class_names,
                     pathlib.Path(tmp) / name, unit=f"{level}s",
                     title=f"{level} level, {result['split']} split: model confusion "
                           f"(rows: % of the true class)")
      atomic.write_bytes(out / name, (pathlib.Path(tmp) / name).read_bytes())


def compact_table(result: dict) -> str:
  """The summary `python -m jaxcrop.evaluate` prints: one column per predictor;
  with a background class also miou_all, the background's F1 and the agricultural
  area's IoU, precision and recall, and a line saying what macro_f1 runs over."""
  names = list(result["pixel"])
  row = lambda label, values: f"{label:24s}" + "".join(f"{v:12.4f}" for v in values)
  rows = [f"{'':24s}" + "".join(f"{n:>12s}" for n in names)]
  for level in ("pixel", "parcel"):
    for m in ("overall_accuracy", "macro_f1", "miou"):
      rows.append(row(f"{level} {m}", (result[level][n][m] for n in names)))
  for tier in ("tier2", "tier1"):
    for level in ("pixel", "parcel") if tier in result.get("tiers", {}) else ():
      by = result["tiers"][tier][level]
      rows.append(row(f"{tier} {level} macro_f1", (by[n]["macro_f1"] for n in names)))
  area = result.get("agricultural_area")
  if area:
    pixel = result["pixel"]
    rows.append(row("pixel miou_all", (pixel[n]["miou_all"] for n in names)))
    rows.append(row("background f1", (pixel[n]["background"]["f1"] for n in names)))
    for m in ("iou", "precision", "recall"):
      rows.append(row(f"agri-area {m}", (area["pixel"][n][m] for n in names)))
    rows.append(f"macro_f1, miou: crop classes ({area['background_class']} excluded); "
                f"miou_all: all classes; agri-area: any crop class vs "
                f"{area['background_class']}")
  return "\n".join(rows)


def build_parser() -> cli.ArgumentParser:
  """The flags of `python -m jaxcrop.evaluate`."""
  p = cli.ArgumentParser("python -m jaxcrop.evaluate", __doc__)
  p.add_argument("--workdir", metavar="DIR", help=(
      "Training workdir of python -m jaxcrop.train (config.json + checkpoints; may be "
      "gs://). Required."))
  p.add_argument("--which", choices=("best", "last"), default="best", help=(
      "Checkpoint to evaluate: the best validation macro-F1 (falls back to last) or the "
      "last one (default: %(default)s)."))
  p.add_argument("--split", help=(
      "TFDS split to evaluate, e.g. test or fold2 (default: the config's data.test_split)."))
  p.add_switch("baseline", True, "Also fit (or reuse, from DIR/baseline/) and evaluate the "
               "per-pixel gradient-boosting baseline.")
  p.add_argument("--in_season", action=argparse.BooleanOptionalAction, default=None, help=(
      "Also score the model and the baseline by cut-off month (April, May, June, July, "
      "August, December: the season cut off there; metrics.json `in_season`) "
      "(default: on for models trained with configs/hybrid.py:inseason)."))
  p.add_argument("--data_dir", metavar="DIR", help=(
      "TFDS data_dir (default: the one the model was trained on, from config.json)."))
  p.add_argument("--max_batches", type=cli.positive_int, metavar="N", help=(
      "Evaluate only the first N batches (a quick look; default: the whole split)."))
  return p


def _main(args) -> int:
  logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
  if not args.workdir:
    raise UserError("--workdir is required (the workdir of python -m jaxcrop.train)")
  result = evaluate(args.workdir, which=args.which, split=args.split,
                    with_baseline=args.baseline, max_batches=args.max_batches,
                    data_dir=args.data_dir, in_season=args.in_season)
  if result["dataset"].startswith("demo"):
    print("(synthetic demo dataset — not a real-world result)")
  print(compact_table(result))
  print("\n".join(calibrate.lines(result["calibration"])))
  if "in_season" in result:
    from jaxcrop import in_season_eval   # pylint: disable=g-import-not-at-top
    print(f"\nin season, macro-F1 by cut-off month (crop classes):\n"
          f"{in_season_eval.table(result['in_season'])}")
  if "unseen_year" in result:
    from jaxcrop import unseen_year  # pylint: disable=g-import-not-at-top
    print("\nunseen year\n" + unseen_year.table(result["unseen_year"]))
  print(f"written: {checkpoint.workdir_path(args.workdir) / 'eval'}/metrics.{{json,md}}, "
        f"confusion_*.png, reliability_tier*.png")
  return 0


def main(argv=None) -> int:
  """`python -m jaxcrop.evaluate`; argv without the program name (None: sys.argv)."""
  return cli.main(build_parser(), _main, argv)


if __name__ == "__main__":
  sys.exit(main())
