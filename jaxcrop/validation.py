"""Validation during training: the model's scores on the validation split.

`Validator(eval_step, data, cfg_data, mesh, meta, tree)(variables)` runs the
jitted eval step over every (padded, masked) batch of `cfg_data.val_split`,
sums the confusion matrices, and returns the scores the loop logs and the
best-keeping compares:

  scores: `metrics.summarize` of the tier-3 confusion (macro-F1, OA, mIoU,
          per class, …) plus `tier2_macro_f1` and `tier1_macro_f1`, the
          macro-F1 of that confusion mapped up the class tree (no second pass
          over the data); every macro-F1 is the crop classes' (a background
          class, nomenclature v3 on, left out: so the best checkpoint is chosen
          on the crops, as before v3);
  cm:     int64 [K, K], rows truth, columns prediction (K tier-3 classes).

Like big_vision's evaluators: the loop says when, the evaluator says how.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxcrop import distributed, hierarchy, metrics


def evaluate_split(eval_step, variables, batches, mesh, num_classes: int,
                   max_batches=None, desc="eval") -> np.ndarray:
  """Confusion matrix int64 [K, K] summed over the (masked) batches of a split.

  `eval_step(variables, batch {image, label, mask [B], valid_count?})` → int32 [K, K].
  """
  cm = jnp.zeros((num_classes, num_classes), jnp.int32)
  for i, batch in enumerate(tqdm.tqdm(batches, desc=desc, leave=False,
                                      disable=jax.process_index() != 0)):
    if max_batches is not None and i >= max_batches:
      break
    cm = cm + eval_step(variables, distributed.put_batch(mesh, batch, ("image", "label", "mask")))
  return np.asarray(jax.device_get(cm), np.int64)


def tier_macro_f1(cm, tree: hierarchy.Tree, tier: int, background: int | None = None) -> float:
  """Macro-F1 at tier 1, 2 or 3 of a tier-3 confusion [K3, K3]; `background` (the
  tier-3 id of the background class, None when there is none) is left out at every
  tier, where its group and family are its own."""
  parents = tree.parents(tier)
  return metrics.summarize(
      hierarchy.tier_confusion(cm, parents, tree.sizes[tier - 1]),
      background=None if background is None else int(parents[background]))["macro_f1"]


def scores(cm, class_names, tree: hierarchy.Tree) -> dict:
  """`metrics.summarize(cm, class_names)` + tier2_macro_f1 and tier1_macro_f1 (the
  crop classes', as macro_f1: the background, found by name, left out)."""
  out = metrics.summarize(cm, list(class_names))
  background = metrics.background_id(class_names)
  for tier in (2, 1):
    out[f"tier{tier}_macro_f1"] = tier_macro_f1(cm, tree, tier, background)
  return out


class Validator:
  """`(variables)` → (scores, cm) of the model on `cfg_data.val_split` (see the module doc)."""

  def __init__(self, eval_step, data, cfg_data, mesh, meta, tree, max_batches=None):
    self.eval_step, self.data, self.cfg_data, self.mesh = eval_step, data, cfg_data, mesh
    self.meta, self.tree, self.max_batches = meta, tree, max_batches

  def __call__(self, variables) -> tuple[dict, np.ndarray]:
    batches = self.data.eval_batches(self.cfg_data, self.cfg_data.val_split)
    cm = evaluate_split(self.eval_step, variables, batches, self.mesh, self.meta.num_classes,
                        self.max_batches, desc="val")
    return scores(cm, self.meta.class_names, self.tree), cm
