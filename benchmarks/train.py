"""Training throughput: the jitted JAX train step vs the same architecture in PyTorch.

  python -m benchmarks train            # one JSON line per measure
  python -m benchmarks train --tiny     # the tiny config on batch 2 of 16 px (tests)

Random inputs (throughput does not depend on the values), the real train step
(`train.make_train_step`: loss, AdamW, clipping) and, as the reference, the
identical network in eager PyTorch (`benchmarks.torch_twin`: the same layers, widths,
kernel sizes, norms and loss; outputs tested equal with the Flax weights
copied in) run in the same process. Best of a few repeats, interleaved.
PyTorch runs on the same kind of chip as JAX: CUDA when JAX is on a GPU and
torch sees one (TF32 for f32, as XLA), else the CPU; the line names both
devices and gives a ratio only when they are of the same kind.
On a CPU the inputs are shrunk (batch, patch side) so that each measure stays
well under a minute on 2 cores; the line says which sizes were used. On a GPU
a bf16 measure is added (`model.dtype="bfloat16"`; torch autocast bf16). Every
line gives `gflop_per_s` (model FLOPs of one train step, XLA cost_analysis, per
second) and MFU = that over the chip's peak for the dtype run: a GPU's dense
peak (TF32 for f32, bf16 for bf16), a CPU's f32 FMA peak (`cpu_peak_flops`),
the basis named in `mfu_against`; `share_of_matmul`, the same over what one large
f32 matmul reaches on this chip in the same process (`matmul_flops`: a CPU's nominal
peak ignores its turbo clock); `parts`, where the step's time goes: the temporal encoder
and the U-Net each alone, forward and backward, ours against the twin's (`jax_parts`,
`torch_parts`, `part_records`; float32 lines), and the rest of the step; and, as every
benchmark line, the load at its start (`benchmarks.load`).
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.hybrid import get_config
from cropcontracts import cli
from cropcontracts.zonefolder import NO_LABEL
from jaxcrop import host_memory, losses, train
from jaxcrop.models import build_model
from jaxcrop.models.hybrid import UNet, encoder_module

from benchmarks import stamped, xla_flops
from benchmarks.torch_twin import torch_hybrid

K, T, C = 23, 12, 4
# Dense (no sparsity) peak FLOP/s per chip, by the arithmetic the model runs in, keyed by a
# part of `jax.devices()[0].device_kind` (the longest key contained wins: "H100 PCIe" before
# "H100", "TPU v5 lite" before "TPU v5"). "float32": JAX's default precision, which on NVIDIA
# GPUs runs f32 convolutions and matmuls on TF32 tensor cores (so does the PyTorch reference,
# `_torch_cuda_setup`) and on TPUs as one bf16 pass, so the bf16 peak applies there;
# "float32_highest": `jax_default_matmul_precision=highest`, plain FP32 (no TPU entry: MFU
# null). Vendors print the sparse figure first: these are half of it.
#   H100 SXM, H100 PCIe: NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100):
#     SXM BF16 1979 / TF32 989 TFLOP/s with sparsity, FP32 67; PCIe 1513 / 756, FP32 51.
#   H200, H200 NVL: NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): SXM as the H100
#     SXM; NVL BF16 1671 / TF32 835 with sparsity, FP32 60.
#   A100: NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): BF16 312, TF32 156 dense,
#     FP32 19.5 (SXM and PCIe alike).
#   L4: NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4): BF16 242 / TF32 120 with
#     sparsity, FP32 30.3.
#   TPU v4 275, v5e 197, v5p 459, v6e 918 TFLOP/s bf16 per chip: Cloud TPU system architecture
#     pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e). device_kind: "TPU v4",
#     "TPU v5 lite" (v5e), "TPU v5" or "TPU v5p" (v5p), "TPU v6 lite" (v6e).
_H100 = {"float32": 494.7e12, "bfloat16": 989.4e12, "float32_highest": 66.9e12}
PEAK_FLOPS = {"H100 PCIe": {"float32": 378e12, "bfloat16": 756e12, "float32_highest": 51.2e12},
              "H100": _H100, "H200": _H100,
              "H200 NVL": {"float32": 417.5e12, "bfloat16": 835.5e12, "float32_highest": 60e12},
              "A100": {"float32": 156e12, "bfloat16": 312e12, "float32_highest": 19.5e12},
              "L4": {"float32": 60e12, "bfloat16": 121e12, "float32_highest": 30.3e12},
              "TPU v4": {"float32": 275e12, "bfloat16": 275e12},
              "TPU v5 lite": {"float32": 197e12, "bfloat16": 197e12},
              "TPU v5e": {"float32": 197e12, "bfloat16": 197e12},
              "TPU v5": {"float32": 459e12, "bfloat16": 459e12},
              "TPU v6 lite": {"float32": 918e12, "bfloat16": 918e12},
              "TPU v6e": {"float32": 918e12, "bfloat16": 918e12}}


def _best_times(fns, repeats: int, steps: int) -> list[float]:
  """Best seconds per step of each callable, their repeats interleaved.

  Interleaving (a, b, a, b, …) gives both sides the same share of a noisy,
  shared machine, which timing one after the other does not.
  """
  for fn in fns:
    fn()                                       # warm-up: compilation, allocation
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      t0 = time.perf_counter()
      for _ in range(steps):
        fn()
      best[i] = min(best[i], (time.perf_counter() - t0) / steps)
  return best


def _best_time(fn, repeats: int, steps: int) -> float:
  return _best_times([fn], repeats, steps)[0]


def random_batch(batch: int, side: int, seed: int = 0) -> dict:
  """{image float32 [B, T, side, side, C], label int32 [B, side, side]}, drawn on the device
  (a large batch costs no host memory or transfer)."""
  ki, kl = jax.random.split(jax.random.key(seed))
  return {"image": jax.random.normal(ki, (batch, T, side, side, C), jnp.float32),
          "label": jax.random.randint(kl, (batch, side, side), 0, K, jnp.int32)}


def jax_step(config, batch: int, side: int):
  """(step callable, train-step FLOPs, compile seconds) for random data of the given sizes.

  The real step (`train.make_train_step`, state donated), compiled ahead of time: the
  callable runs that executable, so it compiles once and the compilation is timed alone.
  FLOPs: XLA's cost analysis of the compiled step (NaN where the backend gives none).
  """
  model = build_model(config.model, K)
  tx = train.make_optimizer(config.optimizer, 1000)
  state = train.init_state(model, tx, jnp.zeros((1, T, side, side, C)), 0)
  weights = losses.class_weights(np.ones(K), "none")
  data = random_batch(batch, side)
  t0 = time.perf_counter()
  step = jax.jit(train.make_train_step(model, tx, weights, 0.0, 0), donate_argnums=0)
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def run():
    holder["state"], m = compiled(holder["state"], data)
    jax.block_until_ready(m["loss"])
  return run, xla_flops(compiled), compile_s


PARTS = ("temporal_encoder", "unet")


def jax_parts(config, batch: int, side: int) -> dict:
  """{part: callable}: each of the model's two parts alone, forward and backward as in a
  train step (BatchNorm on the batch's statistics, dropout on), on random inputs of the
  step's sizes. `temporal_encoder`: the pixels' series [B·H·W, T, C] → features [B·H·W, D],
  its parameters' gradient; `unet`: the U-Net and its head on [B, H, W, D] → logits, the
  gradients of its parameters and of its input (which the step passes back to the
  encoder). Each backward starts from a random cotangent of its output's shape."""
  m = config.model
  enc = encoder_module(m.encoder, dict(m.temporal), m.attention, jnp.float32)
  unet = UNet(K, **dict(m.unet))
  k = jax.random.split(jax.random.key(0), 6)
  pixels = jax.random.normal(k[0], (batch * side * side, T, C), jnp.float32)
  enc_vars = enc.init({"params": k[1], "dropout": k[1]}, pixels, train=True)
  d = jax.eval_shape(lambda v, x: enc.apply(v, x, rngs={"dropout": k[1]}), enc_vars,
                     pixels).shape[-1]
  feats = jax.random.normal(k[2], (batch, side, side, d), jnp.float32)
  unet_vars = unet.init(k[3], feats, train=True)
  return {"temporal_encoder": _part_gradient(enc, enc_vars, pixels, (batch * side * side, d),
                                             k[4], argnums=0),
          "unet": _part_gradient(unet, unet_vars, feats, (batch, side, side, K), k[5],
                                 argnums=(0, 1))}


def _part_gradient(module, variables, x, out_shape, key, argnums):
  """A callable: the jitted gradient of ⟨module(x), g⟩ (g random [out_shape]) with respect to
  the parameters (argnums 0) and x (1), in training; blocks on the result."""
  g = jax.random.normal(key, out_shape, jnp.float32)

  @jax.jit
  def gradient(variables, x, g):
    def inner(params, x):
      y, _ = module.apply({**variables, "params": params}, x, train=True,
                          mutable=["batch_stats"], rngs={"dropout": key})
      return jnp.vdot(y.astype(jnp.float32), g)
    return jax.grad(inner, argnums=argnums)(variables["params"], x)
  return lambda: jax.block_until_ready(gradient(variables, x, g))


def torch_parts(config, batch: int, side: int, device: str = "cpu") -> dict:
  """`jax_parts` for the PyTorch twin (`encode`, `decode`), eager, in train mode; on CUDA each
  call ends with `torch.cuda.synchronize()`."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = torch_hybrid(config.model, K, C).to(device).train()
  n, d = batch * side * side, config.model.temporal.features
  pixels = torch.randn(n, C, T, device=device)
  g_enc = torch.randn(n, d, device=device)
  feats = torch.randn(batch, d, side, side, device=device, requires_grad=True)
  g_unet = torch.randn(batch, K, side, side, device=device)
  sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None

  def encoder():
    net.zero_grad(set_to_none=True)
    (net.encode(pixels) * g_enc).sum().backward()
    sync()

  def unet():
    net.zero_grad(set_to_none=True)
    feats.grad = None
    (net.decode(feats) * g_unet).sum().backward()
    sync()
  return {"temporal_encoder": encoder, "unet": unet}


def part_records(ours: dict, step_s: float, ref: dict | None = None,
                 ref_step_s: float | None = None) -> dict:
  """The `parts` field of a train line from seconds per call: {part: {ours_ms,
  reference_ms, ratio}} for each of `PARTS`, and `rest`, the step less its parts (the
  input's fold, the loss, the optimizer, and what running the parts together rather than
  apart changes). ratio = reference / ours (above 1: ours is faster), as the step's."""
  out = {}
  for part in PARTS + ("rest",):
    o = step_s - sum(ours.values()) if part == "rest" else ours[part]
    rec = {"ours_ms": 1e3 * o}
    if ref is not None:
      r = ref_step_s - sum(ref.values()) if part == "rest" else ref[part]
      rec.update(reference_ms=1e3 * r, ratio=r / o if o > 0 else None)
    out[part] = rec
  return out


def measure_parts(config, batch: int, side: int, step_s: float, ref_step_s: float | None,
                  ref_device: str | None, repeats: int, steps: int) -> dict:
  """`part_records` of the parts timed here, ours and (with `ref_device`) the twin's, their
  repeats interleaved."""
  fns = jax_parts(config, batch, side)
  ref_fns = torch_parts(config, batch, side, ref_device) if ref_device else None
  sides = [fns] + ([ref_fns] if ref_fns else [])
  times = _best_times([side[p] for p in PARTS for side in sides], repeats, steps)
  ours, *ref = (dict(zip(PARTS, times[i::len(sides)])) for i in range(len(sides)))
  return part_records(ours, step_s, ref[0] if ref else None, ref_step_s)


def torch_device(jax_backend: str, cuda_available: bool) -> str:
  """The PyTorch reference's device, of the same kind as JAX's where torch has one.

  "cuda" when JAX runs on a GPU (`jax.default_backend() == "gpu"`, CUDA or ROCm) and torch
  sees one (`torch.cuda.is_available()`, also true for ROCm builds), else "cpu".
  """
  return "cuda" if jax_backend == "gpu" and cuda_available else "cpu"


def same_kind(jax_backend: str, device: str) -> bool:
  """Whether JAX's backend and the torch device are the same kind of chip (a fair ratio)."""
  return {"gpu": "cuda", "cpu": "cpu"}.get(jax_backend) == device


def _torch_cuda_setup(torch) -> None:
  """The arithmetic of XLA's GPU defaults: TF32 for f32 matmuls and convolutions.

  JAX's default precision runs f32 dots and convolutions on TF32 tensor cores; PyTorch does so
  for convolutions only unless told. cuDNN autotuning on, as XLA autotunes its convolutions.
  """
  torch.backends.cuda.matmul.fp32_precision = "tf32"
  torch.backends.cudnn.conv.fp32_precision = "tf32"
  torch.backends.cudnn.benchmark = True


def torch_step(config, batch: int, side: int, device: str = "cpu", compile: bool = False):
  """One PyTorch train step of the twin on `device`, as a callable returning the loss.

  Eager, or with `compile` the model under `torch.compile` (forward and backward; the first
  call compiles). Same loss, AdamW and clipping as the JAX step. `config.model.dtype="bfloat16"`: forward and
  loss under `torch.autocast(bf16)` (parameters and gradients f32, as in JAX). On CUDA each
  call ends with `torch.cuda.synchronize()`, as the JAX callable blocks on its result, so the
  timings measure the work and not its launch.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = torch_hybrid(config.model, K, C).to(device)
  opt = torch.optim.AdamW(net.parameters(), lr=config.optimizer.lr,
                          weight_decay=config.optimizer.weight_decay)
  model = torch.compile(net) if compile else net
  x = torch.randn(batch, T, side, side, C, device=device)
  y = torch.randint(0, K, (batch, side, side), device=device)
  loss_fn = torch.nn.CrossEntropyLoss(ignore_index=NO_LABEL)
  bf16 = config.model.get("dtype", "float32") == "bfloat16"
  kind = torch.device(device).type

  def run():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(model(x), y)
    loss.backward()                           # outside autocast, as torch recommends
    torch.nn.utils.clip_grad_norm_(net.parameters(), config.optimizer.clip_norm)
    opt.step()
    if kind == "cuda":
      torch.cuda.synchronize()
    return loss.detach()
  return run


def peak_flops(device_kind: str, dtype: str, precision: str | None = None):
  """(peak FLOP/s, what it is) of a chip for a run in `dtype`, or None if not in the table.

  precision: `jax_default_matmul_precision` ("highest"/"float32": plain FP32 for float32).
  """
  keys = [k for k in PEAK_FLOPS if k.lower() in device_kind.lower()]
  if not keys:
    return None
  kind = max(keys, key=len)
  highest = dtype == "float32" and str(precision).lower() in ("highest", "float32")
  column = "float32_highest" if highest else dtype
  if column not in PEAK_FLOPS[kind]:
    return None
  arith = ("FP32" if highest else "TF32 tensor-core" if dtype == "float32"
           and "TPU" not in kind else "bf16")
  return PEAK_FLOPS[kind][column], f"dense {arith} peak of {kind}, for a {dtype} run"


def cpu_peak_flops(cpus: int, cpuinfo: str):
  """(float32 peak FLOP/s, what it is) of `cpus` cores of the CPU /proc/cpuinfo describes, or
  None where it names no clock: cores x nominal clock ("cpu MHz", the TSC's under a hypervisor:
  no turbo) x FLOP per cycle of the widest FMA it flags: AVX-512 64 (16 lanes x 2 for the FMA
  x 2 FMA units, as on Xeon Scalable), AVX2 + FMA 32 (8 x 2 x 2), else SSE 8."""
  mhz = next((float(l.split(":")[1]) for l in cpuinfo.splitlines()
              if l.startswith("cpu MHz")), None)
  if not mhz:
    return None
  flags = set(next((l.split(":")[1] for l in cpuinfo.splitlines()
                    if l.startswith("flags")), "").split())
  isa, per_cycle = (("AVX-512", 64) if "avx512f" in flags else
                    ("AVX2+FMA", 32) if {"avx2", "fma"} <= flags else ("SSE", 8))
  return (cpus * mhz * 1e6 * per_cycle,
          f"{cpus} cores x {mhz / 1e3:.2f} GHz x {per_cycle} f32 FLOP/cycle ({isa}, 2 FMA units)")


def _cpu_peak():
  """`cpu_peak_flops` of this machine's usable cores, None where /proc/cpuinfo is absent."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      info = f.read()
  except OSError:
    return None
  return cpu_peak_flops(len(os.sched_getaffinity(0)), info)


def matmul_precision() -> str | None:
  """`jax_default_matmul_precision` (None: the default), read without relying on the
  jax version's config attributes."""
  return getattr(jax.config, "jax_default_matmul_precision", None)


def matmul_flops(n: int, repeats: int = 5) -> float:
  """FLOP/s of one jitted float32 [n, n] @ [n, n] on JAX's default device, best of `repeats`.

  A roofline measured in the same process as the step: what XLA's own matmul reaches on this
  chip now. On a CPU it exceeds the nominal peak whenever the cores run above their base
  clock (`cpu_peak_flops` reads the TSC's, no turbo: 2 cores x 2.1 GHz x 64 = 269 GFLOP/s,
  against 399-409 measured for n = 1024-2048 on this project's machine, 2026-12-07), so
  `share_of_matmul` is the train line's share of what this chip does reach, and `mfu` of a
  datasheet figure.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  product = jax.jit(lambda m: m @ m).lower(a).compile()
  jax.block_until_ready(product(a))
  return 2 * n ** 3 / _best_time(lambda: jax.block_until_ready(product(a)), repeats, 1)


def mfu(flops_per_step: float, seconds_per_step: float, peak: float) -> float:
  """Model FLOP utilization: achieved FLOP/s over the peak."""
  return flops_per_step / seconds_per_step / peak


def compare(ours_s: float, ref_s: float | None, pixels: int, jax_backend: str,
            ref_device: str | None) -> dict:
  """The reference fields of a line; a ratio only when both ran on the same kind of chip."""
  if ref_s is None:
    return {"reference": "torch unavailable (pip install -r requirements-bench.txt)"}
  rec = {"reference": f"PyTorch eager, same architecture, on {ref_device}, repeats interleaved",
         "reference_steps_per_s": 1 / ref_s, "reference_pixels_per_s": pixels / ref_s}
  if same_kind(jax_backend, ref_device):
    rec["ratio"] = ref_s / ours_s
  else:
    rec["ratio_note"] = (f"no ratio: JAX on {jax_backend}, PyTorch on {ref_device} "
                         f"(torch has no device of that kind here)")
  return rec


def _torch_reference(backend: str):
  """(torch or None, its device, its name): the reference of the same kind as JAX's chip."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, None, None
  ref_device = torch_device(backend, torch.cuda.is_available())
  if ref_device == "cuda":
    _torch_cuda_setup(torch)
    return torch, ref_device, f"cuda ({torch.cuda.get_device_name()})"
  torch.set_num_threads(os.cpu_count() or 1)
  return torch, ref_device, "cpu"


def _runs(backend: str, tiny: bool):
  """[(variant, dtype, batch, side, steps, repeats)] of `measures`."""
  if tiny:                                    # tests: seconds on a CPU
    return [("tiny", "float32", 2, 16, 1, 1)]
  on_cpu = backend == "cpu"
  steps, repeats = (5, 5) if on_cpu else (20, 3)   # 2 shared cores are noisy: best of 5
  runs = []
  for variant, dtype in [("", "float32"), ("demo", "float32")] + (
      [("", "bfloat16")] if backend == "gpu" else []):     # tensor cores at their bf16 rate
    batch, side = get_config(variant).data.batch_size, 64
    if on_cpu:   # 2-core budget: keep each measure < 60 s
      batch, side = (4, 32) if variant == "" else (4, 64)
    runs.append((variant, dtype, batch, side, steps, repeats))
  return runs


def measures(tiny: bool = False):
  """Yields one dict per (config variant, dtype): JAX vs PyTorch train-step throughput.

  tiny: the `tiny` config on batch 2 of 16 px, one step (the tests)."""
  device = jax.devices()[0]
  backend = jax.default_backend()
  on_cpu = backend == "cpu"
  kind = getattr(device, "device_kind", device.platform)
  torch, ref_device, ref_name = _torch_reference(backend)
  matmul = matmul_flops(64 if tiny else 2048 if on_cpu else 8192)
  for variant, dtype, batch, side, steps, repeats in _runs(backend, tiny):
    config = get_config(variant)
    config.model.dtype = dtype
    run, flops, _ = jax_step(config, batch, side)
    if torch is not None:
      ours, ref = _best_times([run, torch_step(config, batch, side, ref_device)], repeats, steps)
    else:
      ours, ref = _best_time(run, repeats, steps), None
    parts = None
    if dtype == "float32":                    # where the step's time goes, part by part
      fair = ref is not None and same_kind(backend, ref_device)
      parts = measure_parts(config, batch, side, ours, ref if fair else None,
                            ref_device if fair else None, repeats, steps)
    pixels = batch * side * side
    name = f"train_step_{variant or 'default'}" + ("_bf16" if dtype == "bfloat16" else "")
    rec = {"name": name, "device": kind,
           "ours_device": "cpu" if on_cpu else f"{backend} ({kind})", "dtype": dtype,
           "batch": batch, "patch": side, "months": T,
           "ours_steps_per_s": 1 / ours, "ours_pixels_per_s": pixels / ours,
           "train_step_gflops": flops / 1e9, "gflop_per_s": flops / ours / 1e9}
    if (batch, side) != (config.data.batch_size, 64):
      rec["note"] = (f"shrunk for a {'tiny' if tiny else 'CPU'} run: batch {batch} "
                     f"(config {config.data.batch_size}), patch {side}")
    peak = _cpu_peak() if on_cpu else peak_flops(kind, dtype, matmul_precision())
    if peak:
      rec.update(mfu=mfu(flops, ours, peak[0]), peak_flops=peak[0], mfu_against=peak[1])
    rec.update(matmul_gflop_per_s=matmul / 1e9, share_of_matmul=flops / ours / matmul)
    rec.update(compare(ours, ref, pixels, backend, ref_device))
    if ref_name:
      rec["reference_device"] = ref_name
    if parts:
      rec["parts"] = parts
    yield rec


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
  ap.add_argument("--tiny", action="store_true",
                  help="the tiny config, batch 2 of 16 px, one step: seconds (tests)")
  return cli.main(ap, host_memory.first(_run), argv)   # as the train command runs


def _run(args) -> int:
  for m in stamped(measures(tiny=args.tiny)):
    print(json.dumps(m), flush=True)
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  raise SystemExit(main())
