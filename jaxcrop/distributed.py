"""Joining the other JAX processes of a job, for every program that may run on several hosts.

Training and mapping both call `initialize(flag)` before their first JAX
computation; it lives here, not in the trainer, so that the mapping path
never imports `jaxcrop.train`.
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
