"""Training throughput: the jitted JAX train step vs the same architecture in PyTorch.

  python -m jaxcrop.bench_train            # one JSON line per measure

Random inputs (throughput does not depend on the values), the real train step
(`train.make_train_step`: loss, AdamW, clipping) and, as the reference, the
identical network in eager PyTorch (`TorchHybrid` below: same layers, widths,
kernel sizes and loss) run in the same process. Best of a few repeats.
On a CPU the inputs are shrunk (batch, patch side) so that each measure stays
well under a minute on 2 cores; the line says which sizes were used. On a GPU
the line adds MFU = model FLOPs of one train step (XLA cost_analysis) per
second / the device's peak (dense bf16 tensor-core peak; f32 runs therefore
show a low MFU by construction).
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
from jaxcrop.models import build_model

K, T, C = 23, 12, 4
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12}


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


def torch_hybrid(cfg_model, num_classes: int, bands: int, months: int = T):
  """The hybrid model in PyTorch (norm batch|group|none), for the reference timing."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  tcfg, ucfg = cfg_model.temporal, cfg_model.unet

  def norm(kind, ch, dims):
    if kind == "batch":
      return nn.BatchNorm1d(ch, momentum=0.1) if dims == 1 else nn.BatchNorm2d(ch, momentum=0.1)
    if kind == "group":
      return nn.GroupNorm(8 if ch % 8 == 0 else 1, ch)
    if kind == "none":
      return nn.Identity()
    raise NotImplementedError(f"torch reference: norm {kind!r} not written")

  def block(cin, cout):
    layers = []
    for i in range(2):
      layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1,
                           bias=ucfg.norm != "batch"), norm(ucfg.norm, cout, 2), nn.ReLU()]
    return nn.Sequential(*layers)

  class TorchHybrid(nn.Module):
    def __init__(self):
      super().__init__()
      d, layers, cin = tcfg.features, [], bands
      for _ in range(tcfg.layers):
        layers += [nn.Conv1d(cin, d, tcfg.kernel_size, padding="same", bias=tcfg.norm != "batch"),
                   norm(tcfg.norm, d, 1), nn.ReLU(), nn.Dropout(tcfg.dropout)]
        cin = d
      self.temporal = nn.Sequential(*layers)
      self.score = nn.Linear(d, 1) if tcfg.pooling == "attention" else None
      self.flat = nn.Linear(months * d, d) if tcfg.pooling == "flatten" else None
      widths = list(ucfg.widths)
      self.down = nn.ModuleList(block(a, b) for a, b in zip([d] + widths[:-1], widths))
      self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2)
                              for a, b in zip(widths[:-1], widths[1:]))
      self.up_blocks = nn.ModuleList(block(2 * a, a) for a in widths[:-1])
      self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):                                    # [B, T, H, W, C]
      b, t, h, w, c = x.shape
      z = self.temporal(x.permute(0, 2, 3, 4, 1).reshape(b * h * w, c, t))  # [BHW, D, T]
      if tcfg.pooling == "max":
        z = z.amax(-1)
      elif tcfg.pooling == "mean":
        z = z.mean(-1)
      elif tcfg.pooling == "flatten":                        # month-major, as in JAX
        z = torch.relu(self.flat(z.transpose(1, 2).reshape(b * h * w, -1)))
      else:
        a = torch.softmax(self.score(z.transpose(1, 2)), dim=1)            # [BHW, T, 1]
        z = (z.transpose(1, 2) * a).sum(1)
      z = z.reshape(b, h, w, -1).permute(0, 3, 1, 2)
      skips = []
      for i, blk in enumerate(self.down):
        z = blk(z)
        if i < len(self.down) - 1:
          skips.append(z)
          z = nn.functional.max_pool2d(z, 2)
      for up, blk, skip in zip(reversed(self.up), reversed(self.up_blocks), reversed(skips)):
        z = blk(torch.cat([up(z), skip], 1))
      return self.head(z)                                    # [B, K, H, W]

  return TorchHybrid()


def torch_step(config, batch: int, side: int):
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torch_hybrid(config.model, K, C)
  opt = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                          weight_decay=config.optimizer.weight_decay)
  x = torch.randn(batch, T, side, side, C)
  y = torch.randint(0, K, (batch, side, side))
  loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

  def run():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.clip_norm)
    opt.step()
  return run


def _peak(device) -> float | None:
  kind = getattr(device, "device_kind", "")
  return next((v for k, v in PEAK_FLOPS.items() if k.lower() in kind.lower()), None)


def measures():
  """Yields one dict per (config variant): JAX vs PyTorch train-step throughput."""
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  for variant in ("", "demo"):
    config = get_config(variant)
    batch, side = config.data.batch_size, 64
    if on_cpu:   # 2-core budget: keep each measure < 60 s
      batch, side = (4, 32) if variant == "" else (4, 64)
    steps, repeats = (5, 5) if on_cpu else (20, 3)   # 2 shared cores are noisy: best of 5
    run, flops = jax_step(config, batch, side)
    try:
      import torch  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(os.cpu_count() or 1)
      ours, ref = _best_times([run, torch_step(config, batch, side)], repeats, steps)
    except ImportError:
      ref = None
      ours = _best_time(run, repeats, steps)
    pixels = batch * side * side
    rec = {"name": f"train_step{'_' + variant if variant else '_default'}",
           "device": getattr(device, "device_kind", device.platform),
           "batch": batch, "patch": side, "months": T,
           "ours_steps_per_s": 1 / ours, "ours_pixels_per_s": pixels / ours,
           "train_step_gflops": flops / 1e9}
    if on_cpu and (batch, side) != (config.data.batch_size, 64):
      rec["note"] = (f"shrunk for a CPU run: batch {batch} (config {config.data.batch_size}), "
                     f"patch {side}")
    peak = None if on_cpu else _peak(device)
    if peak:
      rec["mfu"] = flops / ours / peak
      rec["peak_flops"] = peak
    if ref is not None:
      rec.update(reference="PyTorch eager, same architecture (CPU), repeats interleaved",
                 reference_steps_per_s=1 / ref, reference_pixels_per_s=pixels / ref,
                 ratio=ref / ours)
    else:
      rec["reference"] = "torch unavailable (pip install -r requirements-bench.txt)"
    yield rec


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for m in measures():
    print(json.dumps(m), flush=True)
