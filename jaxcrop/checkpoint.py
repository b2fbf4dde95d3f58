"""Checkpoints of a training run and `load_trained` for evaluation and prediction.

Layout of a workdir:
  config.json, dataset_meta.json        written at the start of training
  checkpoints/last/<step>/{model,opt}   every `train.checkpoint_every` steps, at
                                        the end and on SIGTERM; the last
                                        `train.keep_last` are kept; resume point
  checkpoints/best/<step>/{model,opt}   at each validation that improves the
                                        validation macro-F1 (Orbax best_fn keeps 1)
  .lock                                 held (shared) by each process writing
                                        checkpoints; see `claim_workdir`
Two Orbax managers rather than one: the resume point must be the newest
state whatever its score, the model to evaluate the best one whatever its age.
Each checkpoint holds three items: `model` = {params, batch_stats} (all that
prediction needs), `opt` = {step, opt_state, best_f1, bad_evals} and `digest` =
{"model_sha256": …}, the SHA-256 of the model arrays as saved (`model_digest`).
Orbax checks that files exist and decode, not their contents: a flipped bit in an
array file restores silently as another number. `restore` recomputes the digest
and raises `CheckpointDamaged` when it differs (checkpoints saved before the
digest existed restore unchecked). A restore that fails (truncated or missing
array files) prints nothing: see `_quiet_teardown`.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
import orbax.checkpoint as ocp

from cropcontracts import atomic
from cropcontracts.dataset_meta import DatasetMeta
from cropcontracts.errors import UserError
from jaxcrop.hierarchy import Tree
from jaxcrop.models import build_model, needs_valid_count, unet_min_side

BEST_METRIC = "val_macro_f1"


def workdir_path(workdir) -> epath.Path:
  """The workdir as a path that also takes `gs://…` (a Cloud TPU run writes to a bucket).

  Local paths are made absolute (Orbax requires it); others pass through.
  """
  s = os.fspath(workdir)
  return epath.Path(s if "://" in s else os.path.abspath(s))


# What runs killed in a workdir leave: atomic's temporaries (config.json, …) and
# Orbax's unfinished saves (`checkpoints/last/<step>.orbax-checkpoint-tmp`).
KILLED_RUNS_TEMPORARIES = (atomic.PARTIAL, "checkpoints/*/*.orbax-checkpoint-tmp*")
_CLAIMS: dict[str, contextlib.ExitStack] = {}


def claim_workdir(workdir) -> None:
  """This process writes in `workdir` from now on: it holds the workdir's lock,
  shared with the other processes of its run, until it ends; the first process
  to find no other there removes what killed runs left (`atomic.claim`)."""
  key = os.fspath(workdir)
  if key not in _CLAIMS:
    stack = contextlib.ExitStack()
    stack.enter_context(atomic.claim(workdir, shared=True,
                                     patterns=KILLED_RUNS_TEMPORARIES))
    _CLAIMS[key] = stack
    atexit.register(stack.close)


def managers(workdir, keep_last: int = 2, *, read_only: bool = False):
  """(last, best) Orbax CheckpointManagers under workdir/checkpoints; writable
  ones claim the workdir first (`claim_workdir`)."""
  if not read_only:
    claim_workdir(workdir_path(workdir))
  root = workdir_path(workdir) / "checkpoints"
  if read_only:   # Orbax warns that read-only managers ignore the retention options
    logging.set_verbosity(min(logging.get_verbosity(), logging.ERROR))
  # Each manager its own barrier names: across processes Orbax keys its barriers
  # by step, and `last` and `best` both save at an evaluation step.
  sync = lambda name: ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)
  last = ocp.CheckpointManager(
      root / "last", options=ocp.CheckpointManagerOptions(
          max_to_keep=keep_last, create=not read_only, read_only=read_only,
          multiprocessing_options=sync("last")))
  best = ocp.CheckpointManager(
      root / "best", options=ocp.CheckpointManagerOptions(
          max_to_keep=1, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
          keep_checkpoints_without_metrics=False, create=not read_only,
          read_only=read_only, multiprocessing_options=sync("best")))
  return last, best


class CheckpointDamaged(Exception):
  """The restored model arrays differ from the digest written when they were saved."""


def _host(leaf) -> np.ndarray | None:
  """The whole array on this host, or None for one sharded across hosts."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    return np.asarray(leaf.addressable_data(0)) if leaf.is_fully_replicated else None
  return np.asarray(leaf)


def model_digest(model_vars: dict) -> str | None:
  """SHA-256 over the model arrays (path, dtype, shape, bytes, in path order);
  None when an array is sharded across hosts (not the case of this data-parallel
  trainer, whose variables are replicated)."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(model_vars)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = _host(leaf)
    if a is None:
      return None
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def save(manager, step: int, model_vars: dict, opt: dict, metrics=None):
  manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(model_vars), opt=ocp.args.StandardSave(opt),
      digest=ocp.args.JsonSave({"model_sha256": model_digest(model_vars)})),
      metrics=metrics)


class _LoopClosedAfterItsTasks(asyncio.SelectorEventLoop):
  """An event loop that lets its pending tasks end before it closes (those
  still pending after `TASKS_GRACE_S` are cancelled, as `asyncio.run` does)."""
  TASKS_GRACE_S = 60.0

  def close(self):
    if not self.is_running() and not self.is_closed():
      pending = [t for t in asyncio.all_tasks(self) if not t.done()]
      if pending:
        _, late = self.run_until_complete(asyncio.wait(pending, timeout=self.TASKS_GRACE_S))
        for t in late:
          t.cancel()
        self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    super().close()


class _QuietTeardownPolicy(asyncio.DefaultEventLoopPolicy):

  def new_event_loop(self):
    return _LoopClosedAfterItsTasks()


@contextlib.contextmanager
def _quiet_teardown():
  """For the block, new event loops end their tasks before they close.

  Orbax runs a restore in a fresh event loop and closes it as soon as the first
  array read fails, with the other reads still in flight; each of those then
  completes into the closed loop, and tensorstore prints a `RuntimeError: Event
  loop is closed` traceback for it (250 to 530 lines of them above the one-line
  error on a truncated checkpoint). Awaited before the loop closes, they end
  quietly (cancelling them is not enough: tensorstore still calls back).
  """
  previous = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_QuietTeardownPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)


def restore(manager, step: int, model_vars: dict, opt: dict | None = None):
  """Restore into the structure (and shardings) of the given targets; raises
  CheckpointDamaged when the model arrays differ from the saved digest."""
  items = dict(model=ocp.args.StandardRestore(model_vars))
  if opt is not None:
    items["opt"] = ocp.args.StandardRestore(opt)
  has_digest = (epath.Path(manager.directory) / str(step) / "digest").exists()
  if has_digest:
    items["digest"] = ocp.args.JsonRestore()
  with _quiet_teardown():
    out = manager.restore(step, args=ocp.args.Composite(**items))
  want = (out["digest"] or {}).get("model_sha256") if has_digest else None
  if want is not None and model_digest(out["model"]) != want:
    raise CheckpointDamaged(f"step {step}: model arrays differ from their saved SHA-256")
  return out["model"], out.get("opt") if opt is not None else None


@dataclasses.dataclass
class Trained:
  """A trained model ready to apply: `model.apply(variables, x [B,T,H,W,C])` → [B,H,W,K]."""
  config: ml_collections.ConfigDict
  model: Any
  variables: dict
  meta: DatasetMeta
  step: int


def load_trained(workdir, which: str = "best") -> Trained:
  """The `best` (validation macro-F1) or `last` checkpoint of a training run.

  Needs only the workdir: config.json, dataset_meta.json and the checkpoint.
  """
  workdir = workdir_path(workdir)
  if which not in ("best", "last"):
    raise ValueError(f"which must be 'best' or 'last', not {which!r}")
  if not (workdir / "config.json").exists():
    raise FileNotFoundError(f"{workdir}/config.json not found: not a training workdir "
                            "(run python -m jaxcrop.train --workdir first)")
  if not (workdir / "dataset_meta.json").exists():
    raise FileNotFoundError(f"{workdir}/dataset_meta.json not found: an incomplete training "
                            "workdir (rerun python -m jaxcrop.train --workdir on it)")
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  meta = DatasetMeta.from_json((workdir / "dataset_meta.json").read_text())
  # config.json records the model: encoder, head kind (flat | hierarchical), inputs.
  model = build_model(config.model, meta.num_classes, tree=Tree.of(meta))
  m = unet_min_side(len(config.model.unet.widths))
  x = jnp.zeros((1, len(meta.months), m, m, len(meta.bands)), jnp.float32)
  inputs = {"valid_count": jnp.zeros(x.shape[:-1])} if needs_valid_count(config.model) else {}
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **inputs))
  # Restore replicated on this machine's devices, whatever topology saved it.
  replicated = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(jax.local_devices()), ("data",)), jax.sharding.PartitionSpec())
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract)
  target = dict(params=abstract["params"], batch_stats=abstract.get("batch_stats", {}))
  last, best = managers(workdir, read_only=True)
  manager = best if which == "best" else last
  step = manager.best_step() if which == "best" else manager.latest_step()
  if step is None and which == "best":        # no validation yet: fall back
    manager, step = last, last.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints: training has not "
                            f"saved one yet (run or resume python -m jaxcrop.train --workdir "
                            f"{workdir})")
  kind = "best" if manager is best else "last"
  try:
    variables, _ = restore(manager, step, target)
  except Exception as e:  # pylint: disable=broad-except  # tensorstore raises bare Exception
    raise _unreadable(workdir, kind, int(step), e, {"last": last, "best": best},
                      target) from None
  variables = {k: v for k, v in variables.items() if v}
  return Trained(config, model, variables, meta, int(step))


def another_model(e: Exception) -> bool:
  """Whether Orbax refused the restore because the stored arrays have other shapes
  or another tree than the model of config.json (not because files are damaged)."""
  text = str(e)
  return isinstance(e, ValueError) and ("stored shape" in text or
                                        "tree structures do not match" in text)


def damage_reason(e: Exception) -> str:
  """Why a checkpoint that failed to restore with `e` (not another_model) is damaged."""
  if isinstance(e, CheckpointDamaged):
    return "its model arrays differ from the SHA-256 recorded when it was saved"
  return "array files truncated or missing"


def _unreadable(workdir, kind: str, step: int, e: Exception, mgrs: dict,
                target: dict) -> UserError:
  """The user error for checkpoint `kind`/`step` that failed to restore with `e`:
  another model than config.json's, or damaged files; then names the other
  complete checkpoint if there is one (tried in full, newest first)."""
  folder = workdir / "checkpoints" / kind / str(step)
  if another_model(e):
    return UserError(f"{folder}: checkpoint step {step} holds another model than "
                     f"{workdir}/config.json (arrays of other shapes or names); pass the "
                     f"workdir it was trained in, or retrain")
  what = f"{folder}: checkpoint step {step} ({kind}) is damaged ({damage_reason(e)})"
  for other_kind, other_step in _other_checkpoints(mgrs, kind, step):
    try:
      restore(mgrs[other_kind], other_step, target)
    except Exception:  # pylint: disable=broad-except
      continue
    if other_kind == kind:
      return UserError(f"{what}; step {other_step} of {kind} is complete: remove {folder} "
                       f"to fall back to it")
    return UserError(f"{what}; the {other_kind} checkpoint, step {other_step}, is complete: "
                     f"use it (evaluate --which {other_kind}, predict --checkpoint "
                     f"{other_kind})")
  return UserError(f"{what}; no other complete checkpoint: retrain (python -m "
                   f"jaxcrop.train --workdir {workdir}, after removing {folder})")


def _other_checkpoints(mgrs: dict, kind: str, step: int) -> list[tuple[str, int]]:
  """(kind, step) of every other checkpoint: the other kind first, newest first."""
  order = ["best", "last"] if kind == "last" else ["last", "best"]
  return [(k, s) for k in order for s in sorted(mgrs[k].all_steps(), reverse=True)
          if (k, s) != (kind, step)]
