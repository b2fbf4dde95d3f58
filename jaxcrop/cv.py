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
only what is missing.
"""
from __future__ import annotations

import itertools
import json
import sys

from absl import logging
import numpy as np

from jaxcrop import checkpoint, cli, metrics, train
from jaxcrop.config import ConfigError

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


def run_cv(config, workdir, *, data=None, retrain=True) -> dict:
  workdir = checkpoint.workdir_path(workdir)   # local or gs://
  folds = list(config.cv.folds)
  if len(folds) < 2:
    raise ConfigError(f"config.cv.folds needs at least 2 folds, got {folds}")
  rows = []
  for setting in settings(config.cv.grid):
    name = setting_name(setting)
    scores, classes = [], []
    for k in range(len(folds)):
      c = fold_config(apply_setting(config, setting), folds, k)
      print(f"cv: {name}, validate on {folds[k]} (train {c.data.train_split})", file=sys.stderr)
      run_dir = workdir / "cv" / name / f"val_{folds[k]}"
      result = train.train_and_evaluate(c, run_dir, data=data)
      scores.append(result["best_val_macro_f1"])
      classes.append(best_val_classes(run_dir))
    rows.append({"setting": setting, "name": name, "val_macro_f1": scores,
                 "val_macro_classes": classes,
                 "mean": float(np.mean(scores)), "std": float(np.std(scores))})
  best = max(rows, key=lambda r: r["mean"])
  out = {"folds": folds, "macro_rule": metrics.MACRO_RULE, "results": rows, "best": best}
  if retrain:
    c = apply_setting(config, best["setting"])
    c.data.train_split = "+".join(folds)
    c.train.eval_every = c.train.num_steps
    final = train.train_and_evaluate(c, workdir / "final", data=data)
    out["final"] = {"workdir": str(workdir / "final"), "step": final["step"],
                    "train_split": c.data.train_split}
  (workdir / "cv").mkdir(parents=True, exist_ok=True)
  for name, text in (("results.json", json.dumps(out, indent=1)), ("results.md", markdown(out))):
    tmp = workdir / "cv" / (name + ".tmp")
    tmp.write_text(text)
    tmp.replace(workdir / "cv" / name)
  return out


def best_val_classes(run_dir) -> list[str] | None:
  """The classes the run's best validation macro-F1 averages over (its
  val_best.json), None when the run never wrote one."""
  path = run_dir / "val_best.json"
  return json.loads(path.read_text()).get("macro_classes") if path.exists() else None


def markdown(out: dict) -> str:
  lines = ["# Cross-validation (validation macro-F1 over folds " + ", ".join(out["folds"]) + ")", "",
           "| setting | " + " | ".join(out["folds"]) + " | mean ± std |",
           "|---" * (len(out["folds"]) + 2) + "|"]
  for r in sorted(out["results"], key=lambda r: -r["mean"]):
    lines.append(f"| {r['name']} | " + " | ".join(f"{s:.4f}" for s in r["val_macro_f1"]) +
                 f" | {r['mean']:.4f} ± {r['std']:.4f} |")
  lines += ["", f"Best: {out['best']['name']}.", "",
            f"Each validation macro-F1 averages over the {out['macro_rule']} of its fold "
            f"(best setting):"]
  for fold, classes in zip(out["folds"], out["best"]["val_macro_classes"]):
    listed = "not recorded" if classes is None else f"{len(classes)}: {', '.join(classes)}"
    lines.append(f"- {fold}: {listed}")
  lines.append("")
  if "final" in out:
    lines.append(f"Retrained on {out['final']['train_split']}: {out['final']['workdir']}.")
  return "\n".join(lines) + "\n"


FLAGS = (
    cli.Flag("config", "config", "Experiment config, configs/hybrid.py[:variant]; the grid is "
             "config.cv.grid, the folds config.cv.folds."),
    cli.Flag("workdir", str, "Root of the CV runs (cv/<setting>/val_<fold>) and final/."),
    cli.Flag("retrain", bool, "Retrain the best setting on all folds.", default=True),
)


def _main(fv) -> int:
  logging.set_verbosity(logging.WARNING)
  if fv.config is None or fv.workdir is None:
    raise cli.UsageError("--config and --workdir are required "
                         "(e.g. --config configs/hybrid.py:demo --workdir /tmp/cv)")
  out = run_cv(fv.config, fv.workdir, retrain=fv.retrain)
  print(markdown(out))
  return 0


def main(argv=None) -> int:
  """`python -m jaxcrop.cv`; argv without the program name (None: sys.argv)."""
  return cli.main_with_flags(__doc__, FLAGS, _main, argv)


if __name__ == "__main__":
  sys.exit(main())
