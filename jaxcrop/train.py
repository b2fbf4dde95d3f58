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
import signal
import sys
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import tqdm

from jaxcrop import checkpoint, cli, distributed, hierarchy, losses, metrics
from jaxcrop.hierarchy import Tree
from jaxcrop.models import build_model, head_kind, needs_valid_count, unet_min_side
from cropcontracts.dataset_meta import DatasetMeta
from cropcontracts.errors import UserError


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


def put_batch(mesh, batch, keys=("image", "label")):
  """This process's share of a global batch → global arrays sharded on `data`
  (`keys`, plus `valid_count` when the batch carries it)."""
  sharding = NamedSharding(mesh, P("data"))
  keys = tuple(keys) + (("valid_count",) if "valid_count" in batch else ())
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}


def evaluate_split(eval_step, variables, batches, mesh, num_classes: int,
                   max_batches=None, desc="eval") -> np.ndarray:
  """Confusion matrix int64 [K, K] summed over the (masked) batches of a split."""
  cm = jnp.zeros((num_classes, num_classes), jnp.int32)
  for i, batch in enumerate(tqdm.tqdm(batches, desc=desc, leave=False,
                                      disable=jax.process_index() != 0)):
    if max_batches is not None and i >= max_batches:
      break
    cm = cm + eval_step(variables, put_batch(mesh, batch, ("image", "label", "mask")))
  return np.asarray(jax.device_get(cm), np.int64)


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


class Writer:
  """metrics.jsonl (+ TensorBoard scalars) from process 0 only."""

  def __init__(self, workdir, tensorboard: bool):
    self.active = jax.process_index() == 0
    self.path = workdir / "metrics.jsonl"
    self.tb = None
    if self.active and tensorboard:
      try:
        from jaxcrop.input_pipeline import import_tf  # pylint: disable=g-import-not-at-top
        tf = import_tf()
      except ImportError:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        tf.config.set_visible_devices([], "GPU")
      # tf.summary.write with the "scalars" plugin tag is what
      # tensorboard's tf.summary.scalar does; the tensorboard package is not needed.
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self.scalar_metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
      self.tf = tf
      self.tb = tf.summary.create_file_writer(str(workdir / "tb"))

  def write(self, step: int, scalars: dict):
    if not self.active:
      return
    with self.path.open("a") as f:
      f.write(json.dumps({"step": int(step), **scalars}) + "\n")
    if self.tb is not None:
      with self.tb.as_default():
        for k, v in scalars.items():
          if isinstance(v, (int, float)):
            self.tf.summary.write(k, self.tf.constant(v, self.tf.float32), step=int(step),
                                  metadata=self.scalar_metadata)
      self.tb.flush()


def _write_json(path, obj_or_text):
  """Writes under a temporary name, then renames (local disk or gs://)."""
  text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text, indent=1)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def _flatten(d: dict, prefix: str) -> dict:
  """{'a': {'b': 1}} → {'prefix.a.b': 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}.{k}"))
    else:
      out[f"{prefix}.{k}"] = v
  return out


class PreemptionCheck:
  """`preempted(step)`: True at the step where every process stops and saves.

  One process: True from the first step that ends after a SIGTERM (our handler
  sets a flag; a second SIGTERM exits at once). Several processes (a TPU pod):
  JAX's preemption service (`jax.distributed.initialize` starts it and catches
  SIGTERM itself) agrees on one step for all of them,
  `multihost_utils.reached_preemption_sync_point`, called every step; a
  per-process flag would have one host enter the checkpoint barrier while
  another runs the next step's collectives, and both hang.
  """

  def __init__(self):
    self.multi = jax.process_count() > 1
    self.flag = False
    self.previous = None
    if not self.multi:
      self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    if self.flag:                        # asked twice: stop now, without the save
      signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)
      raise SystemExit(128 + signal.SIGTERM)
    self.flag = True

  def __call__(self, step: int) -> bool:
    if self.multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self.flag

  def close(self) -> None:
    if not self.multi:
      signal.signal(signal.SIGTERM, self.previous)


def check_resume(workdir, config, meta) -> None:
  """Raises UserError when workdir holds checkpoints of another model or dataset layout.

  Resuming them would fail deep inside Orbax (shape mismatch), after config.json
  had been overwritten with the new config. Other changes (lr, num_steps, …) resume.
  """
  if not any((workdir / "checkpoints").glob("*/[0-9]*")) or \
      not (workdir / "config.json").exists():
    return
  old = _flatten(json.loads((workdir / "config.json").read_text()).get("model", {}), "model")
  new = _flatten(json.loads(config.to_json())["model"], "model")
  diffs = [f"{k}: {old.get(k)} → {new.get(k)}" for k in sorted(set(old) | set(new))
           if old.get(k) != new.get(k)]
  if (workdir / "dataset_meta.json").exists():
    saved = DatasetMeta.from_json((workdir / "dataset_meta.json").read_text())
    diffs += [f"dataset {d}" for d in saved.compatible_with(meta)]
  if diffs:
    raise UserError(f"{workdir}: holds checkpoints of another model ({'; '.join(diffs)}); "
                    f"pass a new --workdir, or the run's own settings to resume it")


def _restore_resume_point(workdir, last_mgr, step: int, model_vars: dict, opt: dict):
  """checkpoint.restore of the resume point, or a UserError naming it when its
  files are damaged (truncated, missing, or not matching their digest)."""
  try:
    return checkpoint.restore(last_mgr, step, model_vars, opt)
  except Exception as e:  # pylint: disable=broad-except  # tensorstore raises bare Exception
    if checkpoint.another_model(e):
      raise                                  # check_resume refuses other models first
    folder = workdir / "checkpoints" / "last" / str(step)
    why = checkpoint.damage_reason(e)
    older = [s for s in last_mgr.all_steps() if s < step]
    then = (f"remove {folder} to resume from step {max(older)}" if older else
            f"remove {workdir / 'checkpoints'} to train from the start")
    raise UserError(f"{folder}: checkpoint step {step} (last) is damaged ({why}); "
                    f"{then}") from None


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


def train_and_evaluate(config, workdir, *, data=None) -> dict:
  """Train per `config` in `workdir` (resuming there); returns a summary dict.

  `data`: an object with load_meta / train_iterator / eval_batches (defaults to
  jaxcrop.input_pipeline; tests inject fakes).
  """
  data = data or importlib.import_module("jaxcrop.input_pipeline")
  workdir = checkpoint.workdir_path(workdir)   # local or gs://
  main_process = jax.process_index() == 0
  config = with_data_inputs(config)
  cfg_t = config.train
  check_config(config)
  meta = data.load_meta(config.data)      # fails first, before anything is written
  if hasattr(data, "check_split"):
    data.check_split(config.data, None, config.data.val_split)
  if hasattr(data, "check_shards"):      # a damaged shard: one line, no workdir written
    for split in (config.data.train_split, config.data.val_split):
      data.check_shards(config.data, None, split)
  check_resume(workdir, config, meta)    # before config.json is overwritten
  if main_process:
    workdir.mkdir(parents=True, exist_ok=True)
  num_classes = meta.num_classes
  n_dev = jax.device_count()
  for field in ("batch_size", "eval_batch_size"):
    if config.data[field] % n_dev:
      raise UserError(f"data.{field}={config.data[field]} must be a multiple of "
                       f"the {n_dev} devices")
  mesh = Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, P())

  tree = Tree.of(meta)
  model = build_model(config.model, num_classes, tree=tree)
  tx = make_optimizer(config.optimizer, cfg_t.num_steps)
  sample = init_sample(config.model, len(meta.months), len(meta.bands))
  inputs = sample_inputs(config.model, sample)
  state = jax.jit(lambda: init_state(model, tx, sample, config.seed, inputs),
                  out_shardings=replicated)()
  if head_kind(config.model) == "hierarchical":
    weights = losses.tier_class_weights(meta.class_pixel_counts, tree, config.loss.class_weights)
    step_fn = make_train_step(model, tx, weights, config.loss.label_smoothing, config.seed,
                              tree=tree, tier_weights=tuple(config.loss.tier_weights))
  else:
    weights = losses.class_weights(meta.class_pixel_counts, config.loss.class_weights)
    step_fn = make_train_step(model, tx, weights, config.loss.label_smoothing, config.seed)
  train_step = jax.jit(step_fn, donate_argnums=0, out_shardings=replicated)
  eval_step = jax.jit(make_eval_step(model, num_classes), out_shardings=replicated)

  if main_process:
    _write_json(workdir / "config.json", config.to_json(indent=1))
    _write_json(workdir / "dataset_meta.json", meta.to_json())
  last_mgr, best_mgr = checkpoint.managers(workdir, cfg_t.keep_last)
  progress = {"best_f1": np.array(-1.0, np.float32), "bad_evals": np.array(0, np.int32)}
  start = last_mgr.latest_step()
  if start is not None:
    mv, opt = _restore_resume_point(workdir, last_mgr, start, model_variables(state),
                                    {"opt_state": state.opt_state, "step": state.step,
                                     **progress})
    state = state.replace(params=mv["params"], batch_stats=mv.get("batch_stats", {}),
                          opt_state=opt["opt_state"], step=opt["step"])
    state = jax.device_put(state, replicated)
    progress = {k: np.asarray(opt[k]) for k in progress}
    print(f"resuming from step {start} ({workdir}/checkpoints/last)", file=sys.stderr)
  start = int(start or 0)

  def save_last(step):
    checkpoint.save(last_mgr, step, model_variables(state),
                    {"opt_state": state.opt_state, "step": state.step, **progress})

  preempted = PreemptionCheck()
  writer = Writer(workdir, cfg_t.get("tensorboard", True))
  it = data.train_iterator(config.data, seed=config.seed, start_step=start)
  summary = {}
  step = start
  bar = tqdm.tqdm(total=cfg_t.num_steps, initial=start, desc="train", disable=not main_process)
  t_log, n_px = time.perf_counter(), 0
  val = None
  sigterm = False
  try:
    while step < cfg_t.num_steps and progress["bad_evals"] < cfg_t.early_stopping_patience:
      batch = next(it)
      if not summary:
        summary = model_summary(model, model_variables(state), jnp.asarray(batch["image"][:1]),
                                {k: jnp.asarray(v[:1]) for k, v in model_inputs(batch).items()})
        if main_process:
          print(f"model: {summary['params']:,} parameters, "
                f"{summary['flops_per_pixel']:,.0f} FLOPs/pixel forward ({summary['flops_source']})",
                file=sys.stderr)
      state, measured = train_step(state, put_batch(mesh, batch))
      step += 1
      bar.update(1)
      b, _, h, w, _ = batch["image"].shape
      n_px += b * h * w * jax.process_count()
      if step % cfg_t.log_every == 0 or step == cfg_t.num_steps:
        measured = {k: float(v) for k, v in jax.device_get(measured).items()}
        if not np.isfinite(measured["loss"]):
          raise UserError(f"loss is {measured['loss']} at step {step}; "
                            "lower optimizer.lr or check the input normalization")
        dt = time.perf_counter() - t_log
        measured["pixels_per_s"] = n_px / dt
        t_log, n_px = time.perf_counter(), 0
        bar.set_postfix(loss=f"{measured['loss']:.3f}", px_s=f"{measured['pixels_per_s']:.3g}")
        writer.write(step, {f"train_{k}": v for k, v in measured.items()})
      if step % cfg_t.eval_every == 0 or step == cfg_t.num_steps:
        cm = evaluate_split(eval_step, model_variables(state),
                            data.eval_batches(config.data, config.data.val_split), mesh,
                            num_classes, config.eval.get("max_batches"), desc="val")
        val = metrics.summarize(cm, list(meta.class_names))
        for tier in (2, 1):   # the tier-3 confusion mapped up the tree
          val[f"tier{tier}_macro_f1"] = metrics.summarize(hierarchy.tier_confusion(
              cm, tree.parents(tier), tree.sizes[tier - 1]))["macro_f1"]
        scalars = {f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))}
        writer.write(step, scalars)
        bar.write(f"step {step}: val macro-F1 {val['macro_f1']:.4f}  OA "
                  f"{val['overall_accuracy']:.4f}  mIoU {val['miou']:.4f}")
        if val["macro_f1"] > progress["best_f1"]:
          progress = {"best_f1": np.array(val["macro_f1"], np.float32), "bad_evals": np.array(0, np.int32)}
          checkpoint.save(best_mgr, step, model_variables(state),
                          {"opt_state": state.opt_state, "step": state.step, **progress},
                          metrics={checkpoint.BEST_METRIC: float(val["macro_f1"])})
          if main_process:
            _write_json(workdir / "val_best.json",
                        {"step": step, **val, "confusion_matrix": cm.tolist()})
        else:
          progress = {**progress, "bad_evals": np.array(progress["bad_evals"] + 1, np.int32)}
      sigterm = preempted(step)
      if step % cfg_t.checkpoint_every == 0 or step == cfg_t.num_steps or sigterm:
        save_last(step)
      if sigterm:
        print(f"stopping at step {step} (SIGTERM); rerun the same command to resume",
              file=sys.stderr)
        break
    else:
      if step > start and last_mgr.latest_step() != step:
        save_last(step)   # early stop between checkpoints
  finally:
    bar.close()
    last_mgr.wait_until_finished()
    best_mgr.wait_until_finished()
    preempted.close()
  return {"step": step, "best_val_macro_f1": float(progress["best_f1"]),
          "early_stopped": bool(progress["bad_evals"] >= cfg_t.early_stopping_patience),
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
