"""Resuming a training workdir: refuse another model's checkpoints, name a damaged one.

Rerunning `python -m jaxcrop.train` on a workdir continues from its newest
`checkpoints/last/<step>`. Two things can stand in the way, and each is one
line for the user rather than a traceback from deep inside Orbax:

- `check_resume`: the workdir holds checkpoints of another model (a
  `config.model` field changed) or of another dataset layout (months, bands,
  classes, nomenclature: `DatasetMeta.compatible_with`). Checked before
  `config.json` is overwritten. Other changes (lr, num_steps, …) resume.
- `restore`: the resume point's files are damaged (truncated, missing, not
  matching their digest); the message names the folder and what to remove.
"""
from __future__ import annotations

import json

from jaxcrop import checkpoint
from cropcontracts.dataset_meta import DatasetMeta
from cropcontracts.errors import UserError


def flatten(d: dict, prefix: str) -> dict:
  """{'a': {'b': 1}} → {'prefix.a.b': 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}.{k}"))
    else:
      out[f"{prefix}.{k}"] = v
  return out


def check_resume(workdir, config, meta: DatasetMeta) -> None:
  """Raises UserError when workdir holds checkpoints of another model or dataset layout."""
  if not any((workdir / "checkpoints").glob("*/[0-9]*")) or \
      not (workdir / "config.json").exists():
    return
  old = flatten(json.loads((workdir / "config.json").read_text()).get("model", {}), "model")
  new = flatten(json.loads(config.to_json())["model"], "model")
  diffs = [f"{k}: {old.get(k)} → {new.get(k)}" for k in sorted(set(old) | set(new))
           if old.get(k) != new.get(k)]
  if (workdir / "dataset_meta.json").exists():
    saved = DatasetMeta.from_json((workdir / "dataset_meta.json").read_text())
    diffs += [f"dataset {d}" for d in saved.compatible_with(meta)]
  if diffs:
    raise UserError(f"{workdir}: holds checkpoints of another model ({'; '.join(diffs)}); "
                    f"pass a new --workdir, or the run's own settings to resume it")


def restore(workdir, last_mgr, step: int, model_vars: dict, opt: dict):
  """`checkpoint.restore` of the resume point `step` of `last_mgr` → (model_vars, opt),
  or a UserError naming it when its files are damaged."""
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
