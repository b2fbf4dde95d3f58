"""The hybrid crop-type model: a per-pixel temporal 1D CNN, then a spatial U-Net.

Input  x: float [B, T, H, W, C], a batch of patches of T monthly composites of C
bands, normalized. Each pixel's [T, C] series goes through the same temporal
encoder (1D convolutions over months, pooled over T) giving D features; the
resulting pseudo-image [B, H, W, D] goes through a small U-Net that adds
spatial context; a 1×1 convolution gives per-pixel class logits [B, H, W, K].

The temporal encoder sees every pixel at once: pixels are folded into the batch
([B·H·W, T, C], one big batched convolution), so BatchNorm's statistics are
over all pixels of the batch.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cropcontracts.errors import UserError
from jaxcrop.models.temporal import AttentionEncoder

BATCH_NORM_EPS = 1e-5   # Flax's default, named: `fold_batch_norm` needs the same


def norm_relu(kind: str, *, train: bool, dtype: Any, reduction_axes=None, axis: int = -1):
  """x ↦ ReLU(norm(x)) with a normalization layer by name: batch | layer | group | none.

  Convolutions before a BatchNorm have no bias: it would be cancelled by the
  mean subtraction (zero gradient, which Adam turns into float-noise updates).
  A BatchNorm in training takes the ReLU into its own gradient (`BatchNorm`).
  axis: the feature axis of a BatchNorm (-1; 0 for pixels-last series [C, T, N]).
  """
  if kind == "batch":
    return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BATCH_NORM_EPS,
                     dtype=dtype, axis=axis)
  if kind == "layer":
    return lambda x: nn.relu(nn.LayerNorm(dtype=dtype)(x))
  if kind == "group":
    # Explicit reduction axes: per pixel over (T, C) in the encoder, where the
    # default ("all but the first") would also be right only for [N, T, C].
    return lambda x: nn.relu(nn.GroupNorm(
        num_groups=None, group_size=_group_size(x.shape[-1]),
        reduction_axes=reduction_axes, dtype=dtype)(x))
  if kind == "none":
    return nn.relu
  raise UserError(f"unknown norm {kind!r}; expected batch, layer, group or none")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_relu(x, scale, bias, eps: float, axis: int):
  """ReLU(BatchNorm(x)) in training, with the batch's statistics, and its gradient by hand.

  x [..., F, ...] (F at `axis`, -1 or 0; any float dtype; statistics and arithmetic in
  float32, as Flax's), scale and bias [F] → (y, x's shape and dtype, mean [F], var [F]): mean
  and var (biased, E[x²] − E[x]² clipped at 0, as Flax's fast variance) are over every axis
  but `axis`, returned for the running averages; their cotangents are ignored (callers stop
  their gradient).

  The gradient is the textbook one, x̂ = (x − μ)·r, r = 1/√(σ² + ε), g = dy·[y > 0]:
  dβ = Σ g, dγ = Σ g·x̂, dx = γ·r·(g − (dβ + x̂·dγ)/n), recomputing x̂ and the ReLU's mask
  from x: two passes over x and dy, where XLA's derivative of the same forward re-derives
  the statistics' gradient through the mean and E[x²] in more (the demo's train step 5–7 %
  faster on a 2-core CPU: docs/benchmarks.md).
  """
  return _batch_norm_relu_fwd(x, scale, bias, eps, axis)[0]


def _reduced_axes(x, axis: int) -> tuple:
  return tuple(a for a in range(x.ndim) if a != axis % x.ndim)


def _along(v, x, axis: int):
  """A per-feature vector [F] shaped to broadcast against x, F at `axis`."""
  return v.reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])


def _batch_norm_relu_fwd(x, scale, bias, eps, axis):
  x32 = x.astype(jnp.float32)
  axes = _reduced_axes(x, axis)
  mean = x32.mean(axes)
  var = jnp.maximum(0.0, jnp.mean(jnp.square(x32), axes) - jnp.square(mean))
  rstd = jax.lax.rsqrt(var + eps)
  y = jnp.maximum((x32 - _along(mean, x, axis)) * _along(rstd * scale, x, axis)
                  + _along(bias, x, axis), 0.0).astype(x.dtype)
  return (y, mean, var), (x, mean, rstd, scale, bias)


def _batch_norm_relu_bwd(eps, axis, res, cotangents):
  del eps
  x, mean, rstd, scale, bias = res
  dy = cotangents[0].astype(jnp.float32)
  axes = _reduced_axes(x, axis)
  n = x.size // x.shape[axis]
  at = lambda v: _along(v, x, axis)
  x_hat = (x.astype(jnp.float32) - at(mean)) * at(rstd)
  g = jnp.where(x_hat * at(scale) + at(bias) > 0, dy, 0.0)
  dbias, dscale = g.sum(axes), (g * x_hat).sum(axes)
  dx = at(scale * rstd) * (g - (at(dbias) + x_hat * at(dscale)) / n)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_relu.defvjp(_batch_norm_relu_fwd, _batch_norm_relu_bwd)


class BatchNorm(nn.BatchNorm):
  """ReLU(`nn.BatchNorm`(x)), x [..., F, ...] → the same shape, F at `axis` (-1, or 0 for
  pixels-last series), statistics over every other axis.

  Named `BatchNorm` so that its variables are the BatchNorm's, under the same names
  (`BatchNorm_i`: parameters, initializers, running averages, checkpoints,
  `fold_batch_norm`). In training, one `batch_norm_relu` (its gradient by hand); at
  evaluation and initialization, Flax's layer then `nn.relu`.
  """

  @nn.compact
  def __call__(self, x):
    if self.use_running_average or self.is_initializing():
      return nn.relu(super().__call__(x))
    features = (x.shape[self.axis],)
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    y, mean, var = batch_norm_relu(x, scale, bias, self.epsilon, self.axis)
    m = self.momentum
    ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
    ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
    return y.astype(self.dtype or jnp.result_type(x, scale, bias))


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


def element_index(shape, order) -> jax.Array:
  """uint32 [shape]: each element's row-major index in the array's transpose by `order`
  (x.transpose(order)), from one iota per axis (no transpose)."""
  ref = [shape[a] for a in order]
  index = jnp.zeros(shape, jnp.uint32)
  for k, axis in enumerate(order):
    stride = int(np.prod(ref[k + 1:], dtype=np.int64))
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
  return index


class Dropout(nn.Module):
  """`nn.Dropout` (inverted: kept values scaled by 1/(1-rate)) with cheap masks.

  The mask bits are a counter-based hash of the element index keyed by two
  words drawn from the module's 'dropout' rng (so still deterministic given
  the rng, fresh at every step, split by vmap), instead of one threefry draw
  per element: XLA:CPU lowers jax's threefry with a rolled loop, one pass over
  memory per round, which made dropout the largest cost of the default
  config's train step on a CPU; the hash fuses into the masking multiply.
  Same distribution (keep probability 1-rate, to 2^-24), different masks.
  Kept over `nn.Dropout` because a benchmark line shows it pays on the
  default config: the measurement, its date and command are in docs/model.md.
  An element's counter is its row-major index in x.transpose(`order`) (default: x itself;
  the pixels-last encoder's [C, T, N] with order (2, 1, 0) counts as its [N, T, C]), so both
  layouts drop the same elements.
  """
  rate: float
  deterministic: bool = False
  order: Any = None

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    if x.size >= 2 ** 32:
      raise ValueError(f"dropout over {x.size} elements: at most 2^32 - 1 (uint32 counter)")
    seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
    index = element_index(x.shape, self.order or tuple(range(x.ndim)))
    bits = _hash32(_hash32(index ^ seed[0]) ^ seed[1])
    keep = (bits >> 8) >= jnp.uint32(round(self.rate * 2 ** 24))
    return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


# Widest temporal encoder trained pixels-last ([C, T, N], `TemporalEncoder.pixels_last`): the
# demo's (16 features) train step 68–75 → 58–60 ms on a 2-core CPU; the default's (64) 2–3 %
# slower that way, and every encoder's forward alone slower (docs/benchmarks.md, 2026-12-07).
PIXELS_LAST_MAX_FEATURES = 32


class TemporalEncoder(nn.Module):
  """1D CNN over months for pixels [N, T, C] → features [N, D].

  In training, a narrow encoder (`pixels_last`) runs on the series laid out pixels-last,
  [C, T, N]: each convolution is one matmul of the kernel [F, k·C] with the k taps' shifted
  months stacked ([k·C, T·N], `PixelsLastConv`), so its kernel gradient is a matmul over
  the pixels too, where XLA:CPU computes the [N, T, C] layout's as a convolution over the
  pixels fed by transposes that recompute the BatchNorm (the largest ops of the demo's
  step). Same parameters, names, dropout masks and outputs (within float rounding; tested).
  """
  features: int = 64
  layers: int = 3
  kernel_size: int = 3
  norm: str = "batch"
  dropout: float = 0.0
  pooling: str = "max"          # max | mean | attention | flatten
  dtype: Any = jnp.float32

  def pixels_last(self, train: bool) -> bool:
    """Whether this call runs pixels-last: in training on a CPU (where it was measured; an
    accelerator keeps its convolutions, as `models.inference_fn` does), up to
    PIXELS_LAST_MAX_FEATURES features, a batch norm or none, and pooling other than
    attention."""
    return (train and jax.default_backend() == "cpu"
            and self.features <= PIXELS_LAST_MAX_FEATURES
            and self.norm in ("batch", "none") and self.pooling != "attention")

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    last = self.pixels_last(train)
    if last:
      x = x.transpose(2, 1, 0)                                   # [C, T, N]
    conv = PixelsLastConv if last else nn.Conv
    for i in range(self.layers):
      x = conv(self.features, (self.kernel_size,), padding="SAME",
               use_bias=self.norm != "batch", dtype=self.dtype, name=f"Conv_{i}")(x)
      x = norm_relu(self.norm, train=train, dtype=self.dtype, reduction_axes=(-2, -1),
                    axis=0 if last else -1)(x)
      x = Dropout(self.dropout, deterministic=not train, order=(2, 1, 0) if last else None)(x)
    if last:
      if self.pooling == "flatten":
        # ReLU before the transpose back: XLA would otherwise fold the transpose into
        # the matmul, as one that contracts the pixels-last operand's long axis (slow).
        return nn.relu(PixelsLastFlattenDense(self.features, dtype=self.dtype,
                                              name="Dense_0")(x)).T
      x = x.transpose(2, 1, 0)                                   # max | mean: [N, T, F]
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
    raise UserError(f"unknown pooling {self.pooling!r}; expected max, mean, attention or "
                      f"flatten")


class PixelsLastConv(nn.Conv):
  """`nn.Conv(features, (k,), padding="SAME")` (its parameters: kernel [k, Cin, F], bias)
  on pixels-last series z [Cin, T, N] → [F, T, N]: one matmul, kernel [F, k·Cin] @ the
  taps' months stacked [k·Cin, T·N] (tap j: the months shifted by j − (k−1)//2, zeros
  outside the year, as SAME pads)."""

  @nn.compact
  def __call__(self, z):
    (k,) = self.kernel_size
    cin, t, n = z.shape
    kernel = self.param("kernel", self.kernel_init, (k, cin, self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    z, kernel, bias = self.promote_dtype(z, kernel, bias, dtype=self.dtype)
    low = (k - 1) // 2
    zp = jnp.pad(z, ((0, 0), (low, k - 1 - low), (0, 0)))
    taps = jnp.concatenate([zp[:, j:j + t] for j in range(k)]).reshape(k * cin, t * n)
    y = (kernel.reshape(k * cin, self.features).T @ taps).reshape(self.features, t, n)
    return y if bias is None else y + bias[:, None, None]


class PixelsLastFlattenDense(nn.Dense):
  """`nn.Dense(features)` over each pixel's months × channels flattened month-major (its
  parameters: kernel [T·C, F], rows (t, c)), on pixels-last series z [C, T, N] → [F, N]."""

  @nn.compact
  def __call__(self, z):
    c, t, n = z.shape
    kernel = self.param("kernel", self.kernel_init, (t * c, self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    z, kernel, bias = self.promote_dtype(z, kernel, bias, dtype=self.dtype)
    rows = kernel.reshape(t, c, self.features).transpose(1, 0, 2).reshape(c * t, -1)  # (c, t)
    return rows.T @ z.reshape(c * t, n) + bias[:, None]


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
      x = norm_relu(self.norm, train=train, dtype=self.dtype)(x)
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
  default config's train step in an XLA CPU profile; measured in docs/model.md).
  The matmul is [B·H·W, Cin] @ [Cin, 2·2·Cout], pixels first: an einsum straight to
  [B, H, 2, W, 2, Cout] let XLA compute it pixels last and transpose the input and
  the output around it (4 % of the default U-Net's time on a 512² tile,
  docs/benchmarks.md).

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
    k = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(cin, 4 * self.features)  # [Cin, (i, j, o)]
    y = x.reshape(b * h * w, cin) @ k + jnp.tile(bias, 4)
    y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)  # [B, H, 2, W, 2, Cout]
    return y.reshape(b, 2 * h, 2 * w, self.features)


def unet_min_side(depth: int) -> int:
  """Smallest patch side a U-Net of `depth` levels accepts (2^(depth-1)): every
  level halves the side, and each side must stay whole."""
  return 2 ** (depth - 1)


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
        raise UserError(f"unknown up {self.up!r}; expected transpose or resize")
      x = block(width)(jnp.concatenate([x, skip], axis=-1), train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)(x)


class HybridModel(nn.Module):
  """Temporal encoder per pixel, then U-Net: x [B, T, H, W, C] → logits f32 [B, H, W, K].

  encoder: cnn (`TemporalEncoder`, fields `temporal`) | attention
  (`temporal.AttentionEncoder`, fields `attention`). valid_count: none | channel
  (log1p of the month's valid-observation count appended as a band) | mask
  (attention only: gap-filled months, count 0, get no attention weight); the
  call then takes `valid_count` [B, T, H, W]. `tiers=True` returns
  {"tier3": logits} (the interface of `heads.HierarchicalModel`).
  """
  num_classes: int
  temporal: dict
  unet: dict
  encoder: str = "cnn"          # cnn | attention
  attention: Any = None         # AttentionEncoder fields
  valid_count: str = "none"     # none | channel | mask
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, valid_count=None, tiers: bool = False):
    x, valid = valid_count_inputs(x, valid_count, self.valid_count, self.encoder)
    b, t, h, w, c = x.shape
    levels = len(self.unet.get("widths", UNet.widths))
    m = unet_min_side(levels)
    if h % m or w % m:
      raise ValueError(
          f"patch sides {h}x{w} must be divisible by {m} (2^(depth-1) for a "
          f"U-Net of depth {levels}); crop or pad the input")
    feats = pixel_features(x, valid, train, encoder=self.encoder, temporal=self.temporal,
                           attention=self.attention, dtype=self.dtype)
    logits = UNet(self.num_classes, **self.unet, dtype=self.dtype, name="unet")(feats, train)
    logits = logits.astype(jnp.float32)
    return {"tier3": logits} if tiers else logits


def pixel_features(x, valid, train: bool, *, encoder: str, temporal: dict, attention,
                   dtype):
  """Each pixel's series through the temporal encoder: x [B, T, H, W, C] (valid
  bool [B, T, H, W] or None) → features [B, H, W, D].

  Call it inside a compact `__call__`: the encoder is the caller's submodule
  `temporal` (`encoder_module`). Pixels are folded into the batch
  ([B·H·W, T, C]), so BatchNorm's statistics are over all pixels of the batch.
  """
  b, _, h, w, _ = x.shape
  pixels, flat_valid = fold_pixels(x, valid)
  enc = encoder_module(encoder, temporal, attention, dtype, name="temporal")
  kw = {"valid": flat_valid} if encoder == "attention" else {}
  return enc(pixels, train, **kw).reshape(b, h, w, -1)


def fold_pixels(x, valid=None):
  """(pixels [B·H·W, T, C], valid [B·H·W, T] or None) of x [B, T, H, W, C] (valid
  bool [B, T, H, W] or None): each pixel's series, pixels in row-major order."""
  b, t, h, w, c = x.shape
  flat_valid = None if valid is None else jnp.moveaxis(valid, 1, 3).reshape(b * h * w, t)
  return jnp.moveaxis(x, 1, 3).reshape(b * h * w, t, c), flat_valid


def encoder_module(encoder: str, temporal: dict, attention, dtype, name=None):
  """The temporal encoder by `model.encoder`: cnn → `TemporalEncoder(**temporal)`,
  attention → `AttentionEncoder(**attention)`."""
  if encoder == "attention":
    return AttentionEncoder(**dict(attention or {}), dtype=dtype, name=name)
  if encoder == "cnn":
    return TemporalEncoder(**temporal, dtype=dtype, name=name)
  raise UserError(f"unknown model.encoder {encoder!r}; expected cnn or attention")


# Pixels per chunk of `chunked_logits`: its best of 4096 / 16384 / 65536 on a 512² tile of
# the default model (2-core CPU, 2026-12-06: 1.53 / 1.47 / 1.69 s against 1.94 s unchunked).
PIXEL_CHUNK = 16384


def fold_batch_norm(params, batch_stats, eps: float = BATCH_NORM_EPS) -> dict:
  """The parameters of the same network at inference with each BatchNorm folded into the
  convolution before it: for every module holding `Conv_i` and `BatchNorm_i` (the
  temporal encoder's layers, the U-Net's ConvBlocks), one `Conv_i` with
  kernel·s and bias β − μ·s, s = γ / √(σ² + eps) per output channel (μ, σ² the
  running statistics, γ, β the BatchNorm's scale and bias). The result is the
  parameters of the model with `norm="none"` where it had `norm="batch"` (its
  convolutions then have biases; `inference_twin`). Other modules are kept as they are.

  params, batch_stats: the model's variables["params"], variables["batch_stats"].
  """
  out = {}
  for name, sub in params.items():
    if not hasattr(sub, "items"):
      out[name] = sub
      continue
    stats = batch_stats.get(name, {})
    norms = {k for k in sub if k.startswith("BatchNorm_")}
    if not norms:
      out[name] = fold_batch_norm(sub, stats, eps)
      continue
    folded = {k: v for k, v in sub.items() if k not in norms and not k.startswith("Conv_")}
    for k in (k for k in sub if k.startswith("Conv_")):
      bn, st = sub[f"BatchNorm_{k[5:]}"], stats[f"BatchNorm_{k[5:]}"]
      scale = bn["scale"] / jnp.sqrt(st["var"] + eps)
      folded[k] = {"kernel": sub[k]["kernel"] * scale, "bias": bn["bias"] - st["mean"] * scale}
    out[name] = folded
  return out


def inference_twin(model: "HybridModel", variables):
  """(model, variables) computing `model.apply(variables, …, train=False)`'s logits, within
  float rounding, with each BatchNorm folded into its convolution (`fold_batch_norm`):
  one pass less over every activation it normalized. A part of the model with another
  norm is kept as it is."""
  temporal, unet = dict(model.temporal), dict(model.unet)
  fold_temporal = (model.encoder == "cnn"
                   and temporal.get("norm", TemporalEncoder.norm) == "batch")
  fold_unet = unet.get("norm", UNet.norm) == "batch"
  if not (fold_temporal or fold_unet):
    return model, variables
  if fold_temporal:
    temporal["norm"] = "none"
  if fold_unet:
    unet["norm"] = "none"
  params = fold_batch_norm(variables["params"], variables.get("batch_stats", {}))
  return model.clone(temporal=temporal, unet=unet), {"params": params}


def block_rows(height: int, width: int, chunk: int) -> int:
  """Image rows per block of `chunked_logits`: the largest divisor of `height` whose rows
  hold at most `chunk` pixels (at least one row)."""
  most = max(1, chunk // width)
  return max(r for r in range(1, min(most, height) + 1) if height % r == 0)


def chunked_logits(model: "HybridModel", variables, x, valid_count=None, *,
                   chunk: int = PIXEL_CHUNK):
  """`model.apply(variables, x, train=False, valid_count=…)` of a HybridModel, computed for
  maps: the temporal encoder over blocks of image rows of at most `chunk` pixels
  (`lax.map`, `block_rows`), then the U-Net, with the BatchNorms folded into their
  convolutions (`inference_twin`).

  The encoder treats every pixel on its own at inference (BatchNorm uses its running
  statistics), so the logits are the model's, within float rounding (tested); but
  its activations, [pixels, T, features] per layer (0.8 GB per layer for a 512² tile
  of the default model), stay block-sized and in cache instead of streaming
  through memory, and each block's pixels are gathered from [T, rows, W, C] in the
  loop rather than by a transpose of the whole tile first: a 512² tile of the
  default model maps 1.3× faster on a CPU (docs/benchmarks.md).
  x [B, T, H, W, C] → logits f32 [B, H, W, K].
  """
  model, variables = inference_twin(model, variables)
  x, valid = valid_count_inputs(x, valid_count, model.valid_count, model.encoder)
  b, t, h, w, c = x.shape
  rows = block_rows(h, w, chunk)
  per_image = h // rows
  xb = x.reshape(b, t, per_image, rows, w, c)
  vb = None if valid is None else valid.reshape(b, t, per_image, rows, w)
  enc = encoder_module(model.encoder, model.temporal, model.attention, model.dtype)
  part = lambda name: {k: v[name] for k, v in variables.items() if name in v}

  def encode(i):
    image, block = i // per_image, i % per_image
    pixels = jnp.moveaxis(xb[image, :, block], 0, 2).reshape(rows * w, t, c)  # [r·W, T, C]
    if vb is None:
      return enc.apply(part("temporal"), pixels, False)
    flat_valid = jnp.moveaxis(vb[image, :, block], 0, 2).reshape(rows * w, t)
    return enc.apply(part("temporal"), pixels, False, valid=flat_valid)
  feats = jax.lax.map(encode, jnp.arange(b * per_image)).reshape(b, h, w, -1)
  unet = UNet(model.num_classes, **model.unet, dtype=model.dtype)
  return unet.apply(part("unet"), feats, False).astype(jnp.float32)


VALID_COUNT = ("none", "channel", "mask")


def valid_count_inputs(x, valid_count, mode: str, encoder: str):
  """(x, valid) for the encoder: x [B, T, H, W, C(+1)], valid bool [B, T, H, W] or None.

  channel: log1p(count) appended as one more band; mask: valid = count > 0.
  """
  if mode not in VALID_COUNT:
    raise UserError(f"unknown valid_count {mode!r}; expected one of {VALID_COUNT}")
  if mode == "none":
    return x, None
  if valid_count is None:
    raise ValueError(f"model.valid_count={mode!r} needs the per-month valid-observation "
                     "counts [B, T, H, W] (valid_count=…); the input pipeline delivers "
                     "them with data.valid_count=True")
  if mode == "mask":
    if encoder != "attention":
      raise UserError("model.valid_count='mask' masks attention weights: it needs "
                       "model.encoder='attention' (use 'channel' with the CNN)")
    return x, jnp.asarray(valid_count) > 0
  count = jnp.log1p(jnp.asarray(valid_count, jnp.float32))[..., None].astype(x.dtype)
  return jnp.concatenate([x, count], axis=-1), None
