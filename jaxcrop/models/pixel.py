"""The per-pixel model: the hybrid's temporal encoder and a per-pixel head, no U-Net.

The standard baseline a spatial model must beat (TempCNN-like, Pelletier et al.
2019, with the `flatten` pooling): each pixel's [T, C] series goes through the
same temporal encoder as the hybrid (`hybrid.pixel_features`: the 1D CNN or the
attention encoder, with the same `model.temporal` / `model.attention` fields and
`model.valid_count` inputs), and a Dense layer gives its class logits. No pixel
sees another, so the model takes any patch side, 1 x 1 included: it trains on
points (`tfds build … --config=points`, 1 x 1 examples) and on zone patches
alike, and maps zones with `python -m jaxcrop.predict` like the hybrid.

Selected by `config.model.arch = "pixel"` (`configs/hybrid.py:pixel`); the
`model.unet` fields are then unused. Flat head only.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcrop.models.hybrid import pixel_features, valid_count_inputs


class PixelModel(nn.Module):
  """x [B, T, H, W, C] → logits f32 [B, H, W, K], each pixel on its own.

  Same call as `hybrid.HybridModel` (`valid_count` [B, T, H, W] when
  `valid_count` is not none; `tiers=True` → {"tier3": logits}).
  """
  num_classes: int
  temporal: dict
  encoder: str = "cnn"          # cnn | attention
  attention: Any = None         # AttentionEncoder fields
  valid_count: str = "none"     # none | channel | mask
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, valid_count=None, tiers: bool = False):
    x, valid = valid_count_inputs(x, valid_count, self.valid_count, self.encoder)
    feats = pixel_features(x, valid, train, encoder=self.encoder, temporal=self.temporal,
                           attention=self.attention, dtype=self.dtype)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(feats)
    logits = logits.astype(jnp.float32)
    return {"tier3": logits} if tiers else logits
