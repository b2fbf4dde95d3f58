"""The hybrid crop-type model: a per-pixel temporal 1D CNN, then a spatial U-Net.

Input  x: float [B, T, H, W, C], a batch of patches of T monthly composites of C
bands, normalized. Each pixel's [T, C] series goes through the same temporal
encoder (1D convolutions over months, pooled over T) giving D features; the
resulting pseudo-image [B, H, W, D] goes through a small U-Net that adds
spatial context; a 1×1 convolution gives per-pixel class logits [B, H, W, K].

The temporal encoder is applied to every pixel in one of two equivalent ways:
`impl="reshape"` folds pixels into the batch ([B·H·W, T, C], one big batched
convolution) and `impl="vmap"` maps the per-pixel encoder over B, H and W with
`nn.vmap` (BatchNorm then averages its statistics over the mapped axes, so both
give the same outputs; only dropout masks differ since vmap splits the rng).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cropcontracts.dataset_meta import unet_min_side

PIXEL_AXES = ("batch", "row", "col")   # nn.vmap axis names in impl="vmap"


def make_norm(kind: str, *, train: bool, dtype: Any, axis_name=None,
              reduction_axes=None):
  """A normalization layer by name: batch | layer | group | none.

  Convolutions before a BatchNorm have no bias: it would be cancelled by the
  mean subtraction (zero gradient, which Adam turns into float-noise updates).
  """
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        axis_name=axis_name, dtype=dtype)
  if kind == "layer":
    return nn.LayerNorm(dtype=dtype)
  if kind == "group":
    # Explicit reduction axes: the default ("all but the first") would treat T
    # as a batch axis when the encoder sees one unbatched pixel [T, C].
    return lambda x: nn.GroupNorm(
        num_groups=None, group_size=_group_size(x.shape[-1]),
        reduction_axes=reduction_axes, dtype=dtype)(x)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"unknown norm {kind!r}; expected batch, layer, group or none")


def _group_size(features: int) -> int:
  """Channels per group: 8 groups when they divide the width, else 1 group."""
  return features // 8 if features % 8 == 0 else features


def _hash32(x):
  """lowbias32 (C. Wellons): a well-mixing bijection on uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


class Dropout(nn.Module):
  """`nn.Dropout` (inverted: kept values scaled by 1/(1-rate)) with cheap masks.

  The mask bits are a counter-based hash of the element index keyed by two
  words drawn from the module's 'dropout' rng (so still deterministic given
  the rng, fresh at every step, split by vmap), instead of one threefry draw
  per element: XLA:CPU lowers jax's threefry with a rolled loop, one pass over
  memory per round, which made dropout the largest cost of the default
  config's train step on a CPU; the hash fuses into the masking multiply.
  Same distribution (keep probability 1-rate, to 2^-24), different masks.
  """
  rate: float
  deterministic: bool = False

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    if x.size >= 2 ** 32:
      raise ValueError(f"dropout over {x.size} elements: at most 2^32 - 1 (uint32 counter)")
    seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
    index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
    bits = _hash32(_hash32(index ^ seed[0]) ^ seed[1])
    keep = (bits >> 8) >= jnp.uint32(round(self.rate * 2 ** 24))
    return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


class TemporalEncoder(nn.Module):
  """1D CNN over months for pixels [..., T, C] → features [..., D].

  Works on any number of leading pixel axes (including none, under vmap).
  """
  features: int = 64
  layers: int = 3
  kernel_size: int = 3
  norm: str = "batch"
  dropout: float = 0.0
  pooling: str = "max"          # max | mean | attention | flatten
  dtype: Any = jnp.float32
  axis_name: Any = None         # BatchNorm statistics axes when vmapped

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for _ in range(self.layers):
      x = nn.Conv(self.features, (self.kernel_size,), padding="SAME",
                  use_bias=self.norm != "batch", dtype=self.dtype)(x)
      x = make_norm(self.norm, train=train, dtype=self.dtype,
                    axis_name=self.axis_name, reduction_axes=(-2, -1))(x)
      x = nn.relu(x)
      x = Dropout(self.dropout, deterministic=not train)(x)
    if self.pooling == "max":
      return x.max(axis=-2)
    if self.pooling == "mean":
      return x.mean(axis=-2)
    if self.pooling == "attention":
      # One learned score per month, softmax over T (in f32 for stability).
      score = nn.Dense(1, dtype=self.dtype)(x).astype(jnp.float32)
      weight = jax.nn.softmax(score, axis=-2).astype(x.dtype)
      return (weight * x).sum(axis=-2)
    if self.pooling == "flatten":
      # Keeps the month order (TempCNN, Pelletier et al. 2019): convolutions and
      # max/mean/attention pooling are blind to *when* in the year a pattern
      # occurs, which is what separates, e.g., winter wheat from maize.
      x = x.reshape(x.shape[:-2] + (-1,))
      return nn.relu(nn.Dense(self.features, dtype=self.dtype)(x))
    raise ValueError(f"unknown pooling {self.pooling!r}; expected max, mean, attention or flatten")


class ConvBlock(nn.Module):
  """(3×3 conv → norm → ReLU) × 2 on [B, H, W, *] → [B, H, W, features]."""
  features: int
  norm: str = "batch"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(2):
      x = nn.Conv(self.features, (3, 3), padding="SAME",
                  use_bias=self.norm != "batch", dtype=self.dtype)(x)
      x = make_norm(self.norm, train=train, dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class UpConv2x2(nn.ConvTranspose):
  """`nn.ConvTranspose(features, (2, 2), strides=(2, 2))` computed as one matmul.

  With a 2×2 kernel and stride 2 the output windows do not overlap: each input
  pixel [Cin] gives its own 2×2 output block, `x @ kernel[1-a, 1-b]` at (a, b)
  (flax's ConvTranspose flips the kernel). So the layer is a per-pixel Dense
  Cin → 4·Cout followed by a depth-to-space reshape. Same parameters (shapes,
  names, initializers: it is a ConvTranspose), same outputs; on a CPU XLA runs
  the matmul and its gradients far faster than the dilated convolution it
  emits for the transposed conv's kernel gradient (the slowest ops of the
  default config's train step in an XLA CPU profile).

  x [B, H, W, Cin] → [B, 2H, 2W, Cout].
  """

  @nn.compact
  def __call__(self, x):
    assert tuple(self.kernel_size) == (2, 2) and tuple(self.strides) == (2, 2)
    b, h, w, cin = x.shape
    kernel = self.param("kernel", self.kernel_init, (2, 2, cin, self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    x, kernel, bias = self.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel[::-1, ::-1])   # [B, H, 2, W, 2, Cout]
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias


class UNet(nn.Module):
  """Simplified U-Net [B, H, W, D] → logits [B, H, W, K].

  `widths` gives one ConvBlock per level (depth = len(widths)); max-pool 2×2
  down, transposed conv (or resize + conv) up, skip concatenations.
  """
  num_classes: int
  widths: Sequence[int] = (64, 128, 256)
  norm: str = "batch"
  up: str = "transpose"         # transpose | resize
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    block = functools.partial(ConvBlock, norm=self.norm, dtype=self.dtype)
    skips = []
    for i, width in enumerate(self.widths):
      x = block(width)(x, train)
      if i < len(self.widths) - 1:
        skips.append(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    for level, (width, skip) in enumerate(zip(reversed(self.widths[:-1]), reversed(skips))):
      if self.up == "transpose":
        x = UpConv2x2(width, (2, 2), strides=(2, 2), dtype=self.dtype,
                      name=f"ConvTranspose_{level}")(x)   # the nn.ConvTranspose names
      elif self.up == "resize":
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")
        x = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype)(x)
      else:
        raise ValueError(f"unknown up {self.up!r}; expected transpose or resize")
      x = block(width)(jnp.concatenate([x, skip], axis=-1), train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x)


class HybridModel(nn.Module):
  """Temporal encoder per pixel, then U-Net: x [B, T, H, W, C] → logits f32 [B, H, W, K]."""
  num_classes: int
  temporal: dict
  unet: dict
  impl: str = "reshape"         # reshape | vmap
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    b, t, h, w, c = x.shape
    levels = len(self.unet.get("widths", UNet.widths))
    m = unet_min_side(levels)
    if h % m or w % m:
      raise ValueError(
          f"patch sides {h}x{w} must be divisible by {m} (2^(depth-1) for a "
          f"U-Net of depth {levels}); crop or pad the input")
    pixels = jnp.moveaxis(x, 1, 3)                  # [B, H, W, T, C]
    if self.impl == "reshape":
      enc = TemporalEncoder(**self.temporal, dtype=self.dtype, name="temporal")
      feats = enc(pixels.reshape(b * h * w, t, c), train).reshape(b, h, w, -1)
    elif self.impl == "vmap":
      cls = TemporalEncoder
      for axis in reversed(PIXEL_AXES):             # innermost = col
        cls = nn.vmap(cls, in_axes=(0, None), out_axes=0, axis_name=axis,
                      variable_axes={"params": None, "batch_stats": None},
                      split_rngs={"params": False, "dropout": True})
      enc = cls(**self.temporal, dtype=self.dtype, axis_name=PIXEL_AXES,
                name="temporal")
      feats = enc(pixels, train)
    else:
      raise ValueError(f"unknown impl {self.impl!r}; expected reshape or vmap")
    logits = UNet(self.num_classes, **self.unet, dtype=self.dtype, name="unet")(feats, train)
    return logits.astype(jnp.float32)
