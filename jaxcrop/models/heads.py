"""Hierarchical heads: tiers 1, 2 and 3 predicted from the same features.

`HierarchicalModel` is the hybrid model (temporal encoder → U-Net) whose last
1×1 convolution gives K1 + K2 + K3 channels instead of K3: three 1×1 heads on
the U-Net's shared last features, split into per-tier logits. Training sums a
cross-entropy per tier (`loss.tier_weights`, see jaxcrop/losses.py); at
inference the tier-3 output is made consistent with the tiers above it by
`consistent_scores`:

  joint (default): score(c) = log p3(c) + log p2(group(c)) + log p1(family(c)),
    then a log-softmax over c. The tier-3 prediction is the argmax, i.e. the
    most probable root-to-leaf path under independent tier heads; the tier-2 /
    tier-1 outputs are the argmax of the best path score inside each group /
    family (`tier_outputs`), which are exactly the parents of the tier-3
    prediction: no tier-3 class ever has a parent other than the tier-2 output.
  none: the tier-3 head alone (log p3); its parents may disagree with the
    tier-2 head.

`model.apply(v, x)` returns these tier-3 scores [B, H, W, K3] (so evaluation
and prediction use the model like a flat one: argmax = class map);
`model.apply(v, x, tiers=True)` returns the raw logits per tier
{"tier1": [B,H,W,K1], "tier2": …, "tier3": …} for the loss.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import numpy as np

from jaxcrop.hierarchy import Tree
from jaxcrop.models.hybrid import HybridModel
from cropcontracts.errors import UserError

CONSISTENCY = ("joint", "none")


def consistent_scores(logits: dict, tree: Tree, consistency: str = "joint"):
  """Tier-3 log-scores f32 [..., K3] from per-tier logits (see the module doc)."""
  lp3 = jax.nn.log_softmax(logits["tier3"].astype(jnp.float32), axis=-1)
  if consistency == "none":
    return lp3
  if consistency != "joint":
    raise UserError(f"unknown consistency {consistency!r}; expected one of {CONSISTENCY}")
  lp2 = jax.nn.log_softmax(logits["tier2"].astype(jnp.float32), axis=-1)
  lp1 = jax.nn.log_softmax(logits["tier1"].astype(jnp.float32), axis=-1)
  path = (lp3 + jnp.take(lp2, jnp.asarray(tree.tier2_of), axis=-1)
          + jnp.take(lp1, jnp.asarray(tree.tier1_of), axis=-1))
  return jax.nn.log_softmax(path, axis=-1)


def tier_outputs(scores, tree: Tree) -> dict:
  """Class maps per tier from tier-3 scores [..., K3]: {"tier1": int [...], …}.

  A group's score is the best score of its classes (max over the tree, not a
  parent lookup), a family's the best of its groups; with joint scores these
  are the parents of the tier-3 argmax (tested).
  """
  out = {"tier3": jnp.argmax(scores, -1)}
  for tier, table in ((2, tree.tier2_of), (1, tree.tier1_of)):
    k = tree.sizes[tier - 1]
    member = np.zeros((len(table), k), bool)
    member[np.arange(len(table)), np.asarray(table)] = True
    group = jnp.where(jnp.asarray(member), scores[..., :, None], -jnp.inf).max(-2)
    out[f"tier{tier}"] = jnp.argmax(group, -1)
  return out


class HierarchicalModel(nn.Module):
  """Hybrid backbone with one 1×1 head per tier; see the module doc.

  x [B, T, H, W, C] → tier-3 scores f32 [B, H, W, K3], or (tiers=True) logits per tier.
  """
  tree: Tree
  temporal: dict
  unet: dict
  consistency: str = "joint"
  encoder: str = "cnn"
  attention: Any = None
  valid_count: str = "none"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, valid_count=None, tiers: bool = False):
    if self.consistency not in CONSISTENCY:
      raise UserError(f"unknown consistency {self.consistency!r}; expected one of {CONSISTENCY}")
    k1, k2, k3 = self.tree.sizes
    backbone = HybridModel(
        num_classes=k1 + k2 + k3, temporal=self.temporal, unet=self.unet,
        encoder=self.encoder, attention=self.attention, valid_count=self.valid_count,
        dtype=self.dtype, name="backbone")
    out = backbone(x, train, valid_count=valid_count)     # [B, H, W, K1+K2+K3]
    logits = {"tier1": out[..., :k1], "tier2": out[..., k1:k1 + k2], "tier3": out[..., k1 + k2:]}
    if tiers:
      return logits
    return consistent_scores(logits, self.tree, self.consistency)
