"""Spatial cross-validation over the training folds, then a final retrain.

  python -m jaxcrop.cv --config configs/hybrid.py:demo --workdir W
  ... --config.cv.grid.lr='(3e-4,1e-3)' --config.cv.grid.kernel_size='(3,5,7)'

For every setting of `config.cv.grid` (the product of its lists) and every fold
k of `config.cv.folds`: train on the other folds, validate on fold k (the run's
best validation macro-F1, averaged over the classes present in the fold's truth
or prediction: listed per fold). Reports mean ± std over folds per setting in
W/cv/results.json and W/cv/results.md, then retrains the best setting on all
folds (W/final) for `train.num_steps` steps with a single evaluation at the end
(the validation split is then inside the training data, so "best" = "last"
and the test split stays untouched for `jaxcrop.evaluate --workdir W/final`).
Every run lives in its own workdir and resumes, so an interrupted CV reruns
only what is missing. SIGTERM stops the whole CV (the run in flight saves, the
results so far are written with "—" for the folds not run, exit 143); rerun
the same command to resume.
"""
from __future__ import annotations

import itertools
import json
import sys

from absl import logging
import numpy as np

from jaxcrop import checkpoint, cli, hierarchy, metrics, preemption, train, validation
from jaxcrop.tables import markdown_table
from cropcontracts import atomic
from cropcontracts import years
from cropcontracts.errors import UserError

# Grid keys → config fields; any other key is a config path with "__" for ".".
GRID_PATHS = {"lr": "optimizer.lr", "kernel_size": "model.temporal.kernel_size"}


def settings(grid) -> list[dict]:
  """The product of the grid's value lists: [{key: value}, …] in grid order."""
  keys = list(grid)
  return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def apply_setting(config, setting: dict):
  """A copy of `config` with the setting's values written into their fields."""
  c = config.copy_and_resolve_references()
  c.unlock()
  for key, value in setting.items():
    *parents, leaf = GRID_PATHS.get(key, key.replace("__", ".")).split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def setting_name(setting: dict) -> str:
  return "_".join(f"{k}={v}" for k, v in setting.items())


def fold_config(config, folds, k: int):
  c = config.copy_and_resolve_references()
  c.unlock()
  c.data.train_split = "+".join(f for i, f in enumerate(folds) if i != k)
  c.data.val_split = folds[k]
  return c


RARE = 5   # the F1 of the RARE rarest classes is reported beside the macro-F1


def rarest_classes(class_pixel_counts, n: int = RARE, background: int | None = None) -> list[int]:
  """Ids of the n crop classes with the fewest training pixels (> 0), rarest first
  (ties: lower id); `background`, the background class's id, is never one."""
  counts = np.asarray(class_pixel_counts)
  present = np.flatnonzero((counts > 0) & (np.arange(len(counts)) != background))
  return [int(k) for k in present[np.argsort(counts[present], kind="stable")][:n]]


def fold_scores(cm, tree, rare, class_names=None) -> dict:
  """Validation scores of one run from its best confusion matrix [K3, K3]:
  macro-F1 at tiers 1, 2, 3 (the crop classes': a background class among
  `class_names` left out) and the mean F1 of the `rare` classes present in the
  fold (truth or prediction; NaN when none is). With a background also
  miou_all, background_f1, background_iou and the agricultural area's
  agricultural_iou, agricultural_precision, agricultural_recall."""
  background = metrics.background_id(class_names)
  out = {}
  for tier in (1, 2, 3):
    out[f"tier{tier}_macro_f1"] = validation.tier_macro_f1(cm, tree, tier, background)
  summary = metrics.summarize(cm, class_names)
  per_class = summary["per_class"]
  f1 = [per_class[k]["f1"] for k in rare if per_class[k]["present"]]
  out[f"rare{len(rare)}_f1"] = float(np.mean(f1)) if f1 else float("nan")
  if background is not None:
    area = metrics.agricultural_area(cm, background)
    out.update(miou_all=summary["miou_all"], background_f1=summary["background"]["f1"],
               background_iou=summary["background"]["iou"],
               **{f"agricultural_{m}": area[m] for m in ("iou", "precision", "recall")})
  return out


def eval_scores(result: dict) -> dict:
  """{"tier<t>/<level>/<predictor>/<metric>": value} from an evaluate() result,
  {"tier3/pixel/<predictor>/f1/<class>": value} for the classes present in the
  fold (truth or prediction), and
  {"agricultural_area/pixel/<predictor>/<iou|precision|recall>": value} when it
  has a background class."""
  out = {}
  for tier, by in result.get("tiers", {}).items():
    for level in ("pixel", "parcel"):
      for name, summary in by[level].items():
        for m in ("macro_f1", "overall_accuracy"):
          out[f"{tier}/{level}/{name}/{m}"] = summary[m]
  tier3 = result.get("tiers", {}).get("tier3")
  for name, summary in (tier3["pixel"] if tier3 else {}).items():
    out.update({f"tier3/pixel/{name}/f1/{cls}": s["f1"]
                for cls, s in zip(tier3["class_names"], summary["per_class"]) if s["present"]})
  for name, area in ((result.get("agricultural_area") or {}).get("pixel") or {}).items():
    for m in ("iou", "precision", "recall"):
      out[f"agricultural_area/pixel/{name}/{m}"] = area[m]
  return out


def _mean_std(values) -> dict:
  """Mean and std of the finite values (None: a fold not run); NaN when none is."""
  v = np.asarray([np.nan if x is None else x for x in values], np.float64)
  ok = v[np.isfinite(v)]
  return {"mean": float(ok.mean()) if ok.size else float("nan"),
          "std": float(ok.std()) if ok.size else float("nan")}


def _read_run(run_dir):
  """(best confusion matrix, class_pixel_counts, Tree, class names) of a finished
  run, or None when the run wrote no val_best.json (no validation)."""
  from cropcontracts.dataset_meta import DatasetMeta  # pylint: disable=g-import-not-at-top
  if not (run_dir / "val_best.json").exists() or not (run_dir / "dataset_meta.json").exists():
    return None
  meta = DatasetMeta.from_json((run_dir / "dataset_meta.json").read_text())
  cm = np.asarray(json.loads((run_dir / "val_best.json").read_text())["confusion_matrix"])
  return cm, meta.class_pixel_counts, hierarchy.Tree.of(meta), list(meta.class_names)


class Stopped(Exception):
  """SIGTERM during the CV: the run in flight has saved; rerun to resume."""


def run_cv(config, workdir, *, data=None, retrain=True) -> dict:
  """See the module doc. Per run (setting × fold) also: macro-F1 at tiers 1, 2, 3
  and the F1 of the 5 rarest classes (from val_best.json); with
  `config.cv.evaluate`, `jaxcrop.evaluate` on the validation fold (pixel and
  parcel level, per region, every tier, the baseline beside the model with
  `config.cv.baseline`; one baseline per fold, shared by the settings).

  SIGTERM stops the whole CV: the run in flight saves its checkpoint (as
  `jaxcrop.train` does), results.{json,md} are written for the runs finished so
  far (a fold not run is None / "—"; `stopped` names the run), the retrain is
  skipped, and the result has `stopped`. Rerunning the same command resumes.
  """
  workdir = checkpoint.workdir_path(workdir)   # local or gs://
  folds = list(config.cv.folds)
  if len(folds) < 2:
    raise UserError(f"config.cv.folds needs at least 2 folds, got {folds}")
  grid = settings(config.cv.grid)
  n = len(folds)
  rows = [{"setting": s, "name": setting_name(s), "val_macro_f1": [None] * n,
           "val_macro_classes": [None] * n} for s in grid]
  evals = [[{} for _ in folds] for _ in grid]
  runs = []
  stopped = None
  # A SIGTERM between runs (evaluation, baseline) sets `stop.flag`; during a run,
  # train's own Preemption takes it (the run saves and returns `preempted`).
  stop = preemption.Preemption()
  try:
    for i, setting in enumerate(grid):
      for k in range(n):
        c = fold_config(apply_setting(config, setting), folds, k)
        run_dir = workdir / "cv" / rows[i]["name"] / f"val_{years.label(folds[k])}"
        if stop.flag:
          raise Stopped(run_dir)
        print(f"cv: {rows[i]['name']}, validate on {folds[k]} (train {c.data.train_split})",
              file=sys.stderr)
        result = train.train_and_evaluate(c, run_dir, data=data)
        if result.get("preempted"):
          raise Stopped(run_dir)
        rows[i]["val_macro_f1"][k] = result["best_val_macro_f1"]
        rows[i]["val_macro_classes"][k] = best_val_classes(run_dir)
        runs.append((i, k, _read_run(run_dir)))
        if config.cv.get("evaluate", False):
          evals[i][k] = _evaluate_fold(c, run_dir,
                                       workdir / "cv" / "baseline" / years.label(folds[k]), data)
  except Stopped as e:
    stopped = str(e.args[0])
  finally:
    stop.close()
  for row, by_fold in zip(rows, evals):
    row.update(_mean_std(row["val_macro_f1"]))
    row["folds_done"] = sum(v is not None for v in row["val_macro_f1"])
    keys = list(dict.fromkeys(k for e in by_fold for k in e))   # a class in some folds
    if keys:
      row["eval"] = {key: {"per_fold": [e.get(key) for e in by_fold],
                           **_mean_std([e.get(key) for e in by_fold])} for key in keys}
  _add_tier_scores(rows, runs, n)
  done = [r for r in rows if r["folds_done"]]
  best = max(done, key=lambda r: r["mean"]) if done else None
  out = {"folds": folds, "macro_rule": _macro_rule(runs), "results": rows, "best": best}
  if stopped:
    out["stopped"] = stopped
  elif retrain:
    c = apply_setting(config, best["setting"])
    c.data.train_split = "+".join(folds)
    c.train.eval_every = c.train.num_steps
    final = train.train_and_evaluate(c, workdir / "final", data=data)
    out["final"] = {"workdir": str(workdir / "final"), "step": final["step"],
                    "train_split": c.data.train_split}
    if final.get("preempted"):
      out["stopped"] = str(workdir / "final")
  with atomic.claim(workdir / "cv", shared=True):   # killed runs' temporaries go first
    atomic.write_text(workdir / "cv" / "results.json", json.dumps(out, indent=1))
    atomic.write_text(workdir / "cv" / "results.md", markdown(out))
  return out


def _macro_rule(runs) -> str:
  """The rule of the runs' macro-F1s: over the crop classes when their classes
  hold a background (`metrics.summarize`), else over every class present."""
  names = next((read[3] for _, _, read in runs if read is not None), None)
  return (metrics.MACRO_RULE if metrics.background_id(names) is None
          else metrics.CROP_MACRO_RULE)


def best_val_classes(run_dir) -> list[str] | None:
  """The classes the run's best validation macro-F1 averages over (its
  val_best.json), None when the run never wrote one."""
  path = run_dir / "val_best.json"
  return json.loads(path.read_text()).get("macro_classes") if path.exists() else None


def _evaluate_fold(c, run_dir, baseline_dir, data) -> dict:
  from jaxcrop import evaluate  # pylint: disable=g-import-not-at-top
  result = evaluate.evaluate(run_dir, split=c.data.val_split, data=data,
                             with_baseline=bool(c.cv.get("baseline", True)),
                             baseline_dir=baseline_dir, out_dir=run_dir / "eval_val")
  return eval_scores(result)


def _add_tier_scores(rows, runs, num_folds: int) -> None:
  """Adds `tiers` {score: {per_fold (None: fold not run), mean, std}} and
  `rare_classes` to each row with a finished run."""
  done = [r for r in runs if r[2] is not None]
  if not done:
    return
  total = np.sum([read[1] for _, _, read in done], 0)   # ∝ all folds' pixels
  rare = rarest_classes(total, background=metrics.background_id(done[0][2][3]))
  per_row = {}
  for i, k, (cm, _, tree, names) in done:
    per_row.setdefault(i, {})[k] = fold_scores(cm, tree, rare, names)
  for i, by_fold in per_row.items():
    keys = next(iter(by_fold.values()))
    rows[i]["rare_classes"] = rare
    per_fold = lambda key: [by_fold[k][key] if k in by_fold else None
                            for k in range(num_folds)]
    rows[i]["tiers"] = {key: {"per_fold": per_fold(key), **_mean_std(per_fold(key))}
                        for key in keys}


def _cell(value) -> str:
  return "—" if value is None else f"{value:.4f}"


def _mean_cell(d: dict, folds_done: int, num_folds: int) -> str:
  """'mean ± std', with '(n of N folds)' when some folds are missing."""
  if not folds_done:
    return "—"
  part = "" if folds_done == num_folds else f" ({folds_done} of {num_folds} folds)"
  return f"{d['mean']:.4f} ± {d['std']:.4f}{part}"


def _done(per_fold) -> int:
  return sum(v is not None for v in per_fold)


def markdown(out: dict) -> str:
  """results.md: one column per fold in every table ("—" for a fold not run)."""
  folds, n = out["folds"], len(out["folds"])
  lines = []
  if out.get("stopped"):
    lines += [f"**Stopped (SIGTERM) at {out['stopped']}: partial results; rerun the same "
              f"command to resume.**", ""]
  order = lambda rs: sorted(rs, key=lambda r: -r["mean"] if r.get("folds_done", n) else np.inf)
  lines += ["# Cross-validation (validation macro-F1 over folds " + ", ".join(folds) + ")", "",
            markdown_table(["setting", *folds, "mean ± std"], (
                [r["name"], *map(_cell, r["val_macro_f1"]),
                 _mean_cell(r, _done(r["val_macro_f1"]), n)] for r in order(out["results"])))]
  tiered = [r for r in out["results"] if "tiers" in r]
  if tiered:
    lines += ["", f"Per tier, and the F1 of the {RARE} rarest training classes (ids "
              f"{tiered[0]['rare_classes']}) — validation, mean ± std over folds:", "",
              _scores_table(order(tiered), "tiers", list(tiered[0]["tiers"]), n)]
  evaluated = [r for r in out["results"] if "eval" in r]
  if evaluated:
    lines += ["", "jaxcrop.evaluate on each validation fold (macro-F1, mean ± std; "
              "tier/level/predictor):", "",
              _scores_table(evaluated, "eval",
                            [k for k in evaluated[0]["eval"] if k.endswith("macro_f1")], n)]
    area = [k for k in evaluated[0]["eval"] if k.startswith("agricultural_area/")]
    if area:
      lines += ["", "Agricultural area (any crop class vs the background) on each validation "
                "fold (mean ± std; agricultural_area/pixel/predictor/score):", "",
                _scores_table(evaluated, "eval", area, n)]
  versus = versus_baseline(out)
  if versus:
    lines += ["", versus]
  return "\n".join(lines + _best_lines(out)) + "\n"


def versus_baseline(out: dict) -> str:
  """The best setting's model beside the per-pixel baseline on the same validation
  folds, tier 3, pixel level: overall accuracy, macro-F1 and the F1 of each class
  present in some fold, mean ± std over folds ("" without baseline scores)."""
  best = out.get("best") or {}
  scores, n = best.get("eval") or {}, len(out["folds"])
  if "tier3/pixel/baseline/macro_f1" not in scores:
    return ""
  metric = lambda who, m: scores.get(f"tier3/pixel/{who}/{m}")
  cell = lambda s: "—" if s is None else _mean_cell(s, _done(s["per_fold"]), n)
  classes = list(dict.fromkeys(k.split("/f1/", 1)[1] for k in scores if "/f1/" in k))
  rows = [(label, cell(metric("model", m)), cell(metric("baseline", m)))
          for label, m in (("overall accuracy", "overall_accuracy"), ("macro-F1", "macro_f1"),
                           *((f"F1 {c}", f"f1/{c}") for c in classes))]
  return "\n".join([f"Model vs the per-pixel baseline ({best['name']}; tier 3, pixel level, "
                    f"validation folds {', '.join(out['folds'])}; mean ± std over folds):",
                    "", markdown_table(["score", "model", "baseline"], rows)])


def _scores_table(rows, field: str, keys, num_folds: int) -> str:
  """One line per setting, one 'mean ± std' column per score of `row[field]`."""
  def cell(scores):
    return "—" if scores is None else _mean_cell(scores, _done(scores["per_fold"]), num_folds)
  return markdown_table(["setting", *keys],
                        ([r["name"], *(cell(r[field].get(k)) for k in keys)] for r in rows))


def _best_lines(out: dict) -> list[str]:
  """The best setting, the classes each fold's macro-F1 ran over, the retrain."""
  if out["best"] is None:
    return ["", "No run finished yet.", ""]
  lines = ["", f"Best: {out['best']['name']}.", "",
           f"Each validation macro-F1 averages over the {out['macro_rule']} of its fold "
           f"(best setting):"]
  for fold, classes in zip(out["folds"], out["best"]["val_macro_classes"]):
    listed = "not recorded" if classes is None else f"{len(classes)}: {', '.join(classes)}"
    lines.append(f"- {fold}: {listed}")
  lines.append("")
  if "final" in out:
    lines.append(f"Retrained on {out['final']['train_split']}: {out['final']['workdir']}.")
  return lines


def build_parser() -> cli.ArgumentParser:
  """The flags of `python -m jaxcrop.cv`."""
  p = cli.ArgumentParser("python -m jaxcrop.cv", __doc__)
  p.add_config("Experiment config, configs/hybrid.py[:variant]; the grid is config.cv.grid, "
               "the folds config.cv.folds. Required.")
  p.add_argument("--workdir", metavar="DIR", help=(
      "Root of the runs: DIR/cv/<setting>/val_<fold>, DIR/cv/results.{json,md} and "
      "DIR/final (may be gs://). Required."))
  p.add_switch("retrain", True, "Retrain the best setting on all folds (DIR/final).")
  return p


def _main(args) -> int:
  logging.set_verbosity(logging.WARNING)
  if args.config is None or args.workdir is None:
    raise UserError("--config and --workdir are required "
                         "(e.g. --config configs/hybrid.py:demo --workdir /tmp/cv)")
  out = run_cv(args.config, args.workdir, retrain=args.retrain)
  print(markdown(out))
  if out.get("stopped"):
    print(f"cv: stopped (SIGTERM) at {out['stopped']}; rerun the same command to resume",
          file=sys.stderr)
    return 128 + 15      # like a process ended by SIGTERM: a script does not go on
  return 0


def main(argv=None) -> int:
  """`python -m jaxcrop.cv`; argv without the program name (None: sys.argv)."""
  return cli.main(build_parser(), _main, argv)


if __name__ == "__main__":
  sys.exit(main())
