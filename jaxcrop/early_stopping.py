"""Keeping the best model, and stopping when validation stops improving.

`EarlyStopping.update(step, scores, cm, model_vars, opt)` is called after each
validation. A macro-F1 above the best so far saves the model to
`checkpoints/best` (Orbax metric `checkpoint.BEST_METRIC`) and writes
`val_best.json` (process 0: `{"step", **scores, "confusion_matrix"}`, the
scores of `jaxcrop.validation`); any other count as a bad evaluation, and
`stopped` turns True after `patience` bad evaluations in a row.

The state (`progress`: best_f1 float32 [], bad_evals int32 []) is saved in
every checkpoint's `opt` tree, so a resumed run goes on counting where the
interrupted one was (`restore`). Like jeo's `early_stopping`: the loop asks,
this module decides.
"""
from __future__ import annotations

import json

import jax
import numpy as np

from jaxcrop import checkpoint
from cropcontracts import atomic


class EarlyStopping:
  """Best validation macro-F1, its checkpoint and val_best.json; patience in evaluations."""

  def __init__(self, workdir, best_mgr, patience: int):
    self.workdir, self.mgr, self.patience = workdir, best_mgr, patience
    self.best_f1 = np.array(-1.0, np.float32)
    self.bad_evals = np.array(0, np.int32)

  @property
  def progress(self) -> dict:
    """{"best_f1": float32 [], "bad_evals": int32 []}, as saved in a checkpoint's `opt`."""
    return {"best_f1": self.best_f1, "bad_evals": self.bad_evals}

  def restore(self, progress: dict) -> None:
    """Takes up the `progress` of a restored checkpoint."""
    self.best_f1 = np.asarray(progress["best_f1"])
    self.bad_evals = np.asarray(progress["bad_evals"])

  @property
  def stopped(self) -> bool:
    """True after `patience` evaluations in a row without a better macro-F1."""
    return bool(self.bad_evals >= self.patience)

  def update(self, step: int, scores: dict, cm: np.ndarray, model_vars: dict,
             opt: dict) -> bool:
    """After a validation at `step`; True when it is the best so far (then saved).

    `opt`: the checkpoint's optimizer tree ({"opt_state", "step"}); `progress` is added.
    """
    if not scores["macro_f1"] > self.best_f1:
      self.bad_evals = np.array(self.bad_evals + 1, np.int32)
      return False
    self.best_f1 = np.array(scores["macro_f1"], np.float32)
    self.bad_evals = np.array(0, np.int32)
    checkpoint.save(self.mgr, step, model_vars, {**opt, **self.progress},
                    metrics={checkpoint.BEST_METRIC: float(scores["macro_f1"])})
    if jax.process_index() == 0:
      atomic.write_text(self.workdir / "val_best.json", json.dumps(
          {"step": step, **scores, "confusion_matrix": np.asarray(cm).tolist()}, indent=1))
    return True
