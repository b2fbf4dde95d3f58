"""Hybrid model: shapes, side check, bf16, parameter count, the norm and up-path options,
the BatchNorm + ReLU gradient by hand."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.hybrid import get_config
from jaxcrop.models import TemporalEncoder, build_model, unet_min_side


def tiny_model_cfg(**temporal):
  c = get_config("tiny").model
  c.temporal.update(temporal)
  return c


def init(model, x):
  return model.init({"params": jax.random.key(0)}, x)


X = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 4))


@pytest.mark.parametrize("pooling", ["max", "mean", "attention", "flatten"])
def test_output_shape_and_dtype(pooling):
  model = build_model(tiny_model_cfg(pooling=pooling), num_classes=5)
  logits = model.apply(init(model, X), X)
  assert logits.shape == (2, 16, 16, 5) and logits.dtype == jnp.float32


def test_unet_min_side_halves_per_level():
  assert [unet_min_side(d) for d in (1, 3, 4)] == [1, 4, 8]


def test_side_not_divisible_is_a_clear_error():
  cfg = tiny_model_cfg()
  cfg.unet.widths = (8, 16, 32)
  model = build_model(cfg, 5)
  x = jnp.zeros((1, 4, 10, 16, 4))
  with pytest.raises(ValueError, match=r"patch sides 10x16 must be divisible by 4"):
    init(model, x)


def test_bfloat16_compute_float32_params_and_logits():
  cfg = tiny_model_cfg()
  cfg.dtype = "bfloat16"
  model = build_model(cfg, 5)
  variables = init(model, X)
  assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
  logits = model.apply(variables, X)
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  f32 = build_model(tiny_model_cfg(), 5).apply(variables, X)
  np.testing.assert_allclose(logits, f32, atol=0.1, rtol=0.1)  # close, not equal


def test_param_count_by_hand():
  cfg = tiny_model_cfg(norm="none", layers=2, kernel_size=3, features=8, pooling="max")
  cfg.unet.update(norm="none", widths=(8, 16))
  model = build_model(cfg, num_classes=5)
  n = sum(p.size for p in jax.tree.leaves(init(model, X)["params"]))
  C, D, K = 4, 8, 5
  temporal = (3 * C * D + D) + (3 * D * D + D)
  down = (9 * D * 8 + 8) + (9 * 8 * 8 + 8) + (9 * 8 * 16 + 16) + (9 * 16 * 16 + 16)
  up = (4 * 16 * 8 + 8) + (9 * 16 * 8 + 8) + (9 * 8 * 8 + 8)
  head = 8 * K + K
  assert n == temporal + down + up + head == 7269


@pytest.mark.parametrize("norm,pooling", [("batch", "attention"), ("group", "flatten")])
def test_torch_reference_has_the_same_parameters(norm, pooling):
  """benchmarks.torch_twin is the same architecture: equal parameter counts."""
  torch = pytest.importorskip("torch")
  from benchmarks import torch_twin
  cfg = tiny_model_cfg(norm=norm, pooling=pooling, layers=2)
  cfg.unet.norm = norm
  n_jax = sum(p.size for p in jax.tree.leaves(init(build_model(cfg, 5), X)["params"]))
  twin = torch_twin.torch_hybrid(cfg, 5, 4, months=4)
  assert sum(p.numel() for p in twin.parameters()) == n_jax
  assert tuple(twin(torch.zeros(2, 4, 16, 16, 4)).shape) == (2, 5, 16, 16)


def test_upconv_matmul_equals_conv_transpose():
  """UpConv2x2 (matmul + depth-to-space) = nn.ConvTranspose 2×2 stride 2: params and outputs."""
  import flax.linen as nn
  from jaxcrop.models.hybrid import UpConv2x2
  x = jax.random.normal(jax.random.key(2), (2, 3, 4, 7))
  ref = nn.ConvTranspose(5, (2, 2), strides=(2, 2))
  ours = UpConv2x2(5, (2, 2), strides=(2, 2))
  v = ref.init(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, v, ours.init(jax.random.key(0), x))
  y = ours.apply(v, x)
  assert y.shape == (2, 6, 8, 5)
  np.testing.assert_allclose(y, ref.apply(v, x), atol=1e-5)


def test_dropout_rate_scale_and_rng():
  from jaxcrop.models.hybrid import Dropout
  x = jnp.ones((100, 12, 64))
  drop = lambda key, rate=0.1, det=False: Dropout(rate, deterministic=det).apply(
      {}, x, rngs={"dropout": key})
  a, b = drop(jax.random.key(0)), drop(jax.random.key(1))
  assert set(np.unique(np.asarray(a))) == {0.0, np.float32(1 / 0.9)}
  assert abs(float((a > 0).mean()) - 0.9) < 0.005          # 76,800 draws: σ ≈ 0.001
  np.testing.assert_array_equal(a, drop(jax.random.key(0)))  # deterministic given the rng
  agree = float(((a > 0) == (b > 0)).mean())                 # independent: 0.9² + 0.1² = 0.82
  assert abs(agree - 0.82) < 0.01
  np.testing.assert_array_equal(drop(jax.random.key(0), det=True), x)
  np.testing.assert_array_equal(drop(jax.random.key(0), rate=1.0), 0 * x)


@pytest.mark.parametrize("part,key,value,expected", [
    ("temporal", "norm", "instance", "unknown norm 'instance'"),
    ("temporal", "pooling", "last", "unknown pooling 'last'"),
    ("unet", "up", "nearest", "unknown up 'nearest'")])
def test_unknown_config_value_is_a_config_error(part, key, value, expected):
  """A user error (one line at the command line), raised where the model reads the value."""
  from cropcontracts.errors import UserError
  cfg = tiny_model_cfg()
  cfg[part][key] = value
  with pytest.raises(UserError, match=expected):
    init(build_model(cfg, 5), X)


# --- the options the default config does not use: norm layer | group, up resize ----------

def option_cfg(norm="batch", up="transpose"):
  cfg = tiny_model_cfg(norm=norm)
  cfg.unet.update(norm=norm, up=up)
  return cfg


def modules(params) -> set:
  """The module names of a params tree, e.g. 'unet/ConvBlock_0/LayerNorm_1'."""
  return {jax.tree_util.keystr(path[:-1], simple=True, separator="/")
          for path, _ in jax.tree_util.tree_leaves_with_path(params)}


def sgd_step_lowers_the_loss(model, variables):
  """One gradient step of lr 0.05 on a fixed batch: finite gradients, lower loss."""
  labels = jax.random.randint(jax.random.key(3), X.shape[:1] + X.shape[2:4], 0, 5)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, X, train=True,
                            mutable=["batch_stats"])
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1).mean()
  # Jitted once, for the loss after the step too: op by op, the backward pass of a
  # model takes seconds of dispatch and per-operation compiles.
  loss_and_grad = jax.jit(jax.value_and_grad(loss))
  before, grads = loss_and_grad(variables["params"])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  after, _ = loss_and_grad(jax.tree.map(lambda p, g: p - 0.05 * g, variables["params"], grads))
  assert after < before


@pytest.mark.parametrize("norm, layer", [("layer", "LayerNorm"), ("group", "GroupNorm")])
def test_layer_and_group_norm_keep_each_example_to_itself(norm, layer):
  """No batch statistics: in training mode an example's logits do not depend on
  the rest of the batch (with the default batch norm they do)."""
  model = build_model(option_cfg(norm), 5)
  variables = init(model, X)
  assert "batch_stats" not in variables
  names = modules(variables["params"])
  assert {"temporal/" + layer + "_0", "unet/ConvBlock_0/" + layer + "_1"} <= names
  assert not any("BatchNorm" in n for n in names)
  apply = jax.jit(model.apply, static_argnames="train")
  alone = apply(variables, X[:1], train=True)
  together = apply(variables, X, train=True)
  assert together.shape == (2, 16, 16, 5) and together.dtype == jnp.float32
  np.testing.assert_allclose(alone[0], together[0], atol=1e-5)
  default = build_model(option_cfg(), 5)
  dv = init(default, X)
  run = lambda x: default.apply(dv, x, train=True, mutable=["batch_stats"])[0][0]
  assert np.abs(run(X[:1]) - run(X)).max() > 1e-3
  sgd_step_lowers_the_loss(model, variables)


def test_resize_up_path_is_bilinear_then_3x3_conv():
  """up="resize": no transposed conv; each up level is a 3×3 conv of the resized
  features, so its output shape and the default's agree but not its parameters."""
  model = build_model(option_cfg(up="resize"), 5)
  variables = init(model, X)
  unet = variables["params"]["unet"]
  assert not any(k.startswith("ConvTranspose") for k in unet)
  assert unet["Conv_0"]["kernel"].shape == (3, 3, 16, 8)   # widths (8, 16): 16 → 8
  default = init(build_model(option_cfg(), 5), X)["params"]["unet"]
  assert default["ConvTranspose_0"]["kernel"].shape == (2, 2, 16, 8)
  logits = model.apply(variables, X)
  assert logits.shape == (2, 16, 16, 5) and np.isfinite(np.asarray(logits)).all()
  sgd_step_lowers_the_loss(model, variables)


def trained_like(variables):
  """variables with BatchNorm statistics and affine parameters away from their init (mean 0,
  variance 1, scale 1, bias 0), where folding them into the convolutions would be exact."""
  keys = iter(jax.random.split(jax.random.key(7), 1000))

  def move(path, a):
    name = jax.tree_util.keystr(path)
    if "BatchNorm" not in name:
      return a
    r = jax.random.uniform(next(keys), a.shape)
    return 0.5 + 1.5 * r if name.endswith("['var']") or name.endswith("['scale']") else r - 0.5
  return jax.tree_util.tree_map_with_path(move, variables)


def test_fold_batch_norm_by_hand():
  """kernel·s and β − μ·s, s = γ/√(σ² + eps), per output channel; other modules kept."""
  from jaxcrop.models.hybrid import BATCH_NORM_EPS, block_rows, fold_batch_norm
  params = {"block": {"Conv_0": {"kernel": np.ones((3, 2, 2), np.float32)},
                      "BatchNorm_0": {"scale": np.array([2.0, 1.0], np.float32),
                                      "bias": np.array([1.0, 0.0], np.float32)}},
            "head": {"kernel": np.full((2, 5), 3.0, np.float32)}}
  stats = {"block": {"BatchNorm_0": {"mean": np.array([0.5, -1.0], np.float32),
                                     "var": np.array([3.0, 0.0], np.float32)}}}
  folded = fold_batch_norm(params, stats)
  s = np.array([2 / np.sqrt(3 + BATCH_NORM_EPS), 1 / np.sqrt(BATCH_NORM_EPS)])
  np.testing.assert_allclose(folded["block"]["Conv_0"]["kernel"], np.ones((3, 2, 2)) * s,
                             rtol=1e-6)
  np.testing.assert_allclose(folded["block"]["Conv_0"]["bias"], [1 - 0.5 * s[0], 1 * s[1]],
                             rtol=1e-6)
  assert set(folded["block"]) == {"Conv_0"} and folded["head"]["kernel"] is params["head"]["kernel"]
  # rows per block: the largest divisor of the height within the chunk's pixels
  assert [block_rows(512, 512, 16384), block_rows(16, 16, 64), block_rows(16, 16, 512),
          block_rows(16, 16, 100), block_rows(10, 3, 7), block_rows(7, 50, 16)] == [32, 4, 16,
                                                                                    4, 2, 1]


@pytest.mark.parametrize("temporal_norm, unet_norm", [("batch", "group"), ("layer", "batch"),
                                                      ("none", "layer")])
def test_chunked_logits_fold_only_the_batch_norms(temporal_norm, unet_norm):
  """A model whose encoder and U-Net normalize differently: `chunked_logits` folds the
  BatchNorms it has and keeps the other norms, the logits model.apply's."""
  from configs.hybrid import get_config
  from jaxcrop.models import build_model, chunked_logits
  cfg = get_config("tiny").model
  cfg.temporal.norm, cfg.unet.norm = temporal_norm, unet_norm
  model = build_model(cfg, 5)
  x = jax.random.normal(jax.random.key(0), (1, 3, 16, 16, 4))
  v = trained_like(model.init(jax.random.key(2), x))
  np.testing.assert_allclose(chunked_logits(model, v, x, chunk=64),
                             model.apply(v, x, train=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder, valid_count", [("cnn", "none"), ("cnn", "channel"),
                                                  ("attention", "mask")])
def test_chunked_logits_are_the_models_logits(encoder, valid_count):
  """Maps run the temporal encoder over chunks of pixels (`chunked_logits`, what
  `models.inference_fn` gives predict for a flat hybrid): the same logits as
  model.apply, within float rounding, whether the pixels split into chunks or not."""
  from configs.hybrid import get_config
  from jaxcrop.models import build_model, chunked_logits, inference_fn
  cfg = get_config("tiny").model
  cfg.update(encoder=encoder, valid_count=valid_count)
  model = build_model(cfg, 5)
  x = jax.random.normal(jax.random.key(0), (2, 3, 16, 16, 4))
  count = jax.random.randint(jax.random.key(1), (2, 3, 16, 16), 0, 3).astype(jnp.float32)
  inputs = {} if valid_count == "none" else {"valid_count": count}
  v = trained_like(model.init(jax.random.key(2), x, **inputs))
  want = model.apply(v, x, train=False, **inputs)
  for chunk in (64, 512, 100):                     # blocks of 4 rows, of 16, of 4
    got = chunked_logits(model, v, x, chunk=chunk, **inputs)
    assert got.shape == want.shape == (2, 16, 16, 5) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(inference_fn(model)(v, x, **inputs), want, rtol=1e-5, atol=1e-5)


class _FlaxNormReLU(nn.Module):
  """The layers `hybrid.BatchNorm` replaces: Flax's BatchNorm, then a ReLU."""
  train: bool
  dtype: object = jnp.float32
  axis: int = -1

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.BatchNorm(use_running_average=not self.train, momentum=0.9,
                                epsilon=1e-5, dtype=self.dtype, axis=self.axis)(x))


class _OurNormReLU(_FlaxNormReLU):
  @nn.compact
  def __call__(self, x):
    from jaxcrop.models.hybrid import norm_relu
    return norm_relu("batch", train=self.train, dtype=self.dtype, axis=self.axis)(x)


@pytest.mark.parametrize("dtype, tol, axis", [(jnp.float32, 1e-5, -1), (jnp.bfloat16, 2e-2, -1),
                                              (jnp.float32, 1e-5, 0)])
def test_batch_norm_relu_is_flax_batch_norm_then_relu(dtype, tol, axis):
  """Same variables (names, init), outputs, running averages and gradients as Flax's
  BatchNorm followed by a ReLU, in training and in evaluation; channels where the ReLU
  keeps everything (bias +3) and nothing (bias −3) included; the features last, or first
  (axis 0: the pixels-last series [C, T, N] of `TemporalEncoder.pixels_last`)."""
  x = (jax.random.normal(jax.random.key(0), (3, 5, 4)) * 2 + 0.5).astype(dtype)
  if axis == 0:
    x = x.transpose(2, 1, 0)                                # [4, 5, 3]: the features first
  init = {"train": _FlaxNormReLU(True, dtype, axis).init(jax.random.key(1), x),
          "ours": _OurNormReLU(True, dtype, axis).init(jax.random.key(1), x)}
  assert jax.tree.map(jnp.shape, init["train"]) == jax.tree.map(jnp.shape, init["ours"]) == {
      "params": {"BatchNorm_0": {"scale": (4,), "bias": (4,)}},
      "batch_stats": {"BatchNorm_0": {"mean": (4,), "var": (4,)}}}
  params = {"BatchNorm_0": {"scale": jnp.array([0.5, 1.0, 1.5, 2.0]),
                            "bias": jnp.array([3.0, -3.0, 0.2, -0.1])}}
  stats = {"BatchNorm_0": {"mean": jnp.array([0.1, 0.2, 0.3, 0.4]),
                           "var": jnp.array([1.0, 2.0, 3.0, 4.0])}}
  weight = jnp.sin(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)

  def run(module):
    def loss(p, x):
      y, new = module.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
      return (y.astype(jnp.float32) * weight).sum(), (y, new["batch_stats"])
    (grads, dx), (y, new) = jax.grad(loss, (0, 1), has_aux=True)(params, x)
    return y, new, grads, dx
  want, got = run(_FlaxNormReLU(True, dtype, axis)), run(_OurNormReLU(True, dtype, axis))
  assert got[0].dtype == want[0].dtype == dtype and got[3].dtype == dtype
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=tol, atol=tol)
  y = np.moveaxis(np.asarray(got[0], np.float32), axis, -1)
  assert (y[..., 0] > 0).all() and (y[..., 1] == 0).all()        # the two extreme channels
  assert float(jnp.abs(got[2]["BatchNorm_0"]["scale"][1])) == 0  # no gradient through a dead ReLU
  evaluated = [m.apply({"params": params, "batch_stats": stats}, x)
               for m in (_FlaxNormReLU(False, dtype, axis), _OurNormReLU(False, dtype, axis))]
  np.testing.assert_array_equal(np.asarray(evaluated[0], np.float32),
                                np.asarray(evaluated[1], np.float32))


@pytest.mark.parametrize("axis", [-1, 0])
def test_batch_norm_relu_gradient_by_hand(axis):
  """dβ = Σ g, dγ = Σ g·x̂, dx = γ·r·(g − (dβ + x̂·dγ)/n) with g = dy·[y > 0], on one channel
  of four values worked out here: x = (0, 1, 2, 5), μ = 2, σ² = 3.5, γ = 2, β = −0.5; the
  channel axis last ([4, 1]) or first ([1, 4])."""
  from jaxcrop.models.hybrid import batch_norm_relu
  x = jnp.array([[0.0], [1.0], [2.0], [5.0]])
  r = 1 / np.sqrt(3.5 + 1e-5)
  x_hat = (np.array([0.0, 1.0, 2.0, 5.0]) - 2) * r          # (-1.069, -0.534, 0, 1.604)
  y_want = np.maximum(2 * x_hat - 0.5, 0)                    # only the last one is > 0
  dy = jnp.array([[1.0], [2.0], [3.0], [4.0]])
  if axis == 0:
    x, dy = x.T, dy.T
  (y, mean, var), vjp = jax.vjp(lambda x, s, b: batch_norm_relu(x, s, b, 1e-5, axis), x,
                                jnp.array([2.0]), jnp.array([-0.5]))
  y = y.T if axis == 0 else y
  np.testing.assert_allclose(y[:, 0], y_want, rtol=1e-6)
  np.testing.assert_allclose([mean[0], var[0]], [2.0, 3.5], rtol=1e-6)
  dx, dscale, dbias = vjp((dy, jnp.zeros(1), jnp.zeros(1)))
  dx = dx.T if axis == 0 else dx
  g = np.array([0.0, 0.0, 0.0, 4.0])
  dbias_want, dscale_want = g.sum(), (g * x_hat).sum()       # 4 and 4·1.604
  np.testing.assert_allclose([dbias[0], dscale[0]], [dbias_want, dscale_want], rtol=1e-6)
  np.testing.assert_allclose(dx[:, 0], 2 * r * (g - (dbias_want + x_hat * dscale_want) / 4),
                             rtol=1e-5, atol=1e-6)


class _PixelsFirst(TemporalEncoder):
  """The encoder with its [N, T, C] formulation in training too (the reference)."""

  def pixels_last(self, train):
    return False


@pytest.mark.parametrize("kw", [dict(pooling="flatten", dropout=0.3),
                                dict(pooling="max", norm="none"),
                                dict(pooling="mean", kernel_size=4, layers=3),
                                dict(pooling="flatten", kernel_size=5, norm="none")])
def test_pixels_last_training_is_the_pixels_first_encoder(kw):
  """A narrow encoder trains pixels-last ([C, T, N]): the same variables (names, shapes,
  initial values, even initialized in training), dropout masks, outputs, running averages
  and gradients as the [N, T, C] formulation; an even kernel (4) pads as SAME does (1 month
  before, 2 after), and the flatten head's kernel rows keep their (month, channel) order."""
  kw = {"features": 16, "layers": 2, **kw}
  ours, ref = TemporalEncoder(**kw), _PixelsFirst(**kw)
  assert ours.pixels_last(True) and not ours.pixels_last(False)
  x = jax.random.normal(jax.random.key(0), (300, 12, 4))
  rngs = {"params": jax.random.key(1), "dropout": jax.random.key(4)}
  init = [jax.jit(lambda r, x, m=m: m.init(r, x, True))(rngs, x) for m in (ours, ref)]
  assert jax.tree.map(jnp.shape, init[0]) == jax.tree.map(jnp.shape, init[1])
  for a, b in zip(jax.tree.leaves(init[0]), jax.tree.leaves(init[1])):
    np.testing.assert_array_equal(a, b)
  v = {**init[0], "params": jax.tree.map(           # off the initial values: live ReLUs
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), init[0]["params"])}
  weight = jax.random.normal(jax.random.key(3), (300, 16))

  def run(m):
    def loss(p):
      y, new = m.apply({**v, "params": p}, x, True, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.key(5)})
      return (y * weight).sum(), (y, new)
    grads, (y, new) = jax.jit(jax.grad(loss, has_aux=True))(v["params"])
    return y, new, grads
  got, want = run(ours), run(ref)
  assert float(jnp.abs(want[0]).max()) > 1 and float((want[0] > 0).mean()) > 0.2
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.abs(b).max()))


def test_pixels_last_only_where_it_was_measured_to_pay(monkeypatch):
  """Training on a CPU only, at most PIXELS_LAST_MAX_FEATURES features, a batch norm or none,
  and pooling other than attention: the default encoder (64 features) stays pixels-first."""
  from jaxcrop.models import hybrid
  from jaxcrop.models.hybrid import PIXELS_LAST_MAX_FEATURES
  assert PIXELS_LAST_MAX_FEATURES == 32
  assert TemporalEncoder(features=32).pixels_last(True)
  assert not TemporalEncoder(features=64).pixels_last(True)
  assert not TemporalEncoder(features=16).pixels_last(False)
  assert not TemporalEncoder(features=16, pooling="attention").pixels_last(True)
  assert not TemporalEncoder(features=16, norm="layer").pixels_last(True)
  assert not TemporalEncoder(features=16, norm="group").pixels_last(True)
  assert TemporalEncoder(features=16, norm="none", pooling="max").pixels_last(True)
  monkeypatch.setattr(hybrid.jax, "default_backend", lambda: "gpu")
  assert not TemporalEncoder(features=16).pixels_last(True)


def test_element_index_is_the_index_in_the_transposed_array():
  """Dropout's counters for a pixels-last array: an element's index in x.transpose(order)."""
  from jaxcrop.models.hybrid import element_index
  want = np.arange(24, dtype=np.uint32).reshape(4, 3, 2).transpose(2, 1, 0)   # x_ref [4, 3, 2]
  np.testing.assert_array_equal(element_index((2, 3, 4), (2, 1, 0)), want)
  np.testing.assert_array_equal(element_index((2, 3, 4), (0, 1, 2)),
                                np.arange(24).reshape(2, 3, 4))
