"""benchmarks.train and benchmarks.torch_twin: the PyTorch twin IS the Flax network; device choice, peaks and MFU by hand.

PyTorch crashes (segfault) in a process where TensorFlow is loaded, which the rest of
the suite does: there the torch tests run in a child pytest process of their own
(`test_torch_tests_in_a_process_without_tensorflow`). Without torch (CI) they skip.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.hybrid import get_config
from benchmarks import torch_twin
from benchmarks import train as bench_train
from jaxcrop.models import build_model
from jaxcrop.models.hybrid import UNet, encoder_module

B, T, S, C, K = 2, 6, 16, 4, 5
_CHILD = "JAXCROP_TORCH_TESTS_CHILD"


def needs_torch():
  """torch, or a skip: not installed, or TensorFlow already in this process."""
  torch = pytest.importorskip("torch")
  if "tensorflow" in sys.modules and not os.environ.get(_CHILD):
    pytest.skip("runs in its own process (test_torch_tests_in_a_process_without_tensorflow)")
  return torch


def test_torch_tests_in_a_process_without_tensorflow():
  pytest.importorskip("torch")
  if "tensorflow" not in sys.modules or os.environ.get(_CHILD):
    pytest.skip("the torch tests run in this process")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.abspath(__file__)], cwd=repo, capture_output=True, text=True,
                       env={**os.environ, _CHILD: "1"})
  assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
  last = run.stdout.strip().splitlines()[-1]
  assert " passed" in last and ("skipped" not in last or "1 skipped" in last), last  # itself


def model_cfg(tnorm="batch", unorm=None, pooling="max", kernel_size=3, up="transpose"):
  c = get_config("tiny").model                      # widths (8, 16), features 8
  c.temporal.update(norm=tnorm, pooling=pooling, kernel_size=kernel_size, layers=2)
  c.unet.update(norm=unorm or tnorm, up=up)
  return c


def perturbed(variables, key):
  """Every leaf moved off its initial value (zero biases, unit scales would hide a swap)."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(key, len(leaves))
  new = [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)]
  out = jax.tree.unflatten(tree, new)
  if "batch_stats" in out:                          # variances must stay positive
    out["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.abs(v) + 0.5 if p[-1].key == "var" else v, out["batch_stats"])
  return out


CASES = [  # temporal norm, unet norm, pooling, kernel size, up
    ("batch", "batch", "max", 3, "transpose"),
    ("none", "none", "mean", 5, "transpose"),
    ("batch", "batch", "attention", 5, "resize"),
    ("none", "none", "flatten", 3, "resize"),
    ("group", "group", "attention", 3, "transpose"),
    ("layer", "layer", "flatten", 5, "resize"),
    ("layer", "group", "max", 3, "resize"),
    ("group", "layer", "mean", 5, "transpose"),
]


@pytest.mark.parametrize("tnorm,unorm,pooling,kernel_size,up", CASES)
def test_torch_twin_equals_flax_model(tnorm, unorm, pooling, kernel_size, up):
  """Flax variables copied into the twin: the same logits (eval mode)."""
  torch = needs_torch()
  cfg = model_cfg(tnorm, unorm, pooling, kernel_size, up)
  model = build_model(cfg, K)
  x = jax.random.normal(jax.random.key(1), (B, T, S, S, C))
  variables = perturbed(model.init(jax.random.key(0), x), jax.random.key(2))
  ref = np.asarray(model.apply(variables, x))                         # [B, H, W, K]
  twin = torch_twin.torch_hybrid(cfg, K, C, months=T)
  torch_twin.load_flax_variables(twin, variables)
  with torch.no_grad():
    ours = twin.eval()(torch.from_numpy(np.array(x))).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_torch_twin_batch_norm_train_mode_equals_flax():
  """Train mode (no dropout): BatchNorm normalizes by the batch statistics in both."""
  torch = needs_torch()
  cfg = model_cfg("batch", pooling="flatten")
  model = build_model(cfg, K)
  x = jax.random.normal(jax.random.key(1), (B, T, S, S, C))
  variables = perturbed(model.init(jax.random.key(0), x), jax.random.key(2))
  ref, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  twin = torch_twin.torch_hybrid(cfg, K, C, months=T)
  torch_twin.load_flax_variables(twin, variables)
  with torch.no_grad():
    ours = twin.train()(torch.from_numpy(np.array(x))).permute(0, 2, 3, 1).numpy()
  ref = np.asarray(ref)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("kind", ["batch", "layer", "group"])
def test_norm_eps_and_momentum_are_flax_s(kind):
  """Checked directly: eps 1e-5 vs 1e-6 moves these well-scaled outputs by < 1e-4."""
  torch = needs_torch()
  import flax.linen as nn
  flax_cls = {"batch": nn.BatchNorm, "layer": nn.LayerNorm, "group": nn.GroupNorm}[kind]
  torch_cls = {"batch": torch.nn.modules.batchnorm._BatchNorm, "layer": torch.nn.LayerNorm,
               "group": torch.nn.GroupNorm}[kind]
  norms = [m for m in torch_twin.torch_hybrid(model_cfg(kind), K, C, T).modules()
           if isinstance(m, torch_cls)]
  assert len(norms) == 2 + 2 * 3                    # 2 temporal layers, 3 ConvBlocks
  assert {m.eps for m in norms} == {flax_cls.epsilon}
  if kind == "batch":                               # torch: new weight; Flax (0.9): old weight
    assert all(m.momentum == pytest.approx(0.1) for m in norms)


def test_load_flax_variables_rejects_another_network():
  torch = needs_torch()
  x = jnp.zeros((1, T, S, S, C))
  variables = build_model(model_cfg(up="resize"), K).init(jax.random.key(0), x)
  twin = torch_twin.torch_hybrid(model_cfg(up="transpose"), K, C, months=T)
  with pytest.raises(ValueError, match="ConvTranspose_0"):
    torch_twin.load_flax_variables(twin, variables)
  del torch


def test_torch_step_runs_in_f32_and_bf16_autocast():
  """The step the benchmark times (bf16: the autocast path, here on the CPU)."""
  torch = needs_torch()
  config = get_config("tiny")
  for dtype in ("float32", "bfloat16"):
    config.model.dtype = dtype
    step = bench_train.torch_step(config, 2, 16, "cpu")
    first, second = float(step()), float(step())
    assert np.isfinite([first, second]).all() and first != second
  del torch


def test_twin_parts_are_the_flax_parts():
  """`encode` and `decode`, what the benchmark's parts time, are the Flax model's temporal
  encoder and U-Net: the same outputs part by part with the Flax variables copied in; and
  each part's callable, JAX's and the twin's, runs its backward."""
  torch = needs_torch()
  cfg = model_cfg("batch", pooling="flatten")
  model = build_model(cfg, K)
  x = jax.random.normal(jax.random.key(1), (B, T, S, S, C))
  variables = perturbed(model.init(jax.random.key(0), x), jax.random.key(2))
  twin = torch_twin.torch_hybrid(cfg, K, C, months=T).eval()
  torch_twin.load_flax_variables(twin, variables)
  part = lambda name: {k: v[name] for k, v in variables.items()}
  enc = encoder_module("cnn", dict(cfg.temporal), None, jnp.float32)
  pixels = jnp.moveaxis(x, 1, 3).reshape(B * S * S, T, C)
  feats = enc.apply(part("temporal"), pixels)                      # [B·H·W, D]
  logits = UNet(K, **dict(cfg.unet)).apply(part("unet"), feats.reshape(B, S, S, -1))
  with torch.no_grad():
    t_feats = twin.encode(torch.from_numpy(np.array(pixels)).permute(0, 2, 1))
    t_logits = twin.decode(torch.from_numpy(np.array(feats.reshape(B, S, S, -1)))
                           .permute(0, 3, 1, 2))
  for ours, ref in ((t_feats.numpy(), feats), (t_logits.permute(0, 2, 3, 1).numpy(), logits)):
    ref = np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
  config = get_config("tiny")
  for fns in (bench_train.jax_parts(config, 2, 16), bench_train.torch_parts(config, 2, 16)):
    assert list(fns) == ["temporal_encoder", "unet"]
    for fn in fns.values():
      fn()


def test_part_records_by_hand():
  """Seconds per call → ms, the rest = the step less its parts, ratio = reference / ours."""
  ours, ref = {"temporal_encoder": 0.03, "unet": 0.02}, {"temporal_encoder": 0.06, "unet": 0.01}
  rec = bench_train.part_records(ours, 0.06, ref, 0.1)
  assert list(rec) == ["temporal_encoder", "unet", "rest"]
  want = {"temporal_encoder": (30, 60, 2.0), "unet": (20, 10, 0.5), "rest": (10, 30, 3.0)}
  for part, (o, r, ratio) in want.items():
    assert rec[part]["ours_ms"] == pytest.approx(o)
    assert rec[part]["reference_ms"] == pytest.approx(r)
    assert rec[part]["ratio"] == pytest.approx(ratio)
  alone = bench_train.part_records(ours, 0.05)                     # no torch: ours only
  assert alone == {"temporal_encoder": {"ours_ms": pytest.approx(30)},
                   "unet": {"ours_ms": pytest.approx(20)}, "rest": {"ours_ms": pytest.approx(0)}}


def test_measure_parts_interleaves_ours_and_the_twins_and_keeps_them_apart(monkeypatch):
  """Each part's ours and twin's callables are timed side by side, and each time goes to its
  own side and part; without a reference device the twin is not built."""
  secs = {"oe": 0.03, "re": 0.06, "ou": 0.02, "ru": 0.01}
  timed = []

  def best_times(fns, repeats, steps):
    timed.append(list(fns))
    return [secs[f] for f in fns]
  monkeypatch.setattr(bench_train, "_best_times", best_times)
  monkeypatch.setattr(bench_train, "jax_parts", lambda *a: {"temporal_encoder": "oe", "unet": "ou"})
  monkeypatch.setattr(bench_train, "torch_parts",
                      lambda *a: {"temporal_encoder": "re", "unet": "ru"})
  rec = bench_train.measure_parts(None, 2, 16, 0.06, 0.1, "cpu", 1, 1)
  assert timed == [["oe", "re", "ou", "ru"]]
  assert rec == bench_train.part_records({"temporal_encoder": 0.03, "unet": 0.02}, 0.06,
                                         {"temporal_encoder": 0.06, "unet": 0.01}, 0.1)
  monkeypatch.setattr(bench_train, "torch_parts", lambda *a: pytest.fail("twin built"))
  alone = bench_train.measure_parts(None, 2, 16, 0.06, None, None, 1, 1)
  assert timed[-1] == ["oe", "ou"] and "reference_ms" not in alone["unet"]


@pytest.mark.parametrize("key,value", [("up", "nearest"), ("norm", "instance")])
def test_unimplemented_option_is_a_clear_error(key, value):
  cfg = model_cfg()
  cfg.unet[key] = value
  with pytest.raises(ValueError, match=rf"model.unet.{key}='{value}' not implemented"):
    torch_twin.check_torch_supported(cfg)


def test_unknown_option_is_a_clear_error():
  cfg = model_cfg()
  cfg.temporal.dilation = 2
  with pytest.raises(ValueError, match=r"model.temporal option\(s\) \['dilation'\]"):
    torch_twin.check_torch_supported(cfg)
  torch_twin.check_torch_supported(get_config().model)    # the real configs pass
  torch_twin.check_torch_supported(get_config("demo").model)


@pytest.mark.parametrize("backend,cuda,device,fair", [
    ("gpu", True, "cuda", True), ("gpu", False, "cpu", False),
    ("cpu", True, "cpu", True), ("cpu", False, "cpu", True), ("tpu", True, "cpu", False)])
def test_torch_device_follows_jax_backend(backend, cuda, device, fair):
  assert bench_train.torch_device(backend, cuda) == device
  assert bench_train.same_kind(backend, device) is fair


def test_ratio_only_on_the_same_kind_of_chip():
  same = bench_train.compare(0.1, 0.15, 4096, "gpu", "cuda")
  assert same["ratio"] == pytest.approx(1.5) and "on cuda" in same["reference"]
  assert same["reference_pixels_per_s"] == pytest.approx(4096 / 0.15)
  cross = bench_train.compare(0.1, 0.5, 4096, "gpu", "cpu")
  assert "ratio" not in cross and "JAX on gpu, PyTorch on cpu" in cross["ratio_note"]
  assert "torch unavailable" in bench_train.compare(0.1, None, 4096, "cpu", None)["reference"]


def test_peak_by_chip_and_dtype_and_mfu_by_hand():
  peak, basis = bench_train.peak_flops("NVIDIA H200", "float32")
  assert peak == 494.7e12 and "TF32" in basis and "float32 run" in basis
  peak, basis = bench_train.peak_flops("NVIDIA H200", "bfloat16")
  assert peak == 989.4e12 and "bf16" in basis
  assert bench_train.peak_flops("NVIDIA H100 PCIe", "bfloat16")[0] == 756e12  # not the SXM
  assert bench_train.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16")[0] == 989.4e12
  assert bench_train.peak_flops("TPU v4", "float32")[1].startswith("dense bf16")
  assert bench_train.peak_flops("cpu", "float32") is None
  # 2.97 TFLOP per step in 20 ms = 148.5 TFLOP/s; on 494.7 TFLOP/s: 0.30.
  assert bench_train.mfu(2.97e12, 0.02, 494.7e12) == pytest.approx(0.30, abs=1e-3)


def test_matmul_roofline_is_2n3_flop_over_the_best_time(monkeypatch):
  timed = []

  def best_time(fn, repeats, steps):
    timed.append(fn().shape)               # the callable runs the product (and blocks on it)
    return 0.004
  monkeypatch.setattr(bench_train, "_best_time", best_time)
  # [64, 64] @ [64, 64]: 2 * 64^3 = 524,288 FLOP in 4 ms = 131.072 MFLOP/s.
  assert bench_train.matmul_flops(64) == pytest.approx(131.072e6)
  assert timed == [(64, 64)]


@pytest.mark.parametrize("kind,dtype,precision,peak,arith", [
    ("TPU v5 lite", "bfloat16", None, 197e12, "bf16"),        # v5e: not v5p's "TPU v5"
    ("TPU v5", "float32", None, 459e12, "bf16"),              # v5p on a TPU VM
    ("TPU v5p", "bfloat16", None, 459e12, "bf16"),            # v5p on Pathways
    ("TPU v6 lite", "bfloat16", None, 918e12, "bf16"),
    ("NVIDIA H200 NVL", "bfloat16", None, 835.5e12, "bf16"),  # not the SXM's 989
    ("NVIDIA H100 80GB HBM3", "float32", "highest", 66.9e12, "FP32"),
    ("NVIDIA A100-SXM4-80GB", "float32", "float32", 19.5e12, "FP32"),
    ("NVIDIA A100-SXM4-80GB", "float32", "tensorfloat32", 156e12, "TF32 tensor-core"),
    ("NVIDIA H200", "bfloat16", "highest", 989.4e12, "bf16")])  # highest: f32 only
def test_the_longest_known_name_and_the_matmul_precision_pick_the_peak(
    kind, dtype, precision, peak, arith):
  got, basis = bench_train.peak_flops(kind, dtype, precision)
  assert got == peak and basis.startswith(f"dense {arith} peak of ")


def test_no_peak_for_plain_fp32_on_a_tpu_or_an_unknown_chip():
  assert bench_train.peak_flops("TPU v4", "float32", "highest") is None
  assert bench_train.peak_flops("Radeon 9000", "bfloat16") is None


@pytest.mark.parametrize("variant,message", [
    ("demo,attention", "model.encoder='attention'"),
    ("demo,hierarchical", "model.head.kind='hierarchical'")])
def test_encoder_and_head_the_twin_lacks_are_clear_errors(variant, message):
  with pytest.raises(ValueError, match=message + " not implemented"):
    torch_twin.check_torch_supported(get_config(variant).model)
