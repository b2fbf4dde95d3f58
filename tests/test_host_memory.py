"""jaxcrop.host_memory: glibc keeps XLA:CPU's per-execution block, so a step stops faulting
its pages in again; off glibc it does nothing."""
import os
import subprocess
import sys
import textwrap

import pytest

from jaxcrop import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An executable whose temporaries are one block of 67 MB, as the demo's train step's are one
# of ~105 MB (docs/benchmarks.md): larger than a glibc thread arena's heap (64 MB), so mapped
# anew at every call unless kept. Here the [4096, 4096] f32 product of two matmuls, compiled
# in a second where the demo's step takes several; in a process of its own (the setting is
# process-wide): the fewest minor page faults of a call, calls 4 to 8.
FAULTS = textwrap.dedent("""
    import resource, sys
    from jaxcrop import host_memory
    if sys.argv[1] == "keep":
      assert host_memory.keep_freed_memory()
    import jax, jax.numpy as jnp
    a = jnp.ones((4096, 64), jnp.float32)
    step = jax.jit(lambda a: (a @ a.T) @ a).lower(a).compile()
    assert step.memory_analysis().temp_size_in_bytes >= 4096 * 4096 * 4
    faults = []
    for _ in range(8):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      jax.block_until_ready(step(a))
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(min(faults[3:]))
""")


def _faults_per_step(modes) -> list[int]:
  """Both processes at once (the counts do not depend on timing)."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  procs = [subprocess.Popen([sys.executable, "-c", FAULTS, m], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in modes]
  outs = [p.communicate() for p in procs]
  assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
  return [int(out.split()[-1]) for out, _ in outs]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_kept_memory_is_not_faulted_in_again_at_every_step():
  block_pages = 4096 * 4096 * 4 // 4096                     # 16,384 pages of 4 KiB
  default, kept = _faults_per_step(["default", "keep"])
  assert default > block_pages * 3 // 4, default            # the block mapped anew each step
  assert kept < block_pages // 10, kept                     # reused: 0 once warm


def test_no_glibc_no_setting_and_commands_apply_it_first(monkeypatch):
  class NoMallopt:                                          # a C library without mallopt (musl)
    pass
  monkeypatch.setattr(host_memory.ctypes, "CDLL", lambda name: NoMallopt())
  assert host_memory.keep_freed_memory() is False
  calls = []
  monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append("keep"))
  command = host_memory.first(lambda a, b=0: calls.append(("run", a, b)) or 7)
  assert command(1, b=2) == 7 and calls == ["keep", ("run", 1, 2)]

