"""A model's temperature: fitted on the validation split, recorded in the workdir,
applied by predict, measured by evaluate (`jaxcrop.calibration` has the math).

  python -m jaxcrop.calibrate --workdir W [--which best]

Training ends with `fit_and_record` (config `train.calibrate`, on by default):
the checkpoint's logits over the labelled pixels of `data.val_split` (at most
`MAX_PIXELS`, taken evenly from every batch), the temperature that minimizes
their NLL, written to W/calibration.json:

  {"format": "jaxcrop-calibration/1", "temperature": T, "checkpoint": "best",
   "step": S, "split": "fold1", "pixels": N, "nll_before": …, "nll_after": …,
   "ece_before": …, "ece_after": …}

`temperature(W, step)` is what predict applies: T when the record is of the
checkpoint being used (same step), else 1.0 (no temperature). The command above
fits a workdir trained before calibration existed, or another checkpoint.
`evaluation` is evaluate's section: ECE per tier before and after the
temperature, and the reliability curves (`jaxcrop.figures.reliability` draws them).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from cropcontracts import atomic
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL
from jaxcrop import calibration

FORMAT = "jaxcrop-calibration/1"
FILE = "calibration.json"
MAX_PIXELS = 1_000_000


class Tap:
  """A class map function that keeps an even sample of the logits it computes.

  `tap(image [B,T,H,W,C], **inputs)` → classes int [B, H, W] (the argmax of
  logits_fn(image, inputs) [B, H, W, K]); meanwhile every s-th pixel's logits
  (in the order seen, pixels flattened batch by batch) are kept, s doubling and
  what was kept halved whenever more than 2 x max_pixels are held, so memory
  stays bounded whatever the split's size. `sample(labels)`, given the labels
  int [P] of all P pixels seen in that order (evaluate's `collect` gathers
  them), returns the labelled ones.
  """

  def __init__(self, logits_fn, max_pixels: int = MAX_PIXELS):
    self.logits_fn, self.max_pixels = logits_fn, max_pixels
    self.kept, self.index, self.stride, self.seen = [], [], 1, 0

  def __call__(self, image, **inputs) -> np.ndarray:
    out = np.asarray(self.logits_fn(image, inputs))
    flat = out.reshape(-1, out.shape[-1])
    take = np.flatnonzero((self.seen + np.arange(len(flat))) % self.stride == 0)
    self.kept.append(flat[take].astype(np.float32))
    self.index.append(self.seen + take)
    self.seen += len(flat)
    if sum(map(len, self.index)) > 2 * self.max_pixels:
      self.kept, self.index = [np.concatenate(self.kept)[::2]], [np.concatenate(self.index)[::2]]
      self.stride *= 2
    return out.argmax(-1)

  def sample(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 [N, K], labels int [N]) of the kept pixels that have a label."""
    if not self.kept:
      return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    logits, index = np.concatenate(self.kept), np.concatenate(self.index)
    label = np.asarray(labels)[index].astype(np.int64)
    ok = label != NO_LABEL
    return logits[ok], label[ok]


def pixel_logits(logits_fn, batches, *, max_pixels: int = MAX_PIXELS,
                 max_batches=None) -> tuple[np.ndarray, np.ndarray]:
  """`Tap.sample` over the unpadded examples of `batches` ({image, label, mask [B],
  valid_count?}); logits_fn(image [B,T,H,W,C], inputs dict) → [B, H, W, K]."""
  tap, labels = Tap(logits_fn, max_pixels), []
  for i, batch in enumerate(batches):
    if max_batches is not None and i >= max_batches:
      break
    keep = np.asarray(batch["mask"]) > 0
    if keep.any():
      inputs = ({"valid_count": np.asarray(batch["valid_count"])[keep]}
                if "valid_count" in batch else {})
      tap(np.asarray(batch["image"])[keep], **inputs)
      labels.append(np.asarray(batch["label"])[keep].ravel())
  return tap.sample(np.concatenate(labels) if labels else np.zeros(0, np.int64))


def logits_fn_of(trained):
  """Jitted (image, inputs) → logits [B, H, W, K] of a `checkpoint.Trained`."""
  import jax
  apply = jax.jit(lambda v, x, kw: trained.model.apply(v, x, train=False, **kw))
  return lambda x, kw: apply(trained.variables, x, kw)


def fit(logits: np.ndarray, labels: np.ndarray) -> dict:
  """The record's numbers: temperature, pixels, NLL and tier-3 ECE before / after."""
  t = calibration.fit_temperature(logits, labels)
  out = {"temperature": round(t, 6), "pixels": int(len(labels))}
  for when, temp in (("before", 1.0), ("after", t)):
    p = np.exp(calibration.log_softmax(logits, temp))
    out[f"nll_{when}"] = round(calibration.nll(logits, labels, temp), 6)
    out[f"ece_{when}"] = round(calibration.ece(p.max(-1), p.argmax(-1) == labels), 6)
  return out


def fit_and_record(workdir, *, which: str = "best", data=None, trained=None) -> dict:
  """Fits the temperature of `workdir`'s `which` checkpoint on its config's
  validation split and writes workdir/calibration.json (whole); returns the record."""
  from jaxcrop import checkpoint, train
  if data is None:
    from jaxcrop import input_pipeline as data  # pylint: disable=g-import-not-at-top
  workdir = checkpoint.workdir_path(workdir)
  trained = trained or checkpoint.load_trained(workdir, which)
  cfg = train.with_data_inputs(trained.config)
  split = cfg.data.val_split
  logits, labels = pixel_logits(logits_fn_of(trained),
                                data.eval_batches(cfg.data, split, trained.meta),
                                max_batches=cfg.eval.get("max_batches"))
  if not len(labels):
    raise UserError(f"the validation split {split} has no labelled pixel: no temperature "
                    f"to fit for {workdir}")
  record = {"format": FORMAT, **fit(logits, labels), "checkpoint": which,
            "step": trained.step, "split": split}
  atomic.write_text(workdir / FILE, json.dumps(record, indent=1))
  return record


def after_training(workdir, config, data, *, stopped: bool) -> dict | None:
  """What training records at its end (config `train.calibrate`): the best
  checkpoint's temperature (`fit_and_record`), or None when training was
  stopped (SIGTERM: the rerun that finishes fits it), calibration is off, or
  the run spans several processes (then `python -m jaxcrop.calibrate` fits it)."""
  import jax
  if stopped or not config.train.get("calibrate", False):
    return None
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      print(f"notice: no temperature fitted (a run of {jax.process_count()} processes); "
            f"run `python -m jaxcrop.calibrate --workdir {workdir}` on one host",
            file=sys.stderr)
    return None
  return fit_and_record(workdir, data=data)


def read(workdir) -> dict | None:
  """workdir/calibration.json, or None when there is none; UserError for a record
  of another format (`atomic.read_record`: local or gs://, and not jaxcrop.checkpoint,
  so predict stays free of the training stack)."""
  return atomic.read_record(os.path.join(os.fspath(workdir), FILE), FORMAT,
                            f"refit it with `python -m jaxcrop.calibrate --workdir {workdir}`")


def temperature(workdir, step: int) -> float:
  """The recorded temperature when it was fitted for checkpoint `step`, else 1.0."""
  record = read(workdir)
  return float(record["temperature"]) if record and record["step"] == step else 1.0


def evaluation(logits: np.ndarray, labels: np.ndarray, temp: float, tree,
               names_by_tier: dict) -> dict:
  """evaluate's `calibration` section: per tier ("tier1", "tier2", "tier3"), ECE
  and reliability curve before (T = 1) and after the temperature `temp`.

  logits float [N, K3], labels int [N] tier-3 ids; tree: `hierarchy.Tree`.
  """
  out = {"temperature": temp, "bins": calibration.BINS, "pixels": int(len(labels)),
         "tiers": {}}
  probs = {w: np.exp(calibration.log_softmax(logits, t))
           for w, t in (("before", 1.0), ("after", temp))}
  for tier in (1, 2, 3):
    by = {}
    for when, p in probs.items():
      conf, correct = calibration.tier_confidence(p, labels, tree.parents(tier),
                                                  len(names_by_tier[tier]))
      curve = calibration.reliability(conf, correct)
      by[f"ece_{when}"] = calibration.ece(conf, correct)
      by[f"reliability_{when}"] = {k: [None if np.isnan(v) else float(v) for v in a]
                                   for k, a in curve.items()}
    out["tiers"][f"tier{tier}"] = by
  return out


def lines(section: dict) -> list[str]:
  """What evaluate prints: one line per tier, ECE before -> after."""
  head = (f"calibration (ECE, {section['bins']} bins, {section['pixels']} pixels; "
          f"temperature {section['temperature']:.3f}"
          + ("" if section["temperature"] != 1.0 else ", none fitted for this checkpoint")
          + ")")
  return [head] + [f"  {tier} ECE {by['ece_before']:.4f} -> {by['ece_after']:.4f}"
                   for tier, by in section["tiers"].items()]


def markdown(section: dict, split: str) -> list[str]:
  """metrics.md's calibration section: ECE per tier before / after the temperature."""
  from jaxcrop.tables import markdown_table
  t = section["temperature"]
  fitted = (f"temperature {t:.4f} (W/{FILE})" if t != 1.0
            else "no temperature fitted for this checkpoint (T = 1)")
  return ["## Calibration (model, pixel level)", "",
          f"Expected calibration error, {section['bins']} bins, {section['pixels']:,} labelled "
          f"pixels of the {split} split; {fitted}; diagrams: reliability_tier<t>.png.", "",
          markdown_table(["tier", "ECE before", "ECE after"],
                         [[t[-1], f"{by['ece_before']:.4f}", f"{by['ece_after']:.4f}"]
                          for t, by in section["tiers"].items()]), ""]


def main(argv=None) -> int:
  """`python -m jaxcrop.calibrate --workdir W [--which best]`."""
  from cropcontracts import cli
  ap = cli.ArgumentParser(prog="python -m jaxcrop.calibrate",
                          description="Fit a trained model's temperature on its "
                                      "validation split; writes W/calibration.json.")
  ap.add_argument("--workdir", required=True, help="training workdir")
  ap.add_argument("--which", default="best", choices=("best", "last"),
                  help="the checkpoint predict will use (default: %(default)s)")
  return cli.main(ap, _run, argv)


def _run(args) -> int:
  r = fit_and_record(args.workdir, which=args.which)
  print(f"temperature {r['temperature']:.4f} on {r['pixels']} pixels of {r['split']}: "
        f"ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}, NLL {r['nll_before']:.4f} "
        f"-> {r['nll_after']:.4f}; wrote {args.workdir}/{FILE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
