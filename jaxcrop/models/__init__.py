"""Models: `build_model(cfg_model, num_classes, tree=None)` → a flax.linen Module.

`cfg_model.arch`: hybrid (temporal encoder → U-Net, jaxcrop/models/hybrid.py; the
default, and what a config from before `arch` means) | pixel (the temporal
encoder and a per-pixel head, no U-Net: jaxcrop/models/pixel.py).

`model.apply(variables, x [B, T, H, W, C], train=False)` → logits f32 [B, H, W, K]
(for a hierarchical head: tier-3 scores made consistent with tiers 1 and 2,
see jaxcrop/models/heads.py); `tiers=True` → {"tier1"?, "tier2"?, "tier3"} logits;
`valid_count=` [B, T, H, W] when `cfg_model.valid_count` is not "none".
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcrop.models.heads import HierarchicalModel  # noqa: F401
from jaxcrop.models.hybrid import (HybridModel, TemporalEncoder, UNet,  # noqa: F401
                                   chunked_logits, unet_min_side)
from jaxcrop.models.pixel import PixelModel  # noqa: F401
from jaxcrop.models.temporal import AttentionEncoder  # noqa: F401
from cropcontracts.errors import UserError

HEADS = ("flat", "hierarchical")
ARCHS = ("hybrid", "pixel")


def head_kind(cfg_model) -> str:
  """flat | hierarchical (a config without `head`, from before heads existed: flat)."""
  return (cfg_model.get("head") or {}).get("kind", "flat")


def needs_valid_count(cfg_model) -> bool:
  """True when the model takes the per-month valid-observation counts as input."""
  return cfg_model.get("valid_count", "none") != "none"


def inference_fn(model):
  """(variables, x [B, T, H, W, C], **inputs) → logits f32 [B, H, W, K] of `model` at
  inference, as maps are made: on a CPU, a flat HybridModel through
  `hybrid.chunked_logits` (the temporal encoder over blocks of image rows, the
  BatchNorms folded into their convolutions: the same logits within float rounding,
  faster on 512² tiles, docs/benchmarks.md); any other model, and every model on an
  accelerator (where it was not measured: a GPU's memory bandwidth is not a CPU's),
  through `model.apply(…, train=False)`."""
  import jax  # pylint: disable=g-import-not-at-top
  if isinstance(model, HybridModel) and jax.default_backend() == "cpu":
    return lambda variables, x, **inputs: chunked_logits(model, variables, x, **inputs)
  return lambda variables, x, **inputs: model.apply(variables, x, train=False, **inputs)


def build_model(cfg_model, num_classes: int, tree=None):
  """The model from `config.model` (see configs/hybrid.py).

  `cfg_model.dtype` = "float32" | "bfloat16": the compute dtype; parameters stay
  float32 and logits are returned as float32 either way. `head.kind` =
  "hierarchical" needs `tree` (a `jaxcrop.hierarchy.Tree`, e.g. `Tree.of(meta)`).
  """
  common = dict(temporal=dict(cfg_model.temporal), unet=dict(cfg_model.unet),
                encoder=cfg_model.get("encoder", "cnn"),
                attention=dict(cfg_model.get("attention") or {}),
                valid_count=cfg_model.get("valid_count", "none"),
                dtype=jnp.dtype(cfg_model.get("dtype", "float32")))
  kind = head_kind(cfg_model)
  arch = cfg_model.get("arch", "hybrid")
  if arch not in ARCHS:
    raise UserError(f"unknown model.arch {arch!r}; expected one of {ARCHS}")
  if arch == "pixel":
    if kind != "flat":
      raise UserError(f"model.arch='pixel' has a flat head; model.head.kind={kind!r} "
                      f"needs model.arch='hybrid'")
    common.pop("unet")
    return PixelModel(num_classes=num_classes, **common)
  if kind == "flat":
    return HybridModel(num_classes=num_classes, **common)
  if kind != "hierarchical":
    raise UserError(f"unknown model.head.kind {kind!r}; expected one of {HEADS}")
  if tree is None or tree.sizes[2] != num_classes:
    raise ValueError(f"model.head.kind='hierarchical' needs the class tree of the "
                     f"{num_classes} classes (build_model(…, tree=Tree.of(meta)))")
  return HierarchicalModel(tree=tree, consistency=cfg_model.head.get("consistency", "joint"),
                           **common)
