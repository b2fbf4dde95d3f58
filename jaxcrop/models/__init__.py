"""Models: `build_model(cfg_model, num_classes)` → a flax.linen Module.

`model.apply(variables, x [B, T, H, W, C], train=False)` → logits f32 [B, H, W, K].
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcrop.models.hybrid import HybridModel, TemporalEncoder, UNet  # noqa: F401


def build_model(cfg_model, num_classes: int) -> HybridModel:
  """The hybrid model from `config.model` (see configs/hybrid.py).

  `cfg_model.dtype` = "float32" | "bfloat16": the compute dtype; parameters stay
  float32 and logits are returned as float32 either way.
  """
  return HybridModel(
      num_classes=num_classes, temporal=dict(cfg_model.temporal), unet=dict(cfg_model.unet),
      dtype=jnp.dtype(cfg_model.get("dtype", "float32")))
