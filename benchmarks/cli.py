"""`python -m benchmarks [STAGE ...]`: one JSON line per speed measure, each against a reference.

  python -m benchmarks                 # every stage: prep, data, train, predict, stac
  python -m benchmarks prep            # gap filling and median compositing only
  python -m benchmarks data train      # the input pipeline and the train step
  python -m benchmarks accel           # an accelerator's numbers, <= 8 min (docs/benchmarks.md)
  python -m benchmarks train predict accel --tiny   # tiny sizes: seconds on a CPU (tests)
  python -m benchmarks --dry-run [--zones-csv zones_fr.csv] [--workers 1 8 64]
                                       # the country's projected cost (benchmarks/country.py)

Stages: `prep` (median composite, gap fill: benchmarks/composite.py), `data` (the
input pipeline: benchmarks/data.py), `train` (the train step against the same
network in PyTorch: benchmarks/train.py), `predict` (whole-zone prediction:
benchmarks/predict.py), `stac` (a zone-year through a loopback STAC catalogue against
the local route: benchmarks/stac.py); `accel`, not in the default list, the numbers of a
lent accelerator in one short run: the default config's train step in float32 and bfloat16
with its MFU, the ratio to the PyTorch twin eager and compiled, the largest batch, whole-zone
prediction in km²/s (benchmarks/accel.py). `train`, `predict` and `accel` need only jax,
flax, optax, numpy and ml-collections (torch for the ratios). Each stage runs in its own
process: TensorFlow and PyTorch do not share a process safely, and a fresh process keeps one
stage's threads and caches out of another's timings. When both `data` and `train` run,
a last line ties them together: how many times faster the input pipeline
delivers pixels than the train step of the default config consumes them
(training must never wait for data; target >= 3). Exit status 1 when a stage
fails or a result differs from its reference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from cropcontracts import cli
from cropcontracts.errors import UserError

STAGES = {"prep": "benchmarks.composite", "data": "benchmarks.data",
          "train": "benchmarks.train", "predict": "benchmarks.predict",
          "stac": "benchmarks.stac", "accel": "benchmarks.accel"}
DEFAULT = ("prep", "data", "train", "predict", "stac")
TINY = ("train", "predict", "accel")           # the stages that take --tiny


def pipeline_vs_step(lines: list[dict]) -> dict | None:
  """Input-pipeline pixels/s over the default config's train-step pixels/s.

  In pixels, not examples, because on a CPU the train-step measure runs on
  smaller patches than the dataset's (it says so in its `note`).
  """
  data = next((l for l in lines if l.get("name", "").startswith("input_pipeline")), None)
  step = next((l for l in lines if l.get("name") == "train_step_default"), None)
  if not data or not step or not step.get("ours_pixels_per_s"):
    return None
  h, w = data["patch"][:2]
  ours = data["ours_examples_per_s"] * h * w
  ref = step["ours_pixels_per_s"]
  return {"name": "input_pipeline_vs_train_step", "ours_pixels_per_s": round(ours),
          "reference": "train step of the default config (pixels consumed per s)",
          "reference_pixels_per_s": round(ref), "ratio": round(ours / ref, 1),
          "target_ratio": 3.0, "device": step.get("device", "")}


def run_stage(module: str, args=()) -> list[dict]:
  """Runs `python -m module [args]`, echoes and returns its JSON lines."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  lines = []
  with subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                        text=True, env=env) as proc:     # closes the pipe: no ResourceWarning
    for raw in proc.stdout:
      raw = raw.strip()
      if raw.startswith("{"):
        lines.append(json.loads(raw))
        print(raw, flush=True)
  if proc.returncode != 0:
    lines.append({"name": f"{module} failed", "returncode": proc.returncode})
    print(json.dumps(lines[-1]), flush=True)
  return lines


def build_parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m benchmarks", description=__doc__)
  p.add_argument("stages", nargs="*", metavar="STAGE",
                 help=f"run only these stages ({', '.join(STAGES)}; default: "
                      f"{', '.join(DEFAULT)})")
  p.add_argument("--dry-run", action="store_true",
                 help="instead of the stages: project the whole country's zones, requests, "
                      "bytes and wall time per route from measured zones (one JSON line "
                      "`country_projection`)")
  p.add_argument("--zones-csv", default=None, help="--dry-run: the country's zones table")
  p.add_argument("--workers", nargs="+", default=None, help="--dry-run: worker counts")
  p.add_argument("--tiny", action="store_true",
                 help=f"tiny sizes, seconds on a CPU (the tests); stages {', '.join(TINY)} only")
  return p


def main(argv=None) -> int:
  """`python -m benchmarks`; the exit status (1: a stage failed or differs, 2: a bad argument)."""
  return cli.main(build_parser(), _run, argv)


def _run(args) -> int:
  if args.dry_run:
    extra = ["--dry-run"] + (["--zones-csv", args.zones_csv] if args.zones_csv else []) + (
        ["--workers", *args.workers] if args.workers else [])
    lines = run_stage("benchmarks.country", extra)
    return 1 if any("returncode" in l for l in lines) else 0
  unknown = [s for s in args.stages if s not in STAGES]
  if unknown:   # not argparse's choices: they refuse an empty list of a nargs="*" positional
    raise UserError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
  if args.tiny and (not args.stages or set(args.stages) - set(TINY)):
    raise UserError(f"--tiny applies to the stages {', '.join(TINY)}: name them")
  lines = []
  for key in args.stages or DEFAULT:
    lines += run_stage(STAGES[key], ["--tiny"] if args.tiny else ())
  tie = pipeline_vs_step(lines)
  if tie:
    print(json.dumps(tie), flush=True)
  failed = any("returncode" in l or l.get("identical") is False for l in lines)
  return 1 if failed else 0
