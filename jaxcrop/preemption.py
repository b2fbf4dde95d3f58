"""SIGTERM as a request to stop cleanly: the one handler of training and cross-validation.

A Cloud TPU VM, a spot VM or a batch scheduler sends SIGTERM before it takes
the machine back. `jaxcrop.train` then finishes the step in flight, saves it
and returns `preempted`; `jaxcrop.cv` stops the whole CV (the run in flight
saves, the results so far are written, exit 143).

One process: the handler sets `flag`; a second SIGTERM exits at once (exit
143, nothing saved), for a user who does not want to wait for the save.
Several processes (a TPU pod): no handler of ours. JAX's preemption service
(started by `jax.distributed.initialize`, it catches SIGTERM itself) agrees on
one step for every process: `reached(step)` asks it
(`multihost_utils.reached_preemption_sync_point`) and must be called at every
step by every process. A per-process flag would have one host enter the
checkpoint barrier while another runs the next step's collectives, and both
hang.

Handlers nest: a `Preemption` made while another is installed (a training run
inside the CV) takes SIGTERM until it is closed, then gives it back.
"""
from __future__ import annotations

import signal

import jax


class Preemption:
  """Installs the SIGTERM handler (one process only) until `close()` / the `with` block ends."""

  def __init__(self):
    self.multi = jax.process_count() > 1
    self.flag = False
    self.previous = None
    if not self.multi:
      self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    if self.flag:                        # asked twice: stop now, without the save
      signal.signal(signal.SIGTERM, self.previous or signal.SIG_DFL)
      raise SystemExit(128 + signal.SIGTERM)
    self.flag = True

  def reached(self, step: int) -> bool:
    """True at the step where every process stops and saves (call it every step)."""
    if self.multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self.flag

  def close(self) -> None:
    """Gives SIGTERM back to the handler that held it before."""
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)
      self.previous = None

  def __enter__(self) -> "Preemption":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
