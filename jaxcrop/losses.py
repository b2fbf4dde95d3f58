"""Masked, optionally class-weighted, label-smoothed cross-entropy for [B, H, W] labels."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cropcontracts.zonefolder import NO_LABEL
from cropcontracts.errors import UserError



def class_weights(class_pixel_counts, kind: str = "inv_sqrt") -> np.ndarray:
  """Per-class loss weights float32 [K] from training-split pixel counts [K].

  `inv_sqrt`: 1/sqrt(n_k); `inv`: 1/n_k; `none`: 1. Normalised to mean 1 over the
  classes present in training (n_k > 0); absent classes get weight 0 (they
  never occur as a target anyway).
  """
  n = np.asarray(class_pixel_counts, np.float64)
  present = n > 0
  if kind == "none":
    w = np.ones_like(n)
  elif kind in ("inv_sqrt", "inv"):
    w = np.zeros_like(n)
    w[present] = n[present] ** (-0.5 if kind == "inv_sqrt" else -1.0)
  else:
    raise UserError(f"unknown class_weights {kind!r} (config.loss.class_weights); "
                      f"expected none, inv_sqrt or inv")
  w[~present] = 0.0
  return (w / w[present].mean()).astype(np.float32) if present.any() else w.astype(np.float32)


def cross_entropy(logits, label, *, weights=None, label_smoothing: float = 0.0):
  """Mean cross-entropy over labelled pixels (label != NO_LABEL).

  Args:
    logits: float [B, H, W, K].
    label: int [B, H, W], NO_LABEL = unlabelled.
    weights: optional float [K] class weights; the loss is then the weighted
      mean sum_i w_{y_i} ce_i / sum_i w_{y_i} (PyTorch `weight=` semantics).
    label_smoothing: ε, target = (1 - ε)·onehot + ε/K.
  Returns:
    (scalar loss, number of labelled pixels). 0 when no pixel is labelled.
  """
  k = logits.shape[-1]
  valid = label != NO_LABEL
  safe = jnp.where(valid, label, 0)
  target = jax.nn.one_hot(safe, k) * (1.0 - label_smoothing) + label_smoothing / k
  ce = -(target * jax.nn.log_softmax(logits.astype(jnp.float32))).sum(-1)
  w = valid.astype(jnp.float32)
  if weights is not None:
    w = w * jnp.asarray(weights, jnp.float32)[safe]
  return (w * ce).sum() / jnp.maximum(w.sum(), 1e-12), valid.sum()


TIER_NAMES = ("tier1", "tier2", "tier3")


def tier_class_weights(class_pixel_counts, tree, kind: str = "inv_sqrt") -> dict:
  """{"tier1": [K1], "tier2": [K2], "tier3": [K3]}: `class_weights` of the pixel
  counts summed per group / family (a parent's pixels are its children's)."""
  n = np.asarray(class_pixel_counts, np.float64)
  out = {}
  for tier, name in zip((1, 2, 3), TIER_NAMES):
    counts = np.bincount(tree.parents(tier), weights=n, minlength=tree.sizes[tier - 1])
    out[name] = class_weights(counts, kind)
  return out


def tier_labels(label, parents):
  """Tier-3 labels int [...] → the parents' labels (NO_LABEL kept); parents int [K3]."""
  valid = label != NO_LABEL
  return jnp.where(valid, jnp.asarray(parents)[jnp.where(valid, label, 0)], NO_LABEL)


def tier_loss(logits: dict, label, *, tree, tier_weights, weights=None,
              label_smoothing: float = 0.0):
  """Σ_t tier_weights[t] · cross_entropy(logits["tier<t>"], label at tier t).

  Over the tiers present in `logits` (a flat model gives tier 3 only, so its
  loss is the plain tier-3 cross-entropy times tier_weights[3]).
  Args:
    logits: {"tier1": [B,H,W,K1], "tier2": …, "tier3": [B,H,W,K3]}, any subset.
    label: int [B, H, W] tier-3 classes, NO_LABEL = unlabelled.
    tree: jaxcrop.hierarchy.Tree; tier_weights: (w1, w2, w3).
    weights: optional {"tier<t>": class weights [K_t]} (`tier_class_weights`).
  Returns:
    (scalar loss, number of labelled pixels).
  """
  total, n = 0.0, (label != NO_LABEL).sum()
  for name, lg in logits.items():
    tier = TIER_NAMES.index(name) + 1
    lab = label if tier == 3 else tier_labels(label, tree.parents(tier))
    ce, _ = cross_entropy(lg, lab, weights=None if weights is None else weights[name],
                          label_smoothing=label_smoothing)
    total = total + float(tier_weights[tier - 1]) * ce
  return total, n
