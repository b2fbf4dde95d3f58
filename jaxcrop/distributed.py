"""Joining the other JAX processes of a job, for every program that may run on several hosts.

Training and mapping both call `initialize(flag)` before their first JAX
computation; it lives here, not in the trainer, so that the mapping path
never imports `jaxcrop.train`. `put_batch` makes each process's share of a
batch one global array, as the train and validation steps take it.
"""
from __future__ import annotations

import os


def is_multihost(multihost_flag: bool, environ=os.environ) -> bool:
  """--multihost, an explicit coordinator, or a TPU VM pod (several worker hosts)."""
  return bool(multihost_flag or environ.get("JAX_COORDINATOR_ADDRESS")
              or "," in environ.get("TPU_WORKER_HOSTNAMES", ""))


def initialize(multihost: bool = False) -> None:
  """`jax.distributed.initialize()` (arguments from the TPU, SLURM or coordinator
  environment) when `is_multihost`; nothing on one host."""
  if is_multihost(multihost):
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()


def put_batch(mesh, batch: dict, keys=("image", "label")) -> dict:
  """This process's share of a global batch (numpy, leading axis B / processes) →
  global arrays [B, …] sharded over the mesh's `data` axis (`keys`, plus
  `valid_count` when the batch carries it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  keys = tuple(keys) + (("valid_count",) if "valid_count" in batch else ())
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}
