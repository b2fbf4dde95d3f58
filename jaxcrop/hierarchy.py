"""The 3-tier class tree (tier 3 = the classes, tier 2 = groups, tier 1 = families).

The tree is given by two parent tables of the tier-3 classes, `tier2_of` [K3]
and `tier1_of` [K3] (as in `DatasetMeta`). Everything here maps tier-3 things
upwards, so metrics, maps and figures can be made at any tier from the tier-3
output of any model:

  to_tier(classes, tier_of)          class map [...] → the parents' map [...]
  tier_log_probs(log_p, tier_of, n)  log-probabilities [..., K3] → [..., n]
                                     (a parent's probability = the sum of its children's)
  tier_confusion(cm, tier_of, n)     confusion [K3, K3] → [n, n]

`Tree.of(meta)` gathers the tables and sizes; tier numbers are 1, 2, 3.
`tier_legend(nomenclature, tier)` gives the names and colours of a tier (maps, figures).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cropcontracts.zonefolder import NO_LABEL as IGNORE
TIERS = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class Tree:
  """Parent tables of the tier-3 classes (tuples: hashable, a Flax module field).

  tier2_of, tier1_of: length K3; sizes = (K1, K2, K3).
  """
  tier2_of: tuple
  tier1_of: tuple
  sizes: tuple

  @classmethod
  def of(cls, meta) -> "Tree":
    """From a DatasetMeta (or anything with tier2_of, tier1_of, *_names)."""
    return cls.from_parents(meta.tier2_of, meta.tier1_of, len(meta.tier2_names),
                            len(meta.tier1_names), meta.num_classes)

  @classmethod
  def from_parents(cls, tier2_of, tier1_of, k2=None, k1=None, k3=None) -> "Tree":
    t2 = tuple(int(v) for v in np.asarray(tier2_of).ravel())
    t1 = tuple(int(v) for v in np.asarray(tier1_of).ravel())
    if len(t2) != len(t1):
      raise ValueError(f"tier2_of ({len(t2)}) and tier1_of ({len(t1)}) differ in length")
    k3 = len(t2) if k3 is None else int(k3)
    k2 = (max(t2) + 1 if t2 else 0) if k2 is None else int(k2)
    k1 = (max(t1) + 1 if t1 else 0) if k1 is None else int(k1)
    tree = cls(t2, t1, (k1, k2, k3))
    tree.tier1_of_tier2()   # raises when a group has two families
    return tree

  def parents(self, tier: int) -> np.ndarray:
    """int [K3]: the tier-`tier` ancestor of each tier-3 class (identity at tier 3)."""
    if tier == 3:
      return np.arange(self.sizes[2])
    return np.asarray(self.tier2_of if tier == 2 else self.tier1_of, np.int64)

  def tier1_of_tier2(self) -> np.ndarray:
    """int [K2]: the family of each group (-1 for a group without class)."""
    out = np.full(self.sizes[1], -1, np.int64)
    for g, f in zip(self.tier2_of, self.tier1_of):
      if out[g] not in (-1, f):
        raise ValueError(f"tier-2 group {g} has two tier-1 parents ({out[g]} and {f}): "
                         "not a tree")
      out[g] = f
    return out


def to_tier(classes, tier_of) -> np.ndarray:
  """Tier-3 class map int [...] → parent map [...] (IGNORE stays IGNORE).

  tier_of: int [K3] (e.g. `Tree.parents(2)`); values outside [0, K3) other
  than IGNORE are an error.
  """
  classes = np.asarray(classes)
  table = np.asarray(tier_of, np.int64)
  ignore = classes == IGNORE
  safe = np.where(ignore, 0, classes).astype(np.int64)
  if safe.size and (safe.min() < 0 or safe.max() >= len(table)):
    raise ValueError(f"class ids outside 0..{len(table) - 1}")
  out = np.where(ignore, IGNORE, table[safe])
  return out.astype(classes.dtype if classes.dtype.kind in "iu" else np.int64)


def tier_log_probs(log_probs, tier_of, num: int):
  """Log-probabilities [..., K3] → [..., num]: log Σ_{children} p (logsumexp).

  A parent without any child gets -inf. Works on numpy or jax arrays (jnp).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  onehot = np.zeros((len(tier_of), num), np.float32)
  onehot[np.arange(len(tier_of)), np.asarray(tier_of)] = 1.0
  lp = jnp.asarray(log_probs, jnp.float32)
  top = jnp.max(lp, axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  s = jnp.exp(lp - top) @ onehot
  return jnp.log(s) + top


def tier_confusion(cm, tier_of, num: int) -> np.ndarray:
  """Confusion [K3, K3] (rows truth) → [num, num] of the parents: M^T cm M.

  Equal to the confusion of `to_tier(label)` vs `to_tier(pred)`.
  """
  m = np.zeros((len(tier_of), num), np.int64)
  m[np.arange(len(tier_of)), np.asarray(tier_of)] = 1
  return m.T @ np.asarray(cm, np.int64) @ m


def tier_names(meta, tier: int) -> list:
  return list({1: meta.tier1_names, 2: meta.tier2_names, 3: meta.class_names}[tier])


def tier_legend(nomenclature, tier: int = 3) -> tuple[list, list]:
  """(names, '#rrggbb' colours) of the tier-`tier` classes, in id order (the
  ids of `Nomenclature.tier2_of()` / `tier1_of()`). A group or family takes
  the colour of its first tier-3 class: the tables have colours per tier-3
  class only, and this keeps a tier map's colours those of its first member."""
  if tier == 3:
    return list(nomenclature.tier3), list(nomenclature.colors)
  names = list(nomenclature.tier2_names if tier == 2 else nomenclature.tier1_names)
  parents = nomenclature.tier2 if tier == 2 else nomenclature.tier1
  first = {}
  for parent, color in zip(parents, nomenclature.colors):
    first.setdefault(parent, color)
  return names, [first[n] for n in names]
