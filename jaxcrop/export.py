"""A model release from a training workdir: the command line.

  python -m jaxcrop.export --workdir W --out DIR [--checkpoint best]
  python -m jaxcrop.predict --workdir DIR --zone ZONES --out maps

DIR (`jaxcrop.release`) holds the checkpoint predict would use (best, or last),
config.json, dataset_meta.json, calibration.json, season_reference.json (a model
that aligns seasons), MODEL_CARD.md, mlm.json and
MANIFEST.json (the SHA-256 of every file, checked by predict). The model card
takes the test scores from W/eval/metrics.json when `jaxcrop.evaluate` has run.
The folder is assembled under a temporary name and renamed when complete; an
existing DIR is refused.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import sys

from cropcontracts import atomic, cli
from cropcontracts.errors import UserError

RUN_FILES = ("config.json", "dataset_meta.json")


def export(workdir, out, *, which: str = "best") -> pathlib.Path:
  """Writes the release of `workdir`'s `which` checkpoint at `out` (see the module doc)."""
  from jaxcrop import calibrate, checkpoint, modelcard, release, season_shift
  workdir, out = pathlib.Path(workdir), pathlib.Path(out)
  if "://" in str(workdir):
    raise UserError(f"--workdir {workdir}: export reads a local workdir; copy it here first")
  try:
    trained = checkpoint.load_trained(workdir, which)
  except FileNotFoundError as e:
    raise UserError(f"--workdir {workdir}: {e}") from None
  kind, step = _checkpoint_folder(workdir, which, trained.step)
  record = calibrate.read(workdir)
  if record and record["step"] != trained.step:
    record = None                            # fitted for another checkpoint
  metrics_path = workdir / "eval" / "metrics.json"
  metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
  if metrics and metrics.get("step") != trained.step:
    metrics = None                           # scores of another checkpoint
  name = f"jaxcrop-{trained.meta.builder_config or 'model'}-step{trained.step}"
  if out.exists():
    raise UserError(f"{out}: --out already exists; choose another folder")
  with atomic.atomic_folder(out) as tmp:
    tmp = pathlib.Path(tmp)
    for f in RUN_FILES:
      shutil.copy2(workdir / f, tmp / f)
    src = workdir / "checkpoints" / kind / str(step)
    dst = tmp / "checkpoints" / kind / str(step)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("opt"))
    if record:
      (tmp / calibrate.FILE).write_text(json.dumps(record, indent=1))
    if (workdir / season_shift.FILE).is_file():     # season alignment's training calendar
      shutil.copy2(workdir / season_shift.FILE, tmp / season_shift.FILE)
    (tmp / "MODEL_CARD.md").write_text(modelcard.card(trained, metrics, record, name))
    (tmp / "mlm.json").write_text(json.dumps(modelcard.mlm_item(trained, record, name),
                                             indent=1))
    (tmp / release.MANIFEST).write_text(json.dumps(release.manifest(tmp), indent=1))
  return out


def _checkpoint_folder(workdir: pathlib.Path, which: str, step: int) -> tuple[str, int]:
  """(kind, step) of the folder load_trained restored: `best` falls back to `last`
  when no validation was saved."""
  if which == "best" and (workdir / "checkpoints" / "best" / str(step)).is_dir():
    return "best", step
  return "last", step


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m jaxcrop.export", description=__doc__.split("\n\n")[0])
  ap.add_argument("--workdir", required=True, help="training workdir")
  ap.add_argument("--out", required=True, help="the release folder to write (must not exist)")
  ap.add_argument("--checkpoint", default="best", choices=("best", "last"),
                  help="the checkpoint to release (default: %(default)s)")
  return cli.main(ap, _run, argv)


def _run(args) -> int:
  out = export(args.workdir, args.out, which=args.checkpoint)
  print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
  return 0


if __name__ == "__main__":
  sys.exit(main())
