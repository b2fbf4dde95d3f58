"""`python -m jaxcrop.bench`: one JSON line per speed measure, each against a reference.

Runs the measures of the input pipeline (`jaxcrop.bench_data`), of the train step
against a PyTorch implementation of the same architecture (`jaxcrop.bench_train`)
and of full-zone prediction (`jaxcrop.bench_predict`), each section in its own
process: TensorFlow and PyTorch do not share a process safely, and a fresh
process keeps one section's threads and caches out of another's timings. Then
adds the line that ties the first two together: how many times faster the input
pipeline delivers pixels than the train step of the default config consumes
them (training must never wait for data; target ≥ 3).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SECTIONS = {"data": "jaxcrop.bench_data", "train": "jaxcrop.bench_train",
            "predict": "jaxcrop.bench_predict"}


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


def run_section(module: str) -> list[dict]:
  """Runs `python -m module`, echoes and returns its JSON lines."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, "-m", module], stdout=subprocess.PIPE,
                          text=True, env=env)
  lines = []
  for raw in proc.stdout:
    raw = raw.strip()
    if raw.startswith("{"):
      lines.append(json.loads(raw))
      print(raw, flush=True)
  if proc.wait() != 0:
    lines.append({"name": f"{module} failed", "returncode": proc.returncode})
    print(json.dumps(lines[-1]), flush=True)
  return lines


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxcrop.bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--only", choices=sorted(SECTIONS), nargs="*",
                 help="run only these sections (default: all)")
  args = p.parse_args(argv)
  lines = []
  for key in args.only or SECTIONS:
    lines += run_section(SECTIONS[key])
  tie = pipeline_vs_step(lines)
  if tie:
    print(json.dumps(tie), flush=True)
  return 0 if not any("returncode" in l for l in lines) else 1


if __name__ == "__main__":
  sys.exit(main())
