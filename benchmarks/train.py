"""Training throughput: the jitted JAX train step vs the same architecture in PyTorch.

  python -m benchmarks train            # one JSON line per measure

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
a bf16 measure is added (`model.dtype="bfloat16"`; torch autocast bf16) and
the lines add MFU = model FLOPs of one train step (XLA cost_analysis) per
second / the chip's dense peak for the dtype run (TF32 for f32, bf16 for
bf16), the basis named in `mfu_against`.
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.hybrid import get_config
from cropcontracts.zonefolder import NO_LABEL
from jaxcrop import losses, train
from jaxcrop.models import build_model

from benchmarks.torch_twin import torch_hybrid

K, T, C = 23, 12, 4
# Dense (no sparsity) peak FLOP/s per chip, by the dtype the model is run in. On NVIDIA GPUs
# float32 means TF32 tensor cores: JAX's default precision runs f32 convolutions and matmuls on
# them (and so does the PyTorch reference, `_torch_cuda_setup`). On TPUs it runs them as one
# bf16 pass, so the bf16 peak applies to both.
PEAK_FLOPS = {"H100 PCIe": {"float32": 378e12, "bfloat16": 756e12},
              "H100": {"float32": 495e12, "bfloat16": 989e12},
              "H200": {"float32": 495e12, "bfloat16": 989e12},
              "A100": {"float32": 156e12, "bfloat16": 312e12},
              "L4": {"float32": 60e12, "bfloat16": 121e12},
              "TPU v4": {"float32": 275e12, "bfloat16": 275e12},
              "TPU v5 lite": {"float32": 197e12, "bfloat16": 197e12},
              "TPU v5e": {"float32": 197e12, "bfloat16": 197e12},
              "TPU v5p": {"float32": 459e12, "bfloat16": 459e12}}


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


def jax_step(config, batch: int, side: int):
  """(step callable, train-step FLOPs) for random data of the given sizes."""
  model = build_model(config.model, K)
  tx = train.make_optimizer(config.optimizer, 1000)
  sample = jnp.zeros((1, T, side, side, C))
  state = train.init_state(model, tx, sample, 0)
  weights = losses.class_weights(np.ones(K), "none")
  step = jax.jit(train.make_train_step(model, tx, weights, 0.0, 0), donate_argnums=0)
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.normal(size=(batch, T, side, side, C)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, K, (batch, side, side)), jnp.int32)}
  cost = step.lower(state, data).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def run():
    holder["state"], m = step(holder["state"], data)
    jax.block_until_ready(m["loss"])
  return run, float((cost or {}).get("flops", float("nan")))


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


def torch_step(config, batch: int, side: int, device: str = "cpu"):
  """One eager PyTorch train step of the twin on `device`, as a callable returning the loss.

  Same loss, AdamW and clipping as the JAX step. `config.model.dtype="bfloat16"`: forward and
  loss under `torch.autocast(bf16)` (parameters and gradients f32, as in JAX). On CUDA each
  call ends with `torch.cuda.synchronize()`, as the JAX callable blocks on its result, so the
  timings measure the work and not its launch.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torch_hybrid(config.model, K, C).to(device)
  opt = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                          weight_decay=config.optimizer.weight_decay)
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
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.clip_norm)
    opt.step()
    if kind == "cuda":
      torch.cuda.synchronize()
    return loss.detach()
  return run


def peak_flops(device_kind: str, dtype: str):
  """(peak FLOP/s, what it is) of a chip for a run in `dtype`, or None if not in the table."""
  kind = next((k for k in PEAK_FLOPS if k.lower() in device_kind.lower()), None)
  if kind is None or dtype not in PEAK_FLOPS[kind]:
    return None
  arith = "TF32 tensor-core" if dtype == "float32" and "TPU" not in kind else "bf16"
  return PEAK_FLOPS[kind][dtype], f"dense {arith} peak of {kind}, for a {dtype} run"


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


def measures():
  """Yields one dict per (config variant, dtype): JAX vs PyTorch train-step throughput."""
  device = jax.devices()[0]
  backend = jax.default_backend()
  on_cpu = backend == "cpu"
  kind = getattr(device, "device_kind", device.platform)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    ref_device = torch_device(backend, torch.cuda.is_available())
    if ref_device == "cuda":
      _torch_cuda_setup(torch)
      ref_name = f"cuda ({torch.cuda.get_device_name()})"
    else:
      torch.set_num_threads(os.cpu_count() or 1)
      ref_name = "cpu"
  except ImportError:
    torch = ref_device = ref_name = None
  runs = [("", "float32"), ("demo", "float32")]
  if backend == "gpu":
    runs.append(("", "bfloat16"))          # tensor cores at their bf16 rate
  for variant, dtype in runs:
    config = get_config(variant)
    config.model.dtype = dtype
    batch, side = config.data.batch_size, 64
    if on_cpu:   # 2-core budget: keep each measure < 60 s
      batch, side = (4, 32) if variant == "" else (4, 64)
    steps, repeats = (5, 5) if on_cpu else (20, 3)   # 2 shared cores are noisy: best of 5
    run, flops = jax_step(config, batch, side)
    if torch is not None:
      ours, ref = _best_times([run, torch_step(config, batch, side, ref_device)], repeats, steps)
    else:
      ours, ref = _best_time(run, repeats, steps), None
    pixels = batch * side * side
    name = f"train_step_{variant or 'default'}" + ("_bf16" if dtype == "bfloat16" else "")
    rec = {"name": name, "device": kind,
           "ours_device": "cpu" if on_cpu else f"{backend} ({kind})", "dtype": dtype,
           "batch": batch, "patch": side, "months": T,
           "ours_steps_per_s": 1 / ours, "ours_pixels_per_s": pixels / ours,
           "train_step_gflops": flops / 1e9}
    if on_cpu and (batch, side) != (config.data.batch_size, 64):
      rec["note"] = (f"shrunk for a CPU run: batch {batch} (config {config.data.batch_size}), "
                     f"patch {side}")
    peak = None if on_cpu else peak_flops(kind, dtype)
    if peak:
      rec.update(mfu=mfu(flops, ours, peak[0]), peak_flops=peak[0], mfu_against=peak[1])
    rec.update(compare(ours, ref, pixels, backend, ref_device))
    if ref_name:
      rec["reference_device"] = ref_name
    yield rec


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for m in measures():
    print(json.dumps(m), flush=True)
