"""`python -m jaxcrop.bench`: one JSON line per speed measure, each against a reference.

Gathers the measures of the input pipeline (`bench_data`), the train step against a
PyTorch implementation of the same architecture (`bench_train`) and full-zone
prediction (`bench_predict`), then adds the line that ties the first two together:
how many times faster the input pipeline delivers examples than the train step
consumes them (training must never wait for data).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SECTIONS = {"data": "jaxcrop.bench_data", "train": "jaxcrop.bench_train",
            "predict": "jaxcrop.bench_predict"}


def pipeline_vs_step(lines: list[dict]) -> dict | None:
  """Input-pipeline examples/s over train-step examples/s (default config)."""
  data = next((l for l in lines if l.get("name") == "input_pipeline"), None)
  step = next((l for l in lines if l.get("name") == "train_step"), None)
  if not data or not step or not step.get("ours_examples_per_s"):
    return None
  ours, ref = data["ours_examples_per_s"], step["ours_examples_per_s"]
  return {"name": "input_pipeline_vs_train_step", "ours_examples_per_s": ours,
          "reference": "train step consumption (default config)",
          "reference_examples_per_s": ref, "ratio": round(ours / ref, 2),
          "target_ratio": 3.0}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxcrop.bench", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--only", choices=sorted(SECTIONS), nargs="*",
                 help="run only these sections (default: all)")
  args = p.parse_args(argv)
  lines = []
  for key in args.only or SECTIONS:
    mod = importlib.import_module(SECTIONS[key])
    for line in mod.measures():
      lines.append(line)
      print(json.dumps(line), flush=True)
  tie = pipeline_vs_step(lines)
  if tie:
    print(json.dumps(tie), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
