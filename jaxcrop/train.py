"""Train the hybrid crop-type model, data parallel over all devices and hosts.

  python -m jaxcrop.train --config configs/hybrid.py:demo --workdir /tmp/w
  python -m jaxcrop.train --config configs/hybrid.py --workdir gs://… --config.optimizer.lr=3e-4

Rerunning the same command resumes from the newest checkpoint (state, step and
the data order: the iterator restarts at that step; dropout rngs are
fold_in(seed, step)). SIGTERM (TPU preemption) saves, then exits. Writes
config.json, dataset_meta.json, metrics.jsonl, TensorBoard summaries (tb/),
val_best.json and checkpoints/{last,best} (see jaxcrop/checkpoint.py).
"""
from __future__ import annotations

import functools
import importlib
import json
import sys
import time
from typing import Any, Iterator, Protocol

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import tqdm

from jaxcrop import calibrate
from jaxcrop import (checkpoint, cli, distributed, early_stopping, losses, metrics, preemption,
                     resume, validation)
from jaxcrop.hierarchy import Tree
from jaxcrop.metric_writer import MetricWriter
from jaxcrop.models import build_model, head_kind, needs_valid_count, unet_min_side
from cropcontracts import atomic
from cropcontracts.dataset_meta import DatasetMeta
from cropcontracts.errors import UserError
from cropcontracts import years


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def decay_mask(params):
  """True for the kernels (ndim > 1): weight decay shrinks convolution and
  dense weights, not biases or the scales and offsets of normalization layers."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg_opt, num_steps: int):
  """AdamW (decay on kernels only), linear warm-up then cosine decay to 0,
  global-norm clipping."""
  if cfg_opt.name != "adamw":
    raise UserError(f"unknown optimizer {cfg_opt.name!r} (config.optimizer.name); "
                      f"expected adamw")
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg_opt.lr, cfg_opt.warmup_steps, max(num_steps, cfg_opt.warmup_steps + 1))
  return optax.chain(
      optax.clip_by_global_norm(cfg_opt.clip_norm),
      optax.adamw(schedule, b1=cfg_opt.b1, b2=cfg_opt.b2, weight_decay=cfg_opt.weight_decay,
                  mask=decay_mask))


def init_sample(cfg_model, months: int, bands: int):
  """A zero input [1, T, m, m, C], m the smallest side the U-Net accepts."""
  m = unet_min_side(len(cfg_model.unet.widths))
  return jnp.zeros((1, months, m, m, bands), jnp.float32)


def model_inputs(batch) -> dict:
  """Keyword inputs of `model.apply` besides the image: `valid_count` when the batch has it."""
  return {"valid_count": batch["valid_count"]} if "valid_count" in batch else {}


def sample_inputs(cfg_model, sample) -> dict:
  """`model_inputs` of a zero sample [1, T, m, m, C] (valid counts [1, T, m, m])."""
  if not needs_valid_count(cfg_model):
    return {}
  return {"valid_count": jnp.zeros(sample.shape[:-1], jnp.float32)}


def init_state(model, tx, sample, seed: int, inputs=None) -> TrainState:
  variables = model.init(jax.random.key(seed), sample, **(inputs or {}))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params))


def model_variables(state: TrainState) -> dict:
  v = {"params": state.params}
  if state.batch_stats:
    v["batch_stats"] = state.batch_stats
  return v


def make_train_step(model, tx, weights, label_smoothing: float, seed: int, *,
                    tree=None, tier_weights=None):
  """Pure step (state, batch {image [B,T,H,W,C], label [B,H,W], valid_count?}) →
  (state, measurements).

  Without `tree`: the tier-3 cross-entropy with class weights `weights` [K].
  With `tree` (a jaxcrop.hierarchy.Tree): `losses.tier_loss` over the tiers the
  model outputs, `weights` = {"tier<t>": [K_t]}, `tier_weights` = (w1, w2, w3).
  """
  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
      out, new = model.apply(
          model_variables(state.replace(params=params)), batch["image"], train=True,
          rngs={"dropout": rng}, mutable=["batch_stats"], tiers=tree is not None,
          **model_inputs(batch))
      if tree is None:
        loss, n = losses.cross_entropy(out, batch["label"], weights=weights,
                                       label_smoothing=label_smoothing)
      else:
        loss, n = losses.tier_loss(out, batch["label"], tree=tree, tier_weights=tier_weights,
                                   weights=weights, label_smoothing=label_smoothing)
      return loss, (new.get("batch_stats", {}), n)

    (loss, (batch_stats, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "labelled_pixels": n}
  return train_step


def make_eval_step(model, num_classes: int):
  """(variables, batch {image, label, mask [B], valid_count?}) → confusion matrix int32 [K, K]."""
  def eval_step(variables, batch):
    pred = model.apply(variables, batch["image"], train=False, **model_inputs(batch)).argmax(-1)
    return metrics.confusion_matrix(batch["label"], pred, batch["mask"], num_classes=num_classes)
  return eval_step


def model_summary(model, variables, sample, inputs=None) -> dict:
  """Parameter count and forward FLOPs per pixel (XLA cost_analysis, eval mode)."""
  n_params = sum(int(p.size) for p in jax.tree.leaves(variables["params"]))
  compiled = jax.jit(functools.partial(model.apply, train=False)).lower(
      variables, sample, **(inputs or {})).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  b, _, h, w, _ = sample.shape
  flops = float((cost or {}).get("flops", float("nan"))) / (b * h * w)
  return {"params": n_params, "flops_per_pixel": flops,
          "flops_source": "XLA cost_analysis of the jitted forward pass / (B·H·W)"}


def with_data_inputs(config):
  """`config`, or a copy with data.valid_count=True when the model takes the
  per-month valid-observation counts (one switch: model.valid_count)."""
  if not needs_valid_count(config.model) or config.data.get("valid_count"):
    return config
  c = config.copy_and_resolve_references()
  c.unlock()
  c.data.valid_count = True
  return c


POSITIVE_FIELDS = ("data.batch_size", "data.eval_batch_size", "train.num_steps",
                   "train.eval_every", "train.checkpoint_every", "train.keep_last",
                   "train.log_every")


def check_config(config) -> None:
  """Raises UserError on a count or period that cannot work (0 or negative)."""
  for path in POSITIVE_FIELDS:
    section, field = path.split(".")
    value = config[section].get(field)
    if value is not None and value < 1:
      raise UserError(f"--config.{path}={value}: must be at least 1")


class Data(Protocol):
  """Where `train_and_evaluate` reads its data (`jaxcrop.cv` and `jaxcrop.evaluate`
  take the same object): the module `jaxcrop.input_pipeline` (the default; its
  functions give the batches' shapes), or a stand-in with the same five functions
  (tests: `tests.fixtures.FakeData`). `builder`: None (each call opens the dataset
  itself) or a TFDS builder."""

  def load_meta(self, cfg_data) -> DatasetMeta:
    """The dataset's DatasetMeta, moments merged over cfg_data.train_split."""

  def check_split(self, cfg_data, builder, split: str) -> None:
    """UserError when `split` names a split the dataset does not have."""

  def check_shards(self, cfg_data, builder, split: str) -> None:
    """UserError naming a shard of `split` that is missing or truncated."""

  def train_iterator(self, cfg_data, *, seed: int, start_step: int = 0) -> Iterator[dict]:
    """Endless batches {image [B,T,H,W,C], label [B,H,W], valid_count?}; from
    start_step=k, batches k, k+1, … of start_step=0."""

  def eval_batches(self, cfg_data, split: str, meta=None) -> Iterator[dict]:
    """Every example of `split` once, the last batch padded: + mask [B] (0 on padding)."""


def check_inputs(config, workdir, data: Data) -> DatasetMeta:
  """Every check of the user's inputs, before anything is written: the config,
  the dataset (splits, damaged shards), a resume of another model, the batch
  sizes against the devices. Returns the dataset's DatasetMeta."""
  check_config(config)
  if config.get("years"):    # a year-held-out run: its test year is never trained on
    years.check_heldout(config.data.train_split, config.data.val_split,
                        config.data.test_split)
  meta = data.load_meta(config.data)
  data.check_split(config.data, None, config.data.val_split)
  for split in (config.data.train_split, config.data.val_split):
    data.check_shards(config.data, None, split)
  resume.check_resume(workdir, config, meta)    # before config.json is overwritten
  n_dev = jax.device_count()
  for field in ("batch_size", "eval_batch_size"):
    if config.data[field] % n_dev:
      raise UserError(f"data.{field}={config.data[field]} must be a multiple of "
                      f"the {n_dev} devices")
  return meta


def loss_step(config, model, tx, meta: DatasetMeta, tree: Tree):
  """`make_train_step` with the class weights of `meta` (per tier for hierarchical heads)."""
  if head_kind(config.model) == "hierarchical":
    weights = losses.tier_class_weights(meta.class_pixel_counts, tree, config.loss.class_weights)
    return make_train_step(model, tx, weights, config.loss.label_smoothing, config.seed,
                           tree=tree, tier_weights=tuple(config.loss.tier_weights))
  weights = losses.class_weights(meta.class_pixel_counts, config.loss.class_weights)
  return make_train_step(model, tx, weights, config.loss.label_smoothing, config.seed)


def initial_state(config, model, tx, meta: DatasetMeta, sharding) -> TrainState:
  """The state at step 0 (seed `config.seed`), placed with `sharding`."""
  sample = init_sample(config.model, len(meta.months), len(meta.bands))
  inputs = sample_inputs(config.model, sample)
  return jax.jit(lambda: init_state(model, tx, sample, config.seed, inputs),
                 out_shardings=sharding)()


def write_run_files(workdir, config, meta: DatasetMeta) -> None:
  """workdir/config.json and workdir/dataset_meta.json (process 0)."""
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(workdir / "config.json", config.to_json(indent=1))
    atomic.write_text(workdir / "dataset_meta.json", meta.to_json())


def write_season_reference(workdir, config, meta: DatasetMeta, data) -> None:
  """workdir/season_reference.json (process 0, once per workdir) for a model that
  aligns seasons (`data.align_season`): the training split's valid-observation
  profile per region (`season_shift.ZoneShifts.record`), the calendar evaluate and
  predict move another year onto."""
  from jaxcrop import season_shift  # pylint: disable=g-import-not-at-top
  if not config.data.get("align_season", False) or jax.process_index() != 0:
    return
  path = workdir / season_shift.FILE
  if path.exists():
    return
  zones = season_shift.from_batches(
      data.eval_batches(config.data, config.data.train_split, meta, raw=True),
      meta.mean, meta.std)
  atomic.write_text(path, json.dumps(zones.record()))


def _opt_tree(state: TrainState) -> dict:
  return {"opt_state": state.opt_state, "step": state.step}


def save_last(last_mgr, step: int, state: TrainState, stopping) -> None:
  """A `last` checkpoint: model variables, optimizer state, step, early-stopping progress."""
  checkpoint.save(last_mgr, step, model_variables(state),
                  {**_opt_tree(state), **stopping.progress})


def resume_state(workdir, last_mgr, state: TrainState, stopping, sharding):
  """(state, step) of the newest `last` checkpoint, `stopping` restored with it;
  (state, 0) when there is none."""
  start = last_mgr.latest_step()
  if start is None:
    return state, 0
  mv, opt = resume.restore(workdir, last_mgr, start, model_variables(state),
                           {**_opt_tree(state), **stopping.progress})
  state = state.replace(params=mv["params"], batch_stats=mv.get("batch_stats", {}),
                        opt_state=opt["opt_state"], step=opt["step"])
  stopping.restore(opt)
  print(f"resuming from step {start} ({workdir}/checkpoints/last)", file=sys.stderr)
  return jax.device_put(state, sharding), int(start)


def first_batch_summary(model, state: TrainState, batch) -> dict:
  """`model_summary` at the shapes of the first batch; process 0 prints it."""
  summary = model_summary(model, model_variables(state), jnp.asarray(batch["image"][:1]),
                          {k: jnp.asarray(v[:1]) for k, v in model_inputs(batch).items()})
  if jax.process_index() == 0:
    print(f"model: {summary['params']:,} parameters, "
          f"{summary['flops_per_pixel']:,.0f} FLOPs/pixel forward ({summary['flops_source']})",
          file=sys.stderr)
  return summary


def due(step: int, every: int, num_steps: int) -> bool:
  """True every `every` steps and at the last step."""
  return step % every == 0 or step == num_steps


class TrainLog:
  """The progress bar and the logged scalars: `train_<k>` (loss, grad_norm,
  labelled_pixels, pixels_per_s since the previous line) and `val_<k>`."""

  def __init__(self, writer: MetricWriter, num_steps: int, start: int):
    self.writer = writer
    self.bar = tqdm.tqdm(total=num_steps, initial=start, desc="train",
                         disable=jax.process_index() != 0)
    self.t, self.pixels = time.perf_counter(), 0

  def step(self, batch) -> None:
    """One step done on `batch` (this process's share)."""
    self.bar.update(1)
    b, _, h, w, _ = batch["image"].shape
    self.pixels += b * h * w * jax.process_count()

  def train(self, step: int, measured: dict) -> None:
    """Logs the step's measurements; UserError on a loss that is not finite."""
    measured = {k: float(v) for k, v in jax.device_get(measured).items()}
    if not np.isfinite(measured["loss"]):
      raise UserError(f"loss is {measured['loss']} at step {step}; "
                      "lower optimizer.lr or check the input normalization")
    measured["pixels_per_s"] = self.pixels / (time.perf_counter() - self.t)
    self.t, self.pixels = time.perf_counter(), 0
    self.bar.set_postfix(loss=f"{measured['loss']:.3f}", px_s=f"{measured['pixels_per_s']:.3g}")
    self.writer.write(step, {f"train_{k}": v for k, v in measured.items()})

  def val(self, step: int, scores: dict) -> None:
    self.writer.write(step, {f"val_{k}": v for k, v in scores.items()
                             if isinstance(v, (int, float))})
    self.bar.write(f"step {step}: val macro-F1 {scores['macro_f1']:.4f}  OA "
                   f"{scores['overall_accuracy']:.4f}  mIoU {scores['miou']:.4f}")


def train_and_evaluate(config, workdir, *, data: Data | None = None) -> dict:
  """Train per `config` in `workdir` (resuming there); returns a summary dict.

  `data`: see `Data` (default: jaxcrop.input_pipeline). Returns {step,
  best_val_macro_f1, early_stopped, preempted (SIGTERM: saved, stopped), val
  (the last validation's scores), model (model_summary)}.
  """
  data = data or importlib.import_module("jaxcrop.input_pipeline")
  workdir = checkpoint.workdir_path(workdir)   # local or gs://
  config = with_data_inputs(config)
  cfg_t = config.train
  meta = check_inputs(config, workdir, data)   # fails before anything is written
  mesh = Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, P())
  tree = Tree.of(meta)
  model = build_model(config.model, meta.num_classes, tree=tree)
  tx = make_optimizer(config.optimizer, cfg_t.num_steps)
  state = initial_state(config, model, tx, meta, replicated)
  train_step = jax.jit(loss_step(config, model, tx, meta, tree), donate_argnums=0,
                       out_shardings=replicated)
  validate = validation.Validator(
      jax.jit(make_eval_step(model, meta.num_classes), out_shardings=replicated), data,
      config.data, mesh, meta, tree, config.eval.get("max_batches"))

  write_run_files(workdir, config, meta)
  write_season_reference(workdir, config, meta, data)
  last_mgr, best_mgr = checkpoint.managers(workdir, cfg_t.keep_last)
  stopping = early_stopping.EarlyStopping(workdir, best_mgr, cfg_t.early_stopping_patience)
  state, start = resume_state(workdir, last_mgr, state, stopping, replicated)
  preempted = preemption.Preemption()
  log = TrainLog(MetricWriter(workdir, cfg_t.get("tensorboard", True)), cfg_t.num_steps, start)
  batches = data.train_iterator(config.data, seed=config.seed, start_step=start)
  step, summary, val, sigterm = start, {}, None, False
  try:
    while step < cfg_t.num_steps and not stopping.stopped:
      batch = next(batches)
      summary = summary or first_batch_summary(model, state, batch)
      state, measured = train_step(state, distributed.put_batch(mesh, batch))
      step += 1
      log.step(batch)
      if due(step, cfg_t.log_every, cfg_t.num_steps):
        log.train(step, measured)
      if due(step, cfg_t.eval_every, cfg_t.num_steps):
        val, cm = validate(model_variables(state))
        log.val(step, val)
        stopping.update(step, val, cm, model_variables(state), _opt_tree(state))
      sigterm = preempted.reached(step)
      if due(step, cfg_t.checkpoint_every, cfg_t.num_steps) or sigterm:
        save_last(last_mgr, step, state, stopping)
      if sigterm:
        print(f"stopping at step {step} (SIGTERM); rerun the same command to resume",
              file=sys.stderr)
        break
    else:
      if step > start and last_mgr.latest_step() != step:
        save_last(last_mgr, step, state, stopping)   # early stop between checkpoints
  finally:
    log.bar.close()
    last_mgr.wait_until_finished()
    best_mgr.wait_until_finished()
    preempted.close()
  calibrated = calibrate.after_training(workdir, config, data, stopped=sigterm or preempted.flag)
  return {"step": step, "best_val_macro_f1": float(stopping.best_f1),
          "early_stopped": stopping.stopped, "calibration": calibrated,
          "preempted": bool(sigterm or preempted.flag),   # asked to stop (SIGTERM)
          "val": val, "model": summary}


def build_parser() -> cli.ArgumentParser:
  """The flags of `python -m jaxcrop.train`."""
  p = cli.ArgumentParser("python -m jaxcrop.train", __doc__)
  p.add_config("Experiment config, configs/hybrid.py[:variant] (variants, comma-separated: "
               "demo, tiny, attention, hierarchical, compare, validcount). Required.")
  p.add_argument("--workdir", metavar="DIR", help=(
      "Where checkpoints, metrics and config.json are written; a rerun resumes from it "
      "(may be gs://). Required."))
  p.add_switch("multihost", False, (
      "Call jax.distributed.initialize() (several hosts, e.g. multi-GPU machines); implied "
      "by JAX_COORDINATOR_ADDRESS or a TPU pod (TPU_WORKER_HOSTNAMES listing several "
      "hosts)."))
  return p


def _main(args) -> int:
  logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
  if args.config is None or args.workdir is None:
    raise UserError("--config and --workdir are required "
                         "(e.g. --config configs/hybrid.py:demo --workdir /tmp/w)")
  distributed.initialize(args.multihost)
  result = train_and_evaluate(args.config, args.workdir)
  if jax.process_index() == 0:
    print(json.dumps({k: v for k, v in result.items() if k != "val"}))
  return 0


def main(argv=None) -> int:
  """`python -m jaxcrop.train`; argv without the program name (None: sys.argv)."""
  return cli.main(build_parser(), _main, argv)


if __name__ == "__main__":
  sys.exit(main())
