"""A lightweight temporal self-attention encoder, in the spirit of L-TAE.

L-TAE (Garnot & Landrieu 2020, the temporal part of U-TAE) pools a pixel's
series with multi-head attention whose queries are learned "master queries"
(one per head) rather than computed from the series: cheap (no T×T attention
map) and order-aware through a positional encoding of the acquisition date.

Per pixel [T, C] (any number of leading pixel axes):
  1. embed: Dense(C → d_model) → LayerNorm, plus a sinusoidal encoding of the
     month's position in days (month m at day 15 + 30.44·m of the series;
     period base 1000 as in L-TAE), so the encoder can tell *when* a pattern occurs;
  2. keys: Dense(d_model → heads·key_dim); scores = key·query_h / √key_dim per
     head h and month; softmax over the months (f32), attention dropout;
     months flagged invalid (`valid` False: gap-filled, no clear observation)
     get no weight, unless a pixel has no valid month at all (then all count);
  3. values: the embedding split into `heads` groups of d_model/heads channels
     (L-TAE's channel grouping), each pooled by its head's weights;
  4. out: concat [d_model] → Dense(features) → LayerNorm → ReLU.
Every step acts on one pixel at a time (no BatchNorm), so the encoder is
equivariant to the order of the pixels in a batch (tested).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import numpy as np
from cropcontracts.errors import UserError

DAYS_PER_MONTH = 30.44


def month_encoding(months: int, d: int, base: float = 1000.0) -> np.ndarray:
  """Sinusoidal encoding float32 [T, d] of month positions in days (L-TAE's, d even or odd)."""
  days = 15.0 + DAYS_PER_MONTH * np.arange(months)[:, None]
  i = np.arange(d)[None, :]
  angle = days / base ** (2 * (i // 2) / d)
  return np.where(i % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


class AttentionEncoder(nn.Module):
  """x [..., T, C] (+ valid bool [..., T]) → features [..., features]; see the module doc."""
  features: int = 64
  d_model: int = 64
  heads: int = 4
  key_dim: int = 8
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, valid=None):
    if self.d_model % self.heads:
      raise UserError(f"attention d_model={self.d_model} must be a multiple of "
                       f"heads={self.heads} (each head pools d_model/heads channels)")
    t = x.shape[-2]
    x = nn.Dense(self.d_model, dtype=self.dtype, name="embed")(x.astype(self.dtype))
    x = nn.LayerNorm(dtype=self.dtype, name="embed_norm")(x)
    x = x + month_encoding(t, self.d_model).astype(self.dtype)
    keys = nn.Dense(self.heads * self.key_dim, dtype=self.dtype, name="keys")(x)
    keys = keys.reshape(x.shape[:-1] + (self.heads, self.key_dim))        # [..., T, h, k]
    query = self.param("query", nn.initializers.normal(np.sqrt(2.0 / self.key_dim)),
                       (self.heads, self.key_dim))
    score = jnp.einsum("...thk,hk->...th", keys.astype(jnp.float32), query)
    score = score / np.sqrt(self.key_dim)
    if valid is not None:
      valid = jnp.asarray(valid, bool)
      valid = valid | ~valid.any(-1, keepdims=True)      # no valid month: all months count
      score = jnp.where(valid[..., None], score, -jnp.inf)
    weight = jax.nn.softmax(score, axis=-2).astype(self.dtype)           # [..., T, h]
    weight = nn.Dropout(self.dropout, deterministic=not train)(weight)
    values = x.reshape(x.shape[:-1] + (self.heads, self.d_model // self.heads))
    pooled = jnp.einsum("...th,...thd->...hd", weight, values)
    pooled = pooled.reshape(pooled.shape[:-2] + (self.d_model,))
    out = nn.Dense(self.features, dtype=self.dtype, name="out")(pooled)
    return nn.relu(nn.LayerNorm(dtype=self.dtype, name="out_norm")(out))
