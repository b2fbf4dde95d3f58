"""Training throughput: the jitted JAX train step vs the same architecture in PyTorch.

  python -m jaxcrop.bench_train            # one JSON line per measure

Random inputs (throughput does not depend on the values), the real train step
(`train.make_train_step`: loss, AdamW, clipping) and, as the reference, the
identical network in eager PyTorch (`torch_hybrid`: the same layers, widths,
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
from jaxcrop import losses, train
from jaxcrop.models import build_model, head_kind

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


TEMPORAL_OPTIONS = {"features", "layers", "kernel_size", "norm", "dropout", "pooling", "impl"}
UNET_OPTIONS = {"widths", "norm", "up"}
CHOICES = {"norm": ("batch", "layer", "group", "none"),
           "pooling": ("max", "mean", "attention", "flatten"), "up": ("transpose", "resize")}


def check_torch_supported(cfg_model) -> None:
  """ValueError unless `torch_hybrid` builds exactly the Flax network of `cfg_model`.

  Every option of `config.model.temporal` / `.unet` must be one the twin knows, with a value
  it implements: an option it ignored would time a different network.
  """
  for part, known in (("temporal", TEMPORAL_OPTIONS), ("unet", UNET_OPTIONS)):
    cfg = cfg_model[part]
    unknown = set(cfg) - known
    if unknown:
      raise ValueError(f"torch reference: model.{part} option(s) {sorted(unknown)} not "
                       f"implemented in bench_train.torch_hybrid; add them there first")
    for key, allowed in CHOICES.items():
      if key in cfg and cfg[key] not in allowed:
        raise ValueError(f"torch reference: model.{part}.{key}={cfg[key]!r} not implemented; "
                         f"expected one of {', '.join(allowed)}")
  chosen = {"encoder": cfg_model.get("encoder", "cnn"), "head.kind": head_kind(cfg_model),
            "valid_count": cfg_model.get("valid_count", "none")}
  for key, value in chosen.items():
    if value != {"encoder": "cnn", "head.kind": "flat", "valid_count": "none"}[key]:
      raise ValueError(f"torch reference: model.{key}={value!r} not implemented in "
                       f"bench_train.torch_hybrid (the 1D CNN, flat head, no valid counts)")


def torch_hybrid(cfg_model, num_classes: int, bands: int, months: int = T):
  """`models.hybrid.HybridModel` in PyTorch: x [B, T, H, W, C] → logits [B, K, H, W].

  The same network, layer for layer: widths, kernel sizes, SAME paddings, biases (none before
  BatchNorm), norms with Flax's eps (batch 1e-5, momentum 0.1 = Flax's 0.9; layer and group
  1e-6; layer norm over channels only, group norm with 8 groups or 1), pooling max | mean |
  attention | flatten, up-path transpose (2×2 stride 2) | resize (bilinear ×2, half-pixel
  centres, then 3×3 conv), skip concatenation [up, skip]. Options it does not implement raise
  (`check_torch_supported`). `impl` and `dtype` do not change the network. Left different, as
  they change neither eval outputs nor the cost of a step: dropout masks (torch's RNG, not the
  hash) and the running variance (unbiased in torch, biased in Flax).
  `load_flax_variables` copies a Flax model's variables in (outputs tested equal).
  """
  check_torch_supported(cfg_model)
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  tcfg, ucfg = cfg_model.temporal, cfg_model.unet

  class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over dim 1 (channels) of [N, C, *], as Flax's over the last axis."""
    def forward(self, x):
      return super().forward(x.movedim(1, -1)).movedim(-1, 1)

  def norm(kind, ch, dims):
    if kind == "batch":
      return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(ch, eps=1e-5, momentum=0.1)
    if kind == "layer":
      return ChannelLayerNorm(ch, eps=1e-6)
    if kind == "group":
      return nn.GroupNorm(8 if ch % 8 == 0 else 1, ch, eps=1e-6)
    return nn.Identity()

  def block(cin, cout):
    layers = []
    for i in range(2):
      layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1,
                           bias=ucfg.norm != "batch"), norm(ucfg.norm, cout, 2), nn.ReLU()]
    return nn.Sequential(*layers)

  def up(cin, cout):
    if ucfg.get("up", "transpose") == "transpose":
      return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(cin, cout, 3, padding=1))

  class TorchHybrid(nn.Module):
    def __init__(self):
      super().__init__()
      d, cin = tcfg.features, bands
      self.temporal = nn.ModuleList()
      for _ in range(tcfg.layers):
        self.temporal.append(nn.Sequential(
            nn.Conv1d(cin, d, tcfg.kernel_size, padding="same", bias=tcfg.norm != "batch"),
            norm(tcfg.norm, d, 1), nn.ReLU(), nn.Dropout(tcfg.dropout)))
        cin = d
      self.score = nn.Linear(d, 1) if tcfg.pooling == "attention" else None
      self.flat = nn.Linear(months * d, d) if tcfg.pooling == "flatten" else None
      widths = list(ucfg.widths)
      self.down = nn.ModuleList(block(a, b) for a, b in zip([d] + widths[:-1], widths))
      self.up = nn.ModuleList(up(b, a) for a, b in zip(widths[:-1], widths[1:]))
      self.up_blocks = nn.ModuleList(block(2 * a, a) for a in widths[:-1])
      self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):                                    # [B, T, H, W, C]
      b, t, h, w, c = x.shape
      z = x.permute(0, 2, 3, 4, 1).reshape(b * h * w, c, t)  # [BHW, C, T]
      for layer in self.temporal:
        z = layer(z)                                         # [BHW, D, T]
      if tcfg.pooling == "max":
        z = z.amax(-1)
      elif tcfg.pooling == "mean":
        z = z.mean(-1)
      elif tcfg.pooling == "flatten":                        # month-major, as in JAX
        z = torch.relu(self.flat(z.transpose(1, 2).reshape(b * h * w, -1)))
      else:                                                  # softmax in f32, as in JAX
        zt = z.transpose(1, 2)                               # [BHW, T, D]
        a = torch.softmax(self.score(zt).float(), dim=1).to(zt.dtype)       # [BHW, T, 1]
        z = (zt * a).sum(1)
      z = z.reshape(b, h, w, -1).permute(0, 3, 1, 2)
      skips = []
      for i, blk in enumerate(self.down):
        z = blk(z)
        if i < len(self.down) - 1:
          skips.append(z)
          z = nn.functional.max_pool2d(z, 2)
      for upc, blk, skip in zip(reversed(self.up), reversed(self.up_blocks), reversed(skips)):
        z = blk(torch.cat([upc(z), skip], 1))
      return self.head(z)                                    # [B, K, H, W]

  return TorchHybrid()


def load_flax_variables(twin, variables) -> None:
  """Copies a Flax `HybridModel`'s variables into its `torch_hybrid` twin, in place.

  Args:
    twin: `torch_hybrid(cfg_model, K, C, T)`, the same `cfg_model` as the Flax model.
    variables: `{"params": …, "batch_stats": …}` of that Flax model (either impl).
  Layouts: Conv kernel [*k, Cin, Cout] → weight [Cout, Cin, *k] (both cross-correlate);
  Dense [in, out] → Linear weight [out, in]; `UpConv2x2` kernel [2, 2, Cin, Cout], applied
  flipped (output (a, b) of a 2×2 block = x @ kernel[1-a, 1-b]) → ConvTranspose2d weight
  [Cin, Cout, 2, 2] = kernel[::-1, ::-1] with the axes moved; norm scale, bias → weight, bias;
  BatchNorm mean, var → running_mean, running_var. Flax names: temporal Conv_i, <Norm>_i,
  Dense_0; unet ConvBlock_0..L-1 down and L..2L-2 up (deepest first), ConvTranspose_l or the
  resize convs Conv_l (l = 0 deepest), then the head conv.
  Raises ValueError when a Flax variable is left unused or a torch parameter unwritten: then
  the two are not the same network.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(variables), sep="/").items()}
  written = set()

  def put(tensor, value):
    with torch.no_grad():
      tensor.copy_(torch.from_numpy(np.array(value, np.float32)))   # a writable copy
    written.add(id(tensor))

  def take(path):
    if path not in flat:
      raise ValueError(f"Flax variables have no {path}: not the twin's network")
    return flat.pop(path)

  def conv(mod, name, flip=False):
    k = take(f"params/{name}/kernel")
    if flip:                                           # UpConv2x2 → ConvTranspose2d
      put(mod.weight, k[::-1, ::-1].transpose(2, 3, 0, 1))
    else:
      put(mod.weight, np.moveaxis(k, (-1, -2), (0, 1)))
    if mod.bias is not None:
      put(mod.bias, take(f"params/{name}/bias"))

  def norm(mod, scope, i):
    kind = next((n for cls, n in ((torch.nn.BatchNorm1d, "BatchNorm"), (torch.nn.BatchNorm2d,
                 "BatchNorm"), (torch.nn.LayerNorm, "LayerNorm"), (torch.nn.GroupNorm,
                 "GroupNorm")) if isinstance(mod, cls)), None)
    if kind is None:                                   # Identity: norm "none"
      return
    name = f"{scope}/{kind}_{i}"
    put(mod.weight, take(f"params/{name}/scale"))
    put(mod.bias, take(f"params/{name}/bias"))
    if kind == "BatchNorm":
      put(mod.running_mean, take(f"batch_stats/{name}/mean"))
      put(mod.running_var, take(f"batch_stats/{name}/var"))

  def block(seq, name):
    for j, (c, n) in enumerate(((seq[0], seq[1]), (seq[3], seq[4]))):
      conv(c, f"{name}/Conv_{j}")
      norm(n, name, j)

  for i, layer in enumerate(twin.temporal):
    conv(layer[0], f"temporal/Conv_{i}")
    norm(layer[1], "temporal", i)
  dense = twin.score if twin.score is not None else twin.flat
  if dense is not None:
    put(dense.weight, take("params/temporal/Dense_0/kernel").T)
    put(dense.bias, take("params/temporal/Dense_0/bias"))
  levels = len(twin.down)
  for i, blk in enumerate(twin.down):
    block(blk, f"unet/ConvBlock_{i}")
  for i, (upc, blk) in enumerate(zip(twin.up, twin.up_blocks)):
    level = levels - 2 - i
    if isinstance(upc, torch.nn.ConvTranspose2d):
      conv(upc, f"unet/ConvTranspose_{level}", flip=True)
    else:
      conv(upc[1], f"unet/Conv_{level}")
    block(blk, f"unet/ConvBlock_{levels + level}")
  resize = any(not isinstance(u, torch.nn.ConvTranspose2d) for u in twin.up)
  conv(twin.head, f"unet/Conv_{levels - 1 if resize else 0}")
  unwritten = [n for n, p in twin.named_parameters() if id(p) not in written]
  if flat or unwritten:
    raise ValueError(f"not the same network: Flax variables unused {sorted(flat)}, "
                     f"torch parameters unwritten {unwritten}")


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
  loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
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
