"""The hybrid temporal-CNN + U-Net crop-type model, big_vision style.

  python -m jaxcrop.train --config configs/hybrid.py --workdir W          # full run
  python -m jaxcrop.train --config configs/hybrid.py:demo --workdir W     # laptop demo
  ... --config.optimizer.lr=3e-4 --config.model.unet.widths='(32,64)'    # any field

Variants (comma-separated after the colon, in any order): sizes `demo` (the
synthetic demo dataset, a small model, ~2–3 min on 2 CPU cores), `tiny` (unit
tests: a few steps); models `attention` (the L-TAE-style temporal encoder
instead of the 1D CNN), `hierarchical` (tier 1/2/3 heads), `pixel` (the temporal
encoder and a per-pixel head, no U-Net); data `points` (the `points` dataset of
labelled points, with `pixel`: docs/points.md); `compare` (a CV grid
of flat/hierarchical × cnn/attention), `validcount` (a CV grid of the valid-count
inputs: none/channel, and mask with `attention`); `inseason` (random month cut-offs
in training, macro-F1 by cut-off month in evaluate: docs/in-season.md); `years` (train on
some years, test on an unseen one: the multi-year dataset, `unseen_year` in metrics.json),
`loyo` (leave-one-year-out cross-validation with `jaxcrop.cv`). E.g.
`configs/hybrid.py:demo,attention`, `configs/hybrid.py:demo,inseason`,
`configs/hybrid.py:demo,years`.
"""
import ml_collections
from ml_collections import config_dict

from cropcontracts.errors import UserError


def get_config(variant: str = ""):
  """The base config, then each named variant's changes: the size variants
  (`demo`, `tiny`) first, then the models (`attention`, `hierarchical`), then
  the CV studies (`compare`, `validcount`), whatever their order in `variant`."""
  variants = set(filter(None, (variant or "").split(",")))
  known = set(VARIANTS)
  unknown = variants - known
  if unknown:
    raise UserError(f"unknown config variant(s) {sorted(unknown)}; expected "
                    f"{', '.join(sorted(known))} (comma-separated)")
  c = base()
  for name, apply in VARIANTS.items():
    if name in variants:
      apply(c)
  return c


def base() -> ml_collections.ConfigDict:
  """The full-scale run: the study's zones (france2023), the default model."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = dict(
      name="cropmap",
      builder_config="france2023",
      data_dir=config_dict.placeholder(str),   # None → TFDS default; may be gs://
      train_split="fold0+fold1",
      val_split="fold2",
      test_split="test",
      batch_size=32,                           # global, over all devices and hosts
      eval_batch_size=32,
      shuffle_buffer=2048,
      augment=True,
      cache=False,
      prefetch=2,
      deterministic=True,                      # fixed order: exact resume; False: faster
      valid_count=False,                       # also deliver valid_count [B, T, H, W]
                                               # (set by train when model.valid_count needs it)
      cut_off_months=(),                       # in-season training: each example cut off
                                               # after a calendar month drawn uniformly
                                               # from these (jaxcrop.in_season); () = off
      cut_off_rate=1.0,                        # … the share of examples cut off (the
                                               # others see the whole season)
      align_season=False,                      # evaluate / predict: each zone-year's
                                               # season moved onto the training years'
                                               # calendar (jaxcrop.season_shift)
      time_shift=0.0,                          # months: each training example's season
                                               # moved by up to ± this (another year's
                                               # phenology; input_pipeline.time_shift)
  )
  c.model = dict(
      # pooling: max | mean | attention | flatten. flatten (TempCNN) keeps the
      # month order; the others cannot tell *when* a pattern occurs (the demo
      # comparison, with its date: docs/model.md, Architecture).
      temporal=dict(features=64, layers=3, kernel_size=3, norm="batch",
                    dropout=0.1, pooling="flatten"),
      unet=dict(widths=(64, 128, 256), norm="batch", up="transpose"),
      # encoder: cnn (the study's 1D CNN, `temporal`) | attention (L-TAE-style
      # attention pooling, `attention`; jaxcrop/models/temporal.py).
      encoder="cnn",
      arch="hybrid",    # hybrid (encoder → U-Net) | pixel (encoder → per-pixel head)
      attention=dict(features=64, d_model=128, heads=8, key_dim=8, dropout=0.1),
      # head: flat (tier-3 logits) | hierarchical (tiers 1, 2, 3 from the shared
      # U-Net features; consistency joint | none, jaxcrop/models/heads.py).
      head=dict(kind="flat", consistency="joint"),
      # valid_count: none | channel (log1p(count) as an extra band) | mask
      # (attention only: gap-filled months get no weight).
      valid_count="none",
      dtype="float32",                         # or bfloat16 (params stay f32)
  )
  c.optimizer = dict(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_steps=500,
                     b1=0.9, b2=0.999, clip_norm=1.0)
  c.loss = dict(class_weights="inv_sqrt",      # none | inv_sqrt | inv (per tier)
                label_smoothing=0.0,
                # hierarchical head: loss = Σ_t w_t CE_t over tiers (1, 2, 3);
                # ms-convSTAR's (Turkoglu et al. 2021) 0.1 / 0.5 / 1 as the start.
                tier_weights=(0.1, 0.5, 1.0))
  c.train = dict(
      num_steps=20_000,
      eval_every=1_000,             # validation (and best-checkpoint) period, steps
      checkpoint_every=500,         # "last" checkpoint period, steps
      keep_last=2,
      early_stopping_patience=5,    # evaluations without a better val macro-F1
      log_every=50,
      tensorboard=True,             # tb/ summaries besides metrics.jsonl
      calibrate=True,               # fit a temperature on val_split at the end (calibrate.py)
  )
  c.eval = dict(
      max_batches=config_dict.placeholder(int),  # cap on val/test batches (None = all)
      baseline=dict(max_pixels=200_000, max_iter=100),   # HistGradientBoosting per pixel
  )
  c.cv = dict(folds=("fold0", "fold1", "fold2"),
              grid=dict(lr=(3e-4, 1e-3, 3e-3), kernel_size=(3, 5, 7)),
              evaluate=True,     # jaxcrop.evaluate on each validation fold (all tiers)
              baseline=True)     # … with the per-pixel baseline beside the model
  return c


def demo(c) -> None:
  """The synthetic demo dataset, a small model: ~2–3 min on 2 CPU cores."""
  c.data.builder_config = "demo"
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.shuffle_buffer = 256
  c.model.temporal.update(features=16, layers=2, dropout=0.0)
  c.model.unet.widths = (16, 32)
  c.optimizer.update(lr=5e-3, warmup_steps=30)
  c.train.update(num_steps=600, eval_every=150, checkpoint_every=150,
                 early_stopping_patience=3, log_every=20)
  c.eval.baseline.max_pixels = 50_000
  c.model.attention.update(features=16, d_model=32, heads=4, key_dim=8, dropout=0.0)
  c.cv.grid = dict(lr=(1e-3, 3e-3), kernel_size=(3, 5))


def tiny(c) -> None:
  """Unit tests: a tiny model, a few steps."""
  c.data.batch_size = 4
  c.data.eval_batch_size = 4
  c.model.temporal.update(features=8, layers=1, dropout=0.0)
  c.model.unet.widths = (8, 16)
  c.optimizer.warmup_steps = 2
  c.train.update(num_steps=6, eval_every=3, checkpoint_every=2,
                 early_stopping_patience=2, log_every=1, calibrate=False)
  c.eval.baseline.update(max_pixels=2_000, max_iter=10)
  c.model.attention.update(features=8, d_model=8, heads=2, key_dim=4, dropout=0.0)
  c.cv.grid = dict(lr=(1e-3,), kernel_size=(3, 5))


def attention(c) -> None:
  """The L-TAE-style temporal encoder instead of the 1D CNN."""
  c.model.encoder = "attention"
  c.cv.grid = {k: v for k, v in c.cv.grid.items() if k != "kernel_size"}   # a CNN field


def hierarchical(c) -> None:
  """Tier 1/2/3 heads."""
  c.model.head.kind = "hierarchical"


def pixel(c) -> None:
  """The temporal encoder and a per-pixel head, no U-Net (jaxcrop/models/pixel.py)."""
  c.model.arch = "pixel"


def points(c) -> None:
  """The `points` dataset (1 x 1 examples of labelled points, docs/points.md), for the
  pixel model; cross-validation of one setting on its folds, the baseline beside it:
  `python -m jaxcrop.cv --config configs/hybrid.py:pixel,points --workdir W`."""
  if c.model.arch != "pixel":
    raise UserError("config variant points (1 x 1 examples) needs the pixel model: "
                    "configs/hybrid.py:pixel,points")
  c.data.builder_config = "points"
  c.data.augment = False                # the symmetries of a 1 x 1 patch: nothing
  c.cv.grid = dict(lr=(c.optimizer.lr,))


def compare(c) -> None:
  """The issue-14 comparison, a CV grid: flat vs hierarchical × CNN vs attention,
  one setting each (the demo's lr), 3 folds: `python -m jaxcrop.cv --config
  configs/hybrid.py:demo,compare --workdir W --no-retrain`."""
  c.cv.grid = dict(model__head__kind=("flat", "hierarchical"),
                   model__encoder=("cnn", "attention"))


def inseason(c) -> None:
  """In-season maps: each training example sees its season up to a cut-off month
  drawn uniformly from April to December (the later months masked, the earlier
  gaps filled again without them: `jaxcrop.in_season`); `jaxcrop.evaluate` then
  scores the model and the baseline by cut-off month (docs/in-season.md)."""
  c.data.cut_off_months = tuple(range(4, 13))


def validcount(c) -> None:
  """Do the gap-filled months' valid-observation counts help? A CV grid over
  model.valid_count (none, channel; mask too with `attention`), the encoder and
  head of the other variants: `... --config configs/hybrid.py:demo,validcount`."""
  modes = ("none", "channel") + (("mask",) if c.model.encoder == "attention" else ())
  c.cv.grid = dict(model__valid_count=modes)


def years(c) -> None:
  """Train on some years, test on an unseen one (issue 21): the multi-year dataset
  of the size chosen (`demo_years`: train 2022, test 2023; the study's
  `france2021_2023`: train 2021-2022, test 2023), the validation a fold of the
  training years; `evaluate` adds metrics.json's `unseen_year` (same year,
  unseen year, the drop, the previous-year baseline: `jaxcrop.unseen_year`).
  Evaluate and predict align each zone-year's season onto the training years'
  calendar first (`data.align_season`, `jaxcrop.season_shift`)."""
  from cropcontracts import years as years_lib
  demo_size = c.data.builder_config == "demo"
  c.data.builder_config = "demo_years" if demo_size else "france2021_2023"
  data_years = (2022, 2023) if demo_size else (2021, 2022, 2023)
  s = years_lib.heldout(data_years, 2023, num_folds=3)
  c.data.update(train_split=s["train"], val_split=s["val"], test_split=s["test"])
  c.data.align_season = True       # another year's phenology moved onto the training calendar
  c.years = dict(
      same_year=s["same_year"],          # the training years' test zones: the reference
      seen_space=s["seen_space"],        # the test year's other zones, reported apart
      previous_year=True,                # the previous-year RPG baseline beside the model
      zones=config_dict.placeholder(str))   # <root>/<year>/<zone_id>/ (None: the dataset's)


def loyo(c) -> None:
  """Leave-one-year-out cross-validation (issue 21): `python -m jaxcrop.cv --config
  configs/hybrid.py:demo,loyo --workdir W`: one CV fold per year of the multi-year
  dataset (all its training zone-years, `cropcontracts.years.year_group`), so each
  run trains on the other years and validates on the held-out one; results.md has
  the mean ± std over years. The final retrain (all years) is tested on every
  year's test zones (unseen in space)."""
  from cropcontracts import years as years_lib
  demo_size = c.data.builder_config in ("demo", "demo_years")
  c.data.builder_config = "demo_years" if demo_size else "france2021_2023"
  data_years = (2022, 2023) if demo_size else (2021, 2022, 2023)
  c.cv.folds = tuple(years_lib.year_group(y, 3) for y in data_years)
  c.data.update(train_split="+".join(c.cv.folds[:-1]), val_split=c.cv.folds[-1],
                test_split="+".join(years_lib.split_name(y, "test") for y in data_years))
  if "years" in c:
    del c["years"]      # not a year-held-out test: no unseen-year section
  c.data.align_season = False   # the test split spans the years: nothing to align it to


# In the order they apply: sizes first, so `demo,attention` is the demo's sizes
# with the attention encoder (the order in the list does not matter); `years`
# last, as it picks the multi-year dataset of the size chosen.
VARIANTS = {"demo": demo, "tiny": tiny, "attention": attention,
            "hierarchical": hierarchical, "pixel": pixel, "points": points,
            "compare": compare, "validcount": validcount, "inseason": inseason,
            "years": years, "loyo": loyo}
