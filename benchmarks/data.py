"""Input pipeline throughput: examples/s of `train_iterator` on the demo dataset.

  python -m benchmarks data         # one JSON line per measure

Uses the prepared `demo` dataset of cfg_data (data_dir) when there is one;
otherwise builds a demo-shaped stand-in in a temporary folder (synthetic zone
folders: 2 regions x 4 zones of 192 x 192 px, 12 months, 64 px patches, the
shapes of prep.demo) so the measure needs no demo generation. The reference is
the same split read and decoded by TFDS alone (no shuffle, augmentation,
normalization; no autocache): the ratio tells what our preprocessing costs.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
from typing import Iterator

from benchmarks import stamped
from jaxcrop import input_pipeline as ip
from cropcontracts.errors import UserError


def default_cfg_data(data_dir=None, batch_size: int = 32):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(
      name="cropmap", builder_config="demo", data_dir=data_dir,
      train_split="fold0+fold1", val_split="fold2", test_split="test",
      batch_size=batch_size, eval_batch_size=batch_size, shuffle_buffer=1024,
      augment=True, cache=False, prefetch=2))


def _build_stand_in(tmp: str) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builder.cropmap import cropmap_dataset_builder as cb  # pylint: disable=g-import-not-at-top
  from prep.demo import zonefolders  # pylint: disable=g-import-not-at-top
  zones = zonefolders.write_zones(f"{tmp}/zones", regions=("demo-north", "demo-south"),
                                  height=192, width=192)
  builder = cb.Builder(config="demo", data_dir=f"{tmp}/data")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(zones)))
  return f"{tmp}/data"


def _rate(make_iter, batch: int, batches: int, repeats: int = 3) -> float:
  """Best examples/s over `repeats` runs of `batches` batches (after warm-up)."""
  best = 0.0
  for _ in range(repeats):
    it = make_iter()
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    best = max(best, batch * batches / (time.perf_counter() - t0))
  return best


def measures(cfg_data=None, batches: int = 20) -> Iterator[dict]:
  """Yields one JSON-able dict per measure (examples/s, best of 3)."""
  ip.import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  cfg = cfg_data or default_cfg_data()
  with contextlib.ExitStack() as stack:
    try:
      ip.dataset_dir(cfg)
      source = "prepared"
    except UserError:
      tmp = stack.enter_context(tempfile.TemporaryDirectory())
      cfg = default_cfg_data(_build_stand_in(tmp), cfg.batch_size)
      source = "synthetic demo-shaped stand-in"
    builder = tfds.builder_from_directory(ip.dataset_dir(cfg))
    per = cfg.batch_size
    ours = _rate(lambda: ip.train_iterator(cfg, seed=0), per, batches)

    def reference():
      ds = builder.as_dataset(split=cfg.train_split, shuffle_files=False,
                              read_config=tfds.ReadConfig(try_autocache=False))
      ds = ds.repeat()
      return iter(tfds.as_numpy(ds.batch(per)))

    ref = _rate(reference, per, batches)
    example = builder.info.features["image"].shape
    yield {"name": "input_pipeline_train", "ours_examples_per_s": round(ours, 1),
           "reference": "tfds as_dataset decode+batch only", "reference_examples_per_s":
           round(ref, 1), "ratio": round(ours / ref, 3), "batch_size": per,
           "patch": list(example[1:]), "months": len(ip.load_meta(cfg).months),
           "dataset": source}


if __name__ == "__main__":
  for m in stamped(measures()):
    print(json.dumps(m), flush=True)
