"""The training run's measurements: one JSON line per write, and TensorBoard scalars.

`MetricWriter(workdir, tensorboard).write(step, scalars)` appends
`{"step": step, **scalars}` to `workdir/metrics.jsonl` and, with `tensorboard`,
writes each int or float value as a scalar summary under `workdir/tb/`. Only
process 0 writes (every process measures the same global values); the others'
writer does nothing. TensorFlow is imported only with `tensorboard` (through
`jaxcrop.input_pipeline.import_tf`, CPU only: the accelerator belongs to JAX).
"""
from __future__ import annotations

import json

import jax


class MetricWriter:
  """metrics.jsonl (+ TensorBoard scalars) from process 0 only."""

  def __init__(self, workdir, tensorboard: bool):
    self.active = jax.process_index() == 0
    self.path = workdir / "metrics.jsonl"
    self.tb = None
    if self.active and tensorboard:
      from jaxcrop.input_pipeline import import_tf  # pylint: disable=g-import-not-at-top
      self.tf = import_tf()
      # tf.summary.write with the "scalars" plugin tag is what tensorboard's
      # tf.summary.scalar does; the tensorboard package is not needed.
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self.scalar_metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
      self.tb = self.tf.summary.create_file_writer(str(workdir / "tb"))

  def write(self, step: int, scalars: dict) -> None:
    """One line `{"step": step, **scalars}`; the int and float scalars to TensorBoard."""
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
