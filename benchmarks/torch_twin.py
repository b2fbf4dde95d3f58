"""The hybrid network in PyTorch, layer for layer: the reference of `benchmarks.train`.

`torch_hybrid(cfg_model, K, C, T)` builds the twin of `jaxcrop.models.hybrid.HybridModel`
for a `config.model`; `load_flax_variables` copies a Flax model's variables into it (the
outputs are tested equal in tests/test_benchmarks_train.py); `check_torch_supported` refuses
an option the twin does not implement, so that a benchmark never times another network.
torch is imported inside the functions: this module imports without it.
"""
from __future__ import annotations

import numpy as np

T = 12   # months of the default dataset

TEMPORAL_OPTIONS = {"features", "layers", "kernel_size", "norm", "dropout", "pooling"}
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
                       f"implemented in benchmarks.torch_twin.torch_hybrid; add them there first")
    for key, allowed in CHOICES.items():
      if key in cfg and cfg[key] not in allowed:
        raise ValueError(f"torch reference: model.{part}.{key}={cfg[key]!r} not implemented; "
                         f"expected one of {', '.join(allowed)}")
  from jaxcrop.models import head_kind  # pylint: disable=g-import-not-at-top
  chosen = {"encoder": cfg_model.get("encoder", "cnn"), "head.kind": head_kind(cfg_model),
            "valid_count": cfg_model.get("valid_count", "none")}
  for key, value in chosen.items():
    if value != {"encoder": "cnn", "head.kind": "flat", "valid_count": "none"}[key]:
      raise ValueError(f"torch reference: model.{key}={value!r} not implemented in "
                       f"benchmarks.torch_twin.torch_hybrid (the 1D CNN, flat head, no valid "
                       f"counts)")


def torch_hybrid(cfg_model, num_classes: int, bands: int, months: int = T):
  """`models.hybrid.HybridModel` in PyTorch: x [B, T, H, W, C] → logits [B, K, H, W].

  The same network, layer for layer: widths, kernel sizes, SAME paddings, biases (none before
  BatchNorm), norms with Flax's eps (batch 1e-5, momentum 0.1 = Flax's 0.9; layer and group
  1e-6; layer norm over channels only, group norm with 8 groups or 1), pooling max | mean |
  attention | flatten, up-path transpose (2×2 stride 2) | resize (bilinear ×2, half-pixel
  centres, then 3×3 conv), skip concatenation [up, skip]. Options it does not implement raise
  (`check_torch_supported`). `dtype` does not change the network. Left different, as
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
      z = self.encode(x.permute(0, 2, 3, 4, 1).reshape(b * h * w, c, t))   # [BHW, D]
      return self.decode(z.reshape(b, h, w, -1).permute(0, 3, 1, 2))

    def encode(self, z):                                     # [BHW, C, T] → [BHW, D]
      """The temporal encoder, each pixel's series (`TemporalEncoder`)."""
      n = z.shape[0]
      for layer in self.temporal:
        z = layer(z)                                         # [BHW, D, T]
      if tcfg.pooling == "max":
        return z.amax(-1)
      if tcfg.pooling == "mean":
        return z.mean(-1)
      if tcfg.pooling == "flatten":                          # month-major, as in JAX
        return torch.relu(self.flat(z.transpose(1, 2).reshape(n, -1)))
      zt = z.transpose(1, 2)                                 # softmax in f32, as in JAX
      a = torch.softmax(self.score(zt).float(), dim=1).to(zt.dtype)   # [BHW, T, 1]
      return (zt * a).sum(1)

    def decode(self, z):                                     # [B, D, H, W] → [B, K, H, W]
      """The U-Net and its 1×1 head (`UNet`)."""
      skips = []
      for i, blk in enumerate(self.down):
        z = blk(z)
        if i < len(self.down) - 1:
          skips.append(z)
          z = nn.functional.max_pool2d(z, 2)
      for upc, blk, skip in zip(reversed(self.up), reversed(self.up_blocks), reversed(skips)):
        z = blk(torch.cat([upc(z), skip], 1))
      return self.head(z)

  return TorchHybrid()


def load_flax_variables(twin, variables) -> None:
  """Copies a Flax `HybridModel`'s variables into its `torch_hybrid` twin, in place.

  Args:
    twin: `torch_hybrid(cfg_model, K, C, T)`, the same `cfg_model` as the Flax model.
    variables: `{"params": …, "batch_stats": …}` of that Flax model.
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
